"""Elementwise ops: arithmetic, activations, comparisons, logic and casts.

Broadcasting is numpy's (ONNX "multidirectional broadcasting"). Spec: https://onnx.ai/onnx/operators/
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

from onnxshap._errors import UnsupportedOpError
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


def clip_6(x: Array, *, min: float, max: float) -> Array:
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


#: Float 8 types whose Cast honours `saturate` (out-of-range values clamp to the largest finite value).
_SATURATING_FLOAT8 = frozenset(
    np.dtype(t) for t in (jnp.float8_e4m3fn, jnp.float8_e4m3fnuz, jnp.float8_e5m2, jnp.float8_e5m2fnuz)
)
#: Sub-byte integers: onnxruntime rounds floats half away from zero, then wraps (two's complement).
_SUB_BYTE_INTS = frozenset(np.dtype(t) for t in (jnp.int4, jnp.uint4, jnp.int2, jnp.uint2))
#: 8/16-bit integers: onnxruntime truncates floats, then wraps; XLA would saturate.
_NARROW_INTS = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16))
#: Types XLA has no primitive for (Cast-28 added them); ml_dtypes knows them, JAX cannot compute on them.
_NO_XLA_TYPE = frozenset(np.dtype(t) for t in (ml_dtypes.float6_e2m3fn, ml_dtypes.float6_e3m2fn))
_E8M0 = np.dtype(jnp.float8_e8m0fnu)


def _float32_bits_of_float64(x: Array) -> Array:
    """float32(x) as float32 bit patterns (int32), subnormals kept, computed without float32 arithmetic.

    XLA on CPU flushes subnormal float32 results to zero, so float64 -> float32 of 2^-127 gives 0;
    here the rounding to float32 precision (nearest even, subnormal spacing 2^-149) is done in float64.
    """
    magnitude = jnp.abs(x)
    field = (lax.bitcast_convert_type(magnitude, jnp.int64) >> 52) & 0x7FF
    quantum_exp = jnp.maximum(field - 1023 - 23, -149)
    quantum = lax.bitcast_convert_type((quantum_exp + 1023) << 52, jnp.float64)
    rounded = jnp.rint(magnitude / quantum) * quantum
    rounded = jnp.where(rounded >= 2.0**128, jnp.inf, jnp.where(jnp.isfinite(magnitude), rounded, magnitude))
    bits64 = lax.bitcast_convert_type(rounded, jnp.int64)
    field64 = (bits64 >> 52) & 0x7FF
    top = (bits64 >> 29) & 0x7FFFFF  # the 23 fraction bits float32 keeps; the rest are zero after rounding
    # float32 field: normal numbers rebias; [2^-149, 2^-126) becomes subnormal with the implicit bit shifted in.
    shift = jnp.clip(897 - field64, 0, 31)
    subnormal_fraction = ((top | 0x800000) >> shift).astype(jnp.int64)
    normal = field64 >= 897
    bits = jnp.where(normal, ((field64 - 896) << 23) | top, jnp.where(field64 > 0, subnormal_fraction, 0))
    bits = jnp.where(field64 == 0x7FF, (0xFF << 23) | jnp.where(top != 0, 0x400000, 0), bits)
    bits = jnp.where(jnp.signbit(x), bits | (1 << 31), bits)
    return lax.bitcast_convert_type(bits.astype(jnp.uint32), jnp.int32)


def _to_float8e8m0(x: Array, saturate: bool, round_mode: str) -> Array:
    """Float -> E8M0 (a power of two 2^-127..2^127), as onnxruntime and the spec's table define it.

    x in [2^-127, 2^127] keeps its binary exponent, rounded by the mantissa (up: any fraction;
    nearest: mantissa >= 1.5; down: never); a round-up past 2^127 gives 2^127 (saturate) or NaN.
    Below 2^-127 (0, negatives, -Inf) gives 2^-127, above 2^127 (+Inf) gives 2^127, or NaN without
    saturate. onnx's reference implementation differs on those out-of-range values and treats
    subnormals by their raw exponent field; onnxruntime follows the spec.
    """
    if round_mode not in ("up", "down", "nearest"):
        raise unsupported_attribute("Cast", "round_mode", round_mode, ["up", "down", "nearest"])
    x = jnp.asarray(x)
    if x.dtype == jnp.float64:
        bits = _float32_bits_of_float64(x)
    else:
        # Every other source converts to float32 exactly (bfloat16 subnormals by a bit shift).
        bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    field = (bits >> 23) & 0xFF
    fraction = bits & 0x7FFFFF
    subnormal = field == 0
    # A subnormal in [2^-127, 2^-126) is 1.f * 2^-127: exponent 0 of E8M0, fraction below its leading bit.
    fraction = jnp.where(subnormal, ((fraction - 0x400000) << 1) & 0x7FFFFF, fraction)
    if round_mode == "up":
        round_up = fraction != 0
    elif round_mode == "nearest":
        round_up = fraction >= 0x400000
    else:
        round_up = jnp.zeros(bits.shape, bool)
    exponent = field + round_up.astype(jnp.int32)
    nan, top = jnp.int32(0xFF), jnp.int32(0xFE)
    exponent = jnp.where(exponent > 0xFE, top if saturate else nan, exponent)
    # Compare bit patterns, not floats: XLA on CPU flushes subnormals such as 2^-127 to zero.
    negative = bits < 0  # sign bit, including -0 and -Inf
    too_small = negative | (bits < 0x00400000)  # below 2^-127
    too_large = ~negative & (bits > 0x7F000000)  # above 2^127, including +Inf
    if saturate:
        exponent = jnp.where(too_small, 0, jnp.where(too_large, top, exponent))
    else:
        exponent = jnp.where(too_small | too_large, nan, exponent)
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    exponent = jnp.where(is_nan, nan, exponent)
    return lax.bitcast_convert_type(exponent.astype(jnp.uint8), jnp.float8_e8m0fnu)


def _round_half_away(x: Array) -> Array:
    whole = jnp.trunc(x)
    return whole + jnp.where(jnp.abs(x - whole) >= 0.5, jnp.sign(x), 0).astype(x.dtype)


def _cast(x: Array, dtype: np.dtype[Any], saturate: int | None, round_mode: str | None, op: str) -> Array:
    """ONNX Cast onto a numpy/ml_dtypes dtype (shared by Cast and CastLike), matching onnxruntime.

    Known divergences: with saturate=0, onnxruntime 1.31 maps float8 E4M3FN values in [480, 484) to 448
    and E5M2 values in (61440, 65536) to NaN; here they round to NaN and Inf, as the spec's table and
    onnx's reference implementation say. XLA on CPU flushes subnormal results of float arithmetic and
    of float64 -> float32/bfloat16 conversion to zero (E8M0 is computed on bit patterns to avoid it).
    """
    saturate = 1 if saturate is None else saturate  # absent before Cast-19: float 8 did not exist yet
    if isinstance(x, np.ndarray) and x.dtype.kind in "OUS":
        return x.astype(dtype)  # a constant string tensor parsed to numbers on the host
    source = np.dtype(jnp.result_type(x))
    for t in (source, dtype):
        if t in _NO_XLA_TYPE:
            raise UnsupportedOpError(
                f"{op} from {source} to {dtype} is not supported: XLA (and so JAX) has no {t} type."
            )
    x = jnp.asarray(x)
    if source == dtype:
        return x
    from_float = jnp.issubdtype(source, jnp.floating)
    if dtype in _SATURATING_FLOAT8 and saturate:
        if source.itemsize == 1 or not from_float:
            x = x.astype(jnp.float32)  # the clip bounds must be representable (E5M2's 57344 is not in E4M3FN)
        info = jnp.finfo(dtype)
        # Clamping first keeps +-Inf and too-large values at +-max; NaN passes through the clip.
        return jnp.clip(x, float(info.min), float(info.max)).astype(dtype)
    if dtype == _E8M0:
        return _to_float8e8m0(x, bool(saturate), round_mode or "up")
    if from_float and (dtype in _SUB_BYTE_INTS or dtype in _NARROW_INTS):
        wide = x.astype(jnp.float64 if source == np.float64 else jnp.float32)  # float16 cannot hold 2^31
        whole = _round_half_away(wide) if dtype in _SUB_BYTE_INTS else jnp.trunc(wide)
        # Through int32 as the C conversion does on x86: out of its range (undefined in ONNX) and NaN
        # give INT32_MIN, whose low bits are 0; the int32 -> narrow conversion then wraps.
        valid = (whole >= -(2.0**31)) & (whole < 2.0**31)
        return jnp.where(valid, whole, -(2.0**31)).astype(jnp.int32).astype(dtype)
    return x.astype(dtype)


def cast(x: Array, *, to: int, saturate: int | None = None, round_mode: str | None = None) -> Array:
    """Cast as onnxruntime does: float -> integer truncates (sub-byte: rounds half away from 0), then wraps.

    Float 8 targets clamp unless saturate=0; E8M0 rounds per round_mode. Strings (except constant
    string tensors parsed to numbers) and the float 6 types of Cast-28 are not supported.
    """
    return _cast(x, onnx_dtype(to), saturate, round_mode, "Cast")


def cast_like(x: Array, target: Array, *, saturate: int | None = None, round_mode: str | None = None) -> Array:
    """Cast to the element type of `target` (its values are ignored)."""
    dtype = np.dtype(jnp.result_type(target)) if not isinstance(target, np.ndarray) else target.dtype
    if dtype.kind in "OUS":
        raise UnsupportedOpError("CastLike to a string tensor is not supported: JAX has no string dtype.")
    return _cast(x, dtype, saturate, round_mode, "CastLike")


def identity(x: Array) -> Array:
    return x


def dropout(
    x: Array, ratio: Array | None = None, training_mode: Array | None = None, *, seed: int | None = None
) -> tuple[Array, Array]:
    """Dropout-12+ in inference: the identity with an all-True mask.

    training_mode=True draws a random mask and is unsupported, except with a constant ratio of 0.
    """
    # training_mode and ratio are static inputs (numpy) in the rule table.
    training = training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0])
    if training and (ratio is None or np.any(np.asarray(ratio))):
        raise UnsupportedOpError(
            "Dropout with training_mode=True draws a random mask; onnxshap evaluates inference graphs only. "
            "Export the model in inference mode (model.eval() in PyTorch, training=False in Keras)."
        )
    return x, jnp.ones(jnp.shape(x), bool)


def dropout_7(x: Array, *, ratio: float) -> tuple[Array, Array]:
    """Dropout-7 (inference only): the identity; the unfilled mask (type T) is all zeros, as in onnxruntime."""
    return x, jnp.zeros(jnp.shape(x), jnp.result_type(x))


def dropout_10(x: Array, *, ratio: float) -> tuple[Array, Array]:
    """Dropout-10 (inference only): the identity; the unfilled mask is all False, as in onnxruntime."""
    return x, jnp.zeros(jnp.shape(x), bool)
