"""Result files are written whole or not at all: into a sibling temporary file, renamed into place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from onnxshap._errors import OutputError


def partial_path(path: Path) -> Path:
    """The sibling temporary name for `path`; it keeps the suffix (plotting libraries pick the
    format from it) and is hidden."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def check_writable(path: Path) -> None:
    """Refuse a target that is a folder, or whose folder does not exist (`OutputError`)."""
    if path.is_dir():
        raise OutputError(
            f"{path} is a directory; give a file name, e.g. {path / ('result' + (path.suffix or '.npz'))}."
        )
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write {path}: the folder {path.parent} does not exist. Create it first.")


def write_whole(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` to fill a temporary file, then rename it to `path`.

    On any failure (an OSError such as a full disk, an error while drawing, Ctrl-C) the temporary
    file is removed and `path` is left as it was; an OSError becomes `OutputError`.
    """
    path = Path(path)
    check_writable(path)
    tmp = partial_path(path)
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"Could not write {path}: {exc.strerror or exc}. Nothing was written; free disk space or choose "
            "another location."
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
