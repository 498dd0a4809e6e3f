"""What a plot is without a file: a matplotlib Figure that Jupyter shows, or the text view's HTML.

Figures are drawn on the Agg canvas without pyplot (see `_plots`), and IPython's inline formatter for
matplotlib figures is registered only once pyplot is imported; so a figure `plot(path=None)` returns
carries its own `_repr_png_`. The HTML text view becomes a `TextHTML` whose CSS stays inside its cell.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SCOPE = "onnxshap-view"


@dataclass(frozen=True)
class TextHTML:
    """The text plot as HTML, what `plot(kind="text")` returns without a path; Jupyter shows it inline.

    Attributes:
        page: the standalone HTML page, as `plot(path.html, kind="text")` writes it.
    """

    page: str

    def _repr_html_(self) -> str:
        return scoped_html(self.page)


def scoped_html(page: str) -> str:
    """The body of a standalone page with its CSS rules confined to one <div>: a notebook shows outputs
    inside its own page, where the page's `body` rule and class names would restyle every cell."""
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    body = re.search(r"<body>(.*?)</body>", page, re.DOTALL)
    if body is None:
        return page

    def scope(rule: re.Match[str]) -> str:
        selectors = [s.strip() for s in rule.group(1).split(",")]
        scoped = [f".{_SCOPE}" if s == "body" else f".{_SCOPE} {s}" for s in selectors]
        return f"{', '.join(scoped)} {{{rule.group(2)}}}\n"

    css = re.sub(r"([^{}]+?)\s*\{([^}]*)\}", scope, style.group(1)) if style else ""
    return f'<div class="{_SCOPE}"><style>{css}</style>{body.group(1)}</div>'


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, drawn as `plot` writes it to a .png file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor="white")
    return buffer.getvalue()


def show_inline(fig: Figure) -> Figure:
    """Let Jupyter display the figure as a PNG (IPython calls `_repr_png_` when no formatter claims it)."""
    fig._repr_png_ = partial(figure_png, fig)  # type: ignore[attr-defined]  # a partial keeps it picklable
    return fig
