"""Evaluate a Graph with JAX.

Values are of two kinds while a graph runs: *static* values (numpy arrays, known before any data
arrives) and *traced* values (jax arrays or tracers). A node whose inputs are all static is evaluated
at once and its outputs stay static, so the Shape -> Gather -> Concat -> Reshape chains that exporters
emit fold to constants and every shape is static under `jax.jit`. Shape and Size read the static
shape of a traced value, so they fold too.

Large float constants (weights) are not baked into the compiled program: they are passed to the jitted
function as arguments, which keeps compilation fast whatever the model's size.

Control flow arrives lowered (`onnxshap._control`): a node may carry a guard (it runs only where its
branch or iteration is taken, when that is known before the data arrives) or be a select (a Where
that passes one input through when its condition is known); see `guard_closed` and `select_choice`.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import jax
import numpy as np

from onnxshap._errors import GraphError, UnsupportedOpError
from onnxshap._graph import Control, Graph, Node
from onnxshap.ops._common import FOLDS_COMPILED_FLAG, OUTPUT_COUNT_FLAG, static_ints

Value = Any  # np.ndarray (static) or jax.Array / tracer (traced)

#: Constants with at least this many elements are passed to the compiled function as arguments
#: instead of being embedded in it (embedding large constants makes XLA compilation slow).
WEIGHT_ARGUMENT_MIN_SIZE = 1024

#: The largest tensor (bytes) an op whose output size is set by a value (a shape, a count) may build from
#: values known before the data arrives. Such a tensor lives in host memory, then in the compiled program
#: or on the device; a wrong value in the file asks for terabytes, and numpy's out-of-memory error names
#: no node. 16 GiB is far above what exports build this way (a float32 causal mask over 32768 positions
#: is 4 GiB), and a fixed limit makes a model load, or fail, alike on every machine.
FOLDED_CONSTANT_MAX_BYTES = 16 * 2**30


def is_static(value: Value) -> bool:
    """True when the value is known before any data arrives (a numpy array or scalar)."""
    return isinstance(value, (np.ndarray, np.generic))


def _as_tuple(result: Any) -> tuple[Any, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _check_static_inputs(node: Node, inputs: Sequence[Value]) -> None:
    assert node.spec is not None
    for position in node.spec.static:
        if position < len(inputs) and inputs[position] is not None and not is_static(inputs[position]):
            raise GraphError(
                f"Input {position} ({node.inputs[position]!r}) of {node.label} must be known before the data arrives "
                f"(it sets a shape, an axis or an index), but it is computed from the model's inputs at run time. "
                "onnxshap compiles static shapes; re-export the model with a fixed value for this input "
                "(for torch.onnx, avoid shape arithmetic on tensor values; constant-folding usually removes it)."
            )


ShapeRule = Callable[[Sequence[Value], Mapping[str, Any]], tuple[tuple[int, ...], Any]]


def _pad_shape(inputs: Sequence[Value], attrs: Mapping[str, Any]) -> tuple[tuple[int, ...], Any]:
    x = inputs[0]
    pads = static_ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else tuple(attrs["pads"])
    axes = static_ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else tuple(range(np.ndim(x)))
    shape = list(np.shape(x))
    for k, axis in enumerate(axes):
        shape[axis] += pads[k] + pads[k + len(axes)]
    return tuple(shape), np.asarray(x).dtype


def _range_shape(inputs: Sequence[Value], attrs: Mapping[str, Any]) -> tuple[tuple[int, ...], Any]:
    first, stop, step = (np.asarray(v).reshape(-1)[0].item() for v in inputs[:3])
    return (max(math.ceil((stop - first) / step), 0),), np.asarray(inputs[0]).dtype


#: Output (shape, dtype) from the inputs, without computing it, of the default-domain ops whose output
#: size is set by the value of an input (not only by the sizes of their inputs).
_SIZED_BY_VALUE: Mapping[str, ShapeRule] = {
    "ConstantOfShape": lambda i, a: (
        static_ints(i[0]),
        np.float32 if a.get("value") is None else np.asarray(a["value"]).dtype,
    ),
    "Expand": lambda i, a: (np.broadcast_shapes(np.shape(i[0]), static_ints(i[1])), np.asarray(i[0]).dtype),
    "Tile": lambda i, a: (tuple(d * r for d, r in zip(np.shape(i[0]), static_ints(i[1]))), np.asarray(i[0]).dtype),
    "Range": _range_shape,
    "OneHot": lambda i, a: ((*np.shape(i[0]), *static_ints(i[1])[:1]), np.asarray(i[2]).dtype),
    "Pad": _pad_shape,
}


def check_folded_size(node: Node, inputs: Sequence[Value]) -> None:
    """Raise before an op builds a constant over FOLDED_CONSTANT_MAX_BYTES from static inputs."""
    rule = _SIZED_BY_VALUE.get(node.op_type) if node.domain == "" else None
    if rule is None:
        return
    try:
        shape, dtype = rule(inputs, node.attrs)
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError):
        return  # malformed inputs: the op's own function reports them
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > FOLDED_CONSTANT_MAX_BYTES and all(d >= 0 for d in shape):
        raise GraphError(
            f"{node.label} builds a constant of shape {list(shape)} ({np.dtype(dtype)}), {nbytes:,} bytes "
            f"({nbytes / 2**30:,.0f} GiB), from values known before the data arrives; onnxshap builds no such "
            f"constant over {FOLDED_CONSTANT_MAX_BYTES // 2**30} GiB. The model has a constant too large to build: "
            "a bug in the export (a wrong shape or count) or a value that should be computed from each input. "
            "Check the node's inputs (`onnxshap inspect --tensors`) and re-export the model."
        )


def call_node(node: Node, inputs: Sequence[Value]) -> tuple[Value, ...]:
    """Run one node's forward function; folds it when all inputs are static."""
    if node.spec is None or node.since_version is None:
        from onnxshap._registry import registry

        raise UnsupportedOpError(
            registry().describe_unsupported(node.op_type, node.domain, 0, node.since_version, [node.name])
        )
    _check_static_inputs(node, inputs)
    fn = node_function(node)
    if all(v is None or is_static(v) for v in inputs):
        check_folded_size(node, inputs)
        return fold_node(node, fn, inputs)
    return fn(*inputs)


