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
`--out DIR` writes there instead (with a manifest.json of its own).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _torch_common as T

FAMILY = "control"


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


# ----------------------------------------------------------------------------- checks
def control_ops(path):
    """{op: count} of the If/Loop/Scan nodes in the main graph."""
    m = onnx.load(path)
    counts = {}
    for n in m.graph.node:
        if n.op_type in ("If", "Loop", "Scan"):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def main():
    C.parse_args(__doc__)
    run = C.Results()

    def record(name, exporter, conv, diff, desc, control):
        e = run.entries[name] = C.describe(
            name,
            exporter=exporter,
            framework=T.FRAMEWORK,
            converter=conv,
            max_abs_diff=diff,
            description=desc,
            input_range="normal",
            extra={"family": FAMILY, "control": control, "control_nodes": control_ops(C.model_path(name))},
        )
        print(f"  {name}: {e['file_size']} bytes, {e['num_nodes']} nodes, ops {e['ops']}")

    def cond():
        name = "control_cond_dynamo"
        model = T.make(Verifier, 30)
        with torch.no_grad():  # the median score of normal inputs: both branches are common
            scores = model.score(model.backbone(torch.from_numpy(C.normal(np.random.default_rng(6), (64, 8)))))
            model.threshold = round(float(scores.median()), 4)
        p = C.model_path(name)
        T.export_dynamo(model, (torch.from_numpy(C.normal(np.random.default_rng(7), (1, 8))),), p, ["x"], ["logits"])
        C.check_file(p)
        assert control_ops(p) == {"If": 1}, control_ops(p)
        g = np.random.default_rng(31)
        worst, taken = 0.0, set()
        for _ in range(12):
            x = C.normal(g, (1, 8))
            with torch.no_grad():
                taken.add(bool(model.score(model.backbone(torch.from_numpy(x))).sum() > model.threshold))
            worst = max(worst, C.compare(name, C.ort_run(p, {"x": x}), T.run_torch(model, {"x": x})))
        assert taken == {True, False}, "the seeded inputs must take both branches"
        record(
            name,
            T.DYNAMO_EXPORTER,
            f"torch.onnx dynamo exporter, opset {T.DYNAMO_OPSET}",
            worst,
            "Second-stage verifier: h = ReLU(Linear(8->16)(x)); s = Linear(16->1)(h).sum(); torch.cond(s > t, "
            "Linear(16->16) Tanh Linear(16->3), Linear(16->3), (h,)) with t the median score of normal inputs "
            f"({model.threshold}); batch fixed at 1; random weights",
            "one If whose condition (Greater of a ReduceSum) is computed from the data; both branches read h and "
            "their weights from the enclosing graph; the seeded inputs take both branches",
        )

    def flag():
        name = "control_if_outer_dynamo"
        model = FlagIf().eval()
        p = C.model_path(name)
        T.export_dynamo(
            model,
            (torch.from_numpy(C.normal(np.random.default_rng(8), (1, 6))), torch.tensor(True)),
            p,
            ["x", "flag"],
            ["y"],
        )
        C.check_file(p)
        assert control_ops(p) == {"If": 1}, control_ops(p)
        g = np.random.default_rng(32)
        worst = 0.0
        for value in (True, False):
            feeds = {"x": C.normal(g, (1, 6)), "flag": np.array(value)}
            worst = max(worst, C.compare(f"{name} (flag={value})", C.ort_run(p, feeds), T.run_torch(model, feeds)))
        record(
            name,
            T.DYNAMO_EXPORTER,
            f"torch.onnx dynamo exporter, opset {T.DYNAMO_OPSET}",
            worst,
            "y = torch.cond(flag, relu, neg, (x,)): x 1x6 float, flag a bool scalar input; no weights",
            "one If on the bool input flag; its branches (Relu, Neg) read x from the enclosing graph, so the If "
            "node itself has no float input",
        )

    def loop():
        name = "control_loop_ts"
        model = torch.jit.script(T.make(LoopCell, 33))
        p = C.model_path(name)
        T.export_ts(
            model,
            (torch.from_numpy(C.normal(np.random.default_rng(9), (2, 6, 3))),),
            p,
            ["x"],
            ["y"],
            dynamic_axes=T.batch_axes(["x", "y"], "N"),
        )
        C.check_file(p)
        assert control_ops(p) == {"Loop": 1}, control_ops(p)
        x = C.normal(np.random.default_rng(34), (3, 6, 3))
        worst = C.compare(name, C.ort_run(p, {"x": x}), T.run_torch(model, {"x": x}))
        record(
            name,
            T.TS_EXPORTER,
            f"torch.onnx TorchScript exporter (torch.jit.script), opset {T.TS_OPSET}",
            worst,
            "Scripted recurrent cell: h = zeros(N, 4); for t in range(x.size(1)): h = tanh(Linear(4->4)(h) + "
            "Linear(3->4)(x[:, t])); Linear(4->2)(h); x N x 6 x 3; random weights",
            "one Loop with trip count Gather(Shape(x), 1) (the fixed sequence length 6, next to a dynamic batch), a "
            "constant true condition and one loop-carried state; the body reads x and the weights from the "
            "enclosing graph",
        )

    run.attempt("control_cond_dynamo", cond)
    run.attempt("control_if_outer_dynamo", flag)
    run.attempt("control_loop_ts", loop)

    run.finish()


if __name__ == "__main__":
    main()
