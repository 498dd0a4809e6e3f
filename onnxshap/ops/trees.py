"""Tree ensembles (ai.onnx.ml TreeEnsembleRegressor, TreeEnsembleClassifier v1/v3, TreeEnsemble v5):
forward passes that match onnxruntime's CPU kernels, and pair forwards whose rule is exact TreeSHAP.

Every ensemble is first normalised on the host (the attributes are constants) into padded arrays
(`_Forest`): per tree, slots for its nodes and leaves (the root in slot 0, leaves point to
themselves), each slot's feature, threshold, mode, missing-value direction and children, the leaves'
weights per target, and every root-to-leaf path (node slots and directions) for the rule. At run time
all trees advance together one level per step of a `lax.fori_loop`; nothing loops over trees in Python.

Rule (docs/rules/tree.md): for one (sample, reference) pair, the exact Shapley value of
v(S) = tree(z), z_i = x_i for i in S else r_i, computed per leaf from which side satisfies each
feature's conditions on the leaf's path (`_tree_shap`), summed over trees; then the post transform
through the existing composites (LOGISTIC, PROBIT by rescale, SOFTMAX as the Softmax rule). Each
side's per-leaf verdicts are built once per sample or reference (`_side`); per pair only a few bit
operations per leaf and two matrix products over the leaves remain.

The selectable rule "tree_exact" (`tree_exact_rule`) instead enumerates, per pair, the coalitions of
the features the ensemble tests and gives the exact Shapley value of the op's outputs after the post
transform (`_exact`). Each op's base values, post transform and label are one `Head` function, shared
by the forward, the default rule and the exact rule. NaN inputs route by the missing-value direction
on both sides; their step is `onnxshap._multipliers.pair_difference`'s.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._composite import Pair, attributed, composite_rule, linear, max_over, rescale, x_side
from onnxshap._errors import UnsupportedOpError
from onnxshap._multipliers import NodeContext, _max_game_weights
from onnxshap.ops._common import unsupported_attribute
from onnxshap.ops.composites import _post_transform
from onnxshap.ops.ml import _POST_TRANSFORMS, _logistic, _rows

Array = Any
sg = lax.stop_gradient

#: Node modes as small codes (TreeEnsemble v5's numbering); LEAF marks leaf slots.
_MODES = {
    "BRANCH_LEQ": 0,
    "BRANCH_LT": 1,
    "BRANCH_GTE": 2,
    "BRANCH_GT": 3,
    "BRANCH_EQ": 4,
    "BRANCH_NEQ": 5,
    "BRANCH_MEMBER": 6,
}
_LEAF = 7
_AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")  # v5's aggregate_function codes 0..3


@dataclass(frozen=True)
class _Forest:
    """An ensemble as padded arrays: T trees, M slots per tree, K targets, S set members, P paths of
    at most D steps per tree. Padding slots are leaves of weight 0 that nothing reaches; padding path
    steps are invalid (`path_valid` False) and padding paths end at such a leaf."""

    feature: np.ndarray  # [T, M] int32 (0 at leaves)
    threshold: np.ndarray  # [T, M] thresholds' dtype
    mode: np.ndarray  # [T, M] int32 code (_MODES, _LEAF)
    tracks_true: np.ndarray  # [T, M] bool: NaN goes the true way
    true_child: np.ndarray  # [T, M] int32 slot
    false_child: np.ndarray  # [T, M] int32 slot
    members: np.ndarray  # [T, M, S] thresholds' dtype, NaN-padded (BRANCH_MEMBER sets)
    weights: np.ndarray  # [T, M, K] float64: a leaf's weight per target (several entries add up)
    scored: np.ndarray  # [T, M, K] bool: the leaf has a weight entry for the target
    depth: int  # steps from a root to its deepest leaf
    path_leaf: np.ndarray  # [T, P] int32 slot where the path ends
    path_node: np.ndarray  # [T, P, D] int32 node slots along the path
    path_dir: np.ndarray  # [T, P, D] bool: the path takes the true branch
    path_valid: np.ndarray  # [T, P, D] bool
    path_feature: np.ndarray  # [T, P, D] int32
    same: np.ndarray  # [T, P, D, D] bool: both steps valid and on the same feature
    first: np.ndarray  # [T, P, D] bool: the step is its feature's first on the path

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.weights.shape[2])


@dataclass
class _Tree:
    """One tree while it is being built: slot lists (slot 0 is the root)."""

    feature: list[int]
    threshold: list[float]
    mode: list[int]
    tracks: list[bool]
    true_child: list[int]
    false_child: list[int]
    members: list[list[float]]
    leaf_entries: list[list[tuple[int, float]]]  # per slot: (target, weight)


def _pack(trees: list[_Tree], n_targets: int, threshold_dtype: Any, op: str) -> _Forest:
    """Pad the trees into a `_Forest`, enumerate their root-to-leaf paths, check depth and cycles."""
    if not trees:
        raise UnsupportedOpError(f"{op} has no trees.")
    n_slots = max(len(t.feature) for t in trees)
    n_members = max([1] + [len(m) for t in trees for m in t.members])
    T = len(trees)
    feature = np.zeros((T, n_slots), np.int32)
    threshold = np.zeros((T, n_slots), threshold_dtype)
    mode = np.full((T, n_slots), _LEAF, np.int32)
    tracks = np.zeros((T, n_slots), bool)
    child = np.tile(np.arange(n_slots, dtype=np.int32), (T, 1))
    true_child, false_child = child.copy(), child.copy()
    members = np.full((T, n_slots, n_members), np.nan, threshold_dtype)
    weights = np.zeros((T, n_slots, n_targets), np.float64)
    scored = np.zeros((T, n_slots, n_targets), bool)
    paths: list[list[tuple[int, list[tuple[int, bool]]]]] = []
    for t, tree in enumerate(trees):
        m = len(tree.feature)
        feature[t, :m] = tree.feature
        threshold[t, :m] = tree.threshold
        mode[t, :m] = tree.mode
        tracks[t, :m] = tree.tracks
        true_child[t, :m] = tree.true_child
        false_child[t, :m] = tree.false_child
        for s, values in enumerate(tree.members):
            members[t, s, : len(values)] = values
        for s, entries in enumerate(tree.leaf_entries):
            for k, w in entries:
                if not 0 <= k < n_targets:
                    raise UnsupportedOpError(
                        f"{op} has a leaf weight for target/class {k}, outside 0..{n_targets - 1}."
                    )
                weights[t, s, k] += w
                scored[t, s, k] = True
        # Root-to-leaf paths, depth first; a path longer than the slot count means a cycle.
        found: list[tuple[int, list[tuple[int, bool]]]] = []
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
        while stack:
            s, steps = stack.pop()
            if len(steps) > m:
                raise UnsupportedOpError(f"{op}: tree {t} has a cycle (a path revisits a node).")
            if tree.mode[s] == _LEAF:
                found.append((s, steps))
                continue
            stack.append((tree.false_child[s], [*steps, (s, False)]))
            stack.append((tree.true_child[s], [*steps, (s, True)]))
        paths.append(found)
    depth = max(len(steps) for found in paths for _, steps in found)
    n_paths = max(len(found) for found in paths)
    D = max(depth, 1)
    # A padding path ends at a padding slot if there is one, else at a slot of weight 0 added below.
    path_leaf = np.zeros((T, n_paths), np.int32)
    path_node = np.zeros((T, n_paths, D), np.int32)
    path_dir = np.zeros((T, n_paths, D), bool)
    path_valid = np.zeros((T, n_paths, D), bool)
    pad_paths = any(len(found) < n_paths for found in paths)
    if pad_paths:
        # One extra empty slot per tree: a leaf of weight 0 for padding paths to end at.
        grow = lambda a, v: np.concatenate([a, np.full((T, 1, *a.shape[2:]), v, a.dtype)], axis=1)
        feature, threshold, mode, tracks = grow(feature, 0), grow(threshold, 0), grow(mode, _LEAF), grow(tracks, False)
        true_child = np.concatenate([true_child, np.full((T, 1), n_slots, np.int32)], axis=1)
        false_child = np.concatenate([false_child, np.full((T, 1), n_slots, np.int32)], axis=1)
        members, weights, scored = grow(members, np.nan), grow(weights, 0), grow(scored, False)
        path_leaf[:] = n_slots
    for t, found in enumerate(paths):
        for p, (leaf, steps) in enumerate(found):
            path_leaf[t, p] = leaf
            for d, (s, direction) in enumerate(steps):
                path_node[t, p, d], path_dir[t, p, d], path_valid[t, p, d] = s, direction, True
    path_feature = np.take_along_axis(feature, path_node.reshape(T, -1), axis=1).reshape(T, n_paths, D)
    same = (
        (path_feature[..., :, None] == path_feature[..., None, :]) & path_valid[..., :, None] & path_valid[..., None, :]
    )
    earlier = np.tril(np.ones((D, D), bool), -1)  # [d, d'] with d' < d
    first = path_valid & ~np.any(same & earlier, axis=-1)
    return _Forest(
        feature,
        threshold,
        mode,
        tracks,
        true_child,
        false_child,
        members,
        weights,
        scored,
        depth,
        path_leaf,
        path_node,
        path_dir,
        path_valid,
        path_feature,
        same,
        first,
    )


# --- reading the attributes ---------------------------------------------------------------------------


def _optional_values(plain: Any, tensor: Any, name: str, op: str) -> np.ndarray | None:
    """An attribute given as a list or as its *_as_tensor variant (v3), as a 1-D array; None if unset."""
    if plain is not None and tensor is not None:
        raise UnsupportedOpError(f"{op} sets both {name} and {name}_as_tensor; the spec allows one.")
    value = tensor if tensor is not None else plain
    if value is None:
        return None
    array = np.asarray(value)
    return array.reshape(-1).astype(np.float64 if array.dtype == np.float64 else np.float32)


def _values(plain: Any, tensor: Any, name: str, op: str) -> np.ndarray:
    """`_optional_values` of an attribute the op needs."""
    value = _optional_values(plain, tensor, name, op)
    if value is None:
        raise UnsupportedOpError(f"{op} needs the attribute {name} (or {name}_as_tensor).")
    return value


def _required(value: list[Any] | None, name: str, op: str) -> list[Any]:
    if value is None:
        raise UnsupportedOpError(f"{op} needs the attribute {name}.")
    return value


def _v3_forest(
    op: str,
    nodes_treeids: list[int] | None,
    nodes_nodeids: list[int] | None,
    nodes_featureids: list[int] | None,
    nodes_modes: list[str] | None,
    nodes_values: np.ndarray,
    nodes_truenodeids: list[int] | None,
    nodes_falsenodeids: list[int] | None,
    nodes_missing_value_tracks_true: list[int] | None,
    leaf_treeids: list[int] | None,
    leaf_nodeids: list[int] | None,
    leaf_ids: list[int] | None,
    leaf_weights: np.ndarray,
    n_targets: int,
) -> _Forest:
    """TreeEnsembleRegressor/Classifier attributes (nodes keyed by (tree id, node id); leaf weights by
    (tree id, node id, target/class id)) as a `_Forest`. A tree's root is its first node in the lists."""
    treeids = _required(nodes_treeids, "nodes_treeids", op)
    nodeids = _required(nodes_nodeids, "nodes_nodeids", op)
    featureids = _required(nodes_featureids, "nodes_featureids", op)
    modes = _required(nodes_modes, "nodes_modes", op)
    trueids = _required(nodes_truenodeids, "nodes_truenodeids", op)
    falseids = _required(nodes_falsenodeids, "nodes_falsenodeids", op)
    n = len(treeids)
    lists: dict[str, Sized] = {
        "nodes_treeids": treeids,
        "nodes_nodeids": nodeids,
        "nodes_featureids": featureids,
        "nodes_modes": modes,
        "nodes_truenodeids": trueids,
        "nodes_falsenodeids": falseids,
        "nodes_values": nodes_values,
    }
    for name, value in lists.items():
        if len(value) != n:
            raise UnsupportedOpError(f"{op}: {name} has {len(value)} entries for {n} nodes.")
    tracks = list(nodes_missing_value_tracks_true or [0] * n)
    if len(tracks) != n:
        raise UnsupportedOpError(f"{op}: nodes_missing_value_tracks_true has {len(tracks)} entries for {n} nodes.")
    leaf_treeids, leaf_nodeids, leaf_ids = list(leaf_treeids or []), list(leaf_nodeids or []), list(leaf_ids or [])
    if not len(leaf_treeids) == len(leaf_nodeids) == len(leaf_ids) == len(leaf_weights):
        raise UnsupportedOpError(f"{op}: the target/class treeids, nodeids, ids and weights differ in length.")
    order: list[int] = []
    rows: dict[int, dict[int, int]] = {}
    for i, (tid, nid) in enumerate(zip(treeids, nodeids)):
        if tid not in rows:
            rows[tid] = {}
            order.append(tid)
        if nid in rows[tid]:
            raise UnsupportedOpError(f"{op}: node ({tid}, {nid}) is listed twice.")
        rows[tid][nid] = i
    entries: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for tid, nid, k, w in zip(leaf_treeids, leaf_nodeids, leaf_ids, leaf_weights):
        if tid not in rows or nid not in rows[tid]:
            raise UnsupportedOpError(f"{op}: a leaf weight names node ({tid}, {nid}), which is not in the tree.")
        entries.setdefault((tid, nid), []).append((int(k), float(w)))
    trees = []
    for tid in sorted(order):
        index = rows[tid]
        root = min(index.values())
        slot_of = {nid: s for s, nid in enumerate(sorted(index, key=lambda nid: (index[nid] != root, index[nid])))}
        tree = _Tree([], [], [], [], [], [], [], [])
        for nid in sorted(slot_of, key=lambda nid: slot_of[nid]):
            i = index[nid]
            name = modes[i]
            code = _LEAF if name == "LEAF" else _MODES.get(name)
            if code is None or code == _MODES["BRANCH_MEMBER"]:
                raise unsupported_attribute(op, "nodes_modes", name, [*list(_MODES)[:6], "LEAF"])
            tree.feature.append(int(featureids[i]) if code != _LEAF else 0)
            tree.threshold.append(float(nodes_values[i]))
            tree.mode.append(code)
            tree.tracks.append(bool(tracks[i]))
            tree.members.append([])
            tree.leaf_entries.append(entries.get((tid, nid), []) if code == _LEAF else [])
            if code == _LEAF:
                tree.true_child.append(slot_of[nid])
                tree.false_child.append(slot_of[nid])
                continue
            for kids, ids in ((tree.true_child, trueids), (tree.false_child, falseids)):
                kid = int(ids[i])
                if kid not in slot_of:
                    raise UnsupportedOpError(f"{op}: node ({tid}, {nid}) points to node {kid}, which tree {tid} lacks.")
                kids.append(slot_of[kid])
        trees.append(tree)
    return _pack(trees, n_targets, nodes_values.dtype, op)


