"""LSTM, GRU and RNN: forward and attribution.

1. Forward parity with onnxruntime over a grid of direction x layout x bias x sequence_lens (with
   zero lengths) x initial states (graph inputs or constants) x peepholes x clip x input_forget x
   linear_before_reset x every activation function, each optional output left out somewhere. The grid
   of one op is one graph (one compilation). onnxruntime rejects layout=1, so layout-1 nodes are
   compared with the layout-0 node on transposed inputs; it has no float64 or float16 kernels and no
   LSTM-1, GRU-1, GRU-3, RNN-1, so those are compared with its float32 results and with onnxshap's
   version-7 results.
2. Local completeness of the composite rules in float64, with x == r at some time steps.
3. Explainer end to end: attributions (to X and to initial states given as graph inputs) sum to
   f(x) - mean f(background).
4. An independent reference: the same LSTM unrolled into Gather/MatMul/Add/Split/Sigmoid/Tanh/Mul
   (as exporters that unroll do) explained by onnxshap gives the LSTM op's attributions.
5. The committed sequence models (slow): parity with onnxruntime and complete attributions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap._errors import UnsupportedOpError
from onnxshap._interpreter import node_function
from onnxshap._multipliers import NodeContext
from tests.conftest import REPO
from tests.helpers import run_ort

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
N_STATES = {"LSTM": 2, "GRU": 1, "RNN": 1}
OUTPUTS = {"LSTM": ("Y", "Y_h", "Y_c"), "GRU": ("Y", "Y_h"), "RNN": ("Y", "Y_h")}
T, BATCH, INPUT, HIDDEN = 5, 3, 4, 3


# --- graph building ---------------------------------------------------------------------------------


def _case(
    op: str,
    prefix: str,
    rng: np.random.Generator,
    *,
    direction: str = "forward",
    layout: int = 0,
    bias: bool = True,
    seq: Sequence[int] | None = None,
    seq_const: bool = False,
    init: str | None = None,  # None, "input" (graph inputs) or "const" (initializers)
    peepholes: bool = False,
    outputs: Sequence[str] | None = None,
    batch: int = BATCH,
    steps: int = T,
    **attrs: Any,
) -> tuple[onnx.NodeProto, dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """One recurrent node with random weights, all tensor names prefixed. Arrays are drawn in layout 0
    and transposed for layout 1, so the same arrays serve the layout-0 reference."""
    gates, n_dirs = GATES[op], 2 if direction == "bidirectional" else 1
    p = prefix
    feeds: dict[str, np.ndarray] = {}
    consts: dict[str, np.ndarray] = {}
    x = rng.standard_normal((steps, batch, INPUT)).astype(np.float32)
    feeds[p + "X"] = x if layout == 0 else x.transpose(1, 0, 2)
    consts[p + "W"] = (0.6 * rng.standard_normal((n_dirs, gates * HIDDEN, INPUT))).astype(np.float32)
    consts[p + "R"] = (0.6 * rng.standard_normal((n_dirs, gates * HIDDEN, HIDDEN))).astype(np.float32)
    inputs = [p + "X", p + "W", p + "R", ""]
    if bias:
        consts[p + "B"] = (0.5 * rng.standard_normal((n_dirs, 2 * gates * HIDDEN))).astype(np.float32)
        inputs[3] = p + "B"
    inputs.append("")
    if seq is not None:
        (consts if seq_const else feeds)[p + "sl"] = np.asarray(seq, np.int32)
        inputs[4] = p + "sl"
    for state in ("h0", "c0")[: N_STATES[op]]:
        inputs.append("")
        if init is not None:
            s = rng.standard_normal((n_dirs, batch, HIDDEN)).astype(np.float32)
            (feeds if init == "input" else consts)[p + state] = s if layout == 0 else s.transpose(1, 0, 2)
            inputs[-1] = p + state
    if peepholes:
        consts[p + "P"] = rng.standard_normal((n_dirs, 3 * HIDDEN)).astype(np.float32)
        inputs.append(p + "P")
    while inputs[-1] == "":
        inputs.pop()
    if layout:
        attrs["layout"] = layout
    names = [p + o if o in (outputs or OUTPUTS[op]) else "" for o in OUTPUTS[op]]
    while names[-1] == "":
        names.pop()
    node = helper.make_node(op, inputs, names, hidden_size=HIDDEN, direction=direction, **attrs)
    return node, feeds, consts, [n for n in names if n]


def _model(
    nodes: Sequence[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray],
    outputs: Sequence[str],
    opset: int,
    *,
    batch_axis: bool = False,
) -> onnx.ModelProto:
    """batch_axis: declare axis 0 of every input symbolic ("N"), for the Explainer."""

    def info(name: str, a: np.ndarray) -> onnx.ValueInfoProto:
        shape = ("N", *a.shape[1:]) if batch_axis else a.shape
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), shape)

    graph = helper.make_graph(
        list(nodes),
        "recurrent",
        [info(k, v) for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _to_layout0(node: onnx.NodeProto, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray]) -> onnx.NodeProto:
    """The layout-0 twin of a layout-1 node: transposes its X / state feeds and constants in place."""
    ref = onnx.NodeProto.FromString(node.SerializeToString())
    for a in ref.attribute:
        if a.name == "layout":
            a.i = 0
    state_inputs = [ref.input[0], *ref.input[5:7]]
    for name in state_inputs:
        for store in (feeds, consts):
            if name in store:
                store[name] = np.ascontiguousarray(np.swapaxes(store[name], 0, 1))
    return ref


def _from_layout0(name: str, value: np.ndarray) -> np.ndarray:
    """A layout-0 output (Y [seq, dirs, batch, hidden], states [dirs, batch, hidden]) in layout 1."""
    return value.transpose(2, 0, 1, 3) if value.ndim == 4 else value.transpose(1, 0, 2)


def _grid(op: str, opset: int) -> list[dict[str, Any]]:
    """Attribute combinations: every direction with four variants (defaults; zero-length sequences,
    state inputs, no bias; clip with state inputs; constant states and lengths), alternating layouts
    where the version has the attribute, plus each op's own attributes and all activation functions."""
    variants: list[dict[str, Any]] = [
        {},
        dict(seq=[T, 2, 0], init="input", bias=False, outputs=OUTPUTS[op][1:]),
        dict(seq=[3, T, 1], init="input", clip=0.7, outputs=("Y",)),
        dict(seq=[1, 4, T], seq_const=True, init="const", outputs=OUTPUTS[op][-1:]),
    ]
    cases = []
    for i, direction in enumerate(("forward", "reverse", "bidirectional")):
        for j, variant in enumerate(variants):
            layout = (i + j) % 2 if opset >= 14 else 0
            cases.append(dict(direction=direction, layout=layout, **variant))
    both = "bidirectional"
    if op == "LSTM":
        cases += [
            dict(direction=both, peepholes=True, init="input", seq=[4, T, 2], layout=int(opset >= 14)),
            dict(peepholes=True, input_forget=1, clip=1.5),
            dict(direction="reverse", input_forget=1, init="input"),
            dict(
                activations=["HardSigmoid", "LeakyRelu", "Softsign"],
                activation_alpha=[0.3, 0.05],
                activation_beta=[0.4],
            ),
            dict(
                direction=both,
                activations=["Sigmoid", "ScaledTanh", "Elu", "Relu", "Softplus", "Affine"],
                activation_alpha=[0.9, 0.8, 0.5],
                activation_beta=[1.2, 0.1],
                seq=[T, 3, 1],
            ),
        ]
    elif op == "GRU":
        cases += [
            dict(direction=both, linear_before_reset=1, init="input", seq=[4, T, 2], layout=int(opset >= 14)),
            dict(linear_before_reset=1, bias=False, clip=0.9),
            dict(direction="reverse", linear_before_reset=1, activations=["Sigmoid", "Relu"]),
            dict(
                direction=both,
                activations=["HardSigmoid", "Softplus", "Sigmoid", "Affine"],
                activation_alpha=[0.2, 0.7],
                activation_beta=[0.5, 0.1],
            ),
            dict(activations=["ScaledTanh", "Elu"], activation_alpha=[1.1, 0.7], activation_beta=[0.6]),
        ]
    else:
        cases += [
            dict(activations=["ThresholdedRelu"], activation_alpha=[0.1]),
            dict(direction=both, activations=["Relu", "LeakyRelu"], activation_alpha=[0.2], init="input"),
            dict(activations=["Softsign"], clip=0.5, seq=[T, 1, 3]),
            dict(direction="reverse", activations=["Sigmoid"]),
        ]
    return cases


