"""Tree ensembles exported by skl2onnx and onnxmltools (models/trees_*.onnx, models/export_trees.py)
against the committed references in models/data/trees_*.npz (no tree framework needed here).

Per model: forward parity with onnxruntime on the committed samples and background; the references'
own consistency; and onnxshap's values against the reference that answers the same question:

- regressors and the random-forest classifier (no post transform): the exact interventional
  Shapley values of the graph output (`bf__<output>`, brute force over all coalitions with
  onnxruntime; shap's TreeExplainer agrees with it to ~3e-7);
- binary boosted classifiers, bare or behind a scaler (post_transform LOGISTIC inside the tree op):
  exact TreeSHAP of the margin per (sample, reference) pair, times the logistic's secant
  (`chain__probabilities`; equal to shap's model_output="probability" values), which is what the
  op's rule computes, and not the exact Shapley values of the probability game (they differ by up
  to 0.05 here);
- the other pipelines with per-column preprocessing (Imputer/Scaler, a ColumnTransformer that
  scales and reorders columns before LightGBM, one-hot encoding): shap's values over the tree's
  input (the transformed features) summed per raw column (`groups`). Where each raw column is one
  tree feature this is `bf__<output>` (checked with the references); for the one-hot column the
  channels are the tree's players, and the chain adds them up;
- the PCA pipeline: G-DeepSHAP from shap (`gdeep__variable`: shap's values on the components per
  reference, carried back by the linear rule); the Normalizer pipeline: completeness, and for both
  the chain's distance to the exact values on the raw columns is the figure docs/tree-pipelines.md
  gives;
- the 3-class LightGBM model (SOFTMAX in the op): completeness only (no framework gives the
  per-pair softmax chain).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest

import onnxshap
from tests.conftest import REPO
from tests.helpers import assert_locally_complete, interventional_shapley, run_ort

MODELS = REPO / "models"
MANIFEST: dict[str, Any] = json.loads((MODELS / "manifest.json").read_text())
TREES = sorted(name for name, entry in MANIFEST.items() if entry.get("family") == "trees")
REFERENCED = [name for name in TREES if MANIFEST[name].get("references")]
#: The pipelines whose preprocessing mixes the columns; their chain's error is documented here.
MIXING = [name for name in REFERENCED if MANIFEST[name].get("mixing")]
PIPELINES_PAGE = REPO / "docs" / "tree-pipelines.md"


def _refs(name: str) -> dict[str, np.ndarray]:
    with np.load(MODELS / MANIFEST[name]["references"]) as data:
        return dict(data)


def _expected(name: str, refs: dict[str, np.ndarray], out: str) -> tuple[np.ndarray, str] | None:
    """(the values onnxshap should give for `out`, which reference) or None (completeness only)."""
    if f"chain__{out}" in refs:
        return refs[f"chain__{out}"], "margin TreeSHAP per pair times the logistic's secant"
    if f"gdeep__{out}" in refs:
        return refs[f"gdeep__{out}"], "G-DeepSHAP: shap's values on the components per reference, linear rule"
    if "mixing" in refs:
        return None
    if "groups" in refs:
        groups = refs["groups"]
        n = refs["x"].shape[1]
        summed = np.stack([refs["shap_raw"][:, groups == c].sum(axis=1) for c in range(n)], axis=1)
        return summed, "shap over the transformed features, summed per raw column"
    if MANIFEST[name]["post_transform"] and set(MANIFEST[name]["post_transform"].values()) != {"NONE"}:
        return None
    return refs[f"bf__{out}"], "brute-force interventional Shapley values"


def test_every_tree_model_has_references() -> None:
    assert len(TREES) >= 12
    assert all(MANIFEST[n].get("references") or n.endswith("zipmap") for n in TREES)
    assert {"trees_sk_pipe_pca_gb", "trees_sk_pipe_normalizer_gb"} <= set(MIXING)


@pytest.mark.parametrize("name", REFERENCED)
def test_references_are_consistent(name: str) -> None:
    refs = _refs(name)
    for out in refs["out_names"]:
        fx, fbg = refs[f"fx__{out}"], refs[f"fbg__{out}"]
        gap = refs[f"bf__{out}"].sum(axis=1) - (fx.reshape(len(fx), -1) - fbg.reshape(len(fbg), -1).mean(0))
        assert np.abs(gap).max() < 1e-6, (out, np.abs(gap).max())
    raw = refs["shap_raw"]
    assert raw.shape[:1] == refs["x"].shape[:1]
    if str(refs["shap_raw_output"]) in ("variable", "probabilities") and "groups" not in refs:
        out = str(refs["out_names"][-1])
        np.testing.assert_allclose(raw, refs[f"bf__{out}"], rtol=1e-5, atol=1e-6)
    groups = refs.get("groups")
    one_to_one = groups is not None and len(set(groups.tolist())) == len(groups)
    if one_to_one and str(refs["shap_raw_output"]).startswith("variable"):
        # one tree feature per raw column: the same game, so the same values as brute force on the columns
        summed = np.stack([raw[:, groups == c].sum(axis=1) for c in range(len(groups))], axis=1)
        np.testing.assert_allclose(summed, refs["bf__variable"], rtol=1e-5, atol=1e-6)
    if "chain__probabilities" in refs:
        np.testing.assert_allclose(refs["chain__probabilities"][..., 1], refs["shap_prob"][..., 0], atol=1e-7)
        np.testing.assert_allclose(
            refs["chain__probabilities"].sum(axis=1), refs["bf__probabilities"].sum(axis=1), atol=1e-6
        )


@pytest.mark.parametrize("name", REFERENCED)
def test_tree_model_matches_onnxruntime_on_references(name: str) -> None:
    refs = _refs(name)
    path = MODELS / MANIFEST[name]["file"]
    model = onnxshap.load(path)
    feeds = {"x": np.concatenate([refs["x"], refs["background"]])}
    ours, theirs = model.run(feeds), run_ort(onnx.load(path), feeds)
    for out in model.output_names:
        if ours[out].dtype.kind == "f":
            np.testing.assert_allclose(ours[out], theirs[out], rtol=1e-6, atol=1e-7, err_msg=out)
        else:
            np.testing.assert_array_equal(ours[out], theirs[out], err_msg=out)


@pytest.fixture(scope="module")
def explainers() -> Callable[[str], tuple[onnxshap.Explainer, onnxshap.Explanation]]:
    """name -> (explainer, its explanation of the references' samples on their background), computed once."""
    cache: dict[str, tuple[onnxshap.Explainer, onnxshap.Explanation]] = {}

    def explain(name: str) -> tuple[onnxshap.Explainer, onnxshap.Explanation]:
        if name not in cache:
            refs = _refs(name)
            model = onnxshap.load(MODELS / MANIFEST[name]["file"])
            outs = [str(o) for o in refs["out_names"]]
            explainer = onnxshap.Explainer(model, refs["background"], outputs=outs)
            cache[name] = explainer, explainer.explain(refs["x"])
        return cache[name]

    return explain


# This is the trees' whole contract (tests/test_explainer.py leaves the family to this file): complete,
# no gradient, every node locally complete, and the values the references give.
@pytest.mark.parametrize("name", REFERENCED)
def test_tree_model_values_match_references(
    name: str, explainers: Callable[[str], tuple[onnxshap.Explainer, onnxshap.Explanation]]
) -> None:
    refs = _refs(name)
    outs = [str(o) for o in refs["out_names"]]
    explainer, e = explainers(name)
    assert e.max_relative_residual < 1e-5, e.max_relative_residual
    assert not e.gradient_nodes
    # Per node, fed in float64, for the first sample and reference and the last output (the tree ops
    # compare in float32, as the specification says, so their sums round at float32 precision).
    sample, reference = refs["x"][:1].astype(np.float64), refs["background"][:1].astype(np.float64)
    n_total = len(e.all_output_names)
    nodes = explainer._pass.diagnose({"x": sample}, {"x": reference}, n_total - 1, n_total)
    assert_locally_complete(nodes)
    values = np.asarray(e.values)
    expected = _expected(name, refs, outs[-1])
    if expected is None:
        return
    want, what = expected
    assert values.shape == want.shape, (values.shape, want.shape)
    scale = max(float(np.abs(refs[f"fx__{outs[-1]}"]).max()), float(np.abs(want).max()))
    np.testing.assert_allclose(values, want, rtol=1e-6, atol=1e-6 * scale, err_msg=what)


def _documented_error(name: str) -> str:
    """The "error / largest value" cell of `name`'s row in the table of docs/tree-pipelines.md."""
    rows = [line.strip().strip("|").split("|") for line in PIPELINES_PAGE.read_text(encoding="utf-8").splitlines()]
    header = next(r for r in rows if r[0].strip() == "fixture")
    column = [c.strip() for c in header].index("error / largest value")
    row = next((r for r in rows if r[0].strip() == f"`{name}`"), None)
    assert row is not None, f"docs/tree-pipelines.md has no table row for `{name}`"
    return row[column].strip()


@pytest.mark.parametrize("name", MIXING)
def test_mixing_pipeline_error_is_the_documented_one(
    name: str, explainers: Callable[[str], tuple[onnxshap.Explainer, onnxshap.Explanation]]
) -> None:
    """The chain (G-DeepSHAP) against the exact interventional Shapley values on the raw columns, recomputed
    here by brute force with onnxruntime as the game: complete, and as far off as the page says."""
    refs = _refs(name)
    proto = onnx.load(MODELS / MANIFEST[name]["file"])
    x, background = refs["x"], refs["background"]
    exact = interventional_shapley(lambda rows: run_ort(proto, {"x": rows})["variable"], x, background)
    np.testing.assert_allclose(exact, refs["bf__variable"], rtol=1e-6, atol=1e-7)
    _, e = explainers(name)
    values = np.asarray(e.values, np.float64)
    gap = values.sum(axis=1) - (refs["fx__variable"] - refs["fbg__variable"].mean(axis=0))
    assert np.abs(gap).max() < 1e-5, np.abs(gap).max()
    error = np.abs(values - exact).max() / np.abs(exact).max()
    documented = _documented_error(name)
    assert re.fullmatch(r"0\.\d+", documented), documented
    assert float(f"{error:.2g}") == float(documented), (error, documented)


def test_mixing_pipeline_explained_at_the_trees_input_is_exact() -> None:
    """Named as the explained input, the trees' input (PCA's components) gets the exact interventional
    Shapley values of the features the trees see: shap's, on the transformed samples and background."""
    name = "trees_sk_pipe_pca_gb"
    refs = _refs(name)
    proto = onnx.load(MODELS / MANIFEST[name]["file"])
    tree_input = next(n.input[0] for n in proto.graph.node if n.op_type.startswith("TreeEnsemble"))
    e = onnxshap.Explainer(onnxshap.load(proto), refs["background"], inputs=tree_input).explain(refs["x"])
    assert e.max_relative_residual < 1e-5, e.max_relative_residual
    want = refs["shap_raw"]
    np.testing.assert_allclose(np.asarray(e.values), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
