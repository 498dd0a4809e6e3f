"""Quantised graphs: QuantizeLinear/DequantizeLinear against onnxruntime, folding, the fused rounding
step (local completeness, brute-force Shapley), the QDQ fixtures end to end, and the clear errors for
dynamic quantisation and QOperator kernels."""

from __future__ import annotations

import json
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T, helper, numpy_helper

import onnxshap
from onnxshap._graph import Node
from onnxshap._multipliers import NodeContext
from onnxshap.ops import quant as Q
from tests.conftest import REPO
from tests.helpers import assert_locally_complete, player_shapley, run_ort

MODELS = REPO / "models"
MANIFEST: dict[str, Any] = json.loads((MODELS / "manifest.json").read_text())
QDQ = sorted(name for name, entry in MANIFEST.items() if entry.get("family") == "qdq")

_RANGES = {
    T.INT8: (-128, 127),
    T.UINT8: (0, 255),
    T.INT16: (-32768, 32767),
    T.UINT16: (0, 65535),
    T.INT4: (-8, 7),
    T.UINT4: (0, 15),
    T.INT2: (-2, 1),
    T.UINT2: (0, 3),
}
#: The opset each target type arrived in.
_SINCE = {
    T.INT8: 10,
    T.UINT8: 10,
    T.FLOAT8E4M3FN: 19,
    T.FLOAT8E4M3FNUZ: 19,
    T.FLOAT8E5M2: 19,
    T.FLOAT8E5M2FNUZ: 19,
    T.INT16: 21,
    T.UINT16: 21,
    T.INT4: 21,
    T.UINT4: 21,
    T.INT2: 25,
    T.UINT2: 25,
}
#: Targets onnxruntime's Python API can return as arrays (the others are compared after a DequantizeLinear).
_RETURNABLE = {T.INT8, T.UINT8, T.INT16, T.UINT16, T.FLOAT8E4M3FN}


def _np(t: int) -> np.dtype[Any]:
    return np.dtype(helper.tensor_dtype_to_np_dtype(t))


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    opset: int,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10 if opset >= 21 else 8)


