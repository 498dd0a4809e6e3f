"""Index inputs: token ids, category codes and bytes, explained where they become floats.

Ids carry no differences to attribute, so a graph input holding ids is explained at the first float
tensor computed from it, its *lookup*:

- an embedding lookup (a Gather along axis 0 of a constant float table): explained at the Gather's
  output; per-position values are the sums over the embedding axes;
- a one-hot encoding (the OneHot op, or Equal against a constant range, e.g.
  ``x.unsqueeze(-1) == torch.arange(257)``), followed by Casts: explained at the first float tensor
  (the one-hot channels); per-position values are the sums over the channel axis.

The sample side is the sample's lookup, the reference side the background's (or a baseline id's).
Id inputs are integer graph inputs, and float inputs used only as ids: every consumer casts them to
an integer type (``x.long()``) or reads them as OneHot indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx

from onnxshap._errors import InputError
from onnxshap._graph import Graph, Node
from onnxshap._model import Model

LookupKind = Literal["embedding", "one_hot"]

#: Ops that keep the flat order of the ids (elementwise with constants, casts, reshapes): a one-hot
#: encoding of their output still has one id position per flat position of the input.
_ORDER_KEEPING = frozenset(
    {
        "Cast",
        "CastLike",
        "Identity",
        "Unsqueeze",
        "Squeeze",
        "Reshape",
        "Flatten",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Mod",
        "Neg",
        "Abs",
        "Sign",
        "Floor",
        "Ceil",
        "Round",
        "Clip",
        "Min",
        "Max",
        "Where",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "Not",
    }
)


@dataclass(frozen=True)
class Lookup:
    """Where one id input becomes floats: an embedding lookup or a one-hot encoding.

    Attributes:
        input: the id graph input, shape (n, *ids_shape); integers, or floats holding integers.
        tensor: the float tensor explained in its place: (n, *ids_shape, *table.shape[1:]) for an
            embedding, the one-hot channels (n, *ids_shape with `depth` channels at `channel_axis`)
            for a one-hot encoding.
        vocab: rows of the embedding table (valid ids in [-vocab, vocab)), or channels of the one-hot.
        emb_ndim: embedding: trailing axes of `tensor` summed into per-position values; one-hot: 1.
        kind: "embedding" or "one_hot".
        channel_axis: one-hot: the channel axis of one example of `tensor` (negative: from the end).
        float_ids: the input is a float tensor holding integer ids.
        via: the node that looks the ids up, for messages ("Gather node '/emb/Gather'").
    """

    input: str
    tensor: str
    vocab: int
    emb_ndim: int
    kind: LookupKind = "embedding"
    channel_axis: int | None = None
    float_ids: bool = False
    via: str = ""

    def per_token(self, values: np.ndarray) -> np.ndarray:
        """(n, *example_of_tensor, k) -> (n, *positions, k): sums over the embedding or channel axes."""
        if self.kind == "one_hot":
            assert self.channel_axis is not None
            axis = self.channel_axis + 1 if self.channel_axis >= 0 else values.ndim - 1 + self.channel_axis
            return values.sum(axis=axis)
        axes = tuple(range(values.ndim - 1 - self.emb_ndim, values.ndim - 1))
        return values.sum(axis=axes)

    def per_position(self, values: np.ndarray, ids_shape: Sequence[int]) -> np.ndarray:
        """(n, *example_of_tensor, k) -> (n, *ids_shape, k), ids_shape being one example of `input`.

        A one-hot of reshaped ids (an Unsqueeze, a Flatten) is read back in the ids' flat order.
        """
        summed = self.per_token(values)
        n, k = summed.shape[0], summed.shape[-1]
        if summed.shape[1:-1] == tuple(ids_shape):
            return summed
        if self.kind == "one_hot" and int(np.prod(summed.shape[1:-1])) == int(np.prod(ids_shape)):
            return summed.reshape(n, *ids_shape, k)
        if self.kind == "embedding":
            return summed  # ids reshaped before the lookup: values per looked-up position
        raise InputError(
            f"The one-hot encoding {self.tensor!r} of input {self.input!r} has {int(np.prod(summed.shape[1:-1]))} "
            f"positions per example, but the input holds {int(np.prod(ids_shape))} ids. Name {self.tensor!r} "
            "with inputs=... to get its values per channel."
        )

    def describe(self) -> str:
        """One phrase for `onnxshap inspect`."""
        ids = "integer-valued floats" if self.float_ids else "integer ids"
        if self.kind == "embedding":
            return f"{self.input!r} ({ids}) -> embedding lookup {self.tensor!r} ({self.vocab} rows, {self.via})"
        return f"{self.input!r} ({ids}) -> one-hot {self.tensor!r} ({self.vocab} channels, {self.via})"


def _np_dtype(onnx_type: int) -> np.dtype[Any] | None:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))
    except (KeyError, TypeError, ValueError):
        return None


def _kind(dtype: np.dtype[Any] | None) -> str:
    # np.dtype is falsy (it has no fields): compare with None, never `dtype or ...`.
    return "" if dtype is None else dtype.kind


def _consumers(graph: Graph) -> dict[str, list[tuple[Node, int]]]:
    users: dict[str, list[tuple[Node, int]]] = {}
    for node in graph.nodes:
        for position, name in enumerate(node.inputs):
            if name:
                users.setdefault(name, []).append((node, position))
    return users


def float_id_inputs(graph: Graph) -> list[str]:
    """Float graph inputs used only as ids: every consumer casts them to integers or reads them as
    OneHot indices (``ids.long()`` in torch), and they are not graph outputs themselves."""
    users = _consumers(graph)
    outputs = {o.name for o in graph.outputs}
    found = []
    for info in graph.inputs:
        if info.dtype is None or info.dtype.kind != "f" or info.name in outputs or not users.get(info.name):
            continue
        if any(n.subgraphs for n, _ in users[info.name]):
            continue
        if all(
            (n.op_type == "Cast" and _kind(_np_dtype(int(n.attrs.get("to", 0)))) in ("i", "u"))
            or (n.op_type == "OneHot" and p == 0)
            for n, p in users[info.name]
        ):
            found.append(info.name)
    return found


def _first_floats(
    tensor: str, dtype: np.dtype[Any] | None, users: Mapping[str, list[tuple[Node, int]]]
) -> list[str] | None:
    """The float tensors a one-hot's bool/int output is cast to (through more Casts); None when the
    encoding is read by anything but Casts (then it is not a lookup the pass can explain at)."""
    if _kind(dtype) == "f":
        return [tensor]
    readers = users.get(tensor, [])
    if not readers:
        return None
    found: list[str] = []
    for node, _ in readers:
        if node.op_type != "Cast" or not node.outputs or not node.outputs[0]:
            return None
        more = _first_floats(node.outputs[0], _np_dtype(int(node.attrs.get("to", 0))), users)
        if more is None:
            return None
        found += more
    return found


def _range_axis(const_shape: Sequence[int], ids_shape: Sequence[Any] | None) -> tuple[int, int] | None:
    """(channel axis counted from the end, depth) when `const_shape` holds channels along exactly one
    axis and the ids have size 1 there (``ids[..., None] == arange(depth)``); else None."""
    axes = [a for a, d in enumerate(const_shape) if d != 1]
    if len(axes) != 1 or const_shape[axes[0]] < 2 or ids_shape is None:
        return None
    from_end = axes[0] - len(const_shape)
    if -from_end <= len(ids_shape) and ids_shape[from_end] != 1:
        return None  # an elementwise comparison, not an encoding
    if len(ids_shape) < len(const_shape):
        return None  # the channel axis would lead the ids: not a layout exporters write
    return from_end, int(const_shape[axes[0]])


def find_lookups(graph: Graph, constants: Mapping[str, Any]) -> dict[str, list[Lookup]]:
    """Per id graph input, the lookups its ids reach (through casts, offsets, Where, reshapes...).

    `constants`: every tensor known before the data arrives (arrays with .shape and .dtype).
    """
    users = _consumers(graph)
    float_ids = float_id_inputs(graph)
    float_inputs = [
        i.name for i in graph.inputs if i.dtype is not None and i.dtype.kind == "f" and i.name not in float_ids
    ]
    float_reach = graph.descendants_of(float_inputs) if float_inputs else set()
    id_inputs = [i.name for i in graph.inputs if i.dtype is not None and i.dtype.kind in "iu"] + float_ids

    def constant(name: str) -> Any:
        return constants.get(name) if name else None

    found: dict[str, list[Lookup]] = {}
    for name in id_inputs:
        is_float = name in float_ids
        region = {name}
        in_order = {name}  # region tensors with the ids' flat order
        for node in graph.nodes:
            reads = {i for i in node.inputs if i}
            for sub in node.subgraphs.values():
                reads |= sub.free_tensors()
            if not reads & region:
                continue
            lookups = _lookups_at(node, region, in_order, float_reach, constant, users, graph)
            if lookups:
                via = f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node #{node.index}"
                found.setdefault(name, []).extend(
                    Lookup(name, t, vocab, ndim, kind, axis, is_float, via) for t, vocab, ndim, kind, axis in lookups
                )
                continue  # what the lookup computes is floats: the ids stop there
            outputs = {o for o in node.outputs if o}
            region |= outputs
            if (
                node.op_type in _ORDER_KEEPING
                and not node.subgraphs
                and all((i in in_order) if i in region else (not i or constant(i) is not None) for i in node.inputs)
            ):
                in_order |= outputs
    return found


def _lookups_at(
    node: Node,
    region: set[str],
    in_order: set[str],
    float_reach: set[str],
    constant: Any,
    users: Mapping[str, list[tuple[Node, int]]],
    graph: Graph,
) -> list[tuple[str, int, int, LookupKind, int | None]]:
    """(tensor, vocab, emb_ndim, kind, channel axis) of each lookup `node` makes of region ids."""
    op = node.op_type
    if op == "Gather" and len(node.inputs) >= 2 and int(node.attrs.get("axis", 0)) == 0:
        table, ids = node.inputs[0], node.inputs[1]
        value = constant(table)
        if ids in region and ids not in float_reach and table not in region and value is not None:
            shape = tuple(np.shape(value))
            if np.dtype(value.dtype).kind == "f" and len(shape) >= 2:
                return [(node.outputs[0], int(shape[0]), len(shape) - 1, "embedding", None)]
        return []
    if op == "OneHot" and len(node.inputs) >= 3:
        ids, depth, on_off = node.inputs[:3]
        if ids not in in_order or ids in float_reach or constant(depth) is None or constant(on_off) is None:
            return []
        n = int(np.asarray(constant(depth)).reshape(-1)[0])
        floats = _first_floats(node.outputs[0], np.dtype(constant(on_off).dtype), users)
        axis = int(node.attrs.get("axis", -1))
        return [(t, n, 1, "one_hot", axis) for t in floats or []]
    if op == "Equal" and len(node.inputs) == 2:
        a, b = node.inputs
        ids, const = (a, b) if a in region else (b, a)
        value = constant(const)
        if ids not in in_order or ids in float_reach or const in region or value is None:
            return []
        info = graph.value_info.get(ids)
        found = _range_axis(tuple(np.shape(value)), info.shape if info is not None else None)
        if found is None:
            return []
        floats = _first_floats(node.outputs[0], np.dtype(bool), users)
        return [(t, found[1], 1, "one_hot", found[0]) for t in floats or []]
    return []


def model_constants(model: Model) -> dict[str, Any]:
    """Every tensor `model` knows before the data arrives (initializers and folded constants)."""
    return {**model._embedded, **model._weights}


def find_embeddings(model: Model) -> dict[str, list[Lookup]]:
    """Per id graph input, its lookups (embeddings and one-hot encodings); see `find_lookups`."""
    return find_lookups(model.graph, model_constants(model))


def default_token_input(found: dict[str, list[Lookup]]) -> list[Lookup]:
    """The token ids among several id inputs: the one whose table has the most rows (the word
    vocabulary, not segment or position tables). Its lookups are explained; other id inputs
    (attention mask, segment ids) are held at the sample's values."""
    if not found:
        return []
    name = max(found, key=lambda k: max(e.vocab for e in found[k]))
    return found[name]


