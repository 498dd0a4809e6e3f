"""Progress of an explain call: `Explainer.explain(progress=...)` and `onnxshap explain --progress`.

One explainer on the small MLP with chunk_size=2 (8 background rows: 4 chunks per call), compiled
once for the module; the tests read the steps its calls reported.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

import onnxshap
from onnxshap import cli
from onnxshap._attribution import AttributionPass
from tests.conftest import REPO

MLP = REPO / "models" / "torch_mlp_logits_probs_ts.onnx"  # x: float32[batch, 10] -> logits, probs [batch, 3]
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch.BACKEND_COMPILE_EVENT


class Recorder:
    """A progress callback that keeps every step, with how many XLA compilations had run by then."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, int, int]] = []
        self.compiles_at: list[int] = []
        self.compiles = 0

    def listen(self, event: str, duration: float, **_: Any) -> None:
        if event == BACKEND_COMPILE:
            self.compiles += 1

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.steps.append((phase, done, total))
        self.compiles_at.append(self.compiles)


@pytest.fixture(scope="module")
def calls() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 10)).astype(np.float32)
    background = rng.standard_normal((8, 10)).astype(np.float32)
    explainer = onnxshap.Explainer(str(MLP), background, chunk_size=2)
    first, again = Recorder(), Recorder()
    jax.monitoring.register_event_duration_secs_listener(first.listen)
    try:
        with_progress = explainer.explain(x, progress=first)
    finally:
        jax.monitoring.unregister_event_duration_listener(first.listen)
    without = explainer.explain(x)
    explainer.explain(x, progress=again)
    return {"explainer": explainer, "x": x, "first": first, "again": again, "with": with_progress, "without": without}


def test_first_call_reports_compiling_then_every_chunk_in_order(calls: dict[str, Any]) -> None:
    # 3 compile steps (reference side, sample side, multiplier pass), then 1 sample block x 4 chunks.
    assert calls["first"].steps == [
        ("compile", 0, 7),
        ("compile", 1, 7),
        ("compile", 2, 7),
        ("attribute", 3, 7),
        ("attribute", 4, 7),
        ("attribute", 5, 7),
        ("attribute", 6, 7),
        ("done", 7, 7),
    ]


def test_compiling_is_reported_while_xla_compiles(calls: dict[str, Any]) -> None:
    # Every compilation of the pass happens within a compile step: none once the chunks run.
    first = calls["first"]
    at_chunks = first.compiles_at[first.steps.index(("attribute", 3, 7)) :]
    assert first.compiles_at[0] < at_chunks[0] and len(set(at_chunks)) == 1
    assert calls["explainer"]._pass.trace_count == 1  # compiled ahead, then called: traced once


def test_a_compiled_pass_reports_only_its_chunks(calls: dict[str, Any]) -> None:
    assert calls["again"].steps == [("attribute", i, 4) for i in range(4)] + [("done", 4, 4)]


def test_results_do_not_depend_on_progress(calls: dict[str, Any]) -> None:
    a, b = calls["with"], calls["without"]
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.base_values, b.base_values)
    np.testing.assert_array_equal(a.prediction, b.prediction)


def test_progress_false_prints_nothing(calls: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    calls["explainer"].explain(calls["x"], progress=False)
    assert capsys.readouterr() == ("", "")


def test_progress_true_draws_a_bar_on_stderr(calls: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    # Two samples: a new sample block, so the sample side and the multiplier pass compile again.
    calls["explainer"].explain(calls["x"][:2], progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    shown = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert shown[0].startswith("explain (compiling):") and "| 0/6 " in shown[0]
    assert any(line.startswith("explain (attributing):") and "| 2/6 " in line for line in shown)
    assert shown[-1].startswith("explain (done): 100%") and "| 6/6 " in shown[-1] and err.endswith("\n")


def test_progress_must_be_a_bool_or_a_callable(calls: dict[str, Any]) -> None:
    with pytest.raises(onnxshap.InputError, match=r"progress must be True .* progress\(phase, done, total\)"):
        calls["explainer"].explain(calls["x"], progress="yes")


def test_cli_progress_shows_the_phases_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(4)
    np.save(tmp_path / "x.npy", rng.standard_normal((5, 10)).astype(np.float32))
    np.save(tmp_path / "bg.npy", rng.standard_normal((8, 10)).astype(np.float32))
    common = [
        "explain",
        str(MLP),
        "--input",
        str(tmp_path / "x.npy"),
        "--background",
        str(tmp_path / "bg.npy"),
        "--batch-size",
        "2",
        "-o",
        str(tmp_path / "v.npz"),
    ]
    assert cli.main([*common, "--progress"]) == 0
    out, err = capsys.readouterr()
    shown = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    # One bar over the 3 batches: 2 compile steps on the first (the reference side; the sample side
    # with its one background chunk), then one call per batch.
    assert shown[0].startswith("explain (compiling):") and "| 0/" in shown[0]
    assert any(line.startswith("explain (attributing):") for line in shown)
    assert shown[-1].startswith("explain (done): 100%") and "| 5/5 " in shown[-1]
    first = onnxshap.Explanation.load(tmp_path / "v.npz")
    assert cli.main(common) == 0
    plain_out, plain_err = capsys.readouterr()
    assert plain_out == out and plain_err == ""  # stdout is the same; no bar in a pipe by default
    np.testing.assert_array_equal(onnxshap.Explanation.load(tmp_path / "v.npz").values, first.values)


def test_cli_bar_ends_its_line_before_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(5)
    np.save(tmp_path / "x.npy", rng.standard_normal((2, 10)).astype(np.float32))
    stream = io.StringIO()

    def fail(*_: Any, **__: Any) -> None:
        raise onnxshap.InputError("the pass failed part-way")

    def chunk_then_fail(self: Any, x_feeds: Any, r_feeds: Any, selection: Any, devices: Any, report: Any) -> None:
        report("attribute", 0, 2)
        fail()

    monkeypatch.setattr(AttributionPass, "_run", chunk_then_fail)
    monkeypatch.setattr("sys.stderr", stream)
    x = str(tmp_path / "x.npy")
    code = cli.main(["explain", str(MLP), "--input", x, "--background", x, "--progress", "-o", str(tmp_path / "v.npz")])
    assert code == 1
    *_, bar, message, end = stream.getvalue().split("\n")
    assert "explain (attributing)" in bar and "failed" not in bar
    assert "the pass failed part-way" in message and end == ""
