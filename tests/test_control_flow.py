"""Control flow (If, Loop, Scan) lowered at load time, and evaluating only what is asked for.

Every model here is checked three ways: forward parity with onnxruntime, completeness of the
explanation (attributions sum to f(x) - mean f(background)), and local completeness of every node
the pass visits (`AttributionPass.diagnose`, fed examples in float64). Where the DeepSHAP chain is
the exact Shapley value of the whole model, the values are compared with brute-force Shapley.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap import cli
from onnxshap._control import MAX_UNROLLED_NODES
from onnxshap._layout import read_feeds
from onnxshap._registry import registry
from tests.conftest import REPO
from tests.helpers import assert_locally_complete, player_shapley, run_ort

MODELS = REPO / "models"
MANIFEST: dict[str, Any] = json.loads((MODELS / "manifest.json").read_text())
CONTROL = sorted(name for name, entry in MANIFEST.items() if entry.get("family") == "control")
F = TensorProto.FLOAT


def _vi(name: str, shape: Sequence[Any] | None, dtype: int = F) -> onnx.ValueInfoProto:
    if shape is None:
        return helper.make_empty_tensor_value_info(name)
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _init(name: str, value: Any) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: Sequence[onnx.TensorProto] = (),
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _branch(name: str, nodes: list[onnx.NodeProto], outputs: list[onnx.ValueInfoProto]) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], outputs)


def _assert_parity(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rtol: float = 1e-5) -> None:
    ours = onnxshap.load(model).run(feeds)
    theirs = run_ort(model, feeds)
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].shape == theirs[name].shape, name
        np.testing.assert_allclose(ours[name], theirs[name], rtol=rtol, atol=1e-6, err_msg=name)


def _explain(
    model: onnx.ModelProto | onnxshap.Model | Path, x: Any, background: Any, **kwargs: Any
) -> tuple[onnxshap.Explainer, onnxshap.Explanation]:
    """Explain, check completeness and every visited node's local completeness (first sample and
    reference, first and last output slot)."""
    explainer = onnxshap.Explainer(model, background, **kwargs)
    e = explainer.explain(x)
    assert e.max_relative_residual < 1e-5, e.max_relative_residual
    assert not e.gradient_nodes
    assert explainer._pass.nodes, "the pass visits no node: attributions would be zero"
    # diagnose() takes examples (one sample as the graph takes it), read as explain() reads them.
    feeds = x if isinstance(x, dict) else {explainer.inputs[0]: x}
    examples = read_feeds(explainer.model.inputs, feeds).examples
    sample = {k: v[0].astype(np.float64) if v.dtype.kind == "f" else v[0] for k, v in examples.items()}
    reference = {k: v[0].astype(np.float64) for k, v in explainer.background.items()}
    n_total = len(e.all_output_names)
    for slot in sorted({0, n_total - 1}):
        nodes = explainer._pass.diagnose(sample, reference, slot, n_total)
        assert_locally_complete(nodes)
    return explainer, e


# --- If ------------------------------------------------------------------------------------------


def _relu_or_neg(taken: bool) -> onnx.ModelProto:
    """y = If(cond, Relu(x), Neg(x)) with a constant cond: the branches read x from the enclosing graph.
    (The same If on a bool input is the control_if_outer_dynamo fixture.)"""
    then = _branch("then", [helper.make_node("Relu", ["x"], ["t"])], [_vi("t", ["N", 4])])
    other = _branch("else", [helper.make_node("Neg", ["x"], ["e"])], [_vi("e", ["N", 4])])
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=other)
    return _model([node], [_vi("x", ["N", 4])], [_vi("y", ["N", 4])], [_init("cond", np.array(taken))])


@pytest.mark.parametrize("taken", [True, False])
def test_if_with_a_constant_condition_attributes_its_branch(taken: bool, rng: np.random.Generator) -> None:
    # The If reads no float input itself; the pass used to see no node and return zeros.
    model = _relu_or_neg(taken)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    bg = rng.normal(size=(8, 4)).astype(np.float32)
    _assert_parity(model, {"x": x})
    explainer, e = _explain(model, x, bg)
    assert [n.op_type for n in explainer._pass.nodes] == ["Relu" if taken else "Neg", "Identity"]
    f = (lambda v: np.maximum(v, 0)) if taken else np.negative
    expected = np.zeros((2, 4, 4))
    for i in range(4):
        expected[:, i, i] = f(x[:, i]) - f(bg[:, i]).mean()
    np.testing.assert_allclose(e.values, expected, rtol=1e-5, atol=1e-6)


def _gated(cond_nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    """y = If(x0 > 0, 2 * x1, 3 * x2) for x [1, 3]; both branches read x from the enclosing graph."""
    then = _branch(
        "then",
        [
            helper.make_node("Gather", ["x", "i1"], ["x1"], axis=1),
            helper.make_node("Mul", ["x1", "two"], ["t"]),
        ],
        [_vi("t", [1])],
    )
    other = _branch(
        "else",
        [
            helper.make_node("Gather", ["x", "i2"], ["x2"], axis=1),
            helper.make_node("Mul", ["x2", "three"], ["e"]),
        ],
        [_vi("e", [1])],
    )
    nodes = [*cond_nodes, helper.make_node("If", ["cond"], ["y"], name="gate", then_branch=then, else_branch=other)]
    inits = [
        _init("i0", np.array(0, np.int64)),
        _init("i1", np.array(1, np.int64)),
        _init("i2", np.array(2, np.int64)),
        _init("two", np.array(2, np.float32)),
        _init("three", np.array(3, np.float32)),
        _init("zero", np.array(0, np.float32)),
        _init("axes0", np.array([0], np.int64)),
    ]
    return _model(nodes, [_vi("x", [1, 3])], [_vi("y", [1])], inits)


@pytest.mark.parametrize("scalar", [True, False], ids=["scalar-condition", "condition-of-shape-1"])
def test_if_with_a_condition_from_the_data_is_the_exact_shapley_value(scalar: bool, rng: np.random.Generator) -> None:
    gather = helper.make_node("Gather", ["x", "i0"], ["x0"], axis=1)  # [1]
    if scalar:
        cond_nodes = [
            gather,
            helper.make_node("ReduceSum", ["x0", "axes0"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["cond"]),
        ]
    else:
        cond_nodes = [gather, helper.make_node("Greater", ["x0", "zero"], ["cond"])]
    model = _gated(cond_nodes)
    lowered = onnxshap.load(model).graph
    assert [n.op_type for n in lowered.nodes if n.control is not None and n.control.select] == ["Where"]
    x = np.array([[1.5, 2.0, -1.0], [-0.5, 0.7, 1.1]], np.float32)
    bg = np.concatenate([rng.normal(size=(4, 3)), np.abs(rng.normal(size=(4, 3))) * [[-1, 1, 1]]]).astype(np.float32)
    for rows in (x, bg):
        for row in rows:
            _assert_parity(model, {"x": row[None]})
    _, e = _explain(model, x, bg)

    def game(z: np.ndarray) -> float:
        return float(2 * z[1] if z[0] > 0 else 3 * z[2])

    expected = np.stack([np.mean([player_shapley(game, s, r) for r in bg.astype(np.float64)], axis=0) for s in x])
    np.testing.assert_allclose(e.values[..., 0], expected, rtol=1e-5, atol=1e-5)


def test_if_whose_branches_differ_in_shape_is_a_clear_error_and_what_comes_before_it_works(
    rng: np.random.Generator,
) -> None:
    then = _branch("then", [helper.make_node("Relu", ["h"], ["t"])], [_vi("t", [1, 3])])
    other = _branch("else", [helper.make_node("Concat", ["h", "h0"], ["e"], axis=1)], [_vi("e", [1, 4])])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Gather", ["h", "i0"], ["h0"], axis=1),
        helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], name="If_32", then_branch=then, else_branch=other),
    ]
    inits = [
        _init("w", rng.normal(size=(2, 3)).astype(np.float32)),
        _init("i0", np.array([0], np.int64)),
        _init("zero", np.array(0, np.float32)),
    ]
    model = _model(nodes, [_vi("x", [1, 2])], [_vi("y", [1, None])], inits)
    problems = onnxshap.unsupported_ops(model)
    assert (
        len(problems) == 1 and "If node 'If_32'" in problems[0] and "[1, 3]" in problems[0] and "[1, 4]" in problems[0]
    )
    assert onnxshap.unsupported_ops(model, outputs=["h"]) == []
    loaded = onnxshap.load(model)  # loads: only what needs the If fails
    x = rng.normal(size=(1, 2)).astype(np.float32)
    with pytest.raises(onnxshap.GraphError, match="If node 'If_32'.*must be known before the data arrives"):
        loaded.run({"x": x})
    extended = onnx.ModelProto.FromString(model.SerializeToString())
    extended.graph.output.append(_vi("h", [1, 3]))
    np.testing.assert_allclose(loaded.run({"x": x}, outputs=["h"])["h"], run_ort(extended, {"x": x})["h"], rtol=1e-6)
    with pytest.raises(onnxshap.GraphError, match="If node 'If_32'"):
        onnxshap.Explainer(loaded, rng.normal(size=(4, 2)).astype(np.float32))
    _explain(
        loaded, rng.normal(size=(2, 2)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32), outputs="h"
    )


def test_branch_shapes_unknown_when_loading_are_checked_when_compiling(rng: np.random.Generator) -> None:
    then = _branch("then", [helper.make_node("Relu", ["x"], ["t"])], [_vi("t", None)])
    other = _branch("else", [helper.make_node("Concat", ["x", "x"], ["e"], axis=1)], [_vi("e", None)])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], name="uneven", then_branch=then, else_branch=other),
    ]
    # K is symbolic, so the branch shapes [1, K] and [1, 2K] cannot be compared when loading.
    model = _model(nodes, [_vi("x", [1, "K"])], [_vi("y", None)], [_init("zero", np.array(0, np.float32))])
    assert onnxshap.unsupported_ops(model) == []
    with pytest.raises(
        onnxshap.GraphError, match="If node 'uneven': output 0 .* float32\\[1, 2\\] on one side and float32\\[1, 4\\]"
    ):
        onnxshap.load(model).run({"x": rng.normal(size=(1, 2)).astype(np.float32)})


def test_if_on_a_shape_runs_only_the_branch_its_compiled_shape_takes(rng: np.random.Generator) -> None:
    # cond = (batch == 1): unknown when loading (dynamic batch), known when compiling; the branches'
    # shapes differ, which is fine because only one runs.
    then = _branch("then", [helper.make_node("Relu", ["x"], ["t"])], [_vi("t", [1, 3])])
    other = _branch("else", [helper.make_node("ReduceMean", ["x"], ["e"], axes=[0], keepdims=1)], [_vi("e", [1, 3])])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "i0"], ["batch"], axis=0),
        helper.make_node("Equal", ["batch", "one"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], name="by_batch", then_branch=then, else_branch=other),
    ]
    model = _model(
        nodes,
        [_vi("x", ["N", 3])],
        [_vi("y", [1, 3])],
        [_init("i0", np.array(0, np.int64)), _init("one", np.array(1, np.int64))],
        opset=13,
    )
    assert any("known when compiling" in line for line in onnxshap.load(model).graph.lowered)
    for batch in (1, 3):
        _assert_parity(model, {"x": rng.normal(size=(batch, 3)).astype(np.float32)})
    x, bg = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    explainer, e = _explain(model, x, bg)
    # Each example is a batch of one: the then branch (Relu) ran, the else branch was skipped.
    visited = [label for label, _, _ in explainer._pass.diagnose({"x": x[:1]}, {"x": bg[:1]}, 0, 3)]
    assert any("then/" in label for label in visited) and not any("else/" in label for label in visited)
    np.testing.assert_allclose(e.values.sum(axis=1), np.maximum(x, 0) - np.maximum(bg, 0).mean(0), rtol=1e-5, atol=1e-6)


def test_nested_if_with_conditions_from_the_data(rng: np.random.Generator) -> None:
    inner = helper.make_node(
        "If",
        ["c2"],
        ["t"],
        name="inner",
        then_branch=_branch("t2", [helper.make_node("Tanh", ["x"], ["tt"])], [_vi("tt", [1, 3])]),
        else_branch=_branch("e2", [helper.make_node("Mul", ["x", "x"], ["te"])], [_vi("te", [1, 3])]),
    )
    then = _branch(
        "then",
        [
            helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
            helper.make_node("Greater", ["m", "half"], ["c2"]),
            inner,
        ],
        [_vi("t", [1, 3])],
    )
    other = _branch("else", [helper.make_node("Neg", ["x"], ["e"])], [_vi("e", [1, 3])])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], name="outer", then_branch=then, else_branch=other),
    ]
    model = _model(
        nodes,
        [_vi("x", [1, 3])],
        [_vi("y", [1, 3])],
        [_init("zero", np.array(0, np.float32)), _init("half", np.array(0.5, np.float32))],
    )
    x = rng.normal(size=(3, 3)).astype(np.float32) + np.array([[1], [1], [-1]], np.float32)
    for row in x:
        _assert_parity(model, {"x": row[None]})
    _explain(model, x[:2], rng.normal(size=(8, 3)).astype(np.float32))


# --- Loop ----------------------------------------------------------------------------------------


def _loop_model(trips: int, opset: int, *, stop: str = "", scan: bool = True) -> onnx.ModelProto:
    """h_{i+1} = tanh(h_i W + x * i) for `trips` iterations; scan output: h after each iteration.
    The body's condition: `stop="data"`, sum(h) < 1.5 (computed from the data); `stop="iteration"`,
    i < 2 (known at load: three iterations run); else the condition it was given."""
    axes = (
        [helper.make_node("Constant", [], ["axes"], value=_init("axes", np.array([0, 1], np.int64)))]
        if opset >= 13
        else []
    )
    if stop == "data":
        cond_nodes = [
            *axes,
            helper.make_node(
                "ReduceSum",
                ["h_out", "axes"] if opset >= 13 else ["h_out"],
                ["total"],
                keepdims=0,
                **({} if opset >= 13 else {"axes": [0, 1]}),
            ),
            helper.make_node("Less", ["total", "limit"], ["cond_out"]),
        ]
    elif stop == "iteration":
        cond_nodes = [helper.make_node("Less", ["i", "two"], ["cond_out"])]
    else:
        cond_nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"])]
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["fi"], to=F),
            helper.make_node("Mul", ["x", "fi"], ["xi"]),
            helper.make_node("MatMul", ["h_in", "w"], ["hw"]),
            helper.make_node("Add", ["hw", "xi"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["h_out"]),
            *cond_nodes,
            *([helper.make_node("Identity", ["h_out"], ["scan_h"])] if scan else []),
        ],
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("h_in", [1, 4])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("h_out", [1, 4]), *([_vi("scan_h", [1, 4])] if scan else [])],
    )
    loop = helper.make_node("Loop", ["M", "go", "h0"], ["h", *(["hs"] if scan else [])], name="loop", body=body)
    rng = np.random.default_rng(5)
    inits = [
        _init("M", np.array(trips, np.int64)),
        _init("go", np.array(True)),
        _init("w", (rng.normal(size=(4, 4)) * 0.6).astype(np.float32)),
        _init("limit", np.array(1.5, np.float32)),
        _init("two", np.array(2, np.int64)),
    ]
    nodes = [helper.make_node("Mul", ["x", "zero"], ["h0"]), loop]
    inits.append(_init("zero", np.array(0, np.float32)))
    outputs = [
        _vi("h", [1, 4]),
        *([_vi("hs", [min(trips, 3) if stop == "iteration" else trips, 1, 4])] if scan else []),
    ]
    return _model(nodes, [_vi("x", [1, 4])], outputs, inits, opset=opset)


@pytest.mark.parametrize("opset", [11, 17])
def test_loop_with_a_static_trip_count_is_unrolled(opset: int, rng: np.random.Generator) -> None:
    model = _loop_model(3, opset)
    assert onnxshap.load(model).graph.lowered == ["Loop node 'loop': unrolled 3 iteration(s) of a 7-node body"]
    x = rng.normal(size=(2, 4)).astype(np.float32)
    _assert_parity(model, {"x": x[:1]})
    if opset == 17:
        _explain(model, x, rng.normal(size=(8, 4)).astype(np.float32), outputs=["h", "hs"])
    # A condition known at load that stops the loop early: unrolled up to the stop, not to the maximum.
    early = _loop_model(2**62, opset, stop="iteration")
    assert onnxshap.load(early).graph.lowered == ["Loop node 'loop': unrolled 3 iteration(s) of a 7-node body"]
    _assert_parity(early, {"x": x[:1]})


def test_loop_that_stops_on_a_condition_from_the_data_masks_its_carried_value(rng: np.random.Generator) -> None:
    model = _loop_model(5, 17, stop="data", scan=False)
    assert "carried values masked with Where" in onnxshap.load(model).graph.lowered[0]
    x = (rng.normal(size=(6, 4)) * [[0.2], [0.5], [1.0], [1.5], [-1.0], [3.0]]).astype(np.float32)
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
    iterations = set()
    for row in x:
        _assert_parity(model, {"x": row[None]})
        h, done = np.zeros((1, 4), np.float32), 0
        for i in range(5):
            h, done = np.tanh(h @ w + row[None] * i), done + 1
            if not h.sum() < 1.5:
                break
        iterations.add(done)
    assert len(iterations) > 1 and 5 in iterations, iterations
    _explain(model, x[:2], x[2:].repeat(2, axis=0))
    with_scan = _loop_model(5, 17, stop="data")
    problems = onnxshap.unsupported_ops(with_scan)
    assert len(problems) == 1 and "Loop node 'loop'" in problems[0] and "scan outputs" in problems[0]


def test_loop_size_limit_and_trip_counts_computed_from_the_data(rng: np.random.Generator) -> None:
    big = _loop_model(MAX_UNROLLED_NODES, 17, scan=False)
    with pytest.raises(onnxshap.UnsupportedOpError, match=f"Loop node 'loop'.*at most {MAX_UNROLLED_NODES} nodes"):
        onnxshap.load(big).run({"x": rng.normal(size=(1, 4)).astype(np.float32)})
    model = _loop_model(3, 17, scan=False)
    graph = model.graph
    graph.initializer.remove(next(t for t in graph.initializer if t.name == "M"))
    graph.node.insert(0, helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0))
    graph.node.insert(1, helper.make_node("Cast", ["sx"], ["M"], to=TensorProto.INT64))
    problems = onnxshap.unsupported_ops(model)
    assert len(problems) == 1 and "trip count 'M' is computed from the model's inputs" in problems[0]
    with pytest.raises(onnxshap.GraphError, match="before the data arrives"):
        onnxshap.load(model).run({"x": rng.normal(size=(1, 4)).astype(np.float32)})
    # A while loop (no trip count at all).
    model.graph.node[-1].input[0] = ""
    assert "no trip count" in onnxshap.unsupported_ops(model)[0]


# --- Scan ----------------------------------------------------------------------------------------


def _scan_model(opset: int = 17) -> onnx.ModelProto:
    """State s [1, 2]; scans u over axis 1 forwards and v over axis 0 backwards; outputs: the final
    state, the states stacked on axis 1, and tanh(u_t) * v_t stacked backwards on axis 0."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["u_t", "a"], ["ua"]),
            helper.make_node("Add", ["s_in", "ua"], ["sum"]),
            helper.make_node("Mul", ["sum", "v_t"], ["s_out"]),
            helper.make_node("Tanh", ["u_t"], ["tu"]),
            helper.make_node("Identity", ["s_out"], ["states"]),
            helper.make_node("ReduceSum", ["tu"], ["y_t"], keepdims=0),
        ],
        "body",
        [_vi("s_in", [1, 2]), _vi("u_t", [1, 3]), _vi("v_t", [2])],
        [_vi("s_out", [1, 2]), _vi("states", [1, 2]), _vi("y_t", [])],
    )
    scan = helper.make_node(
        "Scan",
        ["s0", "u", "v"],
        ["s", "all_states", "ys"],
        name="scan",
        body=body,
        num_scan_inputs=2,
        scan_input_axes=[1, 0],
        scan_input_directions=[0, 1],
        scan_output_axes=[1, 0],
        scan_output_directions=[0, 1],
    )
    rng = np.random.default_rng(6)
    inits = [_init("a", rng.normal(size=(3, 2)).astype(np.float32))]
    return _model(
        [scan],
        [_vi("s0", [1, 2]), _vi("u", [1, 5, 3]), _vi("v", [5, 2])],
        [_vi("s", [1, 2]), _vi("all_states", [1, 5, 2]), _vi("ys", [5])],
        inits,
        opset=opset,
    )