def _grid_models(
    op: str, opset: int, rng: np.random.Generator
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], onnx.ModelProto, dict[str, np.ndarray], set[str]]:
    """(tested model, feeds, layout-0 reference model, reference feeds, outputs of layout-1 nodes)."""
    nodes, ref_nodes, outputs, layout1 = [], [], [], set()
    feeds: dict[str, np.ndarray] = {}
    consts: dict[str, np.ndarray] = {}
    ref_feeds: dict[str, np.ndarray] = {}
    ref_consts: dict[str, np.ndarray] = {}
    for k, cfg in enumerate(_grid(op, opset)):
        node, f, c, outs = _case(op, f"n{k}_", rng, **cfg)
        nodes.append(node)
        feeds.update(f)
        consts.update(c)
        outputs += outs
        if cfg.get("layout"):
            f, c = dict(f), dict(c)
            node = _to_layout0(node, f, c)
            layout1 |= set(outs)
        ref_nodes.append(node)
        ref_feeds.update(f)
        ref_consts.update(c)
    return (
        _model(nodes, feeds, consts, outputs, opset),
        feeds,
        _model(ref_nodes, ref_feeds, ref_consts, outputs, opset),
        ref_feeds,
        layout1,
    )


def _check_grid(op: str, opset: int, rng: np.random.Generator) -> None:
    model, feeds, ref, ref_feeds, layout1 = _grid_models(op, opset, rng)
    got = onnxshap.load(model).run(feeds)
    want = run_ort(ref, ref_feeds)
    for name, value in want.items():
        expected = _from_layout0(name, value) if name in layout1 else value
        assert got[name].dtype == expected.dtype
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)


