"""ai.onnx.ml OneHotEncoder and LabelEncoder: forward parity with onnxruntime, rules against brute-force
Shapley values and per-node local completeness, string mappings refused clearly."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxshap
from onnxshap._errors import UnsupportedOpError
from tests.helpers import assert_locally_complete, assert_outputs_close, player_shapley, run_ort


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, tuple[int, list[Any]]],
    outputs: list[str],
    ml: int = 3,
    initializers: list[onnx.TensorProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, t, s) for k, (t, s) in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        initializers or [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", ml)])
    model.ir_version = 8 if ml < 4 else 9
    return model


def _encoder(op: str, dtype: int, shape: list[Any], ml: int = 3, **attrs: Any) -> onnx.ModelProto:
    return _model([helper.make_node(op, ["x"], ["y"], domain="ai.onnx.ml", **attrs)], {"x": (dtype, shape)}, ["y"], ml)


def _parity(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    assert_outputs_close(onnxshap.load(model).run(feeds), run_ort(model, feeds), rtol=0, atol=0)


# --- OneHotEncoder forward ---------------------------------------------------------------------------

FLOATS = np.array([[0.0, 1.7, -1.0, 2.9], [-0.5, np.nan, 1e10, 3.0], [np.inf, 2.0, 0.999, -1.2]], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_one_hot_encoder_matches_onnxruntime(dtype: type) -> None:
    x = FLOATS if dtype != np.int64 else np.array([[0, 1, -1, 7], [2, 2, 0, 3]], np.int64)
    x = x.astype(dtype)
    model = _encoder(
        "OneHotEncoder", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(x.shape), cats_int64s=[0, 1, 2, -1]
    )
    _parity(model, {"x": x})
    assert onnxshap.load(model).run({"x": x})["y"].shape == (*x.shape, 4)


def test_one_hot_encoder_1d_and_constant_strings() -> None:
    _parity(_encoder("OneHotEncoder", TensorProto.INT64, [5], cats_int64s=[3, 1]), {"x": np.array([1, 3, 0, 3, 2])})
    # A constant string column (folded on the host), then a float consumer.
    words = onnx.helper.make_tensor("w", TensorProto.STRING, [3], [b"b", b"z", b"a"])
    nodes = [
        helper.make_node("OneHotEncoder", ["w"], ["hot"], domain="ai.onnx.ml", cats_strings=["a", "b"]),
        helper.make_node("Add", ["hot", "x"], ["y"]),
    ]
    model = _model(nodes, {"x": (TensorProto.FLOAT, [3, 2])}, ["y"], initializers=[words])
    _parity(model, {"x": np.ones((3, 2), np.float32)})
    # b -> [0, 1], z (no category) -> [0, 0], a -> [1, 0]; plus the ones of x.
    got = onnxshap.load(model).run({"x": np.ones((3, 2), np.float32)})["y"]
    np.testing.assert_array_equal(got, [[1, 2], [1, 1], [2, 1]])
    ids = onnxshap.load(_encoder("OneHotEncoder", TensorProto.INT64, [5], cats_int64s=[3, 1]))
    np.testing.assert_array_equal(
        ids.run({"x": np.array([1, 3, 0, 3, 2])})["y"], [[0, 1], [1, 0], [0, 0], [1, 0], [0, 0]]
    )


def test_one_hot_encoder_refusals() -> None:
    both = _encoder("OneHotEncoder", TensorProto.INT64, [2], cats_int64s=[1], cats_strings=["a"])
    with pytest.raises(UnsupportedOpError, match="exactly one"):
        onnxshap.load(both).run({"x": np.array([1, 2])})


def test_one_hot_encoder_zeros_0_on_constants_raises() -> None:
    const = onnx.numpy_helper.from_array(np.array([0, 5], np.int64), "c")
    nodes = [
        helper.make_node("OneHotEncoder", ["c"], ["hot"], domain="ai.onnx.ml", cats_int64s=[0, 1], zeros=0),
        helper.make_node("Add", ["hot", "x"], ["y"]),
    ]
    model = _model(nodes, {"x": (TensorProto.FLOAT, [2, 2])}, ["y"], initializers=[const])
    with pytest.raises(UnsupportedOpError, match="unknown category"):
        onnxshap.load(model).run({"x": np.zeros((2, 2), np.float32)})


# --- LabelEncoder forward ----------------------------------------------------------------------------


def _tensor(name: str, values: np.ndarray) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(values, name)


def _label_encoder_spec(x: np.ndarray, attrs: dict[str, Any], ml: int) -> np.ndarray:
    """LabelEncoder by the spec: each key's value, the default elsewhere; NaN keys match NaN from v4."""

    def attr(kind: str) -> np.ndarray:
        if f"{kind}_tensor" in attrs:
            return onnx.numpy_helper.to_array(attrs[f"{kind}_tensor"])
        name = next(k for k in attrs if k.startswith(f"{kind}_"))
        return np.asarray(attrs[name])

    keys, values = attr("keys"), attr("values")
    default = (
        attr("default").reshape(-1)[0]
        if any(k.startswith("default") for k in attrs)
        else (-1 if values.dtype.kind == "i" else -0.0)
    )
    out = np.full(x.shape, default, values.dtype)
    for key, value in zip(keys, values):
        hit = (x == key) | (ml >= 4 and np.isnan(key) & np.isnan(x)) if keys.dtype.kind == "f" else x == key
        out[hit] = value
    return out