def fold_node(node: Node, fn: Callable[..., tuple[Value, ...]], inputs: Sequence[Value]) -> tuple[Value, ...]:
    """The outputs (numpy) of a node whose inputs are all static, `fn` its bound forward function.

    A node whose forward function is marked `folds_compiled` (quantise and dequantise) runs as one
    compiled program of its first input, shared by the nodes with the same op, attributes and other
    inputs (`_folder`). Op by op, each primitive compiles on its own for every new shape: loading the
    quantised transformer block took 3.1-3.5 s, 2.7 s of it folding its 14 quantise and dequantise
    nodes, against 1.0-1.3 s this way. Every other node runs op by op, so that a function checking a
    constant input's values (and raising for a bad one) sees them.
    """
    folder = _folder(node, fn, inputs)
    # Nodes fold while a graph is traced too (a Shape of a traced value): evaluate now, not in that trace.
    with jax.ensure_compile_time_eval():
        outputs = fn(*inputs) if folder is None else folder(inputs[0])
    return tuple(None if o is None else np.asarray(o) for o in outputs)


#: Compiled folding functions by forward function, attributes and inputs after the first (`fold_node`).
_FOLDERS: dict[tuple[Any, ...], Callable[..., tuple[Value, ...]]] = {}
#: At most this many are kept (the oldest goes first); each holds a few small compiled programs.
FOLDERS_KEPT = 512


