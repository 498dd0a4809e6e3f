"""Export small PyTorch models whose input holds ids that become floats other than by an integer
embedding lookup (`index_*`) to ONNX.

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_index.py

Writes:

- models/index_float_ids_{ts,dynamo}.onnx: token ids fed as float32 (`x` N x 12), `x.long()`, then
  nn.Embedding(50, 8), a Conv1d(8->8, 3) ReLU, mean over positions, Linear(8->3). Both exporters
  write Cast(to=INT64) -> Gather; the script asserts it.
- models/index_bytes_equal_ts.onnx: a byte classifier over int32 bytes (`x` N x 32, ids 0..256, 256 =
  padding), one-hot encoded by `(x.unsqueeze(-1) == torch.arange(257)).float()`: Unsqueeze -> Cast ->
  Equal(range constant) -> Cast(FLOAT) in the TorchScript export.
- models/index_bytes_onehot_ts.onnx: the same classifier (same weights) one-hot encoded by
  `F.one_hot(x.long(), 257).float()`: Cast -> OneHot -> Cast(FLOAT) in the TorchScript export.
- models/index_bytes_onehot_dynamo.onnx: that F.one_hot model through the dynamo exporter, which
  decomposes one_hot into Unsqueeze -> Equal(arange) -> Cast(INT64) -> Cast(FLOAT). (The dynamo export
  of the Equal model is Unsqueeze -> Cast -> Equal -> Cast(FLOAT), the TorchScript graph again, so
  it is not kept.)

The byte head: transpose to N x 257 x 32, Conv1d(257->8, 5, padding 2), ReLU, max over positions,
Linear(8->2). Weights are random (seeded). TorchScript: dynamo=False, opset 17,
do_constant_folding=False; dynamo: dynamo=True, opset 18, a dynamic batch. Every model is checked
(strict shape inference + full checker), run in onnxruntime on seeded ids (batch 3, and batch 1)
and compared with PyTorch, and merged into models/manifest.json ("family": "index", plus
"index_input", "encoding" ("float_ids_embedding", "equal_range", "onehot_op"), "seq_len",
"vocab_size" and, for the embedding, "embedding_dim"). An export failure is printed and recorded in
the FAILURES summary (exit status 1); the other models are still written. `--out DIR` writes
there instead (with a manifest.json of its own).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _torch_common as T

FAMILY = "index"
VOCAB, EMB, ID_LEN = 50, 8, 12
BYTES, BYTE_LEN = 257, 32  # 256 byte values + a padding id 256


# ----------------------------------------------------------------------------- models
class FloatIdEmbedding(nn.Module):
    """Ids arrive as float32 (a pipeline that keeps every feature in one float tensor)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMB)
        self.conv = nn.Conv1d(EMB, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):  # N x 12 float ids
        h = self.emb(x.long()).transpose(1, 2)
        return self.fc(torch.relu(self.conv(h)).mean(2))


