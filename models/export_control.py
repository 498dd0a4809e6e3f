"""Export small models with control flow (`control_*`) to ONNX.

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_control.py

Writes:
- control_cond_dynamo: a classifier with a second-stage verifier that runs only when a score computed
  from the input is above a threshold, written with torch.cond and exported by the torch.onnx dynamo
  exporter (opset 18). The exporter writes one If whose condition is computed from the data and whose
  branches read the backbone's features and weights from the enclosing graph (outer scope).
- control_if_outer_dynamo: y = torch.cond(flag, relu, neg, (x,)): an If on a bool input whose two
  branches (Relu, Neg) read x from the enclosing graph (dynamo exporter, opset 18).
- control_loop_ts: a hand-written recurrent cell scripted with torch.jit.script, `for t in
  range(x.size(1))`, exported by the TorchScript exporter (opset 17, dynamic batch): one Loop whose
  trip count is Gather(Shape(x), 1), the fixed sequence length 6, with a loop-carried state and a body
  that reads x and the weights from the enclosing graph.

Each model is random-initialised (seeded), checked (strict shape inference + full checker), run in
onnxruntime on seeded inputs and compared with torch (for the If models on inputs that take each
branch), and merged into models/manifest.json with "family": "control" and "control", a sentence
saying what the control flow is. An export failure is printed and recorded in the FAILURES summary.
"""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

TS_OPSET = 17
DYNAMO_OPSET = 18
FRAMEWORK = f"torch {torch.__version__}"
FAMILY = "control"


def seed(s: int) -> None:
    torch.manual_seed(s)
    np.random.seed(s)


# ----------------------------------------------------------------------------- models
class Verifier(nn.Module):
    """Backbone -> score; above a threshold a verifier head, else a cheap head (torch.cond)."""

    def __init__(self):
        super().__init__()
        self.threshold = 0.0
        self.backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.score = nn.Linear(16, 1)
        self.verifier = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
        self.fast = nn.Linear(16, 3)

    def forward(self, x):  # 1 x 8
        h = self.backbone(x)
        s = self.score(h).sum()
        return torch.cond(s > self.threshold, lambda h: self.verifier(h), lambda h: self.fast(h), (h,))


class FlagIf(nn.Module):
    def forward(self, x, flag):  # 1 x 6, bool scalar
        return torch.cond(flag, lambda x: torch.relu(x), lambda x: -x, (x,))


