"""Neural-network ops: convolutions, matrix products, normalizations, pooling and softmax.

Layouts are ONNX's: channels first (N, C, D1, ..., Dn), convolution weights (M, C/group, k1, ..., kn),
transposed-convolution weights (C, M/group, k1, ..., kn). Float32 matrix products and convolutions
run at full precision (`Precision.HIGHEST`): on GPUs the default would use TF32, whose ~1e-3
relative error breaks both the conformance tolerances and the attributions' completeness.
Spec: https://onnx.ai/onnx/operators/
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._errors import UnsupportedOpError
from onnxshap.ops._common import needs_output_count, normalize_axis, unsupported_attribute

Array = Any

_HIGHEST = lax.Precision.HIGHEST
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _is_half(x: Array) -> bool:
    return jnp.result_type(x) in (jnp.float16, jnp.bfloat16)


def _accumulation_dtype(x: Array) -> Any:
    # Sums and statistics of half-precision tensors are accumulated in float32, as onnxruntime does.
    return jnp.float32 if _is_half(x) else jnp.result_type(x)


def _product_dtype(*xs: Array) -> Any:
    # Half-precision products accumulate in float32 and are rounded once at the end.
    return jnp.float32 if any(_is_half(x) for x in xs) else None


def _per_axis(value: Sequence[int] | None, n: int, fill: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if value else (fill,) * n


def _check_auto_pad(op: str, auto_pad: str) -> None:
    if auto_pad not in _AUTO_PADS:
        raise unsupported_attribute(op, "auto_pad", auto_pad, _AUTO_PADS)


def _explicit_pads(pads: Sequence[int] | None, n: int) -> list[tuple[int, int]]:
    p = _per_axis(pads, 2 * n, 0)
    return [(p[i], p[i + n]) for i in range(n)]


def _same_pads(
    auto_pad: str, size: int, kernel: int, stride: int, dilation: int, *, clamp: bool = True
) -> tuple[int, int]:
    """SAME_UPPER / SAME_LOWER: output size ceil(size / stride); an odd total puts the extra at the end / start.

    Convolutions never pad negatively. Pools follow their spec's formula, which gives a negative
    total when the stride exceeds the window (windows then skip leading/trailing elements); that total
    is split with C's truncating division, exactly as onnxruntime does.
    """
    out = -(-size // stride)
    total = (out - 1) * stride + (kernel - 1) * dilation + 1 - size
    if clamp:
        total = max(total, 0)
    upper = total + (auto_pad == "SAME_LOWER")
    begin = int(upper / 2)  # truncates toward zero; equals // for the usual non-negative totals
    return begin, total - begin


def _window_pads(
    op: str,
    auto_pad: str,
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int] | None,
    *,
    clamp: bool = True,
) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis for a convolution or pooling window."""
    _check_auto_pad(op, auto_pad)
    n = len(sizes)
    if auto_pad == "NOTSET":
        return _explicit_pads(pads, n)
    if auto_pad == "VALID":
        return [(0, 0)] * n
    return [_same_pads(auto_pad, *args, clamp=clamp) for args in zip(sizes, kernel, strides, dilations)]


# --- convolution ---------------------------------------------------------------------------------


def _check_kernel_shape(op: str, kernel_shape: Sequence[int] | None, w: Array) -> None:
    if kernel_shape is not None and tuple(kernel_shape) != tuple(w.shape[2:]):
        raise UnsupportedOpError(
            f"{op}: kernel_shape={list(kernel_shape)} disagrees with the weight's spatial shape "
            f"{list(w.shape[2:])}; the model is inconsistent."
        )


def _channel_bias(y: Array, b: Array | None) -> Array:
    if b is None:
        return y
    return y + jnp.reshape(b, (1, -1) + (1,) * (y.ndim - 2)).astype(y.dtype)


