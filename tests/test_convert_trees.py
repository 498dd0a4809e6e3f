"""Tree models converted in memory and from files, then explained: scikit-learn (skl2onnx), XGBoost
and LightGBM (onnxmltools), and XGBoost and LightGBM inside scikit-learn pipelines (skl2onnx calling
onnxmltools' converters; their values checked against brute force over all coalitions).

Each test needs its framework and exporter (`pytest.importorskip`); without them only the
dispatch and missing-dependency tests run. The models have a few shallow trees, so each test takes
seconds. The attributions are compared with shap's TreeExplainer (interventional, on the same
background) where shap is installed, and always with completeness and the framework's predictions.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import onnxshap
from onnxshap._convert import convert_file, convert_object, framework_of
from onnxshap._errors import ConversionError, MissingDependencyError
from tests.helpers import interventional_shapley

N_FEATURES = 5


def _need_sklearn() -> None:
    pytest.importorskip("sklearn", reason="needs scikit-learn (the onnxshap[sklearn] extra)")
    pytest.importorskip("skl2onnx", reason="needs skl2onnx (the onnxshap[sklearn] extra)")


def _need(library: str) -> Any:
    module = pytest.importorskip(library, reason=f"needs {library} (the onnxshap[boosting] extra)")
    pytest.importorskip("onnxmltools", reason="needs onnxmltools (the onnxshap[boosting] extra)")
    return module


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x float32 (200, 5), a regression target, a 3-class target): feature 4 is unused."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, N_FEATURES)).astype(np.float32)
    y = 2 * x[:, 0] + x[:, 1] ** 2 - x[:, 2] * x[:, 3]
    return x, y, np.digitize(y, [0.0, 2.0])


def _sklearn_model(kind: str) -> Any:
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
    )
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, classes = _data()
    if kind == "gbr":
        return GradientBoostingRegressor(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    if kind == "gbc":
        gbc = GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=0)
        return gbc.fit(x, classes)
    if kind == "rfc":
        rfc = RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0)
        return rfc.fit(x, classes > 0)
    gbr = GradientBoostingRegressor(n_estimators=5, max_depth=3, random_state=0)
    return Pipeline([("scale", StandardScaler()), ("gbr", gbr)]).fit(x, y)


def _boosting_model(kind: str) -> Any:
    x, y, classes = _data()
    if kind.startswith("xgb"):
        xgboost = _need("xgboost")
        if kind == "xgb_regressor":
            return xgboost.XGBRegressor(n_estimators=4, max_depth=3).fit(x, y)
        return xgboost.XGBClassifier(n_estimators=3, max_depth=3).fit(x, classes)
    lightgbm = _need("lightgbm")
    if kind == "lgbm_regressor":
        return lightgbm.LGBMRegressor(n_estimators=4, num_leaves=7, verbose=-1).fit(x, y)
    # Integer classes (boolean ones: test_lightgbm_with_boolean_labels_explains).
    binary = (classes > 0).astype(int)
    return lightgbm.LGBMClassifier(n_estimators=3, num_leaves=7, verbose=-1).fit(x, binary)


def _framework_output(model: Any, x: np.ndarray) -> np.ndarray:
    """(n, outputs): the probabilities of a classifier, the prediction of a regressor."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)
    return model.predict(x).reshape(len(x), 1)


def _check_explanation(model: Any, explainer: onnxshap.Explainer, x: np.ndarray) -> onnxshap.Explanation:
    """The export reproduces the framework, and the attributions add up to its output."""
    report = explainer.conversion
    assert report.ok and report.input_origin == "sample"
    assert report.max_abs_diff < 1e-5, report.summary()
    e = explainer.explain(x)
    want = _framework_output(model, x)
    np.testing.assert_allclose(e.prediction, want, rtol=1e-5, atol=1e-6)
    total = e.values.sum(axis=1)
    np.testing.assert_allclose(total, e.prediction - e.base_values, rtol=1e-5, atol=1e-6)
    return e


