"""Export small tree ensembles (scikit-learn, XGBoost, LightGBM) to ONNX, with shap reference values.

Run from the repository root with the tree environment (CPU only; these pins worked):

    python3 -m venv /work/treeenv
    /work/treeenv/bin/pip install numpy==2.4.6 scikit-learn==1.9.1 skl2onnx==1.20.0 onnxmltools==1.16.0 \\
        xgboost-cpu==3.2.0 lightgbm==4.7.0 shap==0.51.0 onnx==1.23.2 onnxruntime==1.32.0
    /work/treeenv/bin/python models/export_trees.py

(`xgboost-cpu`, not `xgboost`: the latter pulls the CUDA runtime packages.)

Writes models/trees_<name>.onnx ("family": "trees"): scikit-learn models through skl2onnx (target
opset {'': 17, 'ai.onnx.ml': 3}; skl2onnx lowers the ml opset to the lowest one the nodes need),
XGBoost and LightGBM models through onnxmltools (target opset 15, its highest), XGBoost and
LightGBM inside scikit-learn pipelines through skl2onnx with onnxmltools' converters (registered as
onnxshap's converter registers them: `onnxshap._convert._boosting._register_with_skl2onnx`). Every model is
checked (strict shape inference + full checker), run in onnxruntime on a seeded batch of 3 and
compared with the framework's own predictions, and merged into models/manifest.json; its entry adds
"tree_ops" (op -> since-version of each tree node, e.g. {"TreeEnsembleRegressor": 1}),
"post_transform", "n_trees", "n_features" and "references" (the .npz below). Classifiers have
zipmap=False (one, `trees_sk_rf_cls3_zipmap`, keeps skl2onnx's default ZipMap).

Writes models/data/trees_<name>.npz, the references tests/test_trees_zoo.py checks onnxshap
against (so that CI needs no tree framework):

- `x` (4 samples) and `background` (16 rows), float32, as fed to the graph input `x`;
- `out_names`: the graph's float outputs; per output o: `fx__o`, `fbg__o` (onnxruntime's values) and
  `bf__o` (4, n_features, k): brute-force interventional Shapley values on the graph's input
  features, the game v(S) = mean_b f(x_S, b_rest) over the background evaluated with onnxruntime on
  all 2^n coalitions. This is the exact interventional Shapley value of the exposed output;
- `shap_raw` (4, n_tree_features, k), `shap_raw_base` (k,), `shap_raw_output` (which quantity):
  shap.TreeExplainer(model, data=background, feature_perturbation="interventional") on its raw
  output: the regression value, the probabilities of a random forest classifier, the margin
  (log-odds; per-class margins for LightGBM multiclass) of a boosted classifier;
- boosted classifiers: `shap_prob` (4, n, k), shap's model_output="probability" values (per pair,
  the margin's values through the logistic: equal to `chain__probabilities`, not the exact
  Shapley values of the probability, which are `bf__probabilities`), and `margin_x`, `margin_bg` (the
  framework's margins); binary ones also `chain__probabilities`: per (sample, reference) pair the
  margin's exact Shapley values times the logistic's secant (p(x) - p(r)) / (m(x) - m(r)), averaged
  over the background: what an exact rule on the margin followed by a rescale of the logistic gives;
- pipelines: shap runs on the tree's input (the transformed features): `shap_raw` is over those,
  `groups` maps each transformed feature to its raw column, and `bf__o` is over the raw columns;
  for an elementwise transform (Imputer, Scaler) the two agree feature by feature, for the one-hot
  pipeline `shap_raw` summed over each column's channels is what a chain of per-pair rules gives
  (the one-hot channels are the tree's players) while `bf__o` treats the column as one player;
- pipelines whose preprocessing mixes the columns (PCA, Normalizer): no `groups` but `mixing` (the
  step's class name, also in the manifest entry); there the chain computes G-DeepSHAP, not `bf__o` (docs/tree-pipelines.md
  gives and tests/test_trees_zoo.py checks the difference). PCA also has `gdeep__variable` (4, n, 1):
  per background row shap's exact values on the components, carried back to the columns by the
  linear rule phi_i = sum_c phi_c W_ci (x_i - b_i) / (z_c(x) - z_c(b)), averaged: G-DeepSHAP from
  shap, which the chain must reproduce.

The script prints, per model, the reference's completeness (shap values summed vs f(x) - mean
f(background)) and the largest difference of shap's values to the brute-force ones. An export
failure is printed and recorded in the FAILURES summary (exit status 1); the other models are still
written. `--out DIR` writes the .onnx files, the manifest and data/ there instead; `--only NAME ...`
exports only the models named.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    # keep any hash-order-dependent naming in the converters byte-stable
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import argparse
import itertools
import math
import warnings
from collections.abc import Callable

import lightgbm
import numpy as np
import onnx
import onnxmltools
import shap
import skl2onnx
import sklearn
import xgboost
from onnxmltools.convert.common.data_types import FloatTensorType as MLFloat
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeRegressor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

# The converters onnxshap registers with skl2onnx for XGBoost and LightGBM inside pipelines.
from onnxshap._convert._boosting import _register_with_skl2onnx

warnings.filterwarnings("ignore")

FAMILY = "trees"
N_FEATURES = 6
N_SAMPLES, N_BACKGROUND = 4, 16
SKL_OPSET = {"": 17, "ai.onnx.ml": 3}
ML_OPSET = 15  # onnxmltools' highest
SKL_FRAMEWORK = f"scikit-learn {sklearn.__version__}"
SKL_CONVERTER = f"skl2onnx {skl2onnx.__version__}, target_opset {SKL_OPSET}"
SKL_ML_CONVERTER = f"{SKL_CONVERTER}, with onnxmltools {onnxmltools.__version__}'s converter for the boosted trees"
ML_CONVERTER = f"onnxmltools {onnxmltools.__version__}, target_opset {ML_OPSET}"
SHAP = f"shap {shap.__version__}"
TREE_OPS = ("TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble")
INPUT_RANGE = "normal (the one-hot pipeline: column 4 holds category codes 0..3 as floats)"


# ----------------------------------------------------------------------------- data
def features(g: np.random.Generator, n: int, n_features: int = N_FEATURES) -> np.ndarray:
    """float32 standard normals rounded to 1/64, so float32 and float64 see the same values."""
    return np.round(g.standard_normal((n, n_features)) * 64).astype(np.float32) / 64


def regression(g: np.random.Generator, x: np.ndarray) -> np.ndarray:
    return (
        1.5 * x[:, 0]
        - x[:, 1] * x[:, 2]
        + np.sin(2 * x[:, 3])
        + 0.5 * (x[:, 4] > 0.3)
        + 0.1 * g.standard_normal(len(x))
    )


def binary(g: np.random.Generator, x: np.ndarray) -> np.ndarray:
    return (x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + 0.5 * g.standard_normal(len(x)) > 0).astype(np.int64)


def three_classes(g: np.random.Generator, x: np.ndarray) -> np.ndarray:
    s = np.stack([x[:, 0] + x[:, 1], x[:, 2] - x[:, 3], 0.8 * x[:, 4] * x[:, 5]], 1)
    return np.argmax(s + 0.3 * g.standard_normal(s.shape), 1).astype(np.int64)


def with_category(g: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column 4 replaced by category codes 0..3 (as floats); a target that depends on the category."""
    x = x[:, :5].copy()
    x[:, 4] = g.integers(0, 4, len(x)).astype(np.float32)
    effect = np.array([0.0, 1.0, -1.0, 2.0])[x[:, 4].astype(int)]
    y = x[:, 0] + effect * (x[:, 1] > 0) + 0.5 * x[:, 2] * x[:, 3] + 0.1 * g.standard_normal(len(x))
    return x, y


