"""ONNX GraphProto -> Graph: nodes in topological order with resolved versions and full attributes.

The graph decodes its tensors and attributes (checking stored sizes against dims and attribute
types against the op's schema), resolves each node's since-version and rule-table row, and records
the nodes without one (`Graph.unsupported()`). Reading a model file, its external data and opsets,
fusing QDQ pairs and lowering control flow is the loader's work (`onnxshap._load`), which builds
on this module.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import onnx
import onnx.defs
import onnx.external_data_helper
import onnx.numpy_helper
import onnx.shape_inference

from onnxshap._errors import (
    GraphError,
    ModelLoadError,
    OnnxShapError,
    UnsupportedOpError,
)
from onnxshap._registry import OpSpec, Registry, normalize_domain, registry, resolve_since_version

ModelLike = str | os.PathLike[str] | bytes | onnx.ModelProto

#: Ops removed before evaluation: they are the identity in inference.
_DROPPED_OPS = frozenset({"Identity", "Dropout"})


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type and shape of a graph input or output (None where unknown; str for symbolic dims)."""

    name: str
    dtype: np.dtype[Any] | None
    shape: tuple[int | str | None, ...] | None

    def describe(self) -> str:
        dims = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.dtype if self.dtype is not None else '?'}{dims}"


@dataclass(frozen=True)
class Control:
    """How a node lowered from control flow runs (see `onnxshap._control`).

    Attributes:
        source: label of the If, Loop or Scan node it was lowered from (for error messages).
        guard: (tensor, truth value) pairs: the node runs only where each tensor, when its value is
            known before the data arrives, has that truth value (the branch or iteration is taken).
            Where a tensor is computed from the data the node always runs and a select masks it.
        select: for a Where that chooses between branch outputs or masks a loop-carried value, what
            it selects (for messages); with a condition known before the data arrives it passes the
            chosen input through, without reading the other (which may not have run).
        checks: (tensor, axis, length) facts about shapes the lowering relied on, verified when the
            node runs.
    """

    source: str
    guard: tuple[tuple[str, bool], ...] = ()
    select: str = ""
    checks: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class Problem:
    """Why a control-flow node could not be lowered; raised when a requested tensor needs the node."""

    kind: type[OnnxShapError]
    message: str

    def error(self) -> OnnxShapError:
        return self.kind(self.message)


@dataclass
class Node:
    """One ONNX node with its resolved rule-table row and attributes (schema defaults filled in).

    `control` is set on nodes lowered from If/Loop/Scan; `problem` on an If/Loop/Scan node that
    could not be lowered (it keeps its `subgraphs`, and evaluating it raises `problem`).
    """

    index: int
    name: str
    op_type: str
    domain: str
    since_version: int | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    spec: OpSpec | None
    subgraphs: dict[str, Graph] = field(default_factory=dict)
    control: Control | None = None
    problem: Problem | None = None

    @property
    def label(self) -> str:
        return f"{self.op_type} node {self.name!r}" if self.name else f"{self.op_type} node #{self.index}"

    @property
    def reads(self) -> tuple[str, ...]:
        """Every tensor the node needs before it runs: its inputs, guard and checked tensors, and
        what its subgraphs read from the enclosing scope."""
        names = [i for i in self.inputs if i]
        if self.control is not None:
            names += [t for t, _ in self.control.guard] + [t for t, _, _ in self.control.checks]
        for sub in self.subgraphs.values():
            names += sorted(sub.free_tensors())
        return tuple(dict.fromkeys(names))


def _tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None:
        return TensorInfo(vi.name, None, None)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else None
    shape: tuple[int | str | None, ...] | None = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    return TensorInfo(vi.name, dtype, shape)


#: Bits per element of the ONNX types stored packed, several elements to a byte (newer onnx releases
#: add types; those this onnx lacks are left out).
_PACKED_BITS: dict[int, int] = {
    getattr(onnx.TensorProto, name): bits
    for name, bits in (
        ("INT4", 4),
        ("UINT4", 4),
        ("FLOAT4E2M1", 4),
        ("INT2", 2),
        ("UINT2", 2),
        ("FLOAT6E2M3", 6),
        ("FLOAT6E3M2", 6),
    )
    if hasattr(onnx.TensorProto, name)
}