class LoopCell(nn.Module):
    """h_t = tanh(W h_{t-1} + U x_t) over the time axis, written as a Python loop and scripted."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(4, 4)
        self.u = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):  # N x 6 x 3
        h = torch.zeros(x.size(0), 4)
        for t in range(x.size(1)):
            h = torch.tanh(self.w(h) + self.u(x[:, t]))
        return self.out(h)


def make(cls, s):
    seed(s)
    return cls().eval()


def normal(g, shape):
    return g.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- export
def export_dynamo(model, example, path, in_names, out_names):
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = os.path.join(tmp, "m.onnx")
        torch.onnx.export(
            model, example, tmp_path, dynamo=True, opset_version=DYNAMO_OPSET,
            input_names=list(in_names), output_names=list(out_names), external_data=False,
        )
        m = onnx.load(tmp_path, load_external_data=True)
    onnx.save(m, path, save_as_external_data=False)


def export_ts(model, example, path, in_names, out_names, dynamic_axes=None):
    torch.onnx.export(
        model, example, path, dynamo=False, opset_version=TS_OPSET,
        input_names=list(in_names), output_names=list(out_names), dynamic_axes=dynamic_axes,
        training=torch.onnx.TrainingMode.EVAL, do_constant_folding=False,
    )


def run_torch(model, feeds):
    with torch.no_grad():
        out = model(*[torch.from_numpy(v) for v in feeds.values()])
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in out]


def control_ops(path):
    """{op: count} of the If/Loop/Scan nodes in the main graph."""
    m = onnx.load(path)
    counts = {}
    for n in m.graph.node:
        if n.op_type in ("If", "Loop", "Scan"):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def main():
    entries, failures = {}, {}

    def record(name, exporter, conv, diff, desc, control):
        entries[name] = C.describe(name, exporter=exporter, framework=FRAMEWORK, converter=conv, max_abs_diff=diff,
                                   description=desc, input_range="normal",
                                   extra={"family": FAMILY, "control": control,
                                          "control_nodes": control_ops(C.model_path(name))})
        e = entries[name]
        print(f"  {name}: {e['file_size']} bytes, {e['num_nodes']} nodes, ops {e['ops']}")

    def attempt(name, fn):
        print(f"{name}:")
        try:
            fn()
        except Exception as e:  # record and skip only this model
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            print(f"  {name}: FAILED: {msg}")
            traceback.print_exc()
            failures[name] = msg
            p = C.model_path(name)
            if name not in entries and os.path.exists(p):
                os.remove(p)

    def cond():
        name = "control_cond_dynamo"
        model = make(Verifier, 30)
        with torch.no_grad():  # the median score of normal inputs: both branches are common
            scores = model.score(model.backbone(torch.from_numpy(normal(np.random.default_rng(6), (64, 8)))))
            model.threshold = round(float(scores.median()), 4)
        p = C.model_path(name)
        export_dynamo(model, (torch.from_numpy(normal(np.random.default_rng(7), (1, 8))),), p, ["x"], ["logits"])
        C.check_file(p)
        assert control_ops(p) == {"If": 1}, control_ops(p)
        g = np.random.default_rng(31)
        worst, taken = 0.0, set()
        for _ in range(12):
            x = normal(g, (1, 8))
            with torch.no_grad():
                taken.add(bool(model.score(model.backbone(torch.from_numpy(x))).sum() > model.threshold))
            worst = max(worst, C.compare(name, C.ort_run(p, {"x": x}), run_torch(model, {"x": x})))
        assert taken == {True, False}, "the seeded inputs must take both branches"
        record(name, "torch.onnx dynamo", f"torch.onnx dynamo exporter, opset {DYNAMO_OPSET}", worst,
               "Second-stage verifier: h = ReLU(Linear(8->16)(x)); s = Linear(16->1)(h).sum(); torch.cond(s > t, "
               "Linear(16->16) Tanh Linear(16->3), Linear(16->3), (h,)) with t the median score of normal inputs "
               f"({model.threshold}); batch fixed at 1; random weights",
               "one If whose condition (Greater of a ReduceSum) is computed from the data; both branches read h and "
               "their weights from the enclosing graph; the seeded inputs take both branches")

    def flag():
        name = "control_if_outer_dynamo"
        model = FlagIf().eval()
        p = C.model_path(name)
        export_dynamo(model, (torch.from_numpy(normal(np.random.default_rng(8), (1, 6))), torch.tensor(True)), p,
                      ["x", "flag"], ["y"])
        C.check_file(p)
        assert control_ops(p) == {"If": 1}, control_ops(p)
        g = np.random.default_rng(32)
        worst = 0.0
        for value in (True, False):
            feeds = {"x": normal(g, (1, 6)), "flag": np.array(value)}
            worst = max(worst, C.compare(f"{name} (flag={value})", C.ort_run(p, feeds), run_torch(model, feeds)))
        record(name, "torch.onnx dynamo", f"torch.onnx dynamo exporter, opset {DYNAMO_OPSET}", worst,
               "y = torch.cond(flag, relu, neg, (x,)): x 1x6 float, flag a bool scalar input; no weights",
               "one If on the bool input flag; its branches (Relu, Neg) read x from the enclosing graph, so the If "
               "node itself has no float input")

    def loop():
        name = "control_loop_ts"
        model = torch.jit.script(make(LoopCell, 33))
        p = C.model_path(name)
        export_ts(model, (torch.from_numpy(normal(np.random.default_rng(9), (2, 6, 3))),), p, ["x"], ["y"],
                  dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        C.check_file(p)
        assert control_ops(p) == {"Loop": 1}, control_ops(p)
        x = normal(np.random.default_rng(34), (3, 6, 3))
        worst = C.compare(name, C.ort_run(p, {"x": x}), run_torch(model, {"x": x}))
        record(name, "torch.onnx TorchScript", f"torch.onnx TorchScript exporter (torch.jit.script), opset {TS_OPSET}",
               worst,
               "Scripted recurrent cell: h = zeros(N, 4); for t in range(x.size(1)): h = tanh(Linear(4->4)(h) + "
               "Linear(3->4)(x[:, t])); Linear(4->2)(h); x N x 6 x 3; random weights",
               "one Loop with trip count Gather(Shape(x), 1) (the fixed sequence length 6, next to a dynamic batch), a "
               "constant true condition and one loop-carried state; the body reads x and the weights from the "
               "enclosing graph")

    attempt("control_cond_dynamo", cond)
    attempt("control_if_outer_dynamo", flag)
    attempt("control_loop_ts", loop)

    C.update_manifest(entries)
    if failures:
        print("FAILURES:")
        for k, v in failures.items():
            print(f"  {k}: {v}")
    else:
        print("FAILURES: none")


if __name__ == "__main__":
    main()
