"""Pickled models (pickle/joblib files of any framework): refused unless trusted, then
unpickled with the file's folder and the current directory on the import path."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onnxshap._convert._core import _first_line, _quiet, _require
from onnxshap._errors import ConversionError

PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib"})


def untrusted_message(path: Path) -> str:
    """Why a file is refused without trust_pickle, and what to do."""
    return (
        f"Loading {str(path)!r} unpickles it, which runs code stored in the file. Pass --trust-pickle "
        "(trust_pickle=True in Python) only if you trust where the file comes from."
    )


@contextlib.contextmanager
def _importable_beside(path: Path) -> Iterator[None]:
    """For the duration of a trusted unpickling, let it import the classes it names from modules in
    the file's folder and in the current directory (where a training script saved it from): the
    `onnxshap` program's own folder is first on the import path, not the user's."""
    added = [d for d in dict.fromkeys([str(path.resolve().parent), os.getcwd()]) if d not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for d in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


def _class_not_importable(path: Path, exc: ModuleNotFoundError) -> str:
    return (
        f"Unpickling {str(path)!r} needs the module {exc.name!r}, which cannot be imported from the file's folder "
        f"({str(path.resolve().parent)!r}), the current directory or the installed packages. Put the module that "
        "defines the model's classes (e.g. its .py file) next to the model file, or install its package; better, "
        "save the model as TorchScript (torch.jit.save(torch.jit.script(model), path)) or with torch.export.save."
    )


def _load_pickle(path: Path, notes: list[str]) -> Any:
    # joblib reads plain pickles too; scikit-learn models are usually saved with it.
    try:
        import joblib
    except ImportError:
        joblib = None
    try:
        with _quiet(notes), _importable_beside(path):
            if joblib is not None:
                return joblib.load(path)
            import pickle

            with open(path, "rb") as fh:
                return pickle.load(fh)  # the caller passed trust_pickle
    except ModuleNotFoundError as exc:
        extra = {
            "sklearn": "sklearn",
            "torch": "torch",
            "keras": "keras",
            "tensorflow": "keras",
            "xgboost": "boosting",
            "lightgbm": "boosting",
        }.get(root := (exc.name or "").split(".")[0])
        if extra:
            # A booster's pickle needs its own library, not the boosting extra's other one.
            _require(extra, [root, "onnxmltools"] if extra == "boosting" else None)
        raise ConversionError(_class_not_importable(path, exc)) from exc
    except Exception as exc:
        raise ConversionError(f"Could not unpickle {str(path)!r}: {_first_line(exc)}") from exc
