"""Plots of an `Explanation`: image overlays, coloured tokens, feature-importance bars, waterfalls.

Every plot colours negative attributions blue and positive ones red on a scale symmetric around zero.
matplotlib (the `onnxshap[plot]` extra) is imported only when a figure is drawn; figures are plain
`matplotlib.figure.Figure` objects rendered by the Agg canvas, never pyplot, so no global state (the
current figure, the backend) is read or changed and nothing is left open. The HTML text view needs no
matplotlib at all.

Entry point: `plot(explanation, path, kind="auto", ...)`; the individual kinds are `image_plot`,
`text_plot`, `bar_plot` and `waterfall_plot`. Each writes `path` whole or not at all, or without a
path returns what it drew: a Figure (shown inline by Jupyter) or, for the HTML text view, a `TextHTML`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from onnxshap._display import TextHTML, show_inline
from onnxshap._errors import InputError, MissingDependencyError
from onnxshap._files import write_whole

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

    from onnxshap._explanation import Explanation

Kind = Literal["auto", "image", "text", "bar", "waterfall"]
KINDS: tuple[str, ...] = ("auto", "image", "text", "bar", "waterfall")

#: Negative attributions are drawn in this blue, positive ones in this red (RGB in [0, 1]); the
#: opacity grows linearly with |value| / vmax, so zero is transparent.
NEGATIVE = (0.129, 0.400, 0.675)
POSITIVE = (0.698, 0.094, 0.169)
#: The colour scale of image and text plots runs from -vmax to +vmax, vmax this percentile of |value|
#: over everything in the figure: one shared scale keeps panels comparable, and a few extreme pixels
#: do not wash out the rest (larger values saturate; the colour bar then shows arrow ends).
ROBUST_PERCENTILE = 99.5
#: Sizes of a channel axis the image plot recognises (grayscale, RGB, RGBA).
CHANNEL_SIZES = (1, 3, 4)
#: Most panels (sample rows x columns) one figure may hold; beyond it choose sample= / output=.
MAX_PANELS = 400
#: Image and text plots of an explanation with more samples show the first this many unless
#: sample= chooses (the figure says so).
DEFAULT_ROWS = 16
#: Side of one image panel, in inches.
PANEL_INCHES = 2.2
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")

Selector = int | Sequence[int] | None
OutputSelector = int | str | Sequence[int | str] | None


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.colors
        import matplotlib.figure
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "Plotting needs matplotlib, which is not installed. Install the plot extra: "
            "pip install 'onnxshap[plot]' (or pip install 'matplotlib>=3.8'). "
            "The HTML text view (kind='text' with an .html path) works without it."
        ) from exc
    return matplotlib


# --- what to show ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """The part of an Explanation that one plot shows."""

    input_name: str
    values: np.ndarray  # (n_sel, *input_shape, k_sel)
    data: np.ndarray | None  # (n_sel, *input_shape), None for intermediate tensors
    samples: list[int]  # indices into the explanation's sample axis
    outputs: list[int]  # indices into the explanation's output axis
    labels: list[list[str]]  # [row][column]: label of each (sample, output), e.g. "probs[3]"
    column_labels: list[str]  # the explanation's output_names of the selected outputs
    base: np.ndarray  # (n_sel, k_sel)
    prediction: np.ndarray  # (n_sel, k_sel)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:-1])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape, dtype=np.int64))


def input_name(explanation: Explanation, input: str | None) -> str:
    """The explained input to plot: `input`, or the only one."""
    names = list(explanation.input_names)
    if input is None:
        if len(names) == 1:
            return names[0]
        raise InputError(f"The explanation covers {len(names)} inputs {names}; choose one with input=...")
    if input not in names:
        raise InputError(f"Input {input!r} is not among the explained inputs {names}.")
    return input


def _sample_indices(sample: Selector, n: int) -> list[int]:
    if sample is None:
        return list(range(n))
    items = [sample] if isinstance(sample, (int, np.integer)) else list(sample)
    out = []
    for s in items:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
            raise InputError(f"sample must be an int or a list of ints, not {s!r}.")
        if not -n <= int(s) < n:
            raise InputError(f"sample {int(s)} is out of range: the explanation has {n} sample(s) (0..{n - 1}).")
        out.append(int(s) % n)
    if not out:
        raise InputError("sample is an empty list; choose at least one sample.")
    return out


def output_indices(explanation: Explanation, output: OutputSelector) -> list[int]:
    """Positions on the explanation's output axis: ints (negative allowed) or labels from output_names."""
    names = list(explanation.output_names)
    k = int(explanation.base_values.shape[1])
    if output is None:
        return list(range(k))
    items = [output] if isinstance(output, (int, np.integer, str)) else list(output)
    out = []
    for o in items:
        if isinstance(o, str):
            if o not in names:
                raise InputError(f"Output {o!r} is not among the explained outputs {names}.")
            out.append(names.index(o))
        elif isinstance(o, (int, np.integer)) and not isinstance(o, (bool, np.bool_)):
            if not -k <= int(o) < k:
                raise InputError(
                    f"output {int(o)} is out of range: the explanation has {k} explained output(s) {names}. "
                    "It indexes the explanation's outputs, not the model's."
                )
            out.append(int(o) % k)
        else:
            raise InputError(f"output must be an int, an output name or a list of them, not {o!r}.")
    if not out:
        raise InputError("output is an empty list; choose at least one output.")
    return out


