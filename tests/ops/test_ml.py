"""Focused forward tests for the ai.onnx.ml ops (the backend suite has cases for two of them) and for
Cast/CastLike/Dropout, whose exotic dtypes onnxruntime can neither take nor return through numpy.

Everything is compared with onnxruntime on small models built with onnx.helper: every
post_transform of LinearClassifier (multiclass and skl2onnx's one-row binary form), the
skl2onnx LogisticRegression pipeline, and Cast to float 8 / E8M0 / sub-byte integers through a
Cast back to float32 (so onnxruntime can return the result).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxshap
from onnxshap._errors import UnsupportedOpError
from onnxshap.ops.ml import zip_map
from tests.helpers import assert_outputs_close, run_ort

ML_OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]


def _graph_model(
    nodes: list[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    outputs: list[str],
    *,
    opsets: list[onnx.OperatorSetIdProto] = ML_OPSETS,
    initializers: dict[str, np.ndarray] | None = None,
    ir_version: int = 8,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [onnx.numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    return model


def _ml(op: str, feeds: dict[str, np.ndarray], outputs: tuple[str, ...] = ("y",), **attrs: Any) -> onnx.ModelProto:
    node = helper.make_node(op, list(feeds), list(outputs), domain="ai.onnx.ml", **attrs)
    return _graph_model([node], feeds, list(outputs))


def _assert_matches_onnxruntime(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, rtol: float = 1e-5, atol: float = 1e-6
) -> dict[str, np.ndarray]:
    got = onnxshap.load(model).run(feeds)
    assert_outputs_close(got, run_ort(model, feeds), rtol=rtol, atol=atol)
    return got


def _check_cases(
    op: str, cases: dict[str, tuple[list[np.ndarray], dict[str, Any]]], n_outputs: int = 1, **tolerances: float
) -> dict[str, np.ndarray]:
    """One model with a node per case (inputs, attributes): one compilation checks them all.

    Outputs are named "<case>" or "<case>:<k>", so a failure names its case.
    """
    nodes, feeds, outputs = [], {}, []
    for case, (inputs, attrs) in cases.items():
        names = [f"{case}/{i}" for i in range(len(inputs))]
        feeds.update(zip(names, inputs))
        outs = [case] if n_outputs == 1 else [f"{case}:{k}" for k in range(n_outputs)]
        nodes.append(helper.make_node(op, names, outs, domain="ai.onnx.ml", **attrs))
        outputs += outs
    return _assert_matches_onnxruntime(_graph_model(nodes, feeds, outputs), feeds, **tolerances)


# Rows chosen to hit the edge cases: a zero row, an all-negative row, a row whose max is 0.
ROWS = np.array(
    [
        [1.0, -2.0, 3.0, 0.5],
        [0.0, 0.0, 0.0, 0.0],
        [-4.0, -1.0, -2.0, -0.5],
        [-1.0, 0.0, -2.0, 0.0],
        [0.3, 0.2, -0.1, 2.5],
    ],
    np.float32,
)


# --- preprocessing ---------------------------------------------------------------------------------


def test_scaler() -> None:
    per_feature = dict(offset=[0.5, -1.0, 2.0, 0.0], scale=[2.0, 0.5, -1.0, 3.0])
    _check_cases(
        "Scaler",
        {
            "float32": ([ROWS], per_feature),
            "float64_scalar": ([ROWS.astype(np.float64)], dict(offset=[0.25], scale=[4.0])),
            "int64": ([ROWS.astype(np.int64) * 3], per_feature),
            "1d": ([ROWS[0]], per_feature),
        },
    )


def test_scaler_rejects_mismatched_lengths() -> None:
    model = _ml("Scaler", {"x": ROWS}, offset=[0.5, 1.0], scale=[2.0, 1.0])
    with pytest.raises(UnsupportedOpError, match="2 offset values for 4 features"):
        onnxshap.load(model).run({"x": ROWS})


def test_normalizer() -> None:
    special = np.concatenate([ROWS * 2, [[np.nan, 1.0, 2.0, 0.0], [1e-30, 0, 0, 0]]]).astype(
        np.float32
    )  # NaN, underflow
    inputs = {"float32": special, "float64": (ROWS * 2).astype(np.float64), "int32": (ROWS * 2).astype(np.int32)}
    cases = {f"{norm}_{name}": ([x], dict(norm=norm)) for norm in ("MAX", "L1", "L2") for name, x in inputs.items()}
    cases["L1_1d"] = ([ROWS[2]], dict(norm="L1"))
    _check_cases("Normalizer", cases)


def test_binarizer() -> None:
    x = np.array([[1.0, -2.0, 0.5, 0.7], [0.5, 0.49, 3.0, -0.0]], np.float32)
    _assert_matches_onnxruntime(_ml("Binarizer", {"x": x}, threshold=0.5), {"x": x})
    # onnxruntime implements float only; integers follow the same comparison.
    xi = np.array([[1, -2, 3], [2, 0, 5]], np.int64)
    got = onnxshap.load(_ml("Binarizer", {"x": xi}, threshold=1.5)).run({"x": xi})["y"]
    np.testing.assert_array_equal(got, (xi > 1.5).astype(np.int64))


def test_imputer() -> None:
    nan = float("nan")
    _check_cases(
        "Imputer",
        {
            "nan_per_feature": (
                [np.array([[1, -2, nan], [0.5, nan, 0.7], [0, 0, 0]], np.float32)],
                dict(imputed_value_floats=[9.0, 8.0, 7.0], replaced_value_float=nan),
            ),
            "nan_one_value": (
                [np.array([[1, -2, nan], [0.5, nan, 0.7]], np.float32)],
                dict(imputed_value_floats=[9.0], replaced_value_float=nan),
            ),
            "value": (
                [np.array([[1, 0.5, nan], [0.5, 2, 0.5]], np.float32)],
                dict(imputed_value_floats=[9.0, 8.0, 7.0], replaced_value_float=0.5),
            ),
            "int64": (
                [np.array([[1, -1, 3], [-1, 2, -1]], np.int64)],
                dict(imputed_value_int64s=[7, 8, 9], replaced_value_int64=-1),
            ),
            "int64_1d": ([np.array([1, -1, 3], np.int64)], dict(imputed_value_int64s=[7], replaced_value_int64=-1)),
        },
    )


def test_array_feature_extractor_static_and_computed_indices() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    indices = np.array([3, 0, 0], np.int64)
    node = helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml")
    _assert_matches_onnxruntime(_graph_model([node], {"x": x}, ["y"], initializers={"i": indices}), {"x": x})
    # skl2onnx's label lookup: classes (a constant) indexed by an ArgMax computed from the data.
    classes = np.array([5, 7, 9], np.int64)
    nodes = [
        helper.make_node("ArgMax", ["p"], ["k"], axis=1),
        helper.make_node("ArrayFeatureExtractor", ["classes", "k"], ["y"], domain="ai.onnx.ml"),
    ]
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]], np.float32)
    _assert_matches_onnxruntime(_graph_model(nodes, {"p": p}, ["y"], initializers={"classes": classes}), {"p": p})


def test_array_feature_extractor_rejects_out_of_range_constant_index() -> None:
    x = np.ones((2, 4), np.float32)
    node = helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml")
    model = _graph_model([node], {"x": x}, ["y"], initializers={"i": np.array([4], np.int64)})
    with pytest.raises(UnsupportedOpError, match="index 4 is out of range"):
        onnxshap.load(model).run({"x": x})


def test_feature_vectorizer() -> None:
    rng = np.random.default_rng(0)
    layouts = {
        "exact": ([(2, 2), (2, 3), (2, 1)], [2, 3, 1]),
        "cut_and_pad": ([(2, 2), (2, 3)], [1, 4]),
        "rank3": ([(2, 2, 3), (2, 3)], [6, 3]),
        "1d": ([(2,), (3,)], [2, 3]),
    }
    cases = {}
    for name, (shapes, dims) in layouts.items():
        floats = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        cases[name] = (floats, dict(inputdimensions=dims))
        cases[f"{name}_int64"] = ([(v * 10).astype(np.int64) for v in floats], dict(inputdimensions=dims))
    _check_cases("FeatureVectorizer", cases)


# --- linear models ---------------------------------------------------------------------------------

X = np.array([[1.0, -2.0, 3.0], [0.0, 0.0, 0.0], [-4.0, -1.0, -2.0], [0.1, 0.2, -0.1], [0.05, 0.1, 0.0]], np.float32)
W3 = [0.5, -1.0, 0.2, 1.0, 0.3, -0.4, -0.2, 0.1, 0.7]
B3 = [0.1, -0.2, 0.3]
# Row 3 of X gives the second class a score of 1.5e-8: SOFTMAX_ZERO treats it as zero.
POST_TRANSFORMS = ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"]


def test_linear_classifier() -> None:
    """Every post_transform, with 3 coefficient rows and with skl2onnx's one-row binary form
    (scores [1 - p, p], label from s > 0), and non-float32 inputs."""
    cases = {}
    for post_transform in POST_TRANSFORMS:
        cases[f"multi_{post_transform}"] = (
            [X],
            dict(
                coefficients=W3, intercepts=B3, classlabels_ints=[3, 5, 7], post_transform=post_transform, multi_class=1
            ),
        )
        if post_transform != "PROBIT":
            cases[f"binary_{post_transform}"] = (
                [X],
                dict(
                    coefficients=[0.5, -1.0, 0.2],
                    intercepts=[-0.1],
                    classlabels_ints=[4, 9],
                    post_transform=post_transform,
                ),
            )
    softmax = dict(coefficients=W3, intercepts=B3, classlabels_ints=[0, 1, 2], post_transform="SOFTMAX")
    cases["float64_1d"] = ([X.astype(np.float64)[0]], softmax)
    cases["int64"] = ([(X * 10).astype(np.int64)], softmax)
    probit = {"multi_PROBIT": cases.pop("multi_PROBIT")}
    got = _check_cases("LinearClassifier", cases, n_outputs=2)
    assert got["multi_NONE:0"].dtype == np.int64 and got["binary_NONE:1"].shape == (len(X), 2)
    # onnxruntime's ErfInv is an approximation whose float32 noise grows near p = 0 or 1.
    _check_cases("LinearClassifier", probit, n_outputs=2, rtol=1e-4)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (dict(coefficients=W3, intercepts=B3, classlabels_strings=["a", "b", "c"]), "string tensor"),
        (
            dict(coefficients=[0.5, -1.0, 0.2], intercepts=[0.0], classlabels_ints=[0, 1], post_transform="PROBIT"),
            "uninitialised",
        ),
        (dict(coefficients=W3, intercepts=B3, classlabels_ints=[0, 1]), "3 coefficient rows but 2 class labels"),
    ],
    ids=["string-labels", "binary-probit", "label-count"],
)
def test_linear_classifier_unsupported(attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedOpError, match=message):
        onnxshap.load(_ml("LinearClassifier", {"x": X}, ("label", "scores"), **attrs)).run({"x": X})


def test_linear_regressor() -> None:
    _check_cases(
        "LinearRegressor",
        {
            "one_target": ([X], dict(coefficients=[0.5, -1.0, 0.2], intercepts=[0.3])),
            "two_targets": (
                [X],
                dict(coefficients=[0.5, -1.0, 0.2, 0.1, 0.03, -0.04], intercepts=[0.3, 0.2], targets=2),
            ),
            "no_intercepts": ([X], dict(coefficients=[0.5, -1.0, 0.2])),
            "one_target_logistic": (
                [X],
                dict(coefficients=[0.5, -1.0, 0.2], intercepts=[0.3], post_transform="LOGISTIC"),
            ),
        },
    )


def test_linear_regressor_rejects_nonlinear_transform() -> None:
    model = _ml(
        "LinearRegressor",
        {"x": X},
        coefficients=[0.5, -1.0, 0.2, 0.1, 0.03, -0.04],
        targets=2,
        post_transform="SOFTMAX",
    )
    with pytest.raises(UnsupportedOpError, match="rule is linear"):
        onnxshap.load(model).run({"x": X})


def test_logistic_regression_pipeline() -> None:
    """What skl2onnx emits for Pipeline(StandardScaler, LogisticRegression): Scaler, LinearClassifier, Normalizer."""
    nodes = [
        helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", offset=[0.1, -0.2, 0.3], scale=[1.5, 0.5, 2.0]),
        helper.make_node(
            "LinearClassifier",
            ["xs"],
            ["label", "raw"],
            domain="ai.onnx.ml",
            coefficients=W3,
            intercepts=B3,
            classlabels_ints=[0, 1, 2],
            multi_class=1,
            post_transform="SOFTMAX",
        ),
        helper.make_node("Normalizer", ["raw"], ["probabilities"], domain="ai.onnx.ml", norm="L1"),
    ]
    _assert_matches_onnxruntime(_graph_model(nodes, {"x": X}, ["label", "probabilities"]), {"x": X})


# --- ZipMap (host side) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "key_type"),
    [
        (dict(classlabels_int64s=[3, 5, 7]), TensorProto.INT64),
        (dict(classlabels_strings=["a", "b", "c"]), TensorProto.STRING),
    ],
    ids=["int64", "string"],
)
def test_zip_map_matches_onnxruntime(attrs: dict[str, Any], key_type: int) -> None:
    node = helper.make_node("ZipMap", ["x"], ["z"], domain="ai.onnx.ml", **attrs)
    out_type = helper.make_sequence_type_proto(
        helper.make_map_type_proto(key_type, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_value_info("z", out_type)],
    )
    model = helper.make_model(graph, opset_imports=ML_OPSETS)
    model.ir_version = 8
    for x in (np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]], np.float32), np.array([0.1, 0.2, 0.7], np.float32)):
        assert zip_map(x, **attrs) == run_ort(model, {"x": x})["z"]


def test_zip_map_cannot_be_traced() -> None:
    import jax.numpy as jnp

    with pytest.raises(UnsupportedOpError, match="sequence of maps"):
        zip_map(jnp.ones((2, 3)), classlabels_int64s=[0, 1, 2])


# --- Cast, CastLike, Dropout -----------------------------------------------------------------------

CAST_OPSETS = [helper.make_opsetid("", 25)]
# Finite values around every float 8 format's range and rounding boundaries, subnormals of E8M0 and
# halves for the sub-byte integers. Non-saturating E4M3FN [480, 484) and E5M2 (61440, 65536) are left
# out: onnxruntime 1.31 deviates from the spec there (test_cast_non_saturating_overflow_follows_spec).
CAST_VALUES = np.array(
    [
        0.0,
        -0.0,
        0.3,
        -0.3,
        1.5,
        2.5,
        -2.5,
        3.49,
        7.6,
        -8.5,
        15.9,
        17.0,
        -9.2,
        100.7,
        239.9,
        240.0,
        250.0,
        448.0,
        470.0,
        500.0,
        1e4,
        57344.0,
        60000.0,
        7e4,
        1e6,
        1e-7,
        -1e-7,
        1e-3,
        2.0**-9,
        2.0**-10,
        2.0**-17,
        3 * 2.0**-18,
        0.124,
        0.126,
        1.1,
        1.45,
        1.75,
        2.0**127,
        1.5 * 2.0**127,
        1e-40,
        2.0**-127,
        np.inf,
        -np.inf,
        np.nan,
    ],
)
FLOAT8 = [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ]
# (target type, Cast attributes) for every output of the fan-out model.
CAST_TARGETS: list[tuple[int, dict[str, Any]]] = [
    *[(t, dict(saturate=s)) for t in FLOAT8 for s in (1, 0)],
    *[(TensorProto.FLOAT8E8M0, dict(saturate=s, round_mode=m)) for s in (1, 0) for m in ("up", "down", "nearest")],
    *[
        (t, {})
        for t in (
            TensorProto.INT4,
            TensorProto.UINT4,
            TensorProto.INT2,
            TensorProto.UINT2,
            TensorProto.INT8,
            TensorProto.UINT8,
            TensorProto.INT16,
            TensorProto.BFLOAT16,
            TensorProto.FLOAT16,
        )
    ],
]


@pytest.mark.parametrize("source", ["float32", "float16", "float64", "bfloat16", "float8e4m3fn", "int32"])
def test_cast_exotic_types_match_onnxruntime(source: str) -> None:
    """Cast from `source` to each exotic type and back to float32 (onnxruntime returns no exotic numpy arrays)."""
    x = CAST_VALUES
    if source == "int32":
        x = np.nan_to_num(CAST_VALUES, posinf=0, neginf=0).clip(-1000, 1000)
    if source == "float16":
        x = x[~(np.abs(x) > 65000) | np.isinf(x)]
    if source == "float64":  # XLA on CPU flushes float32 subnormal results (float64 -> float32) to zero
        x = x[~((np.abs(x) > 0) & (np.abs(x) < 2.0**-126))]
    in_graph = {"bfloat16": TensorProto.BFLOAT16, "float8e4m3fn": TensorProto.FLOAT8E4M3FN}.get(source)
    feed_dtype = np.float32 if in_graph else np.dtype(source)
    feeds = {"x": x.astype(feed_dtype), "absx": np.abs(x).astype(feed_dtype)}  # E8M0 leaves negatives unspecified
    nodes, outputs = [], []
    starts = {"x": "x", "absx": "absx"}
    if in_graph:  # onnxruntime takes no such feeds: convert inside the graph
        for name in feeds:
            nodes.append(helper.make_node("Cast", [name], [f"{name}_{source}"], to=in_graph))
            starts[name] = f"{name}_{source}"
    for i, (target, attrs) in enumerate(CAST_TARGETS):
        if (
            target == TensorProto.FLOAT8E8M0
            and source not in ("float32", "float64")
            and attrs["round_mode"] != "nearest"
        ):
            continue  # the other sources reach E8M0 through float32: one configuration checks the conversion
        values = starts["absx" if target == TensorProto.FLOAT8E8M0 else "x"]
        nodes.append(helper.make_node("Cast", [values], [f"c{i}"], to=target, **attrs))
        nodes.append(helper.make_node("Cast", [f"c{i}"], [f"y{i}"], to=TensorProto.FLOAT))
        outputs.append(f"y{i}")
    model = _graph_model(nodes, feeds, outputs, opsets=CAST_OPSETS, ir_version=11)
    _assert_matches_onnxruntime(model, feeds, rtol=0, atol=0)


def test_cast_non_saturating_overflow_follows_spec() -> None:
    """Where onnxruntime 1.31 deviates from the spec's table (saturate=0), follow the spec: NaN / Inf."""
    from onnx.reference import ReferenceEvaluator

    x = np.array([480.0, 482.0, -483.0, 61441.0, 65000.0, -62000.0], np.float32)
    for target in (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2):
        nodes = [
            helper.make_node("Cast", ["x"], ["c"], to=target, saturate=0),
            helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT),
        ]
        model = _graph_model(nodes, {"x": x}, ["y"], opsets=CAST_OPSETS, ir_version=11)
        got = onnxshap.load(model).run({"x": x})["y"]
        np.testing.assert_array_equal(got, ReferenceEvaluator(model).run(None, {"x": x})[0])


