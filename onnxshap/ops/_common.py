"""Helpers shared by the op modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import onnx

from onnxshap._errors import UnsupportedOpError

F = TypeVar("F", bound=Callable[..., Any])


def onnx_dtype(elem_type: int) -> np.dtype[Any]:
    """numpy dtype of an ONNX TensorProto element type; strings and unknown types are unsupported."""
    if elem_type == onnx.TensorProto.STRING:
        raise UnsupportedOpError("String tensors are not supported: JAX computes on numbers only.")
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError) as exc:
        raise UnsupportedOpError(f"ONNX element type {elem_type} has no numpy equivalent.") from exc


def normalize_axis(axis: int, rank: int) -> int:
    """ONNX axes may be negative (counted from the end)."""
    if not -rank <= axis < max(rank, 1):
        raise UnsupportedOpError(f"Axis {axis} is out of range for a tensor of rank {rank}.")
    return axis % rank if rank else 0


def normalize_axes(axes: Sequence[int] | np.ndarray | None, rank: int) -> tuple[int, ...]:
    if axes is None:
        return ()
    return tuple(normalize_axis(int(a), rank) for a in np.asarray(axes).reshape(-1))


def static_ints(value: Any) -> tuple[int, ...]:
    """A static input (numpy) as a tuple of Python ints."""
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


def unsupported_attribute(op: str, name: str, value: Any, supported: Sequence[Any]) -> UnsupportedOpError:
    return UnsupportedOpError(f"{op} with {name}={value!r} is not supported; supported values: {list(supported)}.")


#: Attribute set by `needs_output_count`; the interpreter then passes `output_count=<number of node outputs>`.
OUTPUT_COUNT_FLAG = "onnxshap_needs_output_count"


def needs_output_count(fn: F) -> F:
    """Mark a forward function that needs the node's number of outputs (Split without sizes)."""
    setattr(fn, OUTPUT_COUNT_FLAG, True)
    return fn


#: Attribute set by `folds_compiled` (read by `onnxshap._interpreter.fold_node`).
FOLDS_COMPILED_FLAG = "onnxshap_folds_compiled"


def folds_compiled(fn: F) -> F:
    """Mark a forward function that folds at load time as one compiled program of its first input
    (the other inputs as constants): several primitives of elementwise work, such as dequantising a
    weight, that read the first input only through JAX operations, never its values on the host."""
    setattr(fn, FOLDS_COMPILED_FLAG, True)
    return fn
