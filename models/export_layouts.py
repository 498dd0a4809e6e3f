"""Export small models whose batch layout is unusual (`layout_*`) to ONNX.

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_layouts.py

`layout_unknown_dims` needs a second, PaddlePaddle environment (paddle and torch are kept
apart); its Python is taken from $PADDLE_PYTHON, default /work/paddleenv/bin/python:

    python3 -m venv /work/paddleenv
    /work/paddleenv/bin/pip install paddlepaddle==3.3.1 paddle2onnx==2.1.0 onnx==1.17.0 \
        onnxruntime==1.32.0 numpy==2.4.6 onnx_graphsurgeon==0.6.1 sympy==1.14.0

(onnx_graphsurgeon and sympy are needed by the Polygraphy constant folding that paddle.onnx.export
runs; installed up front, since the script sets POLYGRAPHY_AUTOINSTALL_DEPS=0 so that Polygraphy
does not pip-install them itself. The torch models verify with onnxruntime 1.32.0 as well.)

Writes models/layout_<name>.onnx with a batch fixed at 1 (static shapes), a batch on an axis
other than 0, no batch axis at all, explicit recurrent state inputs, or dynamic dims all named
"?". Torch models are random-initialised (seeded) and exported with the TorchScript exporter
(dynamo=False, opset 17, do_constant_folding=False) except layout_cnn_static_dynamo (dynamo=True,
opset 18, no dynamic_shapes). layout_unknown_dims is exported by paddle2onnx from a Paddle model
(InputSpec [None, 3, None, None]); paddle2onnx 2.1.0 names its dynamic dims "DynamicDimension.<k>",
so the script renames every one of them to "?" (graph inputs, outputs and value_info) and also keeps
the untouched paddle2onnx file as layout_unknown_dims_p2o.onnx. Every model is checked
(strict shape inference + full checker), run in onnxruntime on seeded inputs and compared with
the framework, and merged into models/manifest.json ("family": "layout", plus "layout", a
sentence, "batch_axes", input/output name -> batch axis or null, and "declared_shapes", the
dims as declared, dim_param names included). An export failure is
printed and recorded in the FAILURES summary; the other models are still written. `--out DIR`
writes there instead (with a manifest.json of its own).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _torch_common as T

PADDLE_OPSET = 17
FAMILY = "layout"
PADDLE_PYTHON = os.environ.get("PADDLE_PYTHON", "/work/paddleenv/bin/python")


# ----------------------------------------------------------------------------- models
class StaticCNN(nn.Module):
    """Batch hard-wired to 1 by x.reshape(1, -1) before the classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(8 * 8 * 8, 5)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):  # 1 x 3 x 16 x 16
        h = self.features(x).reshape(1, -1)  # 1 x 512
        return self.softmax(self.fc(h))


class Detector(nn.Module):
    """SSD-style head: stride-2 backbone to 4x4, 1x1 box / score heads, per-anchor reshape."""

    A, K = 3, 2

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),  # 16x16
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),  # 8x8
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
            nn.ReLU(),  # 4x4
        )
        self.box_head = nn.Conv2d(16, self.A * 4, 1)
        self.cls_head = nn.Conv2d(16, self.A * self.K, 1)

    def forward(self, image):  # 1 x 3 x 32 x 32
        f = self.backbone(image)
        boxes = self.box_head(f).permute(0, 2, 3, 1).reshape(1, -1, 4)  # 1 x 48 x 4
        scores = self.cls_head(f).permute(0, 2, 3, 1).reshape(1, -1, self.K)  # 1 x 48 x 2
        return boxes, torch.sigmoid(scores)


class CRNN(nn.Module):
    """Text-line recogniser, CTC layout: output T x N x classes (batch on axis 1)."""

    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8 x 4 x 16
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 x 2 x 8
            nn.Conv2d(16, 16, (2, 1)),
            nn.ReLU(),  # 16 x 1 x 8
        )
        self.rnn = nn.LSTM(16, 8, bidirectional=True, batch_first=False)
        self.fc = nn.Linear(16, 6)

    def forward(self, x):  # N x 1 x 8 x 32
        f = self.cnn(x).squeeze(2)  # N x 16 x 8
        f = f.permute(2, 0, 1)  # T=8 x N x 16
        h, _ = self.rnn(f)  # T x N x 16
        return torch.log_softmax(self.fc(h), dim=2)  # T x N x 6