# --- 1. forward parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_attribute_grid_matches_onnxruntime(op: str, rng: np.random.Generator) -> None:
    _check_grid(op, 22, rng)


@pytest.mark.slow
@pytest.mark.parametrize("opset", [7, 14])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_attribute_grid_matches_onnxruntime_at_older_versions(op: str, opset: int, rng: np.random.Generator) -> None:
    _check_grid(op, opset, rng)


@pytest.mark.parametrize(("old", "ops"), [(1, ("LSTM", "GRU", "RNN")), (3, ("GRU",))])
def test_versions_onnxruntime_lacks_match_version_7(old: int, ops: tuple[str, ...], rng: np.random.Generator) -> None:
    # Same equations as version 7. Version 1 adds `output_sequence` (ignored: the node's outputs decide);
    # GRU-1 has no linear_before_reset and the default direction "foward" (a typo the spec keeps).
    nodes, old_nodes, outputs = [], [], []
    feeds: dict[str, np.ndarray] = {}
    consts: dict[str, np.ndarray] = {}
    for k, op in enumerate(ops):
        attrs: dict[str, Any] = dict(direction="reverse", init="input", seq=[T, 2, 4])
        if op == "GRU" and old == 3:
            attrs["linear_before_reset"] = 1
        node, f, c, outs = _case(op, f"n{k}_", rng, **attrs)
        nodes.append(node)
        legacy = onnx.NodeProto.FromString(node.SerializeToString())
        legacy.attribute.append(helper.make_attribute("output_sequence", 1))
        old_nodes.append(legacy)
        if op == "GRU" and old == 1:
            node, f2, c2, outs2 = _case(op, f"d{k}_", rng)
            nodes.append(node)
            old_nodes.append(helper.make_node(op, node.input, node.output, hidden_size=HIDDEN))  # schema default
            f, c, outs = {**f, **f2}, {**c, **c2}, outs + outs2
        feeds.update(f)
        consts.update(c)
        outputs += outs
    want = onnxshap.load(_model(nodes, feeds, consts, outputs, 7)).run(feeds)
    got = onnxshap.load(_model(old_nodes, feeds, consts, outputs, old)).run(feeds)
    for name in outputs:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_float_types_track_float32(dtype: Any, rng: np.random.Generator) -> None:
    # onnxruntime has float32 kernels only: float64 must agree with it to float32 precision, float16
    # (computed in float32, rounded once) to float16 precision.
    node, feeds, consts, outs = _case(
        "LSTM", "", rng, direction="bidirectional", init="input", seq=[T, 2, 0], peepholes=True
    )
    want = run_ort(_model([node], feeds, consts, outs, 22), feeds)
    cast = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in {**feeds, **consts}.items()}
    got = onnxshap.load(_model([node], {k: cast[k] for k in feeds}, {k: cast[k] for k in consts}, outs, 22)).run(
        {k: cast[k] for k in feeds}
    )
    rtol = 1e-5 if dtype == np.float64 else 5e-3
    for name in outs:
        assert got[name].dtype == dtype
        np.testing.assert_allclose(got[name].astype(np.float32), want[name], rtol=rtol, atol=rtol, err_msg=name)


