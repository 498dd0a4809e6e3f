"""Export small PyTorch models to ONNX with both torch.onnx exporters.

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_torch.py

Writes models/<name>_ts.onnx (TorchScript exporter, dynamo=False, opset 17) and
models/<name>_dynamo.onnx (dynamo exporter, dynamo=True, opset 18; plus
torch_resblock_dynamo_noopt.onnx exported with optimize=False), verifies each
against PyTorch in onnxruntime and updates models/manifest.json. `--out DIR` writes
there instead (with a manifest.json of its own).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _torch_common as T


# ----------------------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        return self.softmax(self.body(x))


class MLPLogitsProbs(nn.Module):
    """Same weights as MLP, returns (logits, probs)."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.body = mlp.body
        self.softmax = mlp.softmax

    def forward(self, x):
        logits = self.body(x)
        return logits, self.softmax(logits)


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 2 * 2, 10),
        )
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        return self.softmax(self.features(x))


class ResBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.proj = nn.Conv2d(3, 8, 1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        h = self.relu2(h + self.proj(x))
        return self.fc(self.flatten(self.pool(h)))


class MultiOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.head_a = nn.Linear(16, 2)
        self.head_b = nn.Linear(16, 1)

    def forward(self, x):
        h = self.trunk(x)
        return self.head_a(h), self.head_b(h)


class TextConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(16, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):  # x: N x 20 x 8 (seq, embed)
        h = self.relu(self.conv(x.transpose(1, 2)))
        h = torch.amax(h, dim=2)
        return self.sigmoid(self.fc(h))


class CifarCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 10),
        )

    def forward(self, x):
        return self.net(x)


# ----------------------------------------------------------------------------- training
def train_mlp() -> MLP:
    T.seed(0)
    g = np.random.default_rng(0)
    X = g.standard_normal((1500, 10)).astype(np.float32)
    W = g.standard_normal((10, 3))
    y = np.argmax(np.tanh(X @ W) + 0.5 * (X[:, :3] ** 2), axis=1)
    m = MLP()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(200):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m.body(Xt[:1200]), yt[:1200])
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        acc = (m(Xt[1200:]).argmax(1) == yt[1200:]).float().mean().item()
    print(f"torch_mlp: held-out accuracy {acc:.3f}")
    return m


def train_digits() -> DigitsCNN:
    T.seed(0)
    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, te = idx[:1400], idx[1400:]
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    m = DigitsCNN()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(5):
        perm = tr[np.random.default_rng(_).permutation(len(tr))]
        for i in range(0, len(perm), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(m.features(Xt[b]), yt[b]).backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        acc = (m(Xt[te]).argmax(1) == yt[te]).float().mean().item()
    print(f"torch_cnn_digits: held-out accuracy {acc:.3f}")
    assert acc > 0.8, acc
    return m


def make_resblock() -> ResBlock:
    T.seed(3)
    m = ResBlock()
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            bn.running_mean.normal_(0.0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
    return m.eval()


def make_multiout() -> MultiOut:
    T.seed(4)
    g = np.random.default_rng(4)
    X = torch.from_numpy(g.standard_normal((1000, 6)).astype(np.float32))
    ya = torch.stack([X[:, 0] * X[:, 1], torch.sin(X[:, 2])], 1)
    yb = (X[:, 3] - 0.5 * X[:, 4] ** 2)[:, None]
    m = MultiOut()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        a, b = m(X)
        (nn.functional.mse_loss(a, ya) + nn.functional.mse_loss(b, yb)).backward()
        opt.step()
    return m.eval()


def make_text() -> TextConv1d:
    T.seed(5)
    return TextConv1d().eval()


def make_cifar() -> CifarCNN:
    T.seed(6)
    return CifarCNN().eval()


# ----------------------------------------------------------------------------- export
NOOPT_TOO = {"torch_resblock"}  # also export a dynamo variant with optimize=False
SPECS = []  # (name, model, example input shape, input sampler, out names, description, input_range)


def spec(name, model, shape, sampler, outs, desc, rng_desc):
    SPECS.append((name, model, shape, sampler, outs, desc, rng_desc))


def main():
    C.parse_args(__doc__)
    mlp = train_mlp()
    normal, unit = C.normal, C.unit
    spec(
        "torch_mlp",
        mlp,
        (10,),
        normal,
        ["probs"],
        "Tabular MLP 10->32->16->3, ReLU, Softmax(dim=1); trained on synthetic 3-class data",
        "normal",
    )
    spec(
        "torch_mlp_logits_probs",
        MLPLogitsProbs(mlp).eval(),
        (10,),
        normal,
        ["logits", "probs"],
        "Same MLP as torch_mlp with two outputs: pre-softmax logits and softmax probs",
        "normal",
    )
    spec(
        "torch_cnn_digits",
        train_digits(),
        (1, 8, 8),
        unit,
        ["probs"],
        "CNN on sklearn digits 1x8x8 (pixels/16): 2x(Conv3x3 ReLU MaxPool2) Flatten Linear(10) Softmax",
        [0, 1],
    )
    spec(
        "torch_resblock",
        make_resblock(),
        (3, 16, 16),
        normal,
        ["logits"],
        "ResNet-style block: Conv-BN-ReLU-Conv-BN + 1x1-Conv projection residual Add, ReLU, "
        "GlobalAvgPool, Linear(4); random BN stats (eval)",
        "normal",
    )
    spec(
        "torch_multiout_regressor",
        make_multiout(),
        (6,),
        normal,
        ["y_a", "y_b"],
        "Regressor 6->16 Tanh with two heads: y_a (2 outputs) and y_b (1 output)",
        "normal",
    )
    spec(
        "torch_text_conv1d",
        make_text(),
        (20, 8),
        normal,
        ["prob"],
        "Text classifier over float embeddings N x 20 x 8: transpose, Conv1d(8,16,3), ReLU, "
        "max over time, Linear(1), Sigmoid; random weights",
        "normal",
    )
    spec(
        "torch_cnn_cifar",
        make_cifar(),
        (3, 32, 32),
        unit,
        ["logits"],
        "CIFAR-shaped CNN 3x32x32: 2x(Conv3x3 ReLU MaxPool2) Flatten Linear(10) logits; random weights",
        [0, 1],
    )

    run = C.Results()
    for name, model, shape, sampler, outs, desc, rng_desc in SPECS:
        # The default (optimize=True) dynamo export folds eval-mode BatchNorm into the
        # preceding Conv; optimize=False keeps BatchNormalization (plus shape plumbing).
        def sample(g, n, sampler=sampler, shape=shape):
            return {"x": sampler(g, (n,) + shape)}

        T.export_batch_model(
            run, name, model, sample, outs, description=desc, input_range=rng_desc, noopt=name in NOOPT_TOO
        )
    run.finish()


if __name__ == "__main__":
    main()
