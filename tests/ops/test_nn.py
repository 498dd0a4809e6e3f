"""Focused forward tests for the nn family where the onnx backend cases are thin.

Each case is a single-node model compared with onnxruntime: pooling windows (ceil mode, pads,
strides, dilations, negative SAME splits, Indices), grouped/dilated convolutions in 1-D and 3-D,
ConvTranspose output_padding/output_shape, old BatchNormalization versions, and Softmax before and
after version 13.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

import onnxshap
from onnxshap._errors import UnsupportedOpError
from tests.helpers import assert_outputs_close, run_ort


def _model(
    op: str,
    feeds: dict[str, np.ndarray],
    attrs: dict[str, Any],
    opset: int,
    outputs: tuple[str, ...] = ("y",),
    initializers: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    initializers = initializers or {}
    node = helper.make_node(op, [*feeds, *initializers], list(outputs), **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [onnx.numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def check_against_onnxruntime(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, rtol: float = 1e-5, atol: float = 1e-6
) -> dict[str, np.ndarray]:
    got = onnxshap.load(model).run(feeds)
    assert_outputs_close(got, run_ort(model, feeds), rtol=rtol, atol=atol)
    return got


def _x(shape: tuple[int, ...], seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- pooling -------------------------------------------------------------------------------------

POOLS = [
    # (op, opset, input shape, attributes, outputs)
    (
        "MaxPool",
        12,
        (2, 3, 9),
        dict(kernel_shape=[3], strides=[2], pads=[1, 2], dilations=[2], ceil_mode=1),
        ("y", "i"),
    ),
    (
        "MaxPool",
        12,
        (1, 2, 7, 8),
        dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], dilations=[1, 2], ceil_mode=1),
        ("y", "i"),
    ),
    (
        "MaxPool",
        12,
        (1, 2, 7, 8),
        dict(kernel_shape=[2, 3], strides=[3, 2], pads=[1, 1, 1, 0], ceil_mode=1, storage_order=1),
        ("y", "i"),
    ),
    (
        "MaxPool",
        22,
        (1, 2, 5, 6, 7),
        dict(kernel_shape=[2, 3, 2], strides=[2, 2, 3], pads=[1, 0, 1, 0, 2, 1], dilations=[2, 1, 2], ceil_mode=1),
        ("y", "i"),
    ),
    (
        "MaxPool",
        8,
        (1, 2, 6, 7),
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], storage_order=1),
        ("y", "i"),
    ),
    ("MaxPool", 10, (1, 1, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2], ceil_mode=1), ("y",)),
    ("MaxPool", 12, (2, 2, 7, 6), dict(kernel_shape=[1, 2], strides=[3, 3], auto_pad="SAME_LOWER"), ("y", "i")),
    (
        "AveragePool",
        19,
        (2, 3, 9),
        dict(kernel_shape=[3], strides=[2], pads=[1, 2], dilations=[2], ceil_mode=1, count_include_pad=1),
    ),
    (
        "AveragePool",
        19,
        (2, 3, 9),
        dict(kernel_shape=[3], strides=[2], pads=[1, 2], dilations=[2], ceil_mode=1, count_include_pad=0),
    ),
    (
        "AveragePool",
        19,
        (1, 2, 7, 8),
        dict(
            kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], dilations=[1, 2], ceil_mode=1, count_include_pad=1
        ),
    ),
    (
        "AveragePool",
        22,
        (1, 2, 5, 6, 7),
        dict(
            kernel_shape=[2, 3, 2],
            strides=[2, 2, 3],
            pads=[1, 0, 1, 0, 2, 1],
            dilations=[2, 1, 2],
            ceil_mode=1,
            count_include_pad=0,
        ),
    ),
    (
        "AveragePool",
        10,
        (1, 2, 6, 7),
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    ),
    ("AveragePool", 7, (1, 2, 6, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1], count_include_pad=1)),
    (
        "AveragePool",
        19,
        (2, 2, 6, 7),
        dict(kernel_shape=[2, 1], strides=[3, 3], auto_pad="SAME_UPPER", count_include_pad=1),
    ),
    (
        "LpPool",
        18,
        (1, 2, 7, 8),
        dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], dilations=[1, 2], ceil_mode=1, p=3),
    ),
    ("LpPool", 11, (1, 2, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1], p=1)),
]


@pytest.mark.parametrize(
    ("op", "opset", "shape", "attrs", "outputs"),
    [pytest.param(*(c if len(c) == 5 else (*c, ("y",))), id=f"{c[0]}{c[1]}-{i}") for i, c in enumerate(POOLS)],
)
def test_pool_windows_match_onnxruntime(
    op: str, opset: int, shape: tuple[int, ...], attrs: dict[str, Any], outputs: tuple[str, ...]
) -> None:
    feeds = {"x": _x(shape)}
    check_against_onnxruntime(_model(op, feeds, attrs, opset, outputs), feeds)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_same_padding_with_dilations_follows_the_spec(op: str) -> None:
    # onnxruntime pads SAME for the undilated window; the spec pads for the dilated one, so compare
    # with the explicit pads the spec's formula gives. Axis 0: out ceil(6 / 2) = 3, total 2*2 + 5 - 6 = 3,
    # the odd one first (SAME_LOWER); axis 1: out 6, total 5 + 5 - 6 = 4.
    x = _x((1, 2, 6, 6))
    same = dict(kernel_shape=[3, 3], strides=[2, 1], dilations=[2, 2], auto_pad="SAME_LOWER")
    explicit = dict(kernel_shape=[3, 3], strides=[2, 1], dilations=[2, 2], pads=[2, 2, 1, 2])
    if op == "AveragePool":
        same["count_include_pad"] = explicit["count_include_pad"] = 1
    got = onnxshap.load(_model(op, {"x": x}, same, 19)).run({"x": x})
    assert_outputs_close(got, run_ort(_model(op, {"x": x}, explicit, 19), {"x": x}), rtol=1e-5, atol=1e-6)


def test_max_pool_indices_break_ties_like_onnxruntime() -> None:
    # Few distinct values make many ties; storage_order=1 must keep the row-major tie-break.
    x = np.random.default_rng(1).integers(0, 3, (2, 2, 6, 7)).astype(np.float32)
    for storage_order in (0, 1):
        attrs = dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 0], storage_order=storage_order, ceil_mode=1)
        check_against_onnxruntime(_model("MaxPool", {"x": x}, attrs, 12, ("y", "i")), {"x": x})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float16, np.float64])
def test_max_pool_padding_never_wins(dtype: Any) -> None:
    x = np.random.default_rng(2).integers(-100 if dtype == np.int8 else 0, 100, (1, 2, 5, 5)).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        x = -np.abs(x) - 1  # all negative: a zero-padded window would be wrong
    check_against_onnxruntime(
        _model("MaxPool", {"x": x}, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], ceil_mode=1), 12),
        {"x": x},
    )


def test_global_pools_match_onnxruntime() -> None:
    x = _x((2, 3, 4, 5))
    for op, opset, attrs in [
        ("GlobalLpPool", 2, dict(p=3)),
        ("GlobalLpPool", 2, {}),
        ("GlobalMaxPool", 1, {}),
        ("GlobalAveragePool", 1, {}),
    ]:
        check_against_onnxruntime(_model(op, {"x": x}, attrs, opset), {"x": x})


# --- convolution ---------------------------------------------------------------------------------

CONVS = [
    # (opset, x shape, w shape, bias, attributes)
    (22, (2, 6, 11), (4, 3, 3), True, dict(group=2, dilations=[2], strides=[2], pads=[2, 1])),
    (11, (2, 6, 11), (6, 1, 2), False, dict(group=6, strides=[3], auto_pad="SAME_UPPER")),
    (1, (2, 6, 10), (3, 2, 3), True, dict(group=3, strides=[2], auto_pad="SAME_LOWER", kernel_shape=[3])),
    (
        22,
        (1, 4, 6, 7, 5),
        (4, 2, 2, 3, 2),
        True,
        dict(group=2, dilations=[2, 1, 2], strides=[1, 2, 1], pads=[1, 0, 1, 0, 2, 1]),
    ),
    (11, (1, 4, 6, 7, 5), (6, 2, 3, 2, 2), False, dict(group=2, strides=[2, 2, 3], auto_pad="SAME_LOWER")),
    (22, (1, 3, 6, 7, 5), (3, 1, 2, 2, 2), True, dict(group=3, dilations=[2, 2, 1], auto_pad="VALID")),
]


@pytest.mark.parametrize(
    ("opset", "xs", "ws", "bias", "attrs"), CONVS, ids=[f"conv{c[0]}-{len(c[1]) - 2}d-{i}" for i, c in enumerate(CONVS)]
)
def test_conv_matches_onnxruntime(
    opset: int, xs: tuple[int, ...], ws: tuple[int, ...], bias: bool, attrs: dict[str, Any]
) -> None:
    feeds = {"x": _x(xs), "w": _x(ws, 1)}
    if bias:
        feeds["b"] = _x((ws[0],), 2)
    check_against_onnxruntime(_model("Conv", feeds, attrs, opset), feeds, rtol=1e-5, atol=1e-5)


CONV_TRANSPOSES = [
    # (opset, x shape, w shape, bias, attributes)
    (22, (2, 4, 5), (4, 3, 3), True, dict(group=2, strides=[3], dilations=[2], output_padding=[2], pads=[1, 2])),
    (11, (2, 4, 5), (4, 1, 3), False, dict(group=4, strides=[2], output_shape=[12])),  # negative total: zeros appended
    (1, (2, 2, 5), (2, 2, 2), True, dict(strides=[2], output_shape=[9], output_padding=[1])),
    (22, (1, 2, 4, 5), (2, 2, 3, 3), True, dict(strides=[2, 3], auto_pad="SAME_UPPER", output_padding=[1, 0])),
    (11, (1, 2, 4, 5), (2, 2, 3, 2), False, dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    (22, (1, 2, 4, 5), (2, 1, 1, 2), False, dict(strides=[3, 3], auto_pad="SAME_UPPER")),  # SAME cannot pad below zero
    (
        22,
        (1, 4, 3, 4, 3),
        (4, 1, 2, 3, 2),
        True,
        dict(group=2, strides=[2, 1, 2], dilations=[1, 2, 2], pads=[0, 3, 1, 1, 0, 1], output_padding=[1, 0, 1]),
    ),
    (11, (1, 2, 3, 4, 3), (2, 2, 2, 2, 2), False, dict(strides=[2, 2, 2], output_shape=[7, 8, 6])),
]


@pytest.mark.parametrize(
    ("opset", "xs", "ws", "bias", "attrs"),
    CONV_TRANSPOSES,
    ids=[f"convT{c[0]}-{len(c[1]) - 2}d-{i}" for i, c in enumerate(CONV_TRANSPOSES)],
)
def test_conv_transpose_matches_onnxruntime(
    opset: int, xs: tuple[int, ...], ws: tuple[int, ...], bias: bool, attrs: dict[str, Any]
) -> None:
    feeds = {"x": _x(xs), "w": _x(ws, 1)}
    if bias:
        feeds["b"] = _x((ws[1] * attrs.get("group", 1),), 2)
    check_against_onnxruntime(_model("ConvTranspose", feeds, attrs, opset), feeds, rtol=1e-5, atol=1e-5)


# --- matrix products -----------------------------------------------------------------------------


def test_gemm_attributes_and_bias_broadcasts() -> None:
    a, b = _x((4, 3)), _x((5, 4), 1)
    for opset, c, attrs in [
        (13, _x((1, 5), 2), dict(transA=1, transB=1, alpha=0.5, beta=2.0)),
        (11, _x((3, 1), 2), dict(transA=1, transB=1, beta=-1.0)),
        (9, _x((5,), 2), dict(transA=1, transB=1, alpha=3.0)),
        (11, None, dict(transA=1, transB=1, alpha=2.0)),
    ]:
        feeds = {"a": a, "b": b} | ({"c": c} if c is not None else {})
        check_against_onnxruntime(_model("Gemm", feeds, attrs, opset), feeds)


def test_gemm_of_one_sample_does_not_copy_a_transposed_weight() -> None:
    # A torch Linear layer: B is an [out, in] weight read with transB = 1. For one sample, XLA:CPU copied
    # the transposed weight into a temporary buffer on every call before the transposes became the dot's
    # contracting dimensions.
    # (It did so from a 32 MB weight on; smaller ones it read in place.)
    for attrs in (dict(transB=1), dict(transA=1, transB=1)):
        x = _x((1, 4096)) if "transA" not in attrs else _x((4096, 1))
        w = _x((2048, 4096), 1)
        proto = _model("Gemm", {"x": x}, attrs, 13, initializers={"w": w})
        model = onnxshap.load(proto)
        compiled = model._jitted.lower(model._weights, {"x": x}, output_names=("y",)).compile()
        assert compiled.memory_analysis().temp_size_in_bytes < w.nbytes // 8, attrs
        assert_outputs_close(model.run({"x": x}), run_ort(proto, {"x": x}), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_matmul_broadcasting(dtype: Any) -> None:
    rng = np.random.default_rng(3)
    shapes = [((4,), (2, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 4), (4,)), ((4,), (4,))]
    for sa, sb in shapes:
        feeds = {"a": rng.integers(-5, 5, sa).astype(dtype), "b": rng.integers(-5, 5, sb).astype(dtype)}
        check_against_onnxruntime(_model("MatMul", feeds, {}, 13), feeds)


def test_einsum_equations() -> None:
    rng = np.random.default_rng(4)
    cases = [
        ("bhqd, bhkd -> bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
        ("...ij,...jk", [(2, 3, 4), (2, 4, 5)]),
        ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ]
    for equation, shapes in cases:
        feeds = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
        check_against_onnxruntime(_model("Einsum", feeds, dict(equation=equation), 12), feeds, atol=1e-5)


# --- normalization -------------------------------------------------------------------------------


def _batch_norm_params(c: int, shape: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    shape = shape or (c,)
    rng = np.random.default_rng(5)
    return {
        "scale": rng.standard_normal(shape).astype(np.float32),
        "bias": rng.standard_normal(shape).astype(np.float32),
        "mean": rng.standard_normal(shape).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, shape).astype(np.float32),
    }


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
def test_batch_norm_versions_match_onnxruntime(opset: int) -> None:
    x = _x((2, 3, 4, 5))
    check_against_onnxruntime(
        _model("BatchNormalization", {"x": x}, dict(epsilon=1e-3), opset, initializers=_batch_norm_params(3)), {"x": x}
    )


def test_batch_norm_per_activation_spatial_0() -> None:
    x = _x((2, 3, 4))
    params = _batch_norm_params(3, (3, 4))
    check_against_onnxruntime(_model("BatchNormalization", {"x": x}, dict(spatial=0), 7, initializers=params), {"x": x})


@pytest.mark.parametrize("opset", [1, 6])
def test_batch_norm_legacy_versions(opset: int) -> None:
    # onnxruntime has no kernels before version 7: check against the formula.
    x = _x((2, 3, 4))
    p = _batch_norm_params(3)
    attrs: dict[str, Any] = dict(epsilon=1e-3, is_test=1) | (
        dict(consumed_inputs=[0, 0, 0, 1, 1]) if opset == 1 else {}
    )
    got = onnxshap.load(_model("BatchNormalization", {"x": x}, attrs, opset, initializers=p)).run({"x": x})["y"]
    r = (slice(None), None)
    want = (x - p["mean"][r]) / np.sqrt(p["var"][r] + 1e-3) * p["scale"][r] + p["bias"][r]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("opset", "attrs", "outputs"), [(15, dict(training_mode=1), ("y", "m", "v")), (9, {}, ("y", "m", "v", "sm", "sv"))]
)
def test_batch_norm_training_is_unsupported(opset: int, attrs: dict[str, Any], outputs: tuple[str, ...]) -> None:
    x = _x((2, 3, 4))
    model = _model("BatchNormalization", {"x": x}, attrs, opset, outputs, initializers=_batch_norm_params(3))
    with pytest.raises(UnsupportedOpError, match="training"):
        onnxshap.load(model).run({"x": x})


def test_layer_norm_statistics_outputs() -> None:
    rng = np.random.default_rng(6)
    for dtype, axis, with_bias in [(np.float32, 1, True), (np.float64, -1, False), (np.float16, -2, True)]:
        x = rng.standard_normal((2, 3, 4)).astype(dtype)
        normalized = x.shape[axis % 3 :]
        inits = {"scale": rng.standard_normal(normalized).astype(dtype)}
        if with_bias:
            inits["bias"] = rng.standard_normal(normalized).astype(dtype)
        model = _model(
            "LayerNormalization", {"x": x}, dict(axis=axis, epsilon=1e-3), 17, ("y", "mean", "inv_std"), inits
        )
        tol = 2e-3 if dtype == np.float16 else 1e-5
        check_against_onnxruntime(model, {"x": x}, rtol=tol, atol=tol)


def test_lrn_and_instance_norm() -> None:
    x = _x((2, 5, 3, 4))
    check_against_onnxruntime(_model("LRN", {"x": x}, dict(size=5, alpha=0.01, beta=0.6, bias=2.0), 13), {"x": x})
    # onnxruntime refuses even sizes; the spec's window is then lopsided: floor((size-1)/2) channels
    # before, ceil((size-1)/2) after.
    got = onnxshap.load(_model("LRN", {"x": x}, dict(size=4, alpha=0.01, beta=0.6, bias=2.0), 13)).run({"x": x})["y"]
    sq = np.pad(x**2, [(0, 0), (1, 2), (0, 0), (0, 0)])
    square_sum = sum(sq[:, i : i + 5] for i in range(4))
    np.testing.assert_allclose(got, x / (2.0 + 0.01 / 4 * square_sum) ** 0.6, rtol=1e-5, atol=1e-6)
    inits = {"scale": _x((5,), 1), "bias": _x((5,), 2)}
    check_against_onnxruntime(
        _model("InstanceNormalization", {"x": x}, dict(epsilon=1e-3), 6, initializers=inits), {"x": x}, atol=1e-5
    )


# --- softmax family ------------------------------------------------------------------------------


def test_softmax_11_coerces_to_2d_while_13_is_per_axis() -> None:
    x = _x((2, 3, 4, 5))
    results = {}
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        for opset in (11, 13):
            results[op, opset] = check_against_onnxruntime(
                _model(op, {"x": x}, dict(axis=1), opset), {"x": x}, atol=1e-5
            )["y"]
        assert not np.allclose(results[op, 11], results[op, 13])
    np.testing.assert_allclose(results["Softmax", 11].reshape(2, -1).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(results["Softmax", 13].sum(axis=1), 1.0, rtol=1e-5)


MAX_WINDOWS = [
    # (op, opset, input shape, attributes)
    ("MaxPool", 12, (1, 2, 5, 6), dict(kernel_shape=[2, 2], strides=[2, 2])),  # tiles; last row unread
    ("MaxPool", 12, (1, 1, 4, 4), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),  # overlapping, padded
    ("MaxPool", 12, (1, 1, 7), dict(kernel_shape=[3], strides=[2], dilations=[2], ceil_mode=1)),
    ("MaxPool", 12, (1, 1, 4, 2, 4), dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2])),  # 3-D tiles
    ("GlobalMaxPool", 1, (1, 2, 3, 3), {}),  # 9 players: the merged-sort path
    ("ReduceMax", 13, (1, 4, 3), dict(axes=[1], keepdims=1)),
]


@pytest.mark.parametrize(
    ("op", "opset", "shape", "attrs"), MAX_WINDOWS, ids=[f"{c[0]}-{i}" for i, c in enumerate(MAX_WINDOWS)]
)
@pytest.mark.parametrize("layout", ["blocks", "gather"])
def test_max_rule_is_the_shapley_value_of_each_window(
    op: str, opset: int, shape: tuple[int, ...], attrs: dict[str, Any], layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxshap import _multipliers
    from tests.test_multipliers import brute_force_max

    if layout == "gather":  # the general path, also where windows tile the input
        monkeypatch.setattr(_multipliers, "_block_windows", lambda *args, **kwargs: None)
    x = np.round(_x(shape, 1, np.float64) * 4) / 4  # ties within windows
    background = np.concatenate([np.round(_x(shape, s, np.float64) * 4) / 4 for s in (2, 3, 4)])
    model = _model(op, {"x": x}, attrs, opset)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    e = onnxshap.Explainer(model, background).explain(x)
    loaded = onnxshap.load(model)
    out_shape = loaded.run({"x": x})["y"].shape
    windows = _multipliers.window_index(loaded.graph.nodes[0], shape, out_shape)
    got = e.values[0].reshape(-1, windows.shape[0])
    for j, window in enumerate(windows):
        players = window[window >= 0]
        want = np.zeros(int(np.prod(shape)))
        for r in background:
            want[players] += brute_force_max(x.reshape(-1)[players], r.reshape(-1)[players]) / len(background)
        np.testing.assert_allclose(got[:, j], want, atol=1e-12, err_msg=f"output element {j}")
