"""Explanation.to_shap against shap's own plots, on tabular, image, token-id and multi-output explanations.

Each plot is drawn with show=False and saved as a PNG (shap.plots.text as HTML) to check that it renders.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import onnxshap
from onnxshap import Explanation
from onnxshap._errors import InputError
from tests.conftest import REPO

MODELS = REPO / "models"
VOCAB = [f"w{i}" for i in range(200)]  # a stand-in vocabulary for the text model's 200 ids


@pytest.fixture(scope="module")
def shap() -> Any:
    return pytest.importorskip("shap", reason="to_shap converts for shap, an optional package (in the test extra)")


@pytest.fixture(scope="module")
def pyplot(shap: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # shap draws through pyplot; never open a window
    import matplotlib.pyplot as plt

    return plt


def _saved(plt: Any, path: Path) -> Path:
    """Save pyplot's current figure (what a shap plot drew) and check that it is not blank."""
    import matplotlib.image

    plt.savefig(path, bbox_inches="tight")
    plt.close("all")
    img = matplotlib.image.imread(path)[..., :3]
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert np.any(img < 0.9, axis=-1).mean() > 0.01, f"{path.name} is (nearly) blank"
    return path


# --- explanations: one per kind, each compiled once -----------------------------------------------


@pytest.fixture(scope="module")
def tabular() -> Explanation:
    """Two output tensors, logits and probs, of a 10-feature MLP: 6 samples x 6 outputs."""
    rng = np.random.default_rng(2)
    x, bg = rng.standard_normal((6, 10)).astype(np.float32), rng.standard_normal((8, 10)).astype(np.float32)
    return onnxshap.Explainer(MODELS / "torch_mlp_logits_probs_ts.onnx", bg, outputs=["logits", "probs"]).explain(x)


@pytest.fixture(scope="module")
def digits() -> dict[str, Explanation]:
    """The digits CNN, x (n, 1, 8, 8) -> probs (n, 10), on three digits: all outputs, and each one's prediction."""
    x, bg = np.load(MODELS / "data" / "digits_samples.npy"), np.load(MODELS / "data" / "digits_background.npy")
    explainer = onnxshap.Explainer(MODELS / "torch_cnn_digits_ts.onnx", bg[:8])
    return {"all": explainer.explain(x[:3]), "predicted": explainer.explain(x[:3], output="predicted")}


@pytest.fixture(scope="module")
def text() -> Explanation:
    """The token-id text CNN, ids (n, 30) -> logits (n, 2), against an all-padding reference."""
    ids = np.random.default_rng(3).integers(1, 200, (3, 30))
    return onnxshap.Explainer(MODELS / "seq_text_cnn_ts.onnx", baseline_token=0).explain(ids)


# --- tabular and multi-output ---------------------------------------------------------------------


def test_one_output_drops_the_output_axis_for_shaps_plots(
    shap: Any,
    pyplot: Any,
    tabular: Explanation,
    tmp_path: Path,
) -> None:
    s = tabular.to_shap(output="probs[1]")
    assert isinstance(s, shap.Explanation)
    assert s.values.shape == (6, 10) and s.base_values.shape == (6,) and s.data.shape == (6, 10)
    assert s.feature_names == [f"x[{i}]" for i in range(10)] and s.output_names == "probs[1]"
    np.testing.assert_allclose(s.values.sum(axis=1) + s.base_values, tabular.prediction[:, 4], atol=1e-5)
    shap.plots.waterfall(s[0], show=False)
    _saved(pyplot, tmp_path / "waterfall.png")
    for name in ("bar", "beeswarm", "heatmap"):
        getattr(shap.plots, name)(s, show=False)
        _saved(pyplot, tmp_path / f"{name}.png")