def _vi(name: str, elem_type: int, shape: list[Any] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _hard_values(rng: np.random.Generator, shape: tuple[int, ...], scale: float, dtype: np.dtype[Any]) -> np.ndarray:
    """Normal values, every 7th an exact tie x / scale = k + 1/2, and NaN, +-Inf and +-1e30 (saturation)."""
    v = rng.standard_normal(int(np.prod(shape))) * 40 * scale
    v[::7] = (np.round(v[::7] / scale) + 0.5) * scale
    v[1:6] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    with np.errstate(over="ignore"):  # 1e30 is +-Inf in float16
        return v.reshape(shape).astype(dtype)


def _cases() -> list[Any]:
    cases = []
    for target, first in _SINCE.items():
        for opset in sorted(o for o in {first, 21, 25} if o >= first):  # where it arrived, 21, and 25
            for mode in ("tensor", "axis", "block"):
                if mode == "block" and opset < 21 or mode == "axis" and opset < 13:
                    continue
                for kind in ("q", "qdq", "dq_const"):
                    if kind == "q" and target not in _RETURNABLE:
                        continue
                    cases.append(
                        pytest.param(
                            target, opset, mode, kind, T.FLOAT, id=f"{T.DataType.Name(target)}-{opset}-{mode}-{kind}"
                        )
                    )
    # Half-precision inputs: the quotient is float32 before opset 23, float16 from 23 on.
    for opset in (19, 21, 23, 25):
        for target in (T.INT8, T.UINT16) if opset >= 21 else (T.INT8,):
            cases.append(
                pytest.param(target, opset, "axis", "q", T.FLOAT16, id=f"{T.DataType.Name(target)}-{opset}-float16")
            )
    return cases


@pytest.mark.parametrize(("target", "opset", "mode", "kind", "x_type"), _cases())
def test_quantize_dequantize_match_onnxruntime(
    target: int, opset: int, mode: str, kind: str, x_type: int, rng: np.random.Generator
) -> None:
    shape = (2, 6, 3)
    scale_shape = {"tensor": (), "axis": (6,), "block": (2, 3, 3)}[mode]
    attrs: dict[str, int] = {} if mode == "tensor" else {"axis": 1}
    if mode == "block":
        attrs["block_size"] = 2
    scale = rng.uniform(0.01, 0.2, scale_shape).astype(_np(x_type))
    if target in _RANGES:
        zero = rng.integers(_RANGES[target][0], _RANGES[target][1] + 1, scale_shape).astype(_np(target))
    else:
        zero = np.zeros(scale_shape, _np(target))
    x = _hard_values(rng, shape, 0.1, _np(x_type))
    inits = [numpy_helper.from_array(np.asarray(scale), "s"), numpy_helper.from_array(np.asarray(zero), "z")]
    x_info = _vi("x", x_type, list(shape))
    quantize = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q" if kind == "qdq" else "y"], **attrs)
    dequantize = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
    feeds = {"x": x}
    if kind == "q":
        model = _model([quantize], [x_info], [_vi("y", target)], inits, opset)
    elif kind == "qdq":
        model = _model([quantize, dequantize], [x_info], [_vi("y", x_type)], inits, opset)
    else:  # DequantizeLinear of a constant: folded at load time
        only_q = _model([quantize], [x_info], [_vi("y", target)], inits, opset)
        codes = onnxshap.load(only_q).run(feeds)["y"]
        inits.append(numpy_helper.from_array(np.asarray(codes), "q"))
        model = _model([dequantize], [], [_vi("y", x_type)], inits, opset)
        feeds = {}
    try:
        want = run_ort(model, feeds)["y"]
    except Exception as exc:  # noqa: BLE001 - whatever onnxruntime raises, the case is not comparable
        pytest.skip(f"onnxruntime cannot run it: {str(exc)[:160]}")
    got = onnxshap.load(model).run(feeds)["y"]
    if want.dtype != got.dtype:  # onnxruntime returns some 8-bit types as their bytes
        want = want.view(got.dtype)
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


@pytest.mark.parametrize(
    ("x_type", "scale_type", "precision"),
    [
        (T.FLOAT, T.FLOAT16, 0),
        (T.FLOAT16, T.FLOAT, 0),
        (T.FLOAT, T.FLOAT, T.FLOAT16),
        (T.FLOAT16, T.FLOAT16, T.FLOAT),
    ],
)
def test_quotient_precision_from_opset_23_matches_onnxruntime(
    x_type: int, scale_type: int, precision: int, rng: np.random.Generator
) -> None:
    # Close ties are frequent in 4000 values: a quotient rounded at the wrong precision shows.
    x = (rng.standard_normal(4000) * 3).astype(_np(x_type))
    inits = [
        numpy_helper.from_array(np.asarray(0.1037, _np(scale_type)), "s"),
        numpy_helper.from_array(np.asarray(np.int8(5)), "z"),
    ]
    attrs = {"precision": precision} if precision else {}
    model = _model(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)],
        [_vi("x", x_type, [4000])],
        [_vi("y", T.INT8)],
        inits,
        23,
    )
    np.testing.assert_array_equal(onnxshap.load(model).run({"x": x})["y"], run_ort(model, {"x": x})["y"])


def test_e8m0_scales_match_the_onnx_reference(rng: np.random.Generator) -> None:
    # onnxruntime 1.32 has no kernel for E8M0 scales (opset 24); onnx's reference evaluator is the oracle.
    from onnx.reference import ReferenceEvaluator

    x = (rng.standard_normal((2, 12)) * 3).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.asarray([0.25, 0.5], ml_dtypes.float8_e8m0fnu), "s"),
        numpy_helper.from_array(np.asarray([1, -2], np.int8), "z"),
    ]
    model = _model(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=0),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0, output_dtype=T.FLOAT),
        ],
        [_vi("x", T.FLOAT, [2, 12])],
        [_vi("q", T.INT8), _vi("y", T.FLOAT)],
        inits,
        24,
    )
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = onnxshap.load(model).run({"x": x})
    np.testing.assert_array_equal(got["q"], want[0])
    np.testing.assert_array_equal(got["y"], want[1])


# --- graph: folding and fusion --------------------------------------------------------------------


