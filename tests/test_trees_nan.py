"""Missing values (NaN) in tree and Imputer pipelines: finite, complete and exact attributions against
brute force over the coalitions (onnxruntime as the game, NaN included), and a typed refusal where a NaN
reaches a rule that needs finite values."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxshap
from onnxshap._multipliers import pair_difference
from tests.helpers import run_ort
from tests.test_trees import _coalitions, _exact_shapley, _forest, _inputs, _v3_attrs

N = 5


def _pipeline(
    steps: list[onnx.NodeProto], tree_input: str, initializers: list[onnx.TensorProto] | None = None
) -> onnx.ModelProto:
    """steps (x -> tree_input), then a 4-tree regressor on tree_input -> y [N, 1]."""
    attrs: dict[str, Any] = _v3_attrs(_forest(41, 4, 4, N), "target")
    tree = helper.make_node(
        "TreeEnsembleRegressor", [tree_input], ["y"], domain="ai.onnx.ml", n_targets=1, base_values=[0.3], **attrs
    )
    graph = helper.make_graph(
        [*steps, tree],
        "pipeline",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=initializers or [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    return model


def _imputer(output: str) -> onnx.NodeProto:
    return helper.make_node(
        "Imputer",
        ["x"],
        [output],
        domain="ai.onnx.ml",
        imputed_value_floats=[0.5, -1.0, 2.0, 0.0, 1.0],
        replaced_value_float=float("nan"),
    )


def _scaler(source: str, output: str) -> onnx.NodeProto:
    return helper.make_node(
        "Scaler",
        [source],
        [output],
        domain="ai.onnx.ml",
        offset=[0.1, -0.2, 0.0, 0.5, 0.3],
        scale=[2.0, 0.5, 1.5, 1.0, 3.0],
    )


PIPELINES = {
    "tree": lambda: _pipeline([], "x"),
    "cast-tree": lambda: _pipeline([helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE)], "xd"),
    "extractor-tree": lambda: _pipeline(
        [helper.make_node("ArrayFeatureExtractor", ["x", "order"], ["xp"], domain="ai.onnx.ml")],
        "xp",
        [onnx.numpy_helper.from_array(np.array([4, 2, 0, 1, 3], np.int64), "order")],
    ),
    "imputer-scaler-tree": lambda: _pipeline([_imputer("xi"), _scaler("xi", "xs")], "xs"),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_missing_values_are_attributed_exactly(name: str) -> None:
    model = PIPELINES[name]()
    rng = np.random.default_rng(7)
    x, background = _inputs(rng, 3, N, nan=0.3), _inputs(rng, 6, N, nan=0.3)
    x[0, 0] = background[:, 0] = np.nan  # feature 0 of sample 0: NaN on both sides of every pair, a dummy
    e = onnxshap.Explainer(onnxshap.load(model), background).explain(x)
    assert np.isfinite(e.values).all() and np.isfinite(e.prediction).all()
    assert e.max_relative_residual < 1e-5
    exact = np.zeros((3, N))
    for i, row in enumerate(x):
        for b in background:
            game = run_ort(model, {"x": _coalitions(row, b)})["y"].astype(np.float64)
            exact[i] += _exact_shapley(game, N)[:, 0] / len(background)
    values = np.asarray(e.values, np.float64).reshape(exact.shape)
    assert np.abs(values - exact).max() / np.abs(exact).max() < 1e-6
    assert values[0, 0] == 0


def test_nan_reaching_a_rule_that_needs_finite_values_is_refused() -> None:
    """Scaler is linear: its Jacobian is not the step of a missing value that it keeps as NaN."""
    model = _pipeline([_scaler("x", "xs")], "xs")
    x = np.zeros((2, N), np.float32)
    x[1, 2] = np.nan
    explainer = onnxshap.Explainer(onnxshap.load(model), np.ones((3, N), np.float32))
    with pytest.raises(onnxshap.InputError, match=r"contains NaN in row\(s\) \[1\].*Scaler node") as info:
        explainer.explain(x)
    assert "Impute" in str(info.value)
    with pytest.raises(onnxshap.InputError, match=r"background.*contains NaN in row\(s\) \[1\]"):
        onnxshap.Explainer(onnxshap.load(model), x)


def test_inf_is_still_refused() -> None:
    model = _pipeline([], "x")
    x = np.zeros((2, N), np.float32)
    x[0, 1] = np.inf
    with pytest.raises(onnxshap.InputError, match="NaN or Inf"):
        onnxshap.Explainer(onnxshap.load(model), np.ones((3, N), np.float32)).explain(x)


def test_pair_difference_reads_a_missing_value_as_one_step() -> None:
    nan = np.float32(np.nan)
    x = np.array([1.5, nan, 2.0, nan, np.inf], np.float32)
    r = np.array([0.5, 3.0, nan, nan, np.inf], np.float32)
    np.testing.assert_array_equal(np.asarray(pair_difference(x, r)), [1.0, 1.0, 1.0, 0.0, 0.0])
