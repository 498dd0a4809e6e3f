"""Export small PyTorch models to ONNX with both torch.onnx exporters.

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_torch.py

Writes models/<name>_ts.onnx (TorchScript exporter, dynamo=False, opset 17) and
models/<name>_dynamo.onnx (dynamo exporter, dynamo=True, opset 18; plus
torch_resblock_dynamo_noopt.onnx exported with optimize=False), verifies each
against PyTorch in onnxruntime and updates models/manifest.json.
"""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
import warnings
from functools import partial

import numpy as np
import onnx
import onnxscript
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

TS_OPSET = 17
DYNAMO_OPSET = 18
FRAMEWORK = f"torch {torch.__version__}"


def seed(s: int) -> None:
    torch.manual_seed(s)
    np.random.seed(s)


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
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
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
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
        )

    def forward(self, x):
        return self.net(x)


# ----------------------------------------------------------------------------- training
def train_mlp() -> MLP:
    seed(0)
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
    seed(0)
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
            b = perm[i:i + 64]
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
    seed(3)
    m = ResBlock()
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            bn.running_mean.normal_(0.0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
    return m.eval()


def make_multiout() -> MultiOut:
    seed(4)
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
    seed(5)
    return TextConv1d().eval()


def make_cifar() -> CifarCNN:
    seed(6)
    return CifarCNN().eval()


# ----------------------------------------------------------------------------- export
def export_ts(model, example, path, in_names, out_names):
    dyn = {n: {0: "batch"} for n in list(in_names) + list(out_names)}
    torch.onnx.export(
        model, example, path, dynamo=False, opset_version=TS_OPSET,
        input_names=list(in_names), output_names=list(out_names), dynamic_axes=dyn,
        training=torch.onnx.TrainingMode.EVAL, do_constant_folding=False,
    )


def export_dynamo(model, example, path, in_names, out_names, optimize=True):
    batch = torch.export.Dim("batch", min=1, max=4096)
    dyn = {"x": {0: batch}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = os.path.join(tmp, "m.onnx")
        prog = torch.onnx.export(
            model, example, tmp_path, dynamo=True, opset_version=DYNAMO_OPSET,
            input_names=list(in_names), output_names=list(out_names), dynamic_shapes=dyn,
            external_data=False, optimize=optimize,
        )
        del prog
        m = onnx.load(tmp_path, load_external_data=True)  # pull in any external data
    onnx.save(m, path, save_as_external_data=False)


def run_torch(model, x):
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in out]


NOOPT_TOO = {"torch_resblock"}  # also export a dynamo variant with optimize=False
SPECS = []  # (name, model, example input shape, input sampler, out names, description, input_range)


def spec(name, model, shape, sampler, outs, desc, rng_desc):
    SPECS.append((name, model, shape, sampler, outs, desc, rng_desc))


def main():
    mlp = train_mlp()
    normal = lambda g, s: g.standard_normal(s).astype(np.float32)  # noqa: E731
    unit = lambda g, s: g.random(s).astype(np.float32)  # noqa: E731
    spec("torch_mlp", mlp, (10,), normal, ["probs"],
         "Tabular MLP 10->32->16->3, ReLU, Softmax(dim=1); trained on synthetic 3-class data", "normal")
    spec("torch_mlp_logits_probs", MLPLogitsProbs(mlp).eval(), (10,), normal, ["logits", "probs"],
         "Same MLP as torch_mlp with two outputs: pre-softmax logits and softmax probs", "normal")
    spec("torch_cnn_digits", train_digits(), (1, 8, 8), unit, ["probs"],
         "CNN on sklearn digits 1x8x8 (pixels/16): 2x(Conv3x3 ReLU MaxPool2) Flatten Linear(10) Softmax", [0, 1])
    spec("torch_resblock", make_resblock(), (3, 16, 16), normal, ["logits"],
         "ResNet-style block: Conv-BN-ReLU-Conv-BN + 1x1-Conv projection residual Add, ReLU, "
         "GlobalAvgPool, Linear(4); random BN stats (eval)", "normal")
    spec("torch_multiout_regressor", make_multiout(), (6,), normal, ["y_a", "y_b"],
         "Regressor 6->16 Tanh with two heads: y_a (2 outputs) and y_b (1 output)", "normal")
    spec("torch_text_conv1d", make_text(), (20, 8), normal, ["prob"],
         "Text classifier over float embeddings N x 20 x 8: transpose, Conv1d(8,16,3), ReLU, "
         "max over time, Linear(1), Sigmoid; random weights", "normal")
    spec("torch_cnn_cifar", make_cifar(), (3, 32, 32), unit, ["logits"],
         "CIFAR-shaped CNN 3x32x32: 2x(Conv3x3 ReLU MaxPool2) Flatten Linear(10) logits; random weights", [0, 1])

    entries, failures = {}, {}
    for name, model, shape, sampler, outs, desc, rng_desc in SPECS:
        model.eval()
        example = (torch.from_numpy(sampler(np.random.default_rng(123), (2,) + shape)),)
        x = sampler(np.random.default_rng(42), (3,) + shape)
        want = run_torch(model, x)
        dyn_conv = f"torch.onnx dynamo exporter (onnxscript {onnxscript.__version__}), opset {DYNAMO_OPSET}"
        variants = [
            ("ts", export_ts, "torch.onnx TorchScript", f"torch.onnx TorchScript exporter, opset {TS_OPSET}"),
            ("dynamo", export_dynamo, "torch.onnx dynamo", dyn_conv),
        ]
        if name in NOOPT_TOO:
            # The default (optimize=True) dynamo export folds eval-mode BatchNorm into the
            # preceding Conv; optimize=False keeps BatchNormalization (plus shape plumbing).
            variants.append(("dynamo_noopt", partial(export_dynamo, optimize=False), "torch.onnx dynamo",
                             dyn_conv + ", optimize=False"))
        for suffix, fn, exporter, conv in variants:
            full = f"{name}_{suffix}"
            path = C.model_path(full)
            try:
                fn(model, example, path, ["x"], outs)
                C.check_file(path)
                got = C.ort_run(path, {"x": x})
                diff = C.compare(full, got, want)
            except Exception as e:  # record and skip only this variant
                msg = f"{type(e).__name__}: {e}".splitlines()[0]
                print(f"  {full}: EXPORT FAILED: {msg}")
                traceback.print_exc()
                failures[full] = msg
                if os.path.exists(path):
                    os.remove(path)
                continue
            entries[full] = C.describe(
                full, exporter=exporter, framework=FRAMEWORK, converter=conv, max_abs_diff=diff,
                description=desc, input_range=rng_desc)
            print(f"  {full}: {entries[full]['file_size']} bytes, ops {entries[full]['ops']}")
    C.update_manifest(entries)
    if failures:
        print("FAILURES:")
        for k, v in failures.items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