_CORRUPT = "The model file is corrupt or was edited inconsistently; export the model again."


def _type_name(data_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"type {data_type}"


def _element_bits(data_type: int) -> int | None:
    """Bits one element of `data_type` takes in raw_data or an external file (None: never stored raw)."""
    if data_type in _PACKED_BITS:
        return _PACKED_BITS[data_type]
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, TypeError, ValueError):
        return None
    return None if dtype.kind == "O" else 8 * dtype.itemsize


def _raw_bytes(data_type: int, count: int) -> int | None:
    """Bytes that `count` elements of `data_type` take in raw_data or an external file."""
    bits = _element_bits(data_type)
    return None if bits is None else -(-count * bits // 8)


def tensor_array(t: onnx.TensorProto, what: str, base_dir: Path | None = None) -> np.ndarray:
    """The values of `t`; ModelLoadError (naming `what`) where its dims do not match the data it
    stores or onnx cannot read it, instead of numpy's reshape error that names no tensor."""
    dims = [int(d) for d in t.dims]
    count = math.prod(dims)
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{what} has dims {dims}, with a negative dimension. {_CORRUPT}")
    # A stored unit is a byte for raw data and for the packed types' int32_data (one byte per entry),
    # else one entry of the typed field (two per complex element): (bits per unit, bits per element).
    unit: tuple[int, int] | None = None
    field, have = "raw_data", len(t.raw_data)
    if t.HasField("raw_data"):
        bits = _element_bits(t.data_type)
        unit = None if bits is None else (8, bits)
    elif not onnx.external_data_helper.uses_external_data(t):
        try:
            field = onnx.helper.tensor_dtype_to_field(t.data_type)
        except KeyError:  # an undefined type: onnx's own error below says so
            field = ""
        if field:
            have = len(getattr(t, field))
            if _PACKED_BITS.get(t.data_type) in (2, 4):
                unit = (8, _PACKED_BITS[t.data_type])
            else:
                unit = (1, 2) if t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128) else (1, 1)
    if unit is not None:
        unit_bits, element_bits = unit
        need = -(-count * element_bits // unit_bits)
        if have != need:
            units = "bytes" if unit_bits == 8 else "entries"
            raise ModelLoadError(
                f"{what} has dims {dims}, which need {count} {_type_name(t.data_type)} element(s) ({need} {units} "
                f"of {field}), but it stores {have * unit_bits // element_bits} element(s) ({have} {units}). {_CORRUPT}"
            )
    try:
        return onnx.numpy_helper.to_array(t, base_dir=str(base_dir) if base_dir else "")
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{what} cannot be read: {exc}. {_CORRUPT}") from exc


def _attribute_value(attr: onnx.AttributeProto, base_dir: Path | None, owner: str) -> Any:
    """The attribute's value; `owner` (the node) names it in errors."""
    kind = attr.type
    A = onnx.AttributeProto
    if kind == A.FLOAT:
        return float(attr.f)
    if kind == A.INT:
        return int(attr.i)
    if kind == A.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if kind == A.TENSOR:
        return tensor_array(attr.t, f"Tensor attribute {attr.name!r} of {owner}", base_dir)
    if kind == A.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == A.INTS:
        return [int(v) for v in attr.ints]
    if kind == A.STRINGS:
        return [v.decode("utf-8", errors="replace") for v in attr.strings]
    if kind == A.GRAPH:
        return attr.g
    if kind == A.TENSORS:
        return [
            tensor_array(t, f"Tensor {i} of attribute {attr.name!r} of {owner}", base_dir)
            for i, t in enumerate(attr.tensors)
        ]
    if kind == A.SPARSE_TENSOR:
        return onnx.numpy_helper.to_array(onnx.helper.make_tensor("", 1, [], []))  # pragma: no cover
    return onnx.helper.get_attribute_value(attr)


@functools.cache
def _schema(op_type: str, domain: str, since: int | None) -> onnx.defs.OpSchema | None:
    """The op's schema at its since_version (None if onnx does not know it)."""
    if since is None:
        return None
    try:
        return onnx.defs.get_schema(op_type, max_inclusive_version=since, domain=domain)
    except onnx.defs.SchemaError:
        return None


def _check_attribute_type(node: Node, attr: onnx.AttributeProto) -> None:
    """An attribute stored with another type than the schema's (axis=1.0) is an invalid model, which
    onnxruntime refuses too; read as it is, it would fail deep inside an op."""
    schema = _schema(node.op_type, node.domain, node.since_version)
    expected = schema.attributes[attr.name].type if schema is not None and attr.name in schema.attributes else None
    if expected is not None and attr.type != expected:
        names = onnx.AttributeProto.AttributeType.Name
        # OpSchema.AttrType is an IntEnum, which onnx's stub declares as a plain class.
        takes = names(expected)  # pyright: ignore[reportArgumentType]
        raise GraphError(
            f"Attribute {attr.name!r} of {node.label} is stored as {names(attr.type)}, but {node.op_type}-"
            f"{node.since_version} takes {takes}: the model is invalid (onnx.checker.check_model says so "
            "too). Re-export it, or fix the attribute with onnx.helper.make_attribute."
        )


def _schema_defaults(op_type: str, domain: str, since: int | None) -> dict[str, Any]:
    schema = _schema(op_type, domain, since)
    if schema is None:
        return {}
    defaults: dict[str, Any] = {}
    for name, attr in schema.attributes.items():
        default = attr.default_value
        if default is not None and default.type != onnx.AttributeProto.UNDEFINED:
            defaults[name] = _attribute_value(default, None, f"the {op_type} schema")
    return defaults


#: `Graph`'s node-list rewrite: (nodes, graph output names) -> nodes.
Rewrite = Callable[[list[Node], list[str]], list[Node]]


class Graph:
    """A parsed ONNX graph (the main graph, or a subgraph of If, Loop or Scan).

    Attributes:
        nodes: nodes in a deterministic topological order (Identity and Dropout removed; in the main
            graph of a loaded model, control flow lowered into ordinary nodes).
        dag: networkx DiGraph over node indices; edge attribute "tensors" lists the connecting tensors.
        initializers: constant tensors by name.
        inputs / outputs: the graph's true inputs (initializer-backed inputs excluded) and outputs.
        value_info: every tensor whose type shape inference could determine.
        opsets: domain -> opset version the model imports.
        lowered: one line per If/Loop/Scan node saying how it was lowered (see `onnxshap._control`).

    `rewrite(nodes, graph_outputs)` replaces the node list before it is ordered, in subgraphs too: the
    loader (`onnxshap._load`) passes the QDQ fusion, which lives with the quantisation ops.
    """

    def __init__(
        self,
        proto: onnx.GraphProto,
        opsets: Mapping[str, int],
        *,
        reg: Registry | None = None,
        base_dir: Path | None = None,
        outer_scope: Iterable[str] = (),
        rewrite: Rewrite | None = None,
    ):
        self.name = proto.name
        self.opsets = dict(opsets)
        reg = reg or registry()
        self.initializers: dict[str, np.ndarray] = {}
        for t in proto.initializer:
            self.initializers[t.name] = tensor_array(t, f"Initializer {t.name!r}", base_dir)
        for sparse in proto.sparse_initializer:
            raise GraphError(f"Sparse initializer {sparse.values.name!r} is not supported; store it as a dense tensor.")
        self.inputs = [_tensor_info(vi) for vi in proto.input if vi.name not in self.initializers]
        self.outputs = [_tensor_info(vi) for vi in proto.output]
        self.value_info = {vi.name: _tensor_info(vi) for vi in [*proto.input, *proto.value_info, *proto.output]}
        self.outer_scope = frozenset(outer_scope)
        self.lowered: list[str] = []

        raw_nodes: list[Node] = []
        for index, n in enumerate(proto.node):
            domain = normalize_domain(n.domain)
            opset = self.opsets.get(domain)
            since = resolve_since_version(n.op_type, domain, opset) if opset is not None else None
            spec = reg.get(n.op_type, domain)
            if spec is not None and since not in spec.since:
                spec = None
            attrs = _schema_defaults(n.op_type, domain, since)
            node = Node(index, n.name, n.op_type, domain, since, tuple(n.input), tuple(n.output), attrs, spec)
            subgraph_protos: dict[str, onnx.GraphProto] = {}
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    subgraph_protos[a.name] = a.g
                else:
                    _check_attribute_type(node, a)
                    attrs[a.name] = _attribute_value(a, base_dir, node.label)
            raw_nodes.append(node)
            if subgraph_protos:
                visible = {*self.outer_scope, *self.initializers, *(i.name for i in self.inputs)}
                visible |= {o for m in raw_nodes for o in m.outputs}
                for key, g in subgraph_protos.items():
                    node.subgraphs[key] = Graph(
                        g, self.opsets, reg=reg, base_dir=base_dir, outer_scope=visible, rewrite=rewrite
                    )

        self.nodes = self._drop_identities(raw_nodes)
        if rewrite is not None:
            self.nodes = rewrite(self.nodes, [o.name for o in self.outputs])
        self.dag = self._build_dag(self.nodes)
        order = list(nx.lexicographical_topological_sort(self.dag, key=lambda i: i))
        by_index = {n.index: n for n in self.nodes}
        self.nodes = [by_index[i] for i in order]
        self.producer = {o: n for n in self.nodes for o in n.outputs if o}

    def _drop_identities(self, nodes: list[Node]) -> list[Node]:
        # Rewire consumers of Identity/Dropout outputs to their inputs; keep the node when its
        # output is a graph output (the name must survive) or when Dropout's mask is consumed.
        graph_outputs = {o.name for o in self.outputs}
        alias: dict[str, str] = {}
        kept: list[Node] = []
        for node in nodes:
            node.inputs = tuple(alias.get(i, i) for i in node.inputs)
            removable = (
                node.op_type in _DROPPED_OPS
                and node.domain == ""
                and node.spec is not None
                and node.outputs[0] not in graph_outputs
                and all(not o for o in node.outputs[1:])
            )
            if removable:
                alias[node.outputs[0]] = node.inputs[0]
            else:
                kept.append(node)
        for node in kept:
            for sub in node.subgraphs.values():
                sub._rename_outer(alias)
        return kept

    def _rename_outer(self, alias: Mapping[str, str]) -> None:
        local = {o for n in self.nodes for o in n.outputs} | set(self.initializers) | {i.name for i in self.inputs}
        for node in self.nodes:
            node.inputs = tuple(alias.get(i, i) if i not in local else i for i in node.inputs)
            for sub in node.subgraphs.values():
                sub._rename_outer(alias)
        self.outputs = [
            TensorInfo(alias.get(o.name, o.name), o.dtype, o.shape) if o.name not in local else o for o in self.outputs
        ]

    def _build_dag(self, nodes: list[Node]) -> nx.DiGraph:
        dag = nx.DiGraph()
        producer: dict[str, int] = {}
        for node in nodes:
            dag.add_node(node.index)
            for o in node.outputs:
                if not o:
                    continue
                if o in producer:
                    raise GraphError(
                        f"Tensor {o!r} is produced by two nodes (#{producer[o]} and #{node.index}); "
                        "an ONNX graph must be in SSA form. The model file is malformed."
                    )
                producer[o] = node.index
        known = set(self.initializers) | {i.name for i in self.inputs} | set(self.outer_scope)
        for node in nodes:
            for t in node.reads:
                if t in producer:
                    if dag.has_edge(producer[t], node.index):
                        dag.edges[producer[t], node.index]["tensors"].append(t)
                    else:
                        dag.add_edge(producer[t], node.index, tensors=[t])
                elif t not in known:
                    raise GraphError(
                        f"{node.label} reads tensor {t!r}, which no node produces and which is neither a "
                        "graph input nor an initializer. The model file is malformed or incomplete."
                    )
        for o in self.outputs:
            if o.name not in producer and o.name not in known:
                raise GraphError(f"Graph output {o.name!r} is produced by no node. The model file is malformed.")
        if not nx.is_directed_acyclic_graph(dag):
            cycle = nx.find_cycle(dag)
            raise GraphError(
                f"The graph has a cycle through nodes {[c[0] for c in cycle]}; ONNX graphs must be acyclic."
            )
        return dag

    def _set_nodes(self, nodes: list[Node]) -> None:
        """Replace the node list (after lowering control flow): rebuild the DAG, order and producers."""
        self.dag = self._build_dag(nodes)
        by_index = {n.index: n for n in nodes}
        self.nodes = [by_index[i] for i in nx.lexicographical_topological_sort(self.dag, key=lambda i: i)]
        self.producer = {o: n for n in self.nodes for o in n.outputs if o}

    def free_tensors(self) -> set[str]:
        """Tensors this graph (and its subgraphs) read from an enclosing scope."""
        local = {o for n in self.nodes for o in n.outputs} | set(self.initializers) | {i.name for i in self.inputs}
        free: set[str] = set()
        for n in self.nodes:
            free |= {i for i in n.inputs if i and i not in local}
            for sub in n.subgraphs.values():
                free |= {t for t in sub.free_tensors() if t not in local}
        free |= {o.name for o in self.outputs if o.name not in local}
        return free

    def all_nodes(self) -> Iterable[Node]:
        """Every node, including those inside subgraphs."""
        for n in self.nodes:
            yield n
            for sub in n.subgraphs.values():
                yield from sub.all_nodes()

    def ancestors(self, tensors: Iterable[str]) -> set[str]:
        """Every tensor needed to compute `tensors` (the tensors themselves included)."""
        needed = set(tensors)
        for node in reversed(self.nodes):
            if any(o in needed for o in node.outputs if o):
                needed |= set(node.reads)
        return needed

    def needed_nodes(self, tensors: Iterable[str] | None = None) -> list[Node]:
        """The nodes that computing `tensors` runs (default: the graph outputs), in order."""
        needed = self.ancestors(o.name for o in self.outputs) if tensors is None else self.ancestors(tensors)
        return [n for n in self.nodes if any(o in needed for o in n.outputs if o)]

    def unsupported(self, outputs: Iterable[str] | None = None) -> list[str]:
        """One message per unsupported op type (grouping its nodes), then one per control-flow node
        that cannot be lowered; empty when everything is supported.

        Only nodes that computing `outputs` needs count (default: the graph outputs).
        """
        needed = self.needed_nodes(outputs)
        groups: dict[tuple[str, str, int | None], list[str]] = {}
        for n in _with_subgraph_nodes(needed):
            if n.spec is None:
                groups.setdefault((n.op_type, n.domain, n.since_version), []).append(n.name or f"#{n.index}")
        reg = registry()
        messages = [
            reg.describe_unsupported(op, dom, self.opsets.get(dom, 0), since, names)
            for (op, dom, since), names in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ]
        return messages + [n.problem.message for n in needed if n.problem is not None]

    def check_supported(self, outputs: Iterable[str] | None = None) -> None:
        """Raise UnsupportedOpError for ops without a row that computing `outputs` needs (default: the
        graph outputs). Control-flow nodes that cannot be lowered raise when they are evaluated."""
        needed = self.needed_nodes(outputs)
        missing = [n for n in _with_subgraph_nodes(needed) if n.spec is None]
        if not missing:
            return
        groups: dict[tuple[str, str, int | None], list[str]] = {}
        for n in missing:
            groups.setdefault((n.op_type, n.domain, n.since_version), []).append(n.name or f"#{n.index}")
        reg = registry()
        problems = [
            reg.describe_unsupported(op, dom, self.opsets.get(dom, 0), since, names)
            for (op, dom, since), names in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ]
        head = f"The model uses {len(problems)} unsupported op type(s):\n  - " if len(problems) > 1 else ""
        raise UnsupportedOpError(head + "\n  - ".join(problems))

    def descendants_of(self, tensors: Iterable[str]) -> set[str]:
        """Every tensor that depends on any of `tensors` (the tensors themselves included)."""
        reached = set(tensors)
        for node in self.nodes:
            reads = {i for i in node.inputs if i}
            for sub in node.subgraphs.values():
                reads |= sub.free_tensors()
            if reads & reached:
                reached |= {o for o in node.outputs if o}
        return reached


def _with_subgraph_nodes(nodes: Iterable[Node]) -> Iterable[Node]:
    for n in nodes:
        yield n
        for sub in n.subgraphs.values():
            yield from sub.all_nodes()