def _v5_forest(
    nodes_splits: np.ndarray,
    nodes_featureids: list[int],
    nodes_modes: np.ndarray,
    nodes_truenodeids: list[int],
    nodes_falsenodeids: list[int],
    nodes_trueleafs: list[int],
    nodes_falseleafs: list[int],
    leaf_targetids: list[int],
    leaf_weights: np.ndarray,
    tree_roots: list[int],
    nodes_missing_value_tracks_true: list[int] | None,
    membership_values: np.ndarray | None,
    n_targets: int,
) -> _Forest:
    """TreeEnsemble (v5) attributes as a `_Forest`: nodes and leaves are separate index spaces, a child
    is a leaf where nodes_*leafs says so; BRANCH_MEMBER sets are read from membership_values in the
    order of the member nodes, NaN-separated."""
    op = "TreeEnsemble"
    splits = np.asarray(nodes_splits).reshape(-1)
    modes = np.asarray(nodes_modes).reshape(-1).astype(np.int64)
    n = modes.size
    tracks = list(nodes_missing_value_tracks_true or [0] * n)
    for name, value in [
        ("nodes_splits", splits),
        ("nodes_featureids", nodes_featureids),
        ("nodes_truenodeids", nodes_truenodeids),
        ("nodes_falsenodeids", nodes_falsenodeids),
        ("nodes_trueleafs", nodes_trueleafs),
        ("nodes_falseleafs", nodes_falseleafs),
        ("nodes_missing_value_tracks_true", tracks),
    ]:
        if len(value) != n:
            raise UnsupportedOpError(f"{op}: {name} has {len(value)} entries for {n} nodes.")
    bad = sorted(set(modes.tolist()) - set(range(7)))
    if bad:
        raise unsupported_attribute(op, "nodes_modes", bad[0], list(range(7)))
    sets: dict[int, list[float]] = {}
    if (modes == 6).any():
        if membership_values is None:
            raise UnsupportedOpError(f"{op} has BRANCH_MEMBER nodes but no membership_values.")
        chunks: list[list[float]] = [[]]
        for v in np.asarray(membership_values).reshape(-1).tolist():
            if math.isnan(v):
                chunks.append([])
            else:
                chunks[-1].append(v)
        member_nodes = np.flatnonzero(modes == 6).tolist()
        if len(chunks) - 1 != len(member_nodes) or chunks[-1]:
            raise UnsupportedOpError(
                f"{op}: membership_values holds {len(chunks) - 1} NaN-terminated sets for {len(member_nodes)} "
                "BRANCH_MEMBER nodes."
            )
        sets = dict(zip(member_nodes, chunks))
    weights = np.asarray(leaf_weights).reshape(-1)
    if len(leaf_targetids) != weights.size:
        raise UnsupportedOpError(f"{op}: leaf_targetids and leaf_weights differ in length.")
    trees = []
    for root in tree_roots:
        tree = _Tree([], [], [], [], [], [], [], [])
        slots: dict[tuple[bool, int], int] = {}

        queue: list[tuple[bool, int]] = []

        def visit(
            key: tuple[bool, int],
            tree: _Tree = tree,
            slots: dict[tuple[bool, int], int] = slots,
            queue: list[tuple[bool, int]] = queue,
        ) -> int:
            # Breadth-first numbering; returns the key's slot, adding it (children later) if new.
            if key not in slots:
                slots[key] = len(tree.feature)
                is_leaf, i = key
                if is_leaf and not 0 <= i < weights.size:
                    raise UnsupportedOpError(f"{op}: leaf index {i} is out of range.")
                if not is_leaf and not 0 <= i < n:
                    raise UnsupportedOpError(f"{op}: node index {i} is out of range.")
                tree.feature.append(0 if is_leaf else int(nodes_featureids[i]))
                tree.threshold.append(0.0 if is_leaf else float(splits[i]))
                tree.mode.append(_LEAF if is_leaf else int(modes[i]))
                tree.tracks.append(False if is_leaf else bool(tracks[i]))
                tree.members.append([] if is_leaf else sets.get(i, []))
                tree.leaf_entries.append([(int(leaf_targetids[i]), float(weights[i]))] if is_leaf else [])
                tree.true_child.append(-1)
                tree.false_child.append(-1)
                queue.append(key)
            return slots[key]

        visit((False, int(root)))
        while queue:
            key = queue.pop(0)
            s = slots[key]
            if key[0]:
                tree.true_child[s] = tree.false_child[s] = s
                continue
            i = key[1]
            tree.true_child[s] = visit((bool(nodes_trueleafs[i]), int(nodes_truenodeids[i])))
            tree.false_child[s] = visit((bool(nodes_falseleafs[i]), int(nodes_falsenodeids[i])))
        trees.append(tree)
    return _pack(trees, n_targets, splits.dtype, op)


