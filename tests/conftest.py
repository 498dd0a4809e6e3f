from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs() -> Iterator[None]:
    """Drop JAX's compiled programs after each test module.

    JAX keeps every compiled program, and the models its jitted functions close over, for the life
    of the process: without this the suite's peak memory grew with every module (6.2 GB in all).
    Clearing after every test instead would recompile the eager primitives tests share (30% slower
    in tests/test_boolean_rules.py). A model and its jitted forward refer to each other, so only
    the cycle collector frees them: collect now rather than at some later full collection.
    """
    yield
    jax = sys.modules.get("jax")  # a module that never imported JAX has nothing to drop
    if jax is not None:
        jax.clear_caches()
        gc.collect()
        _return_freed_heap()


def _return_freed_heap() -> None:
    """Hand the heap pages freed above back to the system (glibc's malloc_trim; elsewhere a no-op).

    glibc keeps freed small blocks in its arenas, so without this a process's RSS only grew, module
    after module, and each large model's peak came on top: 1.27 GB against 0.59 GB with it, after
    ops/test_conformance, test_boolean_rules, test_composites and test_quant in one process.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)  # glibc only (musl has none)
    if trim is not None:
        trim(0)


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
