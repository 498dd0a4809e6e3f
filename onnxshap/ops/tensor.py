"""Shape, indexing and data-movement ops: Reshape, Transpose, Slice, Gather, Pad, Resize, Shape, ...

Shapes, axes, pads, starts/ends, repeats, sizes and scales are static inputs (numpy arrays, read
with `static_ints`), so every output shape is known when the graph is compiled. Shape and Size
return numpy arrays even for a traced input: that is what lets shape arithmetic fold to constants.
Spec: https://onnx.ai/onnx/operators/
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._errors import GraphError, UnsupportedOpError
from onnxshap.ops._common import (
    needs_output_count,
    normalize_axes,
    normalize_axis,
    onnx_dtype,
    static_ints,
    unsupported_attribute,
)

Array = Any


def _is_static(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.generic))


def _present(value: Any) -> bool:
    """An optional input counts as given only when it is there and not empty (ONNX allows both)."""
    return value is not None and np.asarray(value).size > 0


# --- reshaping ------------------------------------------------------------------------------------


def _reshape_target(op: str, in_shape: Sequence[int], shape: Sequence[int], allowzero: int) -> tuple[int, ...]:
    out = list(shape)
    if not allowzero:
        # 0 copies the input's dimension at the same position.
        out = [in_shape[i] if d == 0 and i < len(in_shape) else d for i, d in enumerate(out)]
    if out.count(-1) > 1:
        raise GraphError(f"{op}: the target shape {list(shape)} has more than one -1.")
    total = math.prod(in_shape)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise GraphError(f"{op}: cannot infer the -1 in {list(shape)} for an input of shape {list(in_shape)}.")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise GraphError(f"{op}: cannot reshape an input of shape {list(in_shape)} to {list(shape)}.")
    return tuple(out)


def reshape_1(data: Array, *, shape: Sequence[int], consumed_inputs: Sequence[int] | None = None) -> Array:
    """Reshape-1: the target shape is an attribute."""
    return jnp.reshape(data, _reshape_target("Reshape", data.shape, static_ints(shape), 0))


def reshape(data: Array, shape: Array, *, allowzero: int = 0) -> Array:
    """Reshape-5+: 0 copies the input dimension unless allowzero=1 (14+); -1 is inferred."""
    return jnp.reshape(data, _reshape_target("Reshape", data.shape, static_ints(shape), allowzero))


def flatten(x: Array, *, axis: int) -> Array:
    rank = x.ndim
    if not -rank <= axis <= rank:
        raise UnsupportedOpError(f"Flatten axis {axis} is out of range for a tensor of rank {rank}.")
    axis = axis + rank if axis < 0 else axis
    return jnp.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def transpose(data: Array, *, perm: Sequence[int] | None = None) -> Array:
    """perm defaults to reversing the axes."""
    return jnp.transpose(data, tuple(perm) if perm is not None else tuple(reversed(range(data.ndim))))


def squeeze(data: Array, axes_input: Array | None = None, *, axes: Sequence[int] | None = None) -> Array:
    """Axes are an attribute before 13 and a static input from 13; none given squeezes every 1."""
    chosen = axes_input if axes_input is not None else axes
    if chosen is None:
        return jnp.squeeze(data, axis=tuple(i for i, d in enumerate(data.shape) if d == 1))
    dims = normalize_axes(chosen, data.ndim)
    bad = [a for a in dims if data.shape[a] != 1]
    if bad:
        raise GraphError(f"Squeeze: axes {bad} of a tensor of shape {list(data.shape)} are not of size 1.")
    return jnp.squeeze(data, axis=dims)


def unsqueeze(data: Array, axes_input: Array | None = None, *, axes: Sequence[int] | None = None) -> Array:
    """Axes are an attribute before 13 and a static input from 13; they index the output's axes."""
    chosen = static_ints(axes_input if axes_input is not None else axes)
    out_rank = data.ndim + len(chosen)
    shape = list(data.shape)
    for a in sorted(normalize_axes(chosen, out_rank)):
        shape.insert(a, 1)
    return jnp.reshape(data, tuple(shape))


def expand(x: Array, shape: Array) -> Array:
    """Bidirectional broadcast: a target dimension of 1 keeps the input's dimension."""
    return jnp.broadcast_to(x, np.broadcast_shapes(x.shape, static_ints(shape)))


