"""Focused forward tests for the tensor family where the onnx backend cases are thin.

Every test compares with onnxruntime. To keep compilation cheap, many nodes share one model: each
node reads the graph input(s) and constant inputs (initializers) and writes its own graph output.
Covered: Resize (every mode x coordinate transform, up and down, scales and sizes, tf_crop_and_resize,
antialias, axes with keep_aspect_ratio_policy), Resize-10 and Upsample, Slice with negative steps and
clamping, Pad modes and versions, the attribute versions of Squeeze/Unsqueeze/Reshape/Slice/Split and
the reductions, If with a static condition, Gather with traced indices under jit, and a
Shape -> Gather -> Unsqueeze -> Concat -> Reshape chain over a symbolic batch dimension.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from tests.helpers import assert_outputs_close, run_ort

#: (op_type, inputs, attributes): an input is a graph-input name (str), None (omitted) or a constant array.
NodeSpec = tuple[str, Sequence[Any], dict[str, Any]]


def _model(specs: Sequence[NodeSpec], feeds: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    """One node per spec, each with its own graph output y<i>; constant inputs become initializers."""
    nodes, outputs, inits = [], [], []
    for i, (op, inputs, attrs) in enumerate(specs):
        names = []
        for j, value in enumerate(inputs):
            if value is None:
                names.append("")
            elif isinstance(value, str):
                names.append(value)
            else:
                names.append(f"c{i}_{j}")
                inits.append(numpy_helper.from_array(np.asarray(value), f"c{i}_{j}"))
        while names and names[-1] == "":
            names.pop()
        nodes.append(helper.make_node(op, names, [f"y{i}"], **attrs))
        outputs.append(helper.make_empty_tensor_value_info(f"y{i}"))
    graph_inputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()
    ]
    graph = helper.make_graph(nodes, "g", graph_inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _assert_matches_onnxruntime(
    specs: Sequence[NodeSpec], feeds: dict[str, np.ndarray], opset: int, *, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    model = _model(specs, feeds, opset)
    assert_outputs_close(onnxshap.load(model).run(feeds), run_ort(model, feeds), rtol=rtol, atol=atol)


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _f(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _i(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


# --- Resize ------------------------------------------------------------------------------------------

X_SHAPE = (1, 2, 5, 7)
# Up and down, by scales and by sizes. Fractional output widths (5 * 1.7, 7 * 2.3) exercise truncation;
# sizes avoid exact .5 ties in asymmetric coordinates, where onnxruntime's float rounding is not
# reproducible (it computes 2 / (4/7) as 3.5, IEEE division gives 3.4999998).
VARIANTS = [
    ("up_scales", _f([1, 1, 1.7, 2.3]), None),
    ("down_scales", _f([1, 1, 0.6, 0.45]), None),
    ("up_sizes", None, _i([1, 2, 9, 12])),
    ("down_sizes", None, _i([1, 2, 3, 5])),
]
COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
ROI = _f([0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2])


def _resize(
    attrs: dict[str, Any],
    scales: np.ndarray | None,
    sizes: np.ndarray | None,
    opset: int,
    roi: np.ndarray | None = None,
) -> NodeSpec:
    if opset < 13:
        # Resize-11 requires roi and scales; empty tensors mean "not given".
        roi = _f([]) if roi is None else roi
        scales = _f([]) if scales is None else scales
    return ("Resize", ["x", roi, scales, sizes], attrs)


def _resize_specs(opset: int, exhaustive: bool) -> list[NodeSpec]:
    coords = COORDINATES + (["half_pixel_symmetric"] if opset >= 19 else [])
    coords += ["tf_half_pixel_for_nn"] if opset == 11 else []
    specs: list[NodeSpec] = []
    for k, (ct, nm) in enumerate(itertools.product(coords, NEAREST_MODES)):
        # Cycle through the variants so every mode meets each of them without the full product.
        chosen = VARIANTS if exhaustive else [VARIANTS[k % 4]]
        for _, sc, sz in chosen:
            nearest = dict(mode="nearest", coordinate_transformation_mode=ct, nearest_mode=nm)
            specs.append(_resize(nearest, sc, sz, opset))
    for k, ct in enumerate(c for c in coords if c != "tf_half_pixel_for_nn"):
        chosen = VARIANTS if exhaustive else [VARIANTS[k % 4], VARIANTS[(k + 1) % 4]]
        for _, sc, sz in chosen:
            specs.append(_resize(dict(mode="linear", coordinate_transformation_mode=ct), sc, sz, opset))
        for j, (_, sc, sz) in enumerate(VARIANTS if exhaustive else [VARIANTS[(k + 2) % 4], VARIANTS[(k + 3) % 4]]):
            a = [-0.75, -0.5][j % 2]
            cubic = dict(mode="cubic", coordinate_transformation_mode=ct, exclude_outside=j % 2, cubic_coeff_a=a)
            specs.append(_resize(cubic, sc, sz, opset))
    for k, mode in enumerate(["nearest", "linear", "cubic"]):
        for _, sc, sz in VARIANTS if exhaustive else [VARIANTS[k % 4], VARIANTS[(k + 2) % 4]]:
            crop = dict(mode=mode, coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-3.0)
            specs.append(_resize(crop, sc, sz, opset, ROI))
    if opset >= 18:
        for mode in ["linear", "cubic"]:
            for _, sc, sz in [VARIANTS[1], VARIANTS[3]]:
                specs.append(_resize(dict(mode=mode, antialias=1), sc, sz, opset))
        # Negative axes are left out: onnxruntime 1.31 ignores keep_aspect_ratio_policy for them.
        policies = [("stretch", [9, 12]), ("not_larger", [9, 12]), ("not_smaller", [3, 4]), ("not_larger", [4, 14])]
        for policy, size in policies:
            attrs = dict(mode="linear", axes=[2, 3], keep_aspect_ratio_policy=policy)
            specs.append(("Resize", ["x", None, None, _i(size)], attrs))
        specs.append(("Resize", ["x", None, _f([0.6]), None], dict(mode="nearest", axes=[3])))
    return specs


def test_resize_matches_onnxruntime() -> None:
    _assert_matches_onnxruntime(_resize_specs(19, exhaustive=False), {"x": _x(X_SHAPE)}, 19, atol=1e-5)


def test_resize_11_matches_onnxruntime() -> None:
    """Resize-11: roi and scales are required inputs (empty when unused); tf_half_pixel_for_nn exists."""
    specs = [
        _resize(dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode=m), sc, sz, 11)
        for m, (_, sc, sz) in zip(NEAREST_MODES, VARIANTS, strict=True)
    ]
    up_sizes, down_scales = VARIANTS[2][2], VARIANTS[1][1]
    for mode in ("linear", "cubic"):
        specs.append(_resize(dict(mode=mode, coordinate_transformation_mode="align_corners"), None, up_sizes, 11))
    crop = dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize")
    specs.append(_resize(crop, down_scales, None, 11, ROI))
    _assert_matches_onnxruntime(specs, {"x": _x(X_SHAPE)}, 11, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("opset", [11, 13, 18, 19])
def test_resize_matches_onnxruntime_exhaustive(opset: int) -> None:
    _assert_matches_onnxruntime(_resize_specs(opset, exhaustive=True), {"x": _x(X_SHAPE)}, opset, atol=1e-5)


def test_resize_10_and_upsample_match_onnxruntime() -> None:
    up, down = _f([1, 1, 2.5, 3]), _f([1, 1, 0.6, 0.45])
    x = {"x": _x(X_SHAPE)}
    modes = ("nearest", "linear")
    _assert_matches_onnxruntime([("Resize", ["x", s], dict(mode=m)) for m in modes for s in (up, down)], x, 10)
    _assert_matches_onnxruntime([("Upsample", ["x", up], dict(mode=m)) for m in modes], x, 9)
    _assert_matches_onnxruntime([("Upsample", ["x"], dict(mode=m, scales=[1.0, 1.0, 2.0, 1.5])) for m in modes], x, 7)


def test_resize_nearest_keeps_integer_dtype() -> None:
    x = np.arange(35, dtype=np.int32).reshape(1, 1, 5, 7)
    _assert_matches_onnxruntime([_resize(dict(mode="nearest"), _f([1, 1, 1.6, 0.5]), None, 13)], {"x": x}, 13)


# --- Slice, Pad and the attribute versions of the shape ops -----------------------------------------


def test_slice_negative_steps_and_clamping() -> None:
    big = np.iinfo(np.int64).max
    cases = [
        # (starts, ends, axes, steps)
        ([-1], [-big], [1], [-1]),  # whole axis reversed
        ([100], [0], [1], [-2]),  # start beyond the end clamps to dim-1
        ([-100, 2], [100, -100], [0, 2], [1, -1]),  # out-of-range on both sides
        ([5, 1], [1, 6], [-1, -2], [-3, 2]),  # negative axes, step larger than one
        ([0], [big], [3], [4]),
        ([3], [3], [2], [1]),  # empty result
        ([-2], [-5], [2], [-1]),
    ]
    specs: list[NodeSpec] = [("Slice", ["x", _i(s), _i(e), _i(a), _i(t)], {}) for s, e, a, t in cases]
    specs.append(("Slice", ["x", _i([1, -1]), _i([big, -big])], {}))  # default axes and steps
    _assert_matches_onnxruntime(specs, {"x": _x((4, 6, 5, 7))}, 13)
    _assert_matches_onnxruntime(
        [("Slice", ["x"], dict(starts=[1, -3], ends=[100, -1], axes=[0, 2]))], {"x": _x((4, 6, 5))}, 9
    )


def test_pad_modes_and_versions() -> None:
    x = {"x": _x((2, 3, 4))}
    pads = [[0, 1, 2, 1, 0, 3], [1, 0, 1, 0, 2, 2], [0, -1, 1, 0, 1, -2]]
    specs: list[NodeSpec] = []
    for mode, p in itertools.product(["constant", "reflect", "edge"], pads):
        specs.append(("Pad", ["x", _i(p), _f([1.5]) if mode == "constant" else None], dict(mode=mode)))
    _assert_matches_onnxruntime(specs, x, 11)
    specs = [
        ("Pad", ["x", _i(p), _f([-2.0]), _i(axes)], dict(mode=m))
        for m, p, axes in [
            ("constant", [1, 2, 0, 3], [2, 0]),
            ("reflect", [1, 2], [-1]),
            ("edge", [2, 0, 1, 1], [0, 1]),
            ("wrap", [1, 2, 3, 1], [1, 2]),
            ("wrap", [2, 3], [-1]),
        ]
    ]
    specs.append(("Pad", ["x", _i([0, 2, 1, 0, 1, 3])], dict(mode="wrap")))
    _assert_matches_onnxruntime(specs, x, 19)
    pad_2 = [("Pad", ["x"], dict(mode=m, pads=[0, 1, 2, 1, 0, 1], value=0.5)) for m in ("constant", "reflect", "edge")]
    _assert_matches_onnxruntime(pad_2, x, 2)


def test_shape_ops_attribute_versions() -> None:
    x = {"x": _x((2, 1, 3, 1))}
    specs: list[NodeSpec] = [
        ("Squeeze", ["x"], dict(axes=[1, -1])),
        ("Squeeze", ["x"], {}),
        ("Unsqueeze", ["x"], dict(axes=[0, -1, 3])),
        ("Split", ["x"], dict(axis=2, split=[1, 2])),
        ("Reshape", ["x", _i([0, 3, -1])], {}),
        ("Flatten", ["x"], dict(axis=-2)),
    ]
    model = _model(specs, x, 11)
    # Split has two outputs: name the second one too.
    split = model.graph.node[3]
    split.output.append("y3b")
    model.graph.output.append(helper.make_empty_tensor_value_info("y3b"))
    assert_outputs_close(onnxshap.load(model).run(x), run_ort(model, x), rtol=1e-6, atol=0)
    _assert_matches_onnxruntime([("Squeeze", ["x"], dict(axes=[1])), ("Unsqueeze", ["x"], dict(axes=[0]))], x, 1)
    _assert_matches_onnxruntime([("DepthToSpace", ["x"], dict(blocksize=2))], {"x": _x((1, 8, 2, 3))}, 1)


def test_split_equal_parts_without_sizes() -> None:
    x = {"x": _x((6, 4))}
    model = _model([("Split", ["x"], dict(axis=0))], x, 11)
    model.graph.node[0].output.extend(["y0b", "y0c"])
    model.graph.output.extend([helper.make_empty_tensor_value_info(n) for n in ("y0b", "y0c")])
    got = onnxshap.load(model).run(x)
    assert_outputs_close(got, run_ort(model, x), rtol=0, atol=0)
    assert [v.shape for v in got.values()] == [(2, 4)] * 3


REDUCE_OPS = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSum",
    "ReduceLogSumExp",
]


@pytest.mark.parametrize("opset", [1, 11, 13])
def test_reductions_with_axes_attribute(opset: int) -> None:
    x = {"x": np.abs(_x((2, 3, 4))) + 0.5}
    specs: list[NodeSpec] = []
    for op in REDUCE_OPS:
        if op == "ReduceSum" and opset >= 13:
            continue  # ReduceSum-13 takes axes as an input (covered by the backend cases)
        axes = [[0, 2], [1], None][len(specs) % 3]
        attrs: dict[str, Any] = dict(keepdims=len(specs) % 2)
        if axes is not None:
            attrs["axes"] = axes if opset == 1 else [a - 3 for a in axes]
        specs.append((op, ["x"], attrs))
    _assert_matches_onnxruntime(specs, x, opset, rtol=1e-5, atol=1e-5)


def test_reductions_noop_with_empty_axes() -> None:
    x = {"x": np.abs(_x((2, 3))) + 0.5}
    specs: list[NodeSpec] = [(op, ["x", _i([])], dict(noop_with_empty_axes=1)) for op in REDUCE_OPS]
    specs += [(op, ["x"], dict(keepdims=0)) for op in REDUCE_OPS]
    _assert_matches_onnxruntime(specs, x, 18, rtol=1e-5, atol=1e-5)


def test_constant_value_attributes() -> None:
    specs: list[NodeSpec] = [
        ("Constant", [], dict(value_float=1.5)),
        ("Constant", [], dict(value_floats=[1.0, -2.0])),
        ("Constant", [], dict(value_int=7)),
        ("Constant", [], dict(value_ints=[3, 4, 5])),
        ("Constant", [], dict(value=numpy_helper.from_array(np.arange(6, dtype=np.int32).reshape(2, 3)))),
        ("Identity", ["x"], {}),
    ]
    _assert_matches_onnxruntime(specs, {"x": _x((2,))}, 13)


@pytest.mark.parametrize("opset", [11, 13, 16])
def test_if_with_static_condition(opset: int) -> None:
    then_graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["t"])], "then", [], [helper.make_empty_tensor_value_info("t")]
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_empty_tensor_value_info("e")]
    )
    for cond in (True, False):
        node = helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
            [numpy_helper.from_array(np.array(cond), "cond")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        feeds = {"x": _x((3,))}
        assert_outputs_close(onnxshap.load(model).run(feeds), run_ort(model, feeds), rtol=0, atol=0)


# --- traced indices and folded shape chains ------------------------------------------------------------


@pytest.mark.parametrize("rows", [10, 300])
def test_gather_with_traced_indices_under_jit(rows: int) -> None:
    # 10 x 4 stays an embedded constant; 300 x 4 is passed to the compiled function as a weight.
    table = np.random.default_rng(1).standard_normal((rows, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", 5, 4])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    loaded = onnxshap.load(model)
    for ids in (np.array([[0, 3, 9, -1, 2], [1, 1, 4, -10, 7]]), np.array([[9, 8, 7, 6, 5], [0, -2, 0, 3, 3]])):
        feeds = {"ids": ids.astype(np.int64)}
        assert_outputs_close(loaded.run(feeds), run_ort(model, feeds), rtol=0, atol=0)
    assert loaded.trace_count == 1


def test_shape_chain_folds_and_traces_once() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "flatten_by_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
        [
            numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
            numpy_helper.from_array(_i([0]), "axes0"),
            numpy_helper.from_array(_i([-1]), "minus_one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    loaded = onnxshap.load(model)
    for seed in (0, 1):
        feeds = {"x": _x((2, 3, 4), seed)}
        assert_outputs_close(loaded.run(feeds), run_ort(model, feeds), rtol=0, atol=0)
    assert loaded.trace_count == 1
    feeds = {"x": _x((5, 3, 4), 2)}
    assert_outputs_close(loaded.run(feeds), run_ort(model, feeds), rtol=0, atol=0)
    assert loaded.trace_count == 2
