"""The compilation cache: on by default in `onnxshap explain`, where it lives, how it is turned off,
how it is bounded, and that a default folder that cannot be used never fails the command.

In-process runs replace `_compile_cache._switch_on` (the one place that configures JAX), so that
the test process never points JAX at a cache; the filling and reuse of a real cache run in
subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxshap import _compile_cache, cli
from onnxshap._errors import OutputError
from tests.conftest import REPO
from tests.test_cli import MLP

VARIABLES = (_compile_cache.CACHE_DIR_VARIABLE, _compile_cache.SWITCH_VARIABLE, "XDG_CACHE_HOME")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No cache variable set (conftest.py turns the default cache off for the other tests)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def switched_on(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders the run would point JAX's cache at (JAX itself is left alone)."""
    calls: list[Path] = []
    monkeypatch.setattr(_compile_cache, "_switch_on", calls.append)
    return calls


@pytest.fixture
def mlp_input(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32))
    return path


def test_default_location_follows_the_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert _compile_cache.default_cache_dir() == tmp_path / "home" / ".cache" / "onnxshap" / "jax"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compile_cache.default_cache_dir() == tmp_path / "xdg" / "onnxshap" / "jax"
    clean_env.setenv("ONNXSHAP_CACHE_DIR", str(tmp_path / "own"))
    assert _compile_cache.default_cache_dir() == tmp_path / "own"  # used as it is, no subfolder


def test_no_home_folder_is_an_output_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.delenv("HOME", raising=False)
    # No user entry either: expanduser leaves "~" as it is.
    clean_env.setattr(_compile_cache.os.path, "expanduser", lambda path: path)
    with pytest.raises(OutputError, match="there is no home folder"):
        _compile_cache.default_cache_dir()


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        (None, True),
        ("1", True),
        ("", True),
        ("0", False),
        ("false", False),
        ("Off", False),
        ("no", False),
    ],
)
def test_the_switch_variable(clean_env: pytest.MonkeyPatch, value: str | None, wanted: bool) -> None:
    if value is not None:
        clean_env.setenv("ONNXSHAP_COMPILATION_CACHE", value)
    assert _compile_cache.default_cache_wanted() is wanted


def test_explain_uses_the_default_cache_unless_turned_off(
    clean_env: pytest.MonkeyPatch,
    switched_on: list[Path],
    tmp_path: Path,
    mlp_input: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv("ONNXSHAP_CACHE_DIR", str(tmp_path / "cache"))
    base = ["explain", str(MLP), "--input", str(mlp_input), "-o", str(tmp_path / "v.npz")]
    assert cli.main(base) == 0
    assert switched_on == [tmp_path / "cache"] and (tmp_path / "cache").is_dir()
    assert cli.main([*base, "--no-compilation-cache"]) == 0
    clean_env.setenv("ONNXSHAP_COMPILATION_CACHE", "0")
    assert cli.main(base) == 0
    assert switched_on == [tmp_path / "cache"]  # neither run used it
    # A folder given on the command line is used even when the variable turns the default off.
    assert cli.main([*base, "--compilation-cache", str(tmp_path / "mine")]) == 0
    assert switched_on == [tmp_path / "cache", tmp_path / "mine"]
    capsys.readouterr()
    assert cli.main([*base, "--compilation-cache", str(tmp_path), "--no-compilation-cache"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_unusable_default_folder_is_a_note_not_an_error(
    clean_env: pytest.MonkeyPatch,
    switched_on: list[Path],
    tmp_path: Path,
    mlp_input: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    clean_env.setenv("ONNXSHAP_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    out = tmp_path / "v.npz"
    assert cli.main(["explain", str(MLP), "--input", str(mlp_input), "-o", str(out)]) == 0
    assert out.exists() and switched_on == []
    notes = [line for line in capsys.readouterr().err.splitlines() if "compilation cache" in line]
    assert len(notes) == 1 and notes[0].startswith("note: Cannot use "), notes
    assert "is a file, not a folder" in notes[0] and "ONNXSHAP_COMPILATION_CACHE=0" in notes[0]
    # The same folder named on the command line is an error (exit 1), as any unusable DIR is.
    code = cli.main(
        [
            "explain",
            str(MLP),
            "--input",
            str(mlp_input),
            "-o",
            str(out),
            "--compilation-cache",
            str(tmp_path / "a_file" / "cache"),
        ]
    )
    assert code == 1 and "Give a folder." in capsys.readouterr().err


def test_prune_deletes_the_least_recently_used_entries_first(tmp_path: Path) -> None:
    for i, name in enumerate(["old", "middle", "new"]):
        entry = tmp_path / f"jit_f-{name}-cache"
        entry.write_bytes(b"x" * 100)
        os.utime(entry, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "notes.txt").write_bytes(b"y" * 1000)  # not an entry: never pruned
    assert _compile_cache.prune(tmp_path, max_bytes=250) == 1
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["jit_f-middle-cache", "jit_f-new-cache", "notes.txt"]
    assert _compile_cache.prune(tmp_path, max_bytes=250) == 0


def _explain_in_a_new_process(cache: Path, x: Path, out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["ONNXSHAP_CACHE_DIR"] = str(cache)
    command = [sys.executable, "-m", "onnxshap", "explain", str(MLP), "--input", str(x), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "compilation cache" not in done.stderr


def test_a_first_run_fills_the_cache_and_a_second_finds_it(tmp_path: Path, mlp_input: Path) -> None:
    cache = tmp_path / "cache"
    _explain_in_a_new_process(cache, mlp_input, tmp_path / "first.npz")
    entries = {p.name: p.stat().st_mtime_ns for p in cache.glob("*-cache")}
    assert entries  # the explain pass's compiled programs
    _explain_in_a_new_process(cache, mlp_input, tmp_path / "second.npz")
    # Read, not written again, and nothing new.
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*-cache")} == entries
    first, second = np.load(tmp_path / "first.npz"), np.load(tmp_path / "second.npz")
    np.testing.assert_array_equal(first["values/x"], second["values/x"])
