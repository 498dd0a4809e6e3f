"""Explanations in Jupyter: the short repr, the HTML summary with its inline plot, plot() without a path,
and docs/examples/getting-started.ipynb executed in a kernel as a user runs it."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnxshap import Explanation
from onnxshap._display import TextHTML
from onnxshap._errors import MissingDependencyError
from tests.conftest import REPO

NOTEBOOK = REPO / "docs" / "examples" / "getting-started.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def _explanation(n: int, features: int, k: int, *, ids: bool = False, residual: float = 0.0) -> Explanation:
    """A hand-built explanation (no compile): tabular floats, or (n, features) token ids."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, features, k)).astype(np.float32)
    data = rng.integers(1, 50, (n, features)) if ids else rng.standard_normal((n, features)).astype(np.float32)
    base = np.full((n, k), 0.5, np.float32)
    return Explanation(
        values=values,
        base_values=base,
        data=data,
        prediction=base + values.sum(axis=1) + residual,
        residual=np.full((n, k), residual, np.float32),
        input_names=["x"],
        output_names=[f"y[{j}]" for j in range(k)],
        output_indices=np.tile(np.arange(k), (n, 1)),
        all_output_names=[f"y[{j}]" for j in range(k)],
    )


def _png_in(fragment: str) -> bytes:
    match = re.search(r'src="data:image/png;base64,([^"]+)"', fragment)
    assert match, "the HTML holds no inline PNG"
    return base64.b64decode(match.group(1))


def test_repr_is_one_short_line() -> None:
    e = _explanation(50, 100, 3)
    text = repr(e)
    assert "\n" not in text and len(text) < 300, text
    assert text.startswith("Explanation(50 samples; input x (100,); 3 outputs: y[0], y[1], y[2];")
    assert text.endswith(": complete)")


def test_repr_says_when_completeness_fails() -> None:
    text = repr(_explanation(2, 4, 1, residual=1.0))
    assert "NOT complete" in text and "tolerance 0.0001" in text


def test_repr_html_has_the_summary_and_the_default_plot() -> None:
    pytest.importorskip("matplotlib", reason="the inline plot needs matplotlib")
    from PIL import Image

    fragment = _explanation(5, 10, 3)._repr_html_()
    for part in ("5 samples", "3 outputs: y[0], y[1], y[2]", "base value E[f(X)]: 0.5, 0.5, 0.5", "complete"):
        assert part in fragment, part
    with Image.open(io.BytesIO(_png_in(fragment))) as img:  # the bar plot, at the repr's small dpi
        assert 300 < img.width < 1000 and img.height < 1000, img.size


def test_repr_html_without_matplotlib_is_the_summary_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise MissingDependencyError("Plotting needs matplotlib, which is not installed.")

    monkeypatch.setattr("onnxshap._plots._matplotlib", missing)
    fragment = _explanation(5, 10, 3)._repr_html_()
    assert "5 samples" in fragment and "<img" not in fragment
    assert 'pip install "onnxshap[plot]"' in fragment
    tokens = _explanation(2, 6, 1, ids=True)._repr_html_()  # the HTML text view needs no matplotlib
    assert tokens.count('class="tok"') == 12


def test_plot_without_a_path_returns_a_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib", reason="figures need matplotlib")
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    e = _explanation(5, 10, 3)
    fig = e.plot(sample=1, output="y[2]")  # auto: a waterfall
    assert isinstance(fig, Figure)
    assert fig._repr_png_().startswith(PNG)  # what Jupyter shows
    assert list(tmp_path.iterdir()) == []  # nothing written until asked
    fig.savefig(tmp_path / "w.png")
    assert (tmp_path / "w.png").read_bytes().startswith(PNG)
    assert e.plot(tmp_path / "bar.png") is None


