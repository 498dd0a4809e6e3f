"""Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin. The composite reductions (ReduceProd,
ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp) are pair forwards in
onnxshap/ops/composites.py and share `_axes` and the conventions below.

Axes are an attribute in old versions and a static input in new ones (ReduceSum from 13, the others
from 18); every function takes both, so one function serves all versions of an op. No axes reduce
over everything, unless noop_with_empty_axes=1, when only the elementwise part runs (ReduceSumSquare
squares, ReduceLogSum takes the log). A reduction over an empty set gives the reduction's identity:
0 for sums, 1 for products, -inf (or the type's minimum) for max, -inf for the log-sums.
Spec: https://onnx.ai/onnx/operators/
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap.ops._common import normalize_axes, static_ints

Array = Any


def _axes(
    data: Array, axes_input: Array | None, axes: Sequence[int] | None, noop_with_empty_axes: int
) -> tuple[int, ...]:
    chosen = static_ints(axes_input) if axes_input is not None else (tuple(axes) if axes is not None else ())
    if not chosen:
        return () if noop_with_empty_axes else tuple(range(data.ndim))
    return normalize_axes(chosen, data.ndim)


def _lowest(dtype: Any) -> Any:
    if dtype == jnp.bool_:
        return False
    return -jnp.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).min


def _highest(dtype: Any) -> Any:
    if dtype == jnp.bool_:
        return True
    return jnp.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).max


def _sum(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    return jnp.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)


def _reduce(
    core: Callable[[Array, tuple[int, ...], bool], Array],
    data: Array,
    axes_input: Array | None,
    axes: Sequence[int] | None,
    keepdims: int,
    noop_with_empty_axes: int,
) -> Array:
    x = jnp.asarray(data)
    return core(x, _axes(x, axes_input, axes, noop_with_empty_axes), bool(keepdims))


def _mean(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    count = int(np.prod([x.shape[a] for a in axis]))
    total = _sum(x, axis, keepdims)
    if jnp.issubdtype(x.dtype, jnp.integer):
        # Integer means truncate, as onnxruntime's integer kernels do.
        return lax.div(total, jnp.asarray(max(count, 1), x.dtype))
    return total / jnp.asarray(count, x.dtype)


def _max(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    return jnp.max(x, axis=axis, keepdims=keepdims, initial=_lowest(x.dtype))


def _min(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    return jnp.min(x, axis=axis, keepdims=keepdims, initial=_highest(x.dtype))


def reduce_sum(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceSum; axes is a static input from 13."""
    return _reduce(_sum, data, axes_input, axes, keepdims, noop_with_empty_axes)


def reduce_mean(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceMean; integer means truncate."""
    return _reduce(_mean, data, axes_input, axes, keepdims, noop_with_empty_axes)


def reduce_max(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceMax; an empty reduction gives -inf (the type's minimum for integers, False for bool)."""
    return _reduce(_max, data, axes_input, axes, keepdims, noop_with_empty_axes)


def reduce_min(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceMin; an empty reduction gives +inf (the type's maximum for integers, True for bool)."""
    return _reduce(_min, data, axes_input, axes, keepdims, noop_with_empty_axes)