class FrameVAD(nn.Module):
    """No batch axis: frames x bins in, one value per frame out."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x):  # 24 x 16
        return torch.sigmoid(self.net(x).squeeze(-1))  # 24


class SeqSqueezed(nn.Module):
    """Batch-1 sequence in, output without a batch axis."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.c2 = nn.Conv1d(4, 1, 1)

    def forward(self, x):  # 1 x 12
        h = self.c2(self.relu(self.c1(x.unsqueeze(1))))  # 1 x 1 x 12
        return h.reshape(-1)  # 12


class LSTMState(nn.Module):
    def __init__(self, num_layers=1, n_out=1):
        super().__init__()
        self.rnn = nn.LSTM(5, 16, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(16, n_out)

    def forward(self, x, h0, c0):  # N x 20 x 5, L x N x 16, L x N x 16
        h, _ = self.rnn(x, (h0, c0))
        return self.fc(h[:, -1, :])


# ----------------------------------------------------------------------------- checks
def declared(path):
    """[(name, [dim_value or dim_param or None])] for the graph inputs and outputs."""
    m = onnx.load(path)
    inits = {i.name for i in m.graph.initializer}

    def dims(v):
        return [
            d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
            for d in v.type.tensor_type.shape.dim
        ]

    return (
        [(v.name, dims(v)) for v in m.graph.input if v.name not in inits],
        [(v.name, dims(v)) for v in m.graph.output],
    )


def reshape_targets(path):
    """The constant shape of every Reshape whose shape input is an initializer or Constant node
    (None for a computed shape)."""
    m = onnx.load(path)
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    res = []
    for n in m.graph.node:
        if n.op_type == "Reshape":
            v = consts.get(n.input[1])
            res.append(None if v is None else [int(d) for d in v.reshape(-1)])
    return res


# ----------------------------------------------------------------------------- paddle
PADDLE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ.setdefault("POLYGRAPHY_AUTOINSTALL_DEPS", "0")
    import numpy as np
    import paddle
    import paddle.nn as nn
    import paddle2onnx

    out_path, feeds_path, ref_path = sys.argv[1:4]
    paddle.set_device("cpu")
    paddle.seed(90)
    np.random.seed(90)


    class FCNClassifier(nn.Layer):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2D(3, 8, 3, padding=1)
            self.c2 = nn.Conv2D(8, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):  # N x 3 x H x W
            h = nn.functional.relu(self.c1(x))
            h = nn.functional.relu(self.c2(h))
            return self.fc(paddle.flatten(self.pool(h), 1))


    model = FCNClassifier()
    model.eval()
    spec = [paddle.static.InputSpec(shape=[None, 3, None, None], dtype="float32", name="x")]
    paddle.onnx.export(model, os.path.splitext(out_path)[0], input_spec=spec, opset_version=OPSET)
    feeds = np.load(feeds_path)
    with paddle.no_grad():
        refs = {k: model(paddle.to_tensor(feeds[k])).numpy() for k in feeds.files}
    np.savez(ref_path, **refs)
    print("versions: paddlepaddle %s, paddle2onnx %s" % (paddle.__version__, paddle2onnx.__version__))
"""
).replace("OPSET", str(PADDLE_OPSET))


def export_paddle(feeds: dict):
    """Run PADDLE_SCRIPT in the paddle env: returns (raw onnx path, {key: paddle output}, versions)."""
    if not os.path.exists(PADDLE_PYTHON):
        raise RuntimeError(f"no PaddlePaddle environment at {PADDLE_PYTHON} (set $PADDLE_PYTHON)")
    tmp = tempfile.mkdtemp()
    script, feeds_path, ref_path = (os.path.join(tmp, n) for n in ("p.py", "feeds.npz", "ref.npz"))
    out_path = os.path.join(tmp, "fcn.onnx")
    with open(script, "w") as f:
        f.write(PADDLE_SCRIPT)
    np.savez(feeds_path, **feeds)
    env = dict(os.environ, POLYGRAPHY_AUTOINSTALL_DEPS="0", P2O_KEEP_TEMP_MODEL="0")
    r = subprocess.run(
        [PADDLE_PYTHON, script, out_path, feeds_path, ref_path],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"paddle export failed (rc {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    versions = next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("versions:"))
    refs = dict(np.load(ref_path))
    return out_path, refs, versions, tmp


def rename_dim_params(model: onnx.ModelProto, new: str = "?") -> int:
    """Set every dim_param of graph inputs, outputs and value_info to `new`; returns the count."""
    count = 0
    for v in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            for d in v.type.tensor_type.shape.dim:
                if d.HasField("dim_param"):
                    d.dim_param = new
                    count += 1
    return count


# ----------------------------------------------------------------------------- main
def main():
    C.parse_args(__doc__)
    run = C.Results()

    def record(name, exporter, conv, diff, desc, extra, framework=T.FRAMEWORK):
        ins, outs = declared(C.model_path(name))
        # "inputs"/"outputs" write null for any dim_param; keep the declared names here as well
        shapes = {n: d for n, d in ins + outs}
        e = run.entries[name] = C.describe(
            name,
            exporter=exporter,
            framework=framework,
            converter=conv,
            max_abs_diff=diff,
            description=desc,
            input_range="normal",
            extra={"family": FAMILY, **extra, "declared_shapes": shapes},
        )
        print(f"  {name}: {e['file_size']} bytes, {e['num_nodes']} nodes, opsets {e['opsets']}")
        print(f"    inputs {ins} -> outputs {outs}")
        print(f"    ops {e['ops']}")

    # 1/2. static CNN, batch fixed at 1 by reshape(1, -1)
    cnn = T.make(StaticCNN, 20)
    cnn_feeds = {"x": C.normal(np.random.default_rng(42), (1, 3, 16, 16))}
    cnn_example = (torch.from_numpy(C.normal(np.random.default_rng(123), (1, 3, 16, 16))),)
    cnn_desc = (
        "Static CNN, batch fixed at 1: Conv(3->8, 3x3, pad 1) ReLU MaxPool(2) Conv(8->8, 3x3, "
        "pad 1) ReLU, x.reshape(1, -1), Linear(512->5), Softmax(dim=1); random weights"
    )
    cnn_layout = (
        "Static batch of 1: x is declared [1, 3, 16, 16] and the graph flattens with a "
        "Reshape to [1, -1], so the model only accepts batch size 1."
    )

    def cnn_ts():
        name = "layout_cnn_static_ts"
        p = C.model_path(name)
        T.export_ts(cnn, cnn_example, p, ["x"], ["probs"])
        C.check_file(p)
        targets = reshape_targets(p)
        assert [1, -1] in targets, f"{name}: no Reshape to [1, -1] (Reshape targets {targets})"
        print(f"  {name}: Reshape targets {targets}")
        diff = C.compare(name, C.ort_run(p, cnn_feeds), T.run_torch(cnn, cnn_feeds))
        record(
            name,
            T.TS_EXPORTER,
            T.TS_CONV,
            diff,
            cnn_desc,
            {"layout": cnn_layout, "batch_axes": {"x": 0, "probs": 0}, "reshape_targets": targets},
        )

    def cnn_dynamo():
        name = "layout_cnn_static_dynamo"
        p = C.model_path(name)
        T.export_dynamo(cnn, cnn_example, p, ["x"], ["probs"])
        C.check_file(p)
        targets = reshape_targets(p)
        print(f"  {name}: Reshape targets {targets}")
        assert targets and all(t is not None and t[0] == 1 for t in targets), (
            f"{name}: expected constant Reshape targets starting with 1, got {targets}"
        )
        diff = C.compare(name, C.ort_run(p, cnn_feeds), T.run_torch(cnn, cnn_feeds))
        layout = (
            "Static batch of 1: x is declared [1, 3, 16, 16] (torch.export, no dynamic_shapes) and "
            f"the flatten is a Reshape to {targets[0]}, so the model only accepts batch size 1."
        )
        record(
            name,
            T.DYNAMO_EXPORTER,
            T.DYNAMO_CONV + ", static shapes",
            diff,
            cnn_desc.replace("random weights", "same weights as layout_cnn_static_ts"),
            {"layout": layout, "batch_axes": {"x": 0, "probs": 0}, "reshape_targets": targets},
        )

    run.attempt("layout_cnn_static_ts", cnn_ts)
    run.attempt("layout_cnn_static_dynamo", cnn_dynamo)

    # 3. detector head, static batch 1, two outputs
    def detector():
        name = "layout_detector_static_ts"
        p = C.model_path(name)
        m = T.make(Detector, 21)
        feeds = {"image": C.normal(np.random.default_rng(42), (1, 3, 32, 32))}
        example = (torch.from_numpy(C.normal(np.random.default_rng(123), (1, 3, 32, 32))),)
        T.export_ts(m, example, p, ["image"], ["boxes", "scores"])
        C.check_file(p)
        targets = reshape_targets(p)
        print(f"  {name}: Reshape targets {targets}")
        assert any(t is not None and t[0] == 1 for t in targets), f"{name}: no Reshape to [1, ...]: {targets}"
        diff = C.compare(name, C.ort_run(p, feeds), T.run_torch(m, feeds))
        record(
            name,
            T.TS_EXPORTER,
            T.TS_CONV,
            diff,
            "Detector-style head, batch fixed at 1: image 1x3x32x32, 3x(Conv 3x3 stride 2 ReLU) to 16x4x4, "
            "1x1 Conv heads with A*4 = 12 (boxes) and A*K = 6 (scores) channels (A = 3 anchors, K = 2 "
            "classes), permute(0, 2, 3, 1) and reshape(1, -1, 4) -> boxes 1x48x4, reshape(1, -1, 2) + "
            "sigmoid -> scores 1x48x2; random weights",
            {
                "layout": "Static batch of 1: image is declared [1, 3, 32, 32] and both heads end in a Reshape "
                "to [1, -1, 4] / [1, -1, 2] (48 anchors = 4x4 cells x 3), so only batch size 1 works.",
                "batch_axes": {"image": 0, "boxes": 0, "scores": 0},
                "reshape_targets": targets,
                "anchors": 3,
                "classes": 2,
            },
        )

    run.attempt("layout_detector_static_ts", detector)

    # 4. CRNN, CTC layout (batch on axis 1 of the output)
    def crnn():
        name = "layout_crnn_ctc_ts"
        p = C.model_path(name)
        m = T.make(CRNN, 22)
        example = (torch.from_numpy(C.normal(np.random.default_rng(123), (2, 1, 8, 32))),)
        T.export_ts(m, example, p, ["x"], ["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {1: "batch"}})
        C.check_file(p)
        feeds = {"x": C.normal(np.random.default_rng(42), (3, 1, 8, 32))}
        diff = C.compare(name, C.ort_run(p, feeds), T.run_torch(m, feeds))
        f7 = {"x": C.normal(np.random.default_rng(7), (7, 1, 8, 32))}
        C.compare(name + " (batch 7)", C.ort_run(p, f7), T.run_torch(m, f7))
        f1 = {"x": C.normal(np.random.default_rng(1), (1, 1, 8, 32))}
        C.compare(name + " (batch 1)", C.ort_run(p, f1), T.run_torch(m, f1))
        for r in C.node_summaries(p, ("LSTM", "GRU", "RNN")):
            print(f"    {r}")
        record(
            name,
            T.TS_EXPORTER,
            T.TS_CONV,
            diff,
            "CRNN text-line recogniser, CTC layout: grayscale line x N x 1 x 8 x 32, Conv(1->8) ReLU "
            "MaxPool(2), Conv(8->16) ReLU MaxPool(2), Conv(16->16, 2x1) ReLU (height 1), squeeze height, "
            "permute to T x N x C (T = 8), bidirectional nn.LSTM(16, 8, batch_first=False), Linear(16->6), "
            "log_softmax(dim=2); random weights",
            {
                "layout": "Batch on different axes: input x is [batch, 1, 8, 32] (batch axis 0) but the "
                "output logits is time-major [8, batch, 6] (batch axis 1, CTC layout).",
                "batch_axes": {"x": 0, "logits": 1},
                "seq_len": 8,
                "num_classes": 6,
            },
        )

    run.attempt("layout_crnn_ctc_ts", crnn)

    # 5. frames x bins, no batch axis
    def static_ts(name, cls, s, shape, out_name):
        """Export cls() (seed s) with one static input x of `shape`; returns the max abs diff vs
        torch."""
        p = C.model_path(name)
        m = T.make(cls, s)
        example = (torch.from_numpy(C.normal(np.random.default_rng(123), shape)),)
        T.export_ts(m, example, p, ["x"], [out_name])
        C.check_file(p)
        feeds = {"x": C.normal(np.random.default_rng(42), shape)}
        return C.compare(name, C.ort_run(p, feeds), T.run_torch(m, feeds))

    def frames():
        name = "layout_nobatch_frames_ts"
        diff = static_ts(name, FrameVAD, 23, (24, 16), "vad")
        record(
            name,
            T.TS_EXPORTER,
            T.TS_CONV,
            diff,
            "Per-frame voice-activity scorer without a batch axis: x 24 frames x 16 bins, Linear(16->8) "
            "Tanh Linear(8->1) per frame, squeeze(-1), sigmoid -> vad 24; random weights",
            {
                "layout": "No batch axis: x is one static [24, 16] (frames, bins) example and vad is [24], "
                "one value per frame; axis 0 is time, not a batch.",
                "batch_axes": {"x": None, "vad": None},
            },
        )

    run.attempt("layout_nobatch_frames_ts", frames)

    # 6. batch-1 sequence, output without a batch axis
    def seq_squeezed():
        name = "layout_seq_squeezed_ts"
        diff = static_ts(name, SeqSqueezed, 24, (1, 12), "y")
        record(
            name,
            T.TS_EXPORTER,
            T.TS_CONV,
            diff,
            "1-D conv over a batch-1 sequence: x 1 x 12, unsqueeze(1), Conv1d(1->4, k=3, pad 1) ReLU "
            "Conv1d(4->1, k=1), reshape(-1) -> y 12; random weights",
            {
                "layout": "Batch fixed at 1 on the input only: x is [1, 12] (batch axis 0, size 1) but the "
                "output y is [12] with no batch axis (reshape(-1) drops it).",
                "batch_axes": {"x": 0, "y": None},
            },
        )

    run.attempt("layout_seq_squeezed_ts", seq_squeezed)

    # 7/8. LSTMs with explicit (h0, c0)
    def lstm_with_state(name, s, num_layers, n_out, dynamic):
        """Export LSTMState(num_layers, n_out) (seed s) with inputs x, h0, c0: a dynamic batch if
        `dynamic` (compared on batches 3 and 7 and with a zero state), else a static batch of 1;
        returns the max abs diff vs torch on the first batch."""
        p = C.model_path(name)
        m = T.make(LSTMState, s, num_layers, n_out)

        def sample(g, n):
            return {
                "x": C.normal(g, (n, 20, 5)),
                "h0": C.normal(g, (num_layers, n, 16), 0.5),
                "c0": C.normal(g, (num_layers, n, 16), 0.5),
            }

        example = sample(np.random.default_rng(123), 2 if dynamic else 1)
        example = tuple(torch.from_numpy(v) for v in example.values())
        axes = {"x": {0: "batch"}, "h0": {1: "batch"}, "c0": {1: "batch"}, "y": {0: "batch"}}
        T.export_ts(m, example, p, ["x", "h0", "c0"], ["y"], dynamic_axes=axes if dynamic else None)
        C.check_file(p)
        feeds = sample(np.random.default_rng(42), 3 if dynamic else 1)
        diff = C.compare(name, C.ort_run(p, feeds), T.run_torch(m, feeds))
        if dynamic:
            f7 = sample(np.random.default_rng(7), 7)
            C.compare(name + " (batch 7)", C.ort_run(p, f7), T.run_torch(m, f7))
            z = dict(feeds, h0=np.zeros_like(feeds["h0"]), c0=np.zeros_like(feeds["c0"]))
            C.compare(name + " (zero state)", C.ort_run(p, z), T.run_torch(m, z))
        for r in C.node_summaries(p, ("LSTM", "GRU", "RNN")):
            print(f"    {r}")
        ins, _ = declared(p)
        assert [n for n, _ in ins] == ["x", "h0", "c0"], f"{name}: graph inputs {ins}"
        return diff

    def lstm_state():
        name = "layout_lstm_state_ts"
        diff = lstm_with_state(name, 25, 1, 1, dynamic=True)
        record(
            name,
            T.TS_EXPORTER,
            T.TS_CONV,
            diff,
            "LSTM regressor with explicit initial state: x N x 20 x 5, h0 / c0 1 x N x 16, "
            "nn.LSTM(5, 16, batch_first=True) called as rnn(x, (h0, c0)), last time step, Linear(16->1); "
            "random weights; verified with non-zero h0/c0 (std 0.5)",
            {
                "layout": "Dynamic batch on different axes: x is [batch, 20, 5] (axis 0) while the recurrent "
                "state inputs h0 and c0 are [1, batch, 16] (axis 1); y is [batch, 1].",
                "batch_axes": {"x": 0, "h0": 1, "c0": 1, "y": 0},
                "fixed_inputs": ["h0", "c0"],
                "seq_len": 20,
            },
        )

    run.attempt("layout_lstm_state_ts", lstm_state)

    def lstm2_state():
        name = "layout_lstm2_state_static_ts"
        diff = lstm_with_state(name, 26, 2, 3, dynamic=False)
        record(
            name,
            T.TS_EXPORTER,
            T.TS_CONV,
            diff,
            "2-layer LSTM regressor with explicit initial state, batch fixed at 1: x 1 x 20 x 5, h0 / c0 "
            "2 x 1 x 16 (num_layers, batch, hidden), nn.LSTM(5, 16, num_layers=2, batch_first=True) called "
            "as rnn(x, (h0, c0)), last time step, Linear(16->3) -> 3 regression targets; random weights; "
            "verified with non-zero h0/c0 (std 0.5)",
            {
                "layout": "Static batch of 1 on different axes: x is [1, 20, 5] (axis 0) and the state inputs "
                "h0 and c0 are [2, 1, 16] (num_layers, batch, hidden: axis 1); y is [1, 3].",
                "batch_axes": {"x": 0, "h0": 1, "c0": 1, "y": 0},
                "fixed_inputs": ["h0", "c0"],
                "seq_len": 20,
                "num_layers": 2,
            },
        )

    run.attempt("layout_lstm2_state_static_ts", lstm2_state)

    # 9. paddle2onnx fully-convolutional classifier, dynamic dims renamed to "?"
    def unknown_dims():
        name, raw_name = "layout_unknown_dims", "layout_unknown_dims_p2o"
        feeds = {
            "a": C.normal(np.random.default_rng(42), (1, 3, 48, 192)),
            "b": C.normal(np.random.default_rng(43), (2, 3, 16, 24)),
            "c": C.normal(np.random.default_rng(44), (3, 3, 16, 16)),
        }
        raw_tmp, refs, versions, tmp = export_paddle(feeds)
        try:
            shutil.copyfile(raw_tmp, C.model_path(raw_name))  # byte for byte as paddle2onnx wrote it
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        renamed = onnx.load(C.model_path(raw_name))
        n = rename_dim_params(renamed, "?")
        onnx.save(renamed, C.model_path(name))
        raw_ins, raw_outs = declared(C.model_path(raw_name))
        print(f"  paddle2onnx declared {raw_ins} -> {raw_outs}; {n} dim_params renamed to '?'")
        framework = f"paddlepaddle {versions.split(',')[0].split()[-1]}"
        conv = f"paddle2onnx {versions.split(',')[1].split()[-1]} (paddle.onnx.export), opset {PADDLE_OPSET}"
        desc = (
            "Fully-convolutional classifier (PaddlePaddle, InputSpec [None, 3, None, None]): Conv2D(3->8, 3x3, "
            "pad 1) ReLU Conv2D(8->8, 3x3, pad 1) ReLU AdaptiveAvgPool2D(1) flatten Linear(8->4); random "
            "weights (paddle.seed(90))"
        )
        diffs = {}
        for nm in (raw_name, name):
            path = C.model_path(nm)
            C.check_file(path)
            worst = 0.0
            for k in ("a", "b", "c"):
                worst = max(
                    worst,
                    C.compare(
                        f"{nm} ({'x'.join(map(str, feeds[k].shape))})", C.ort_run(path, {"x": feeds[k]}), [refs[k]]
                    ),
                )
            diffs[nm] = worst
        out_name = raw_outs[0][0]
        record(
            name,
            "paddle2onnx",
            conv + "; all DynamicDimension.<k> dim_params renamed to '?'",
            diffs[name],
            desc + ". paddle2onnx named the dynamic dims DynamicDimension.0/1/2; every dim_param of the graph "
            "inputs, outputs and value_info was then renamed to '?' (as other exporters write unknown dims); "
            "graph and weights untouched (the untouched file is layout_unknown_dims_p2o)",
            {
                "layout": f"Every dynamic dim is named '?': x is ['?', 3, '?', '?'] (batch, height and width all "
                f"'?') and {out_name} is ['?', 4]; '?' does not mark which axis is the batch.",
                "batch_axes": {"x": 0, out_name: 0},
                "dim_params_renamed_from": "DynamicDimension.<k>",
                "verified_input_shapes": [list(v.shape) for v in feeds.values()],
            },
            framework=framework,
        )
        record(
            raw_name,
            "paddle2onnx",
            conv,
            diffs[raw_name],
            desc + ". Exactly as paddle2onnx wrote it (dynamic dims named DynamicDimension.0/1/2)",
            {
                "layout": f"Dynamic batch, height and width with distinct paddle2onnx names: x is "
                f"{raw_ins[0][1]} and {out_name} is {raw_outs[0][1]}.",
                "batch_axes": {"x": 0, out_name: 0},
                "verified_input_shapes": [list(v.shape) for v in feeds.values()],
            },
            framework=framework,
        )

    run.attempt("layout_unknown_dims", unknown_dims)

    run.finish()


if __name__ == "__main__":
    main()
