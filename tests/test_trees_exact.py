"""The "tree_exact" rule for tree ensembles: the exact Shapley value of the outputs after the post
transform, per (sample, reference) pair, against brute force over all 2^n coalitions with onnxruntime
as the game; DeepSHAP's chain (the default rule) on the same models for comparison; the cap and the
refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxshap
from onnxshap.ops import trees as T
from tests.helpers import run_ort
from tests.test_trees import _coalitions, _exact_shapley, _forest, _inputs, classifier, regressor, tree_ensemble_v5

N_FEATURES = 6
EXACT = "tree_exact"


def _models() -> dict[str, tuple[onnx.ModelProto, str, str]]:
    """name -> (model, op type, explained output): small ensembles on 6 features."""
    return {
        "logistic": (
            classifier(_forest(31, 4, 4, N_FEATURES), N_FEATURES, [0, 1], post="LOGISTIC", base=[0.2]),
            "TreeEnsembleClassifier",
            "scores",
        ),
        "softmax": (
            classifier(
                _forest(30, 4, 4, N_FEATURES, n_targets=3), N_FEATURES, [0, 1, 2], post="SOFTMAX", base=[0.1, 0.0, -0.1]
            ),
            "TreeEnsembleClassifier",
            "scores",
        ),
        "max": (regressor(_forest(21, 3, 3, N_FEATURES), N_FEATURES, 1, aggregate="MAX"), "TreeEnsembleRegressor", "y"),
        "v5-min": (
            tree_ensemble_v5(
                _forest(5, 4, 4, N_FEATURES, n_targets=2, one_target_per_leaf=True), N_FEATURES, 2, aggregate=2
            ),
            "TreeEnsemble",
            "y",
        ),
    }


def _brute_force(model: onnx.ModelProto, out: str, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Interventional Shapley values [B, C, K]: per pair, all 2^C coalitions through onnxruntime, averaged."""
    exact = []
    for row in x:
        games = [run_ort(model, {"x": _coalitions(row, b)})[out].astype(np.float64) for b in background]
        exact.append(np.mean([_exact_shapley(g.reshape(len(g), -1), N_FEATURES) for g in games], axis=0))
    return np.asarray(exact)


def _relative_error(e: onnxshap.Explanation, exact: np.ndarray) -> float:
    values = np.asarray(e.values, np.float64).reshape(exact.shape)
    return float(np.abs(values - exact).max() / np.abs(exact).max())


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return _inputs(rng, 3, N_FEATURES, nan=0.0), _inputs(rng, 8, N_FEATURES, nan=0.0)


@pytest.mark.parametrize("name", ["logistic", "softmax", "max", "v5-min"])
def test_exact_rule_is_the_exact_shapley_value(name: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    model, op, out = _models()[name]
    x, background = data
    exact = _brute_force(model, out, x, background)
    e = onnxshap.Explainer(onnxshap.load(model), background, outputs=[out], rules={op: EXACT}).explain(x)
    assert e.max_relative_residual < 1e-5
    error = _relative_error(e, exact)
    print(f"\n{name}: tree_exact max |phi - phi_exact| / max |phi_exact| = {error:.2e}")
    assert error < 1e-6, error


@pytest.mark.parametrize("name", ["logistic", "softmax"])
def test_default_chain_is_not_exact_on_probabilities(name: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    """What the exact rule improves on: DeepSHAP's chain through the post transform (complete, not exact)."""
    model, _, out = _models()[name]
    x, background = data
    exact = _brute_force(model, out, x, background)
    e = onnxshap.Explainer(onnxshap.load(model), background, outputs=[out]).explain(x)
    assert e.max_relative_residual < 1e-5
    error = _relative_error(e, exact)
    print(f"\n{name}: chain max |phi - phi_exact| / max |phi_exact| = {error:.2e}")
    assert error > 1e-2, error


def test_exact_rule_with_missing_values(rng: np.random.Generator) -> None:
    """NaN on either side routes by the trees' missing-value directions in every coalition."""
    model, op, out = _models()["logistic"]
    x, background = _inputs(rng, 2, N_FEATURES, nan=0.3), _inputs(rng, 4, N_FEATURES, nan=0.3)
    assert np.isnan(x).any() and np.isnan(background).any()
    exact = _brute_force(model, out, x, background)
    e = onnxshap.Explainer(onnxshap.load(model), background, outputs=[out], rules={op: EXACT}).explain(x)
    assert np.isfinite(e.values).all()
    assert e.max_relative_residual < 1e-5
    assert _relative_error(e, exact) < 1e-6


def test_exact_rule_refuses_above_the_cap(monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray]) -> None:
    model, op, out = _models()["logistic"]
    monkeypatch.setattr(T, "EXACT_MAX_FEATURES", 3)
    x, background = data
    explainer = onnxshap.Explainer(onnxshap.load(model), background, outputs=[out], rules={op: EXACT})
    with pytest.raises(onnxshap.UnsupportedOpError, match=r"tests 6 features, above the cap of 3") as info:
        explainer.explain(x)
    assert op in str(info.value) and "default rule" in str(info.value)


def test_exact_rule_is_for_tree_ensembles_only() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnxshap.UnsupportedOpError, match="offered only by TreeEnsemble"):
        explainer = onnxshap.Explainer(onnxshap.load(model), np.zeros((2, 3), np.float32), rules={"Relu": EXACT})
        explainer.explain(np.ones((1, 3), np.float32))
