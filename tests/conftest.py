from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session", autouse=True)
def no_default_compilation_cache() -> None:
    """`onnxshap explain` keeps compiled passes in ~/.cache by default: not from the tests
    (in-process or in subprocesses), unless a test sets ONNXSHAP_COMPILATION_CACHE itself."""
    import os

    os.environ.setdefault("ONNXSHAP_COMPILATION_CACHE", "0")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return REPO / "models"
