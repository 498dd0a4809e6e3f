from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


#: The modules that take longest (seconds of test time on a 2-core machine, from --junitxml), longest
#: first. With `-n 2 --dist loadfile` a worker that frees takes the next module in this order, so the
#: long ones start early and the short ones fill the end. xdist's own order (most tests first) started
#: test_layouts (28 tests, 70 s) and test_dataset_ray (6 tests, 40 s) late, and one worker then ran on
#: alone. Modules not named keep their place after these. Keep roughly up to date; nothing fails if not.
LONGEST_MODULES = (
    "ops/test_conformance.py",  # 73 s
    "test_layouts.py",  # 65 s
    "test_explainer.py",  # 64 s
    "test_quant.py",  # 56 s
    "test_zoo.py",  # 50 s
    "test_composites.py",  # 46 s
    "test_dataset_ray.py",  # 40 s
    "test_docs.py",  # 35 s
    "test_trees_zoo.py",  # 30 s
    "test_boolean_rules.py",  # 27 s
    "test_tokens.py",  # 22 s
    "test_multipliers.py",  # 19 s
    "ops/test_recurrent.py",  # 19 s
    "test_cli.py",  # 19 s
    "test_control_flow.py",  # 19 s
    "ops/test_nn.py",  # 17 s
    "test_dataset.py",  # 16 s
    "test_scale.py",  # 15 s
    "test_index_inputs.py",  # 15 s
    "test_plots.py",  # 14 s
    "test_to_shap.py",  # 13 s
    "test_notebook.py",  # 12 s
)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order pytest_collection_modifyitems sets
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}

    def module_rank(item: pytest.Item) -> int:
        try:
            return rank.get(item.path.relative_to(REPO / "tests").as_posix(), len(rank))
        except ValueError:  # a test outside tests/
            return len(rank)

    items.sort(key=module_rank)  # stable: a module's tests keep their order


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