def _check_against_shap(model: Any, e: onnxshap.Explanation, x: np.ndarray, background: np.ndarray) -> None:
    """A regressor's values equal shap's interventional TreeSHAP on the same background."""
    shap = pytest.importorskip("shap", reason="compares with shap's TreeExplainer")
    tree_model, rows, base = model, x, background
    if hasattr(model, "steps"):  # a pipeline: the trees see the scaled features
        scaler, tree_model = model[:-1], model[-1]
        rows, base = scaler.transform(x), scaler.transform(background)
    tree = shap.TreeExplainer(tree_model, data=base, feature_perturbation="interventional")
    want = tree.shap_values(rows)
    # The scaler is one affine map per feature, so Shapley values on the raw features are the same.
    np.testing.assert_allclose(e.values[..., 0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["gbr", "gbc", "rfc", "pipeline"])
def test_sklearn_tree_models_explain_in_memory(kind: str) -> None:
    _need_sklearn()
    model = _sklearn_model(kind)
    x, _, _ = _data()
    explainer = onnxshap.Explainer(model, x[:30], sample=x[:16])
    assert framework_of(model) == "sklearn"
    e = _check_explanation(model, explainer, x[100:104])
    # Feature 4 is not in the target: a model that splits on it hardly does.
    assert np.abs(e.values[:, 4]).max() <= np.abs(e.values[:, :4]).max()
    if kind in ("gbr", "pipeline"):
        _check_against_shap(model, e, x[100:104], x[:30])


@pytest.mark.parametrize("kind", ["xgb_regressor", "xgb_classifier", "lgbm_regressor", "lgbm_classifier"])
def test_boosting_models_explain_in_memory(kind: str) -> None:
    model = _boosting_model(kind)
    x, _, _ = _data()
    explainer = onnxshap.Explainer(model, x[:30], sample=x[:16])
    assert framework_of(model) == ("xgboost" if kind.startswith("xgb") else "lightgbm")
    assert "onnxmltools" in explainer.conversion.exporter
    e = _check_explanation(model, explainer, x[100:104])
    if kind.endswith("regressor"):
        _check_against_shap(model, e, x[100:104], x[:30])


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_boosters_convert_like_their_wrappers(library: str) -> None:
    """A raw Booster (what a model file loads as) predicts P(class 1) only; the export has both
    columns, as the wrapper's."""
    model = _boosting_model("xgb_classifier" if library == "xgboost" else "lgbm_classifier")
    booster = model.get_booster() if library == "xgboost" else model.booster_
    x, _, _ = _data()
    wrapped = onnxshap.convert(model, sample=x[:16])
    raw = onnxshap.convert(booster, sample=x[:16])
    assert framework_of(booster) == library and raw.conversion.ok
    assert [o.name for o in raw.conversion.outputs] == ["probabilities", "label"]
    feeds = {"x": x[:16]}
    want = wrapped.run(feeds)["probabilities"]
    np.testing.assert_allclose(raw.run(feeds)["probabilities"], want, atol=1e-7)


def test_sklearn_pipeline_file_converts_with_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need_sklearn()
    import joblib

    from onnxshap import cli

    path = tmp_path / "pipeline.joblib"
    joblib.dump(_sklearn_model("pipeline"), path)
    with pytest.raises(ConversionError, match="--trust-pickle"):
        convert_file(path)
    proto, report = convert_file(path, trust_pickle=True)
    assert report.ok and report.input_origin == "random"
    assert report.inputs["x"] == ((8, N_FEATURES), "float32")
    assert "TreeEnsembleRegressor" in {n.op_type for n in proto.graph.node}
    out = tmp_path / "pipeline.onnx"
    assert cli.main(["convert", str(path), "--trust-pickle", "-o", str(out)]) == 0
    assert "ok" in capsys.readouterr().out and onnxshap.load(str(out)).inputs[0].name == "x"


def _boosting_pipeline(kind: str) -> Any:
    """A scikit-learn pipeline ending in a booster: StandardScaler -> XGBClassifier (binary), or a
    ColumnTransformer (scaler on columns 0-1, the others passed through) -> LGBMRegressor."""
    _need_sklearn()
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, classes = _data()
    if kind == "xgb_classifier":
        xgboost = _need("xgboost")
        model = xgboost.XGBClassifier(n_estimators=3, max_depth=3, n_jobs=1)
        return make_pipeline(StandardScaler(), model).fit(x, (classes > 0).astype(int))
    lightgbm = _need("lightgbm")
    columns = ColumnTransformer([("scale", StandardScaler(), [0, 1]), ("keep", "passthrough", [2, 3, 4])])
    model = lightgbm.LGBMRegressor(n_estimators=4, num_leaves=7, verbose=-1, n_jobs=1)
    return make_pipeline(columns, model).fit(x, y)


def _margin_chain(pipeline: Any, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """P(class 1) of a binary booster behind elementwise preprocessing, per (sample, reference) pair:
    the margin's exact Shapley values times the logistic's secant, averaged over the background (n, features)."""

    def margin(rows: np.ndarray) -> np.ndarray:
        return np.asarray(pipeline.predict(rows, output_margin=True), np.float64)

    m_x, m_bg = margin(x), margin(background)
    phi = np.stack([interventional_shapley(margin, x, background[b : b + 1])[..., 0] for b in range(len(background))])
    p_x, p_bg = 1 / (1 + np.exp(-m_x)), 1 / (1 + np.exp(-m_bg))
    dm = m_x[None, :] - m_bg[:, None]
    # equal margins (the same leaves): the logistic's derivative there, the rescale rule's limit
    slope = np.where(dm != 0, (p_x[None, :] - p_bg[:, None]) / np.where(dm != 0, dm, 1), p_x * (1 - p_x))
    return (phi * slope[..., None]).mean(axis=0)


@pytest.mark.parametrize("kind", ["xgb_classifier", "lgbm_regressor"])
def test_boosters_inside_a_pipeline_explain_in_memory(kind: str) -> None:
    """skl2onnx converts the booster with onnxmltools' converter; the values are those of brute force
    (regressor: the exact interventional Shapley values; classifier: the margin's, per pair, through
    the logistic)."""
    model = _boosting_pipeline(kind)
    x, _, _ = _data()
    samples, background = x[100:103], x[:8]
    explainer = onnxshap.Explainer(model, background, sample=x[:16])
    assert framework_of(model) == "sklearn"
    assert "onnxmltools" in explainer.conversion.exporter, explainer.conversion.exporter
    e = _check_explanation(model, explainer, samples)
    if kind == "lgbm_regressor":
        want = interventional_shapley(model.predict, samples.astype(np.float64), background.astype(np.float64))
        np.testing.assert_allclose(e.values, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    else:
        want = _margin_chain(model, samples.astype(np.float64), background.astype(np.float64))
        np.testing.assert_allclose(e.values[..., 1], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        np.testing.assert_allclose(e.values[..., 0], -want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_scaled_training_rows_stay_on_their_side_of_xgboost_splits() -> None:
    """XGBoost splits at training values: a scaler computed in float32 (skl2onnx's Scaler) moves 6 of these
    200 training rows across a split; the export divides in float64, as scikit-learn does."""
    _need_sklearn()
    xgboost = _need("xgboost")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _ = _data()
    model = make_pipeline(StandardScaler(), xgboost.XGBRegressor(n_estimators=10, max_depth=4, n_jobs=1)).fit(x, y)
    proto, report = convert_object(model, x)
    assert report.ok, report.summary()
    assert report.max_abs_diff < 1e-5
    ops = [n.op_type for n in proto.graph.node]
    assert "Div" in ops and "Scaler" not in ops, ops


def test_booster_pipeline_file_converts_with_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import joblib

    from onnxshap import cli

    model = _boosting_pipeline("xgb_classifier")
    path = tmp_path / "pipeline.joblib"
    joblib.dump(model, path)
    proto, report = convert_file(path, trust_pickle=True)
    assert report.ok and report.input_origin == "random", report.summary()
    assert "TreeEnsembleClassifier" in {n.op_type for n in proto.graph.node}
    out = tmp_path / "pipeline.onnx"
    assert cli.main(["convert", str(path), "--trust-pickle", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "ok" in printed.out and "Traceback" not in printed.err
    x, _, _ = _data()
    got = onnxshap.load(str(out)).run({"x": x[:8]})["probabilities"]
    np.testing.assert_allclose(got, model.predict_proba(x[:8]), rtol=1e-5, atol=1e-6)


def test_lightgbm_with_boolean_labels_explains() -> None:
    """onnxmltools has no boolean labels: the export's label output gives 0 / 1 for False / True."""
    lightgbm = _need("lightgbm")
    x, _, classes = _data()
    y = classes > 0
    model = lightgbm.LGBMClassifier(n_estimators=3, num_leaves=7, verbose=-1, n_jobs=1).fit(x, y)
    explainer = onnxshap.Explainer(model, x[:8], sample=x[:16])
    assert any("boolean class labels" in n for n in explainer.conversion.notes)
    label = explainer.model.run({"x": x[:16]})["label"]
    np.testing.assert_array_equal(label, model.predict(x[:16]).astype(np.int64))
    _check_explanation(model, explainer, x[100:103])


def test_lightgbm_with_boolean_labels_converts_inside_a_pipeline() -> None:
    _need_sklearn()
    lightgbm = _need("lightgbm")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, _, classes = _data()
    booster = lightgbm.LGBMClassifier(n_estimators=3, num_leaves=7, verbose=-1, n_jobs=1)
    model = make_pipeline(StandardScaler(), booster).fit(x, classes > 0)
    proto, report = convert_object(model, x[:16])
    assert report.ok and {o.name for o in report.outputs} == {"label", "probabilities"}, report.summary()
    got = onnxshap.load(proto).run({"x": x[:16]})
    np.testing.assert_array_equal(got["label"], model.predict(x[:16]).astype(np.int64))
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x[:16]), rtol=1e-5, atol=1e-6)


def test_booster_in_a_pipeline_without_its_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _need_sklearn()
    from sklearn.pipeline import Pipeline

    monkeypatch.setitem(sys.modules, "xgboost", None)  # `import xgboost` raises ImportError
    pipeline = Pipeline([("model", _fake_model("xgboost.sklearn"))])
    with pytest.raises(MissingDependencyError, match=r"'xgboost'.*pip install 'onnxshap\[boosting\]'"):
        convert_object(pipeline, np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("suffix", [".json", ".ubj", ".txt", ".joblib"])
def test_boosting_model_files_convert(suffix: str, tmp_path: Path) -> None:
    """XGBoost's .json/.ubj and LightGBM's .txt are data (no trust needed); pickles need trust."""
    lightgbm_file = suffix in (".txt", ".joblib")
    model = _boosting_model("lgbm_regressor" if lightgbm_file else "xgb_regressor")
    path = tmp_path / f"model{suffix}"
    if suffix == ".joblib":
        import joblib

        joblib.dump(model, path)
    elif suffix == ".txt":
        model.booster_.save_model(str(path))
    else:
        model.save_model(str(path))
    proto, report = convert_file(path, trust_pickle=suffix == ".joblib")
    assert report.ok and report.input_origin == "random", report.summary()
    assert report.max_abs_diff < 1e-5 and [o.name for o in report.outputs] == ["variable"]
    x, _, _ = _data()
    got = onnxshap.load(proto).run({"x": x[:8]})["variable"][:, 0]
    np.testing.assert_allclose(got, model.predict(x[:8]), rtol=1e-5, atol=1e-6)


def test_input_shape_must_match_the_boosters_features(tmp_path: Path) -> None:
    model = _boosting_model("xgb_regressor")
    path = tmp_path / "model.json"
    model.save_model(str(path))
    with pytest.raises(ConversionError, match=f"fitted on {N_FEATURES} features, not 3"):
        convert_file(path, input_shape=(3,))


def _fake_model(module: str) -> Any:
    """An object whose class claims to come from `module`: dispatch reads the class only."""
    return type("Booster", (), {"__module__": module})()


def test_boosting_models_dispatch_without_importing_their_library() -> None:
    assert framework_of(_fake_model("xgboost.core")) == "xgboost"
    assert framework_of(_fake_model("lightgbm.basic")) == "lightgbm"
    assert framework_of(_fake_model("catboost.core")) is None


@pytest.mark.parametrize("missing", ["xgboost", "onnxmltools"])
def test_missing_boosting_package_names_the_extra(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` raises ImportError
    if missing == "onnxmltools":  # xgboost is imported first: make it importable, installed or not
        monkeypatch.setitem(sys.modules, "xgboost", types.ModuleType("xgboost"))
    extra = r"pip install 'onnxshap\[boosting\]'"
    with pytest.raises(MissingDependencyError, match=rf"'{missing}'.*{extra}"):
        onnxshap.convert(_fake_model("xgboost.sklearn"), sample=np.zeros((2, 3), np.float32))
