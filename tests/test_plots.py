"""Plots of real explanations: files written, sizes, layout read back from the pixels (shap interop: test_to_shap.py)."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap import Explanation
from onnxshap._errors import InputError, MissingDependencyError
from onnxshap._plots import (
    DEFAULT_ROWS,
    NEGATIVE,
    PANEL_INCHES,
    POSITIVE,
    auto_kind,
    channel_axis_of,
    plot,
    rgba,
    robust_max,
)
from tests.conftest import REPO

MODELS = REPO / "models"
mpl_image = pytest.importorskip("matplotlib.image", reason="plots need matplotlib (the onnxshap[plot] extra)")


# --- explanations ---------------------------------------------------------------------------------


def _gray_cnn(channels_last: bool) -> onnx.ModelProto:
    """A small grayscale CNN, (N, 1, 8, 8) or (N, 8, 8, 1): Conv 3x3 (2 maps), Relu, GlobalAveragePool, Gemm -> 3 logits.

    Both layouts share the weights, so their attributions are the same numbers in different layouts.
    """
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0.1, -0.2], np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(3, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"]),
    ]
    shape = ["N", 8, 8, 1] if channels_last else ["N", 1, 8, 8]
    if channels_last:
        nodes.insert(0, helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]))
    else:
        nodes[0].input[0] = "x"
    graph = helper.make_graph(
        nodes,
        "gray_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return np.load(MODELS / "data" / "digits_samples.npy"), np.load(MODELS / "data" / "digits_background.npy")


@pytest.fixture(scope="module")
def gray(digits: tuple[np.ndarray, np.ndarray]) -> dict[str, Explanation]:
    """The grayscale CNN in both layouts on the same three digits."""
    x, bg = digits
    nchw = onnxshap.Explainer(_gray_cnn(False), bg[:8]).explain(x[:3], output=[0, 2])
    to_nhwc = (0, 2, 3, 1)
    nhwc = onnxshap.Explainer(_gray_cnn(True), bg[:8].transpose(to_nhwc)).explain(
        x[:3].transpose(to_nhwc), output=[0, 2]
    )
    return {"nchw": nchw, "nhwc": nhwc}


def _stripes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 16, 16) images in [0, 1]: a red top half over a blue bottom half, slightly noisy."""
    x = np.zeros((n, 3, 16, 16), np.float32)
    x[:, 0, :8] = 0.9
    x[:, 2, 8:] = 0.9
    return np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def rgb() -> dict[str, Explanation]:
    """The exported ResNet blocks: torch (NCHW) and Keras (NHWC) on the same RGB pictures."""
    rng = np.random.default_rng(1)
    x, bg = _stripes(rng, 2), rng.uniform(0, 1, (4, 3, 16, 16)).astype(np.float32)
    nchw = onnxshap.Explainer(MODELS / "torch_resblock_ts.onnx", bg).explain(x, output=[1])
    to_nhwc = (0, 2, 3, 1)
    nhwc = onnxshap.Explainer(MODELS / "keras_resblock.onnx", bg.transpose(to_nhwc)).explain(
        x.transpose(to_nhwc), output=[1]
    )
    return {"nchw": nchw, "nhwc": nhwc}


@pytest.fixture(scope="module")
def tabular() -> Explanation:
    rng = np.random.default_rng(2)
    x, bg = rng.standard_normal((12, 10)).astype(np.float32), rng.standard_normal((16, 10)).astype(np.float32)
    return onnxshap.Explainer(MODELS / "torch_mlp_ts.onnx", bg).explain(x)


@pytest.fixture(scope="module")
def text() -> Explanation:
    """Float-embedding text model: values (n, 20 tokens, 8 embedding dims, 1 output)."""
    rng = np.random.default_rng(3)
    x, bg = rng.standard_normal((2, 20, 8)).astype(np.float32), rng.standard_normal((8, 20, 8)).astype(np.float32)
    return onnxshap.Explainer(MODELS / "torch_text_conv1d_ts.onnx", bg).explain(x)


# --- reading the pictures back --------------------------------------------------------------------


def _read(path: Path) -> np.ndarray:
    """(H, W, 3) floats in [0, 1]."""
    return mpl_image.imread(path)[..., :3]


def _assert_drawn(img: np.ndarray) -> None:
    ink = np.any(img < 0.9, axis=-1)
    assert ink.mean() > 0.02, "the picture is (nearly) blank"
    assert img.std() > 0.05


