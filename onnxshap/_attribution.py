"""The attribution pass: DeepSHAP over a background set, one jitted function per shape.

For B samples and K background rows, the sample-side forward runs on B rows and the reference-side
forward on K rows; only the multiplier pass covers the B x K pairs, chunked over the background so
memory stays bounded whatever K is. Each model evaluation is per sample (batch axis of size 1), so
the attribution of a sample never depends on the other samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._errors import GraphError, UnsupportedOpError
from onnxshap._graph import Node
from onnxshap._interpreter import is_static, node_function
from onnxshap._model import Model
from onnxshap._multipliers import INCOMPLETE_RULES, NodeContext, Rule, rule_for, rule_name

Array = Any

#: Bytes of multiplier work one background chunk may take (per sample), to bound memory.
DEFAULT_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class OutputSlot:
    """One explained scalar output: tensor name and flat index within one sample's tensor."""

    tensor: str
    index: int
    label: str


class AttributionPass:
    """Everything needed to explain `outputs` of `model` from `inputs` (tensor names).

    Attributes:
        explained: tensors attributions are computed for (graph inputs or intermediate tensors).
        held: graph inputs that are not explained: both sides use the sample's values.
        outputs: the explained output tensors; `slots` flattens them per sample.
        nodes: the nodes the multiplier pass visits, in topological order.
    """

    def __init__(
        self,
        model: Model,
        explained: Sequence[str],
        outputs: Sequence[str],
        *,
        rules: Mapping[str, str] | None = None,
        chunk_size: int | None = None,
        gradient_fallback: bool = False,
    ):
        self.model = model
        graph = model.graph
        self.explained = list(explained)
        self.outputs = list(outputs)
        self.rules = dict(rules or {})
        self.chunk_size = chunk_size
        # Inputs upstream of an explained tensor take the background's values on the reference side;
        # the others (attention masks, segment ids) are held at the sample's values on both sides.
        upstream = self._ancestors(self.explained)
        self.held = [i.name for i in graph.inputs if i.name not in upstream]
        self.varying = graph.descendants_of(self.explained)
        missing = [o for o in self.outputs if o not in self.varying]
        if missing:
            raise GraphError(
                f"Output(s) {missing} do not depend on the explained input(s) {self.explained}, so every attribution "
                "would be zero. Choose outputs downstream of the inputs (outputs=...) or other inputs (inputs=...)."
            )
        needed = self._ancestors(self.outputs)
        self.nodes: list[Node] = [
            n for n in graph.nodes
            if any(o in needed for o in n.outputs if o) and any(i in self.varying for i in n.inputs if i)
        ]
        self.node_rules: dict[int, Rule] = {}
        #: Labels of the nodes whose rule does not guarantee completeness (plain gradients).
        self.incomplete_nodes: list[str] = []
        for node in self.nodes:
            if node.subgraphs:
                raise UnsupportedOpError(f"{node.label} has subgraphs; attribution through control flow is not supported.")
            self.node_rules[node.index] = rule_for(node, self.rules, gradient_fallback)
            if rule_name(node, self.rules, gradient_fallback) in INCOMPLETE_RULES:
                self.incomplete_nodes.append(node.label)
        self.keep = set(self.explained) | set(self.outputs)
        for node in self.nodes:
            self.keep |= {t for t in (*node.inputs, *node.outputs) if t}
        self.trace_count = 0
        # Shape-only traces, keyed by the per-sample (name, shape, dtype) of the feeds: explain() needs
        # both on every call, and retracing the graph costs more than the attribution of a small model.
        self._shape_cache: dict[tuple[Any, ...], Any] = {}
        self._jitted = jax.jit(self._attribute, static_argnames=("n_chunks", "chunk"))

    def _ancestors(self, tensors: Sequence[str]) -> set[str]:
        graph = self.model.graph
        needed = set(tensors)
        for node in reversed(graph.nodes):
            if any(o in needed for o in node.outputs if o):
                needed |= {i for i in node.inputs if i}
        return needed

    def _check_vary_positions(self, node: Node, varying: Sequence[bool]) -> None:
        # Checked while tracing: a tensor downstream of the inputs may still be static (a shape).
        assert node.spec is not None
        for position, name in enumerate(node.inputs):
            if varying[position] and not node.spec.may_vary(position):
                raise UnsupportedOpError(
                    f"Input {position} ({name!r}) of {node.label} depends on the explained inputs, but the "
                    f"{node.spec.rule!r} rule of {node.op_type} ({node.spec.source}) cannot attribute through that "
                    "input, so the attributions would not sum to the prediction. Explain from a tensor after "
                    "this node (inputs=...) or hold that input fixed."
                )

    # --- the traced pieces -------------------------------------------------------------------------

    def _forward(self, weights: Mapping[str, Array], feeds: Mapping[str, Array], statics: dict[str, Any]) -> dict[str, Array]:
        """One sample (feeds without batch axis) -> the tensors the multiplier pass needs."""
        env = self.model.evaluate(weights, {k: v[None] for k, v in feeds.items()})
        kept: dict[str, Array] = {}
        for name, value in env.items():
            if is_static(value):
                statics[name] = value
            elif name in self.keep:
                kept[name] = value
        return kept

    def _backward(
        self,
        ex: Mapping[str, Array],
        er: Mapping[str, Array],
        statics: Mapping[str, Any],
        seeds: Mapping[str, Array],
        record: dict[str, tuple[Array, Array]] | None = None,
    ) -> dict[str, Array]:
        """Multipliers of the explained tensors for one (sample, reference) pair and one seed.

        With `record`, stores per node label (sum m_in * d_in, sum m_out * d_out): the two sides of
        the node's local completeness.
        """

        def value(env: Mapping[str, Array], name: str) -> Array | None:
            if not name:
                return None
            return statics[name] if name in statics else env[name]

        mult: dict[str, Array] = dict(seeds)
        for node in reversed(self.nodes):
            m_out = [mult.get(o) if o else None for o in node.outputs]
            if all(m is None for m in m_out):
                continue
            xin = [value(ex, i) for i in node.inputs]
            rin = [value(er, i) for i in node.inputs]
            xout = [value(ex, o) if o in ex or o in statics else None for o in node.outputs]
            rout = [value(er, o) if o in er or o in statics else None for o in node.outputs]
            assert node.spec is not None
            varying = [
                bool(i) and i in self.varying and not is_static(v) and p not in node.spec.type_only
                for p, (i, v) in enumerate(zip(node.inputs, xin))
            ]
            self._check_vary_positions(node, varying)
            ctx = NodeContext(node, node_function(node), xin, rin, xout, rout, varying)
            m_in = self.node_rules[node.index](ctx, m_out)
            if record is not None:
                inflow = sum(jnp.sum(m * _delta(x, r)) for m, x, r, v in zip(m_in, xin, rin, varying) if v and m is not None)
                outflow = sum(
                    jnp.sum(m * _delta(x, r)) for m, x, r in zip(m_out, xout, rout) if m is not None and x is not None
                )
                record[node.label] = (inflow, outflow)
            for position, (name, m) in enumerate(zip(node.inputs, m_in)):
                if m is not None and varying[position]:
                    mult[name] = mult[name] + m if name in mult else m
        return {t: mult[t] if t in mult else jnp.zeros_like(ex[t]) for t in self.explained}

    def _attribute(
        self,
        weights: Mapping[str, Array],
        x_feeds: Mapping[str, Array],
        r_feeds: Mapping[str, Array],
        r_weight: Array,
        selection: Array,
        *,
        n_chunks: int,
        chunk: int,
    ) -> tuple[dict[str, Array], Array, Array]:
        self.trace_count += 1
        statics: dict[str, Any] = {}
        held_feeds = {k: v for k, v in x_feeds.items() if k in self.held}
        env_x = jax.vmap(lambda f: self._forward(weights, f, statics))(x_feeds)
        if not self.held:
            env_r_all = jax.vmap(lambda f: self._forward(weights, f, statics))(r_feeds)
        slots_per_tensor = self._slot_sizes(env_x)

        def flat_outputs(env: Mapping[str, Array]) -> Array:
            return jnp.concatenate([jnp.reshape(env[o], (-1,)) for o in self.outputs])

        def per_sample(ex: Mapping[str, Array], held: Mapping[str, Array], sel: Array) -> tuple[dict[str, Array], Array]:
            # sel: (n_sel, n_total) one-hot rows choosing the explained scalar outputs.
            seeds = self._seeds(sel, slots_per_tensor, ex)

            def pair(er: Mapping[str, Array]) -> dict[str, Array]:
                m = jax.vmap(lambda s: self._backward(ex, er, statics, s))(seeds)
                return {t: m[t] * (ex[t] - er[t])[None] for t in self.explained}

            def chunk_sum(args: tuple[Mapping[str, Array], Array]) -> tuple[dict[str, Array], Array]:
                feeds_chunk, w = args
                if self.held:
                    feeds_chunk = {**feeds_chunk, **{k: jnp.broadcast_to(v, (chunk, *v.shape)) for k, v in held.items()}}
                    er_chunk = jax.vmap(lambda f: self._forward(weights, f, statics))(feeds_chunk)
                    base = jnp.sum(jax.vmap(flat_outputs)(er_chunk) * w[:, None], axis=0)
                else:
                    er_chunk = feeds_chunk
                    base = jnp.zeros(())
                phis = jax.vmap(pair)(er_chunk)
                return {t: jnp.tensordot(w, phis[t], axes=1) for t in self.explained}, base

            source = r_feeds if self.held else env_r_all
            chunks = jax.tree_util.tree_map(lambda v: v.reshape(n_chunks, chunk, *v.shape[1:]), source)
            weights_c = r_weight.reshape(n_chunks, chunk)
            if n_chunks == 1:
                total, base = chunk_sum((jax.tree_util.tree_map(lambda v: v[0], chunks), weights_c[0]))
            else:
                parts, bases = lax.map(chunk_sum, (chunks, weights_c))
                total = {t: jnp.sum(v, axis=0) for t, v in parts.items()}
                base = jnp.sum(bases, axis=0)
            return total, base

        phi, held_base = jax.vmap(per_sample)(env_x, held_feeds, selection)
        fx = jax.vmap(flat_outputs)(env_x)
        if self.held:
            base = held_base
        else:
            base = jnp.tensordot(r_weight, jax.vmap(flat_outputs)(env_r_all), axes=1)[None].repeat(fx.shape[0], 0)
        return phi, fx, base

    def _slot_sizes(self, env_x: Mapping[str, Array]) -> list[tuple[str, tuple[int, ...]]]:
        return [(o, tuple(env_x[o].shape[1:])) for o in self.outputs]

    def _seeds(self, sel: Array, sizes: list[tuple[str, tuple[int, ...]]], ex: Mapping[str, Array]) -> dict[str, Array]:
        seeds: dict[str, Array] = {}
        offset = 0
        for name, shape in sizes:
            size = int(np.prod(shape))
            dtype = ex[name].dtype
            seeds[name] = sel[:, offset:offset + size].reshape(sel.shape[0], *shape).astype(dtype)
            offset += size
        return seeds

    # --- host side --------------------------------------------------------------------------------

    def output_slots(self, sample_feeds: Mapping[str, np.ndarray]) -> list[OutputSlot]:
        """The flattened explained outputs of one sample, with readable labels."""
        shapes = self.output_shapes(sample_feeds)
        slots: list[OutputSlot] = []
        for name, shape in shapes.items():
            size = int(np.prod(shape[1:]))
            for index in range(size):
                label = name if size == 1 else f"{name}[{index}]"
                slots.append(OutputSlot(name, index, label))
        return slots

    def _cached(self, kind: str, sample_feeds: Mapping[str, np.ndarray], compute: Callable[[], Any]) -> Any:
        key = (kind, *sorted((k, v.shape[1:], str(v.dtype)) for k, v in sample_feeds.items()))
        if key not in self._shape_cache:
            self._shape_cache[key] = compute()
        return self._shape_cache[key]

    def output_shapes(self, sample_feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        return self._cached("outputs", sample_feeds, lambda: self._output_shapes(sample_feeds))  # type: ignore[no-any-return]

    def _output_shapes(self, sample_feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        feeds = {k: jax.ShapeDtypeStruct((1, *v.shape[1:]), v.dtype) for k, v in sample_feeds.items()}

        def shapes(f: Mapping[str, Array]) -> dict[str, Array]:
            env = self.model.evaluate(self.model._weights, f)
            return {o: env[o] for o in self.outputs}

        with jax.enable_x64(True):
            out = jax.eval_shape(shapes, feeds)
        return {k: tuple(v.shape) for k, v in out.items()}

    def chunking(self, n_background: int, n_selected: int, sample_feeds: Mapping[str, np.ndarray]) -> tuple[int, int]:
        """(n_chunks, chunk) for the background axis; memory per chunk bounded by DEFAULT_CHUNK_BYTES."""
        if self.chunk_size is not None:
            chunk = max(1, min(self.chunk_size, n_background))
        else:
            per_pair = self._pair_bytes(sample_feeds) * max(n_selected, 1) * 4
            chunk = max(1, min(n_background, DEFAULT_CHUNK_BYTES // max(per_pair, 1)))
        return math.ceil(n_background / chunk), chunk

    def _pair_bytes(self, sample_feeds: Mapping[str, np.ndarray]) -> int:
        return self._cached("pair_bytes", sample_feeds, lambda: self._compute_pair_bytes(sample_feeds))  # type: ignore[no-any-return]

    def _compute_pair_bytes(self, sample_feeds: Mapping[str, np.ndarray]) -> int:
        feeds = {k: jax.ShapeDtypeStruct((1, *v.shape[1:]), v.dtype) for k, v in sample_feeds.items()}

        def env(f: Mapping[str, Array]) -> dict[str, Array]:
            e = self.model.evaluate(self.model._weights, f)
            return {k: v for k, v in e.items() if k in self.keep and not is_static(v)}

        with jax.enable_x64(True):
            shapes = jax.eval_shape(env, feeds)
        return int(sum(np.prod(s.shape) * s.dtype.itemsize for s in shapes.values()))

    def diagnose(
        self, x_feeds: Mapping[str, np.ndarray], r_feeds: Mapping[str, np.ndarray], slot: int, n_total: int
    ) -> list[tuple[str, float, float]]:
        """Per-node local completeness for one sample, one background row and one output slot.

        Returns (node label, sum m_in * d_in, sum m_out * d_out) for every visited node.
        """
        record: dict[str, tuple[Array, Array]] = {}
        with jax.enable_x64(True):
            statics: dict[str, Any] = {}
            ex = self._forward(self.model._weights, {k: jnp.asarray(v) for k, v in x_feeds.items()}, statics)
            held = {k: x_feeds[k] for k in self.held}
            er = self._forward(self.model._weights, {**{k: jnp.asarray(v) for k, v in r_feeds.items()}, **held}, statics)
            sel = np.zeros((1, n_total), _float_dtype(x_feeds))
            sel[0, slot] = 1
            seeds = {k: v[0] for k, v in self._seeds(jnp.asarray(sel), self._slot_sizes({k: v[None] for k, v in ex.items()}), ex).items()}
            self._backward(ex, er, statics, seeds, record)
        return [(label, float(a), float(b)) for label, (a, b) in record.items()]

    def run(
        self,
        x_feeds: Mapping[str, np.ndarray],
        r_feeds: Mapping[str, np.ndarray],
        selection: np.ndarray,
        devices: Sequence[jax.Device] | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """phi per explained tensor (B, n_sel, *shape), f(x) (B, n_total), base (B, n_total).

        With several `devices`, the sample axis is sharded over them (padded to a multiple of their
        number); every sample's computation is independent, so results match one device's.
        """
        n_background = next(iter(r_feeds.values())).shape[0]
        n_chunks, chunk = self.chunking(n_background, selection.shape[1], x_feeds)
        padded = n_chunks * chunk
        if padded != n_background:
            r_feeds = {k: np.concatenate([v, np.repeat(v[:1], padded - n_background, 0)]) for k, v in r_feeds.items()}
        dtype = _float_dtype(x_feeds)
        weight = np.zeros(padded, dtype)
        weight[:n_background] = 1.0 / n_background
        n_samples = selection.shape[0]
        x_args: Any = (dict(x_feeds), selection.astype(dtype))
        if devices is not None and len(devices) > 1:
            extra = -n_samples % len(devices)
            if extra:
                x_args = jax.tree_util.tree_map(lambda v: np.concatenate([v, np.repeat(v[-1:], extra, 0)]), x_args)
            mesh = jax.sharding.Mesh(np.asarray(devices), ("samples",))
            x_args = jax.device_put(x_args, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("samples")))
        with jax.enable_x64(True):
            phi, fx, base = self._jitted(
                self.model._weights, x_args[0], dict(r_feeds), weight, x_args[1], n_chunks=n_chunks, chunk=chunk,
            )
        trim = slice(0, n_samples)
        return {k: np.asarray(v)[trim] for k, v in phi.items()}, np.asarray(fx)[trim], np.asarray(base)[trim]


def _delta(x: Array, r: Array) -> Array:
    """x - r, and 0 where x == r (equal infinities, as in masked attention scores, give no NaN)."""
    return jnp.where(x == r, 0, x - r)


def _float_dtype(feeds: Mapping[str, np.ndarray]) -> np.dtype[Any]:
    for v in feeds.values():
        if v.dtype.kind == "f":
            return v.dtype
    return np.dtype(np.float32)



