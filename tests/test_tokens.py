"""Token-id inputs: explained at the embedding lookup, per-token values, held masks, baseline tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import onnxshap
from onnxshap._tokens import find_embeddings
from tests.conftest import REPO

MANIFEST = json.loads((REPO / "models" / "manifest.json").read_text())
#: Models with integer id inputs. The index family (byte ids behind Equal or OneHot) is explained, with
#: these checks and the per-node ones, in tests/test_index_inputs.py.
TOKEN_MODELS = sorted(
    name
    for name, entry in MANIFEST.items()
    if any(i["dtype"].startswith("int") for i in entry["inputs"]) and entry.get("family") not in ("layout", "index")
)


def _ids(model: onnxshap.Model, rng: np.random.Generator, n: int, high: int = 100) -> dict[str, np.ndarray]:
    # Every token model in models/ has a vocabulary of at least 100.
    feeds = {}
    for info in model.inputs:
        length = int(info.shape[1])
        if info.name == "mask":
            mask = np.ones((n, length), info.dtype)
            mask[:, length - 3 :] = 0  # padding at the end of every sequence
            feeds[info.name] = mask
        else:
            feeds[info.name] = rng.integers(0, high, size=(n, length)).astype(info.dtype)
    return feeds


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_token_models_explain_per_token_and_complete(name: str, rng: np.random.Generator) -> None:
    model = onnxshap.load(REPO / "models" / MANIFEST[name]["file"])
    x = _ids(model, rng, 3)
    background = {"x": _ids(model, rng, 16)["x"]}
    e = onnxshap.Explainer(model, background).explain(x)
    assert e.input_names == ["x"]
    n, length = x["x"].shape
    k = len(e.output_names)
    assert e.values.shape == (n, length, k)
    per_dim = e.embedding_values["x"]
    assert per_dim.shape[:2] == (n, length) and per_dim.shape[-1] == k and per_dim.ndim == 4
    np.testing.assert_allclose(per_dim.sum(axis=2), e.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(e.data, x["x"])
    assert e.max_relative_residual < 1e-5, e.max_relative_residual
    assert np.abs(e.values).sum() > 0


def test_embedding_lookup_is_found_through_id_arithmetic() -> None:
    # tf2onnx maps negative ids with Less/Add/Where before the Gather.
    model = onnxshap.load(REPO / "models" / "keras_text_gmp.onnx")
    found = find_embeddings(model)
    assert list(found) == ["x"] and len(found["x"]) == 1
    assert found["x"][0].vocab == 1000


def test_attention_mask_is_held_and_masked_tokens_get_nothing(rng: np.random.Generator) -> None:
    model = onnxshap.load(REPO / "models" / "seq_transformer_ts.onnx")
    x = _ids(model, rng, 2)
    explainer = onnxshap.Explainer(model, {"x": _ids(model, rng, 8)["x"]})
    assert explainer.held_inputs == ["mask"]
    e = explainer.explain(x)
    padded = x["mask"] == 0
    # Masked keys get zero attention weight on both sides and masked queries are left out of the pool.
    assert np.all(e.values[padded] == 0)
    assert np.all(np.abs(e.values[~padded]).sum(axis=-1) > 0)
    assert e.max_relative_residual < 1e-5


def test_baseline_token_equals_a_background_of_that_token(rng: np.random.Generator) -> None:
    model = onnxshap.load(REPO / "models" / "seq_text_cnn_ts.onnx")
    x = _ids(model, rng, 2)
    with_token = onnxshap.Explainer(model, baseline_token=0).explain(x)
    pads = np.zeros((1, x["x"].shape[1]), np.int64)
    with_rows = onnxshap.Explainer(model, pads).explain(x)
    np.testing.assert_allclose(with_token.values, with_rows.values, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(with_token.base_values, with_rows.base_values, rtol=1e-6)
    assert with_token.max_relative_residual < 1e-5


def test_ids_outside_the_table_are_refused(rng: np.random.Generator) -> None:
    model = onnxshap.load(REPO / "models" / "seq_text_cnn_ts.onnx")
    x = _ids(model, rng, 2)
    x["x"][1, 3] = 10**6
    explainer = onnxshap.Explainer(model, _ids(model, rng, 4)["x"])
    with pytest.raises(onnxshap.InputError, match=r"outside the embedding table.*row\(s\) \[1\]"):
        explainer.explain(x)


def test_integer_input_without_embedding_is_a_clear_error(rng: np.random.Generator) -> None:
    model = onnxshap.load(REPO / "models" / "seq_transformer_ts.onnx")
    with pytest.raises(onnxshap.InputError, match="'mask' holds integers.*no\\s+embedding lookup"):
        onnxshap.Explainer(model, _ids(model, rng, 4), inputs=["x", "mask"])


def test_missing_background_without_baseline_token_is_a_clear_error() -> None:
    with pytest.raises(onnxshap.InputError, match="background is required"):
        onnxshap.Explainer(REPO / "models" / "seq_text_cnn_ts.onnx")


def test_token_explanation_round_trips(tmp_path: Path, rng: np.random.Generator) -> None:
    model = onnxshap.load(REPO / "models" / "seq_text_cnn_ts.onnx")
    e = onnxshap.Explainer(model, baseline_token=0).explain(_ids(model, rng, 2))
    e.save(tmp_path / "e.npz")
    back = onnxshap.Explanation.load(tmp_path / "e.npz")
    np.testing.assert_array_equal(back.values, e.values)
    np.testing.assert_array_equal(back.embedding_values["x"], e.embedding_values["x"])
    np.testing.assert_array_equal(back.data, e.data)