def _tinted(img: np.ndarray, colour: tuple[float, float, float], threshold: float = 0.15) -> np.ndarray:
    """Pixels whose chroma points like `colour`'s (a faded red is still red; gray is neither)."""
    chroma = img - img.mean(axis=-1, keepdims=True)
    target = np.array(colour) - np.mean(colour)
    along = chroma @ (target / np.linalg.norm(target))
    return (along > threshold) & (np.linalg.norm(chroma, axis=-1) < 1.6 * along + 1e-9)


def _coloured(img: np.ndarray) -> np.ndarray:
    return _tinted(img, POSITIVE) | _tinted(img, NEGATIVE)


def _pixel_size(path: Path) -> tuple[int, int]:
    h, w = _read(path).shape[:2]
    return w, h


# --- image ----------------------------------------------------------------------------------------


def test_image_layout_nchw_grayscale(gray: dict[str, Explanation], tmp_path: Path) -> None:
    e = gray["nchw"]
    assert e.values.shape == (3, 1, 8, 8, 2)
    one, wide, tall = tmp_path / "one.png", tmp_path / "wide.png", tmp_path / "tall.png"
    plot(e, one, sample=0, output=0)
    plot(e, wide, sample=0)
    plot(e, tall, output=0)
    w1, h1 = _pixel_size(one)
    w2, h2 = _pixel_size(wide)
    w3, h3 = _pixel_size(tall)
    # One column per output beside the image, one row per sample.
    assert (w2 - w1, h2 - h1) == (round(PANEL_INCHES * 100), 0)
    assert w3 == w1 and h3 > 2.5 * h1
    img = _read(wide)
    _assert_drawn(img)
    coloured = _coloured(img)
    columns = np.flatnonzero(coloured.any(axis=0))
    # The grayscale image comes first (no colour in its column); heat maps and colour bar follow.
    assert columns.min() > 0.8 * PANEL_INCHES * 100
    assert coloured[:, round(1.2 * PANEL_INCHES * 100) :].mean() > 0.01


def test_image_nhwc_draws_the_same_picture_as_nchw(gray: dict[str, Explanation], tmp_path: Path) -> None:
    nchw, nhwc = gray["nchw"], gray["nhwc"]
    assert nhwc.values.shape == (3, 8, 8, 1, 2)
    np.testing.assert_allclose(np.moveaxis(nchw.values, 1, 3), nhwc.values, rtol=1e-4, atol=1e-6)
    plot(nchw, tmp_path / "nchw.png")
    plot(nhwc, tmp_path / "nhwc.png")
    a, b = _read(tmp_path / "nchw.png"), _read(tmp_path / "nhwc.png")
    assert a.shape == b.shape
    assert np.mean(np.abs(a - b)) < 2e-3


def test_image_rgb_channels_first_and_last(rgb: dict[str, Explanation], tmp_path: Path) -> None:
    for layout, e in rgb.items():
        path = tmp_path / f"{layout}.png"
        plot(e, path, sample=0)
        img = _read(path)
        _assert_drawn(img)
        # The image panel (left) shows the picture: red top half, blue bottom half.
        panel = img[:, : round(0.9 * PANEL_INCHES * 100)]
        red = (panel[..., 0] > 0.7) & (panel[..., 2] < 0.3)
        blue = (panel[..., 2] > 0.7) & (panel[..., 0] < 0.3)
        assert red.sum() > 500 and blue.sum() > 500, layout
        assert np.nonzero(red)[0].mean() < np.nonzero(blue)[0].mean(), f"{layout}: channels are mixed up"
    # Same pictures in both layouts: the image panels agree pixel for pixel (wherever the layout put them).
    a, b = (_picture(_read(tmp_path / f"{layout}.png")) for layout in ("nchw", "nhwc"))
    assert abs(a.shape[0] - b.shape[0]) <= 1 and abs(a.shape[1] - b.shape[1]) <= 1
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    assert np.mean(np.abs(a[:h, :w] - b[:h, :w])) < 0.02