def default_explained(
    graph: Graph, found: Mapping[str, list[Lookup]], fixed: Sequence[str] = ()
) -> tuple[list[str], list[Lookup]]:
    """What an Explainer without `inputs=` explains: (the float graph inputs, the token input's lookups).

    Float inputs given as `fixed` or used only as ids (`ids.long()`) are left out: like integer ids,
    the latter are explained at their lookup (`default_token_input`), or held. Graph inputs upstream
    of neither are held at the sample's values.
    """
    float_ids = set(float_id_inputs(graph))
    floats = [
        i.name
        for i in graph.inputs
        if i.dtype is not None and i.dtype.kind == "f" and i.name not in fixed and i.name not in float_ids
    ]
    return floats, default_token_input(dict(found))


def resolve_token_inputs(names: Sequence[str], found: dict[str, list[Lookup]], model: Model) -> list[Lookup]:
    """Lookups for id graph inputs named in `inputs=`; a clear error for an integer one without."""
    by_input = {i.name: i for i in model.graph.inputs}
    result: list[Lookup] = []
    for name in names:
        info = by_input.get(name)
        if name in found:
            result.extend(found[name])
            continue
        if info is None or info.dtype is None or info.dtype.kind not in "iu":
            continue
        raise InputError(
            f"Input {name!r} holds integers ({info.describe()}), which cannot carry attributions, and it feeds no "
            "embedding lookup (a Gather along axis 0 of a constant float table) or one-hot encoding (OneHot, or "
            "Equal against a constant range, then Cast) that onnxshap could explain instead. Name a float tensor "
            "computed from it with inputs=..., or leave it out to hold it at the sample's values."
        )
    return result