def test_all_outputs_keep_the_output_axis_and_slice_by_name(
    shap: Any,
    pyplot: Any,
    tabular: Explanation,
    tmp_path: Path,
) -> None:
    s = tabular.to_shap(feature_names=[f"f{i}" for i in range(10)])
    assert s.values.shape == (6, 10, 6) and s.base_values.shape == (6, 6)
    assert list(s.output_names) == tabular.output_names and s.feature_names[0] == "f0"
    # shap's own way to pick one output of a multi-output explanation: index the output axis by name
    one = s[:, :, "probs[1]"]
    np.testing.assert_array_equal(one.values, tabular.to_shap(output="probs[1]").values)
    shap.plots.bar(one, show=False)
    _saved(pyplot, tmp_path / "bar.png")
    shap.plots.waterfall(s[0, :, "logits[2]"], show=False)
    _saved(pyplot, tmp_path / "waterfall.png")
    assert tabular.to_shap(output=["logits[0]", "probs[0]"]).output_names == ["logits[0]", "probs[0]"]


# --- images ---------------------------------------------------------------------------------------


def test_image_inputs_are_flattened_into_named_features(
    shap: Any,
    pyplot: Any,
    digits: dict[str, Explanation],
    tmp_path: Path,
) -> None:
    e = digits["all"]
    s = e.to_shap(output="probs[1]")
    assert s.values.shape == (3, 64) and s.data.shape == (3, 64) and s.base_values.shape == (3,)
    assert s.feature_names[:2] == ["x[0,0,0]", "x[0,0,1]"] and s.feature_names[-1] == "x[0,7,7]"
    np.testing.assert_array_equal(s.values, e.values[..., 1].reshape(3, 64))
    np.testing.assert_array_equal(s.data, e.data.reshape(3, 64))
    shap.plots.waterfall(s[0], show=False)
    _saved(pyplot, tmp_path / "waterfall.png")
    for name in ("bar", "beeswarm", "heatmap"):
        getattr(shap.plots, name)(s, show=False)
        _saved(pyplot, tmp_path / f"{name}.png")
    pixels = [f"row{r}col{c}" for r in range(8) for c in range(8)]
    assert e.to_shap(output=1, feature_names=pixels).feature_names == pixels
    with pytest.raises(InputError, match=r"63 entries .* 64 features"):
        e.to_shap(output=1, feature_names=pixels[:-1])


def test_image_layout_for_shaps_image_plot(
    shap: Any,
    pyplot: Any,
    digits: dict[str, Explanation],
    tmp_path: Path,
) -> None:
    e = digits["all"]
    s = e.to_shap(output=["probs[1]", "probs[7]"], layout="image")
    assert s.values.shape == (3, 8, 8, 1, 2) and s.data.shape == (3, 8, 8, 1) and s.base_values.shape == (3, 2)
    np.testing.assert_array_equal(s.values, np.moveaxis(e.values[..., [1, 7]], 1, -2))
    assert s.output_names == ["probs[1]", "probs[7]"]
    shap.plots.image(s, show=False)
    titles = [ax.get_title() for ax in pyplot.gcf().axes if ax.get_title()]
    assert titles == ["probs[1]", "probs[7]"]  # shap titles the columns of the first row
    _saved(pyplot, tmp_path / "image.png")


def test_predicted_classes_label_each_image(
    shap: Any,
    pyplot: Any,
    digits: dict[str, Explanation],
    tmp_path: Path,
) -> None:
    e = digits["predicted"]
    classes = [e.all_output_names[int(i)] for i in e.output_indices[:, 0]]
    s = e.to_shap(layout="image")
    assert s.values.shape == (3, 8, 8, 1, 1) and np.asarray(s.output_names).tolist() == [[c] for c in classes]
    shap.plots.image(s, show=False)
    assert [ax.get_title() for ax in pyplot.gcf().axes if ax.get_title()] == classes
    _saved(pyplot, tmp_path / "image_predicted.png")
    flat = e.to_shap()  # per-sample names need the output axis, which the feature plots cannot take
    assert flat.values.shape == (3, 64) and flat.output_names == "predicted"
    shap.plots.waterfall(flat[0], show=False)
    _saved(pyplot, tmp_path / "waterfall_predicted.png")