def test_scan_is_unrolled_over_its_axis(rng: np.random.Generator) -> None:
    model = _scan_model()
    feeds = {
        "s0": rng.normal(size=(1, 2)).astype(np.float32),
        "u": rng.normal(size=(1, 5, 3)).astype(np.float32),
        "v": (0.5 + rng.uniform(size=(5, 2))).astype(np.float32),
    }
    _assert_parity(model, feeds)
    samples = {
        "s0": rng.normal(size=(2, 2)).astype(np.float32),
        "u": rng.normal(size=(2, 5, 3)).astype(np.float32),
        "v": (0.5 + rng.uniform(size=(2, 5, 2))).astype(np.float32),
    }
    background = {
        "s0": rng.normal(size=(8, 2)).astype(np.float32),
        "u": rng.normal(size=(8, 5, 3)).astype(np.float32),
        "v": (0.5 + rng.uniform(size=(8, 5, 2))).astype(np.float32),
    }
    _explain(model, samples, background, outputs=["s", "all_states", "ys"])


def test_scan_8_is_unsupported_with_its_since_versions() -> None:
    model = _scan_model(opset=8)
    problems = onnxshap.unsupported_ops(model)
    assert len(problems) == 1 and "Scan" in problems[0] and "since-versions [9," in problems[0]