class ByteEqual(nn.Module):
    """Byte classifier, one-hot by comparing against a range."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(BYTES, 8, 5, padding=2)
        self.fc = nn.Linear(8, 2)

    def encode(self, x):
        return (x.unsqueeze(-1) == torch.arange(BYTES)).float()

    def forward(self, x):  # N x 32 int32 bytes
        h = torch.relu(self.conv(self.encode(x).transpose(1, 2)))
        return self.fc(h.amax(2))


class ByteOneHot(ByteEqual):
    """The same classifier, one-hot by F.one_hot."""

    def encode(self, x):
        return F.one_hot(x.long(), BYTES).float()


# ----------------------------------------------------------------------------- export / checks
#: kind -> (manifest exporter, converter)
EXPORTERS = {"ts": (T.TS_EXPORTER, T.TS_CONV), "dynamo": (T.DYNAMO_EXPORTER, T.DYNAMO_CONV)}


def export(kind: str, model: nn.Module, example: tuple, path: str) -> None:
    """Export with one input x and one output logits, a dynamic batch: kind "ts" or "dynamo"."""
    if kind == "ts":
        T.export_ts(model, example, path, ["x"], ["logits"], T.batch_axes(["x", "logits"]))
    else:
        T.export_dynamo(model, example, path, ["x"], ["logits"], ({0: torch.export.Dim("batch")},))


def op_chain(path: str, start: str = "x") -> list[str]:
    """Op types from `start` along first consumers until the first Conv/Gemm/Relu (the head)."""
    graph = onnx.load(path).graph
    chain, tensor = [], start
    while True:
        users = [n for n in graph.node if tensor in n.input]
        if not users or users[0].op_type in ("Conv", "Gemm", "Relu", "Transpose"):
            return chain
        node = users[0]
        chain.append(node.op_type)
        tensor = node.output[0]


def ids(rng, shape, high, dtype):
    return rng.integers(0, high, size=shape).astype(dtype)


# ----------------------------------------------------------------------------- main
def main():
    C.parse_args(__doc__)
    run = C.Results()

    def record(name, exporter, conv, diff, desc, extra):
        e = run.entries[name] = C.describe(
            name,
            exporter=exporter,
            framework=T.FRAMEWORK,
            converter=conv,
            max_abs_diff=diff,
            description=desc,
            input_range=extra.pop("input_range"),
            extra={"family": FAMILY, "index_input": "x", **extra},
        )
        print(f"  {name}: {e['file_size']} bytes, {e['num_nodes']} nodes, ops {e['ops']}")

    def check(name, model, p, high, dtype, length, chain_head):
        C.check_file(p)
        chain = op_chain(p)
        print(f"  {name}: ids path {' -> '.join(chain)}")
        assert chain[: len(chain_head)] == chain_head, f"{name}: expected {chain_head} from x, got {chain}"
        feeds = {"x": ids(np.random.default_rng(42), (3, length), high, dtype)}
        diff = C.compare(name, C.ort_run(p, feeds), T.run_torch(model, feeds))
        one = {"x": ids(np.random.default_rng(1), (1, length), high, dtype)}
        C.compare(name + " (batch 1)", C.ort_run(p, one), T.run_torch(model, one))
        return diff, chain

    # 1/2. float ids -> Cast -> Gather
    T.seed(30)
    fid = FloatIdEmbedding().eval()
    fid_example = (torch.from_numpy(ids(np.random.default_rng(123), (2, ID_LEN), VOCAB, np.float32)),)
    fid_desc = (
        f"Float-id embedding model: x N x {ID_LEN} float32 ids, x.long(), nn.Embedding({VOCAB}, {EMB}), "
        "transpose, Conv1d(8->8, 3, pad 1), ReLU, mean over positions, Linear(8->3); random weights"
    )
    fid_extra = {
        "encoding": "float_ids_embedding",
        "seq_len": ID_LEN,
        "vocab_size": VOCAB,
        "embedding_dim": EMB,
        "input_range": [0, VOCAB - 1],
    }

    def float_ids(kind):
        name = f"index_float_ids_{kind}"
        p = C.model_path(name)
        export(kind, fid, fid_example, p)
        diff, chain = check(name, fid, p, VOCAB, np.float32, ID_LEN, ["Cast", "Gather"])
        record(
            name,
            *EXPORTERS[kind],
            diff,
            fid_desc if kind == "ts" else fid_desc.replace("random weights", "same weights as index_float_ids_ts"),
            {**fid_extra, "ids_path": chain},
        )

    run.attempt("index_float_ids_ts", lambda: float_ids("ts"))
    run.attempt("index_float_ids_dynamo", lambda: float_ids("dynamo"))

    # 3-5. byte classifiers, one-hot two ways
    T.seed(31)
    byte_equal = ByteEqual().eval()
    byte_onehot = ByteOneHot().eval()
    byte_onehot.load_state_dict(byte_equal.state_dict())
    byte_example = (torch.from_numpy(ids(np.random.default_rng(123), (2, BYTE_LEN), BYTES, np.int32)),)
    head = f"transpose, Conv1d({BYTES}->8, 5, pad 2), ReLU, max over positions, Linear(8->2); random weights"

    def bytes_model(name, model, kind, encoding, how, chain_head):
        p = C.model_path(name)
        export(kind, model, byte_example, p)
        diff, chain = check(name, model, p, BYTES, np.int32, BYTE_LEN, chain_head)
        record(
            name,
            *EXPORTERS[kind],
            diff,
            f"Byte classifier: x N x {BYTE_LEN} int32 bytes (0-255, 256 = padding), one-hot by {how}, {head}",
            {
                "encoding": encoding,
                "seq_len": BYTE_LEN,
                "vocab_size": BYTES,
                "input_range": [0, BYTES - 1],
                "ids_path": chain,
            },
        )

    run.attempt(
        "index_bytes_equal_ts",
        lambda: bytes_model(
            "index_bytes_equal_ts",
            byte_equal,
            "ts",
            "equal_range",
            f"(x.unsqueeze(-1) == torch.arange({BYTES})).float()",
            ["Unsqueeze", "Cast", "Equal", "Cast"],
        ),
    )
    run.attempt(
        "index_bytes_onehot_ts",
        lambda: bytes_model(
            "index_bytes_onehot_ts",
            byte_onehot,
            "ts",
            "onehot_op",
            f"F.one_hot(x.long(), {BYTES}).float()",
            ["Cast", "OneHot", "Cast"],
        ),
    )
    run.attempt(
        "index_bytes_onehot_dynamo",
        lambda: bytes_model(
            "index_bytes_onehot_dynamo",
            byte_onehot,
            "dynamo",
            "equal_range",
            f"F.one_hot(x.long(), {BYTES}).float() (the dynamo exporter decomposes it into Equal against a range)",
            ["Cast", "Unsqueeze", "Equal", "Cast", "Cast"],
        ),
    )

    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