def check_ids(feeds: dict[str, np.ndarray], embeddings: Sequence[Lookup], what: str) -> None:
    """Refuse ids the lookups would misread: ids outside an embedding table (XLA would clamp them
    silently) and float ids that are not integers (the graph's Cast would truncate them)."""
    for emb in embeddings:
        ids = feeds.get(emb.input)
        if ids is None:
            continue
        if ids.dtype.kind == "f":
            bad = ~(np.isfinite(ids) & (ids == np.trunc(ids)))
            if np.any(bad):
                rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1)).tolist()
                raise InputError(
                    f"The {what} for {emb.input!r} holds values that are not integers (row(s) {rows[:10]}; e.g. "
                    f"{ids[bad].flat[0]!r}), but the model uses this float input only as ids ({emb.describe()}). "
                    "Pass whole-numbered ids, e.g. np.round(x)."
                )
        if emb.kind != "embedding":
            continue  # a one-hot encodes an id it has no channel for as all-off, as onnxruntime does
        bad = (ids >= emb.vocab) | (ids < -emb.vocab)
        if np.any(bad):
            rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1)).tolist()
            example = ids[bad].flat[0]
            raise InputError(
                f"The {what} for {emb.input!r} holds token ids outside the embedding table of {emb.vocab} rows "
                f"(row(s) {rows[:10]}; e.g. id {int(example)}). Map unknown tokens to the model's "
                "unknown-token id before explaining."
            )
