"""Elementwise ops: arithmetic, activations, comparisons, logic and casts.

Broadcasting is numpy's (ONNX "multidirectional broadcasting"). Spec: https://onnx.ai/onnx/operators/
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap.ops._common import onnx_dtype, unsupported_attribute

Array = Any


def _is_int(x: Array) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.integer)


# --- arithmetic ----------------------------------------------------------------------------------


def add(a: Array, b: Array) -> Array:
    return jnp.add(a, b)


def sub(a: Array, b: Array) -> Array:
    return jnp.subtract(a, b)


def mul(a: Array, b: Array) -> Array:
    return jnp.multiply(a, b)


def div(a: Array, b: Array) -> Array:
    """Integer division truncates toward zero, as in C (not numpy's floor division)."""
    if _is_int(a):
        a, b = jnp.broadcast_arrays(a, b)
        return lax.div(a, b)
    return jnp.divide(a, b)


def pow_(x: Array, y: Array) -> Array:
    """The result has the base's type, whatever the exponent's type."""
    dtype = jnp.result_type(x)
    if _is_int(x) and not _is_int(y):
        return jnp.power(jnp.asarray(x, jnp.float64), y).astype(dtype)
    return jnp.power(x, jnp.asarray(y).astype(dtype))


def mod(a: Array, b: Array, *, fmod: int) -> Array:
    """fmod=0: the sign of the divisor (integers only); fmod=1: C fmod, the sign of the dividend."""
    return jnp.fmod(a, b) if fmod else jnp.remainder(a, b)


def neg(x: Array) -> Array:
    return jnp.negative(x)


def abs_(x: Array) -> Array:
    return jnp.abs(x)


def sign(x: Array) -> Array:
    return jnp.sign(x)


def sqrt(x: Array) -> Array:
    return jnp.sqrt(x)


def reciprocal(x: Array) -> Array:
    return jnp.reciprocal(x)


def exp(x: Array) -> Array:
    return jnp.exp(x)


def log(x: Array) -> Array:
    return jnp.log(x)


def erf(x: Array) -> Array:
    return lax.erf(x)


def floor(x: Array) -> Array:
    return jnp.floor(x)


def ceil(x: Array) -> Array:
    return jnp.ceil(x)


def round_(x: Array) -> Array:
    """Halves round to even, as numpy does."""
    return jnp.round(x)


def sin(x: Array) -> Array:
    return jnp.sin(x)


def cos(x: Array) -> Array:
    return jnp.cos(x)


def _variadic(op: Any, *xs: Array) -> Array:
    return reduce(op, [x for x in xs if x is not None])


def sum_(*xs: Array) -> Array:
    return _variadic(jnp.add, *xs)


def mean(*xs: Array) -> Array:
    present = [x for x in xs if x is not None]
    return _variadic(jnp.add, *present) / len(present)


def min_(*xs: Array) -> Array:
    return _variadic(jnp.minimum, *xs)


def max_(*xs: Array) -> Array:
    return _variadic(jnp.maximum, *xs)


def where(condition: Array, x: Array, y: Array) -> Array:
    return jnp.where(condition, x, y)


def clip_6(x: Array, *, min: float, max: float) -> Array:  # noqa: A002 - ONNX attribute names
    """Clip-6: bounds are attributes."""
    return jnp.clip(x, jnp.asarray(min, x.dtype), jnp.asarray(max, x.dtype))


def clip(x: Array, lo: Array | None = None, hi: Array | None = None) -> Array:
    """Clip-11+: optional bounds are inputs."""
    if lo is not None:
        x = jnp.maximum(x, jnp.asarray(lo, x.dtype))
    if hi is not None:
        x = jnp.minimum(x, jnp.asarray(hi, x.dtype))
    return x


# --- activations ---------------------------------------------------------------------------------


def relu(x: Array) -> Array:
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def leaky_relu(x: Array, *, alpha: float) -> Array:
    return jnp.where(x >= 0, x, x * jnp.asarray(alpha, x.dtype))


def prelu(x: Array, slope: Array) -> Array:
    return jnp.where(x >= 0, x, x * slope)


def sigmoid(x: Array) -> Array:
    return jax.nn.sigmoid(x)


def hard_sigmoid(x: Array, *, alpha: float, beta: float) -> Array:
    return jnp.clip(x * jnp.asarray(alpha, x.dtype) + jnp.asarray(beta, x.dtype), 0, 1).astype(x.dtype)


def hard_swish(x: Array) -> Array:
    return x * jnp.clip(x / 6 + 0.5, 0, 1).astype(x.dtype)


def tanh(x: Array) -> Array:
    return jnp.tanh(x)


def elu(x: Array, *, alpha: float) -> Array:
    return jnp.where(x > 0, x, jnp.asarray(alpha, x.dtype) * jnp.expm1(jnp.minimum(x, 0)))


def selu(x: Array, *, alpha: float, gamma: float) -> Array:
    a, g = jnp.asarray(alpha, x.dtype), jnp.asarray(gamma, x.dtype)
    return g * jnp.where(x > 0, x, a * jnp.expm1(jnp.minimum(x, 0)))


def celu(x: Array, *, alpha: float) -> Array:
    a = jnp.asarray(alpha, x.dtype)
    return jnp.maximum(x, 0) + jnp.minimum(0, a * jnp.expm1(x / a))


def softplus(x: Array) -> Array:
    return jax.nn.softplus(x)


def softsign(x: Array) -> Array:
    return x / (1 + jnp.abs(x))


def gelu(x: Array, *, approximate: str) -> Array:
    if approximate not in ("none", "tanh"):
        raise unsupported_attribute("Gelu", "approximate", approximate, ["none", "tanh"])
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def mish(x: Array) -> Array:
    return x * jnp.tanh(jax.nn.softplus(x))


def thresholded_relu(x: Array, *, alpha: float) -> Array:
    return jnp.where(x > alpha, x, jnp.zeros((), x.dtype))


# --- comparisons and logic -------------------------------------------------------------------------


def equal(a: Array, b: Array) -> Array:
    return jnp.equal(a, b)


def less(a: Array, b: Array) -> Array:
    return jnp.less(a, b)


def less_or_equal(a: Array, b: Array) -> Array:
    return jnp.less_equal(a, b)


def greater(a: Array, b: Array) -> Array:
    return jnp.greater(a, b)


def greater_or_equal(a: Array, b: Array) -> Array:
    return jnp.greater_equal(a, b)


def not_(x: Array) -> Array:
    return jnp.logical_not(x)


def and_(a: Array, b: Array) -> Array:
    return jnp.logical_and(a, b)


def or_(a: Array, b: Array) -> Array:
    return jnp.logical_or(a, b)


def xor(a: Array, b: Array) -> Array:
    return jnp.logical_xor(a, b)


def is_nan(x: Array) -> Array:
    return jnp.isnan(x)


def is_inf(x: Array, *, detect_negative: int, detect_positive: int) -> Array:
    return (jnp.isposinf(x) & bool(detect_positive)) | (jnp.isneginf(x) & bool(detect_negative))


# --- casts and pass-through -----------------------------------------------------------------------


def cast(x: Array, *, to: int, saturate: int = 1, round_mode: str = "up") -> Array:
    """Float -> integer truncates toward zero (as C does)."""
    dtype = onnx_dtype(to)
    if isinstance(x, np.ndarray) and x.dtype.kind in "OUS":
        return x.astype(dtype)
    return jnp.asarray(x).astype(dtype)


def cast_like(x: Array, target: Array, *, saturate: int = 1, round_mode: str = "up") -> Array:
    return jnp.asarray(x).astype(jnp.result_type(target))


def identity(x: Array) -> Array:
    return x


def dropout(x: Array, ratio: Array | None = None, training_mode: Array | None = None, **_: Any) -> Any:
    """Inference only: the identity; the mask output is all True."""
    if training_mode is not None and bool(np.asarray(training_mode)):
        raise unsupported_attribute("Dropout", "training_mode", True, [False])
    return x, jnp.ones(jnp.shape(x), bool)