def test_cast_float8_output_bits_match_onnxruntime() -> None:
    """onnxruntime returns FLOAT8E4M3FN as raw uint8: compare the bits directly, saturating and not."""
    x = CAST_VALUES.astype(np.float32)
    x = x[(np.abs(x) < 480) | (np.abs(x) >= 484)]
    for saturate in (1, 0):
        node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E4M3FN, saturate=saturate)
        model = _graph_model([node], {"x": x}, ["y"], opsets=CAST_OPSETS, ir_version=11)
        got = onnxshap.load(model).run({"x": x})["y"]
        want = np.asarray(run_ort(model, {"x": x})["y"])  # raw uint8 (or float8 once viewed by the helper)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_castlike_and_string_constant() -> None:
    x = np.array([1.7, -2.5, 300.0], np.float32)
    nodes = [
        helper.make_node("CastLike", ["x", "like"], ["a"], saturate=1),
        helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["s"], ["z"], to=TensorProto.FLOAT),  # constant strings are parsed on the host
    ]
    initializers = {"like": np.zeros(1, np.int8), "s": np.array(["3.5", "-1e3", "INF"], dtype=object)}
    model = _graph_model(nodes, {"x": x}, ["y", "z"], opsets=CAST_OPSETS, initializers=initializers, ir_version=11)
    _assert_matches_onnxruntime(model, {"x": x})