def test_dequantized_weights_fold_and_activation_pairs_fuse() -> None:
    model = onnxshap.load(MODELS / "qdq_digits_cnn.onnx")
    proto = onnx.load(MODELS / "qdq_digits_cnn.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    dequantize = [n for n in model.graph.nodes if n.op_type == "DequantizeLinear"]
    fused = [n for n in model.graph.nodes if n.op_type == Q.FUSED_OP]
    quantize = [n for n in model.graph.nodes if n.op_type == "QuantizeLinear"]
    # Weights and biases: DequantizeLinear of initializers, folded at load time into float constants.
    assert len(dequantize) == 6 and all(n.index in model._folded for n in dequantize)
    constants = {**model._embedded, **{k: np.asarray(v) for k, v in model._weights.items()}}
    for n in dequantize:
        value = constants[n.outputs[0]]
        assert value.dtype == np.float32
        codes, scale, zero = (inits[i] for i in n.inputs)
        np.testing.assert_array_equal(
            value, ((codes.astype(np.int32) - zero.astype(np.int32)) * scale).astype(np.float32)
        )
    # Activations: every QuantizeLinear -> DequantizeLinear pair is one float node reading the float tensor;
    # the QuantizeLinear nodes, read by nothing else, are gone.
    assert len(fused) == 8 and not quantize
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) == 8
    for n in fused:
        assert n.spec is not None and n.spec.rule == "composite"
        assert model.graph.value_info[n.inputs[0]].dtype == np.float32
    # No multiplier passes through an integer tensor or a DequantizeLinear.
    explainer = onnxshap.Explainer(model, np.load(MODELS / "data" / "digits_background.npy")[:2])
    visited = [n.op_type for n in explainer._pass.nodes]
    assert "DequantizeLinear" not in visited and "QuantizeLinear" not in visited and visited.count(Q.FUSED_OP) == 8


def test_quantised_float_weights_fold_too() -> None:
    # quantize_static leaves a float weight behind a Transpose, then quantises it with a Q -> DQ pair:
    # the fused node of a constant folds like any other.
    model = onnxshap.load(MODELS / "qdq_transformer_block.onnx")
    fused = [n for n in model.graph.nodes if n.op_type == Q.FUSED_OP]
    folded = [n for n in fused if n.index in model._folded]
    assert len(folded) >= 4 and any("Transpose" in n.name for n in folded)
    constants = model.constant_shapes()
    assert all(constants[n.outputs[0]][1] == np.float32 for n in folded)


