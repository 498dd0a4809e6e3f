"""What `onnxshap inspect` and `convert` report about a graph: its inputs and outputs, the role
`explain` gives each input, and the rule each node gets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnxshap._errors import UnsupportedOpError
from onnxshap._graph import Graph, ModelLike, Node
from onnxshap._interpreter import fold_constants
from onnxshap._load import load_graph
from onnxshap._tokens import Lookup, _kind, _np_dtype, find_lookups


def describe_io(model: ModelLike) -> list[str]:
    """One line per graph input ("input  x: float32[?, 3]"), then one per graph output
    ("output y: float32[?, 2]")."""
    graph = load_graph(model).graph
    return [f"input  {i.describe()}" for i in graph.inputs] + [f"output {o.describe()}" for o in graph.outputs]


def index_lookups(graph: Graph) -> dict[str, list[Lookup]]:
    """Per id input (integers, or floats used only as ids), its lookups (embeddings, one-hot
    encodings)."""
    try:
        constants: dict[str, Any] = fold_constants(graph)
    except UnsupportedOpError:  # an unsupported op among the constants: inspect lists what it can
        constants = dict(graph.initializers)
    return find_lookups(graph, constants)


def input_roles(
    graph: Graph, floats: Sequence[str], tokens: Sequence[Lookup], found: dict[str, list[Lookup]]
) -> list[str]:
    """What `explain` without --inputs-from does with each graph input (the Explainer's own choice,
    `_tokens.default_explained`): attributes to it, explains it at its lookup, or holds it. One
    heading line, then one line per input."""
    upstream = graph.ancestors([*floats, *(e.tensor for e in tokens)])
    token_inputs = {e.input for e in tokens}
    lines = ["explain without --inputs-from:"]
    for i in graph.inputs:
        if i.name in floats:
            role = "explained (a float input)"
        elif i.name in token_inputs:
            via = ", ".join(repr(e.tensor) for e in tokens if e.input == i.name)
            role = f"ids, explained at their lookup {via}; values summed per position"
        elif i.name in upstream:
            role = "feeds an explained lookup (takes the background's values)"
        elif i.name in found:
            role = "ids of a smaller lookup (segment or position ids): held at the sample's values"
        elif i.dtype is not None and i.dtype.kind in "iub" and is_mask(graph, i.name):
            role = "a mask: held at the sample's values"
        else:
            role = "held at the sample's values (not upstream of an explained input)"
        lines.append(f"  {i.name}: {role}")
    if not floats and not tokens:
        lines.append("  nothing to explain by default: name float tensors with --inputs-from (see --tensors)")
    return lines


def node_rule(node: Node, varying: set[str]) -> str:
    """The rule family a node gets: the table's, or what it reduces to given which inputs vary."""
    if node.spec is None:
        return "UNSUPPORTED"
    if node.problem is not None:
        return "UNSUPPORTED (control flow that cannot be lowered)"
    n_varying = sum(1 for i in node.inputs if i and i in varying)
    if n_varying == 0:
        return "none (constant)"
    if node.spec.rule == "bilinear" and n_varying == 1:
        return "linear (bilinear; one operand is constant)"
    return str(node.spec.rule)


#: Ops that read an integer input as a condition: such an input is a mask (0/1), not a count or
#: an id.
_MASK_READERS = frozenset(
    {
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "Where",
    }
)
#: Ops that pass integers on with their values unchanged (a mask is often unsqueezed before it
#: is read).
_VALUE_KEEPING = frozenset(
    {
        "Identity",
        "Unsqueeze",
        "Squeeze",
        "Reshape",
        "Flatten",
        "Expand",
        "Transpose",
    }
)


def is_mask(graph: Graph, name: str) -> bool:
    """Whether integer input `name` is a mask: so named, or read as a condition (a comparison,
    Where, a Cast to bool), directly or after reshapes and integer casts."""
    if "mask" in name.lower():
        return True
    region = {name}
    for node in graph.nodes:  # topological order: a reshaped copy joins `region` before it is read
        if not region.intersection(node.reads):
            continue
        cast_to = _kind(_np_dtype(int(node.attrs.get("to", 0)))) if node.op_type == "Cast" else None
        if node.op_type in _MASK_READERS or cast_to == "b":
            return True
        if node.op_type in _VALUE_KEEPING or cast_to in ("i", "u"):
            region.update(o for o in node.outputs if o)
    return False
