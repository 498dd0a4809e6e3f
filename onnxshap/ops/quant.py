"""Linear quantisation: QuantizeLinear, DequantizeLinear, and the fused QuantizeLinear→DequantizeLinear step.

Scales and zero points are per tensor (a scalar or one element), per axis (1-D, the length of
`axis`) or blocked (the input's rank, `axis` shrunk to ceil(D / block_size)). The arithmetic
follows onnxruntime's CPU kernels: x / scale in the scale's type (or `precision`), rounded half
to even, saturated to the target's range with the zero point added; dequantisation subtracts the
zero point in int32 and multiplies by the scale in float32.

Attribution (docs/rules/qdq.md): a DequantizeLinear of a constant folds at load time. Each
DequantizeLinear that reads a QuantizeLinear's integer output is fused with it at load time
(`fuse_quantize_dequantize`) into one float node y = DQ(Q(x)): a one-input elementwise step
function, attributed exactly by its secant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

from onnxshap._errors import GraphError, UnsupportedOpError
from onnxshap._graph import Node
from onnxshap._multipliers import NodeContext
from onnxshap._registry import OpSpec
from onnxshap.ops._common import folds_compiled, normalize_axis, onnx_dtype
from onnxshap.ops.elementwise import _cast

Array = Any

#: Integer targets and their saturation ranges.
_INT_RANGES: dict[np.dtype[Any], tuple[int, int]] = {
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int16): (-32768, 32767),
    np.dtype(np.uint16): (0, 65535),
    np.dtype(ml_dtypes.int4): (-8, 7),
    np.dtype(ml_dtypes.uint4): (0, 15),
    np.dtype(ml_dtypes.int2): (-2, 1),
    np.dtype(ml_dtypes.uint2): (0, 3),
}
#: Float targets (float 8 honour `saturate`; float 4 E2M1 has no infinity and always saturates).
_FLOAT_TARGETS = frozenset(
    np.dtype(t)
    for t in (
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e4m3fnuz,
        ml_dtypes.float8_e5m2,
        ml_dtypes.float8_e5m2fnuz,
        ml_dtypes.float4_e2m1fn,
    )
)
_FLOAT4 = np.dtype(ml_dtypes.float4_e2m1fn)
_HALF = frozenset({np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)})


def _dtype(value: Array) -> np.dtype[Any]:
    return value.dtype if isinstance(value, (np.ndarray, np.generic)) else np.dtype(jnp.result_type(value))


def _expand(param: Array, shape: Sequence[int], axis: int, block_size: int, what: str) -> Array:
    """A scale or zero point broadcastable to `shape`: per tensor, per axis, or blocked (repeated)."""
    p = jnp.asarray(param)
    if p.ndim == 0 or (p.ndim == 1 and p.size == 1 and not block_size):
        return p.reshape(())
    rank = len(shape)
    axis = normalize_axis(axis, rank)
    if block_size:
        if block_size < 0 or p.ndim != rank or -(-shape[axis] // block_size) != p.shape[axis]:
            raise GraphError(
                f"Blocked quantisation: {what} has shape {list(p.shape)}, but an input of shape {list(shape)} with "
                f"axis={axis} and block_size={block_size} needs the input's shape with axis {axis} of length "
                f"ceil({shape[axis]} / {block_size})."
            )
        return lax.slice_in_dim(jnp.repeat(p, block_size, axis=axis), 0, shape[axis], axis=axis)
    if p.ndim != 1 or p.shape[0] != shape[axis]:
        raise GraphError(
            f"Per-axis quantisation: {what} has shape {list(p.shape)}, but an input of shape {list(shape)} "
            f"quantised along axis {axis} needs a scalar or a 1-D tensor of length {shape[axis]} "
            "(blocked quantisation needs block_size)."
        )
    dims = [1] * rank
    dims[axis] = p.shape[0]
    return p.reshape(dims)


def _round_to(v: Array, dtype: np.dtype[Any]) -> Array:
    """v rounded to `dtype`'s precision (kept in v's type) where `dtype` is half precision."""
    if dtype not in _HALF:
        return v
    info = ml_dtypes.finfo(dtype)
    return lax.reduce_precision(v, exponent_bits=info.nexp, mantissa_bits=info.nmant)


def _target_dtype(zero_point: Array | None, output_dtype: int) -> np.dtype[Any]:
    if zero_point is not None:
        dtype = _dtype(zero_point)
        if output_dtype and onnx_dtype(output_dtype) != dtype:
            raise GraphError(
                f"QuantizeLinear: output_dtype={output_dtype} ({onnx_dtype(output_dtype)}) differs from the zero "
                f"point's type {dtype}; the spec requires them to agree."
            )
        return dtype
    return onnx_dtype(output_dtype) if output_dtype else np.dtype(np.uint8)


@folds_compiled
def quantize_linear(
    x: Array,
    y_scale: Array,
    y_zero_point: Array | None = None,
    *,
    axis: int = 1,
    saturate: int = 1,
    block_size: int = 0,
    output_dtype: int = 0,
) -> Array:
    """QuantizeLinear-10 to 21: y = saturate(round(x / y_scale) + y_zero_point), rounding half to even.

    Shape of x. The output type is the zero point's (else `output_dtype`, else uint8). The division
    runs in float32 for half-precision inputs (as onnxruntime does before version 23). Float 8
    targets cast x / scale (+ zero point) with `saturate`; NaN quantises to the low end of an
    integer range (onnxruntime's clamp).
    """
    return _quantize(x, y_scale, y_zero_point, axis, saturate, block_size, output_dtype, 0, half_in_float32=True)


@folds_compiled
def quantize_linear_23(
    x: Array,
    y_scale: Array,
    y_zero_point: Array | None = None,
    *,
    axis: int,
    saturate: int,
    block_size: int,
    output_dtype: int,
    precision: int,
) -> Array:
    """QuantizeLinear-23 and later: as `quantize_linear`, but x / y_scale is rounded to `precision`
    if set, else to the scale's type (a float16 scale gives a float16 quotient)."""
    return _quantize(
        x, y_scale, y_zero_point, axis, saturate, block_size, output_dtype, precision, half_in_float32=False
    )


def _quantize(
    x: Array,
    y_scale: Array,
    y_zero_point: Array | None,
    axis: int,
    saturate: int,
    block_size: int,
    output_dtype: int,
    precision: int,
    *,
    half_in_float32: bool,
) -> Array:
    target = _target_dtype(y_zero_point, output_dtype)
    if target not in _INT_RANGES and target not in _FLOAT_TARGETS:
        raise UnsupportedOpError(
            f"QuantizeLinear to {target} is not supported: XLA (and so JAX) has no such type, or it is not a "
            "quantised type of the spec."
        )
    shape = jnp.shape(x)
    scale = _expand(y_scale, shape, axis, block_size, "y_scale")
    quotient = onnx_dtype(precision) if precision else _dtype(y_scale)
    if np.float64 in (quotient, _dtype(x)):
        quotient = np.dtype(np.float64)
    elif half_in_float32 or quotient not in _HALF:
        quotient = np.dtype(np.float32)  # also for int32 x and E8M0 scales
    # The quotient is formed in float32 at least (float16 holds integers only up to 2048) and rounded
    # to half precision explicitly: XLA would otherwise keep the excess precision of its float32 loop.
    work = np.dtype(np.float64) if quotient == np.float64 else np.dtype(np.float32)
    v = _round_to(jnp.asarray(x).astype(work), quotient) / _round_to(scale.astype(work), quotient)
    v = _round_to(v, quotient)
    zero = None if y_zero_point is None else _expand(y_zero_point, shape, axis, block_size, "y_zero_point")
    if target in _INT_RANGES:
        low, high = _INT_RANGES[target]
        whole = jnp.round(v)
        if zero is not None:
            whole = whole + zero.astype(jnp.int32).astype(work)
        q = jnp.clip(whole, low, high)
        return jnp.where(jnp.isnan(q), low, q).astype(jnp.int32).astype(target)
    if zero is not None and target == _FLOAT4:
        v = v + zero.astype(work)  # onnx's reference adds it for float 4 (onnxruntime has no float 4 kernel)
    # Float 8 zero points are ignored, as onnxruntime and onnx's reference do.
    return _cast(v, target, 1 if target == _FLOAT4 else saturate, None, "QuantizeLinear")


@folds_compiled
def dequantize_linear(
    x: Array,
    x_scale: Array,
    x_zero_point: Array | None = None,
    *,
    axis: int = 1,
    block_size: int = 0,
    output_dtype: int = 0,
) -> Array:
    """y = (x - x_zero_point) * x_scale; shape of x, type `output_dtype` if set, else the scale's.

    Integers subtract the zero point in int32; the product is formed in float32 and rounded once to
    the output type.
    """
    out = onnx_dtype(output_dtype) if output_dtype else _dtype(x_scale)
    shape = jnp.shape(x)
    scale = _expand(x_scale, shape, axis, block_size, "x_scale").astype(jnp.float32)
    x = jnp.asarray(x)
    if _dtype(x).kind in "iu" or _dtype(x) in _INT_RANGES:
        zero = None if x_zero_point is None else _expand(x_zero_point, shape, axis, block_size, "x_zero_point")
        wide = x.astype(jnp.int32)
        if zero is not None:
            wide = wide - zero.astype(jnp.int32)
        d = wide.astype(jnp.float32)
    else:
        # Float 8 and float 4: the zero point must be 0 (onnxruntime refuses others; the reference ignores it).
        if isinstance(x_zero_point, (np.ndarray, np.generic)) and np.any(np.asarray(x_zero_point, np.float32)):
            raise GraphError(
                f"DequantizeLinear of {_dtype(x)}: the zero point must be 0 for float types (the spec and "
                "onnxruntime require it), but it is not."
            )
        d = x.astype(jnp.float32)
    return (d * scale).astype(out)


# --- attribution --------------------------------------------------------------------------------------


def rounding_slope(x: Array, r: Array, y_x: Array, y_r: Array) -> Array:
    """The secant (y_x - y_r) / (x - r) of a one-input elementwise step function, 0 where x == r.

    Exact for every pair: m * (x - r) = y_x - y_r, jumps included. Unlike the rescale family's, no
    derivative is used where x ~ r: a rounding step's derivative is 0 almost everywhere and would
    drop a jump between two close values, while x == r gives y_x == y_r and needs no multiplier.
    """
    # In float32 at least, in the input's type at the end: a half-precision secant across a jump
    # between two close values can overflow; it is then dropped (0) rather than poisoning the pass
    # with infinities, and the completeness check reports the loss.
    dtype = jnp.result_type(x, y_x)
    wide = jnp.promote_types(dtype, jnp.float32)
    dx = x.astype(wide) - r.astype(wide)
    same = dx == 0
    slope = jnp.where(same, 0, (y_x.astype(wide) - y_r.astype(wide)) / jnp.where(same, 1, dx)).astype(dtype)
    return jnp.where(jnp.isfinite(slope), slope, 0)


def _as_float(v: Array, like: Array) -> Array:
    """A quantised (integer or float 8) tensor as float, wide enough to hold its values exactly."""
    return jnp.asarray(v).astype(jnp.promote_types(jnp.result_type(like), jnp.float32))


def _multiplier(m: Array | None, like: Array) -> Array:
    return m if m is not None else jnp.zeros(jnp.shape(like), jnp.result_type(like))


def quantize_linear_rule(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """QuantizeLinear on its own: the step rule with the integer output difference read in float.

    Its output is quantised, so a multiplier reaches it only from a rule that reads integers as
    floats; in the graphs exporters write, a QuantizeLinear feeds DequantizeLinear nodes and is
    fused with them instead (`fuse_quantize_dequantize`).
    """
    x, r = ctx.xin[0], ctx.rin[0]
    slope = rounding_slope(x, r, _as_float(ctx.xout[0], x), _as_float(ctx.rout[0], x))
    return [_multiplier(m_out[0], slope) * slope] + [None] * (len(ctx.xin) - 1)


#: Op type and domain of the node a QuantizeLinear→DequantizeLinear pair is fused into (not ONNX ops).
FUSED_OP = "QuantizeLinear+DequantizeLinear"
FUSED_DOMAIN = "onnxshap"


@folds_compiled
def fake_quantize(
    x: Array,
    y_scale: Array,
    y_zero_point: Array | None,
    x_scale: Array,
    x_zero_point: Array | None,
    *,
    quantize: Callable[..., Array],
    dequantize: Callable[..., Array],
) -> Array:
    """DequantizeLinear(QuantizeLinear(x)): the float value of x's quantised code (shape of x).

    `quantize` and `dequantize` are the two nodes' forward functions with their attributes bound;
    the integer code is computed exactly as the unfused graph computes it.
    """
    return dequantize(quantize(x, y_scale, y_zero_point), x_scale, x_zero_point)


def fake_quantize_rule(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """y = DQ(Q(x)) is a one-input elementwise step function: m = (y_x - y_r) / (x - r), exact."""
    x, r = ctx.xin[0], ctx.rin[0]
    y_x, y_r = ctx.xout[0], ctx.rout[0]
    slope = rounding_slope(x, r, y_x, y_r)
    return [_multiplier(m_out[0], y_x) * slope, None, None, None, None]


@functools.cache
def _fused_spec(since_version: int) -> OpSpec:
    return OpSpec(
        domain=FUSED_DOMAIN,
        op_type=FUSED_OP,
        since=(since_version,),
        impls={since_version: fake_quantize},
        rule="composite",
        vary=(0,),
        static=(),
        type_only=(),
        notes="a QuantizeLinear whose output feeds this DequantizeLinear, fused at load time",
        source="onnxshap/ops/quant.py (fused at load time)",
        composite=fake_quantize_rule,
    )


def _is_supported(node: Node, op_type: str) -> bool:
    return node.op_type == op_type and node.domain == "" and node.spec is not None and node.since_version is not None


def fuse_quantize_dequantize(nodes: list[Node], graph_outputs: Iterable[str] = ()) -> list[Node]:
    """Replace every DequantizeLinear that reads a QuantizeLinear's output by one float node
    (`FUSED_OP`) reading the QuantizeLinear's input: y = DQ(Q(x)), the same values.

    The attribution pass then never carries multipliers through an integer tensor. The fused node
    keeps the DequantizeLinear's index, name and outputs. A fused QuantizeLinear is dropped unless
    its codes are among `graph_outputs` or another node (or a subgraph) still reads them.
    """
    quantizers = {n.outputs[0]: n for n in nodes if _is_supported(n, "QuantizeLinear") and n.outputs and n.outputs[0]}
    fused: list[Node] = []
    used: set[int] = set()
    for node in nodes:
        q = quantizers.get(node.inputs[0]) if _is_supported(node, "DequantizeLinear") and node.inputs else None
        if q is None:
            fused.append(node)
            continue
        assert (
            q.spec is not None
            and q.since_version is not None
            and node.spec is not None
            and node.since_version is not None
        )
        used.add(q.index)
        q_inputs = (*q.inputs, "", "")[:3]
        dq_inputs = (*node.inputs, "", "")[:3]
        attrs = {
            "quantize": functools.partial(q.spec.impl(q.since_version), **q.attrs),
            "dequantize": functools.partial(node.spec.impl(node.since_version), **node.attrs),
        }
        fused.append(
            Node(
                node.index,
                node.name,
                FUSED_OP,
                FUSED_DOMAIN,
                node.since_version,
                (q_inputs[0], q_inputs[1], q_inputs[2], dq_inputs[1], dq_inputs[2]),
                node.outputs,
                attrs,
                _fused_spec(node.since_version),
            )
        )
    read = set(graph_outputs)
    for node in fused:
        read |= {i for i in node.inputs if i}
        for sub in node.subgraphs.values():
            read |= sub.free_tensors()
    return [n for n in fused if n.index not in used or n.outputs[0] in read]