@pytest.mark.parametrize(
    ("ml", "dtype", "x", "attrs"),
    [
        (
            2,
            TensorProto.FLOAT,
            np.array([[1.5, np.nan], [2.0, 7.0]], np.float32),
            dict(keys_floats=[1.5, 2.0, float("nan")], values_floats=[10.0, -3.0, 0.5], default_float=9.0),
        ),
        (
            4,
            TensorProto.FLOAT,
            np.array([[1.5, np.nan], [2.0, 7.0]], np.float32),
            dict(keys_floats=[1.5, 2.0, float("nan")], values_floats=[10.0, -3.0, 0.5], default_float=9.0),
        ),
        (2, TensorProto.INT64, np.array([[3, 1], [4, 3]], np.int64), dict(keys_int64s=[3, 4], values_int64s=[30, 40])),
        (2, TensorProto.INT64, np.array([3, 1, 4], np.int64), dict(keys_int64s=[3, 4], values_floats=[0.25, -1.0])),
        (
            4,
            TensorProto.FLOAT,
            np.array([1.0, 2.0, 5.0], np.float32),
            dict(keys_floats=[1.0, 2.0], values_int64s=[7, 8], default_int64=-5),
        ),
        (
            4,
            TensorProto.DOUBLE,
            np.array([1.0, 2.0, 5.0]),
            dict(
                keys_tensor=_tensor("keys_tensor", np.array([1.0, 2.0])),
                values_tensor=_tensor("values_tensor", np.array([10.0, 20.0])),
                default_tensor=_tensor("default_tensor", np.array([-1.0])),
            ),
        ),
        (
            4,
            TensorProto.INT32,
            np.array([[4, 1]], np.int32),
            dict(
                keys_tensor=_tensor("keys_tensor", np.array([1, 4], np.int32)),
                values_tensor=_tensor("values_tensor", np.array([2, 5], np.int32)),
                default_tensor=_tensor("default_tensor", np.array([0], np.int32)),
            ),
        ),
    ],
    ids=[
        "floats_nan_key_v2",
        "floats_nan_key_v4",
        "int64s",
        "int_to_float",
        "float_to_int_v4",
        "double_tensors",
        "int32_tensors",
    ],
)
def test_label_encoder_matches_its_spec_and_onnxruntime(
    ml: int, dtype: int, x: np.ndarray, attrs: dict[str, Any]
) -> None:
    model = _encoder("LabelEncoder", dtype, list(x.shape), ml=ml, **attrs)
    got = onnxshap.load(model).run({"x": x})
    np.testing.assert_array_equal(got["y"], _label_encoder_spec(x, attrs, ml))
    try:
        want = run_ort(model, {"x": x})
    except Exception as exc:  # onnxruntime has no kernel for every (version, type) mapping
        if "NOT_IMPLEMENTED" not in str(exc):
            raise
        return  # checked against the spec above
    assert_outputs_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    "attrs",
    [dict(keys_strings=["a", "b"], values_int64s=[1, 2]), dict(keys_int64s=[1, 2], values_strings=["a", "b"])],
    ids=["string_keys", "string_values"],
)
def test_label_encoder_strings_are_unsupported(attrs: dict[str, Any]) -> None:
    model = _encoder("LabelEncoder", TensorProto.INT64, [2], ml=2, **attrs)
    with pytest.raises(UnsupportedOpError, match="string keys or values"):
        onnxshap.load(model).run({"x": np.array([1, 2])})


# --- rules ---------------------------------------------------------------------------------------------


