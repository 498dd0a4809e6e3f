"""The XLA options onnxshap's programs are compiled with (`jax.jit(..., compiler_options=...)`).

On CPU, the forward and attribution passes compile with XLA's loop emitters rather than its newer
MLIR fusion emitters (xla_cpu_use_fusion_emitters=False). They compile about a fifth faster and run
as fast or faster: a first explanation of the quantised transformer block took 5.5 s against 7.4 s,
and the GRU classifier's later calls 307 ms against 564 ms (128 samples, 128 background rows).
Values agree to float rounding (at most 3e-6 of the largest attribution). Two kinds of graph keep
the defaults:

- convolutions: with the loop emitters, the layout changes around XLA's convolution ran slower on
  large images (26.6 ms against 20.0 ms for 64 channels at 112 x 112; light VGG-19's explanation
  3.9 s against 3.0 s);
- floats narrower than 16 bits (float8, float4): the loop emitters cast a tiny negative number
  (-1e-7) to NaN, not 0, in the float8 types without a negative zero (FLOAT8E4M3FNUZ,
  FLOAT8E5M2FNUZ: the onnx backend's Cast cases failed).

A program that runs once for one (sample, reference) pair, the float64 per-node diagnosis, also
compiles at XLA's lowest backend optimisation level (`diagnostic_options`): it compiled 35-50% faster
(the quantised transformer block's in 1.8 s against 2.9 s) and evaluates a single pair, so its
slower code costs nothing that shows. Its sums agreed with the optimised program's to 5e-7 of the
largest (floats rounded to float32 by specification, as in quantisation, round the same way or one
step apart), and to 1e-14 elsewhere.

The options apply to onnxshap's own jitted functions only, never to the rest of the process's JAX,
and on other backends nothing is set.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import jax
import numpy as np
import onnx

from onnxshap._graph import Graph

#: XLA options for onnxshap's programs on CPU (names as in XLA's DebugOptions).
CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}
#: Added for programs that evaluate one pair once (`diagnostic_options`).
DIAGNOSTIC_COMPILER_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 0}
#: Ops lowered to XLA convolutions: a graph with any of them compiles with XLA's defaults.
CONVOLUTION_OPS = frozenset({"Conv", "ConvTranspose"})
#: Names of the ml_dtypes floats narrower than 16 bits (float8_e4m3fnuz, float4_e2m1fn, ...).
_NARROW_FLOATS = ("float8", "float6", "float4")
#: Attributes that hold an ONNX element type.
_TYPE_ATTRIBUTES = frozenset({"to", "output_dtype", "dtype"})
_ONNX_TYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def compiler_options(graph: Graph) -> dict[str, Any] | None:
    """The XLA options for a program evaluating `graph`: CPU_COMPILER_OPTIONS on the CPU backend
    unless the graph convolves or holds a float narrower than 16 bits, else None (JAX's defaults)."""
    if any(n.op_type in CONVOLUTION_OPS for n in graph.all_nodes()) or _has_narrow_floats(graph):
        return None
    return _cpu_options()


def diagnostic_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """`options` (a graph's `compiler_options`) plus DIAGNOSTIC_COMPILER_OPTIONS on the CPU backend
    where its XLA knows them; `options` unchanged elsewhere."""
    extra = _probed(tuple(DIAGNOSTIC_COMPILER_OPTIONS.items()))
    return options if extra is None else {**(options or {}), **extra}


def _has_narrow_floats(graph: Graph) -> bool:
    """Whether any tensor of `graph` whose type is known, or any type an attribute names (Cast's
    `to`, QuantizeLinear's `output_dtype`), is a float of fewer than 16 bits."""
    dtypes = [info.dtype for info in graph.value_info.values()]
    dtypes += [value.dtype for value in graph.initializers.values()]
    for node in graph.all_nodes():
        for name, value in node.attrs.items():
            if isinstance(value, np.ndarray):
                dtypes.append(value.dtype)
            elif name in _TYPE_ATTRIBUTES and isinstance(value, int) and value in _ONNX_TYPES:
                dtypes.append(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value)))
    return any(d is not None and d.name.startswith(_NARROW_FLOATS) for d in dtypes)


def _cpu_options() -> dict[str, Any] | None:
    """CPU_COMPILER_OPTIONS when JAX's default backend is the CPU and its XLA knows them, else None."""
    return _probed(tuple(CPU_COMPILER_OPTIONS.items()))


@functools.cache
def _probed(options: tuple[tuple[str, Any], ...]) -> dict[str, Any] | None:
    """`options` as a dict when JAX's default backend is the CPU and its XLA knows them, else None.

    An XLA that has dropped an option refuses it at compile time: probed once per process on a
    one-element program, so that such a version compiles as JAX does by default instead of failing.
    """
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(operator.neg, compiler_options=dict(options))(np.float32(1))
    except jax.errors.JaxRuntimeError:
        return None
    return dict(options)
