"""Control flow lowered into ordinary nodes at load time: If, Loop and Scan.

After lowering, the interpreter and the attribution pass see one flat list of nodes, so every node
inside a branch or a loop body gets its own rule, whether it reads the branch's inputs or tensors of
the enclosing graph. How each op is lowered (docs/rules/control-flow.md):

- If whose condition is known when the model is loaded (a constant, or arithmetic on declared
  dimensions): the taken branch is inlined, the other is dropped.
- Any other If: both branches are inlined, each node guarded by the condition, and every output
  becomes `Where(cond, then_out, else_out)`. Where the condition is known when the graph is compiled
  (a shape of a dynamic dimension), only the taken branch runs and the Where passes its value
  through. Where it is computed from the data, both branches run and the Where selects; the Where's
  own rule (a Shapley game over condition, then value and else value) attributes the choice.
- Loop whose trip count and initial condition are known at load: the body is unrolled. A condition
  that the body computes from the data masks the loop-carried values: iteration i's result is kept
  only where every earlier condition held (nested Wheres), so the loop always runs its trip count.
- Scan: unrolled over the scan axis, whose length must be known at load.

Unrolling is capped at `MAX_UNROLLED_NODES` nodes per top-level control-flow node. A node that cannot
be lowered keeps its subgraphs and gets a `Problem`: it is reported by `unsupported_ops` and raises
only when a requested tensor needs it.
"""

from __future__ import annotations

import dataclasses
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from onnxshap._errors import GraphError, OnnxShapError, UnsupportedOpError
from onnxshap._graph import Control, Graph, Node, Problem, TensorInfo, _schema_defaults
from onnxshap._interpreter import call_node
from onnxshap._registry import registry, resolve_since_version

#: Most nodes one top-level If/Loop/Scan may lower to (iterations x body nodes, nested loops
#: multiplied). Every unrolled node is traced and compiled on both sides of every pair, so this
#: bounds compile time; a loop above it is an `UnsupportedOpError` naming the node.
MAX_UNROLLED_NODES = 4096

_CONTROL_OPS = frozenset({"If", "Loop", "Scan"})
#: Ops that only move elements: applied to a partially known shape vector, a known element stays
#: known (`Shape -> Gather` of a fixed dimension next to a dynamic batch). Value: input positions
#: that may be partially known (None: all).
_SELECTION_OPS: Mapping[str, tuple[int, ...] | None] = {
    "Gather": (0,),
    "Slice": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Reshape": (0,),
    "Identity": (0,),
    "Concat": None,
}
#: Lowest opset at which the lowering emits each op (If and Loop exist in opsets where Where does not).
_MIN_OPSET = {"Where": 9, "Reshape": 5, "Concat": 4}


class _Unlowerable(Exception):
    """Raised inside the lowering of a top-level control-flow node; becomes that node's Problem."""

    def __init__(self, kind: type[OnnxShapError], message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class _Scope:
    """What the lowering knows, as a transaction: a child scope is merged into its parent on
    success and dropped when the top-level node it lowers turns out not to be lowerable."""

    known: ChainMap[str, np.ndarray]  # values known at load time
    partial: ChainMap[str, tuple[np.ndarray, np.ndarray]]  # shape vectors: (values, known mask)
    unknown: ChainMap[str, None]  # tensors whose value is not known at load time
    dependent: ChainMap[str, bool]  # tensors computed from the values (not only shapes) of the inputs
    initializers: ChainMap[str, np.ndarray]  # constants the lowering adds
    value_info: ChainMap[str, TensorInfo]  # types of renamed subgraph tensors
    producer: ChainMap[str, Node]
    position: ChainMap[int, int]  # node index -> emission order
    names: ChainMap[str, None]  # every tensor name in use
    checks: ChainMap[int, tuple[tuple[str, int, int], ...]]  # node index -> shape facts relied on
    constants: ChainMap[tuple[Any, ...], str]  # (dtype, shape, bytes) -> initializer name
    nodes: list[Node]

    def child(self) -> _Scope:
        maps = {f.name: getattr(self, f.name).new_child() for f in dataclasses.fields(self) if f.name != "nodes"}
        return _Scope(**maps, nodes=[])

    def commit(self, parent: _Scope) -> None:
        for f in dataclasses.fields(self):
            if f.name != "nodes":
                getattr(parent, f.name).update(getattr(self, f.name).maps[0])
        parent.nodes.extend(self.nodes)


def _truth(value: Any) -> bool:
    return bool(np.asarray(value).reshape(-1)[0])


def _subgraph_size(graph: Graph) -> int:
    return sum(1 for _ in graph.all_nodes())


def _shapes_differ(a: Sequence[Any] | None, b: Sequence[Any] | None) -> bool:
    if a is None or b is None:
        return False
    if len(a) != len(b):
        return True
    return any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a, b))