# --- evaluate only what is asked for -------------------------------------------------------------


def test_an_unsupported_op_after_the_requested_tensors_is_no_obstacle(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Det", ["h"], ["d"], name="det")]
    model = _model(nodes, [_vi("x", [3, 3])], [_vi("d", [])], [_init("w", rng.normal(size=(3, 3)).astype(np.float32))])
    assert any("Det" in p for p in onnxshap.unsupported_ops(model))
    assert onnxshap.unsupported_ops(model, outputs=["h"]) == []
    with pytest.raises(onnxshap.UnsupportedOpError, match="Det"):
        onnxshap.load(model)
    loaded = onnxshap.load(model, outputs=["h"])
    x = rng.normal(size=(3, 3)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.run({"x": x}, outputs=["h"])["h"], x @ numpy_helper.to_array(model.graph.initializer[0]), rtol=1e-5
    )
    with pytest.raises(onnxshap.UnsupportedOpError, match="Det"):
        loaded.run({"x": x})
    # The explainer asked for the tensor before the unsupported tail loads the model the same way.
    bg = rng.normal(size=(8, 3, 3)).astype(np.float32)
    e = onnxshap.Explainer(model.SerializeToString(), bg, outputs="h").explain(x[None])
    assert e.readings == {"x": "examples"} and e.max_relative_residual <= 1e-5
    with pytest.raises(onnxshap.UnsupportedOpError, match="Det"):
        onnxshap.Explainer(model.SerializeToString(), bg)
    # An op without a row on constants only is not folded when nothing requested needs it.
    model.graph.node[1].input[0] = "w"
    np.testing.assert_array_equal(
        onnxshap.load(model, outputs=["h"]).run({"x": x}, outputs=["h"])["h"], loaded.run({"x": x}, outputs=["h"])["h"]
    )


def test_similar_op_hint_names_only_close_names() -> None:
    reg = registry()
    for op in ("Unique", "Asin", "Cosh"):  # were: Unsqueeze, ArgMin, Cos
        assert "Similar supported ops" not in reg.describe_unsupported(op, "", 17, 1, ["n"])
    assert "Similar supported ops: ['Loop']" not in reg.describe_unsupported("Loop", "", 17, 16, ["n"])


def test_inspect_reports_control_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["inspect", str(MODELS / "control_loop_ts.onnx")])
    out = capsys.readouterr().out
    assert code == 0 and "Loop node '/Loop': unrolled 6 iteration(s)" in out and "all " in out
    loop = _loop_model(3, 17, scan=False)
    loop.graph.node[-1].input[0] = ""
    onnx.save(loop, tmp_path / "while.onnx")
    code = cli.main(["inspect", str(tmp_path / "while.onnx")])
    captured = capsys.readouterr()
    assert code == 1 and "unsupported:" in captured.out and "Loop node 'loop'" in captured.out.split("unsupported:")[1]
    assert "UNSUPPORTED (control flow" in captured.out and "cannot explain" in captured.err