def _folder(
    node: Node, fn: Callable[..., tuple[Value, ...]], inputs: Sequence[Value]
) -> Callable[..., tuple[Value, ...]] | None:
    """fn jitted over its first input (the others closed over), shared by equal nodes; None where the
    node runs op by op (its function is not marked `folds_compiled`, its first input is not numeric, or
    an attribute or other input has no exact key)."""
    assert node.spec is not None and node.since_version is not None
    impl = node.spec.impl(node.since_version)
    if not getattr(impl, FOLDS_COMPILED_FLAG, False) or not inputs or np.asarray(inputs[0]).dtype.kind not in "biuf":
        return None
    try:
        key = (impl, len(node.outputs), _frozen(node.attrs), _frozen(list(inputs[1:])))
    except TypeError:
        return None
    folder = _FOLDERS.get(key)
    if folder is None:
        rest = list(inputs[1:])
        folder = _FOLDERS[key] = jax.jit(lambda first: fn(first, *rest))
        while len(_FOLDERS) > FOLDERS_KEPT:
            del _FOLDERS[next(iter(_FOLDERS))]
    return folder


def _frozen(value: Any) -> Any:
    """A hashable key equal only for equal values (arrays by dtype, shape and bytes); TypeError if none."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind == "O":
            raise TypeError("object arrays have no byte key")
        return ("array", array.dtype.str, array.shape, array.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((k, _frozen(v)) for k, v in value.items())))
    if isinstance(value, functools.partial):  # a fused node's parts (onnxshap._quant)
        return ("partial", value.func, _frozen(value.args), _frozen(value.keywords))
    if isinstance(value, types.FunctionType):
        return ("function", value)  # by identity
    raise TypeError(f"no key for {type(value).__name__}")


def node_function(node: Node) -> Callable[..., tuple[Value, ...]]:
    """The node's forward function with its attributes bound: fn(*inputs) -> tuple of outputs."""
    assert node.spec is not None and node.since_version is not None
    impl = node.spec.impl(node.since_version)
    attrs = node.attrs
    if getattr(impl, OUTPUT_COUNT_FLAG, False):
        # e.g. Split without sizes divides its input into as many parts as the node has outputs.
        attrs = {**attrs, "output_count": len(node.outputs)}
    return lambda *inputs: _as_tuple(impl(*inputs, **attrs))


NodeRunner = Callable[[Node, Sequence[Value]], tuple[Value, ...]]


def _truth(value: Value) -> bool:
    return bool(np.asarray(value).reshape(-1)[0])


def guard_closed(control: Control | None, values: Mapping[str, Value]) -> bool:
    """True where a guard tensor of a lowered node has a value known before the data arrives that
    is not the one the node's branch or iteration needs: the node does not run."""
    if control is None:
        return False
    for tensor, want in control.guard:
        value = values.get(tensor)
        if value is not None and is_static(value) and _truth(value) != want:
            return True
    return False


def select_choice(node: Node, condition: Value | None, present: Callable[[str], bool]) -> int | None:
    """The input (1 or 2) a lowered select passes through unchanged, or None where it is a real Where.

    `condition` is the condition's value where it is known before the data arrives (else None),
    `present(name)` whether a tensor was computed. A select passes the input its known condition
    picks; a condition that was not computed (its loop iteration did not run) or a value that was
    not computed (its branch or iteration did not run) leaves the other input.
    """
    if node.control is None or not node.control.select:
        return None
    if condition is not None:
        return 1 if _truth(condition) else 2
    if not present(node.inputs[0]) or not present(node.inputs[1]):
        return 2
    if not present(node.inputs[2]):
        return 1
    return None


def _check_facts(node: Node, env: Mapping[str, Value]) -> None:
    assert node.control is not None
    for tensor, axis, length in node.control.checks:
        if tensor in env:
            shape = tuple(np.shape(env[tensor]))
            if len(shape) <= axis or shape[axis] != length:
                raise GraphError(
                    f"{node.control.source} was unrolled for tensor {tensor!r} of length {length} on axis {axis} (from the "
                    f"shapes the model declares), but it has shape {list(shape)}. The model's shape information is wrong; "
                    "re-export it, or feed inputs of the declared shapes."
                )


