"""The documentation stays true: its Python examples run, their printed results match the comments,
the files they write appear, links resolve, and the reference pages name every parameter, field,
constant and CLI option they document.

```python blocks in the docs are run (from a scratch folder that sees models/); ```py blocks are
illustrations and are not. `python -m tests.test_docs` refreshes the --help blocks of docs/cli.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import io
import re
import sys
import tokenize
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import onnxshap
from onnxshap import _explanation
from tests.conftest import REPO

DOCS = REPO / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: Frameworks an example may import -> the packages it then needs (the exporter too); a block that
#: imports one of them is not run where one is missing, and its page's test is reported as skipped.
DOC_FRAMEWORKS = {
    "sklearn": ("sklearn", "skl2onnx"),
    "xgboost": ("xgboost", "onnxmltools"),
    "lightgbm": ("lightgbm", "onnxmltools"),
}
#: Files the examples write, named as string literals in the code.
WRITTEN = re.compile(r"[\"']([\w.-]+\.(?:png|html|npz|svg|pdf))[\"']")


def _blocks(text: str, start: int = 0) -> list[tuple[int, str]]:
    """(line number of the block's first code line, code) for every ```python block."""
    return [(text.count("\n", 0, m.start(1)) + start, m.group(1)) for m in FENCE.finditer(text)]


def _missing_package(code: str) -> str | None:
    """The first package of a DOC_FRAMEWORKS framework that `code` imports and that is not installed."""
    for framework, packages in DOC_FRAMEWORKS.items():
        if re.search(rf"^\s*(?:from|import) {framework}\b", code, re.MULTILINE):
            for package in packages:
                if importlib.util.find_spec(package) is None:
                    return package
    return None


def _readme_library() -> tuple[str, int]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Library\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Library' section"
    return match.group(1), text.count("\n", 0, match.start(1))


def _expected_prints(code: str, first_line: int) -> dict[int, str]:
    """Line -> the literal a `print(...)  # (8, 1, 8, 8, 1): ...` comment promises (brackets, True/False)."""
    expected = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type != tokenize.COMMENT:
            continue
        line = tok.start[0] + first_line
        comment = tok.string.lstrip("#").strip()
        if not code.splitlines()[tok.start[0] - 1].lstrip().startswith("print("):
            continue
        if comment and comment[0] in "([":
            depth = 0
            for i, ch in enumerate(comment):
                depth += (ch in "([") - (ch in ")]")
                if depth == 0:
                    expected[line] = comment[: i + 1]
                    break
        elif comment.split(":")[0] in ("True", "False"):
            expected[line] = comment.split(":")[0]
    return expected


def _run(blocks: list[tuple[int, str]], origin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the blocks in order in one namespace, in a scratch folder that sees the repository's models/.

    Returns the names of the files the code mentions writing.
    """
    if any(".plot(" in code for _, code in blocks):
        pytest.importorskip("matplotlib", reason="the example draws plots (onnxshap[plot])")
    if any(".to_shap(" in code for _, code in blocks):
        pytest.importorskip("shap", reason="the example converts to shap")
    (tmp_path / "models").symlink_to(REPO / "models", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    expected: dict[int, str] = {}
    for first, code in blocks:
        expected.update(_expected_prints(code, first))

    def checked_print(*args: Any, **kwargs: Any) -> None:
        frame = sys._getframe(1)
        if frame.f_code.co_filename == origin and frame.f_lineno in expected and len(args) == 1:
            want, got = expected[frame.f_lineno], str(args[0])
            assert got == want, f"{origin}:{frame.f_lineno}: prints {got!r}, the comment says {want!r}"
        print(*args, **kwargs)

    namespace: dict[str, Any] = {"__name__": "__docs__", "print": checked_print}
    for first, code in blocks:
        # Pad with blank lines so that tracebacks and the print check use the .md file's line numbers.
        exec(compile("\n" * first + code, origin, "exec"), namespace)  # noqa: S102 - the docs' own examples
    return sorted({name for _, code in blocks for name in WRITTEN.findall(code)})


def test_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section, offset = _readme_library()
    blocks = _blocks(section, offset)
    assert blocks, "README.md's Library section has no ```python block"
    for name in _run(blocks, str(REPO / "README.md"), tmp_path, monkeypatch):
        assert (tmp_path / name).is_file(), f"the README example should write {name}"


@pytest.mark.parametrize(
    "page", ["getting-started.md", "real-exports.md", "rules/max.md", "plots.md", "tree-pipelines.md", "dataset.md"]
)
def test_doc_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DOCS / page
    blocks = _blocks(path.read_text(encoding="utf-8"))
    assert blocks, f"{page} has no ```python block"
    missing = {first: package for first, code in blocks if (package := _missing_package(code))}
    runnable = [(first, code) for first, code in blocks if first not in missing]
    for name in _run(runnable, str(path), tmp_path, monkeypatch):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, f"{page} should write {name}"
    if missing:
        pytest.skip(", ".join(f"{page}:{first} not run: needs {package}" for first, package in missing.items()))


def test_every_python_example_is_tested() -> None:
    tested = {"getting-started.md", "real-exports.md", "rules/max.md", "plots.md", "tree-pipelines.md", "dataset.md"}
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    untested = [p for p in pages if p not in tested and _blocks((DOCS / p).read_text(encoding="utf-8"))]
    assert not untested, f"add these pages to test_doc_examples_run: {untested}"


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_relative_links_resolve() -> None:
    pages = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    broken = []
    for page in pages:
        for link in _links(page):
            if re.match(r"[a-z]+:", link) or link.startswith("#"):
                continue
            target = (page.parent / link.split("#")[0]).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(REPO)}: {link}")
    assert not broken, broken


def test_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {(DOCS / link.split("#")[0]).resolve() for link in _links(DOCS / "index.md")}
    missing = [
        p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if p.resolve() not in linked and p.name != "index.md"
    ]
    assert not missing, f"docs/index.md does not link {missing}"
    assert "operators.md" in index


def test_completeness_page_states_the_current_tolerances() -> None:
    text = (DOCS / "completeness.md").read_text(encoding="utf-8")
    for name in ("ADDITIVITY_RTOL", "ADDITIVITY_FLOOR", "ADDITIVITY_MASS_FLOOR"):
        table = getattr(_explanation, name)
        for dtype, value in table.items():
            row = re.search(rf"^\|\s*`{name}`\s*\|\s*{np.dtype(dtype).name}\s*\|\s*([^|]+)\|", text, re.MULTILINE)
            assert row, f"docs/completeness.md has no table row for {name} / {np.dtype(dtype).name}"
            assert float(row.group(1).strip().strip("`")) == value, f"{name}[{dtype}] is {value} in the code"


def test_api_page_names_every_parameter_and_field() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = []
    for fn in (onnxshap.Explainer.__init__, onnxshap.Explainer.explain, onnxshap.load):
        missing += [
            f"{fn.__qualname__}({p})" for p in inspect.signature(fn).parameters if p != "self" and f"`{p}`" not in text
        ]
    missing += [f"Explanation.{f.name}" for f in dataclasses.fields(onnxshap.Explanation) if f"`{f.name}`" not in text]
    public = [n for n in dir(onnxshap) if not n.startswith("_") and not inspect.ismodule(getattr(onnxshap, n))]
    missing += [n for n in public if f"`{n}`" not in text and f"{n}(" not in text]
    assert not missing, f"docs/api.md does not document: {missing}"


#: docs/cli.md embeds each command's --help (at this width) after a `<!-- onnxshap CMD --help -->` marker.
CLI_HELP = re.compile(r"(<!-- onnxshap (\w+) --help -->\n```text\n)(.*?)(^```)", re.MULTILINE | re.DOTALL)
HELP_COLUMNS = "100"


def cli_help(command: str) -> str:
    """`onnxshap COMMAND --help` as printed in a terminal HELP_COLUMNS wide."""
    import os

    from onnxshap.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parser = build_parser()
        commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
        return commands[command].format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def write_cli_docs(path: Path = DOCS / "cli.md") -> None:
    """Refresh the --help blocks of docs/cli.md: `python -m tests.test_docs`."""
    text = path.read_text(encoding="utf-8")
    path.write_text(CLI_HELP.sub(lambda m: m.group(1) + cli_help(m.group(2)) + m.group(4), text), encoding="utf-8")


def test_cli_page_shows_the_current_help() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    blocks = {m.group(2): m.group(3) for m in CLI_HELP.finditer(text)}
    stale = [name for name, block in blocks.items() if block != cli_help(name)]
    assert blocks and not stale, f"docs/cli.md shows old --help for {stale}: run `python -m tests.test_docs`"


def test_cli_page_lists_every_command_and_option() -> None:
    from onnxshap.cli import build_parser

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    missing = []
    for name, sub in commands.items():
        if f"onnxshap {name}" not in text:
            missing.append(name)
        for action in sub._actions:
            missing += [f"{name} {o}" for o in action.option_strings if o.startswith("--") and o not in text]
    assert not missing, f"docs/cli.md does not mention: {missing}"


if __name__ == "__main__":
    write_cli_docs()
    print(f"updated {DOCS / 'cli.md'}")