def test_cast_to_float6_is_unsupported() -> None:
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT6E2M3)
    x = np.ones(3, np.float32)
    model = _graph_model([node], {"x": x}, ["y"], opsets=[helper.make_opsetid("", 28)], ir_version=13)
    with pytest.raises(UnsupportedOpError, match="no float6_e2m3fn type"):
        onnxshap.load(model).run({"x": x})


@pytest.mark.parametrize("opset", [7, 10, 13])
def test_dropout_mask(opset: int) -> None:
    """The mask output keeps the node in the graph; old versions return an unfilled (zero) mask."""
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    node = helper.make_node("Dropout", ["x"], ["y", "mask"], **({} if opset >= 12 else {"ratio": 0.3}))
    _assert_matches_onnxruntime(
        _graph_model([node], {"x": x}, ["y", "mask"], opsets=[helper.make_opsetid("", opset)]), {"x": x}
    )


def test_dropout_training_mode() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    node = helper.make_node("Dropout", ["x", "ratio", "training"], ["y", "mask"])
    for ratio in (0.0, 0.5):
        initializers = {"ratio": np.array(ratio, np.float32), "training": np.array(True)}
        model = _graph_model(
            [node], {"x": x}, ["y", "mask"], opsets=[helper.make_opsetid("", 13)], initializers=initializers
        )
        if ratio == 0.0:  # nothing is dropped: deterministic
            _assert_matches_onnxruntime(model, {"x": x})
        else:
            with pytest.raises(UnsupportedOpError, match="training_mode=True draws a random mask"):
                onnxshap.load(model).run({"x": x})