def output_label(explanation: Explanation, b: int, j: int) -> str:
    """The label of output column j for sample b (with output='predicted' it differs per sample)."""
    names = list(explanation.all_output_names)
    indices = np.asarray(explanation.output_indices)
    if names and indices.ndim == 2 and b < indices.shape[0] and j < indices.shape[1]:
        flat = int(indices[b, j])
        if 0 <= flat < len(names):
            return names[flat]
    return str(explanation.output_names[j])


def _data_for(explanation: Explanation, name: str) -> np.ndarray | None:
    data = explanation.data
    value = data.get(name) if isinstance(data, dict) else data
    return None if value is None else np.asarray(value)


def _view(explanation: Explanation, input: str | None, sample: Selector, output: OutputSelector) -> _View:
    name = input_name(explanation, input)
    values = np.asarray(explanation.values_for(name))
    n = values.shape[0]
    samples = _sample_indices(sample, n)
    outputs = output_indices(explanation, output)
    data = _data_for(explanation, name)
    if data is not None and data.shape != values.shape[:-1]:
        data = None  # an explanation built by hand with mismatched data: plot the values alone
    rows, cols = np.array(samples)[:, None], np.array(outputs)[None, :]
    return _View(
        input_name=name,
        values=values[samples][..., outputs].astype(np.float64),
        data=None if data is None else data[samples],
        samples=samples,
        outputs=outputs,
        labels=[[output_label(explanation, b, j) for j in outputs] for b in samples],
        column_labels=[str(explanation.output_names[j]) for j in outputs],
        base=np.asarray(explanation.base_values, dtype=np.float64)[rows, cols],
        prediction=np.asarray(explanation.prediction, dtype=np.float64)[rows, cols],
    )


def _default_rows(explanation: Explanation, input: str | None, sample: Selector) -> tuple[Selector, str]:
    """sample=None on a long explanation: the first DEFAULT_ROWS samples, and a note saying so."""
    n = np.asarray(explanation.values_for(input_name(explanation, input))).shape[0]
    if sample is not None or n <= DEFAULT_ROWS:
        return sample, ""
    return list(range(DEFAULT_ROWS)), f"samples 0-{DEFAULT_ROWS - 1} of {n}; choose others with sample=[...]"


def _feature_names(view: _View, feature_names: Sequence[str] | None) -> list[str]:
    n = view.n_features
    if feature_names is not None:
        names = [str(f) for f in feature_names]
        if len(names) != n:
            raise InputError(
                f"feature_names has {len(names)} entries but input {view.input_name!r} has {n} features "
                f"(per-sample shape {list(view.input_shape)})."
            )
        return names
    shape = view.input_shape
    if len(shape) <= 1:
        return [f"{view.input_name}[{i}]" for i in range(n)]
    return [f"{view.input_name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


# --- shared drawing helpers -----------------------------------------------------------------------


def rgba(value: float, vmax: float) -> tuple[float, float, float, float]:
    """Colour of an attribution: red (positive) or blue (negative), opacity |value| / vmax (clipped)."""
    t = float(np.clip(value / vmax, -1.0, 1.0)) if vmax > 0 and np.isfinite(value) else 0.0
    r, g, b = POSITIVE if t > 0 else NEGATIVE
    return (r, g, b, abs(t))


def _colormap() -> Colormap:
    from matplotlib.colors import ListedColormap

    return ListedColormap([rgba(t, 1.0) for t in np.linspace(-1.0, 1.0, 257)], name="onnxshap_diverging")


def robust_max(arrays: Sequence[np.ndarray]) -> float:
    """vmax for a symmetric colour scale: the ROBUST_PERCENTILE of |value| (max |value| if that is 0; 1 if all are 0)."""
    flat = np.abs(np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64))
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 1.0
    vmax = float(np.percentile(flat, ROBUST_PERCENTILE))
    if vmax <= 0:
        vmax = float(flat.max())
    return vmax if vmax > 0 else 1.0


def _check_panels(count: int) -> None:
    if count > MAX_PANELS:
        raise InputError(
            f"This plot would draw {count} panels (more than {MAX_PANELS}); choose fewer samples with sample=... "
            "or fewer outputs with output=..."
        )


def check_suffix(path: Path, *, html_ok: bool) -> None:
    """Refuse a plot file name whose suffix names no format the plot can write."""
    suffix = path.suffix.lower()
    allowed = FIGURE_SUFFIXES + ((".html",) if html_ok else ())
    if suffix not in allowed:
        extra = "" if html_ok else " (.html is for kind='text')"
        raise InputError(f"Cannot write a plot to {str(path)!r}: use one of {list(allowed)}{extra}.")