# --- evaluation -----------------------------------------------------------------------------------------


def _conditions(forest: _Forest, x: Array) -> Array:
    """Whether each row of x [N, C] takes the true branch at every slot: [N, T, M] bool (False at leaves).

    As onnxruntime: cond(x_j, threshold) or (NaN and missing tracks true); a NaN fails every comparison
    (and NEQ's `x != t` is true for NaN, as in onnxruntime's `!=`)."""
    dtype = (
        jnp.result_type(x.dtype, forest.threshold.dtype)
        if jnp.issubdtype(x.dtype, jnp.floating)
        else forest.threshold.dtype
    )
    v = jnp.take(x.astype(dtype), jnp.asarray(forest.feature), axis=1)  # [N, T, M]
    t = jnp.asarray(forest.threshold, dtype)
    mode = jnp.asarray(forest.mode)
    members = jnp.asarray(forest.members, dtype)
    cases = [v <= t, v < t, v >= t, v > t, v == t, v != t, jnp.any(v[..., None] == members, axis=-1)]
    cond = jnp.zeros(v.shape, bool)
    for code, c in enumerate(cases):
        cond = jnp.where(mode == code, c, cond)
    cond = cond | (jnp.isnan(v) & jnp.asarray(forest.tracks_true))
    return cond & (mode != _LEAF)


