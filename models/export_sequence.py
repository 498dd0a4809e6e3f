"""Export small PyTorch sequence models (RNNs, token-id CNN, Transformer) to ONNX.

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_sequence.py

Writes models/seq_<name>_ts.onnx (TorchScript exporter, dynamo=False, opset 17) and
models/seq_<name>_dynamo.onnx (dynamo exporter, dynamo=True, opset 18) with a dynamic
batch axis, verifies each against PyTorch in onnxruntime and updates models/manifest.json
(every entry carries "family": "sequence"). An exporter failure is printed and recorded in
the FAILURES summary; the other variants are still written. `--out DIR` writes there
instead (with a manifest.json of its own).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _torch_common as T

# Keep nn.TransformerEncoderLayer / MultiheadAttention off their eval-mode "fast path" (fused
# kernels, nested tensors) so both exporters see the plain decomposed attention. A precaution:
# with torch 2.13 both exports also succeed (same graph) with the fast path left on.
torch.backends.mha.set_fastpath_enabled(False)

FAMILY = "sequence"


# ----------------------------------------------------------------------------- models
class LSTMRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, 16, batch_first=True)
        self.fc = nn.Linear(16, 1)

    def forward(self, x):  # N x 20 x 5
        h, _ = self.rnn(x)
        return self.fc(h[:, -1, :])


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):  # N x 20 x 5
        h, _ = self.rnn(x)
        return self.softmax(self.fc(h[:, -1, :]))


class BiLSTM2(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(16, 1)

    def forward(self, x):  # N x 20 x 5
        h, _ = self.rnn(x)  # N x 20 x 16 (forward ++ backward)
        return self.fc(h[:, -1, :])


class TextCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(200, 16)
        self.conv = nn.Conv1d(16, 32, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(32, 2)

    def forward(self, x):  # int64 N x 30
        h = self.emb(x).transpose(1, 2)  # N x 16 x 30
        h = self.relu(self.conv(h))  # N x 32 x 28
        return self.fc(torch.amax(h, dim=2))


class TinyTransformer(nn.Module):
    def __init__(self, vocab=100, seq_len=16, d=32):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, seq_len, d) * 0.1)  # learned positions
        layer = nn.TransformerEncoderLayer(
            d_model=d, nhead=4, dim_feedforward=64, activation="gelu", batch_first=True, dropout=0.0
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc = nn.Linear(d, 2)

    def forward(self, x, mask):  # int64 N x 16 token ids, int64 N x 16 mask (1 = keep, 0 = padding)
        h = self.tok(x) + self.pos
        h = self.encoder(h, src_key_padding_mask=mask == 0)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(dim=1) / m.sum(dim=1)  # mean over kept positions
        return self.fc(pooled)


# ----------------------------------------------------------------------------- data / training
def _fit(model, inputs, target, loss_fn, steps=60, lr=1e-2):
    """Full-batch Adam for a few dozen steps (well under a second per model on one CPU thread)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(*inputs), target)
        if step == 0:
            first = loss.item()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = loss_fn(model(*inputs), target).item()
    print(f"{type(model).__name__}: training loss {first:.3f} -> {last:.3f} ({steps} steps)")
    return model


def seq_data(g, n):
    return g.standard_normal((n, 20, 5)).astype(np.float32)


def make_lstm():
    T.seed(10)
    g = np.random.default_rng(10)
    X = seq_data(g, 512)
    y = (X[:, -5:, 0].sum(1) - 0.5 * X[:, -3:, 1].sum(1))[:, None].astype(np.float32)
    return _fit(LSTMRegressor(), (torch.from_numpy(X),), torch.from_numpy(y), nn.functional.mse_loss)


def make_gru():
    T.seed(11)
    g = np.random.default_rng(11)
    X = seq_data(g, 512)
    s = X[:, -6:, :3].sum(1)
    y = np.argmax(s, axis=1).astype(np.int64)
    m = GRUClassifier()
    return _fit(
        m, (torch.from_numpy(X),), torch.from_numpy(y), lambda p, t: nn.functional.nll_loss(torch.log(p + 1e-9), t)
    )


def make_bilstm():
    T.seed(12)
    g = np.random.default_rng(12)
    X = seq_data(g, 512)
    y = (X[:, :4, 2].sum(1) + X[:, -4:, 3].sum(1))[:, None].astype(np.float32)
    return _fit(BiLSTM2(), (torch.from_numpy(X),), torch.from_numpy(y), nn.functional.mse_loss)