def _pad_beyond_span(
    x: Array, padding: Sequence[tuple[int, int]], kernel: Sequence[int], dilations: Sequence[int]
) -> tuple[Array, list[tuple[int, int]]]:
    """(x, padding) with the padding beyond the kernel's span, (k - 1) * dilation per side, applied
    to x as zeros: the same convolution. XLA:CPU (jax 0.10) computes the input-gradient of a float32
    convolution padded beyond its span wrongly, garbage or NaN for some geometries (its transpose has
    negative padding); the linear rule's VJP takes that gradient."""
    reach = [(k - 1) * di for k, di in zip(kernel, dilations)]
    excess = [(max(lo - r, 0), max(hi - r, 0)) for (lo, hi), r in zip(padding, reach)]
    if not any(lo or hi for lo, hi in excess):
        return x, list(padding)
    x = jnp.pad(x, [(0, 0), (0, 0), *excess])
    return x, [(lo - a, hi - b) for (lo, hi), (a, b) in zip(padding, excess)]


def conv(
    x: Array,
    w: Array,
    b: Array | None = None,
    *,
    auto_pad: str,
    group: int,
    dilations: Sequence[int] | None = None,
    kernel_shape: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
) -> Array:
    """1-D, 2-D and 3-D (any rank) grouped, dilated, strided convolution, one XLA convolution."""
    _check_kernel_shape("Conv", kernel_shape, w)
    n = x.ndim - 2
    kernel = tuple(w.shape[2:])
    s = _per_axis(strides, n, 1)
    d = _per_axis(dilations, n, 1)
    padding = _window_pads("Conv", auto_pad, x.shape[2:], kernel, s, d, pads)
    x, padding = _pad_beyond_span(x, padding, kernel, d)
    y = lax.conv_general_dilated(
        x,
        w.astype(x.dtype),
        s,
        padding,
        rhs_dilation=d,
        feature_group_count=group,
        precision=_HIGHEST,
        preferred_element_type=_product_dtype(x),
    )
    return _channel_bias(y, b).astype(x.dtype)