def tile(x: Array, repeats: Array) -> Array:
    return jnp.tile(x, static_ints(repeats))


def depth_to_space(x: Array, *, blocksize: int, mode: str = "DCR") -> Array:
    """Mode (DCR or CRD) exists from 11; DepthToSpace-1 is DCR."""
    b, c, h, w = x.shape
    bs = blocksize
    if mode == "DCR":
        t = jnp.transpose(jnp.reshape(x, (b, bs, bs, c // bs**2, h, w)), (0, 3, 4, 1, 5, 2))
    elif mode == "CRD":
        t = jnp.transpose(jnp.reshape(x, (b, c // bs**2, bs, bs, h, w)), (0, 1, 4, 2, 5, 3))
    else:
        raise unsupported_attribute("DepthToSpace", "mode", mode, ["DCR", "CRD"])
    return jnp.reshape(t, (b, c // bs**2, h * bs, w * bs))


def space_to_depth(x: Array, *, blocksize: int, mode: str = "DCR") -> Array:
    """Mode (DCR or CRD) exists from 28; earlier versions are DCR."""
    b, c, h, w = x.shape
    bs = blocksize
    t = jnp.reshape(x, (b, c, h // bs, bs, w // bs, bs))
    if mode == "DCR":
        t = jnp.transpose(t, (0, 3, 5, 1, 2, 4))
    elif mode == "CRD":
        t = jnp.transpose(t, (0, 1, 3, 5, 2, 4))
    else:
        raise unsupported_attribute("SpaceToDepth", "mode", mode, ["DCR", "CRD"])
    return jnp.reshape(t, (b, c * bs * bs, h // bs, w // bs))


# --- joining and splitting ------------------------------------------------------------------------


def _is_static_all(values: Sequence[Any]) -> bool:
    return all(_is_static(v) for v in values)


def concat(*inputs: Array, axis: int | None = None) -> Array:
    """Concat-1 without an axis attribute concatenates along axis 1, as its spec says."""
    arrays = [x for x in inputs if x is not None]
    rank = np.ndim(arrays[0])
    if _is_static_all(arrays):
        # Keep shape arithmetic in numpy (and its dtype) when everything is known.
        return np.concatenate([np.asarray(a) for a in arrays], axis=normalize_axis(1 if axis is None else axis, rank))
    return jnp.concatenate(arrays, axis=normalize_axis(1 if axis is None else axis, rank))


def _split_sizes(dim: int, sizes: Sequence[int] | None, num_outputs: int | None, output_count: int) -> list[int]:
    if sizes is not None:
        if sum(sizes) != dim:
            raise GraphError(f"Split: sizes {list(sizes)} do not add up to the axis length {dim}.")
        return list(sizes)
    if num_outputs is not None:
        # Split-18: the last chunk is smaller when the axis does not divide evenly.
        chunk = -(-dim // num_outputs)
        return [min(chunk, max(dim - i * chunk, 0)) for i in range(num_outputs)]
    if dim % output_count:
        raise GraphError(
            f"Split: an axis of length {dim} cannot be split into {output_count} equal parts; give 'split' sizes."
        )
    return [dim // output_count] * output_count


@needs_output_count
def split(
    x: Array,
    sizes: Array | None = None,
    *,
    axis: int = 0,
    split: Sequence[int] | None = None,
    num_outputs: int | None = None,
    output_count: int,
) -> tuple[Array, ...]:
    """Sizes come from the `split` attribute (before 13) or the static input; else equal parts."""
    given = sizes if _present(sizes) else split
    axis = normalize_axis(axis, x.ndim)
    parts = _split_sizes(x.shape[axis], static_ints(given) if given is not None else None, num_outputs, output_count)
    offsets = np.cumsum([0, *parts])
    return tuple(lax.slice_in_dim(x, int(offsets[i]), int(offsets[i + 1]), axis=axis) for i in range(len(parts)))


# --- slicing and indexing -------------------------------------------------------------------------


def _slice(
    x: Array, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None, steps: Sequence[int] | None
) -> Array:
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    index: list[slice] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, normalize_axes(axes, x.ndim), steps):
        dim = x.shape[axis]
        if step == 0:
            raise GraphError("Slice: a step of 0 is invalid.")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[axis] = slice(start, end, step)
        elif dim == 0:
            index[axis] = slice(0, 0, 1)
        else:
            # Negative steps clamp the start to [0, dim-1] and the end to [-1, dim-1]; -1 means "past index 0".
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            index[axis] = slice(start, end if end >= 0 else None, step)
    return x[tuple(index)]


def slice_1(data: Array, *, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None = None) -> Array:
    """Slice-1: starts/ends/axes are attributes, no steps."""
    return _slice(data, static_ints(starts), static_ints(ends), axes, None)


def slice_(data: Array, starts: Array, ends: Array, axes: Array | None = None, steps: Array | None = None) -> Array:
    """Slice-10+: static inputs; out-of-range starts/ends are clamped, negative steps walk backwards."""
    return _slice(
        data,
        static_ints(starts),
        static_ints(ends),
        static_ints(axes) if axes is not None else None,
        static_ints(steps) if steps is not None else None,
    )


def _wrap_negative(indices: Array, dim: Any) -> Array:
    if _is_static(indices):
        idx = np.asarray(indices)
        return np.where(idx < 0, idx + np.asarray(dim, idx.dtype), idx)
    return jnp.where(indices < 0, indices + jnp.asarray(dim, indices.dtype), indices)


def gather(data: Array, indices: Array, *, axis: int) -> Array:
    """Indices may be static or traced (embedding lookups of token ids); negative ones count from the end."""
    axis = normalize_axis(axis, np.ndim(data))
    idx = _wrap_negative(indices, data.shape[axis])
    if _is_static(data) and _is_static(idx):
        return np.take(np.asarray(data), idx, axis=axis)
    return jnp.take(data, idx, axis=axis)


def _elements_index(data: Array, indices: Array, axis: int) -> tuple[Array, ...]:
    """Index tuple picking data[..., indices[i, j, ...], ...] along `axis` at every position of indices.

    indices may be smaller than data on the other axes, so this is not numpy's take_along_axis.
    """
    idx = _wrap_negative(indices, data.shape[axis])
    grid = np.indices(np.shape(indices), sparse=True)
    return tuple(idx if d == axis else grid[d] for d in range(np.ndim(data)))


def gather_elements(data: Array, indices: Array, *, axis: int) -> Array:
    axis = normalize_axis(axis, data.ndim)
    return jnp.asarray(data)[_elements_index(data, indices, axis)]


def _nd_index(data_shape: Sequence[int], indices: Array, batch_dims: int) -> tuple[Array, ...]:
    """Index tuple selecting data[batch..., indices[batch..., :]] for the leading batch_dims axes."""
    k = indices.shape[-1]
    dims = np.asarray(data_shape[batch_dims : batch_dims + k], dtype=np.int64)
    xp = np if _is_static(indices) else jnp
    idx = xp.asarray(indices).astype(np.int64)
    idx = xp.where(idx < 0, idx + dims, idx)
    grid = np.indices(indices.shape[:batch_dims], sparse=True) if batch_dims else ()
    pad = (1,) * (indices.ndim - 1 - batch_dims)
    batch = tuple(g.reshape(g.shape + pad) for g in grid)
    return batch + tuple(idx[..., j] for j in range(k))


def gather_nd(data: Array, indices: Array, *, batch_dims: int = 0) -> Array:
    """batch_dims exists from 12."""
    return jnp.asarray(data)[_nd_index(data.shape, indices, batch_dims)]


_AFFINE_REDUCTIONS = ("none", "add")


def _scatter(op: str, data: Array, index: tuple[Array, ...], updates: Array, reduction: str) -> Array:
    target = jnp.asarray(data).at[index]
    if reduction == "none":
        return target.set(updates)
    if reduction == "add":
        return target.add(updates)
    if not (_is_static(data) and _is_static(updates)):
        # The row's rule family is linear; a product or max scatter of varying values is not affine.
        raise UnsupportedOpError(
            f"{op} with reduction={reduction!r} is supported only on constant data and updates: it is not affine, "
            f"so its attribution would not be exact. Supported on varying inputs: {list(_AFFINE_REDUCTIONS)}."
        )
    if reduction == "mul":
        return target.multiply(updates)
    if reduction == "max":
        return target.max(updates)
    if reduction == "min":
        return target.min(updates)
    raise unsupported_attribute(op, "reduction", reduction, [*_AFFINE_REDUCTIONS, "mul", "max", "min"])


def scatter_nd(data: Array, indices: Array, updates: Array, *, reduction: str = "none") -> Array:
    """reduction (16+): none and add on varying inputs; mul/max/min only on constants."""
    return _scatter("ScatterND", data, _nd_index(data.shape, indices, 0), updates, reduction)


def scatter_elements(data: Array, indices: Array, updates: Array, *, axis: int, reduction: str = "none") -> Array:
    """reduction (16+): none and add on varying inputs; mul/max/min only on constants."""
    index = _elements_index(data, indices, normalize_axis(axis, data.ndim))
    return _scatter("ScatterElements", data, index, updates, reduction)


def trilu(x: Array, k: Array | None = None, *, upper: int) -> Array:
    diagonal = static_ints(k)[0] if k is not None else 0
    return jnp.triu(x, diagonal) if upper else jnp.tril(x, diagonal)


def one_hot(indices: Array, depth: Array, values: Array, *, axis: int) -> Array:
    """Indices outside [-depth, depth-1] give an all-off row."""
    n = int(np.asarray(depth).reshape(-1)[0])
    rank = np.ndim(indices) + 1
    if not -rank <= axis < rank:
        raise UnsupportedOpError(f"OneHot axis {axis} is out of range for an output of rank {rank}.")
    axis = axis + rank if axis < 0 else axis
    idx = jnp.asarray(indices)
    idx = idx.astype(jnp.int64) if jnp.issubdtype(idx.dtype, jnp.floating) else idx
    idx = jnp.where(idx < 0, idx + n, idx)
    positions = np.arange(n).reshape((n,) + (1,) * (rank - 1 - axis))
    hot = jnp.expand_dims(idx, axis) == positions
    values = jnp.asarray(values).reshape(-1)
    return jnp.where(hot, values[1], values[0])


# --- padding ----------------------------------------------------------------------------------------

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad(x: Array, pads: Sequence[int], mode: str, value: Any, axes: Sequence[int] | None) -> Array:
    if mode not in _PAD_MODES:
        raise unsupported_attribute("Pad", "mode", mode, _PAD_MODES)
    dims = normalize_axes(axes, x.ndim) if axes is not None else tuple(range(x.ndim))
    if len(pads) != 2 * len(dims):
        raise GraphError(f"Pad: {len(pads)} pads given for {len(dims)} axes; expected {2 * len(dims)}.")
    widths = [(0, 0)] * x.ndim
    for a, before, after in zip(dims, pads[: len(dims)], pads[len(dims) :]):
        widths[a] = (before, after)
    if any(b < 0 or e < 0 for b, e in widths):
        # Negative pads remove elements.
        x = x[tuple(slice(max(-b, 0), x.shape[a] - max(-e, 0)) for a, (b, e) in enumerate(widths))]
        widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        if value is None:
            fill: Array = np.zeros((), x.dtype)
        elif _is_static(value):
            fill = np.asarray(value).reshape(-1)[0].astype(x.dtype)
        else:
            # A traced fill value (e.g. -inf cast like the data) is fine: lax.pad takes it as an operand.
            fill = jnp.reshape(value, (-1,))[0].astype(x.dtype)
        return lax.pad(x, fill, [(b, e, 0) for b, e in widths])
    return jnp.pad(x, widths, mode=mode)


def pad_2(data: Array, *, pads: Sequence[int], mode: str, value: float) -> Array:
    """Pad-2: pads and value are attributes."""
    return _pad(data, static_ints(pads), mode, value, None)


def pad(
    data: Array, pads: Array, constant_value: Array | None = None, axes: Array | None = None, *, mode: str
) -> Array:
    """Pad-11+: pads and axes (18+) are static inputs; negative pads crop."""
    value = constant_value if constant_value is not None and np.size(constant_value) else None
    return _pad(data, static_ints(pads), mode, value, static_ints(axes) if axes is not None else None)


# --- constants and shapes ---------------------------------------------------------------------------


def constant(
    *,
    value: np.ndarray | None = None,
    sparse_value: Any = None,
    value_float: float | None = None,
    value_floats: Sequence[float] | None = None,
    value_int: int | None = None,
    value_ints: Sequence[int] | None = None,
    value_string: str | None = None,
    value_strings: Sequence[str] | None = None,
) -> np.ndarray:
    """Exactly one value_* attribute; sparse and string constants are unsupported."""
    if sparse_value is not None:
        raise UnsupportedOpError("Constant with sparse_value is not supported; store the constant as a dense tensor.")
    if value_string is not None or value_strings is not None:
        raise UnsupportedOpError("Constant with a string value is not supported: JAX computes on numbers only.")
    if value is not None:
        if value.dtype.kind in "OUS":
            raise UnsupportedOpError("Constant with a string tensor is not supported: JAX computes on numbers only.")
        return np.asarray(value)
    if value_float is not None:
        return np.asarray(value_float, dtype=np.float32)
    if value_floats is not None:
        return np.asarray(value_floats, dtype=np.float32).reshape(-1)
    if value_int is not None:
        return np.asarray(value_int, dtype=np.int64)
    if value_ints is not None:
        return np.asarray(value_ints, dtype=np.int64).reshape(-1)
    raise GraphError("Constant node has no value attribute.")


def constant_of_shape(shape: Array, *, value: np.ndarray | None = None) -> np.ndarray:
    """The value defaults to a float32 zero."""
    fill = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value)
    return np.full(static_ints(shape), fill.reshape(-1)[0], dtype=fill.dtype)


def shape(data: Array, *, start: int = 0, end: int | None = None) -> np.ndarray:
    """Read from the static shape, so it is a constant even for a traced input; start/end (15+) clamp."""
    return np.asarray(np.shape(data)[start:end], dtype=np.int64)


def size(data: Array) -> np.ndarray:
    """Read from the static shape, so it is a constant even for a traced input."""
    return np.asarray(math.prod(np.shape(data)), dtype=np.int64)


def range_(start: Array, limit: Array, delta: Array, *, stash_type: int | None = None) -> np.ndarray:
    """Static inputs; stash_type (27+) computes float16/bfloat16 ranges in float32 or float64."""
    dtype = np.asarray(start).dtype
    first, stop, step = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
    if stash_type is not None and dtype.kind == "f" and dtype.itemsize == 2:
        work = onnx_dtype(stash_type)
        return np.arange(work.type(first), float(stop), float(step), dtype=work).astype(dtype)
    return np.arange(first.item(), stop.item(), step.item()).astype(dtype)


# --- scans and indices of extrema ---------------------------------------------------------------------


def cumsum(x: Array, axis: Array, *, exclusive: int, reverse: int) -> Array:
    """axis is a static input."""
    a = normalize_axis(static_ints(axis)[0], x.ndim)
    if reverse:
        x = jnp.flip(x, a)
    out = jnp.cumsum(x, axis=a, dtype=x.dtype)
    if exclusive and x.shape[a]:
        # Shift by one so that out[i] = sum(x[:i]), starting from zero.
        head = jnp.zeros_like(lax.slice_in_dim(out, 0, 1, axis=a))
        out = jnp.concatenate([head, lax.slice_in_dim(out, 0, x.shape[a] - 1, axis=a)], axis=a)
    return jnp.flip(out, a) if reverse else out


def _arg_extreme(fn: Callable[..., Array], data: Array, axis: int, keepdims: int, select_last_index: int) -> Array:
    a = normalize_axis(axis, data.ndim)
    if select_last_index:
        idx = data.shape[a] - 1 - fn(jnp.flip(data, a), axis=a, keepdims=bool(keepdims))
    else:
        idx = fn(data, axis=a, keepdims=bool(keepdims))
    return jnp.asarray(idx, dtype=jnp.int64)


def argmax(data: Array, *, axis: int, keepdims: int, select_last_index: int = 0) -> Array:
    """int64 indices; select_last_index (12+) picks the last of tied maxima."""
    return _arg_extreme(jnp.argmax, data, axis, keepdims, select_last_index)


def argmin(data: Array, *, axis: int, keepdims: int, select_last_index: int = 0) -> Array:
    """int64 indices; select_last_index (12+) picks the last of tied minima."""
    return _arg_extreme(jnp.argmin, data, axis, keepdims, select_last_index)


# --- Resize / Upsample ----------------------------------------------------------------------------------

_COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_crop_and_resize",
)
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_RESIZE_MODES = ("nearest", "linear", "cubic")


def _source_coordinates(
    mode: str, out_len: int, in_len: int, scale: float, roi: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Input coordinate of every output position and, for tf_crop_and_resize, which fall outside.

    Computed in float32 in onnxruntime's order of operations, so that ties of the nearest modes
    (x exactly k + 0.5, or exactly an integer for floor/ceil) resolve as they do there. length_resized
    in the spec's formulas is the integer output length, as in onnxruntime (the onnx reference uses
    the fractional scale * in_len, which differs when scales give a fractional size).
    """
    f = np.float32
    y = np.arange(out_len, dtype=f)
    s, n_in, n_out, half = f(scale), f(in_len), f(out_len), f(0.5)
    outside = None
    if mode == "half_pixel":
        x = (y + half) / s - half
    elif mode == "half_pixel_symmetric":
        adjustment = n_out / (s * n_in)
        offset = n_in / f(2) * (f(1) - adjustment)
        # onnxruntime evaluates this sum in double precision before rounding to float32.
        x = (np.float64(offset) + (y.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(f)
    elif mode == "pytorch_half_pixel":
        x = np.zeros(out_len, f) if out_len == 1 else (y + half) / s - half
    elif mode == "align_corners":
        x = np.zeros(out_len, f) if out_len == 1 else y * (n_in - f(1)) / (n_out - f(1))
    elif mode == "asymmetric":
        x = y / s
    elif mode == "tf_half_pixel_for_nn":
        x = (y + half) / s
    elif mode == "tf_crop_and_resize":
        assert roi is not None
        start, end = f(roi[0]), f(roi[1])
        if out_len == 1:
            x = np.full(out_len, f(0.5 * float(start + end) * (in_len - 1)), f)
        else:
            x = start * (n_in - f(1)) + y * (end - start) * (n_in - f(1)) / (n_out - f(1))
        outside = (x < 0) | (x > n_in - f(1))
    else:
        raise unsupported_attribute("Resize", "coordinate_transformation_mode", mode, _COORDINATE_MODES)
    return x.astype(np.float64), outside


def _nearest_indices(x: np.ndarray, nearest_mode: str, in_len: int, downsample: bool) -> np.ndarray:
    base = np.floor(x)
    frac = x - base
    if nearest_mode == "round_prefer_floor":
        idx = np.where(frac <= 0.5, base, base + 1)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.where(frac < 0.5, base, base + 1)
    elif nearest_mode == "floor":
        idx = base
    elif nearest_mode == "ceil":
        idx = np.ceil(x)
    elif nearest_mode == "legacy":
        # Resize-10 / Upsample: truncate when upsampling, round up when downsampling (onnxruntime's rule).
        idx = np.ceil(x) if downsample else base
    else:
        raise unsupported_attribute("Resize", "nearest_mode", nearest_mode, _NEAREST_MODES)
    return np.clip(idx, 0, in_len - 1).astype(np.int64)


def _linear_coeffs(ratio: np.ndarray, scale: float, antialias: bool) -> np.ndarray:
    if not antialias or scale >= 1:
        return np.stack([1 - ratio, ratio], axis=-1)
    start = int(np.floor(-1 / scale) + 1)
    args = (np.arange(start, 2 - start)[None, :] - ratio[:, None]) * scale
    coeffs = np.clip(1 - np.abs(args), 0, 1)
    return coeffs / coeffs.sum(axis=-1, keepdims=True)


def _cubic_kernel(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _cubic_coeffs(ratio: np.ndarray, scale: float, antialias: bool, a: float) -> np.ndarray:
    if not antialias or scale >= 1:
        offsets = np.array([-1.0, 0.0, 1.0, 2.0])
        return _cubic_kernel(offsets[None, :] - ratio[:, None], a)
    start = int(np.floor(-2 / scale) + 1)
    coeffs = _cubic_kernel((np.arange(start, 2 - start)[None, :] - ratio[:, None]) * scale, a)
    return coeffs / coeffs.sum(axis=-1, keepdims=True)


def _interpolation_weights(
    x: np.ndarray, in_len: int, scale: float, mode: str, antialias: bool, cubic_coeff_a: float, exclude_outside: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), both (out_len, n): the n input samples each output position mixes.

    Mirrors the onnx reference: the sample left of x is preferred, so an integral x has ratio 1.
    """
    base = np.floor(x)
    integral = x == base
    ratio = np.where(integral, 1.0, x - base)
    if mode == "linear":
        coeffs = _linear_coeffs(ratio, scale, antialias)
    else:
        coeffs = _cubic_coeffs(ratio, scale, antialias, cubic_coeff_a)
    n = coeffs.shape[1]
    # The window of n samples whose centre is nearest x, ties to the left (as the reference's search).
    first = np.where(integral, base - 1, base).astype(np.int64) - (n // 2 - 1)
    idx = first[:, None] + np.arange(n)[None, :]
    if exclude_outside:
        coeffs = np.where((idx < 0) | (idx >= in_len), 0.0, coeffs)
        total = coeffs.sum(axis=-1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    # Samples beyond the border repeat the edge value.
    return np.clip(idx, 0, in_len - 1), coeffs


def _resize(
    x: Array,
    out_shape: Sequence[int],
    scales: Sequence[float],
    roi: np.ndarray | None,
    *,
    mode: str,
    coordinate_transformation_mode: str,
    nearest_mode: str,
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    extrapolation_value: float = 0.0,
    antialias: int = 0,
    op: str = "Resize",
) -> Array:
    if mode not in _RESIZE_MODES:
        raise unsupported_attribute(op, "mode", mode, _RESIZE_MODES)
    if coordinate_transformation_mode not in _COORDINATE_MODES:
        raise unsupported_attribute(
            op, "coordinate_transformation_mode", coordinate_transformation_mode, _COORDINATE_MODES
        )
    if mode == "nearest" and antialias:
        raise unsupported_attribute(op, "antialias", antialias, [0])
    is_float = jnp.issubdtype(x.dtype, jnp.floating)
    if mode != "nearest" and not is_float:
        raise UnsupportedOpError(f"{op} mode={mode!r} is supported on float tensors only, not {x.dtype}.")
    rank = x.ndim
    work_dtype = x.dtype if not is_float or jnp.dtype(x.dtype).itemsize >= 4 else jnp.float32
    out: Array = x.astype(work_dtype)
    for axis in range(rank):
        in_len, out_len, scale = x.shape[axis], int(out_shape[axis]), float(scales[axis])
        axis_roi = (float(roi[axis]), float(roi[axis + rank])) if roi is not None else None
        trivial_roi = axis_roi is None or (math.isclose(axis_roi[0], 0.0) and math.isclose(axis_roi[1], 1.0))
        if math.isclose(scale, 1.0) and out_len == in_len and trivial_roi:
            continue
        if out_len == 0:
            out = lax.slice_in_dim(out, 0, 0, axis=axis)
            continue
        coords, outside = _source_coordinates(coordinate_transformation_mode, out_len, in_len, scale, axis_roi)
        if mode == "nearest":
            out = jnp.take(out, _nearest_indices(coords, nearest_mode, in_len, scale < 1), axis=axis)
        else:
            idx, w = _interpolation_weights(
                coords, in_len, scale, mode, bool(antialias), cubic_coeff_a, bool(exclude_outside)
            )
            gathered = jnp.take(out, idx, axis=axis)
            w_shape = (1,) * axis + w.shape + (1,) * (rank - axis - 1)
            out = jnp.sum(gathered * jnp.asarray(w.reshape(w_shape), work_dtype), axis=axis + 1)
        if outside is not None and outside.any():
            mask = outside.reshape((1,) * axis + (out_len,) + (1,) * (rank - axis - 1))
            out = jnp.where(mask, jnp.asarray(extrapolation_value, work_dtype), out)
    return out.astype(x.dtype)


def _resize_plan(
    x_shape: Sequence[int],
    roi: Array | None,
    scales: Array | None,
    sizes: Array | None,
    axes: Sequence[int] | None,
    keep_aspect_ratio_policy: str,
) -> tuple[list[int], list[float], np.ndarray | None]:
    """Output shape, per-axis scales and full-rank roi from the static inputs (as the onnx reference)."""
    rank = len(x_shape)
    dims = list(normalize_axes(axes, rank)) if axes is not None else list(range(rank))
    roi_full: np.ndarray | None = None
    if _present(roi):
        r = np.asarray(roi, dtype=np.float64).reshape(-1)
        roi_full = np.concatenate([np.zeros(rank), np.ones(rank)])
        for i, d in enumerate(dims):
            roi_full[d], roi_full[rank + d] = r[i], r[len(dims) + i]
    if _present(sizes):
        requested = list(x_shape)
        for d, s in zip(dims, static_ints(sizes)):
            requested[d] = s
        scale_list = [requested[i] / x_shape[i] if x_shape[i] else 1.0 for i in range(rank)]
        if keep_aspect_ratio_policy == "stretch":
            return requested, scale_list, roi_full
        if keep_aspect_ratio_policy == "not_larger":
            common = min(scale_list[d] for d in dims)
        elif keep_aspect_ratio_policy == "not_smaller":
            common = max(scale_list[d] for d in dims)
        else:
            raise unsupported_attribute(
                "Resize", "keep_aspect_ratio_policy", keep_aspect_ratio_policy, ["stretch", "not_larger", "not_smaller"]
            )
        scale_list = [common if i in dims else 1.0 for i in range(rank)]
        out = [int(common * x_shape[i] + 0.5) if i in dims else x_shape[i] for i in range(rank)]
        return out, scale_list, roi_full
    if not _present(scales):
        raise GraphError("Resize needs either 'scales' or 'sizes'.")
    scale_list = [1.0] * rank
    for d, value in zip(dims, np.asarray(scales, dtype=np.float64).reshape(-1)):
        scale_list[d] = float(value)
    # float32 product, truncated, as onnxruntime computes it.
    out = [int(np.float32(scale_list[i]) * np.float32(x_shape[i])) for i in range(rank)]
    return out, scale_list, roi_full


def resize_10(x: Array, scales: Array, *, mode: str) -> Array:
    """Resize-10: asymmetric coordinates; nearest truncates when upsampling, rounds up when downsampling."""
    out_shape, scale_list, _ = _resize_plan(x.shape, None, scales, None, None, "stretch")
    return _resize(
        x, out_shape, scale_list, None, mode=mode, coordinate_transformation_mode="asymmetric", nearest_mode="legacy"
    )


def resize(
    x: Array,
    roi: Array | None = None,
    scales: Array | None = None,
    sizes: Array | None = None,
    *,
    mode: str,
    coordinate_transformation_mode: str,
    nearest_mode: str,
    cubic_coeff_a: float,
    exclude_outside: int,
    extrapolation_value: float,
    antialias: int = 0,
    axes: Sequence[int] | None = None,
    keep_aspect_ratio_policy: str = "stretch",
) -> Array:
    """Resize-11+: nearest (all nearest modes), linear and cubic, every coordinate transform; static roi/scales/sizes.

    antialias, axes and keep_aspect_ratio_policy exist from 18.
    """
    out_shape, scale_list, roi_full = _resize_plan(x.shape, roi, scales, sizes, axes, keep_aspect_ratio_policy)
    if coordinate_transformation_mode != "tf_crop_and_resize":
        roi_full = None
    elif roi_full is None:
        raise GraphError("Resize with coordinate_transformation_mode='tf_crop_and_resize' needs the 'roi' input.")
    return _resize(
        x,
        out_shape,
        scale_list,
        roi_full,
        mode=mode,
        coordinate_transformation_mode=coordinate_transformation_mode,
        nearest_mode=nearest_mode,
        cubic_coeff_a=cubic_coeff_a,
        exclude_outside=exclude_outside,
        extrapolation_value=extrapolation_value,
        antialias=antialias,
    )


def _upsample(x: Array, scales: Sequence[float], mode: str) -> Array:
    # Upsample-1 called linear interpolation "bilinear".
    mode = "linear" if mode == "bilinear" else mode
    if mode not in ("nearest", "linear"):
        raise unsupported_attribute("Upsample", "mode", mode, ["nearest", "linear"])
    out_shape, scale_list, _ = _resize_plan(x.shape, None, np.asarray(scales), None, None, "stretch")
    return _resize(
        x,
        out_shape,
        scale_list,
        None,
        mode=mode,
        coordinate_transformation_mode="asymmetric",
        nearest_mode="legacy",
        op="Upsample",
    )


def upsample_7(x: Array, *, scales: Sequence[float], mode: str) -> Array:
    """Upsample-7: scales is an attribute; asymmetric coordinates as Resize-10."""
    return _upsample(x, scales, mode)


def upsample(x: Array, scales: Array, *, mode: str) -> Array:
    """Upsample-9/10: scales is a static input; asymmetric coordinates as Resize-10."""
    return _upsample(x, np.asarray(scales, dtype=np.float64).reshape(-1).tolist(), mode)
