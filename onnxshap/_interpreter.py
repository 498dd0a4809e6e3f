"""Evaluate a Graph with JAX.

Values are of two kinds while a graph runs: *static* values (numpy arrays, known before any data
arrives) and *traced* values (jax arrays or tracers). A node whose inputs are all static is evaluated
at once and its outputs stay static, so the Shape -> Gather -> Concat -> Reshape chains that exporters
emit fold to constants and every shape is static under `jax.jit`. Shape and Size read the static
shape of a traced value, so they fold too.

Large float constants (weights) are not baked into the compiled program: they are passed to the jitted
function as arguments, which keeps compilation fast whatever the model's size.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import jax
import numpy as np

from onnxshap._errors import GraphError, UnsupportedOpError
from onnxshap._graph import Graph, Node
from onnxshap.ops._common import OUTPUT_COUNT_FLAG

Value = Any  # np.ndarray (static) or jax.Array / tracer (traced)

#: Constants with at least this many elements are passed to the compiled function as arguments
#: instead of being embedded in it (embedding large constants makes XLA compilation slow).
WEIGHT_ARGUMENT_MIN_SIZE = 1024


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
        with jax.ensure_compile_time_eval():
            outputs = fn(*inputs)
        return tuple(None if o is None else np.asarray(o) for o in outputs)
    return fn(*inputs)


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
    before the inputs are known); otherwise a missing tensor is an error.
    """
    for node in graph.nodes:
        if node.index in skip or all(o in env for o in node.outputs if o):
            continue
        if partial and not all(i in env for i in node.inputs if i):
            continue
        if partial and node.subgraphs and not all(t in env for s in node.subgraphs.values() for t in s.free_tensors()):
            continue
        inputs = [env[i] if i else None for i in node.inputs]
        if partial and not all(v is None or is_static(v) for v in inputs):
            continue
        if node.op_type == "If" and node.domain == "":
            outputs = _run_if(node, inputs, env, runner)
        elif node.subgraphs:
            raise UnsupportedOpError(
                f"{node.label} carries subgraphs ({sorted(node.subgraphs)}); control flow other than If with a "
                "condition known before the data arrives is not supported. Re-export the model with the loop unrolled."
            )
        else:
            outputs = runner(node, inputs)
        if len(outputs) < len([o for o in node.outputs if o]):
            raise GraphError(f"{node.label} produced {len(outputs)} outputs but the graph expects {len(node.outputs)}.")
        for name, value in zip(node.outputs, outputs):
            if name:
                env[name] = value
    return env


def _run_if(node: Node, inputs: Sequence[Value], env: Mapping[str, Value], runner: NodeRunner) -> tuple[Value, ...]:
    cond = inputs[0]
    if not is_static(cond):
        raise GraphError(
            f"{node.label} chooses its branch from a value computed from the model's inputs; only If nodes whose "
            "condition is known before the data arrives can be compiled. Re-export the model without "
            "data-dependent control flow."
        )
    branch = node.subgraphs["then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"]
    scope: ChainMap[str, Value] = ChainMap({}, dict(branch.initializers), env)  # type: ignore[arg-type]
    run_graph(branch, scope, runner=runner)
    return tuple(scope[o.name] for o in branch.outputs)


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
            needed |= {i for i in node.inputs if i}
            for sub in node.subgraphs.values():
                needed |= sub.free_tensors()
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