# ----------------------------------------------------------------------------- conversion
def skl_to_onnx(model, name: str, n_features: int, options=None) -> None:
    # name= fixes the graph name (skl2onnx otherwise uses a random uuid4 hex)
    onx = convert_sklearn(
        model,
        name=name,
        initial_types=[("x", FloatTensorType([None, n_features]))],
        target_opset=SKL_OPSET,
        options=options,
    )
    onnx.save(onx, C.model_path(name))


def ml_to_onnx(model, name: str, n_features: int, **kwargs) -> None:
    convert = onnxmltools.convert_xgboost if isinstance(model, xgboost.XGBModel) else onnxmltools.convert_lightgbm
    onx = convert(model, name=name, initial_types=[("x", MLFloat([None, n_features]))], target_opset=ML_OPSET, **kwargs)
    onnx.save(onx, C.model_path(name))


def tree_nodes(path: str) -> tuple[dict[str, int], dict[str, str], int]:
    """({tree op: its since-version}, {tree op: post_transform}, number of trees) of the main graph."""
    model = onnx.load(path)
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    versions, transforms, n_trees = {}, {}, 0
    for node in model.graph.node:
        if node.op_type not in TREE_OPS:
            continue
        schema = onnx.defs.get_schema(node.op_type, max_inclusive_version=opsets[node.domain], domain=node.domain)
        versions[node.op_type] = schema.since_version
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        transforms[node.op_type] = attrs.get("post_transform", b"NONE").decode()
        ids = attrs.get("nodes_treeids", attrs.get("tree_roots"))
        n_trees += len(set(ids)) if "nodes_treeids" in attrs else len(ids)
    return versions, transforms, n_trees


# ----------------------------------------------------------------------------- references
def _coalitions(n: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=n)), bool)  # (2^n, n)