def _new_figure(width: float, height: float, dpi: float) -> Figure:
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _target(path: str | Path | None, *, html_ok: bool) -> Path | None:
    """The file a kind draws to (its suffix checked before anything is drawn), or None: return it."""
    if path is None:
        return None
    path = Path(path)
    check_suffix(path, html_ok=html_ok)
    return path


def _deliver(fig: Figure, path: Path | None) -> Figure | None:
    """Write the figure whole or not at all (`_files.write_whole`); without a path, return it for Jupyter."""
    if path is None:
        return show_inline(fig)
    try:
        write_whole(path, lambda tmp: fig.savefig(tmp, dpi=fig.dpi, facecolor="white"))
    finally:
        fig.clear()
    return None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


# --- image ----------------------------------------------------------------------------------------


def channel_axis_of(shape: Sequence[int], channel_axis: int | None = None) -> int | None:
    """The channel axis of a per-sample image shape, or None for a 2-D (H, W) input.

    Rank 3: the leading axis if it has 1, 3 or 4 entries (NCHW), else the trailing one (NHWC);
    `channel_axis` overrides (0 / -1 / 2).
    """
    shape = tuple(int(d) for d in shape)
    rank = len(shape)
    if channel_axis is not None:
        if rank != 3 or not -3 <= int(channel_axis) < 3:
            raise InputError(
                f"channel_axis={channel_axis} does not fit a per-sample shape {list(shape)}; it needs rank 3."
            )
        return int(channel_axis) % 3
    if rank == 2:
        return None
    if rank == 3:
        if shape[0] in CHANNEL_SIZES:
            return 0
        if shape[-1] in CHANNEL_SIZES:
            return 2
        raise InputError(
            f"Cannot tell which axis of the per-sample shape {list(shape)} holds the channels: neither the first "
            f"nor the last has {', '.join(map(str, CHANNEL_SIZES))} entries. Pass channel_axis=0 (channels first) "
            "or channel_axis=-1 (channels last)."
        )
    raise InputError(
        f"An image plot needs a per-sample shape (H, W) or one with a channel axis (C, H, W) / (H, W, C), "
        f"not {list(shape)}. Use kind='bar' for a per-feature summary."
    )


def _short(name: str, limit: int = 22) -> str:
    """A name that fits a panel title: its end kept (file names differ at the end), '…' in front."""
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def _looks_like_image(shape: Sequence[int]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and (shape[0] in CHANNEL_SIZES or shape[-1] in CHANNEL_SIZES))