def test_options_of_the_other_layout_are_refused(
    shap: Any,
    digits: dict[str, Explanation],
    tabular: Explanation,
) -> None:
    e = digits["all"]
    with pytest.raises(InputError, match="layout must be one of"):
        e.to_shap(layout="flat")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="feature_names= applies to layout='features'"):
        e.to_shap(layout="image", feature_names=[str(i) for i in range(64)])
    with pytest.raises(InputError, match="channel_axis= applies to layout='image'"):
        e.to_shap(channel_axis=0)
    with pytest.raises(InputError, match=r"layout='image' needs a per-sample shape .* \[10\]"):
        tabular.to_shap(layout="image")
    assert e.to_shap(output=0, layout="image", channel_axis=0).values.shape == (3, 8, 8, 1, 1)


# --- text -----------------------------------------------------------------------------------------


def test_token_ids_are_the_tokens_of_shaps_text_plot(shap: Any, pyplot: Any, text: Explanation, tmp_path: Path) -> None:
    s = text.to_shap(output="logits[1]")
    assert s.values.shape == (3, 30) and s.feature_names[:2] == ["x[0]", "x[1]"] and s.output_names == "logits[1]"
    assert s.data[0].tolist() == [f"{i} " for i in text.data[0]]
    html = shap.plots.text(s, display=False)
    (tmp_path / "text_ids.html").write_text(html, encoding="utf-8")
    assert " ".join(str(i) for i in text.data[2]) in "".join(re.findall(r">([^<>]*)</div></div>", html))
    words = [[VOCAB[i] for i in row] for row in text.data]
    s = text.to_shap(output="logits[1]", tokens=words)
    assert s.data[1, 0] == f"{words[1][0]} "
    html = shap.plots.text(s, display=False)
    (tmp_path / "text_tokens.html").write_text(html, encoding="utf-8")
    assert " ".join(words[0]) in "".join(re.findall(r">([^<>]*)</div></div>", html))
    shap.plots.bar(s[0], show=False)  # the tokens label the bars: "w17 = x[3]"
    _saved(pyplot, tmp_path / "bar_sample.png")
    for name in ("bar", "beeswarm", "heatmap"):
        getattr(shap.plots, name)(s, show=False)
        _saved(pyplot, tmp_path / f"{name}.png")
    shap.plots.waterfall(s[0], show=False)
    _saved(pyplot, tmp_path / "waterfall.png")
    with pytest.raises(InputError, match="one sequence but the explanation has 3 samples"):
        text.to_shap(output=1, tokens=words[0])
    with pytest.raises(InputError, match="30 token positions but 29 tokens"):
        text.to_shap(output=1, tokens=[row[:-1] for row in words])


def test_tokens_sum_an_embedding_axis(shap: Any) -> None:
    """A float-embedding input, values (n, seq_len, embedding, k): tokens= gives one value per token."""
    rng = np.random.default_rng(4)
    values = rng.standard_normal((2, 5, 3, 2))
    n, k = 2, 2
    e = Explanation(
        values=values,
        base_values=np.zeros((n, k)),
        data=rng.standard_normal((n, 5, 3)),
        prediction=values.sum(axis=(1, 2)),
        residual=np.zeros((n, k)),
        input_names=["emb"],
        output_names=["y[0]", "y[1]"],
        output_indices=np.tile(np.arange(k), (n, 1)),
    )
    s = e.to_shap(tokens=[list("abcde"), list("fghij")])
    assert s.values.shape == (2, 5, 2) and s.feature_names == [f"emb[{i}]" for i in range(5)]
    np.testing.assert_allclose(s.values, values.sum(axis=2))
    assert s.data[1].tolist() == ["f ", "g ", "h ", "i ", "j "]
    assert e.to_shap(output=0).values.shape == (2, 15)  # without tokens, every element is a feature


# --- without shap ---------------------------------------------------------------------------------


def test_to_shap_without_shap(tabular: Explanation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)
    with pytest.raises(ImportError, match="pip install shap"):
        tabular.to_shap()