def test_text_plot_without_a_path_is_html_scoped_to_its_cell() -> None:
    view = _explanation(2, 6, 1, ids=True).plot(kind="text")
    assert isinstance(view, TextHTML)
    assert view.page.startswith("<!DOCTYPE html>")
    fragment = view._repr_html_()
    assert fragment.count('class="tok"') == 12
    css = re.search(r"<style>(.*?)</style>", fragment, re.DOTALL)
    assert css
    selectors = re.findall(r"([^{}]+)\{", css.group(1))
    assert selectors and all(s.strip().startswith(".onnxshap-view") for s in selectors), selectors


# --- the notebook ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The notebook run in a fresh kernel, from a copy whose ../../models is the repository's."""
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra (nbclient)")
    pytest.importorskip("ipykernel", reason="the notebook test needs the test extra (ipykernel)")
    pytest.importorskip(
        "matplotlib", reason="the notebook draws plots, which need matplotlib (the onnxshap[plot] extra)"
    )
    pytest.importorskip("shap", reason="the notebook converts to shap")
    root = tmp_path_factory.mktemp("notebook")
    (root / "models").symlink_to(REPO / "models", target_is_directory=True)
    folder = root / "docs" / "examples"
    folder.mkdir(parents=True)
    shutil.copy(NOTEBOOK, folder)
    nb = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()  # raises CellExecutionError, with the traceback, when a cell fails
    return nb


def _outputs(nb: Any, pattern: str) -> list[Any]:
    """The outputs of the one code cell whose source matches the regular expression."""
    cells = [c for c in nb.cells if c.cell_type == "code" and re.search(pattern, c.source.strip())]
    assert len(cells) == 1, f"one code cell should match {pattern!r}"
    return list(cells[0].outputs)


def test_notebook_runs_without_errors(executed: Any) -> None:
    for cell in executed.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{cell.source!r} failed: {out.get('ename')}: {out.get('evalue')}"
            if out.output_type == "stream" and out.name == "stderr":
                # shap imports tqdm.auto, which warns in a kernel without ipywidgets.
                assert "TqdmWarning" in out.text, f"{cell.source!r} wrote to stderr: {out.text}"


def test_notebook_shows_the_explanation_and_the_plots(executed: Any) -> None:
    (summary,) = [o for o in _outputs(executed, r"\Ae\Z") if o.output_type == "execute_result"]
    html = summary.data["text/html"]
    assert "8 samples" in html and "10 outputs" in html and ": complete" in html
    assert _png_in(html).startswith(PNG)
    assert summary.data["text/plain"].startswith("Explanation(8 samples;")
    (figure,) = [o for o in _outputs(executed, r"e\.plot\(") if "image/png" in o.get("data", {})]
    assert base64.b64decode(figure.data["image/png"]).startswith(PNG)
    shap_plots = [o for o in _outputs(executed, r"shap\.plots\.") if "image/png" in o.get("data", {})]
    assert len(shap_plots) == 1


# --- what a browser draws -------------------------------------------------------------------------


def _browser() -> str | None:
    return next((b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if b), None)


def _screenshot(browser: str, page: Path) -> np.ndarray:
    from PIL import Image

    shot = page.with_suffix(".png")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1000,800",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with Image.open(shot) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def test_browser_draws_the_notebook_views(executed: Any, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip(
            "Chromium, a system package, is not installed to render the HTML (apt-get install chromium; .ci/run installs it where apt and root allow)"
        )
    (summary,) = [o for o in _outputs(executed, r"\Ae\Z") if o.output_type == "execute_result"]
    text = _explanation(2, 6, 1, ids=True).plot(kind="text")
    assert isinstance(text, TextHTML)
    for name, fragment in (("summary", summary.data["text/html"]), ("tokens", text._repr_html_())):
        page = tmp_path / f"{name}.html"
        page.write_text(f"<!DOCTYPE html><html><body>{fragment}</body></html>", encoding="utf-8")
        pixels = _screenshot(browser, page)
        assert pixels.mean(axis=2).var() > 100, f"{name}: the page renders blank"
        red = (pixels[..., 0] > pixels[..., 2] + 60).mean()
        blue = (pixels[..., 2] > pixels[..., 0] + 60).mean()
        assert red > 1e-3 and blue > 1e-3, f"{name}: no red and blue attributions drawn ({red:.4f}, {blue:.4f})"