def brute_force(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Interventional Shapley values (len(x), n, k) of v(S) = mean_b f(x_S, b_rest), exactly over 2^n coalitions.

    `f` maps (m, n) float32 rows to (m, k) outputs; it is called once on every (sample, coalition,
    background row) combination.
    """
    n = x.shape[1]
    masks = _coalitions(n)
    z = np.where(masks[None, :, None, :], x[:, None, None, :], bg[None, None, :, :])  # (s, 2^n, b, n)
    out = np.asarray(f(z.reshape(-1, n).astype(np.float32)), np.float64)
    v = out.reshape(len(x), len(masks), len(bg), -1).mean(axis=2)  # (s, 2^n, k)
    index = {tuple(m): i for i, m in enumerate(masks)}
    phi = np.zeros((len(x), n, v.shape[-1]))
    for i in range(n):
        for j, m in enumerate(masks):
            if m[i]:
                continue
            size = int(m.sum())
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            with_i = m.copy()
            with_i[i] = True
            phi[:, i] += w * (v[:, index[tuple(with_i)]] - v[:, j])
    return phi


def pick_references(
    framework: Callable[[np.ndarray], np.ndarray], onnx_path: str, x: np.ndarray, bg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The first N_SAMPLES rows of `x` and N_BACKGROUND of `bg` on whose coalition points onnxruntime and the
    framework agree.

    A float64 transform (StandardScaler) and onnxruntime's float32 one can fall on both sides of a
    threshold at a mixed point (x_S, b_rest); such a pair would make shap's values (framework) and
    the brute force (onnxruntime) answer different games, so its sample or row is skipped.
    """
    n = x.shape[1]
    masks = _coalitions(n)
    z = np.where(masks[None, :, None, :], x[:, None, None, :], bg[None, None, :, :]).reshape(-1, n)
    ours = C.ort_run(onnx_path, {"x": z.astype(np.float32)})
    got = np.asarray(ours[-1] if len(ours) > 1 else ours[0], np.float64).reshape(len(z), -1)
    want = np.asarray(framework(z), np.float64).reshape(len(z), -1)
    bad = ~np.isclose(got, want, rtol=C.RTOL, atol=C.ATOL).all(axis=1)
    bad = bad.reshape(len(x), len(masks), len(bg)).any(axis=1)  # (samples, rows)
    samples: list[int] = []
    for s in range(len(x)):
        if (~bad[samples + [s]].any(axis=0)).sum() >= N_BACKGROUND:
            samples.append(s)
        if len(samples) == N_SAMPLES:
            break
    rows = np.flatnonzero(~bad[samples].any(axis=0))[:N_BACKGROUND]
    assert len(samples) == N_SAMPLES and len(rows) == N_BACKGROUND, (samples, rows)
    if bad.any():
        print(
            f"  {os.path.basename(onnx_path)}: {int(bad.sum())} (sample, row) pairs where onnxruntime and the "
            f"framework disagree at a coalition point; kept samples {samples}"
        )
    return x[samples], bg[rows]


def per_pair_brute_force(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Shapley values (len(x), len(bg), n, k) of each single-reference game f(x_S, b_rest)."""
    return np.stack([brute_force(f, x, bg[b : b + 1]) for b in range(len(bg))], axis=1)


def _as_3d(values, k: int) -> np.ndarray:
    """shap's values as (samples, features, outputs)."""
    v = np.asarray(values, np.float64)
    if isinstance(values, list):
        v = np.stack([np.asarray(a, np.float64) for a in values], axis=-1)
    if v.ndim == 2:
        v = v[:, :, None]
    assert v.shape[-1] == k, (v.shape, k)
    return v


def shap_values(model, x: np.ndarray, bg: np.ndarray, model_output: str = "raw") -> tuple[np.ndarray, np.ndarray]:
    """(values (s, n, k), base (k,)) of shap's interventional TreeExplainer."""
    explainer = shap.TreeExplainer(
        model, data=bg.astype(np.float64), feature_perturbation="interventional", model_output=model_output
    )
    values = explainer.shap_values(x.astype(np.float64), check_additivity=False)
    base = np.atleast_1d(np.asarray(explainer.expected_value, np.float64))
    return _as_3d(values, len(base)), base


def write_references(name: str, x: np.ndarray, bg: np.ndarray, arrays: dict[str, np.ndarray]) -> str:
    path = os.path.join(C.OUT_DIR, "data", f"trees_{name.removeprefix('trees_')}.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx_path = C.model_path(name)
    model = onnx.load(onnx_path)
    floats = [
        o.name
        for o in model.graph.output
        if o.type.HasField("tensor_type") and o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ]
    data: dict[str, np.ndarray] = {"x": x, "background": bg, "out_names": np.array(floats)}
    order = [o.name for o in model.graph.output]

    def run(rows: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(order, C.ort_run(onnx_path, {"x": rows})))

    fx, fbg = run(x), run(bg)
    for o in floats:
        data[f"fx__{o}"] = fx[o]
        data[f"fbg__{o}"] = fbg[o]
        data[f"bf__{o}"] = brute_force(lambda rows, o=o: run(rows)[o].reshape(len(rows), -1), x, bg)
        gap = data[f"bf__{o}"].sum(axis=1) - (fx[o].reshape(len(x), -1) - fbg[o].reshape(len(bg), -1).mean(0))
        print(f"  {name}: brute force {o!r}: completeness max |sum - (f(x) - mean f(bg))| = {np.abs(gap).max():.3g}")
    data.update(arrays)
    agreement(name, data)
    np.savez_compressed(path, **data)
    print(f"  {name}: references -> {os.path.relpath(path, C.OUT_DIR)} ({os.path.getsize(path)} bytes)")
    return os.path.relpath(path, C.OUT_DIR)


def agreement(name: str, data: dict[str, np.ndarray]) -> None:
    """Print how far shap's values are from the brute-force ones where they answer the same question."""
    out = str(data["out_names"][-1])
    bf = data[f"bf__{out}"]
    raw, groups = data["shap_raw"], data.get("groups")
    if "gdeep__variable" in data:
        gap = np.abs(data["gdeep__variable"] - bf).max() / np.abs(bf).max()
        print(
            f"  {name}: G-DeepSHAP (shap per pair, carried by the linear rule) vs brute force: {gap:.3g} of max |phi|"
        )
    if groups is not None and str(data["shap_raw_output"]).startswith("variable"):
        summed = np.stack([raw[:, groups == c].sum(axis=1) for c in range(bf.shape[1])], axis=1)
        what = "one column each" if len(set(groups.tolist())) == len(groups) else "grouped (not expected equal)"
        print(
            f"  {name}: shap on transformed features, summed per raw column, vs brute force on raw columns "
            f"[{what}]: max diff {np.abs(summed - bf).max():.3g}"
        )
    elif str(data["shap_raw_output"]) in ("variable", "probabilities"):
        print(f"  {name}: shap raw vs brute force {out!r}: max diff {np.abs(raw - bf).max():.3g}")
    if "shap_prob" in data and bf.shape[-1] == 2:
        print(
            f"  {name}: shap probability vs brute force {out!r}[:, 1]: max diff "
            f"{np.abs(data['shap_prob'][..., 0] - bf[..., 1]).max():.3g}"
        )
    if "chain__probabilities" in data:
        chain = data["chain__probabilities"]
        print(
            f"  {name}: margin-then-logistic chain: completeness max gap "
            f"{np.abs(chain.sum(axis=1) - bf.sum(axis=1)).max():.3g}, differs from the exact probability "
            f"Shapley values by up to {np.abs(chain - bf).max():.3g}"
        )


def framework_outputs(model, kind: str, rows: np.ndarray) -> list[np.ndarray]:
    """The graph outputs as the framework predicts them at `rows`: kind "reg" [variable (n, 1)], "cls" [label,
    probabilities]."""
    if kind == "reg":
        return [model.predict(rows).reshape(-1, 1).astype(np.float32)]
    return [model.predict(rows).astype(np.int64), model.predict_proba(rows).astype(np.float32)]


def probability_references(
    name: str, tree, margin, x: np.ndarray, bg: np.ndarray, tx: np.ndarray, tbg: np.ndarray, p1: np.ndarray
) -> dict[str, np.ndarray]:
    """A binary classifier's `shap_prob*` (shap on the tree's input `tx`, `tbg`; `p1` = P(class 1) at x) and
    `chain_references` of `margin` on the raw rows `x`, `bg`."""
    prob, prob_base = shap_values(tree, tx, tbg, "probability")
    report_shap(name, prob, prob_base, p1, "probability of class 1")
    return {
        "shap_prob": prob,
        "shap_prob_base": prob_base,
        "shap_prob_output": np.array("probabilities[:, 1]"),
        **chain_references(margin, x, bg),
    }


def report_shap(name: str, values: np.ndarray, base: np.ndarray, f_x: np.ndarray, what: str) -> float:
    """Max |sum of shap values + base - f(x)| (shap's own completeness) for the printout."""
    gap = float(np.abs(values.sum(axis=1) + base - f_x.reshape(len(values), -1)).max())
    print(f"  {name}: shap {what}: completeness max |sum + base - f(x)| = {gap:.3g}")
    return gap


# ----------------------------------------------------------------------------- models
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="+", metavar="NAME", help="export only these models (default: all)")
    args = C.parse_args(__doc__, parser)
    run = C.Results()
    if args.only:
        attempt = run.attempt
        run.attempt = lambda name, fn: attempt(name, fn) if name in args.only else None  # type: ignore[method-assign]
    g = np.random.default_rng(0)
    x_train = features(g, 600)
    y_reg, y_bin, y_three = regression(g, x_train), binary(g, x_train), three_classes(g, x_train)
    x_cat, y_cat = with_category(g, x_train)
    x_check = features(np.random.default_rng(42), 3)
    ref = np.random.default_rng(7)
    # candidates for the reference samples and background (pick_references keeps the first clean ones)
    x_ref, bg_ref = features(ref, 2 * N_SAMPLES), features(ref, 2 * N_BACKGROUND)
    x_cat_ref, _ = with_category(np.random.default_rng(8), x_ref)
    bg_cat_ref, _ = with_category(np.random.default_rng(9), bg_ref)
    x_cat_check, _ = with_category(np.random.default_rng(43), x_check)

    def entry(
        name: str,
        model,
        diff: float,
        description: str,
        framework: str,
        converter: str,
        references: str | None,
        extra: dict | None = None,
    ) -> None:
        versions, transforms, n_trees = tree_nodes(C.model_path(name))
        run.entries[name] = C.describe(
            name,
            exporter="onnxmltools" if converter.startswith("onnxmltools") else "skl2onnx",
            framework=framework,
            converter=converter,
            max_abs_diff=diff,
            description=description,
            input_range=INPUT_RANGE if "onehot" in name else "normal",
            extra={
                "family": FAMILY,
                "tree_ops": versions,
                "post_transform": transforms,
                "n_trees": n_trees,
                "references": references,
                "reference_tool": SHAP,
                **(extra or {}),
            },
        )
        e = run.entries[name]
        print(f"  {name}: {e['file_size']} bytes, tree ops {versions} {transforms}, {n_trees} trees, ops {e['ops']}")
        assert e["file_size"] < 200_000, e["file_size"]

    # --- scikit-learn regressors
    def sk_regressor(name: str, model, description: str) -> None:
        model.fit(x_train, y_reg)
        skl_to_onnx(model, name, N_FEATURES)
        path = C.model_path(name)
        C.check_file(path)
        diff = C.compare(name, C.ort_run(path, {"x": x_check}), framework_outputs(model, "reg", x_check))
        x_s, bg_s = pick_references(model.predict, path, x_ref, bg_ref)
        values, base = shap_values(model, x_s, bg_s)
        report_shap(name, values, base, model.predict(x_s), "raw (value)")
        refs = write_references(
            name, x_s, bg_s, {"shap_raw": values, "shap_raw_base": base, "shap_raw_output": np.array("variable")}
        )
        entry(name, model, diff, description, SKL_FRAMEWORK, SKL_CONVERTER, refs)

    run.attempt(
        "trees_sk_dt_reg",
        lambda: sk_regressor(
            "trees_sk_dt_reg",
            DecisionTreeRegressor(max_depth=4, random_state=0),
            "DecisionTreeRegressor(max_depth=4), 6 features -> 1 target",
        ),
    )
    run.attempt(
        "trees_sk_gb_reg",
        lambda: sk_regressor(
            "trees_sk_gb_reg",
            GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0),
            "GradientBoostingRegressor(20 trees, max_depth=3), 6 features -> 1 target",
        ),
    )
    run.attempt(
        "trees_sk_rf_reg",
        lambda: sk_regressor(
            "trees_sk_rf_reg",
            RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0),
            "RandomForestRegressor(10 trees, max_depth=4), 6 features -> 1 target (mean of the trees)",
        ),
    )

    # --- scikit-learn classifiers
    def sk_classifier(name: str, model, y: np.ndarray, description: str, zipmap: bool = False) -> None:
        model.fit(x_train, y)
        skl_to_onnx(model, name, N_FEATURES, None if zipmap else {id(model): {"zipmap": False}})
        path = C.model_path(name)
        C.check_file(path)
        got = C.ort_run(path, {"x": x_check})
        if zipmap:
            got = [got[0], np.array([[d[c] for c in model.classes_] for d in got[1]], np.float32)]
        diff = C.compare(name, got, framework_outputs(model, "cls", x_check))
        if zipmap:  # the probabilities are a sequence of maps: nothing to reference
            entry(name, model, diff, description, SKL_FRAMEWORK, SKL_CONVERTER, None)
            return
        arrays: dict[str, np.ndarray] = {}
        x_s, bg_s = pick_references(model.predict_proba, path, x_ref, bg_ref)
        if isinstance(model, RandomForestClassifier):
            values, base = shap_values(model, x_s, bg_s)
            report_shap(name, values, base, model.predict_proba(x_s), "raw (probabilities)")
            arrays.update(shap_raw=values, shap_raw_base=base, shap_raw_output=np.array("probabilities"))
        else:  # binary gradient boosting: raw = the log-odds margin of class 1
            values, base = shap_values(model, x_s, bg_s)
            report_shap(name, values, base, model.decision_function(x_s), "raw (margin)")
            arrays.update(
                shap_raw=values,
                shap_raw_base=base,
                shap_raw_output=np.array("margin of class 1 (log-odds; not a graph output)"),
                **probability_references(
                    name, model, model.decision_function, x_s, bg_s, x_s, bg_s, model.predict_proba(x_s)[:, 1:]
                ),
            )
        refs = write_references(name, x_s, bg_s, arrays)
        entry(name, model, diff, description, SKL_FRAMEWORK, SKL_CONVERTER, refs)

    run.attempt(
        "trees_sk_gb_cls",
        lambda: sk_classifier(
            "trees_sk_gb_cls",
            GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0),
            y_bin,
            "GradientBoostingClassifier(20 trees, max_depth=2), 6 features, binary; label + probabilities "
            "(zipmap=False), the tree op applies LOGISTIC to the log-odds margin",
        ),
    )
    run.attempt(
        "trees_sk_rf_cls3",
        lambda: sk_classifier(
            "trees_sk_rf_cls3",
            RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0),
            y_three,
            "RandomForestClassifier(10 trees, max_depth=4), 6 features, 3 classes; label + probabilities "
            "(zipmap=False), the mean of the trees' class frequencies",
        ),
    )
    run.attempt(
        "trees_sk_rf_cls3_zipmap",
        lambda: sk_classifier(
            "trees_sk_rf_cls3_zipmap",
            RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0),
            y_three,
            "Same forest as trees_sk_rf_cls3 with skl2onnx's default ZipMap: probabilities are a sequence of "
            "{class: prob} maps (no references)",
            zipmap=True,
        ),
    )

    # --- scikit-learn pipelines
    def pipeline(
        name: str,
        model,
        x_fit,
        y,
        x_chk,
        x_s,
        bg_s,
        groups: np.ndarray | None,
        description: str,
        kind: str = "reg",
        framework: str = SKL_FRAMEWORK,
    ) -> None:
        """A pipeline ending in trees; `groups` maps each tree feature to its raw column (None: the
        preprocessing mixes the columns, and references["mixing"] names it). kind "cls": a binary
        booster (label + probabilities, zipmap=False), referenced like `booster`'s."""
        model.fit(x_fit, y)
        n = x_fit.shape[1]
        boosted = _register_with_skl2onnx(model) is not None
        skl_to_onnx(model, name, n, {id(model[-1]): {"zipmap": False}} if kind == "cls" else None)
        path = C.model_path(name)
        C.check_file(path)
        diff = C.compare(name, C.ort_run(path, {"x": x_chk}), framework_outputs(model, kind, x_chk))
        x_s, bg_s = pick_references(model.predict if kind == "reg" else model.predict_proba, path, x_s, bg_s)
        pre, tree = model[:-1], model[-1]

        def transform(rows: np.ndarray) -> np.ndarray:
            t = pre.transform(rows)
            return np.asarray(t.toarray() if hasattr(t, "toarray") else t)

        tx, tbg = transform(x_s), transform(bg_s)
        values, base = shap_values(tree, tx, tbg)
        arrays: dict[str, np.ndarray] = {"shap_raw": values, "shap_raw_base": base}
        if kind == "reg":
            report_shap(name, values, base, model.predict(x_s), "raw on the transformed features")
            arrays["shap_raw_output"] = np.array("variable (shap over the tree's input, the transformed features)")
        else:
            tree_margin = margins(tree)

            def margin(rows: np.ndarray) -> np.ndarray:
                return tree_margin(transform(rows))

            report_shap(name, values, base, margin(x_s), "raw (margin) on the transformed features")
            arrays.update(
                shap_raw_output=np.array("margin of class 1 over the transformed features (not a graph output)"),
                **probability_references(name, tree, margin, x_s, bg_s, tx, tbg, model.predict_proba(x_s)[:, 1:]),
            )
        if groups is not None:
            arrays["groups"] = groups
        else:
            arrays["mixing"] = np.array(type(pre[-1]).__name__)
            if isinstance(pre[-1], PCA):
                arrays["gdeep__variable"] = linear_chain(tree, pre[-1], x_s, bg_s)
        refs = write_references(name, x_s, bg_s, arrays)
        extra = {"n_tree_features": tx.shape[1], **({} if groups is not None else {"mixing": str(arrays["mixing"])})}
        entry(name, model, diff, description, framework, SKL_ML_CONVERTER if boosted else SKL_CONVERTER, refs, extra)

    run.attempt(
        "trees_sk_pipe_scaler_gb",
        lambda: pipeline(
            "trees_sk_pipe_scaler_gb",
            Pipeline(
                [
                    ("impute", SimpleImputer(strategy="mean")),
                    ("scale", StandardScaler()),
                    ("gb", GradientBoostingRegressor(n_estimators=15, max_depth=3, random_state=0)),
                ]
            ),
            x_train,
            y_reg,
            x_check,
            x_ref,
            bg_ref,
            np.arange(N_FEATURES),
            "Pipeline(SimpleImputer(mean), StandardScaler, GradientBoostingRegressor(15 trees, max_depth=3)), "
            "6 features -> 1 target: Imputer -> Scaler -> TreeEnsembleRegressor",
        ),
    )

    onehot = ColumnTransformer(
        [
            ("num", "passthrough", [0, 1, 2, 3]),
            ("cat", OneHotEncoder(categories=[[0.0, 1.0, 2.0, 3.0]], handle_unknown="ignore"), [4]),
        ]
    )
    run.attempt(
        "trees_sk_pipe_onehot_gb",
        lambda: pipeline(
            "trees_sk_pipe_onehot_gb",
            Pipeline([("ct", onehot), ("gb", GradientBoostingRegressor(n_estimators=15, max_depth=3, random_state=0))]),
            x_cat,
            y_cat,
            x_cat_check,
            x_cat_ref,
            bg_cat_ref,
            np.array([0, 1, 2, 3, 4, 4, 4, 4]),
            "Pipeline(ColumnTransformer(passthrough columns 0-3, OneHotEncoder(handle_unknown=ignore) on column 4 = category codes "
            "0..3 as floats), GradientBoostingRegressor(15 trees, max_depth=3)), 5 columns -> 8 tree features "
            "-> 1 target: ArrayFeatureExtractor, Cast(int64) -> OneHotEncoder -> Reshape, Concat",
        ),
    )

    # --- pipelines whose preprocessing mixes the columns (docs/tree-pipelines.md measures the chain on them)
    mixing = [
        (
            "trees_sk_pipe_pca_gb",
            ("pca", PCA(n_components=4, svd_solver="full")),
            (
                "Pipeline(PCA(4 components), GradientBoostingRegressor(15 trees, max_depth=3)), 6 features -> 4 "
                "components -> 1 target: Sub, MatMul -> TreeEnsembleRegressor (every component mixes all columns)"
            ),
        ),
        (
            "trees_sk_pipe_normalizer_gb",
            ("norm", Normalizer(norm="l2")),
            (
                "Pipeline(Normalizer(l2), GradientBoostingRegressor(15 trees, max_depth=3)), 6 features -> 1 target: "
                "Normalizer -> TreeEnsembleRegressor (each row divided by its norm: every output mixes all columns)"
            ),
        ),
    ]
    for name, step, description in mixing:
        model = Pipeline([step, ("gb", GradientBoostingRegressor(n_estimators=15, max_depth=3, random_state=0))])
        run.attempt(
            name,
            lambda name=name, model=model, description=description: pipeline(
                name, model, x_train, y_reg, x_check, x_ref, bg_ref, None, description
            ),
        )

    # --- XGBoost and LightGBM
    def booster(name: str, model, y: np.ndarray, description: str, kind: str) -> None:
        model.fit(x_train, y)
        framework = (
            f"xgboost {xgboost.__version__}"
            if isinstance(model, xgboost.XGBModel)
            else f"lightgbm {lightgbm.__version__}"
        )
        ml_to_onnx(model, name, N_FEATURES, **({"zipmap": False} if kind == "cls" and "lgbm" in name else {}))
        path = C.model_path(name)
        C.check_file(path)
        diff = C.compare(name, C.ort_run(path, {"x": x_check}), framework_outputs(model, kind, x_check))
        x_s, bg_s = pick_references(model.predict if kind == "reg" else model.predict_proba, path, x_ref, bg_ref)
        values, base = shap_values(model, x_s, bg_s)
        arrays: dict[str, np.ndarray] = {"shap_raw": values, "shap_raw_base": base}
        if kind == "reg":
            report_shap(name, values, base, model.predict(x_s), "raw (value)")
            arrays["shap_raw_output"] = np.array("variable")
        else:
            margin = margins(model)
            report_shap(name, values, base, margin(x_s), "raw (margin)")
            binary_model = model.predict_proba(x_s).shape[1] == 2
            arrays["shap_raw_output"] = np.array(
                "margin of class 1 (log-odds; not a graph output)"
                if binary_model
                else "per-class margins (softmax inputs; not a graph output)"
            )
            if binary_model:
                p1 = model.predict_proba(x_s)[:, 1:]
                arrays.update(probability_references(name, model, margin, x_s, bg_s, x_s, bg_s, p1))
            else:
                # shap's model_output="probability" is not complete for a softmax (it misses the
                # normalisation: sum + base is off by 0.24 here), so only the margins are kept.
                arrays.update(margin_x=margin(x_s), margin_bg=margin(bg_s))
        refs = write_references(name, x_s, bg_s, arrays)
        entry(name, model, diff, description, framework, ML_CONVERTER, refs)

    run.attempt(
        "trees_xgb_reg",
        lambda: booster(
            "trees_xgb_reg",
            xgboost.XGBRegressor(
                n_estimators=20, max_depth=3, learning_rate=0.3, random_state=0, n_jobs=1, base_score=0.5
            ),
            y_reg,
            "XGBRegressor(20 trees, max_depth=3), 6 features -> 1 target",
            "reg",
        ),
    )
    run.attempt(
        "trees_xgb_cls",
        lambda: booster(
            "trees_xgb_cls",
            xgboost.XGBClassifier(n_estimators=20, max_depth=3, learning_rate=0.3, random_state=0, n_jobs=1),
            y_bin,
            "XGBClassifier(20 trees, max_depth=3), 6 features, binary; label + probabilities, the tree op "
            "applies LOGISTIC to the margin",
            "cls",
        ),
    )
    run.attempt(
        "trees_lgbm_reg",
        lambda: booster(
            "trees_lgbm_reg",
            lightgbm.LGBMRegressor(n_estimators=20, num_leaves=8, random_state=0, n_jobs=1, verbose=-1),
            y_reg,
            "LGBMRegressor(20 trees, 8 leaves), 6 features -> 1 target",
            "reg",
        ),
    )
    run.attempt(
        "trees_lgbm_cls3",
        lambda: booster(
            "trees_lgbm_cls3",
            lightgbm.LGBMClassifier(n_estimators=10, num_leaves=8, random_state=0, n_jobs=1, verbose=-1),
            y_three,
            "LGBMClassifier(10 rounds x 3 classes, 8 leaves), 6 features, 3 classes; label + probabilities "
            "(zipmap=False), the tree op applies SOFTMAX to the per-class margins",
            "cls",
        ),
    )

    # --- XGBoost and LightGBM inside scikit-learn pipelines (skl2onnx with onnxmltools' converters)
    run.attempt(
        "trees_xgb_pipe_scaler_cls",
        lambda: pipeline(
            "trees_xgb_pipe_scaler_cls",
            Pipeline(
                [
                    ("scale", StandardScaler()),
                    (
                        "xgb",
                        xgboost.XGBClassifier(
                            n_estimators=20, max_depth=3, learning_rate=0.3, random_state=0, n_jobs=1
                        ),
                    ),
                ]
            ),
            x_train,
            y_bin,
            x_check,
            x_ref,
            bg_ref,
            np.arange(N_FEATURES),
            "Pipeline(StandardScaler, XGBClassifier(20 trees, max_depth=3)), 6 features, binary; label + "
            "probabilities (zipmap=False): Scaler -> TreeEnsembleClassifier (LOGISTIC on the margin)",
            kind="cls",
            framework=f"{SKL_FRAMEWORK}, xgboost {xgboost.__version__}",
        ),
    )
    run.attempt(
        "trees_lgbm_pipe_columns_reg",
        lambda: pipeline(
            "trees_lgbm_pipe_columns_reg",
            Pipeline(
                [
                    (
                        "ct",
                        ColumnTransformer([("scale", StandardScaler(), [3, 4]), ("keep", "passthrough", [0, 1, 2, 5])]),
                    ),
                    (
                        "lgbm",
                        lightgbm.LGBMRegressor(n_estimators=20, num_leaves=8, random_state=0, n_jobs=1, verbose=-1),
                    ),
                ]
            ),
            x_train,
            y_reg,
            x_check,
            x_ref,
            bg_ref,
            np.array([3, 4, 0, 1, 2, 5]),
            "Pipeline(ColumnTransformer(StandardScaler on columns 3-4, passthrough 0-2 and 5), LGBMRegressor(20 "
            "trees, 8 leaves)), 6 features -> 1 target; the tree sees the columns in the order 3, 4, 0, 1, 2, 5",
            framework=f"{SKL_FRAMEWORK}, lightgbm {lightgbm.__version__}",
        ),
    )
    return run.finish()