def _picture(img: np.ndarray) -> np.ndarray:
    """The bounding box of the strongly coloured pixels in the left panel."""
    panel = img[:, : round(0.9 * PANEL_INCHES * 100)]
    ys, xs = np.nonzero(panel.max(axis=-1) - panel.min(axis=-1) > 0.5)
    return panel[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def test_image_of_an_intermediate_tensor_has_no_image_column(
    digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, bg = digits
    e = onnxshap.Explainer(_gray_cnn(False), bg[:4], inputs="relu").explain(x[:1], output=0)
    assert e.data is None and e.values.shape == (1, 2, 8, 8, 1)
    with pytest.raises(InputError, match="channel_axis"):
        plot(e, tmp_path / "bad.png", kind="image")  # 2 feature maps: not a channel count the plot can guess
    assert auto_kind(e) == "bar"
    plot(e, tmp_path / "maps.png", channel_axis=0)
    w, _ = _pixel_size(tmp_path / "maps.png")
    assert w == round((PANEL_INCHES + 1.2) * 100)
    _assert_drawn(_read(tmp_path / "maps.png"))


def test_dpi_scales_the_picture(tabular: Explanation, tmp_path: Path) -> None:
    plot(tabular, tmp_path / "lo.png", dpi=50, output=0)
    plot(tabular, tmp_path / "hi.png", dpi=100, output=0)
    (w1, h1), (w2, h2) = _pixel_size(tmp_path / "lo.png"), _pixel_size(tmp_path / "hi.png")
    assert abs(w2 - 2 * w1) <= 1 and abs(h2 - 2 * h1) <= 1


def test_channel_axis_inference() -> None:
    assert channel_axis_of((1, 28, 28)) == 0
    assert channel_axis_of((3, 32, 32)) == 0
    assert channel_axis_of((32, 32, 3)) == 2
    assert channel_axis_of((8, 8, 4)) == 2
    assert channel_axis_of((28, 28)) is None
    assert channel_axis_of((3, 32, 32), -1) == 2
    with pytest.raises(InputError, match="channel_axis"):
        channel_axis_of((16, 8, 8))
    with pytest.raises(InputError, match="kind='bar'"):
        channel_axis_of((2, 3, 8, 8))


def test_colour_scale() -> None:
    assert rgba(0.0, 1.0)[3] == 0.0
    assert rgba(2.0, 1.0) == (*POSITIVE, 1.0)
    assert rgba(-0.5, 1.0) == (*NEGATIVE, 0.5)
    values = np.concatenate([np.linspace(-1, 1, 1000), [50.0]])
    assert robust_max([values]) < 2.0  # one outlier does not set the scale
    assert robust_max([np.zeros(5)]) == 1.0


# --- text -----------------------------------------------------------------------------------------

TOKENS = ["the", "movie", "was", "<not>", "good", "&", "the", "acting", "was", "great", "!"] + ["<pad>"] * 9


def test_text_html_colours_each_token_by_its_summed_value(text: Explanation, tmp_path: Path) -> None:
    path = tmp_path / "text.html"
    tokens = [TOKENS, [f"w{i}" for i in range(20)]]
    plot(text, path, tokens=tokens)
    page = path.read_text(encoding="utf-8")
    spans = re.findall(
        r'<span class="tok" style="background: rgba\((\d+), (\d+), (\d+), ([\d.]+)\)[^"]*" '
        r'title="([^"]+)">([^<]*)</span>',
        page,
    )
    assert len(spans) == 2 * 20
    per_token = text.values.sum(axis=2)[..., 0].ravel()  # the embedding axis is summed
    shown = np.array([float(s[4]) for s in spans])
    np.testing.assert_allclose(shown, per_token, rtol=1e-3, atol=1e-7)
    assert [html.unescape(s[5]) for s in spans[:20]] == TOKENS  # escaped, in order
    for r, _, b, alpha, value, _ in spans:
        if float(alpha) > 0:
            assert (int(r) > int(b)) == (float(value) > 0)
    assert "<not>" not in page


def test_text_png(text: Explanation, tmp_path: Path) -> None:
    path = tmp_path / "text.png"
    plot(text, path, tokens=TOKENS, sample=0)
    img = _read(path)
    _assert_drawn(img)
    assert _tinted(img, POSITIVE).any() and _tinted(img, NEGATIVE).any()
    assert 500 <= _pixel_size(path)[0] <= 900  # cut to its widest line of tokens, at most 9 in at 100 dpi


def test_text_needs_one_token_per_position(text: Explanation, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="20 token positions but 11"):
        plot(text, tmp_path / "t.html", tokens=TOKENS[:11], sample=0)
    with pytest.raises(InputError, match="one sequence but 2 samples"):
        plot(text, tmp_path / "t.html", tokens=TOKENS)
    with pytest.raises(InputError, match="split"):
        plot(text, tmp_path / "t.html", tokens="the movie", sample=0)
    with pytest.raises(InputError, match=r"\.html is for kind='text'"):
        plot(text, tmp_path / "t.html", kind="image")


def _token_model() -> onnx.ModelProto:
    """Token ids (N, 6) int64 -> Embedding(20, 4) -> Relu -> mean over tokens -> Gemm -> 2 logits."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(rng.standard_normal((20, 4)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("Relu", ["emb"], ["act"]),
        helper.make_node("ReduceMean", ["act", "axis1"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_token_ids_are_shown_when_no_tokens_are_given(tmp_path: Path) -> None:
    ids = np.array([[3, 7, 7, 1, 0, 0], [5, 2, 9, 9, 4, 0]], np.int64)
    e = onnxshap.Explainer(_token_model(), baseline_token=0).explain(ids, output=1)
    assert e.values.shape == (2, 6, 1) and e.data.dtype.kind == "i"
    assert auto_kind(e) == "text"
    plot(e, tmp_path / "ids.html")
    page = html.unescape((tmp_path / "ids.html").read_text(encoding="utf-8"))
    shown = re.findall(r'title="([^"]+)">([^<]*)</span>', page)
    assert [t for _, t in shown] == [str(i) for i in ids.ravel()]
    np.testing.assert_allclose([float(v) for v, _ in shown], e.values.ravel(), rtol=1e-3, atol=1e-7)
    assert "sum over the embedding axis" in page
    plot(e, tmp_path / "ids.png", tokens=[["a", "b", "c", "d", "<pad>", "<pad>"]] * 2)
    _assert_drawn(_read(tmp_path / "ids.png"))


def test_long_explanations_show_the_first_rows_and_say_so(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(1, 20, (20, 6)).astype(np.int64)
    e = onnxshap.Explainer(_token_model(), baseline_token=0).explain(ids, output=0)
    plot(e, tmp_path / "first.html")
    page = (tmp_path / "first.html").read_text(encoding="utf-8")
    assert page.count('class="block"') == DEFAULT_ROWS and f"samples 0-{DEFAULT_ROWS - 1} of 20" in page
    plot(e, tmp_path / "all.html", sample=list(range(20)))
    assert (tmp_path / "all.html").read_text(encoding="utf-8").count('class="block"') == 20


# --- bar and waterfall ----------------------------------------------------------------------------


def _bars(img: np.ndarray, colour: tuple[float, float, float]) -> list[tuple[float, int]]:
    """(centre row, width in pixels) of each horizontal run of `colour`, top to bottom."""
    mask = _tinted(img, colour, threshold=0.3)
    rows = np.flatnonzero(mask.sum(axis=1) > 3)
    groups = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1) if rows.size else []
    return [(float(g.mean()), int(mask[g].sum(axis=1).max())) for g in groups]


def test_bar_lengths_follow_mean_abs_value(tabular: Explanation, tmp_path: Path) -> None:
    path = tmp_path / "bar.png"
    plot(tabular, path, output=1)
    img = _read(path)
    _assert_drawn(img)
    widths = [w for _, w in _bars(img, POSITIVE)]
    importance = np.sort(np.abs(tabular.values[..., 1]).mean(axis=0))[::-1]
    assert len(widths) == 10
    np.testing.assert_allclose(widths, importance / importance[0] * widths[0], atol=2.5)


def test_bar_summarises_the_rest_and_takes_names(tabular: Explanation, tmp_path: Path) -> None:
    path = tmp_path / "bar.png"
    plot(tabular, path, output="probs[0]", max_display=4, feature_names=[f"f{i}" for i in range(10)])
    bars = _bars(_read(path), POSITIVE)
    assert len(bars) == 4  # three features and "7 other features"
    all_outputs = tmp_path / "all.png"
    plot(tabular, all_outputs)
    _assert_drawn(_read(all_outputs))
    with pytest.raises(InputError, match="feature_names has 3 entries"):
        plot(tabular, path, feature_names=["a", "b", "c"])


def test_waterfall_one_bar_per_feature_coloured_by_sign(tabular: Explanation, tmp_path: Path) -> None:
    path = tmp_path / "waterfall.png"
    plot(tabular, path, sample=3, output=2)  # auto: one tabular prediction
    img = _read(path)
    _assert_drawn(img)
    phi = tabular.values[3, :, 2]
    assert len(_bars(img, POSITIVE)) == int(np.sum(phi > 0))
    assert len(_bars(img, NEGATIVE)) == int(np.sum(phi < 0))
    one, three = tmp_path / "one.png", tmp_path / "three.png"
    plot(tabular, one, kind="waterfall", sample=3, output=0, max_display=5)
    plot(tabular, three, kind="waterfall", sample=3, max_display=5)  # one panel per output
    assert _pixel_size(three)[1] > 2.5 * _pixel_size(one)[1]
    img = _read(three)
    assert len(_bars(img, POSITIVE)) + len(_bars(img, NEGATIVE)) == 3 * 5  # 4 features + "6 other features"
    with pytest.raises(InputError, match="one prediction"):
        plot(tabular, path, kind="waterfall")


def test_loaded_explanation_plots(tabular: Explanation, tmp_path: Path) -> None:
    tabular.save(tmp_path / "e.npz")
    plot(Explanation.load(tmp_path / "e.npz"), tmp_path / "bar.png")
    _assert_drawn(_read(tmp_path / "bar.png"))


# --- dispatch, errors, global state ---------------------------------------------------------------


def test_auto_kind(
    gray: dict[str, Explanation], rgb: dict[str, Explanation], tabular: Explanation, text: Explanation
) -> None:
    assert auto_kind(gray["nchw"]) == auto_kind(gray["nhwc"]) == "image"
    assert auto_kind(rgb["nchw"]) == auto_kind(rgb["nhwc"]) == "image"
    assert auto_kind(tabular) == "bar"
    assert auto_kind(tabular, sample=0) == "waterfall"
    assert auto_kind(text, tokens=[TOKENS] * 2) == "text"
    assert auto_kind(text) == "image"  # (tokens, features): a 2-D heat map


def test_option_errors(tabular: Explanation, gray: dict[str, Explanation], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="tokens= does not apply to kind='bar'"):
        plot(tabular, tmp_path / "p.png", kind="bar", tokens=["a"])
    with pytest.raises(InputError, match="channel_axis= does not apply to kind='waterfall'"):
        plot(tabular, tmp_path / "p.png", kind="waterfall", sample=0, channel_axis=0)
    with pytest.raises(InputError, match="kind must be one of"):
        plot(tabular, tmp_path / "p.png", kind="heatmap")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="use one of"):
        plot(tabular, tmp_path / "p.jpeg")
    with pytest.raises(InputError, match="out of range"):
        plot(tabular, tmp_path / "p.png", sample=12)
    with pytest.raises(InputError, match="not among the explained outputs"):
        plot(tabular, tmp_path / "p.png", output="probs[7]")
    with pytest.raises(InputError, match="out of range"):
        plot(gray["nchw"], tmp_path / "p.png", output=2)  # two outputs were explained
    two = Explanation(
        values={"a": tabular.values, "b": tabular.values},
        base_values=tabular.base_values,
        data={"a": tabular.data, "b": tabular.data},
        prediction=tabular.prediction,
        residual=tabular.residual,
        input_names=["a", "b"],
        output_names=tabular.output_names,
        output_indices=tabular.output_indices,
        all_output_names=tabular.all_output_names,
    )
    with pytest.raises(InputError, match="choose one with input="):
        plot(two, tmp_path / "p.png")
    plot(two, tmp_path / "p.png", input="b")
    assert (tmp_path / "p.png").is_file()


def test_predicted_outputs_are_labelled_per_sample(digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, bg = digits
    e = onnxshap.Explainer(_gray_cnn(False), bg[:4]).explain(x[:3], output="predicted")
    from onnxshap._plots import _view

    view = _view(e, None, None, None)
    assert [row[0] for row in view.labels] == [f"logits[{int(i)}]" for i in e.output_indices[:, 0]]
    plot(e, tmp_path / "pred.png")
    _assert_drawn(_read(tmp_path / "pred.png"))


def test_no_pyplot_state(gray: dict[str, Explanation], tmp_path: Path) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    had_pyplot = "matplotlib.pyplot" in sys.modules
    figures = sys.modules["matplotlib.pyplot"].get_fignums() if had_pyplot else None
    plot(gray["nchw"], tmp_path / "b.png", sample=0)
    assert matplotlib.get_backend() == backend
    if had_pyplot:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures
    else:
        assert "matplotlib.pyplot" not in sys.modules


def test_missing_matplotlib_is_a_clear_error(
    text: Explanation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"onnxshap\[plot\]") as info:
        plot(text, tmp_path / "t.png", tokens=TOKENS, sample=0)
    assert isinstance(info.value, MissingDependencyError) and isinstance(info.value, onnxshap.OnnxShapError)
    plot(text, tmp_path / "t.html", tokens=TOKENS, sample=0)  # the HTML view needs no matplotlib
    assert "<pad>" in html.unescape((tmp_path / "t.html").read_text(encoding="utf-8"))
