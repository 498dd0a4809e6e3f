"""How many calls an explain costs: the reference side is computed once per background, and a sample
block whose background fits one chunk is one call."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import onnxshap
from tests.conftest import REPO

MLP = REPO / "models" / "torch_mlp_logits_probs_ts.onnx"  # x: float32[batch, 10] -> logits, probs [batch, 3]


class Counting:
    """Wraps a jitted function and counts its calls."""

    def __init__(self, jitted: Any) -> None:
        self.jitted, self.calls = jitted, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.jitted(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted.lower(*args, **kwargs)


@pytest.fixture()
def counted() -> tuple[Any, dict[str, Counting], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 10)).astype(np.float32)
    background = rng.standard_normal((8, 10)).astype(np.float32)
    explainer = onnxshap.Explainer(str(MLP), background)
    p = explainer._pass
    counters = {
        name: Counting(getattr(p, f"_jitted_{name}")) for name in ("reference_side", "sample_side", "chunk", "whole")
    }
    for name, counter in counters.items():
        setattr(p, f"_jitted_{name}", counter)
    return explainer, counters, x, background


def test_a_background_of_one_chunk_costs_one_call_per_explain(counted: Any) -> None:
    explainer, counters, x, _ = counted
    first = explainer.explain(x)
    again = explainer.explain(x)
    assert counters["reference_side"].calls == 1  # kept on the device for the second explain
    assert counters["whole"].calls == 2 and counters["sample_side"].calls == 0 and counters["chunk"].calls == 0
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_array_equal(first.base_values, again.base_values)


def test_a_changed_background_is_computed_again(counted: Any) -> None:
    explainer, counters, x, background = counted
    explainer.explain(x)
    expected = background + 1.0  # before the write below: the explainer's rows may be views of it
    shifted = {k: v + 1.0 for k, v in explainer.background.items()}
    for name, value in shifted.items():
        explainer.background[name][...] = value  # the same arrays, new contents
    after = explainer.explain(x)
    assert counters["reference_side"].calls == 2
    fresh = onnxshap.Explainer(str(MLP), expected).explain(x)
    np.testing.assert_allclose(after.values, fresh.values, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(after.base_values, fresh.base_values, rtol=1e-6, atol=1e-7)


def test_several_chunks_keep_one_call_per_chunk() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 10)).astype(np.float32)
    background = rng.standard_normal((8, 10)).astype(np.float32)
    explainer = onnxshap.Explainer(str(MLP), background, chunk_size=4)
    p = explainer._pass
    chunk, whole = Counting(p._jitted_chunk), Counting(p._jitted_whole)
    p._jitted_chunk, p._jitted_whole = chunk, whole
    e = explainer.explain(x)
    assert chunk.calls == 2 and whole.calls == 0
    one_chunk = onnxshap.Explainer(str(MLP), background).explain(x)
    np.testing.assert_allclose(e.values, one_chunk.values, rtol=1e-5, atol=1e-7)
