"""Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
ReduceSumSquare, ReduceLogSum, ReduceLogSumExp.

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


def _prod(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    return jnp.prod(x, axis=axis, keepdims=keepdims, dtype=x.dtype)


def _l1(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    return _sum(jnp.abs(x), axis, keepdims)


def _sum_square(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    return _sum(x * x, axis, keepdims)


def _l2(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    s = _sum_square(x, axis, keepdims)
    if jnp.issubdtype(x.dtype, jnp.integer):
        return jnp.sqrt(s.astype(jnp.float64)).astype(x.dtype)
    return jnp.sqrt(s)


def _log_sum(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    return jnp.log(_sum(x, axis, keepdims)).astype(x.dtype)


def _log_sum_exp(x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    # Shift by the maximum for stability; an empty or all -inf slice has no finite shift.
    m = jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf)
    m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))
    out = jnp.log(_sum(jnp.exp(x - m), axis, True)) + m
    return (out if keepdims else jnp.squeeze(out, axis=axis)).astype(x.dtype)


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


def reduce_prod(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceProd; an empty reduction gives 1."""
    return _reduce(_prod, data, axes_input, axes, keepdims, noop_with_empty_axes)


def reduce_l1(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceL1: sum of absolute values."""
    return _reduce(_l1, data, axes_input, axes, keepdims, noop_with_empty_axes)


def reduce_l2(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceL2: square root of the sum of squares."""
    return _reduce(_l2, data, axes_input, axes, keepdims, noop_with_empty_axes)


def reduce_sum_square(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceSumSquare: sum of squares."""
    return _reduce(_sum_square, data, axes_input, axes, keepdims, noop_with_empty_axes)


def reduce_log_sum(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceLogSum: log of the sum; an empty reduction gives -inf."""
    return _reduce(_log_sum, data, axes_input, axes, keepdims, noop_with_empty_axes)


def reduce_log_sum_exp(
    data: Array,
    axes_input: Array | None = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Array:
    """ReduceLogSumExp: log of the sum of exponentials, shifted by the maximum."""
    return _reduce(_log_sum_exp, data, axes_input, axes, keepdims, noop_with_empty_axes)