def test_activation_defaults_follow_the_onnx_operators(rng: np.random.Generator) -> None:
    # ThresholdedRelu alpha 1.0, Affine alpha 1.0 / beta 0.0, LeakyRelu 0.01, HardSigmoid 0.2 / 0.5,
    # Elu 1.0 (onnxruntime falls back to 0 for the first two).
    defaults = {
        "ThresholdedRelu": ([1.0], []),
        "Affine": ([1.0], [0.0]),
        "LeakyRelu": ([0.01], []),
        "HardSigmoid": ([0.2], [0.5]),
        "Elu": ([1.0], []),
    }
    nodes, outputs, pairs = [], [], []
    feeds: dict[str, np.ndarray] = {}
    consts: dict[str, np.ndarray] = {}
    for k, (name, (alpha, beta)) in enumerate(defaults.items()):
        implicit, f, c, outs = _case("RNN", f"i{k}_", rng, activations=[name])
        renamed = [f"e{k}_{o}" for o in implicit.output]
        explicit = helper.make_node(
            "RNN",
            implicit.input,
            renamed,
            hidden_size=HIDDEN,
            activations=[name],
            activation_alpha=alpha,
            **({"activation_beta": beta} if beta else {}),
        )
        nodes += [implicit, explicit]
        feeds.update(f)
        consts.update(c)
        outputs += [*outs, *renamed]
        pairs += [(name, a, b) for a, b in zip(outs, renamed)]
    got = onnxshap.load(_model(nodes, feeds, consts, outputs, 22)).run(feeds)
    for name, a, b in pairs:
        np.testing.assert_array_equal(got[a], got[b], err_msg=name)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (dict(activations=["Swish"]), "activations"),
        (dict(activations=["ScaledTanh"]), "activation_alpha"),
        (dict(activations=["Tanh", "Tanh", "Tanh"]), "needs 1 activation"),
        (dict(layout=2), "layout"),
    ],
)
def test_bad_attributes_are_rejected(attrs: dict[str, Any], message: str, rng: np.random.Generator) -> None:
    node, feeds, consts, outs = _case("RNN", "", rng, **attrs)
    with pytest.raises(UnsupportedOpError, match=message):
        onnxshap.load(_model([node], feeds, consts, outs, 22)).run(feeds)


# --- 2. local completeness ---------------------------------------------------------------------------