def _category_model() -> onnx.ModelProto:
    """x [N, 3] floats, column 2 holding category codes: Gather, Cast(int64) -> OneHotEncoder -> Reshape ->
    Concat with columns 0-1 -> a nonlinear head (the channels times the numeric columns) -> y [N, 1]."""
    init = [
        onnx.numpy_helper.from_array(np.array([0, 1], np.int64), "num_cols"),
        onnx.numpy_helper.from_array(np.array([2], np.int64), "cat_col"),
        onnx.numpy_helper.from_array(np.array([-1, 3], np.int64), "shape"),
        onnx.numpy_helper.from_array(np.array([[1.0], [-2.0], [0.5], [3.0], [1.5]], np.float32), "w"),
        onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Gather", ["x", "num_cols"], ["num"], axis=1),
        helper.make_node("Gather", ["x", "cat_col"], ["cat"], axis=1),
        helper.make_node("Cast", ["cat"], ["codes"], to=TensorProto.INT64),
        helper.make_node("OneHotEncoder", ["codes"], ["hot3"], domain="ai.onnx.ml", cats_int64s=[0, 1, 2]),
        helper.make_node("Reshape", ["hot3", "shape"], ["hot"]),
        helper.make_node("Concat", ["num", "hot"], ["feats"], axis=1),
        # an interaction between the category channels and a numeric column: not additive
        helper.make_node("Tanh", ["feats"], ["t"]),
        helper.make_node("Mul", ["t", "feats"], ["tt"]),
        helper.make_node("MatMul", ["tt", "w"], ["s"]),
        helper.make_node("Mul", ["s", "num"], ["sn"]),
        helper.make_node("ReduceSum", ["sn", "axis1"], ["y"], keepdims=1),
    ]
    return _model(nodes, {"x": (TensorProto.FLOAT, ["N", 3])}, ["y"], initializers=init)


def test_one_hot_encoder_rule_is_exact_per_column() -> None:
    model = _category_model()
    x = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, 0.0]], np.float32)
    r = np.array([[-0.5, 1.0, 1.0]], np.float32)
    _parity(model, {"x": np.concatenate([x, r])})
    explainer = onnxshap.Explainer(model, r)
    e = explainer.explain(x)
    sess = onnxshap.load(model)
    for i in range(len(x)):

        def game(z: np.ndarray) -> float:
            return float(sess.run({"x": z[None].astype(np.float32)})["y"][0, 0])

        want = player_shapley(game, x[i].astype(np.float64), r[0].astype(np.float64))
        np.testing.assert_allclose(np.asarray(e.values)[i].reshape(-1), want, rtol=1e-5, atol=1e-6)
    assert e.max_relative_residual < 1e-5
    nodes = explainer._pass.diagnose({"x": x[:1].astype(np.float64)}, {"x": r.astype(np.float64)}, 0, 1)
    assert any("OneHotEncoder" in label for label, _, _ in nodes)
    assert_locally_complete(nodes)


def test_label_encoder_rule_is_exact() -> None:
    # Two encoded columns combined by a product: a two-player game per row, against brute force.
    nodes = [
        helper.make_node(
            "LabelEncoder",
            ["x"],
            ["v"],
            domain="ai.onnx.ml",
            keys_floats=[0.0, 1.0, 2.0],
            values_floats=[-1.0, 3.0, 0.5],
            default_float=2.0,
        ),
        helper.make_node("ReduceProd", ["v"], ["y"], keepdims=1),
    ]
    model = _model(nodes, {"x": (TensorProto.FLOAT, ["N", 2])}, ["y"], ml=2)
    x = np.array([[1.0, 2.0], [0.0, 7.0]], np.float32)
    r = np.array([[2.0, 0.0]], np.float32)
    _parity(model, {"x": x})
    explainer = onnxshap.Explainer(model, r)
    e = explainer.explain(x)
    sess = onnxshap.load(model)
    for i in range(len(x)):
        want = player_shapley(
            lambda z: float(sess.run({"x": z[None].astype(np.float32)})["y"][0, 0]),
            x[i].astype(np.float64),
            r[0].astype(np.float64),
        )
        np.testing.assert_allclose(np.asarray(e.values)[i].reshape(-1), want, rtol=1e-5, atol=1e-6)
    nodes_ = explainer._pass.diagnose({"x": x[:1].astype(np.float64)}, {"x": r.astype(np.float64)}, 0, 1)
    assert_locally_complete(nodes_)