def _display_image(data: np.ndarray, axis: int | None) -> np.ndarray:
    """(H, W) gray or (H, W, 3) RGB in [0, 1]: kept if the data is in [0, 1], /255 if in [0, 255], else min-max scaled."""
    img = np.asarray(data, dtype=np.float64)
    if axis is not None:
        img = np.moveaxis(img, axis, -1)
    finite = img[np.isfinite(img)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0 and hi <= 1:
        scaled = img
    elif lo >= 0 and hi <= 255:
        scaled = img / 255.0
    else:
        scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    scaled = np.nan_to_num(np.clip(scaled, 0.0, 1.0))
    if axis is None:
        return scaled
    channels = scaled.shape[-1]
    if channels == 1:
        return scaled[..., 0]
    if channels in (3, 4):
        return scaled[..., :3]  # alpha dropped: the panel shows the colours
    return scaled.mean(axis=-1)


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else img @ np.array([0.299, 0.587, 0.114])


def image_plot(
    explanation: Explanation,
    path: str | Path | None = None,
    *,
    sample: Selector = None,
    output: OutputSelector = None,
    input: str | None = None,
    channel_axis: int | None = None,
    sample_names: Sequence[str] | None = None,
    dpi: float = 100,
) -> Figure | None:
    """One row per sample: the image, then its attribution heat map for each output, one colour bar.

    The input may be (H, W), (C, H, W) or (H, W, C) per sample (values (n, *input_shape, n_outputs));
    the channel axis is the leading or trailing axis with 1, 3 or 4 entries unless `channel_axis` says
    otherwise. The heat map is the sum of the attributions over channels, drawn over a faded gray copy
    of the image, blue (negative) to red (positive) on one scale for the whole figure, symmetric
    around zero (vmax: the ROBUST_PERCENTILE of |value|). Panel titles give the output's label and the
    model's value f(x). Without data (an intermediate tensor was explained) only the heat maps are drawn.
    With sample=None, an explanation of more than DEFAULT_ROWS samples shows the first DEFAULT_ROWS.
    `sample_names` (one per sample of the explanation, e.g. the image files) label the rows; default
    "sample i".
    """
    target = _target(path, html_ok=False)
    sample, note = _default_rows(explanation, input, sample)
    view = _view(explanation, input, sample, output)
    n_total = np.asarray(explanation.values_for(view.input_name)).shape[0]
    if sample_names is not None and len(sample_names) != n_total:
        raise InputError(
            f"sample_names has {len(sample_names)} entries but the explanation has {n_total} samples; "
            "give one name per sample."
        )
    titles = [
        f"sample {b}" if sample_names is None else f"{_short(str(sample_names[b]))}\nsample {b}" for b in view.samples
    ]
    axis = channel_axis_of(view.input_shape, channel_axis)
    heat = view.values if axis is None else view.values.sum(axis=1 + axis)  # (n, H, W, k)
    n_rows, n_out = len(view.samples), len(view.outputs)
    has_image = view.data is not None
    n_cols = n_out + int(has_image)
    _check_panels(n_rows * n_cols)
    height, width = heat.shape[1:3]
    panel_h = PANEL_INCHES * float(np.clip(height / width, 0.4, 2.5))
    fig = _new_figure(n_cols * PANEL_INCHES + 1.2, n_rows * (panel_h + 0.55) + 0.2, dpi)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    vmax = robust_max([heat])
    cmap = _colormap()
    mappable = None
    for row, b in enumerate(view.samples):
        gray = None
        if has_image:
            assert view.data is not None
            shown = _display_image(view.data[row], axis)
            ax = axes[row, 0]
            ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(titles[row], fontsize=9)
            gray = _gray(shown)
        for col in range(n_out):
            ax = axes[row, col + int(has_image)]
            if gray is not None:
                ax.imshow(gray, cmap="gray", vmin=0, vmax=1, alpha=0.2, interpolation="nearest")
            mappable = ax.imshow(heat[row, ..., col], cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
            # Without the image panel, the first heat map carries the sample's name.
            head = "" if has_image or col else f"{titles[row]}\n"
            ax.set_title(f"{head}{view.labels[row][col]}\nf(x) = {_fmt(view.prediction[row, col])}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    clipped = bool(np.nanmax(np.abs(heat), initial=0.0) > vmax)
    assert mappable is not None  # every view has a sample and an output: a heat map was drawn
    colorbar = fig.colorbar(
        mappable,
        ax=list(axes[:, int(has_image) :].ravel()),
        shrink=0.9 if n_rows == 1 else min(0.8, 0.35 + 0.15 * n_rows),
        extend="both" if clipped else "neither",
    )
    channels = 1 if axis is None else view.input_shape[axis]
    colorbar.set_label("SHAP value" + (f"\n(sum over {channels} channels)" if channels > 1 else ""))
    if note:
        fig.suptitle(note, fontsize=9, color="#444")
    return _deliver(fig, target)


# --- text -----------------------------------------------------------------------------------------


def _token_lists(tokens: Any, samples: list[int], n_total: int, seq_len: int) -> list[list[str]]:
    if isinstance(tokens, str):
        raise InputError(
            "tokens must be a list of strings per sample, not one string; split it first (e.g. text.split())."
        )
    seqs = list(tokens)
    if seqs and all(isinstance(t, str) for t in seqs):
        if len(samples) != 1:
            raise InputError(
                f"tokens is one sequence but {len(samples)} samples are plotted; pass one list of strings per "
                "explained sample, or choose one sample with sample=..."
            )
        chosen = [[str(t) for t in seqs]]
    else:
        if len(seqs) != n_total:
            raise InputError(
                f"tokens has {len(seqs)} sequences but the explanation has {n_total} samples; pass one list of "
                "strings per explained sample (tokens[i] for sample i)."
            )
        chosen = [[str(t) for t in seqs[b]] for b in samples]
    for b, seq in zip(samples, chosen):
        if len(seq) != seq_len:
            raise InputError(
                f"Sample {b} has {seq_len} token positions but {len(seq)} tokens were given; pass one token per "
                "position, padding included (e.g. '<pad>')."
            )
    return chosen


def _has_ids(data: np.ndarray | None) -> bool:
    return data is not None and data.dtype.kind in "iu" and data.ndim == 2


def _id_tokens(view: _View, seq_len: int) -> list[list[str]]:
    """The token ids themselves as the tokens, for token-id inputs plotted without tokens=."""
    if not _has_ids(view.data):
        raise InputError(
            "kind='text' needs tokens=..., the token strings of each sample (only token-id inputs can do without)."
        )
    assert view.data is not None
    return [[str(int(t)) for t in row[:seq_len]] for row in view.data]


def _shown_token(token: str) -> str:
    token = token.replace("\n", "\\n").replace("\t", "\\t")
    return token if token.strip() else repr(token)


def _per_token(view: _View) -> np.ndarray:
    if not view.input_shape:
        raise InputError(f"A text plot needs a sequence axis, but input {view.input_name!r} has one value per sample.")
    n, seq_len, k = view.values.shape[0], view.input_shape[0], view.values.shape[-1]
    return view.values.reshape(n, seq_len, -1, k).sum(axis=2)  # (n, seq_len, k)


def text_plot(
    explanation: Explanation,
    path: str | Path | None = None,
    tokens: Sequence[str] | Sequence[Sequence[str]] | None = None,
    *,
    sample: Selector = None,
    output: OutputSelector = None,
    input: str | None = None,
    dpi: float = 100,
) -> TextHTML | Figure | None:
    """Tokens coloured by their attribution, one block per (sample, output); HTML or an image by suffix.

    The first per-sample axis of the input is the token axis; any further axes (an embedding) are
    summed, so values (n, seq_len, [embedding,] n_outputs) give one value per token. `tokens` is a
    list of strings per explained sample (tokens[i] for sample i), or one list when one sample is
    plotted; each needs exactly seq_len entries. Without tokens, token-id inputs show their ids.
    The .html output needs no matplotlib; hovering a token shows its value. With sample=None, an
    explanation of more than DEFAULT_ROWS samples shows the first DEFAULT_ROWS.
    """
    target = _target(path, html_ok=True)
    sample, note = _default_rows(explanation, input, sample)
    view = _view(explanation, input, sample, output)
    per_token = _per_token(view)
    n_total = np.asarray(explanation.values_for(view.input_name)).shape[0]
    if tokens is None:
        token_lists = _id_tokens(view, per_token.shape[1])
    else:
        token_lists = _token_lists(tokens, view.samples, n_total, per_token.shape[1])
    vmax = robust_max([per_token])
    # Token-id inputs arrive already summed over their embedding (Explanation.embedding_values).
    summed = view.values.ndim > 3 or view.input_name in getattr(explanation, "embedding_values", {})
    _check_panels(len(token_lists) * per_token.shape[2])
    if target is None or target.suffix.lower() == ".html":
        page = _text_html(view, per_token, token_lists, vmax, summed, note)
        if target is None:
            return TextHTML(page)
        write_whole(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
        return None
    else:
        return _text_figure(view, per_token, token_lists, vmax, summed, note, target, dpi)


def _block_title(view: _View, row: int, col: int) -> str:
    base, pred = view.base[row, col], view.prediction[row, col]
    return f"sample {view.samples[row]} · {view.labels[row][col]}: E[f(X)] = {_fmt(base)} → f(x) = {_fmt(pred)}"


def _css(colour: tuple[float, float, float, float]) -> str:
    r, g, b, a = colour
    return f"rgba({round(r * 255)}, {round(g * 255)}, {round(b * 255)}, {a:.3f})"


def _text_html(
    view: _View, per_token: np.ndarray, token_lists: list[list[str]], vmax: float, summed: bool, note: str
) -> str:
    blocks = [f'<div class="head">{html.escape(note)}</div>'] if note else []
    for row, tokens in enumerate(token_lists):
        for col in range(per_token.shape[2]):
            spans = []
            for token, value in zip(tokens, per_token[row, :, col]):
                colour = rgba(value, vmax)
                ink = "#fff" if colour[3] > 0.55 else "#111"
                spans.append(
                    f'<span class="tok" style="background: {_css(colour)}; color: {ink}" '
                    f'title="{value:+.4g}">{html.escape(_shown_token(token))}</span>'
                )
            blocks.append(
                f'<div class="block"><div class="head">{html.escape(_block_title(view, row, col))}</div>'
                f'<div class="tokens">{" ".join(spans)}</div></div>'
            )
    gradient = f"linear-gradient(to right, {_css((*NEGATIVE, 1.0))}, rgba(255, 255, 255, 0), {_css((*POSITIVE, 1.0))})"
    what = "SHAP value per token" + (" (sum over the embedding axis)" if summed else "")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>onnxshap: token attributions</title>\n<style>\n'
        "body { font-family: sans-serif; margin: 1.5em; color: #111; }\n"
        ".block { margin-bottom: 1.2em; }\n.head { font-size: 0.9em; color: #444; margin-bottom: 0.3em; }\n"
        ".tokens { line-height: 2.0; }\n.tok { padding: 0.15em 0.25em; border-radius: 0.25em; }\n"
        ".legend { display: flex; align-items: center; gap: 0.5em; font-size: 0.85em; color: #444; }\n"
        ".bar { width: 16em; height: 0.9em; border: 1px solid #ccc; }\n"
        "</style></head><body>\n"
        + "\n".join(blocks)
        + f'\n<div class="legend"><span>{-vmax:.3g}</span><span class="bar" style="background: {gradient}"></span>'
        f"<span>{vmax:+.3g}</span><span>{html.escape(what)}; one scale for the page, hover a token for its value"
        "</span></div>\n</body></html>\n"
    )


def _text_figure(
    view: _View,
    per_token: np.ndarray,
    token_lists: list[list[str]],
    vmax: float,
    summed: bool,
    note: str,
    path: Path | None,
    dpi: float,
) -> Figure | None:
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import MaxNLocator

    fontsize = 11.0
    px = dpi / 72.0  # pixels per point
    max_width_px = 9.0 * dpi  # tokens wrap at this width; the figure is then cut to the widest line
    min_width_px = 5.0 * dpi  # room for the colour bar and its label
    margin = 0.25 * dpi
    pad = 0.2 * fontsize * px  # the token box's padding (boxstyle pad is a fraction of the font size)
    gap = 2 * pad + 0.3 * fontsize * px
    line_h = fontsize * px * 2.0
    measure = FigureCanvasAgg(Figure(dpi=dpi)).get_renderer()

    def text_width(s: str, size: float = fontsize) -> float:
        return float(measure.get_text_width_height_descent(s, FontProperties(size=size), ismath=False)[0])

    # Lay out in pixels from the top-left, then size the figure to fit: as tall as the lines, as wide
    # as the widest of them (short sequences would otherwise leave the right of the figure blank).
    placed: list[tuple[float, float, str, dict[str, Any]]] = []
    right = 0.0  # the rightmost pixel drawn
    y = margin
    if note:
        y += line_h * 0.8
        placed.append((margin, y, note, {"fontsize": 9, "color": "#444"}))
        right = max(right, margin + text_width(note, 9))
    for row, tokens in enumerate(token_lists):
        for col in range(per_token.shape[2]):
            y += line_h * 0.8
            title = _block_title(view, row, col)
            placed.append((margin, y, title, {"fontsize": 9, "color": "#444"}))
            right = max(right, margin + text_width(title, 9))
            y += line_h
            x = margin + pad
            for token, value in zip(tokens, per_token[row, :, col]):
                shown = _shown_token(token)
                w = text_width(shown)
                if x + w + pad > max_width_px - margin and x > margin + pad:
                    x, y = margin + pad, y + line_h
                right = max(right, x + w + pad)
                colour = rgba(value, vmax)
                placed.append(
                    (
                        x,
                        y,
                        shown,
                        {
                            "fontsize": fontsize,
                            "color": "white" if colour[3] > 0.55 else "#111",
                            "bbox": {"boxstyle": "round,pad=0.2", "facecolor": colour, "edgecolor": "none"},
                        },
                    )
                )
                x += w + gap
            y += line_h * 0.6
    bar_h = 0.9 * dpi
    height_px = y + bar_h + margin
    width_px = min(max(right + margin, min_width_px), max_width_px)
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    for x, y, s, style in placed:
        fig.text(x / width_px, 1 - y / height_px, s, ha="left", va="baseline", parse_math=False, **style)
    bar_w = min(3.6 * dpi, 0.6 * width_px)  # centred, at most 3.6 in wide
    cax = fig.add_axes(
        ((1 - bar_w / width_px) / 2, (margin + 0.45 * dpi) / height_px, bar_w / width_px, 0.12 * dpi / height_px)
    )
    clipped = bool(np.nanmax(np.abs(per_token), initial=0.0) > vmax)
    colorbar = fig.colorbar(
        ScalarMappable(Normalize(-vmax, vmax), _colormap()),
        cax=cax,
        orientation="horizontal",
        extend="both" if clipped else "neither",
    )
    colorbar.set_label("SHAP value per token" + (" (sum over the embedding axis)" if summed else ""), fontsize=9)
    colorbar.ax.tick_params(labelsize=8)
    colorbar.ax.xaxis.set_major_locator(MaxNLocator(nbins=4, symmetric=True))
    return _deliver(fig, path)


# --- bar and waterfall ----------------------------------------------------------------------------


def bar_plot(
    explanation: Explanation,
    path: str | Path | None = None,
    *,
    sample: Selector = None,
    output: OutputSelector = None,
    input: str | None = None,
    feature_names: Sequence[str] | None = None,
    max_display: int = 20,
    dpi: float = 100,
) -> Figure | None:
    """Mean |value| per feature over the samples, largest at the top; one bar colour per output.

    Features beyond `max_display - 1` are summed into one "N other features" bar. Inputs with more
    than one axis are flattened (names like x[0,3]). `feature_names` (one per feature) replaces the
    default names input[i].
    """
    target = _target(path, html_ok=False)
    if max_display < 2:
        raise InputError(f"max_display must be at least 2, not {max_display}.")
    view = _view(explanation, input, sample, output)
    names = _feature_names(view, feature_names)
    n, k = len(view.samples), len(view.outputs)
    importance = np.abs(view.values.reshape(n, -1, k)).mean(axis=0)  # (F, k)
    order = np.argsort(-importance.sum(axis=1), kind="stable")
    rows = [(names[i], importance[i]) for i in order]
    if len(rows) > max_display:
        rest = order[max_display - 1 :]
        rows = rows[: max_display - 1] + [(f"{len(rest)} other features", importance[rest].sum(axis=0))]
    fig = _new_figure(7.5, 1.2 + len(rows) * (0.28 + 0.1 * min(k, 5)), dpi)
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1].astype(np.float64)  # first row at the top
    height = 0.8 / k
    palette = [POSITIVE] if k == 1 else [tuple(c) for c in _tab10(k)]
    for j in range(k):
        widths = np.array([imp[j] for _, imp in rows])
        bars = ax.barh(
            y + (k - 1 - 2 * j) * height / 2,
            widths,
            height=height * 0.95,
            color=palette[j],
            label=view.column_labels[j],
        )
        if k == 1:
            ax.bar_label(bars, labels=[f"{w:.3g}" for w in widths], padding=3, fontsize=8)
    ax.set_yticks(y, [name for name, _ in rows], fontsize=9)
    ax.set_xlabel("mean |SHAP value|")
    ax.set_title(f"{view.input_name}: mean |SHAP value| over {n} sample{'s' if n != 1 else ''}", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(x=0.12)
    if k > 1:
        ax.legend(fontsize=8, loc="lower right", frameon=False)
    return _deliver(fig, target)


def _tab10(k: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(j % cmap.N)[:3] for j in range(k)]


def waterfall_plot(
    explanation: Explanation,
    path: str | Path | None = None,
    *,
    sample: int | None = None,
    output: OutputSelector = None,
    input: str | None = None,
    feature_names: Sequence[str] | None = None,
    max_display: int = 10,
    dpi: float = 100,
) -> Figure | None:
    """How one prediction gets from the base value E[f(X)] to f(x), feature by feature.

    One panel per selected output. Features are sorted by |value|, largest at the top; those beyond
    `max_display - 1` are summed into one bar at the bottom. Bars start at E[f(X)] at the bottom and
    end at E[f(X)] + sum(values) = f(x) (up to the explanation's residual) at the top; red pushes the
    prediction up, blue down. Labels show the feature's value in the sample when the data is known.
    """
    target = _target(path, html_ok=False)
    if max_display < 2:
        raise InputError(f"max_display must be at least 2, not {max_display}.")
    n_total = np.asarray(explanation.values_for(input_name(explanation, input))).shape[0]
    if sample is None:
        if n_total != 1:
            raise InputError(f"A waterfall shows one prediction; choose it with sample=... (0..{n_total - 1}).")
        sample = 0
    if not isinstance(sample, (int, np.integer)) or isinstance(sample, (bool, np.bool_)):
        raise InputError(f"A waterfall shows one prediction: sample must be one int, not {sample!r}.")
    view = _view(explanation, input, int(sample), output)
    names = _feature_names(view, feature_names)
    data = None if view.data is None else view.data.reshape(-1)
    k = len(view.outputs)
    _check_panels(k)
    n_rows = min(view.n_features, max_display)
    fig = _new_figure(8.0, k * (1.3 + 0.38 * n_rows) + 0.2, dpi)
    axes = fig.subplots(k, 1, squeeze=False)[:, 0]
    for col, ax in enumerate(axes):
        phi = view.values[0, ..., col].reshape(-1)
        order = np.argsort(-np.abs(phi), kind="stable")
        labels = [names[i] + (f" = {data[i]:.3g}" if data is not None else "") for i in order]
        contrib = [float(phi[i]) for i in order]
        if len(order) > max_display:
            rest = order[max_display - 1 :]
            labels = labels[: max_display - 1] + [f"{len(rest)} other features"]
            contrib = contrib[: max_display - 1] + [float(phi[rest].sum())]
        base, pred = float(view.base[0, col]), float(view.prediction[0, col])
        count = len(contrib)
        y = np.arange(count)[::-1].astype(np.float64)  # largest contribution on top
        # Accumulate from the bottom row (smallest) up to the top row.
        starts = base + np.concatenate([[0.0], np.cumsum(contrib[::-1])[:-1]])[::-1]
        ends = starts + np.array(contrib)
        colours = [POSITIVE if c > 0 else NEGATIVE for c in contrib]
        ax.barh(y, contrib, left=starts, height=0.6, color=colours)
        for yi, e, c in zip(y, ends, contrib):  # the value beside the bar's far end
            ax.text(e, yi, f" {c:+.3g} ", va="center", ha="left" if c >= 0 else "right", fontsize=8, color="#333")
        for yi, e in zip(y[1:], ends[1:]):  # connectors: each bar starts where the one below ends
            ax.plot([e, e], [yi + 0.3, yi + 0.7], color="#888", lw=0.8)
        ax.axvline(base, color="#888", ls="--", lw=0.8)
        ax.axvline(pred, color="#333", ls=":", lw=0.8)
        ax.set_yticks(y, labels, fontsize=9)
        ax.set_ylim(-1.1, count + 0.3)
        note = {
            "ha": "center",
            "va": "center",
            "fontsize": 8,
            "bbox": {"facecolor": "white", "edgecolor": "none", "pad": 1},
        }
        ax.text(base, -0.75, f"E[f(X)] = {_fmt(base)}", color="#555", **note)
        ax.text(pred, count - 0.05, f"f(x) = {_fmt(pred)}", color="#111", **note)
        ax.set_title(
            f"sample {view.samples[0]} · {view.labels[0][col]}: f(x) = {_fmt(pred)}  "
            f"(E[f(X)] = {_fmt(base)}, sum of values = {_fmt(float(phi.sum()))})",
            fontsize=10,
        )
        ax.set_xlabel("model output")
        ax.spines[["top", "right"]].set_visible(False)
        ax.use_sticky_edges = False  # bars start mid-axis: let the margins pad both ends
        ax.margins(x=0.15)
    return _deliver(fig, target)


# --- entry point ----------------------------------------------------------------------------------


def auto_kind(
    explanation: Explanation,
    *,
    input: str | None = None,
    tokens: Any = None,
    sample: Selector = None,
    channel_axis: int | None = None,
) -> Kind:
    """The kind `plot(kind="auto")` draws.

    "text" when tokens are given or the input is token ids, (n, seq_len) integers (the ids are then
    shown as the tokens); "image" when channel_axis is given or the per-sample shape is
    (H, W) or has a channel axis (1, 3 or 4 entries first or last); for one value per feature
    (tabular) "waterfall" when one sample is chosen with an int, else "bar"; "bar" for anything else.
    """
    if tokens is not None:
        return "text"
    if channel_axis is not None:
        return "image"
    name = input_name(explanation, input)
    shape = np.asarray(explanation.values_for(name)).shape[1:-1]
    if len(shape) == 1 and _has_ids(_data_for(explanation, name)):
        return "text"
    if len(shape) <= 1:
        single = isinstance(sample, (int, np.integer)) and not isinstance(sample, (bool, np.bool_))
        return "waterfall" if single else "bar"
    return "image" if _looks_like_image(shape) else "bar"


def plot(
    explanation: Explanation,
    path: str | Path | None = None,
    kind: Kind = "auto",
    *,
    sample: Selector = None,
    output: OutputSelector = None,
    tokens: Sequence[str] | Sequence[Sequence[str]] | None = None,
    input: str | None = None,
    feature_names: Sequence[str] | None = None,
    channel_axis: int | None = None,
    max_display: int | None = None,
    dpi: float = 100,
    sample_names: Sequence[str] | None = None,
) -> Figure | TextHTML | None:
    """Draw an explanation to `path` (.png, .svg or .pdf; .html for kind="text"), or return it.

    Args:
        explanation: the result of `Explainer.explain` (or `Explanation.load`).
        path: the file to write; None returns the plot instead, shown inline by Jupyter: a matplotlib
            `Figure` (`fig.savefig(...)` writes it), or for kind="text" a `TextHTML` (its `.page` is
            the HTML; no matplotlib needed).
        kind: "image" (image beside its attribution heat map, per sample and output), "text" (tokens
            coloured by attribution), "bar" (mean |value| per feature), "waterfall" (one prediction,
            base value to f(x)), or "auto" (see `auto_kind`).
        sample: which samples (an int or a list; default all, for image and text plots the first
            DEFAULT_ROWS). A waterfall needs one.
        output: which explained outputs: positions on the explanation's output axis or labels from
            `output_names` (e.g. "probs[3]"); default all.
        tokens: the token strings per sample, for kind="text" (token-id inputs default to their ids).
        input: which explained input, when the explanation covers several.
        feature_names: names of the features (bar, waterfall).
        channel_axis: the channel axis of a per-sample image shape (image), when it cannot be inferred.
        sample_names: one name per sample of the explanation, e.g. its image files (image row titles).
        max_display: features shown before the rest is summed (bar: 20, waterfall: 10).
        dpi: resolution of raster output.

    Raises:
        InputError: an option that does not fit the explanation or the kind.
        MissingDependencyError: matplotlib is not installed (an ImportError; the HTML text view works without it).
    """
    target = None if path is None else Path(path)
    return _draw(
        explanation,
        target,
        kind,
        sample,
        output,
        tokens,
        input,
        feature_names,
        channel_axis,
        max_display,
        dpi,
        sample_names,
    )


def _draw(
    explanation: Explanation,
    path: Path | None,
    kind: str,
    sample: Selector,
    output: OutputSelector,
    tokens: Any,
    input: str | None,
    feature_names: Sequence[str] | None,
    channel_axis: int | None,
    max_display: int | None,
    dpi: float,
    sample_names: Sequence[str] | None,
) -> Figure | TextHTML | None:
    """`plot` with its options checked against the kind: to a file, or without a path returned."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {list(KINDS)}, not {kind!r}.")
    chosen = (
        auto_kind(explanation, input=input, tokens=tokens, sample=sample, channel_axis=channel_axis)
        if kind == "auto"
        else kind
    )
    options = {
        "tokens": tokens,
        "feature_names": feature_names,
        "channel_axis": channel_axis,
        "max_display": max_display,
        "sample_names": sample_names,
    }
    accepted = {
        "image": {"channel_axis", "sample_names"},
        "text": {"tokens"},
        "bar": {"feature_names", "max_display"},
        "waterfall": {"feature_names", "max_display"},
    }[chosen]
    unused = [name for name, value in options.items() if value is not None and name not in accepted]
    if unused:
        raise InputError(f"{', '.join(f'{u}=' for u in unused)} does not apply to kind={chosen!r}.")
    if chosen == "image":
        return image_plot(
            explanation,
            path,
            sample=sample,
            output=output,
            input=input,
            channel_axis=channel_axis,
            dpi=dpi,
            sample_names=sample_names,
        )
    elif chosen == "text":
        return text_plot(explanation, path, tokens, sample=sample, output=output, input=input, dpi=dpi)
    elif chosen == "bar":
        return bar_plot(
            explanation,
            path,
            sample=sample,
            output=output,
            input=input,
            feature_names=feature_names,
            max_display=20 if max_display is None else max_display,
            dpi=dpi,
        )
    else:
        if sample is not None and not isinstance(sample, (int, np.integer)):
            raise InputError(f"A waterfall shows one prediction: sample must be one int, not {sample!r}.")
        return waterfall_plot(
            explanation,
            path,
            sample=sample,
            output=output,
            input=input,
            feature_names=feature_names,
            max_display=10 if max_display is None else max_display,
            dpi=dpi,
        )