def _check_select(node: Node, inputs: Sequence[Value]) -> None:
    assert node.control is not None
    a, b = inputs[1], inputs[2]
    dtype_a, dtype_b = (np.dtype(v.dtype) if hasattr(v, "dtype") else np.asarray(v).dtype for v in (a, b))
    if np.shape(a) != np.shape(b) or dtype_a != dtype_b:
        raise GraphError(
            f"{node.control.source}: {node.control.select} is {dtype_a}{list(np.shape(a))} on one side and "
            f"{dtype_b}{list(np.shape(b))} on the other, so its condition must be known before the data arrives, but "
            "it is computed from the model's inputs: onnxshap runs both sides and selects with Where, which needs one "
            "shape and dtype. Re-export the model so that both sides return tensors of the same shape (pad them), or "
            "explain up to a tensor before it (outputs=...)."
        )


def run_graph(
    graph: Graph,
    env: MutableMapping[str, Value],
    *,
    runner: NodeRunner = call_node,
    partial: bool = False,
    skip: frozenset[int] = frozenset(),
) -> MutableMapping[str, Value]:
    """Evaluate `graph` in topological order, writing every node's outputs into `env`.

    With `partial=True`, nodes whose inputs are not all in `env` are skipped (used to fold constants
    before the inputs are known); otherwise a missing tensor is an error. Lowered nodes whose branch
    or iteration is not taken are skipped (their outputs stay absent).
    """
    for node in graph.nodes:
        if node.index in skip or all(o in env for o in node.outputs if o):
            continue
        control = node.control
        if control is not None:
            if guard_closed(control, env) or not all(t in env for t, _ in control.guard):
                continue
            if control.select:
                cond = env.get(node.inputs[0])
                if partial and (cond is None or not is_static(cond)):
                    continue
                choice = select_choice(node, cond if cond is not None and is_static(cond) else None, env.__contains__)
                if choice is not None:
                    if node.inputs[choice] in env:
                        env[node.outputs[0]] = env[node.inputs[choice]]
                    continue
        if partial and (node.spec is None or not all(i in env for i in node.reads)):
            continue  # folding never raises: a model loaded with outputs= may hold ops it does not need
        if node.problem is not None:
            if partial:
                continue
            raise node.problem.error()
        if node.subgraphs:
            if partial:
                continue
            raise UnsupportedOpError(
                f"{node.label} carries subgraphs ({sorted(node.subgraphs)}); onnxshap lowers only If, Loop and Scan "
                "at the since-versions in rules/tensor.toml."
            )
        inputs = [env[i] if i else None for i in node.inputs]
        if partial and not all(v is None or is_static(v) for v in inputs):
            continue
        if control is not None:
            _check_facts(node, env)
            if control.select:
                _check_select(node, inputs)
        outputs = runner(node, inputs)
        if len(outputs) < len([o for o in node.outputs if o]):
            raise GraphError(f"{node.label} produced {len(outputs)} outputs but the graph expects {len(node.outputs)}.")
        for name, value in zip(node.outputs, outputs):
            if name:
                env[name] = value
    return env


def fold_constants(graph: Graph) -> dict[str, np.ndarray]:
    """Evaluate every node that depends on initializers only; return all static tensors."""
    env: dict[str, Value] = dict(graph.initializers)
    # Folding happens at load time, outside Model.run's x64 scope; without it int64 shapes become int32.
    with jax.enable_x64(True):
        run_graph(graph, env, partial=True)
    return env


def split_constants(
    graph: Graph, constants: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split folded constants into (embedded, weights): weights are large float tensors read by traced nodes."""
    needed: set[str] = {o.name for o in graph.outputs}
    for node in graph.nodes:
        if not all(o in constants for o in node.outputs if o):
            needed |= set(node.reads)
    embedded: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    for name in needed:
        if name not in constants:
            continue
        value = constants[name]
        if np.issubdtype(value.dtype, np.floating) and value.size >= WEIGHT_ARGUMENT_MIN_SIZE:
            weights[name] = value
        else:
            embedded[name] = value
    return embedded, weights