def linear_chain(tree, pca: PCA, x: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """G-DeepSHAP through z = (x - mean) @ components.T, then the trees: per background row b, shap's exact
    TreeSHAP values phi_c on the components carried back by the linear rule,
    phi_i = sum_c phi_c * W_ci * (x_i - b_i) / (z_c(x) - z_c(b)), averaged over the background (s, n, 1)."""
    tx, tbg = pca.transform(x), pca.transform(bg)
    total = np.zeros(x.shape, np.float64)
    for b in range(len(bg)):
        phi, _ = shap_values(tree, tx, tbg[b : b + 1])
        dz, dx = tx - tbg[b], x.astype(np.float64) - bg[b]
        assert np.abs(dz).min() > 1e-9, "a component equal on both sides: its multiplier is undefined"
        total += np.einsum("sc,ci,si->si", phi[..., 0] / dz, pca.components_, dx)
    return (total / len(bg))[..., None]


def margins(model) -> Callable[[np.ndarray], np.ndarray]:
    """The framework's raw margins (log-odds; per-class for multiclass) as a function of float32 rows."""
    if isinstance(model, xgboost.XGBModel):
        return lambda r: np.asarray(model.predict(r, output_margin=True), np.float64)
    return lambda r: np.asarray(model.predict(r, raw_score=True), np.float64)


def chain_references(
    margin: Callable[[np.ndarray], np.ndarray], x: np.ndarray, bg: np.ndarray
) -> dict[str, np.ndarray]:
    """Binary LOGISTIC: per pair, the margin's exact Shapley values times the logistic's secant, averaged.

    `chain__probabilities` (s, n, 2): columns [1 - p, p] of the graph's probabilities output.
    """
    m_x, m_bg = margin(x).reshape(-1), margin(bg).reshape(-1)
    phi = per_pair_brute_force(lambda r: margin(r).reshape(-1, 1), x, bg)[..., 0]  # (s, b, n)
    p_x, p_bg = 1 / (1 + np.exp(-m_x)), 1 / (1 + np.exp(-m_bg))
    dm = m_x[:, None] - m_bg[None, :]
    dp = p_x[:, None] - p_bg[None, :]
    # equal margins: the logistic's derivative at that margin (the rescale rule's limit)
    slope = np.where(np.abs(dm) > 1e-12, dp / np.where(np.abs(dm) > 1e-12, dm, 1), p_x[:, None] * (1 - p_x[:, None]))
    p1 = (phi * slope[..., None]).mean(axis=1)
    return {"chain__probabilities": np.stack([-p1, p1], axis=-1), "margin_x": m_x, "margin_bg": m_bg}


if __name__ == "__main__":
    sys.exit(main())