def conv_transpose(
    x: Array,
    w: Array,
    b: Array | None = None,
    *,
    auto_pad: str,
    group: int,
    dilations: Sequence[int] | None = None,
    kernel_shape: Sequence[int] | None = None,
    output_padding: Sequence[int] | None = None,
    output_shape: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
) -> Array:
    """Transposed convolution as one input-dilated convolution with the flipped kernel.

    With output_shape (or SAME_*), the total padding is split as ConvTranspose-11's spec says (an odd
    total puts the extra at the end for SAME_UPPER, at the start otherwise). ConvTranspose-1's text
    states the opposite split, but onnxruntime and the onnx reference apply the newer rule at every
    version, so onnxshap does too.
    """
    _check_kernel_shape("ConvTranspose", kernel_shape, w)
    _check_auto_pad("ConvTranspose", auto_pad)
    n = x.ndim - 2
    sizes = x.shape[2:]
    kernel = tuple(w.shape[2:])
    s = _per_axis(strides, n, 1)
    d = _per_axis(dilations, n, 1)
    adj = _per_axis(output_padding, n, 0)
    span = [(k - 1) * di + 1 for k, di in zip(kernel, d)]
    full = [si * (size - 1) + a + sp for si, size, a, sp in zip(s, sizes, adj, span)]
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = list(output_shape)[-n:] if output_shape else [size * si for size, si in zip(sizes, s)]
        padding = []
        for f, t in zip(full, target):
            # SAME cannot shrink the padding below zero (onnxruntime agrees); an explicit
            # output_shape larger than the full result appends zeros (spec, reference, onnxruntime).
            total = f - t if output_shape else max(f - t, 0)
            small, big = total // 2, total - total // 2
            padding.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    elif auto_pad == "VALID":
        padding = [(0, 0)] * n
    else:
        padding = _explicit_pads(pads, n)
    out = [f - lo - hi for f, (lo, hi) in zip(full, padding)]

    # (C, M/g, k...) -> (M, C/g, k...), spatially flipped: the adjoint of the forward convolution.
    c_in, m_per_group = w.shape[0], w.shape[1]
    rhs = jnp.reshape(w.astype(x.dtype), (group, c_in // group, m_per_group, *kernel))
    rhs = jnp.reshape(jnp.swapaxes(rhs, 1, 2), (group * m_per_group, c_in // group, *kernel))
    rhs = jnp.flip(rhs, axis=tuple(range(2, n + 2)))
    # Padding of the dilated input; negative amounts (pads larger than the kernel span) become crops.
    conv_pads = [(sp - 1 - lo, sp - 1 - hi + a) for sp, (lo, hi), a in zip(span, padding, adj)]
    y = lax.conv_general_dilated(
        x,
        rhs,
        (1,) * n,
        [(max(lo, 0), max(hi, 0)) for lo, hi in conv_pads],
        lhs_dilation=s,
        rhs_dilation=d,
        feature_group_count=group,
        precision=_HIGHEST,
        preferred_element_type=_product_dtype(x),
    )
    if any(lo < 0 or hi < 0 for lo, hi in conv_pads):
        starts = [max(-lo, 0) for lo, _ in conv_pads]
        y = y[(slice(None), slice(None), *(slice(st, st + o) for st, o in zip(starts, out)))]
    return _channel_bias(y, b).astype(x.dtype)


# --- matrix products -----------------------------------------------------------------------------


def gemm(
    a: Array,
    b: Array,
    c: Array | None = None,
    *,
    alpha: float,
    beta: float,
    transA: int,
    transB: int,
    broadcast: int | None = None,
) -> Array:
    """alpha * A' B' + beta * C; C broadcasts (Gemm-1/6's `broadcast` flag only restricted it).

    The transposes are contracting dimensions of one dot, not transposed operands: XLA:CPU copied a
    transposed weight (B of a Linear layer, transB = 1) into a new buffer on every call of one sample
    (light VGG-19: 600 MB of temporaries per call).
    """
    dtype = jnp.result_type(a, b)
    a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    contracting = ((0 if transA else 1,), (1 if transB else 0,))
    y = lax.dot_general(a, b, (contracting, ((), ())), precision=_HIGHEST, preferred_element_type=_product_dtype(a, b))
    if alpha != 1.0:
        y = (y * alpha).astype(y.dtype)
    if c is not None and beta != 0.0:
        y = y + (beta * c if beta != 1.0 else c).astype(y.dtype)
    return y.astype(dtype)


def matmul(a: Array, b: Array) -> Array:
    """numpy.matmul: 1-D operands are promoted and the added axis removed; batch axes broadcast."""
    dtype = jnp.result_type(a, b)
    return jnp.matmul(a, b, precision=_HIGHEST, preferred_element_type=_product_dtype(a, b)).astype(dtype)


def einsum(*inputs: Array, equation: str) -> Array:
    dtype = jnp.result_type(*inputs)
    y = jnp.einsum(
        equation.replace(" ", ""), *inputs, precision=_HIGHEST, preferred_element_type=_product_dtype(*inputs)
    )
    return y.astype(dtype)


# --- normalization -------------------------------------------------------------------------------


@needs_output_count
def batch_normalization(
    x: Array,
    scale: Array,
    b: Array,
    mean: Array,
    var: Array,
    *,
    epsilon: float,
    output_count: int,
    momentum: float | None = None,
    training_mode: int = 0,
    spatial: int = 1,
    is_test: int | None = None,
    consumed_inputs: Sequence[int] | None = None,
) -> Array:
    """Inference mode: (x - mean) / sqrt(var + epsilon) * scale + B, per channel.

    Only Y is produced. Training mode is unsupported: training_mode=1, or a node that lists the
    running/batch statistics outputs (before version 14 that is how onnxruntime recognizes training).
    `spatial=0` (versions 1-7) takes per-activation parameters shaped like x[1:]; `is_test` and
    `consumed_inputs` are legacy flags with no effect in inference.
    """
    if training_mode:
        raise unsupported_attribute("BatchNormalization", "training_mode", training_mode, [0])
    if output_count > 1:
        raise UnsupportedOpError(
            f"BatchNormalization with {output_count} outputs is training mode (it updates the running "
            "statistics from the batch); only inference with the single output Y is supported. Export the "
            "model in eval mode."
        )
    dtype = jnp.result_type(x)
    acc = _accumulation_dtype(x)

    def param(p: Array) -> Array:
        p = jnp.asarray(p).astype(acc)
        # spatial=1: one value per channel; spatial=0: per activation, already shaped like x[1:].
        return jnp.reshape(p, (-1,) + (1,) * (x.ndim - 2)) if spatial and p.ndim == 1 else p

    factor = param(scale) * lax.rsqrt(param(var) + jnp.asarray(epsilon, acc))
    return ((x.astype(acc) - param(mean)) * factor + param(b)).astype(dtype)


# --- pooling -------------------------------------------------------------------------------------


class _PoolGeometry:
    """Where the windows of a pooling op lie along each spatial axis.

    `pads` are the spec's begin/end paddings (explicit, or derived from auto_pad); `out` the output
    sizes (floor or ceil mode; in ceil mode a last window that would start in the end padding is
    dropped, as in PyTorch, onnxruntime and the onnx reference). `window_pads` is the padding
    reduce_window needs to produce exactly `out` windows: ceil mode can reach past the end padding.
    SAME_* with dilations follows the spec (output ceil(size / stride), padding from the dilated
    window); onnxruntime and the onnx reference pad for the undilated window there and disagree.
    """

    def __init__(
        self,
        op: str,
        x: Array,
        *,
        auto_pad: str,
        kernel_shape: Sequence[int] | None,
        strides: Sequence[int] | None,
        pads: Sequence[int] | None,
        dilations: Sequence[int] | None,
        ceil_mode: int,
    ):
        if not kernel_shape:
            raise UnsupportedOpError(f"{op} needs the kernel_shape attribute; the node has none.")
        n = x.ndim - 2
        self.sizes = tuple(x.shape[2:])
        self.kernel = tuple(int(k) for k in kernel_shape)
        self.strides = _per_axis(strides, n, 1)
        self.dilations = _per_axis(dilations, n, 1)
        self.pads = _window_pads(op, auto_pad, self.sizes, self.kernel, self.strides, self.dilations, pads, clamp=False)
        self.out: list[int] = []
        self.window_pads: list[tuple[int, int]] = []
        for size, k, s, d, (lo, hi) in zip(self.sizes, self.kernel, self.strides, self.dilations, self.pads):
            span = (k - 1) * d + 1
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                out = -(-size // s)
            elif ceil_mode:
                out = -(-(size + lo + hi - span) // s) + 1
                if (out - 1) * s >= size + lo:
                    out -= 1
            else:
                out = (size + lo + hi - span) // s + 1
            self.out.append(max(out, 0))
            self.window_pads.append((lo, max((out - 1) * s + span - size - lo, 0)))

    def reduce(self, x: Array, init: Any, op: Any) -> Array:
        """One reduce_window over the spatial windows, cut to the output size.

        Pass `init` as a numpy value: then JAX recognises the sum/max monoid, which it can differentiate
        (a jnp constant is a tracer under jit and makes the window a generic, non-differentiable reduce).
        """
        # A negative begin padding (SAME with a stride beyond the window) skips leading elements.
        crop = (slice(None), slice(None), *(slice(max(-lo, 0), None) for lo, _ in self.window_pads))
        operands = tuple(part[crop] for part in x) if isinstance(x, tuple) else x[crop]
        y = lax.reduce_window(
            operands,
            init,
            op,
            (1, 1, *self.kernel),
            (1, 1, *self.strides),
            [(0, 0), (0, 0), *((max(lo, 0), hi) for lo, hi in self.window_pads)],
            window_dilation=(1, 1, *self.dilations),
        )
        cut = (slice(None), slice(None), *(slice(0, o) for o in self.out))
        return tuple(part[cut] for part in y) if isinstance(y, (tuple, list)) else y[cut]

    def counts(self, count_include_pad: int) -> np.ndarray:
        """Number of elements each window averages over: input only, or input and the spec's padding."""
        per_axis = []
        for size, k, s, d, (lo, hi), out in zip(
            self.sizes, self.kernel, self.strides, self.dilations, self.pads, self.out
        ):
            first, last = (-lo, size + hi) if count_include_pad else (0, size)
            pos = np.arange(out)[:, None] * s - lo + np.arange(k)[None, :] * d
            per_axis.append(((pos >= first) & (pos < last)).sum(axis=1))
        return math.prod(np.ix_(*per_axis)) if per_axis else np.ones(())  # type: ignore[no-any-return]


def _lowest(dtype: Any) -> Any:
    return -np.inf if jnp.issubdtype(dtype, jnp.floating) else np.iinfo(dtype).min


def average_pool(
    x: Array,
    *,
    auto_pad: str,
    kernel_shape: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    count_include_pad: int = 0,
    ceil_mode: int = 0,
    dilations: Sequence[int] | None = None,
) -> Array:
    """Window mean; padding counts in the divisor only with count_include_pad, ceil-mode overhang never.

    count_include_pad, ceil_mode and dilations default to 0/0/1 for the versions that predate them.
    """
    geo = _PoolGeometry(
        "AveragePool",
        x,
        auto_pad=auto_pad,
        kernel_shape=kernel_shape,
        strides=strides,
        pads=pads,
        dilations=dilations,
        ceil_mode=ceil_mode,
    )
    dtype = jnp.result_type(x)
    acc = _accumulation_dtype(x)
    total = geo.reduce(x.astype(acc), np.zeros((), acc), lax.add)
    return (total / jnp.asarray(geo.counts(count_include_pad), acc)).astype(dtype)


@needs_output_count
def max_pool(
    x: Array,
    *,
    auto_pad: str,
    output_count: int,
    kernel_shape: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    ceil_mode: int = 0,
    dilations: Sequence[int] | None = None,
    storage_order: int = 0,
) -> Array | tuple[Array, Array]:
    """Window max with padding ignored; Y, or (Y, Indices) when the node lists Indices.

    Indices are offsets into the flattened X (batch and channel included), row-major over the spatial
    axes, or column-major with storage_order=1; ties go to the first element in row-major order.
    Attributes missing from older versions default to the spec's later defaults.
    """
    if storage_order not in (0, 1):
        raise unsupported_attribute("MaxPool", "storage_order", storage_order, [0, 1])
    geo = _PoolGeometry(
        "MaxPool",
        x,
        auto_pad=auto_pad,
        kernel_shape=kernel_shape,
        strides=strides,
        pads=pads,
        dilations=dilations,
        ceil_mode=ceil_mode,
    )
    dtype = jnp.result_type(x)
    lowest = np.asarray(_lowest(dtype), dtype)
    y = geo.reduce(x, lowest, lax.max)
    if output_count < 2:
        return y
    return y, _max_pool_indices(x, geo, lowest, storage_order)


def _max_pool_indices(x: Array, geo: _PoolGeometry, lowest: Array, storage_order: int) -> Array:
    spatial = math.prod(geo.sizes)
    index_dtype = jnp.int32 if x.size < 2**31 else jnp.int64
    flat = jnp.broadcast_to(jnp.arange(spatial, dtype=index_dtype).reshape(geo.sizes), x.shape)
    sentinel = jnp.asarray(np.iinfo(index_dtype).max, index_dtype)

    def first_max(a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
        (va, ia), (vb, ib) = a, b
        take_a = (va > vb) | ((va == vb) & (ia < ib))
        return jnp.where(take_a, va, vb), jnp.where(take_a, ia, ib)

    _, row_major = geo.reduce((x, flat), (lowest, sentinel), first_max)
    if storage_order:
        coords = jnp.unravel_index(row_major, geo.sizes)
        strides = np.cumprod((1, *geo.sizes[:-1]))
        row_major = sum((c * int(st) for c, st in zip(coords, strides)), jnp.zeros_like(row_major))
    batch_channel = jnp.arange(x.shape[0] * x.shape[1], dtype=jnp.int64).reshape(x.shape[:2])
    offset = batch_channel.reshape(x.shape[:2] + (1,) * len(geo.sizes)) * spatial
    return row_major.astype(jnp.int64) + offset


def global_average_pool(x: Array) -> Array:
    dtype = jnp.result_type(x)
    return jnp.mean(x.astype(_accumulation_dtype(x)), axis=tuple(range(2, x.ndim)), keepdims=True).astype(dtype)


def global_max_pool(x: Array) -> Array:
    return jnp.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


# --- softmax family ------------------------------------------------------------------------------


def _softmax_axes(x: Array, axis: int, coerce_2d: bool) -> tuple[int, ...]:
    # Before version 13 the input is viewed as 2-D [prod(shape[:axis]), prod(shape[axis:])] and the
    # op runs over the second dimension, i.e. over all axes from `axis` on.
    a = normalize_axis(axis, x.ndim)
    return tuple(range(a, x.ndim)) if coerce_2d else (a,)


def _shift_by_max(x: Array, axes: tuple[int, ...]) -> Array:
    # x - max(x) is <= 0 mathematically, but XLA may recompute a fused producer of x in another
    # reduction order, so at large magnitudes (1e9) it can come out positive and exp overflow.
    return jnp.minimum(x - lax.stop_gradient(jnp.max(x, axis=axes, keepdims=True)), 0)


def _softmax(x: Array, axes: tuple[int, ...]) -> Array:
    # Subtracting the max leaves the value unchanged and keeps exp finite; stop_gradient keeps the
    # max out of derivatives (the shift cancels exactly).
    shifted = _shift_by_max(x.astype(_accumulation_dtype(x)), axes)
    e = jnp.exp(shifted)
    return (e / jnp.sum(e, axis=axes, keepdims=True)).astype(jnp.result_type(x))


def _log_softmax(x: Array, axes: tuple[int, ...]) -> Array:
    shifted = _shift_by_max(x.astype(_accumulation_dtype(x)), axes)
    return (shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axes, keepdims=True))).astype(jnp.result_type(x))


def softmax_1(x: Array, *, axis: int) -> Array:
    """Softmax-1/11: over all axes from `axis` on (the input coerced to 2-D)."""
    return _softmax(x, _softmax_axes(x, axis, True))


def softmax(x: Array, *, axis: int) -> Array:
    """Softmax-13: over the one axis `axis`."""
    return _softmax(x, _softmax_axes(x, axis, False))


def log_softmax_1(x: Array, *, axis: int) -> Array:
    """LogSoftmax-1/11: over all axes from `axis` on (the input coerced to 2-D)."""
    return _log_softmax(x, _softmax_axes(x, axis, True))


def log_softmax(x: Array, *, axis: int) -> Array:
    """LogSoftmax-13: over the one axis `axis`."""
    return _log_softmax(x, _softmax_axes(x, axis, False))


def _hardmax(x: Array, axes: tuple[int, ...]) -> Array:
    # One-hot of the first maximum over `axes` (flattened row-major when there are several).
    lead = x.shape[: axes[0]]
    flat = jnp.reshape(x, (*lead, -1))
    hot = jnp.argmax(flat, axis=-1)[..., None] == jnp.arange(flat.shape[-1])
    return jnp.reshape(hot, x.shape).astype(x.dtype)


def hardmax_1(x: Array, *, axis: int) -> Array:
    """Hardmax-1/11: one-hot over all axes from `axis` on (the input coerced to 2-D)."""
    return _hardmax(x, _softmax_axes(x, axis, True))


def hardmax(x: Array, *, axis: int) -> Array:
    """Hardmax-13: one-hot of the first maximum along `axis`."""
    a = normalize_axis(axis, x.ndim)
    moved = jnp.moveaxis(x, a, -1)
    return jnp.moveaxis(_hardmax(moved, (moved.ndim - 1,)), -1, a)