def make_text_cnn():
    T.seed(13)
    g = np.random.default_rng(13)
    X = g.integers(0, 200, (512, 30))
    y = (np.isin(X, np.arange(10)).sum(1) > np.isin(X, np.arange(10, 20)).sum(1)).astype(np.int64)
    return _fit(TextCNN(), (torch.from_numpy(X),), torch.from_numpy(y), nn.functional.cross_entropy)


def token_mask(g, n, seq_len=16):
    """1 = keep for the first L positions (L uniform in [4, seq_len]), 0 = padding after."""
    lens = g.integers(4, seq_len + 1, n)
    return (np.arange(seq_len)[None, :] < lens[:, None]).astype(np.int64)


def make_transformer():
    T.seed(14)
    g = np.random.default_rng(14)
    X = g.integers(0, 100, (512, 16))
    M = token_mask(g, 512)
    y = ((np.isin(X, np.arange(5)) * M).sum(1) > 0).astype(np.int64)
    m = TinyTransformer()
    return _fit(
        m, (torch.from_numpy(X), torch.from_numpy(M)), torch.from_numpy(y), nn.functional.cross_entropy, steps=40
    )


# ----------------------------------------------------------------------------- main
def main():
    C.parse_args(__doc__)

    def float_seq(g, n):
        return {"x": C.normal(g, (n, 20, 5))}

    def ids30(g, n):
        return {"x": g.integers(0, 200, (n, 30)).astype(np.int64)}

    def ids16_mask(g, n):
        return {"x": g.integers(0, 100, (n, 16)).astype(np.int64), "mask": token_mask(g, n)}

    seq_extra = {"family": FAMILY, "seq_len": 20}
    specs = [
        (
            "seq_lstm_regressor",
            make_lstm(),
            float_seq,
            ["y"],
            (
                "LSTM regressor over N x 20 x 5 float sequences: nn.LSTM(5, 16, batch_first=True), last time "
                "step, Linear(1); trained briefly on synthetic data"
            ),
            "normal",
            dict(seq_extra),
        ),
        (
            "seq_gru_classifier",
            make_gru(),
            float_seq,
            ["probs"],
            (
                "GRU classifier over N x 20 x 5 float sequences: nn.GRU(5, 16, batch_first=True), last time "
                "step, Linear(3), Softmax(dim=1); trained briefly on synthetic data"
            ),
            "normal",
            dict(seq_extra),
        ),
        (
            "seq_bilstm2",
            make_bilstm(),
            float_seq,
            ["y"],
            (
                "2-layer bidirectional LSTM over N x 20 x 5 float sequences: nn.LSTM(5, 8, num_layers=2, "
                "bidirectional=True, batch_first=True), last time step (16 = fwd ++ bwd), Linear(1); trained "
                "briefly on synthetic data"
            ),
            "normal",
            dict(seq_extra),
        ),
        (
            "seq_text_cnn",
            make_text_cnn(),
            ids30,
            ["logits"],
            (
                "Token-id text CNN: int64 ids N x 30 -> nn.Embedding(200, 16), Conv1d(16, 32, 3), ReLU, max "
                "over time, Linear(2) logits; trained briefly on synthetic data"
            ),
            [0, 199],
            {"family": FAMILY, "seq_len": 30, "vocab_size": 200, "embedding_dim": 16},
        ),
        (
            "seq_transformer",
            make_transformer(),
            ids16_mask,
            ["logits"],
            (
                "Tiny Transformer encoder: int64 ids N x 16 + int64 mask N x 16 (1 = keep, 0 = padding) -> "
                "nn.Embedding(100, 32) + learned positions, 1 x nn.TransformerEncoderLayer(d_model=32, "
                "nhead=4, dim_feedforward=64, gelu, batch_first, dropout=0) with src_key_padding_mask = "
                "(mask == 0), masked mean pool over kept positions, Linear(2) logits; trained briefly on "
                "synthetic data; fast path disabled"
            ),
            [0, 99],
            {
                "family": FAMILY,
                "seq_len": 16,
                "vocab_size": 100,
                "embedding_dim": 32,
                "mask_input": {
                    "name": "mask",
                    "values": [0, 1],
                    "meaning": "1 = keep, 0 = padding; at least one 1 per row",
                },
            },
        ),
    ]

    run = C.Results()
    for name, model, sampler, outs, desc, rng_desc, extra in specs:
        T.export_batch_model(
            run,
            name,
            model,
            sampler,
            outs,
            description=desc,
            input_range=rng_desc,
            extra=extra,
            second_batch=7,
            show_ops=("LSTM", "GRU", "RNN", "Loop", "Scan"),
        )
    run.finish()


if __name__ == "__main__":
    main()