def _dims_text(shape: Sequence[Any] | None) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _all_names(graph: Graph) -> set[str]:
    names = {i.name for i in graph.inputs} | set(graph.initializers) | set(graph.value_info)
    for n in graph.nodes:
        names |= {o for o in n.outputs if o}
        for sub in n.subgraphs.values():
            names |= _all_names(sub)
    return names


class _Lowerer:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.opset = graph.opsets.get("", 1)
        self.reg = registry()
        self.next_index = 1 + max((n.index for n in graph.nodes), default=-1)
        self.counter = 0
        self.outer: str | None = None  # label of the top-level node being lowered
        self.budget = 0
        self.notes: list[str] = []

    # --- bookkeeping -------------------------------------------------------------------------------

    def _index(self) -> int:
        self.next_index += 1
        return self.next_index - 1

    def _fresh(self, s: _Scope, base: str) -> str:
        name, k = base, 1
        while name in s.names:
            name, k = f"{base}_{k}", k + 1
        s.names[name] = None
        return name

    def _emit(self, s: _Scope, node: Node) -> None:
        if self.outer is not None:
            self.budget += 1
            if self.budget > MAX_UNROLLED_NODES:
                raise _Unlowerable(
                    UnsupportedOpError,
                    f"{self.outer} lowers to more than {MAX_UNROLLED_NODES} nodes (iterations x body nodes), the "
                    "most onnxshap unrolls: every unrolled node is compiled on both sides of every pair. Re-export "
                    "the model with fewer iterations, or explain up to a tensor before the loop (outputs=...).",
                )
        s.nodes.append(node)
        self.counter += 1
        s.position[node.index] = self.counter
        dependent = bool(node.subgraphs) or (
            node.op_type not in ("Shape", "Size") and any(s.dependent.get(i, False) for i in node.inputs if i)
        )
        for o in node.outputs:
            if o:
                s.producer[o] = node
                s.names[o] = None
                if dependent:
                    s.dependent[o] = True

    def _new(
        self,
        s: _Scope,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        name: str,
        attrs: Mapping[str, Any] | None = None,
        control: Control | None = None,
    ) -> None:
        since = resolve_since_version(op, "", max(self.opset, _MIN_OPSET.get(op, 1)))
        spec = self.reg.get(op)
        if spec is None or since not in spec.since:  # pragma: no cover - the table lists these ops
            raise GraphError(f"Lowering control flow needs {op} at since_version {since}, which the rule table lacks.")
        full = {**_schema_defaults(op, "", since), **(attrs or {})}
        self._emit(
            s, Node(self._index(), name, op, "", since, tuple(inputs), tuple(outputs), full, spec, control=control)
        )

    def _const(self, s: _Scope, base: str, value: np.ndarray) -> str:
        key = (value.dtype.str, value.shape, value.tobytes())
        if key in s.constants:
            return s.constants[key]
        name = self._fresh(s, base)
        s.initializers[name] = value
        s.known[name] = value
        s.constants[key] = name
        return name

    def _shape_of(self, s: _Scope, name: str) -> tuple[int | None, ...] | None:
        if name in s.known:
            return tuple(np.shape(s.known[name]))
        info = s.value_info.get(name) or self.graph.value_info.get(name)
        if info is None or info.shape is None:
            return None
        return tuple(d if isinstance(d, int) else None for d in info.shape)

    def _rank(self, s: _Scope, name: str) -> int | None:
        shape = self._shape_of(s, name)
        return None if shape is None else len(shape)

    # --- values known at load time -----------------------------------------------------------------

    def value(self, s: _Scope, name: str) -> np.ndarray | None:
        """The tensor's value if it is known when the model is loaded, else None."""
        if not name:
            return None
        if name in s.known or name in s.unknown:
            return s.known.get(name)
        todo: dict[int, Node] = {}
        stack = [name]
        while stack:
            t = stack.pop()
            if t in s.known or t in s.unknown or t in s.partial:
                continue
            node = s.producer.get(t)
            if node is None:
                s.unknown[t] = None  # a graph input
                continue
            if node.index not in todo:
                todo[node.index] = node
                stack.extend(node.reads)
        for node in sorted(todo.values(), key=lambda n: s.position[n.index]):
            self._fold(s, node)
        return s.known.get(name)

    def _fold(self, s: _Scope, node: Node) -> None:
        outs = [o for o in node.outputs if o]
        if all(o in s.known or o in s.unknown or o in s.partial for o in outs):
            return

        def unknown() -> None:
            for o in outs:
                if o not in s.known and o not in s.partial:
                    s.unknown[o] = None

        if node.problem is not None or node.spec is None or node.subgraphs:
            return unknown()
        control = node.control
        if control is not None:
            for t, want in control.guard:
                if t not in s.known or _truth(s.known[t]) != want:
                    return unknown()
            if control.select:
                if node.inputs[0] not in s.known:
                    return unknown()
                chosen = node.inputs[1 if _truth(s.known[node.inputs[0]]) else 2]
                if chosen in s.known:
                    s.known[outs[0]] = s.known[chosen]
                elif chosen in s.partial:
                    s.partial[outs[0]] = s.partial[chosen]
                return unknown()
        if node.op_type == "Shape" and node.domain == "":
            if not self._fold_shape(s, node):
                unknown()
            return
        if node.op_type == "Size" and node.domain == "":
            shape = self._shape_of(s, node.inputs[0])
            dims = () if shape is None else tuple(d for d in shape if d is not None)
            if shape is None or len(dims) < len(shape):
                return unknown()
            s.known[outs[0]] = np.array(int(np.prod(dims, dtype=np.int64)), np.int64)
            if node.inputs[0] not in s.known:
                facts = tuple((node.inputs[0], a, int(d)) for a, d in enumerate(dims))
                s.checks[node.index] = tuple(dict.fromkeys((*s.checks.get(node.index, ()), *facts)))
            return None
        values = [s.known.get(i) if i else None for i in node.inputs]
        if all(v is not None for i, v in zip(node.inputs, values) if i):
            try:
                with jax.enable_x64(True):
                    results = call_node(node, values)
            except Exception:  # noqa: BLE001 - folding is advisory: evaluation raises with full context
                return unknown()
            for o, v in zip(node.outputs, results):
                if o and v is not None:
                    s.known[o] = np.asarray(v)
            return unknown()
        if node.op_type in _SELECTION_OPS and node.domain == "" and len(outs) == 1:
            if not self._fold_selection(s, node):
                unknown()
            return
        return unknown()

    def _fold_selection(self, s: _Scope, node: Node) -> bool:
        """Apply an op that only moves elements to partially known shape vectors: once to the values
        and once to the masks saying which elements are known (indices and axes must be known)."""
        partial_positions = _SELECTION_OPS[node.op_type]
        values: list[Any] = []
        masks: list[Any] = []
        for p, i in enumerate(node.inputs):
            data = partial_positions is None or p in partial_positions
            if not i:
                values.append(None)
                masks.append(None)
            elif i in s.known:
                v = np.asarray(s.known[i])
                values.append(v)
                masks.append(np.ones(v.shape, v.dtype) if data else v)
            elif i in s.partial and data:
                v, m = s.partial[i]
                values.append(v)
                masks.append(m.astype(v.dtype))
            else:
                return False
        try:
            with jax.enable_x64(True):
                value = np.asarray(call_node(node, values)[0])
                mask = np.asarray(call_node(node, masks)[0]) == 1
        except Exception:  # noqa: BLE001 - as above
            return False
        if mask.all():
            s.known[node.outputs[0]] = value
        else:
            s.partial[node.outputs[0]] = (value, mask)
        return True

    def _fold_shape(self, s: _Scope, node: Node) -> bool:
        source = node.inputs[0]
        shape = self._shape_of(s, source)
        if shape is None:
            return False
        start, end = node.attrs.get("start", 0), node.attrs.get("end")
        axes = list(range(len(shape)))[start:end]
        dims = [shape[a] for a in axes]
        values = np.array([d or 0 for d in dims], np.int64)
        mask = np.array([d is not None for d in dims], bool)
        out = node.outputs[0]
        if mask.all():
            s.known[out] = values
        else:
            s.partial[out] = (values, mask)
        if source not in s.known and mask.any():
            facts = tuple((source, a, int(d)) for a, d in zip(axes, dims) if d is not None)
            s.checks[node.index] = tuple(dict.fromkeys((*s.checks.get(node.index, ()), *facts)))
        return True

    # --- the graph walk ----------------------------------------------------------------------------

    def lowerable(self, node: Node) -> bool:
        return node.domain == "" and node.op_type in _CONTROL_OPS and node.spec is not None and bool(node.subgraphs)

    def run(self) -> None:
        g = self.graph
        s = _Scope(
            known=ChainMap(dict(g.initializers)),
            partial=ChainMap(),
            unknown=ChainMap(),
            dependent=ChainMap({i.name: True for i in g.inputs}),
            initializers=ChainMap(),
            value_info=ChainMap(),
            producer=ChainMap(),
            position=ChainMap(),
            names=ChainMap(dict.fromkeys(_all_names(g))),
            checks=ChainMap(),
            constants=ChainMap(),
            nodes=[],
        )
        for node in g.nodes:
            if not self.lowerable(node):
                self._emit(s, node)
                continue
            child = s.child()
            name = node.name or f"{node.op_type}#{node.index}"
            self.outer, self.budget = node.label, 0
            try:
                self.lower(child, node, name, node.inputs, node.outputs, (), ChainMap())
            except _Unlowerable as exc:
                self.outer = None
                node.problem = Problem(exc.kind, exc.message)
                self._emit(s, node)
            else:
                self.outer = None
                child.commit(s)
        nodes = []
        for n in s.nodes:
            facts = s.checks.get(n.index)
            if facts:
                old = n.control or Control(source=n.label)
                checks = tuple(dict.fromkeys((*old.checks, *facts)))
                n = dataclasses.replace(n, control=dataclasses.replace(old, checks=checks))
            nodes.append(n)
        g.initializers.update(s.initializers)
        g.value_info.update(s.value_info)
        g._set_nodes(nodes)
        g.lowered = self.notes

    def emit_graph(
        self,
        s: _Scope,
        g: Graph,
        mapping: Mapping[str, str],
        guard: tuple[tuple[str, bool], ...],
        prefix: str,
        source: str,
    ) -> list[str]:
        """Inline subgraph `g` (tensors it reads by `mapping`, its own renamed with `prefix`);
        returns the names its outputs take."""
        local: dict[str, str] = {}
        scope: ChainMap[str, str] = ChainMap(local, mapping)  # type: ignore[arg-type]
        for name, value in g.initializers.items():
            new = self._fresh(s, prefix + name)
            local[name] = new
            s.initializers[new] = value
            s.known[new] = value
        for node in g.nodes:
            inputs = tuple(scope.get(i, i) if i else "" for i in node.inputs)
            outputs = []
            for o in node.outputs:
                if not o:
                    outputs.append("")
                    continue
                new = self._fresh(s, prefix + o)
                local[o] = new
                outputs.append(new)
                info = g.value_info.get(o)
                if info is not None:
                    s.value_info[new] = TensorInfo(new, info.dtype, info.shape)
            name = prefix + (node.name or f"#{node.index}")
            if self.lowerable(node):
                self.lower(s, node, name, inputs, tuple(outputs), guard, scope)
                continue
            if node.subgraphs:
                raise _Unlowerable(
                    UnsupportedOpError,
                    f"{node.op_type} node {name!r} inside {source} carries subgraphs; only If, Loop and Scan at the "
                    "since-versions in rules/tensor.toml are lowered.",
                )
            control = Control(source=source, guard=guard) if guard else None
            copy = dataclasses.replace(
                node, index=self._index(), name=name, inputs=inputs, outputs=tuple(outputs), control=control
            )
            self._emit(s, copy)
        return [scope.get(o.name, o.name) for o in g.outputs]

    def lower(
        self,
        s: _Scope,
        node: Node,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        guard: tuple[tuple[str, bool], ...],
        mapping: Mapping[str, str],
    ) -> None:
        if node.op_type == "If":
            self._lower_if(s, node, name, inputs, outputs, guard, mapping)
        elif node.op_type == "Loop":
            self._lower_loop(s, node, name, inputs, outputs, guard, mapping)
        else:
            self._lower_scan(s, node, name, inputs, outputs, guard, mapping)

    def _where(self, node: Node, name: str) -> str:
        return f"{node.op_type} node {name!r} (opset {self.opset})"

    def _identity(
        self, s: _Scope, source_name: str, out: str, name: str, guard: tuple[tuple[str, bool], ...], label: str
    ) -> None:
        self._new(s, "Identity", [source_name], [out], name, control=Control(label, guard) if guard else None)

    def _scalar_condition(
        self,
        s: _Scope,
        cond: str,
        ranks: Iterable[int | None],
        guard: tuple[tuple[str, bool], ...],
        label: str,
        name: str,
    ) -> str:
        """`cond`, reshaped to a scalar where its one element would otherwise broadcast a rank-0 value to [1]."""
        rank = self._rank(s, cond)
        if rank == 0 or (rank is not None and all(r is not None and r >= rank for r in ranks)):
            return cond
        shape = self._const(s, f"{name}/scalar_shape", np.zeros((0,), np.int64))
        out = self._fresh(s, f"{cond}/scalar")
        self._new(
            s, "Reshape", [cond, shape], [out], f"{name}/condition", control=Control(label, guard) if guard else None
        )
        return out

    # --- If ------------------------------------------------------------------------------------------

    def _lower_if(
        self,
        s: _Scope,
        node: Node,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        guard: tuple[tuple[str, bool], ...],
        mapping: Mapping[str, str],
    ) -> None:
        label = f"If node {name!r}"
        then_g, else_g = node.subgraphs["then_branch"], node.subgraphs["else_branch"]
        if len(then_g.outputs) != len(else_g.outputs) or len(outputs) > len(then_g.outputs):
            raise GraphError(
                f"{label} has {len(outputs)} outputs, but its then branch returns {len(then_g.outputs)} and its "
                f"else branch {len(else_g.outputs)}; the model file is malformed."
            )
        cond = inputs[0]
        known = self.value(s, cond)
        if known is not None:
            taken = _truth(known)
            branch, which = (then_g, "then") if taken else (else_g, "else")
            results = self.emit_graph(s, branch, mapping, guard, f"{name}/{which}/", label)
            for k, (out, src) in enumerate(zip(outputs, results)):
                if out:
                    self._identity(s, src, out, f"{name}/output_{k}", guard, label)
            self.notes.append(
                f"{label}: condition known when the model is loaded ({taken}): the {which} branch is inlined "
                f"({_subgraph_size(branch)} nodes), the other dropped"
            )
            return
        from_data = s.dependent.get(cond, False)
        if from_data:
            for k, (a, b) in enumerate(zip(then_g.outputs, else_g.outputs)):
                if k >= len(outputs) or not outputs[k]:
                    continue
                if (a.dtype is not None and b.dtype is not None and a.dtype != b.dtype) or _shapes_differ(
                    a.shape, b.shape
                ):
                    raise _Unlowerable(
                        GraphError,
                        f"{self._where(node, name)}: its branches give output {k} as {a.dtype}{_dims_text(a.shape)} "
                        f"(then) and {b.dtype}{_dims_text(b.shape)} (else), so the condition must be known before the "
                        "data arrives, but it is computed from the model's inputs: onnxshap would run both branches "
                        "and select with Where, which needs one shape and dtype. Re-export the model so that both "
                        "branches return tensors of the same shape (pad them), or explain up to a tensor before the "
                        "If (outputs=...).",
                    )
        then_out = self.emit_graph(s, then_g, mapping, (*guard, (cond, True)), f"{name}/then/", label)
        else_out = self.emit_graph(s, else_g, mapping, (*guard, (cond, False)), f"{name}/else/", label)
        ranks = [self._rank(s, t) for t in then_out]
        ranks = [r if r is not None else self._rank(s, e) for r, e in zip(ranks, else_out)]
        selector = self._scalar_condition(s, cond, [r for r, o in zip(ranks, outputs) if o], guard, label, name)
        for k, out in enumerate(outputs):
            if out:
                what = f"output {k} of {label} (then branch {then_out[k]!r} or else branch {else_out[k]!r})"
                self._new(
                    s,
                    "Where",
                    [selector, then_out[k], else_out[k]],
                    [out],
                    f"{name}/select_{k}",
                    control=Control(label, guard, select=what),
                )
        self.notes.append(
            f"{label}: condition {'depends on the input values' if from_data else 'known when compiling'}: both branches "
            f"inlined ({_subgraph_size(then_g)} + {_subgraph_size(else_g)} nodes), {sum(1 for o in outputs if o)} "
            "output(s) selected with Where"
        )

    # --- Loop ----------------------------------------------------------------------------------------

    def _lower_loop(
        self,
        s: _Scope,
        node: Node,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        guard: tuple[tuple[str, bool], ...],
        mapping: Mapping[str, str],
    ) -> None:
        label = f"Loop node {name!r}"
        where = self._where(node, name)
        body = node.subgraphs["body"]
        padded = [*inputs, "", ""]
        trip_name, cond_name, initial = padded[0], padded[1], list(inputs[2:])
        n_carried = len(initial)
        n_scan = len(body.outputs) - 1 - n_carried
        if len(body.inputs) != 2 + n_carried or n_scan < 0:
            raise GraphError(
                f"{label} passes {n_carried} loop-carried values, but its body takes {len(body.inputs)} inputs and "
                f"returns {len(body.outputs)} outputs; the model file is malformed."
            )
        if not trip_name:
            raise _Unlowerable(
                GraphError,
                f"{where} has no trip count: it runs until a condition computed in the loop turns false, and onnxshap "
                "unrolls loops, which needs a maximum number of iterations known before the data arrives. Re-export "
                "the model with a bounded loop (for i in range(n)), or explain up to a tensor before the loop "
                "(outputs=...).",
            )
        trips_value = self.value(s, trip_name)
        if trips_value is None:
            raise _Unlowerable(
                GraphError,
                f"{where}: its trip count {trip_name!r} is computed from the model's inputs, but onnxshap unrolls loops "
                "and needs the number of iterations known before the data arrives (a constant, or a dimension the "
                "model declares). Re-export the model with fixed shapes for the dimension it loops over, or explain "
                "up to a tensor before the loop (outputs=...).",
            )
        trips = max(int(np.asarray(trips_value).reshape(-1)[0]), 0)
        if cond_name:
            start = self.value(s, cond_name)
            if start is None:
                raise _Unlowerable(
                    GraphError,
                    f"{where}: its initial condition {cond_name!r} is computed from the model's inputs; onnxshap needs "
                    "it known before the data arrives (a condition the body computes may depend on the data). "
                    "Re-export the model with the first test inside the loop body.",
                )
            if not _truth(start):
                trips = 0
        size = _subgraph_size(body)
        carried = list(initial)
        scans: list[list[str]] = [[] for _ in range(n_scan)]
        # Conditions not known at load so far, as (tensor, scalar selector): iteration i runs where all hold.
        pending: list[tuple[str, str]] = []
        # The body's iteration number and condition inputs: scalars, or [1] where the body declares it.
        cond_in = cond_name or self._const(
            s, f"{name}/true", np.ones((1,) if body.inputs[1].shape == (1,) else (), bool)
        )
        iteration_shape = (1,) if body.inputs[0].shape == (1,) else ()
        done = 0
        for i in range(trips):
            # Checked per iteration: a condition known at load may stop the loop long before its maximum.
            if (i + 1) * size > MAX_UNROLLED_NODES:
                raise _Unlowerable(
                    UnsupportedOpError,
                    f"{where} runs more than {i} iterations of a {size}-node body (maximum trip count {trips}); "
                    f"onnxshap unrolls at most {MAX_UNROLLED_NODES} nodes (iterations x body nodes), since every "
                    "unrolled node is compiled on both sides of every pair. Re-export the model with a smaller maximum "
                    "trip count, or explain up to a tensor before the loop (outputs=...).",
                )
            bindings = {
                body.inputs[0].name: self._const(s, f"{name}/iteration_{i}", np.full(iteration_shape, i, np.int64)),
                body.inputs[1].name: cond_in,
            }
            bindings.update({b.name: c for b, c in zip(body.inputs[2:], carried)})
            iteration_guard = (*guard, *((p, True) for p, _ in pending))
            scope = ChainMap(bindings, mapping)  # type: ignore[arg-type]
            results = self.emit_graph(s, body, scope, iteration_guard, f"{name}/iter{i}/", label)
            cond_out, new, step = results[0], results[1 : 1 + n_carried], results[1 + n_carried :]
            done += 1
            if pending:
                if any(outputs[n_carried + k] for k in range(n_scan) if n_carried + k < len(outputs)):
                    raise _Unlowerable(
                        GraphError,
                        f"{where} stops on a condition computed from the data and also returns scan outputs, whose "
                        "length would then depend on the data; onnxshap compiles static shapes. Re-export the loop "
                        "with a fixed trip count, or return only the loop-carried values.",
                    )
                masked = []
                for j, (value, before) in enumerate(zip(new, carried)):
                    for _, selector in reversed(pending):
                        out = self._fresh(s, f"{name}/iter{i}/carried_{j}")
                        what = f"loop-carried value {j} of {label} after iteration {i} (kept while the loop runs)"
                        self._new(
                            s,
                            "Where",
                            [selector, value, before],
                            [out],
                            f"{name}/iter{i}/mask_{j}",
                            control=Control(label, guard, select=what),
                        )
                        value = out
                    masked.append(value)
                new = masked
            else:
                for k in range(n_scan):
                    scans[k].append(step[k])
            carried = list(new)
            cond_in = cond_out
            stop = self.value(s, cond_out)
            if stop is None:
                # Scalar where a rank-0 carried value would otherwise broadcast to [1]; skipped with the
                # iteration, which a mask then reads as "stopped" (see `select_choice`).
                ranks = [self._rank(s, c) for c in carried]
                selector = self._scalar_condition(s, cond_out, ranks, iteration_guard, label, f"{name}/iter{i}")
                pending.append((cond_out, selector))
            elif not _truth(stop):
                break
        for j, out in enumerate(outputs[:n_carried]):
            if out:
                self._identity(s, carried[j], out, f"{name}/output_{j}", guard, label)
        for k, out in enumerate(outputs[n_carried:]):
            if not out:
                continue
            if not scans[k]:
                raise _Unlowerable(
                    UnsupportedOpError,
                    f"{where} runs no iteration, so its scan output {k} is empty with a shape onnxshap cannot infer.",
                )
            self._stack(s, scans[k], out, 0, f"{name}/scan_{k}", guard, label)
        self.notes.append(
            f"{label}: unrolled {done} iteration(s) of a {size}-node body"
            + (", stopping on a condition computed from the data (carried values masked with Where)" if pending else "")
        )

    def _stack(
        self,
        s: _Scope,
        parts: Sequence[str],
        out: str,
        axis: int,
        name: str,
        guard: tuple[tuple[str, bool], ...],
        label: str,
    ) -> None:
        """out = the parts stacked along a new axis `axis` (Unsqueeze each, then Concat)."""
        control = Control(label, guard) if guard else None
        since = resolve_since_version("Unsqueeze", "", self.opset) or 13
        expanded = []
        for t, part in enumerate(parts):
            piece = self._fresh(s, f"{name}/{t}")
            if since >= 13:
                axes = self._const(s, f"{name}/axes", np.array([axis], np.int64))
                self._new(s, "Unsqueeze", [part, axes], [piece], f"{name}/unsqueeze_{t}", control=control)
            else:
                self._new(s, "Unsqueeze", [part], [piece], f"{name}/unsqueeze_{t}", {"axes": [axis]}, control=control)
            expanded.append(piece)
        self._new(s, "Concat", expanded, [out], f"{name}/concat", {"axis": axis}, control=control)

    # --- Scan ----------------------------------------------------------------------------------------

    def _lower_scan(
        self,
        s: _Scope,
        node: Node,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        guard: tuple[tuple[str, bool], ...],
        mapping: Mapping[str, str],
    ) -> None:
        label = f"Scan node {name!r}"
        where = self._where(node, name)
        body = node.subgraphs["body"]
        n_in = int(node.attrs["num_scan_inputs"])
        n_state = len(body.inputs) - n_in
        n_out = len(body.outputs) - n_state
        if n_state < 0 or n_out < 0 or len(inputs) != n_state + n_in:
            raise GraphError(
                f"{label} has {len(inputs)} inputs for a body of {len(body.inputs)} inputs; the model file is malformed."
            )
        states, sequences = list(inputs[:n_state]), list(inputs[n_state:])
        in_axes = list(node.attrs.get("scan_input_axes") or [0] * n_in)
        in_dirs = list(node.attrs.get("scan_input_directions") or [0] * n_in)
        out_axes = list(node.attrs.get("scan_output_axes") or [0] * n_out)
        out_dirs = list(node.attrs.get("scan_output_directions") or [0] * n_out)
        lengths = []
        for j, x in enumerate(sequences):
            shape = self._shape_of(s, x)
            axis = in_axes[j] + len(shape) if shape is not None and in_axes[j] < 0 else in_axes[j]
            length = shape[axis] if shape is not None and 0 <= axis < len(shape) else None
            if length is None:
                raise _Unlowerable(
                    GraphError,
                    f"{where}: the length of scan input {x!r} along axis {in_axes[j]} is not known before the data "
                    "arrives; onnxshap unrolls Scan over that axis and needs its length fixed. Re-export the model "
                    "with a fixed sequence length.",
                )
            in_axes[j] = axis
            lengths.append(int(length))
        if len(set(lengths)) > 1:
            raise GraphError(f"{label} scans inputs of different lengths {lengths}; the model file is malformed.")
        steps = lengths[0] if lengths else 0
        size = _subgraph_size(body)
        if steps * size > MAX_UNROLLED_NODES:
            raise _Unlowerable(
                UnsupportedOpError,
                f"{where} runs {steps} steps of a {size}-node body; onnxshap unrolls at most {MAX_UNROLLED_NODES} nodes "
                "(steps x body nodes), since every unrolled node is compiled on both sides of every pair. Re-export "
                "the model with a shorter sequence, or explain up to a tensor before the Scan (outputs=...).",
            )
        if steps == 0:
            raise _Unlowerable(
                UnsupportedOpError, f"{where} scans sequences of length 0; its outputs have no shape to compile."
            )
        per_output: list[list[str]] = [[] for _ in range(n_out)]
        for t in range(steps):
            bindings = dict(zip((b.name for b in body.inputs[:n_state]), states))
            for j, x in enumerate(sequences):
                index = self._const(s, f"{name}/index_{t}", np.array(t if in_dirs[j] == 0 else steps - 1 - t, np.int64))
                piece = self._fresh(s, f"{name}/step{t}/{body.inputs[n_state + j].name}")
                checks = ((x, in_axes[j], steps),) if t == 0 else ()
                control = Control(label, guard, checks=checks) if guard or checks else None
                self._new(
                    s, "Gather", [x, index], [piece], f"{name}/step{t}/slice_{j}", {"axis": in_axes[j]}, control=control
                )
                bindings[body.inputs[n_state + j].name] = piece
            scope = ChainMap(bindings, mapping)  # type: ignore[arg-type]
            results = self.emit_graph(s, body, scope, guard, f"{name}/step{t}/", label)
            states = results[:n_state]
            for k in range(n_out):
                per_output[k].append(results[n_state + k])
        for j, out in enumerate(outputs[:n_state]):
            if out:
                self._identity(s, states[j], out, f"{name}/output_{j}", guard, label)
        for k, out in enumerate(outputs[n_state:]):
            if out:
                parts = per_output[k] if out_dirs[k] == 0 else per_output[k][::-1]
                self._stack(s, parts, out, out_axes[k], f"{name}/scan_{k}", guard, label)
        self.notes.append(f"{label}: unrolled {steps} step(s) of a {size}-node body")


def lower_control_flow(graph: Graph) -> None:
    """Rewrite `graph` in place: every If, Loop and Scan in it becomes ordinary nodes (see the module
    docstring); one that cannot be lowered keeps its subgraphs and gets `Node.problem`."""
    _Lowerer(graph).run()
