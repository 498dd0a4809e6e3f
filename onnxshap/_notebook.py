"""How an `Explanation` shows in Jupyter: a short summary with the default plot inline."""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

import numpy as np

from onnxshap._display import TextHTML, figure_png
from onnxshap._errors import OnnxShapError

if TYPE_CHECKING:
    from onnxshap._explanation import Explanation

#: The inline plot of `Explanation._repr_html_`: image and text plots show the first REPR_ROWS
#: samples and REPR_OUTPUTS outputs (legible at a notebook's width), figures at REPR_DPI.
REPR_ROWS = 4
REPR_DPI = 72
#: Also the outputs named in the summary before the rest is counted.
REPR_OUTPUTS = 4
_NOTE = 'style="color: #666; font-size: 0.85em"'


def _shapes(e: Explanation) -> str:
    parts = []
    for name in e.input_names:
        shape = tuple(np.asarray(e.values_for(name)).shape[1:-1])
        parts.append(f"{name} {shape}")
    return ", ".join(parts)


def _outputs(e: Explanation) -> str:
    names = [str(n) for n in e.output_names]
    shown = ", ".join(names[:REPR_OUTPUTS]) + (f", ... ({len(names)} in all)" if len(names) > REPR_OUTPUTS else "")
    return f"{len(names)} output{'s' if len(names) != 1 else ''}: {shown}"


def _base(e: Explanation) -> str:
    base = np.asarray(e.base_values, dtype=np.float64)  # (n, k)
    if base.size == 0:
        return "base value: none"
    if np.allclose(base, base[:1], rtol=1e-6, atol=1e-12):  # one background mean per output: the usual case
        values = [f"{v:.4g}" for v in base[0]]
        shown = ", ".join(values[:REPR_OUTPUTS]) + (", ..." if len(values) > REPR_OUTPUTS else "")
        return f"base value E[f(X)]: {shown}"
    return f"base value E[f(X)]: {base.min():.4g} to {base.max():.4g} (per sample)"


#: (max relative residual, tolerance, passed): `onnxshap._explanation.completeness`.
Verdict = tuple[float, float, bool]


def _verdict(verdict: Verdict) -> str:
    worst, rtol, passed = verdict
    return f"max relative residual {worst:.2g} (tolerance {rtol:g}): " + ("complete" if passed else "NOT complete")


def explanation_repr(e: Explanation, verdict: Verdict) -> str:
    """One line: samples, inputs, outputs, completeness."""
    n = int(np.asarray(e.prediction).shape[0])
    return f"Explanation({n} sample{'s' if n != 1 else ''}; input {_shapes(e)}; {_outputs(e)}; {_verdict(verdict)})"


def _inline_plot(e: Explanation) -> str:
    """The default plot (kind="auto") of the first REPR_ROWS samples as HTML, or a note why there is none."""
    from onnxshap._plots import auto_kind, plot

    name = e.input_names[0]
    n, k = np.asarray(e.values_for(name)).shape[0], len(e.output_names)
    try:
        kind = auto_kind(e, input=name)
        # Bars average over every sample; image and text plots are cut to keep the cell small.
        cut = kind in ("image", "text")
        sample = list(range(min(n, REPR_ROWS))) if cut else None
        output = list(range(min(k, REPR_OUTPUTS))) if cut else None
        # Without a path the text view is HTML, which has no dpi.
        shown = plot(e, None, kind, sample=sample, output=output, input=name, dpi=REPR_DPI)
    except ImportError:  # MissingDependencyError: without matplotlib, the summary alone
        return f'<div {_NOTE}>pip install "onnxshap[plot]" to see the plot here.</div>'
    except OnnxShapError as exc:
        return f"<div {_NOTE}>No default plot: {html.escape(str(exc))}</div>"
    caption = []
    if cut and n > REPR_ROWS:
        caption.append(f"samples 0-{REPR_ROWS - 1} of {n}")
    if cut and k > REPR_OUTPUTS:
        caption.append(f"outputs 0-{REPR_OUTPUTS - 1} of {k}")
    if caption:
        caption[-1] += ": e.plot(sample=..., output=...) shows others"
    if len(e.input_names) > 1:
        caption.append(f"input {name}: e.plot(input=...) shows the others")
    note = f"<div {_NOTE}>{html.escape('; '.join(caption))}</div>" if caption else ""
    if isinstance(shown, TextHTML):
        return note + shown._repr_html_()
    assert shown is not None
    png = base64.b64encode(figure_png(shown)).decode("ascii")
    shown.clear()
    return f'{note}<img src="data:image/png;base64,{png}" style="max-width: 100%" alt="{html.escape(kind)} plot">'


def explanation_html(e: Explanation, verdict: Verdict) -> str:
    """The summary and the default plot, for Jupyter."""
    n = int(np.asarray(e.prediction).shape[0])
    lines = [
        f"<b>Explanation</b>: {n} sample{'s' if n != 1 else ''}; input {html.escape(_shapes(e))} per sample",
        html.escape(_outputs(e)),
        html.escape(_base(e)),
        "completeness: " + html.escape(_verdict(verdict)),
    ]
    if e.gradient_nodes:
        lines.append(f"{len(e.gradient_nodes)} node(s) attributed with plain gradients, which are not complete")
    summary = "<br>\n".join(lines)
    return f'<div class="onnxshap-explanation">\n<div style="font-family: monospace">{summary}</div>\n{_inline_plot(e)}\n</div>'
