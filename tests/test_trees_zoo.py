"""Tree ensembles exported by skl2onnx and onnxmltools (models/trees_*.onnx, models/export_trees.py)
against the committed references in models/data/trees_*.npz (no tree framework needed here).

Per model: forward parity with onnxruntime on the committed samples and background; the references'
own consistency; and onnxshap's values against the reference that answers the same question:

- regressors, the random-forest classifier (no post transform) and the Imputer/Scaler pipeline:
  the exact interventional Shapley values of the graph output (`bf__<output>`, brute force over all
  coalitions with onnxruntime; shap's TreeExplainer agrees with it to ~3e-7);
- binary boosted classifiers (post_transform LOGISTIC inside the tree op): exact TreeSHAP of the
  margin per (sample, reference) pair, times the logistic's secant (`chain__probabilities`; equal
  to shap's model_output="probability" values), which is what the op's rule computes, and not the
  exact Shapley values of the probability game (they differ by up to 0.05 here);
- the one-hot pipeline: shap's values over the tree's input (the transformed features) summed over
  each category column's channels (the channels are the tree's players, the chain adds them up);
- the 3-class LightGBM model (SOFTMAX in the op): completeness only (no framework gives the
  per-pair softmax chain).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import pytest

import onnxshap
from tests.conftest import REPO
from tests.helpers import run_ort

MODELS = REPO / "models"
MANIFEST: dict[str, Any] = json.loads((MODELS / "manifest.json").read_text())
TREES = sorted(name for name, entry in MANIFEST.items() if entry.get("family") == "trees")
REFERENCED = [name for name in TREES if MANIFEST[name].get("references")]


def _refs(name: str) -> dict[str, np.ndarray]:
    with np.load(MODELS / MANIFEST[name]["references"]) as data:
        return dict(data)


def _expected(name: str, refs: dict[str, np.ndarray], out: str) -> tuple[np.ndarray, str] | None:
    """(the values onnxshap should give for `out`, which reference) or None (completeness only)."""
    if "groups" in refs:
        groups = refs["groups"]
        n = refs["x"].shape[1]
        summed = np.stack([refs["shap_raw"][:, groups == c].sum(axis=1) for c in range(n)], axis=1)
        return summed, "shap over the transformed features, summed per raw column"
    if f"chain__{out}" in refs:
        return refs[f"chain__{out}"], "margin TreeSHAP per pair times the logistic's secant"
    if MANIFEST[name]["post_transform"] and set(MANIFEST[name]["post_transform"].values()) != {"NONE"}:
        return None
    return refs[f"bf__{out}"], "brute-force interventional Shapley values"


def test_every_tree_model_has_references() -> None:
    assert len(TREES) >= 12
    assert all(MANIFEST[n].get("references") or n.endswith("zipmap") for n in TREES)


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


@pytest.mark.parametrize("name", REFERENCED)
def test_tree_model_values_match_references(name: str) -> None:
    refs = _refs(name)
    model = onnxshap.load(MODELS / MANIFEST[name]["file"])
    outs = [str(o) for o in refs["out_names"]]
    e = onnxshap.Explainer(model, refs["background"], outputs=outs).explain(refs["x"])
    assert e.max_relative_residual < 1e-5, e.max_relative_residual
    assert not e.gradient_nodes
    values = np.asarray(e.values)
    expected = _expected(name, refs, outs[-1])
    if expected is None:
        return
    want, what = expected
    assert values.shape == want.shape, (values.shape, want.shape)
    scale = max(float(np.abs(refs[f"fx__{outs[-1]}"]).max()), float(np.abs(want).max()))
    np.testing.assert_allclose(values, want, rtol=1e-6, atol=1e-6 * scale, err_msg=what)