# --- fixtures from real exporters ----------------------------------------------------------------


def _fixture_feeds(name: str, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    if name == "control_cond_dynamo":
        return {"x": rng.normal(size=(n, 8)).astype(np.float32)}
    if name == "control_if_outer_dynamo":
        return {"x": rng.normal(size=(n, 6)).astype(np.float32), "flag": np.arange(n) % 2 == 0}
    return {"x": rng.normal(size=(n, 6, 3)).astype(np.float32)}


@pytest.mark.parametrize("name", CONTROL)
def test_control_fixture_matches_onnxruntime_and_explains_exactly(name: str, rng: np.random.Generator) -> None:
    path = MODELS / MANIFEST[name]["file"]
    proto = onnx.load(path)
    model = onnxshap.load(path)
    assert model.graph.lowered and not model.graph.unsupported()
    assert not any(n.subgraphs for n in model.graph.nodes)
    feeds = _fixture_feeds(name, rng, 6)
    if MANIFEST[name]["inputs"][0]["shape"][0] == 1:  # batch fixed at 1: one row at a time
        runs = [{k: v[i : i + 1] if k == "x" else np.asarray(v[i]) for k, v in feeds.items()} for i in range(6)]
    else:
        runs = [feeds]
    for run in runs:
        ours, theirs = model.run(run), run_ort(proto, run)
        for out in theirs:
            np.testing.assert_allclose(ours[out], theirs[out], rtol=1e-5, atol=1e-6, err_msg=out)
    x = _fixture_feeds(name, rng, 2)
    background = {"x": _fixture_feeds(name, rng, 8)["x"]}
    _explainer, e = _explain(model, x, background)
    assert e.values.shape[0] == 2
    if name == "control_cond_dynamo":  # the branches the samples and references take differ
        taken = {bool(onnxshap.load(path).run({"x": r[None]}, outputs=["gt"])["gt"]) for r in background["x"]}
        assert taken == {True, False}
