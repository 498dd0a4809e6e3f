"""Token-id inputs: explained at their embedding lookup.

Integer token ids carry no differences to attribute, so an integer graph input that feeds an
embedding lookup (a Gather along axis 0 of a constant float table) is explained at the Gather's
output instead: the sample side is the sample's embeddings, the reference side the background's
(or a baseline token's). Per-token values are the sum over the embedding axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxshap._errors import InputError
from onnxshap._model import Model


@dataclass(frozen=True)
class Embedding:
    """One embedding lookup fed by an integer graph input.

    Attributes:
        input: the integer graph input (token ids), shape (n, *ids_shape).
        tensor: the Gather output explained in its place, shape (n, *ids_shape, *table.shape[1:]).
        vocab: rows of the embedding table; valid ids are in [-vocab, vocab).
        emb_ndim: trailing axes of `tensor` that are summed into per-token values.
    """

    input: str
    tensor: str
    vocab: int
    emb_ndim: int

    def per_token(self, values: np.ndarray) -> np.ndarray:
        """(n, *ids_shape, *emb, k) -> (n, *ids_shape, k)."""
        axes = tuple(range(values.ndim - 1 - self.emb_ndim, values.ndim - 1))
        return values.sum(axis=axes)


def find_embeddings(model: Model) -> dict[str, list[Embedding]]:
    """Per integer graph input, the embedding lookups its ids reach (through casts, offsets, Where...)."""
    graph = model.graph
    constants = model.constant_shapes()
    int_inputs = [i.name for i in graph.inputs if i.dtype is not None and i.dtype.kind in "iu"]
    float_inputs = [i.name for i in graph.inputs if i.dtype is not None and i.dtype.kind == "f"]
    float_reach = graph.descendants_of(float_inputs) if float_inputs else set()
    found: dict[str, list[Embedding]] = {}
    for name in int_inputs:
        reach = graph.descendants_of([name])
        for node in graph.nodes:
            if node.op_type != "Gather" or len(node.inputs) < 2 or int(node.attrs.get("axis", 0)) != 0:
                continue
            table, ids = node.inputs[0], node.inputs[1]
            if ids not in reach or ids in float_reach or table not in constants:
                continue
            shape, dtype = constants[table]
            if dtype.kind != "f" or len(shape) < 2:
                continue
            found.setdefault(name, []).append(Embedding(name, node.outputs[0], int(shape[0]), len(shape) - 1))
    return found


def default_token_input(found: dict[str, list[Embedding]]) -> list[Embedding]:
    """The token ids among several integer inputs: the one whose table has the most rows (the word
    vocabulary, not segment or position tables). Its lookups are explained; other integer inputs
    (attention mask, segment ids) are held at the sample's values."""
    if not found:
        return []
    name = max(found, key=lambda k: max(e.vocab for e in found[k]))
    return found[name]


def resolve_token_inputs(names: Sequence[str], found: dict[str, list[Embedding]], model: Model) -> list[Embedding]:
    """Embeddings for integer graph inputs named in `inputs=`; a clear error for one without a lookup."""
    by_input = {i.name: i for i in model.graph.inputs}
    result: list[Embedding] = []
    for name in names:
        info = by_input.get(name)
        if info is None or info.dtype is None or info.dtype.kind not in "iu":
            continue
        if name not in found:
            raise InputError(
                f"Input {name!r} holds integers ({info.describe()}), which cannot carry attributions, and it feeds no "
                "embedding lookup (a Gather along axis 0 of a constant float table) that onnxshap could explain "
                "instead. Name a float tensor computed from it with inputs=..., or leave it out to hold it at "
                "the sample's values."
            )
        result.extend(found[name])
    return result


def check_ids(feeds: dict[str, np.ndarray], embeddings: Sequence[Embedding], what: str) -> None:
    """Token ids outside the table would be clamped silently by XLA: refuse them, naming the rows."""
    for emb in embeddings:
        ids = feeds.get(emb.input)
        if ids is None:
            continue
        bad = (ids >= emb.vocab) | (ids < -emb.vocab)
        if np.any(bad):
            rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1)).tolist()
            raise InputError(
                f"The {what} for {emb.input!r} holds token ids outside the embedding table of {emb.vocab} rows "
                f"(row(s) {rows[:10]}; e.g. id {int(ids[bad].flat[0])}). Map unknown tokens to the model's "
                "unknown-token id before explaining."
            )