LOCAL = [
    ("LSTM", dict(direction="reverse", peepholes=True, clip=0.8, seq=[T, 2, 0], layout=1), 1),
    ("GRU", dict(linear_before_reset=1, clip=0.6, seq=[3, T, 1]), 0),
    ("RNN", dict(direction="bidirectional", seq=[T, 0, 2], activations=["Relu", "Elu"]), 0),
    pytest.param(
        "LSTM",
        dict(direction="bidirectional", input_forget=1, activations=["HardSigmoid", "Relu", "Softsign"]),
        0,
        marks=pytest.mark.slow,
    ),
    pytest.param("GRU", dict(direction="bidirectional", seq=[4, T, 0], layout=1), 1, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(
    ("op", "attrs", "layout"), LOCAL, ids=["LSTM", "GRU", "RNN", "LSTM-bidirectional", "GRU-bidirectional"]
)
def test_rule_is_locally_complete(op: str, attrs: dict[str, Any], layout: int, rng: np.random.Generator) -> None:
    """Sum over X, B and the initial states of m * (x - r) equals sum over Y, Y_h (Y_c) of m_out * (y - r_y),
    for random output multipliers; the reference equals the sample at time steps 1 and 3 and, in the
    first initial state, everywhere."""
    node_proto, feeds, consts, outs = _case(op, "", rng, init="input", **attrs)
    values = {**feeds, **consts}
    names = list(node_proto.input)
    node = onnxshap.load(_model([node_proto], feeds, consts, outs, 22)).graph.nodes[0]
    assert node.spec is not None and node.spec.composite is not None
    rule = node.spec.composite
    varying_names = {names[0], names[3], *names[5:7]}
    with jax.enable_x64(True):
        as64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in values.items()}
        xin = [jnp.asarray(as64[n]) if n else None for n in names]
        rin = list(xin)
        for p, n in enumerate(names):
            if not n or n not in varying_names or p == 5:  # the first initial state: r == x
                continue
            r = np.asarray(xin[p]) + rng.standard_normal(np.shape(xin[p]))
            if p == 0:  # r == x at time steps 1 and 3
                steps = (slice(None), [1, 3]) if layout else ([1, 3],)
                r[steps] = np.asarray(xin[0])[steps]
            rin[p] = jnp.asarray(r)
        f = node_function(node)
        varying = [bool(n) and n in varying_names for n in names]
        shapes = jax.eval_shape(f, *xin)
        m_out = [jnp.asarray(rng.standard_normal(y.shape)) for y in shapes]

        present: list[bool] = []

        @jax.jit
        def flows(xin: list[Any], rin: list[Any], m_out: list[Any]) -> tuple[Any, Any]:
            xout, rout = f(*xin), f(*rin)
            m_in = rule(NodeContext(node, f, xin, rin, xout, rout, varying), m_out)
            present.extend(m is not None for m in m_in)
            inflow = sum(jnp.sum(m * (x - r)) for m, x, r, v in zip(m_in, xin, rin, varying) if v)
            outflow = sum(jnp.sum(m * (x - r)) for m, x, r in zip(m_out, xout, rout))
            return inflow, outflow

        inflow, outflow = (float(v) for v in flows(xin, rin, m_out))
    assert present == varying
    assert inflow == pytest.approx(outflow, rel=1e-10, abs=1e-12)
    assert abs(outflow) > 1e-3  # not a vacuous check


# --- 3. Explainer end to end -------------------------------------------------------------------------

END_TO_END = [
    pytest.param("LSTM", dict(direction="bidirectional", peepholes=True, init="input"), marks=pytest.mark.slow),
    ("GRU", dict(linear_before_reset=1, init="input", seq=[T])),
    ("RNN", dict(direction="reverse", clip=1.0, init="input", activations=["Softsign"])),
]


@pytest.mark.parametrize(("op", "attrs"), END_TO_END, ids=["LSTM", "GRU", "RNN"])
def test_explainer_is_complete_including_initial_states(
    op: str, attrs: dict[str, Any], rng: np.random.Generator
) -> None:
    # layout 1 puts the batch axis first in X, the initial states (and sequence_lens, a held int input).
    node, feeds, consts, outs = _case(op, "", rng, layout=1, batch=1, outputs=("Y_h",), **attrs)
    model = _model([node], feeds, consts, outs, 22, batch_axis=True)
    floats = [k for k, v in feeds.items() if v.dtype == np.float32]

    def draw(n: int) -> dict[str, np.ndarray]:
        return {k: rng.standard_normal((n, *feeds[k].shape[1:])).astype(np.float32) for k in floats}

    samples = draw(4)
    if "seq" in attrs:
        samples[node.input[4]] = np.array([T, 3, 1, 4], np.int32)
    explanation = onnxshap.Explainer(model, draw(16)).explain(samples)
    assert explanation.max_relative_residual < 1e-5
    values = explanation.values
    assert isinstance(values, dict) and set(values) == set(floats)
    for name in floats:  # attribution reaches every explained input, the initial states included
        assert np.abs(values[name]).sum() > 1e-3, name


def test_explaining_through_the_weights_is_refused(rng: np.random.Generator) -> None:
    node, feeds, consts, outs = _case("GRU", "", rng, layout=1, batch=1, outputs=("Y_h",))
    feeds["Wb"] = consts.pop(node.input[1])[None]  # W fed per sample: [1, dirs, 3 * hidden, input]
    consts["axes"] = np.array([0], np.int64)
    squeeze = helper.make_node("Squeeze", ["Wb", "axes"], [node.input[1]])
    model = _model([squeeze, node], feeds, consts, outs, 22, batch_axis=True)
    explainer = onnxshap.Explainer(model, np.repeat(feeds["Wb"], 3, 0), inputs=["Wb"])
    with pytest.raises(UnsupportedOpError, match="Input 1"):
        explainer.explain(feeds)


# --- 4. an unrolled LSTM as an independent reference ----------------------------------------------


def _unrolled_lstm(w: np.ndarray, r: np.ndarray, b: np.ndarray, steps: int) -> onnx.ModelProto:
    """LSTM (forward, layout 1, default activations) unrolled over time into primitive ops, the way
    some exporters emit it: per step Gather -> MatMul (+ h MatMul) -> Add bias -> Split -> Sigmoid/Tanh
    -> Mul/Add. Inputs X [N, seq, input], h0 / c0 [N, 1, hidden]; output Y_h [N, 1, hidden]."""
    H = r.shape[-1]
    consts = {
        "Wt": np.ascontiguousarray(w[0].T),
        "Rt": np.ascontiguousarray(r[0].T),
        "bias": b[0, : 4 * H] + b[0, 4 * H :],
        "split": np.full(4, H, np.int64),
        "flat": np.array([-1, H], np.int64),
        "state": np.array([-1, 1, H], np.int64),
    }
    nodes = [helper.make_node("Reshape", ["h0", "flat"], ["h_0"]), helper.make_node("Reshape", ["c0", "flat"], ["c_0"])]
    for t in range(steps):
        consts[f"t{t}"] = np.array(t, np.int64)
        h, c, s = f"h_{t}", f"c_{t}", f"s{t}_"
        nodes += [
            helper.make_node("Gather", ["X", f"t{t}"], [s + "x"], axis=1),
            helper.make_node("MatMul", [s + "x", "Wt"], [s + "xw"]),
            helper.make_node("MatMul", [h, "Rt"], [s + "hr"]),
            helper.make_node("Add", [s + "xw", s + "hr"], [s + "z0"]),
            helper.make_node("Add", [s + "z0", "bias"], [s + "z"]),
            helper.make_node("Split", [s + "z", "split"], [s + "i0", s + "o0", s + "f0", s + "g0"], axis=1),
            helper.make_node("Sigmoid", [s + "i0"], [s + "i"]),
            helper.make_node("Sigmoid", [s + "o0"], [s + "o"]),
            helper.make_node("Sigmoid", [s + "f0"], [s + "f"]),
            helper.make_node("Tanh", [s + "g0"], [s + "g"]),
            helper.make_node("Mul", [s + "f", c], [s + "fc"]),
            helper.make_node("Mul", [s + "i", s + "g"], [s + "ig"]),
            helper.make_node("Add", [s + "fc", s + "ig"], [f"c_{t + 1}"]),
            helper.make_node("Tanh", [f"c_{t + 1}"], [s + "tc"]),
            helper.make_node("Mul", [s + "o", s + "tc"], [f"h_{t + 1}"]),
        ]
    nodes.append(helper.make_node("Reshape", [f"h_{steps}", "state"], ["Y_h"]))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "unrolled",
        [
            helper.make_tensor_value_info("X", f32, ("N", steps, w.shape[-1])),
            helper.make_tensor_value_info("h0", f32, ("N", 1, H)),
            helper.make_tensor_value_info("c0", f32, ("N", 1, H)),
        ],
        [helper.make_tensor_value_info("Y_h", f32, ("N", 1, H))],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_lstm_matches_its_unrolled_primitive_graph(rng: np.random.Generator) -> None:
    steps = 3
    node, feeds, consts, _ = _case("LSTM", "", rng, layout=1, batch=1, steps=steps, init="input", outputs=("Y_h",))
    assert list(node.input) == ["X", "W", "R", "B", "", "h0", "c0"] and list(node.output) == ["", "Y_h"]
    op_model = _model([node], feeds, consts, ["Y_h"], 17, batch_axis=True)
    unrolled = _unrolled_lstm(consts["W"], consts["R"], consts["B"], steps)

    def draw(n: int) -> dict[str, np.ndarray]:
        return {k: rng.standard_normal((n, *v.shape[1:])).astype(np.float32) for k, v in feeds.items()}

    samples, background = draw(4), draw(8)
    np.testing.assert_allclose(
        onnxshap.load(op_model).run(samples)["Y_h"], onnxshap.load(unrolled).run(samples)["Y_h"], rtol=1e-5, atol=1e-6
    )
    ours = onnxshap.Explainer(op_model, background).explain(samples)
    reference = onnxshap.Explainer(unrolled, background).explain(samples)
    assert isinstance(ours.values, dict) and isinstance(reference.values, dict)
    for name in feeds:
        scale = np.abs(reference.values[name]).max()
        np.testing.assert_allclose(
            ours.values[name], reference.values[name], rtol=1e-5, atol=1e-5 * scale, err_msg=name
        )
    assert ours.max_relative_residual < 1e-5 and reference.max_relative_residual < 1e-5


# --- 5. committed sequence models ------------------------------------------------------------------

MANIFEST = json.loads((REPO / "models" / "manifest.json").read_text())
# Batch-layout models (explicit state inputs, time-major outputs): tests/test_layouts.py.
RECURRENT_MODELS = sorted(
    n for n, e in MANIFEST.items() if {"LSTM", "GRU", "RNN"} & set(e.get("ops", [])) and e.get("family") != "layout"
)


@pytest.mark.slow
@pytest.mark.parametrize("name", RECURRENT_MODELS)
def test_committed_sequence_model_is_explained_completely(name: str, rng: np.random.Generator) -> None:
    path = REPO / "models" / MANIFEST[name]["file"]
    shape = MANIFEST[name]["inputs"][0]["shape"][1:]
    samples = rng.standard_normal((16, *shape)).astype(np.float32)
    background = rng.standard_normal((64, *shape)).astype(np.float32)
    model = onnxshap.load(path)
    ours, theirs = model.run({"x": samples}), run_ort(onnx.load(path), {"x": samples})
    for out in model.output_names:
        np.testing.assert_allclose(ours[out], theirs[out], rtol=1e-5, atol=1e-6, err_msg=out)
    explanation = onnxshap.Explainer(model, background).explain(samples)  # every output of the first tensor
    assert explanation.max_relative_residual < 1e-5