def _walk(forest: _Forest, go: Callable[[Array], Array], shape: tuple[int, ...]) -> Array:
    """The leaf slot reached in each tree: [*shape, T] int32, all trees one level per step, where
    go(slot) ([*shape, T] bool) says whether the true branch is taken at the current slots."""
    true_child, false_child = jnp.asarray(forest.true_child), jnp.asarray(forest.false_child)
    trees = jnp.arange(forest.n_trees)

    def step(_: int, slot: Array) -> Array:
        return jnp.where(go(slot), true_child[trees, slot], false_child[trees, slot])

    start = jnp.zeros((*shape, forest.n_trees), jnp.int32)
    return lax.fori_loop(0, forest.depth, step, start) if forest.depth else start


def _leaves(forest: _Forest, cond: Array) -> Array:
    """The leaf slot each row reaches in each tree, from its conditions cond [N, T, M]: [N, T] int32."""
    return _walk(forest, lambda slot: jnp.take_along_axis(cond, slot[..., None], axis=2)[..., 0], cond.shape[:1])


def _leaf_values(forest: _Forest, leaf: Array, dtype: Any) -> tuple[Array, Array]:
    """The weights of leaf slots [..., T]: (values [..., T, K] in dtype, scored [..., T, K] bool)."""
    trees = jnp.arange(forest.n_trees)
    return jnp.asarray(forest.weights, dtype)[trees, leaf], jnp.asarray(forest.scored)[trees, leaf]


def _per_tree(forest: _Forest, x: Array, dtype: Any) -> tuple[Array, Array]:
    """Each tree's leaf weights for rows x [N, C]: (values [N, T, K] in dtype, scored [N, T, K] bool)."""
    return _leaf_values(forest, _leaves(forest, _conditions(forest, x)), dtype)


def _aggregate(forest: _Forest, values: Array, scored: Array, aggregate: str, dtype: Any) -> tuple[Array, Array]:
    """Per-tree values and scored [..., T, K] -> (aggregated scores [..., K], whether any tree scores [..., K]).

    SUM and AVERAGE: the sum (over the number of trees) of the leaf weights. MIN and MAX over the
    trees that score the target (0 where none does), as onnxruntime."""
    any_scored = jnp.any(scored, axis=-2)
    if aggregate in ("SUM", "AVERAGE"):
        total = jnp.sum(values, axis=-2)
        return (total / forest.n_trees if aggregate == "AVERAGE" else total), any_scored
    lowest = jnp.asarray(-jnp.inf if aggregate == "MAX" else jnp.inf, dtype)
    pick = jnp.max if aggregate == "MAX" else jnp.min
    best = pick(jnp.where(scored, values, lowest), axis=-2)
    return jnp.where(any_scored, best, 0), any_scored


def _side(forest: _Forest, v: Array, n_features: int, dtype: Any) -> tuple[Array, Array, Array]:
    """One side of a pair, row v [C]: (bits [T, P, W] uint32, count [T, P] int32,
    fails [T, P, C, K] in dtype).

    Bit d of bits (word d // 32) is set where step d is the first test of its feature on the path
    and v satisfies every condition on that feature there (A_j for the sample, B_j for the
    reference); count is the number of bits set. fails[t, p, j, k]: the leaf's weight for target k
    where j is on the path and v fails some condition on j, else 0. Depends on one side only, so
    under the pass's vmap it runs once per sample or reference, not per pair.
    """
    T, P, D = forest.path_node.shape
    cond = _conditions(forest, v[None])[0]  # [T, M]
    nodes = jnp.asarray(forest.path_node).reshape(T, -1)
    taken = jnp.take_along_axis(cond, nodes, axis=1).reshape(T, P, D)
    sat = (taken == jnp.asarray(forest.path_dir)) | ~jnp.asarray(forest.path_valid)
    # A feature's verdict is the AND over all of its steps on the path, read at its first step.
    same = jnp.asarray(forest.same)
    every = jnp.all(jnp.where(same, sat[..., None, :], True), axis=-1)  # [T, P, D]
    first = jnp.asarray(forest.first)
    on = first & every
    word = np.arange(D) // 32
    shifted = on.astype(jnp.uint32) << (np.arange(D, dtype=np.uint32) % 32)
    bits = jnp.stack(
        [jnp.sum(jnp.where(word == w, shifted, 0), -1, dtype=jnp.uint32) for w in range(word[-1] + 1)],
        axis=-1,
    )
    onehot = jnp.asarray(forest.path_feature)[..., None] == np.arange(n_features)  # [T, P, D, C]
    fails = jnp.any((first & ~every)[..., None] & onehot, axis=2).astype(dtype)  # [T, P, C]
    trees = jnp.arange(T)[:, None]
    leaf_w = jnp.asarray(forest.weights, dtype)[trees, jnp.asarray(forest.path_leaf)]  # [T, P, K]
    return bits, jnp.sum(on, axis=-1, dtype=jnp.int32), fails[..., None] * leaf_w[:, :, None, :]


#: Leaves per step of the loop over an ensemble's leaves in the summed rule: each step's per-pair
#: coefficients ([pairs, this many] under the pass's vmap) stay small enough to reuse from cache
#: between the elementwise part and the two matrix products (measured on 500 trees of depth 5).
LEAVES_PER_STEP = 160