def _qdq_chain(opset: int = 17, extra_output: bool = False) -> onnx.ModelProto:
    """x N x 4 -> Q (uint8, per axis) -> DQ -> MatMul w -> y N x 2; optionally the codes q as a second output."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(np.asarray([0.05, 0.1, 0.2, 0.07], np.float32), "s"),
        numpy_helper.from_array(np.asarray([128, 10, 240, 0], np.uint8), "z"),
        numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1, name="quant"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=1, name="dequant"),
        helper.make_node("MatMul", ["d", "w"], ["y"], name="mm"),
    ]
    outputs = [_vi("y", T.FLOAT, ["N", 2])]
    if extra_output:
        outputs.append(_vi("q", T.UINT8, ["N", 4]))
    return _model(nodes, [_vi("x", T.FLOAT, ["N", 4])], outputs, inits, opset)


def test_integer_codes_stay_available_after_fusion(rng: np.random.Generator) -> None:
    proto = _qdq_chain(extra_output=True)
    model = onnxshap.load(proto)
    x = (rng.standard_normal((3, 4)) * 10).astype(np.float32)
    got, want = model.run({"x": x}), run_ort(proto, {"x": x})
    np.testing.assert_array_equal(got["q"], want["q"])
    np.testing.assert_array_equal(got["y"], want["y"])
    e = onnxshap.Explainer(model, (rng.standard_normal((8, 4)) * 10).astype(np.float32), outputs=["y"]).explain(x)
    assert e.max_relative_residual < 1e-5


# --- the rules --------------------------------------------------------------------------------------


def _fused_ctx(x: np.ndarray, r: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int = 1) -> NodeContext:
    quantize = lambda v, s, z: Q.quantize_linear(v, s, z, axis=axis)
    dequantize = lambda v, s, z: Q.dequantize_linear(v, s, z, axis=axis)
    fn = lambda *a: (Q.fake_quantize(*a, quantize=quantize, dequantize=dequantize),)
    node = Node(0, "n", Q.FUSED_OP, Q.FUSED_DOMAIN, 21, ("x", "s", "z", "s", "z"), ("y",), {}, Q._fused_spec(21))
    xin = [jnp.asarray(x), scale, zero, scale, zero]
    rin = [jnp.asarray(r), scale, zero, scale, zero]
    return NodeContext(node, fn, xin, rin, fn(*xin), fn(*rin), [True, False, False, False, False])


def test_fused_step_is_locally_complete_elementwise(rng: np.random.Generator) -> None:
    scale = np.asarray([0.05, 0.1, 0.3], np.float32)
    zero = np.asarray([0, 100, 250], np.uint8)
    x = (rng.standard_normal((50, 3)) * 20).astype(np.float32)
    r = (rng.standard_normal((50, 3)) * 20).astype(np.float32)
    r[:5] = x[:5]  # players that do not move
    # Pairs a hair apart on either side of a rounding boundary: one code apart, the secant carries the jump.
    boundary = ((np.round(x[5:10] / scale) + 0.5) * scale).astype(np.float32)
    x[5:10], r[5:10] = np.nextafter(boundary, np.inf), np.nextafter(boundary, -np.inf)
    ctx = _fused_ctx(x, r, scale, zero)
    m_out = jnp.asarray(rng.standard_normal((50, 3)).astype(np.float32))
    m_in = Q.fake_quantize_rule(ctx, [m_out])
    assert m_in[1:] == [None] * 4
    dy = np.asarray(ctx.xout[0], np.float64) - np.asarray(ctx.rout[0], np.float64)
    assert np.any(dy[5:10] != 0)
    inflow = np.asarray(m_in[0] * (x - r), np.float64)
    np.testing.assert_allclose(inflow, np.asarray(m_out, np.float64) * dy, rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(m_in[0])[:5], 0)


def test_quantize_rule_reads_codes_as_numbers(rng: np.random.Generator) -> None:
    # uint8 codes with q(x) < q(r): subtracting them as uint8 would wrap around 256.
    x = np.asarray([[0.1, 3.0, -1.0, 10.0]], np.float32)
    r = np.asarray([[5.0, 0.2, 2.0, 10.0]], np.float32)
    scale, zero = np.asarray(0.02, np.float32), np.asarray(10, np.uint8)
    fn = lambda *a: (Q.quantize_linear(*a),)
    node = Node(0, "q", "QuantizeLinear", "", 13, ("x", "s", "z"), ("q",), {}, None)
    ctx = NodeContext(
        node,
        fn,
        [jnp.asarray(x), scale, zero],
        [jnp.asarray(r), scale, zero],
        fn(jnp.asarray(x), scale, zero),
        fn(jnp.asarray(r), scale, zero),
        [True, False, False],
    )
    m = Q.quantize_linear_rule(ctx, [jnp.ones((1, 4), jnp.float32)])[0]
    codes = np.asarray(ctx.xout[0], np.float64) - np.asarray(ctx.rout[0], np.float64)
    assert codes.min() < 0
    np.testing.assert_allclose(np.asarray(m) * (x - r), codes, rtol=1e-6)


def _pairwise_product_model() -> onnx.ModelProto:
    """x N x 8 -> QuantizeLinear/DequantizeLinear per axis (uint8) -> y = sum_i d_i * d_(i+4), N x 1."""
    inits = [
        numpy_helper.from_array(np.linspace(0.05, 0.4, 8).astype(np.float32), "s"),
        numpy_helper.from_array(np.asarray([0, 128, 20, 200, 128, 5, 255, 60], np.uint8), "z"),
        *(numpy_helper.from_array(np.asarray([v], np.int64), f"i{v}") for v in (0, 1, 4, 8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=1),
        helper.make_node("Slice", ["d", "i0", "i4", "i1"], ["a"]),
        helper.make_node("Slice", ["d", "i4", "i8", "i1"], ["b"]),
        helper.make_node("Mul", ["a", "b"], ["p"]),
        helper.make_node("ReduceSum", ["p", "i1"], ["y"], keepdims=1),
    ]
    return _model(nodes, [_vi("x", T.FLOAT, ["N", 8])], [_vi("y", T.FLOAT, ["N", 1])], inits, 17)


def test_qdq_attributions_equal_brute_force_shapley(rng: np.random.Generator) -> None:
    # y = sum_i fq(x_i) * fq(x_{i+4}): each product is a two-player game over two rounding steps, which the
    # fused step rules and the Mul rule attribute exactly; the sum is linear. So DeepSHAP is the Shapley value.
    proto = _pairwise_product_model()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = (rng.standard_normal((2, 8)) * 15).astype(np.float32)
    bg = (rng.standard_normal((3, 8)) * 15).astype(np.float32)
    bg[0, :2] = x[0, :2]  # players that do not move
    # A player one float apart on either side of a rounding boundary (scale 0.05, zero point 0): one code.
    near = np.float32(0.125) + np.arange(-64, 64, dtype=np.float32) * np.spacing(np.float32(0.125))
    codes = np.rint(near / np.float32(0.05))
    step = int(np.flatnonzero(np.diff(codes))[0])
    x[1, 0], bg[1, 0] = near[step + 1], near[step]
    e = onnxshap.Explainer(proto, bg).explain(x)

    def game(z: np.ndarray) -> float:
        return float(session.run(None, {"x": z[None].astype(np.float32)})[0][0, 0])

    for i in range(2):
        want = np.mean([player_shapley(game, x[i].astype(np.float64), r.astype(np.float64)) for r in bg], axis=0)
        assert np.count_nonzero(want) >= 6
        np.testing.assert_allclose(e.values[i, :, 0], want, rtol=1e-5, atol=1e-5)
    assert e.max_relative_residual < 1e-5


def test_integer_tensor_reaching_dequantize_otherwise_is_refused(rng: np.random.Generator) -> None:
    proto = _qdq_chain()
    shape = numpy_helper.from_array(np.asarray([-1, 4], np.int64), "shape")
    proto.graph.initializer.append(shape)
    nodes = list(proto.graph.node)
    nodes.insert(1, helper.make_node("Reshape", ["q", "shape"], ["q2"], name="reshape"))
    nodes[2].input[0] = "q2"
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    model = onnxshap.load(proto)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.run({"x": x})["y"], run_ort(proto, {"x": x})["y"])
    with pytest.raises(onnxshap.UnsupportedOpError, match="DequantizeLinear node 'dequant'"):
        onnxshap.Explainer(model, rng.standard_normal((4, 4)).astype(np.float32)).explain(x)


def test_scale_computed_from_the_data_is_refused(rng: np.random.Generator) -> None:
    # The expansion of DynamicQuantizeLinear: the scale moves with the input, so no one-input rule applies.
    inits = [numpy_helper.from_array(np.asarray(127.0, np.float32), "c")]
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Div", ["m", "c"], ["s"]),
        helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq"),
    ]
    proto = _model(nodes, [_vi("x", T.FLOAT, ["N", 4])], [_vi("y", T.FLOAT)], inits, 17)
    x = rng.uniform(0.5, 2, (2, 4)).astype(np.float32)
    np.testing.assert_array_equal(onnxshap.load(proto).run({"x": x})["y"], run_ort(proto, {"x": x})["y"])
    with pytest.raises(onnxshap.UnsupportedOpError, match="QuantizeLinear\\+DequantizeLinear node 'dq'"):
        onnxshap.Explainer(proto, rng.uniform(0.5, 2, (4, 4)).astype(np.float32)).explain(x)


# --- the fixtures -------------------------------------------------------------------------------------


def _fixture_rows(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    shape = tuple(MANIFEST[name]["inputs"][0]["shape"][1:])
    if MANIFEST[name]["input_range"] == [0, 1]:
        return rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    return rng.standard_normal((n, *shape)).astype(np.float32)


def _ort_optimized(path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_fixtures_are_there() -> None:
    assert QDQ == ["qdq_digits_cnn", "qdq_digits_cnn_pc", "qdq_transformer_block", "qdq_transformer_block_pc"]


@pytest.mark.parametrize("name", QDQ)
def test_qdq_fixture_matches_onnxruntime_exactly(name: str, rng: np.random.Generator) -> None:
    path = str(MODELS / MANIFEST[name]["file"])
    model = onnxshap.load(path)
    x = {"x": np.concatenate([_fixture_rows(name, rng, 4), 3 * _fixture_rows(name, rng, 2)])}
    if name.startswith("qdq_digits"):
        x["x"] = np.concatenate([x["x"], np.load(MODELS / "data" / "digits_samples.npy")])
    ours = model.run(x)
    theirs = run_ort(onnx.load(path), x)
    for out in model.output_names:
        np.testing.assert_array_equal(ours[out], theirs[out])
    # With graph optimisations onnxruntime runs fused integer kernels (QLinearConv, ...), which round
    # differently: a few quantisation steps of the output apart (recorded in the manifest).
    fused = _ort_optimized(path, x)
    gap = max(float(np.max(np.abs(np.asarray(a, np.float64) - ours[o]))) for a, o in zip(fused, model.output_names))
    assert gap < 0.05, gap


# Every QDQ fixture's contract is checked here (tests/test_explainer.py leaves the family to this file):
# complete, no gradient, and every node locally complete. About 10 s for each transformer block.
@pytest.mark.parametrize("name", QDQ)
def test_qdq_fixture_is_explained_exactly_by_default(name: str, rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / MANIFEST[name]["file"])
    x, background = _fixture_rows(name, rng, 2), _fixture_rows(name, rng, 8)
    explainer = onnxshap.Explainer(model, background)
    e = explainer.explain(x)
    assert e.max_relative_residual <= 1e-5, e.max_relative_residual
    assert not e.gradient_nodes and np.abs(e.values).sum() > 0
    # Per node, in float64, for the first sample and reference and the output that changes most
    # between them (a quantised output often does not change at all).
    change = (e.prediction[0] - model.run({"x": background[:1]})[model.output_names[0]].reshape(-1)).astype(np.float64)
    slot = int(np.argmax(np.abs(change)))
    assert change[slot] != 0
    nodes = explainer._pass.diagnose(
        {"x": x[:1].astype(np.float64)}, {"x": background[:1].astype(np.float64)}, slot, change.size
    )
    fused = [(inflow, outflow) for label, inflow, outflow in nodes if Q.FUSED_OP in label]
    assert len(fused) >= 5 and sum(abs(b) > 1e-6 for _, b in fused) >= 3
    assert_locally_complete(nodes)


# --- refused ops ------------------------------------------------------------------------------------


def test_dynamically_quantised_model_is_a_clear_error() -> None:
    path = MODELS / "qdq_dynamic_digits.onnx"
    problems = onnxshap.unsupported_ops(path)
    assert sorted(p.split(" ")[0] for p in problems) == ["ConvInteger", "DynamicQuantizeLinear", "MatMulInteger"]
    with pytest.raises(onnxshap.UnsupportedOpError) as info:
        onnxshap.load(path)
    message = str(info.value)
    for op in ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"):
        assert op in message
    assert "dynamic quantisation" in message and "Explain the float model" in message


def _single_node(op: str, domain: str, n_inputs: int, opsets: dict[str, int]) -> onnx.ModelProto:
    names = [f"i{k}" for k in range(n_inputs)]
    node = helper.make_node(op, names, ["y"], domain=domain, name="n")
    graph = helper.make_graph([node], "g", [_vi(n, T.FLOAT) for n in names], [_vi("y", T.FLOAT)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()], ir_version=8)


@pytest.mark.parametrize(
    ("op", "domain", "words"),
    [
        ("DynamicQuantizeLSTM", "com.microsoft", "dynamic quantisation"),
        ("MatMulInteger", "", "dynamic quantisation"),
        ("QLinearConv", "", "QOperator"),
        ("QLinearMatMul", "", "QOperator"),
        ("QLinearAdd", "com.microsoft", "QOperator"),
        ("QuantizeLinear", "com.microsoft", "opset 21"),
    ],
)
def test_other_quantised_ops_name_themselves_and_the_way_out(op: str, domain: str, words: str) -> None:
    proto = _single_node(op, domain, 2, {"": 17, **({domain: 1} if domain else {})})
    with pytest.raises(onnxshap.UnsupportedOpError) as info:
        onnxshap.load(proto)
    message = str(info.value)
    assert message.startswith(f"{op} (domain {domain or 'ai.onnx'!r}") and "node(s) 'n'" in message
    assert words in message and "Explain the float model" in message