def _tree_shap(forest: _Forest, x: Array, r: Array, dtype: Any, *, per_tree: bool = True) -> Array:
    """Exact Shapley values of every tree's output for one pair of rows x, r [C]: [T, K, C], or
    their sum over trees [K, C] with per_tree=False.

    The game v(S) = tree(z), z_i = x_i for i in S else r_i. For the path to leaf l and a feature j
    on it, A_j: x satisfies all of j's conditions on the path, B_j: r does. With P = {j: A_j, not
    B_j} and N = {j: B_j, not A_j} (some j with neither: l is never reached), 1[reach l] is the game
    1[P within S, N outside S], whose Shapley values are (p-1)! q! / (p+q)! for P and
    -p! (q-1)! / (p+q)! for N. Where l is reachable, j is in P exactly when j is on the path and
    not B_j (so p is the number n of the path's features less |B|, and q = n - |A|): the values
    are contractions over leaves of per-pair coefficients with each side's `fails` table.

    Per pair only O(paths) elementwise work and the two contractions (matrix products under the
    pass's vmap); each side's tables (`_side`) are built once per sample or reference.
    """
    T, P, D = forest.path_node.shape
    n_features = x.shape[-1]
    a, count_a, fails_x = _side(forest, x, n_features, dtype)
    b, count_b, fails_r = _side(forest, r, n_features, dtype)
    first = np.asarray(forest.first)
    n = first.sum(axis=-1).astype(np.int32)  # [T, P]
    full = np.zeros(a.shape, np.uint32)
    for w in range(a.shape[-1]):
        part = first[..., 32 * w : 32 * (w + 1)].astype(np.uint64)
        full[..., w] = np.sum(part << np.arange(part.shape[-1], dtype=np.uint64), axis=-1)
    # Where the leaf is reachable, p and q follow from one side each.
    q_x, p_r = n - count_a, n - count_b

    def contract(
        a: Array, b: Array, full: Array, q_x: Array, p_r: Array, fails_x: Array, fails_r: Array, spec: str
    ) -> Array:
        reachable = jnp.all((a | b) == full, axis=-1)  # every feature on the path: x's or r's
        w_pos, w_neg = _max_game_weights(p_r, q_x, D, dtype)
        c_pos, c_neg = jnp.where(reachable, w_pos, 0), jnp.where(reachable, w_neg, 0)
        return jnp.einsum(spec, c_pos, fails_r) - jnp.einsum(spec, c_neg, fails_x)

    if per_tree:
        return contract(a, b, jnp.asarray(full), q_x, p_r, fails_x, fails_r, "tp,tpjk->tkj")
    # Summed: the real paths of all trees as one axis, in steps of LEAVES_PER_STEP (padding paths
    # and the last step's filler have no weight, so they add nothing).
    real = np.flatnonzero((forest.path_valid[..., 0] | (np.arange(P) == 0)).reshape(-1))
    size = min(LEAVES_PER_STEP, real.size)
    n_steps = -(-real.size // size)
    keep = np.concatenate([real, np.full(n_steps * size - real.size, real[0])])
    filler = (np.arange(keep.size) >= real.size).reshape(n_steps, size, 1, 1)

    def steps(v: Array) -> Array:
        return v.reshape(T * P, *v.shape[2:])[keep].reshape(n_steps, size, *v.shape[2:])

    parts = [steps(v) for v in (a, b, jnp.asarray(full), q_x, p_r)]
    parts += [jnp.where(filler, 0, steps(v)) for v in (fails_x, fails_r)]
    init = jnp.zeros((fails_x.shape[-1], n_features), dtype)

    def step(i: Array, total: Array) -> Array:
        a_i, b_i, full_i, q_i, p_i, fx_i, fr_i = (v[i] for v in parts)
        return total + contract(a_i, b_i, full_i, q_i, p_i, fx_i, fr_i, "l,ljk->kj")

    return lax.fori_loop(0, n_steps, step, init)


def _check_features(forest: _Forest, n_features: int, op: str) -> None:
    used = forest.feature[forest.mode != _LEAF]
    if used.size and (used.min() < 0 or used.max() >= n_features):
        raise UnsupportedOpError(f"{op} tests feature {int(used.max())}, but the input has {n_features} features.")


def _ensemble(forest: _Forest, x: Any, aggregate: str, op: str, dtype: Any) -> tuple[Any, Array]:
    """Aggregated tree outputs of x ([N, C] rows, or a Pair of them): ([N, K] raw scores without base
    values, plain or a Pair carrying TreeSHAP, scored [N, K] bool on the sample side).

    Aggregates as `_aggregate`. The rule of MIN and MAX is the exact max game over the trees' outputs
    (each tree's output by TreeSHAP), which needs every leaf of every tree to score every target.
    """
    rows = _rows(x_side(x), op)
    _check_features(forest, rows.shape[1], op)
    if aggregate not in _AGGREGATES:
        raise unsupported_attribute(op, "aggregate_function", aggregate, _AGGREGATES)

    def forward(v: Array) -> tuple[Array, Array]:
        return _aggregate(forest, *_per_tree(forest, v, dtype), aggregate, dtype)

    if not isinstance(x, Pair):
        return forward(rows)
    xr, rr = _rows(x.x, op), _rows(x.r, op)
    (yx, scored), (yr, _) = forward(xr), forward(rr)
    p = Pair(xr, rr)
    if aggregate in ("SUM", "AVERAGE"):
        summed = lambda a, b: _tree_shap(forest, a, b, dtype, per_tree=False)
        total = jax.vmap(summed)(sg(xr), sg(rr))  # [N, K, C]
        total = total / (forest.n_trees if aggregate == "AVERAGE" else 1)
        return attributed((yx, yr), p, total), scored
    phi = jax.vmap(lambda a, b: _tree_shap(forest, a, b, dtype))(sg(xr), sg(rr))  # [N, T, K, C]
    reached = np.zeros(forest.mode.shape, bool)  # leaves some path ends at (not the padding slots)
    reached[:, 0] = True
    inner = forest.mode != _LEAF
    for kids in (forest.true_child, forest.false_child):
        np.put_along_axis(reached, np.where(inner, kids, 0), True, axis=1)
    if not forest.scored[reached & ~inner].all():
        raise UnsupportedOpError(
            f"{op} with aggregate_function={aggregate} has a leaf without a weight for some target: the max/min over "
            "the trees that score a target has no rule here (every leaf must score every target)."
        )
    tx, _ = _per_tree(forest, xr, dtype)
    tr, _ = _per_tree(forest, rr, dtype)
    per_tree = attributed((jnp.swapaxes(tx, 1, 2), jnp.swapaxes(tr, 1, 2)), p, jnp.swapaxes(phi, 1, 2))  # [N, K, T]
    if aggregate == "MAX":
        return max_over(per_tree, axis=2), scored
    return linear(jnp.negative, max_over(linear(jnp.negative, per_tree), axis=2)), scored


#: The "tree_exact" rule enumerates the 2^n coalitions of the n features an ensemble tests, for every
#: pair: above this many features it refuses (4096 evaluations of the ensemble per pair at the cap).
EXACT_MAX_FEATURES = 12
#: Coalitions x trees per step of the exact rule's loop over coalitions: the pass vmaps the rule over
#: up to ~10^4 pairs per call, and each slot holds a few int32/float32 values per pair (~20 bytes).
EXACT_SLOTS_PER_STEP = 2**11

#: The op's outputs from its aggregated scores and scored flags [N, K] (plain arrays or Pairs): base
#: values, post transform, label.
Head = Callable[[Any, Array], Any]


def _outputs(forest: _Forest, x: Any, aggregate: str, op: str, dtype: Any, head: Head, exact_for: str | None) -> Any:
    """The op's outputs for x (plain rows or a Pair): head of the aggregated scores. With the rule
    "tree_exact" (exact_for: the node's label) a Pair's outputs carry the exact Shapley values of
    every float output (`_exact`); otherwise TreeSHAP on the scores and the head's own rules."""
    if exact_for is None or not isinstance(x, Pair):
        return head(*_ensemble(forest, x, aggregate, op, dtype))
    return _exact(forest, x, aggregate, op, dtype, head, exact_for)


def _exact(forest: _Forest, x: Pair, aggregate: str, op: str, dtype: Any, head: Head, label: str) -> Any:
    """Rule "tree_exact": per pair (x, r), the exact Shapley values of each float output y of the op
    (after base values and post transform) in the game v(S) = y(z), z_j = x_j for j in S else r_j.

    Only the n features the ensemble tests can change y, so v is enumerated over their 2^n coalitions
    (S as a bit mask): a coalition's trees take x's branch at nodes on features in S and r's elsewhere
    (each side's conditions are computed once), then phi = W v with the static Shapley weights
    W[i, S + i] = |S|! (n - |S| - 1)! / n!, W[i, S] = -W[i, S + i] (S without i). Exact and
    complete (sum of phi = v(all) - v(none) = y(x) - y(r)); O(2^n x trees x depth) per pair.
    """
    used = np.unique(forest.feature[forest.mode != _LEAF])
    n = int(used.size)
    if n > EXACT_MAX_FEATURES:
        raise UnsupportedOpError(
            f"{label}: the rule 'tree_exact' enumerates the 2^n coalitions of the features a tree ensemble tests, "
            f"and this one tests {n} features, above the cap of {EXACT_MAX_FEATURES} (2^{n} = {2**n} evaluations of "
            "the ensemble per sample and reference). Use the default rule (exact TreeSHAP on the raw scores, the "
            "post transform by DeepSHAP's chain: docs/rules/tree.md), or explain the raw scores (an output before "
            "the post transform)."
        )
    xr, rr = _rows(x.x, op), _rows(x.r, op)
    _check_features(forest, xr.shape[1], op)
    if aggregate not in _AGGREGATES:
        raise unsupported_attribute(op, "aggregate_function", aggregate, _AGGREGATES)
    outs_x, outs_r = (head(*_ensemble(forest, v, aggregate, op, dtype)) for v in (xr, rr))
    single = not isinstance(outs_x, tuple)
    outs_x, outs_r = ((outs_x,), (outs_r,)) if single else (outs_x, outs_r)
    floats = [i for i, o in enumerate(outs_x) if jnp.issubdtype(o.dtype, jnp.floating)]
    # Each node's position among the tested features: coalition bit masks select x's or r's branch.
    position = np.zeros(forest.feature.shape, np.uint32)
    inner = forest.mode != _LEAF
    position[inner] = np.searchsorted(used, forest.feature[inner])
    size = 2**n
    step = max(1, min(size, EXACT_SLOTS_PER_STEP // forest.n_trees))
    step = 2 ** int(math.log2(step))
    masks = np.arange(size, dtype=np.uint32).reshape(size // step, step)
    weights = _exact_weights(n)
    trees = jnp.arange(forest.n_trees)
    pos = jnp.asarray(position)
    x64 = jax.config.jax_enable_x64  # pyright: ignore[reportAttributeAccessIssue]  # as in _max_game_weights
    wide = jnp.float64 if x64 else jnp.float32

    def pair(a: Array, b: Array) -> list[Array]:
        ca, cb = _conditions(forest, a[None])[0], _conditions(forest, b[None])[0]  # [T, M]

        def block(m: Array) -> list[Array]:
            def go(slot: Array) -> Array:
                present = (m[:, None] >> pos[trees, slot]) & 1
                return jnp.where(present == 1, ca[trees, slot], cb[trees, slot])

            leaf = _walk(forest, go, m.shape)
            outs = head(*_aggregate(forest, *_leaf_values(forest, leaf, dtype), aggregate, dtype))
            outs = (outs,) if single else outs
            return [outs[i] for i in floats]

        values = lax.map(block, jnp.asarray(masks))  # per float output [steps, step, K']
        phis = []
        for v in values:
            v = v.reshape(size, -1).astype(wide)
            phi = jnp.asarray(weights, wide) @ v  # [n, K']
            full = jnp.zeros((v.shape[1], a.shape[0]), wide).at[:, jnp.asarray(used)].set(phi.T)
            phis.append(full)
        return phis

    phis = jax.vmap(pair)(sg(xr), sg(rr))  # per float output [N, K', C]
    p = Pair(xr, rr)
    results: list[Any] = list(outs_x)
    for i, phi in zip(floats, phis):  # every float output is [N, K']
        results[i] = attributed((outs_x[i], outs_r[i]), p, phi.astype(outs_x[i].dtype))
    return results[0] if single else tuple(results)


@functools.cache
def _exact_weights(n: int) -> np.ndarray:
    """W [n, 2^n] float64 with phi = W v for a game v over bit-mask coalitions (see `_exact`)."""
    masks = np.arange(2**n)
    sizes = np.array([int(m).bit_count() for m in masks])
    table = np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)] + [0.0])
    weights = np.zeros((n, 2**n))
    for i in range(n):
        without = masks[(masks >> i & 1) == 0]
        w = table[sizes[without]]
        weights[i, without | 1 << i] += w
        weights[i, without] -= w
    return weights


def _base(values: np.ndarray | None, n_targets: int, op: str, dtype: Any) -> Array:
    """onnxruntime's base values: one per target, or one value when there is one target; else none."""
    if values is None or values.size == 0:
        return jnp.zeros((n_targets,), dtype)
    if values.size == n_targets:
        return jnp.asarray(values, dtype)
    raise UnsupportedOpError(f"{op} has {values.size} base values for {n_targets} targets; it needs 0 or {n_targets}.")


def _transform(scores: Any, post_transform: str, op: str) -> Any:
    """The post transform of [N, K] scores: onnxruntime applies only PROBIT to a single target."""
    if post_transform not in _POST_TRANSFORMS:
        raise unsupported_attribute(op, "post_transform", post_transform, _POST_TRANSFORMS)
    if x_side(scores).shape[1] == 1:
        return rescale(_probit_f32, scores) if post_transform == "PROBIT" else scores
    return _post_transform(scores, post_transform)


def _probit_f32(v: Array) -> Array:
    from onnxshap.ops.ml import _probit

    return _probit(v.astype(jnp.float32)).astype(v.dtype)


# --- the ops ---------------------------------------------------------------------------------------------


def tree_ensemble_regressor(
    x: Any,
    *,
    aggregate_function: str = "SUM",
    post_transform: str = "NONE",
    n_targets: int | None = None,
    nodes_treeids: list[int] | None = None,
    nodes_nodeids: list[int] | None = None,
    nodes_featureids: list[int] | None = None,
    nodes_modes: list[str] | None = None,
    nodes_values: list[float] | None = None,
    nodes_values_as_tensor: np.ndarray | None = None,
    nodes_truenodeids: list[int] | None = None,
    nodes_falsenodeids: list[int] | None = None,
    nodes_missing_value_tracks_true: list[int] | None = None,
    nodes_hitrates: list[float] | None = None,
    nodes_hitrates_as_tensor: np.ndarray | None = None,
    target_treeids: list[int] | None = None,
    target_nodeids: list[int] | None = None,
    target_ids: list[int] | None = None,
    target_weights: list[float] | None = None,
    target_weights_as_tensor: np.ndarray | None = None,
    base_values: list[float] | None = None,
    base_values_as_tensor: np.ndarray | None = None,
    _exact_for: str | None = None,
) -> Any:
    """TreeEnsembleRegressor (v1, v3): Y [N, n_targets] float32 = aggregate over trees of the reached
    leaves' target weights (SUM, AVERAGE: sum / number of trees, MIN, MAX) plus base_values, then the
    post transform (onnxruntime applies only PROBIT to a single target). X is [N, C] or [C], any of
    float, double, int64, int32. Rule: exact TreeSHAP per tree (see the module doc), exact and complete
    on the raw scores; the post transform by the existing composites. hitrates are ignored."""
    op = "TreeEnsembleRegressor"
    if not n_targets:
        raise UnsupportedOpError(f"{op} needs n_targets >= 1.")
    values = _values(nodes_values, nodes_values_as_tensor, "nodes_values", op)
    weights = _values(target_weights, target_weights_as_tensor, "target_weights", op)
    forest = _v3_forest(
        op,
        nodes_treeids,
        nodes_nodeids,
        nodes_featureids,
        nodes_modes,
        values,
        nodes_truenodeids,
        nodes_falsenodeids,
        nodes_missing_value_tracks_true,
        target_treeids,
        target_nodeids,
        target_ids,
        weights,
        int(n_targets),
    )
    dtype = jnp.float32
    base = _base(_optional_values(base_values, base_values_as_tensor, "base_values", op), forest.n_targets, op, dtype)

    def head(raw: Any, _: Array) -> Any:
        return _transform(linear(lambda v: v + base, raw), post_transform, op)

    return _outputs(forest, x, aggregate_function, op, dtype, head, _exact_for)


def tree_ensemble_classifier(
    x: Any,
    *,
    post_transform: str = "NONE",
    classlabels_int64s: list[int] | None = None,
    classlabels_strings: list[str] | None = None,
    nodes_treeids: list[int] | None = None,
    nodes_nodeids: list[int] | None = None,
    nodes_featureids: list[int] | None = None,
    nodes_modes: list[str] | None = None,
    nodes_values: list[float] | None = None,
    nodes_values_as_tensor: np.ndarray | None = None,
    nodes_truenodeids: list[int] | None = None,
    nodes_falsenodeids: list[int] | None = None,
    nodes_missing_value_tracks_true: list[int] | None = None,
    nodes_hitrates: list[float] | None = None,
    nodes_hitrates_as_tensor: np.ndarray | None = None,
    class_treeids: list[int] | None = None,
    class_nodeids: list[int] | None = None,
    class_ids: list[int] | None = None,
    class_weights: list[float] | None = None,
    class_weights_as_tensor: np.ndarray | None = None,
    base_values: list[float] | None = None,
    base_values_as_tensor: np.ndarray | None = None,
    _exact_for: str | None = None,
) -> tuple[Array, Any]:
    """TreeEnsembleClassifier (v1, v3): (label int64 [N], scores float32 [N, K]), K = number of labels.

    Scores: the sum over trees of the reached leaves' class weights plus base_values, then the post
    transform. The label is the class of the first maximal raw score among the classes some reached
    leaf scores (or that have a base value), as onnxruntime. Binary ensembles whose leaves all score one
    class (GBDT, XGBoost, LightGBM exports: K = 2 labels, one class id) follow onnxruntime: the score s of
    that class (plus base_values[0]) gives the label classlabels[1] where s > 0 (s > 0.5 when every weight
    is >= 0) and scores [1 - p, p] with p = logistic(s) (LOGISTIC), else [-s, s], or [1 - s, s] when every
    weight is >= 0 (onnxruntime applies no SOFTMAX or SOFTMAX_ZERO to them). String class labels (no string tensors in JAX) and binary
    PROBIT (undefined in onnxruntime) are not supported.

    Rule: exact TreeSHAP on the raw scores, the post transform by the existing composites; the label
    carries no attribution.
    """
    op = "TreeEnsembleClassifier"
    if classlabels_strings:
        raise UnsupportedOpError(
            f"{op} with classlabels_strings is not supported: its label output would be a string tensor, and JAX "
            "has no string dtype. Re-export with integer class labels (encode the classes as 0..K-1 before "
            "training), or drop the label output."
        )
    if not classlabels_int64s:
        raise UnsupportedOpError(f"{op} needs classlabels_int64s (or classlabels_strings).")
    if post_transform not in _POST_TRANSFORMS:
        raise unsupported_attribute(op, "post_transform", post_transform, _POST_TRANSFORMS)
    labels = np.asarray(classlabels_int64s, np.int64)
    n_classes = labels.size
    values = _values(nodes_values, nodes_values_as_tensor, "nodes_values", op)
    weights = _values(class_weights, class_weights_as_tensor, "class_weights", op)
    forest = _v3_forest(
        op,
        nodes_treeids,
        nodes_nodeids,
        nodes_featureids,
        nodes_modes,
        values,
        nodes_truenodeids,
        nodes_falsenodeids,
        nodes_missing_value_tracks_true,
        class_treeids,
        class_nodeids,
        class_ids,
        weights,
        n_classes,
    )
    base = _optional_values(base_values, base_values_as_tensor, "base_values", op)
    base = np.zeros(0, np.float32) if base is None else base
    dtype = jnp.float32
    used = sorted({int(k) for k in (class_ids or [])})
    if n_classes == 2 and len(used) == 1:
        positive = bool((weights >= 0).all())

        def binary(raw: Any, _: Array) -> tuple[Array, Any]:
            return _binary(raw, labels, used[0], base, positive, post_transform, op)

        return _outputs(forest, x, "SUM", op, dtype, binary, _exact_for)
    if n_classes == 2:
        raise UnsupportedOpError(
            f"{op} with 2 classes whose leaves score both classes is not supported: onnxruntime's binary "
            "handling of such ensembles is not reproduced here. Export the binary model with one class id."
        )
    if base.size not in (0, n_classes):
        raise UnsupportedOpError(
            f"{op} has {base.size} base values for {n_classes} classes; it needs 0 or {n_classes}."
        )
    shift = jnp.asarray(base if base.size else np.zeros(n_classes), dtype)

    def head(raw: Any, scored: Array) -> tuple[Array, Any]:
        scores = linear(lambda v: v + shift, raw)
        has = scored | (base.size > 0)
        label = jnp.asarray(labels)[jnp.argmax(jnp.where(has, x_side(scores), -jnp.inf), axis=1)]
        return label, _transform(scores, post_transform, op)

    return _outputs(forest, x, "SUM", op, dtype, head, _exact_for)


def _binary(
    raw: Any, labels: np.ndarray, used: int, base: np.ndarray, positive: bool, post_transform: str, op: str
) -> tuple[Array, Any]:
    """onnxruntime's binary classifier (2 labels, one class id): see `tree_ensemble_classifier`."""
    if used != 0 or base.size not in (0, 1):
        raise UnsupportedOpError(
            f"{op}: a binary ensemble is supported when its leaves score class 0 and it has 0 or 1 base values "
            f"(got class id {used}, {base.size} base values)."
        )
    if post_transform == "PROBIT":
        raise UnsupportedOpError(
            f"{op} with two classes and post_transform='PROBIT' is not supported: onnxruntime writes one score of "
            "two, so there is no reference to match."
        )
    offset = float(base[0]) if base.size else 0.0
    s = linear(lambda v: v[:, :1] + jnp.asarray(offset, v.dtype), raw)
    sx = x_side(s)[:, 0]
    label = jnp.where(sx > (0.5 if positive else 0.0), labels[1], labels[0])
    if post_transform == "LOGISTIC":
        p = rescale(_logistic, s)
        return label, linear(lambda v: jnp.concatenate([1 - v, v], axis=1), p)
    # onnxruntime applies no SOFTMAX / SOFTMAX_ZERO to the two binary scores.
    if positive:
        return label, linear(lambda v: jnp.concatenate([1 - v, v], axis=1), s)
    return label, linear(lambda v: jnp.concatenate([-v, v], axis=1), s)


def tree_ensemble(
    x: Any,
    *,
    nodes_splits: np.ndarray,
    nodes_featureids: list[int],
    nodes_modes: np.ndarray,
    nodes_truenodeids: list[int],
    nodes_falsenodeids: list[int],
    nodes_trueleafs: list[int],
    nodes_falseleafs: list[int],
    leaf_targetids: list[int],
    leaf_weights: np.ndarray,
    tree_roots: list[int],
    aggregate_function: int = 1,
    post_transform: int = 0,
    n_targets: int | None = None,
    nodes_hitrates: np.ndarray | None = None,
    nodes_missing_value_tracks_true: list[int] | None = None,
    membership_values: np.ndarray | None = None,
    _exact_for: str | None = None,
) -> Any:
    """TreeEnsemble (ai.onnx.ml v5): Y [N, n_targets] in X's type (float, double, float16).

    Modes 0..6 (LEQ, LT, GTE, GT, EQ, NEQ, MEMBER), aggregate_function 0..3 (AVERAGE, SUM, MIN, MAX),
    post_transform 0..4 (NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO, PROBIT). Rule as the regressor's.
    """
    op = "TreeEnsemble"
    if not n_targets:
        raise UnsupportedOpError(f"{op} needs n_targets >= 1.")
    if not 0 <= aggregate_function < len(_AGGREGATES):
        raise unsupported_attribute(op, "aggregate_function", aggregate_function, list(range(4)))
    if not 0 <= post_transform < len(_POST_TRANSFORMS):
        raise unsupported_attribute(op, "post_transform", post_transform, list(range(5)))
    forest = _v5_forest(
        nodes_splits,
        nodes_featureids,
        nodes_modes,
        nodes_truenodeids,
        nodes_falsenodeids,
        nodes_trueleafs,
        nodes_falseleafs,
        leaf_targetids,
        leaf_weights,
        tree_roots,
        nodes_missing_value_tracks_true,
        membership_values,
        int(n_targets),
    )
    out_dtype = jnp.result_type(x_side(x))
    dtype = jnp.float32 if out_dtype == jnp.float16 else out_dtype

    def head(raw: Any, _: Array) -> Any:
        scores = _transform(raw, _POST_TRANSFORMS[post_transform], op) if post_transform else raw
        return linear(lambda v: v.astype(out_dtype), scores)

    return _outputs(forest, x, _AGGREGATES[aggregate_function], op, dtype, head, _exact_for)


tree_ensemble_regressor_rule = composite_rule(tree_ensemble_regressor)
tree_ensemble_classifier_rule = composite_rule(tree_ensemble_classifier)
tree_ensemble_rule = composite_rule(tree_ensemble)

_EXACT_FORWARDS: dict[str, Callable[..., Any]] = {
    "TreeEnsembleRegressor": tree_ensemble_regressor,
    "TreeEnsembleClassifier": tree_ensemble_classifier,
    "TreeEnsemble": tree_ensemble,
}


def tree_exact_rule(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """Rule "tree_exact" (selected with rules={"TreeEnsembleClassifier": "tree_exact"} or --rule): the exact
    Shapley value of the op's outputs after the post transform, per pair, by enumerating the coalitions of
    the features the ensemble tests (`_exact`; at most EXACT_MAX_FEATURES). Tree ensemble ops only."""
    forward = _EXACT_FORWARDS.get(ctx.node.op_type)
    if forward is None:
        raise UnsupportedOpError(
            f"{ctx.node.label}: the rule 'tree_exact' is for tree ensembles ({', '.join(_EXACT_FORWARDS)}), not "
            f"{ctx.node.op_type}. Name a tree ensemble node or op type in rules=."
        )
    return composite_rule(functools.partial(forward, _exact_for=ctx.node.label))(ctx, m_out)
