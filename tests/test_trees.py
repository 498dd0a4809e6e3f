"""Tree ensembles (ai.onnx.ml TreeEnsembleRegressor/Classifier v1/v3, TreeEnsemble v5): forward parity
with onnxruntime, TreeSHAP against exact enumeration of the coalitions, local completeness, and an
end-to-end Explainer check on probability outputs."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxshap
from onnxshap._composite import Pair
from onnxshap.ops import trees as T
from tests.helpers import assert_locally_complete, run_ort

MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


# --- model builders ----------------------------------------------------------------------------------


def _random_tree(
    rng: np.random.Generator, depth: int, n_features: int, modes: list[str], n_targets: int
) -> list[dict[str, Any]]:
    """One tree as v3-style nodes [{id, mode, feature, value, true, false, tracks, weights}], root first.
    Thresholds on the integer grid that the inputs are drawn from, so that EQ/NEQ and ties happen."""
    nodes: list[dict[str, Any]] = []

    def grow(level: int) -> int:
        i = len(nodes)
        nodes.append({})
        if level == depth or (level > 1 and rng.random() < 0.2):
            nodes[i] = {"mode": "LEAF", "weights": [(k, float(rng.normal())) for k in range(n_targets)]}
            return i
        node = {
            "mode": str(rng.choice(modes)),
            "feature": int(rng.integers(n_features)),
            "value": float(rng.integers(-1, 2)) + (0.5 if rng.random() < 0.3 else 0.0),
            "tracks": int(rng.random() < 0.5),
        }
        node["true"] = grow(level + 1)
        node["false"] = grow(level + 1)
        nodes[i] = node
        return i

    grow(0)
    return nodes


def _v3_attrs(forest: list[list[dict[str, Any]]], prefix: str, tensor: bool = False) -> dict[str, Any]:
    a: dict[str, list[Any]] = {
        k: [] for k in ["treeids", "nodeids", "featureids", "modes", "values", "truenodeids", "falsenodeids", "missing"]
    }
    leaves: dict[str, list[Any]] = {"treeids": [], "nodeids": [], "ids": [], "weights": []}
    for t, nodes in enumerate(forest):
        for i, n in enumerate(nodes):
            leaf = n["mode"] == "LEAF"
            a["treeids"].append(t)
            a["nodeids"].append(i)
            a["featureids"].append(0 if leaf else n["feature"])
            a["modes"].append(n["mode"])
            a["values"].append(0.0 if leaf else n["value"])
            a["truenodeids"].append(0 if leaf else n["true"])
            a["falsenodeids"].append(0 if leaf else n["false"])
            a["missing"].append(0 if leaf else n["tracks"])
            for k, w in n.get("weights", []):
                leaves["treeids"].append(t)
                leaves["nodeids"].append(i)
                leaves["ids"].append(k)
                leaves["weights"].append(w)
    out = {f"nodes_{k}": v for k, v in a.items() if k not in ("missing", "values")}
    out["nodes_missing_value_tracks_true"] = a["missing"]
    if tensor:
        out["nodes_values_as_tensor"] = onnx.numpy_helper.from_array(np.asarray(a["values"], np.float32), "v")
        out[f"{prefix}_weights_as_tensor"] = onnx.numpy_helper.from_array(
            np.asarray(leaves["weights"], np.float32), "w"
        )
    else:
        out["nodes_values"] = a["values"]
        out[f"{prefix}_weights"] = leaves["weights"]
    out[f"{prefix}_treeids"], out[f"{prefix}_nodeids"], out[f"{prefix}_ids"] = (
        leaves["treeids"],
        leaves["nodeids"],
        leaves["ids"],
    )
    return out


def _model(
    node: onnx.NodeProto,
    n_features: int,
    outputs: list[onnx.ValueInfoProto],
    opset: int,
    dtype: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    graph = helper.make_graph([node], "trees", [helper.make_tensor_value_info("x", dtype, [None, n_features])], outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", opset)]
    )
    model.ir_version = 8 if opset < 5 else 10
    return model


def regressor(
    forest: list[list[dict[str, Any]]],
    n_features: int,
    n_targets: int,
    *,
    aggregate: str = "SUM",
    post: str = "NONE",
    base: list[float] | None = None,
    opset: int = 3,
    tensor: bool = False,
) -> onnx.ModelProto:
    attrs = _v3_attrs(forest, "target", tensor)
    attrs = {("target_ids" if k == "target_ids" else k): v for k, v in attrs.items()}
    kw: dict[str, Any] = dict(n_targets=n_targets, aggregate_function=aggregate, post_transform=post, **attrs)
    if base is not None:
        kw["base_values"] = base
    node = helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", **kw)
    return _model(node, n_features, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n_targets])], opset)


def classifier(
    forest: list[list[dict[str, Any]]],
    n_features: int,
    labels: list[int],
    *,
    post: str = "NONE",
    base: list[float] | None = None,
    opset: int = 3,
) -> onnx.ModelProto:
    attrs = _v3_attrs(forest, "class")
    kw: dict[str, Any] = dict(classlabels_int64s=labels, post_transform=post, **attrs)
    if base is not None:
        kw["base_values"] = base
    node = helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", **kw)
    outs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, len(labels)]),
    ]
    return _model(node, n_features, outs, opset)


_V5_MODES = {m: i for i, m in enumerate(MODES)} | {"BRANCH_MEMBER": 6}


def tree_ensemble_v5(
    forest: list[list[dict[str, Any]]],
    n_features: int,
    n_targets: int,
    *,
    aggregate: int = 1,
    post: int = 0,
    members: dict[tuple[int, int], list[float]] | None = None,
    dtype: Any = np.float32,
) -> onnx.ModelProto:
    """The same trees as a v5 TreeEnsemble (a v5 leaf has one target: every leaf must have one weight)."""
    members = members or {}
    splits, features, modes, tnode, fnode, tleaf, fleaf, tracks = [], [], [], [], [], [], [], []
    leaf_t, leaf_w, roots, member_values = [], [], [], []
    for t, nodes in enumerate(forest):
        node_index: dict[int, int] = {}
        leaf_index: dict[int, int] = {}
        for i, n in enumerate(nodes):
            if n["mode"] == "LEAF":
                ((k, w),) = n["weights"]
                leaf_index[i] = len(leaf_w)
                leaf_t.append(k)
                leaf_w.append(w)
            else:
                node_index[i] = len(splits) + len(node_index)
        for i, n in enumerate(nodes):
            if n["mode"] == "LEAF":
                continue
            mode = "BRANCH_MEMBER" if (t, i) in members else n["mode"]
            splits.append(n["value"])
            features.append(n["feature"])
            modes.append(_V5_MODES[mode])
            tracks.append(n["tracks"])
            for child, ids, leafs in ((n["true"], tnode, tleaf), (n["false"], fnode, fleaf)):
                is_leaf = nodes[child]["mode"] == "LEAF"
                ids.append(leaf_index[child] if is_leaf else node_index[child])
                leafs.append(int(is_leaf))
        roots.append(node_index[0])
    # membership values in the order of the member nodes
    order = []
    for t, nodes in enumerate(forest):
        for i, n in enumerate(nodes):
            if n["mode"] != "LEAF" and (t, i) in members:
                order.append(members[t, i])
    for values in order:
        member_values += [*values, float("nan")]
    onnx_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    kw: dict[str, Any] = dict(
        nodes_splits=onnx.numpy_helper.from_array(np.asarray(splits, dtype), "s"),
        nodes_featureids=features,
        nodes_modes=onnx.numpy_helper.from_array(np.asarray(modes, np.uint8), "m"),
        nodes_truenodeids=tnode,
        nodes_falsenodeids=fnode,
        nodes_trueleafs=tleaf,
        nodes_falseleafs=fleaf,
        nodes_missing_value_tracks_true=tracks,
        leaf_targetids=leaf_t,
        leaf_weights=onnx.numpy_helper.from_array(np.asarray(leaf_w, dtype), "w"),
        tree_roots=roots,
        n_targets=n_targets,
        aggregate_function=aggregate,
        post_transform=post,
    )
    if member_values:
        kw["membership_values"] = onnx.numpy_helper.from_array(np.asarray(member_values, dtype), "mv")
    node = helper.make_node("TreeEnsemble", ["x"], ["y"], domain="ai.onnx.ml", **kw)
    return _model(node, n_features, [helper.make_tensor_value_info("y", onnx_type, [None, n_targets])], 5, onnx_type)


def _inputs(rng: np.random.Generator, n: int, n_features: int, nan: float = 0.15) -> np.ndarray:
    """Values on the thresholds' grid (ties, EQ hits) and between, some NaN."""
    x = rng.integers(-2, 3, (n, n_features)).astype(np.float32) + np.where(rng.random((n, n_features)) < 0.3, 0.5, 0)
    x[rng.random((n, n_features)) < nan] = np.nan
    return x.astype(np.float32)


def _forest(
    seed: int,
    n_trees: int,
    depth: int,
    n_features: int,
    n_targets: int = 1,
    modes: list[str] = MODES,
    one_target_per_leaf: bool = False,
) -> list[list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    forest = [_random_tree(rng, depth, n_features, modes, n_targets) for _ in range(n_trees)]
    if one_target_per_leaf:
        for t, nodes in enumerate(forest):
            for n in nodes:
                if n["mode"] == "LEAF":
                    n["weights"] = [(t % n_targets, n["weights"][0][1])]
    return forest


def _ours(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    return onnxshap.load(model).run({"x": x})


def _max_diff(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for name, w in want.items():
        g = np.asarray(got[name])
        assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, w.shape, g.dtype, w.dtype)
        if w.dtype.kind == "f":
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w), initial=0)))
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)
    return worst


# --- forward parity ----------------------------------------------------------------------------------


REGRESSOR_CASES = [
    pytest.param(dict(aggregate=a, post="NONE", opset=o), id=f"{a}-v{o}")
    for a in ("SUM", "AVERAGE", "MIN", "MAX")
    for o in (1, 3)
] + [
    pytest.param(dict(post="PROBIT", base=[0.1]), id="probit-one-target"),
    pytest.param(dict(post="LOGISTIC", base=[0.3]), id="logistic-one-target-ignored"),
    pytest.param(dict(tensor=True, base=[0.2]), id="as-tensor"),
]


@pytest.mark.parametrize("kw", REGRESSOR_CASES)
def test_regressor_matches_onnxruntime(kw: dict[str, Any], rng: np.random.Generator) -> None:
    model = regressor(_forest(1, 4, 4, 5), 5, 1, **kw)
    x = _inputs(rng, 64, 5)
    assert _max_diff(_ours(model, x), run_ort(model, {"x": x})) < 1e-5


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_multi_target_regressor_matches_onnxruntime(post: str, rng: np.random.Generator) -> None:
    forest = _forest(2, 3, 3, 4, n_targets=3)
    model = regressor(forest, 4, 3, post=post, base=[0.1, -0.2, 0.3], aggregate="AVERAGE")
    x = _inputs(rng, 48, 4)
    assert _max_diff(_ours(model, x), run_ort(model, {"x": x})) < 1e-5


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_multiclass_classifier_matches_onnxruntime(post: str, rng: np.random.Generator) -> None:
    model = classifier(_forest(3, 4, 3, 4, n_targets=3), 4, [7, 3, 11], post=post, base=[0.0, 0.5, -0.5])
    x = _inputs(rng, 48, 4)
    assert _max_diff(_ours(model, x), run_ort(model, {"x": x})) < 1e-5


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("positive", [False, True])
def test_binary_classifier_matches_onnxruntime(post: str, positive: bool, rng: np.random.Generator) -> None:
    forest = _forest(4, 3, 3, 4)
    if positive:
        for nodes in forest:
            for n in nodes:
                if n["mode"] == "LEAF":
                    n["weights"] = [(0, abs(n["weights"][0][1]) / 3)]
    model = classifier(forest, 4, [0, 1], post=post, base=None if positive else [0.25])
    x = _inputs(rng, 48, 4)
    assert _max_diff(_ours(model, x), run_ort(model, {"x": x})) < 1e-5


@pytest.mark.parametrize(("aggregate", "post"), [(0, 0), (1, 1), (1, 2), (2, 0), (3, 4)])
def test_tree_ensemble_v5_matches_onnxruntime(aggregate: int, post: int, rng: np.random.Generator) -> None:
    forest = _forest(5, 4, 4, 5, n_targets=2, one_target_per_leaf=True)
    model = tree_ensemble_v5(forest, 5, 2, aggregate=aggregate, post=post)
    x = _inputs(rng, 64, 5)
    # onnxruntime (1.32) reads TreeEnsemble's post_transform 1 as LOGISTIC and 2 as SOFTMAX; the spec says
    # 1 = SOFTMAX, 2 = LOGISTIC, and onnxshap follows the spec: compare with the swapped code.
    swapped = tree_ensemble_v5(forest, 5, 2, aggregate=aggregate, post={1: 2, 2: 1}.get(post, post))
    assert _max_diff(_ours(model, x), run_ort(swapped, {"x": x})) < 1e-5


def test_tree_ensemble_v5_membership_matches_onnxruntime(rng: np.random.Generator) -> None:
    """BRANCH_MEMBER on category codes (integer values, NaN), where onnxruntime agrees with the spec's
    exact set membership; for values between the members onnxruntime's answers are not membership
    (it matches 1.5 against {-1, 1, 2}), and onnxshap follows the spec there."""
    forest = _forest(6, 3, 3, 4, one_target_per_leaf=True)
    members = {(t, 0): [-1.0, 1.0, 2.0] for t in range(3)}
    x = np.round(_inputs(rng, 64, 4))
    for dtype in (np.float32, np.float64):
        model = tree_ensemble_v5(forest, 4, 1, members=members, dtype=dtype)
        xd = x.astype(dtype)
        assert _max_diff(_ours(model, xd), run_ort(model, {"x": xd})) < 1e-5


# --- the rule against exact enumeration ----------------------------------------------------------------


def _exact_shapley(values: np.ndarray, n: int) -> np.ndarray:
    """Shapley values from v over all 2^n coalitions (values[mask], bit i = player i present): [n, ...]."""
    phi = np.zeros((n, *values.shape[1:]))
    for i in range(n):
        for mask in range(2**n):
            if mask >> i & 1:
                continue
            s = mask.bit_count()
            weight = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
            phi[i] += weight * (values[mask | 1 << i] - values[mask])
    return phi


def _coalitions(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    n = x.size
    masks = np.array([[m >> i & 1 for i in range(n)] for m in range(2**n)], bool)
    return np.where(masks, x[None, :], r[None, :])


def _forest_of(model: onnx.ModelProto) -> tuple[T._Forest, str]:
    node = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    a = attrs.get
    values = np.asarray(a("nodes_values"), np.float32)
    forest = T._v3_forest(
        node.op_type,
        a("nodes_treeids"),
        a("nodes_nodeids"),
        a("nodes_featureids"),
        [m.decode() for m in a("nodes_modes")],
        values,
        a("nodes_truenodeids"),
        a("nodes_falsenodeids"),
        a("nodes_missing_value_tracks_true"),
        a("target_treeids"),
        a("target_nodeids"),
        a("target_ids"),
        np.asarray(a("target_weights"), np.float32),
        int(a("n_targets")),
    )
    return forest, attrs["aggregate_function"].decode()


@pytest.mark.parametrize(
    ("n_trees", "n_targets", "aggregate"), [(1, 1, "SUM"), (3, 1, "SUM"), (3, 1, "AVERAGE"), (3, 2, "SUM")]
)
def test_tree_shap_is_the_exact_shapley_value(
    n_trees: int, n_targets: int, aggregate: str, rng: np.random.Generator
) -> None:
    n = 7
    model = regressor(_forest(10 + n_trees, n_trees, 5, n, n_targets=n_targets), n, n_targets, aggregate=aggregate)
    forest, agg = _forest_of(model)
    pairs = [(_inputs(rng, 1, n, nan=0.0)[0], _inputs(rng, 1, n, nan=0.0)[0]) for _ in range(3)]
    pairs.append((_inputs(rng, 1, n, nan=0.3)[0], _inputs(rng, 1, n, nan=0.3)[0]))  # NaN on either side
    # Compiled, as the pass runs it (op by op, the scans compiled again for every pair).
    tree_shap = jax.jit(lambda x, r: T._tree_shap(forest, x, r, np.float64))
    with jax.enable_x64(True):
        for x, r in pairs:
            x64, r64 = x.astype(np.float64), r.astype(np.float64)
            phi = np.asarray(tree_shap(x64, r64)).sum(axis=0)  # [K, C]
            if agg == "AVERAGE":
                phi = phi / forest.n_trees
            game = run_ort(model, {"x": _coalitions(x, r)})["y"].astype(np.float64)  # [2^n, K]
            exact = _exact_shapley(game, n).T  # [K, C]
            scale = max(np.abs(exact).max(), 1e-12)
            assert np.abs(phi - exact).max() / scale < 1e-6, (phi, exact)
            total = game[-1] - game[0]
            np.testing.assert_allclose(phi.sum(axis=1), total, atol=1e-5)


@pytest.mark.parametrize("step", [5, 1000])
def test_summed_tree_shap_equals_the_per_tree_sum(
    step: int, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summed rule loops over the real paths in steps (step 5: several steps and a padded last
    one; 1000: one step); it adds up to the per-tree values, the exact Shapley values above."""
    n = 7
    forest, _ = _forest_of(regressor(_forest(21, 4, 5, n, n_targets=2), n, 2))
    real = int((forest.path_valid[..., 0] | (np.arange(forest.path_node.shape[1]) == 0)).sum())
    assert step > real or real % step, "the test wants a padded last step"
    monkeypatch.setattr(T, "LEAVES_PER_STEP", step)
    # Compiled after the patch (new functions: nothing traced before it is reused).
    per_tree_shap = jax.jit(lambda x, r: T._tree_shap(forest, x, r, np.float64))
    summed_shap = jax.jit(lambda x, r: T._tree_shap(forest, x, r, np.float64, per_tree=False))
    with jax.enable_x64(True):
        for _ in range(12):
            x, r = (_inputs(rng, 1, n, nan=0.0)[0].astype(np.float64) for _ in range(2))
            per_tree = np.asarray(per_tree_shap(x, r)).sum(axis=0)  # [K, C]
            summed = np.asarray(summed_shap(x, r))
            assert np.abs(per_tree).max() > 0
            np.testing.assert_allclose(summed, per_tree, rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # eager float64 gradients: ~14 s
def test_min_max_rule_is_complete_and_max_game_exact(rng: np.random.Generator) -> None:
    """MAX: each tree by TreeSHAP, the trees' outputs combined by the exact max game. Not the Shapley value
    of max(trees) over the features (a chain), but complete; and on one tree it is exact."""
    n = 5
    for aggregate in ("MAX", "MIN"):
        model = regressor(_forest(21, 3, 3, n), n, 1, aggregate=aggregate)
        forest, _ = _forest_of(model)
        x, r = _inputs(rng, 1, n, nan=0.0), _inputs(rng, 1, n, nan=0.0)
        with jax.enable_x64(True):
            pair = Pair(x.astype(np.float64), r.astype(np.float64))
            grads = jax.grad(lambda p, f=forest, agg=aggregate: T._ensemble(f, p, agg, "t", np.float64)[0].x.sum())(
                pair
            )
            phi = np.asarray(grads.x) * (x - r)
            y = run_ort(model, {"x": np.concatenate([x, r])})["y"][:, 0].astype(np.float64)
            np.testing.assert_allclose(phi.sum(), y[0] - y[1], atol=1e-5)


# --- through the Explainer -------------------------------------------------------------------------------


def _classifier_models() -> dict[str, onnx.ModelProto]:
    forest3 = _forest(30, 4, 4, 6, n_targets=3)
    binary = _forest(31, 4, 4, 6)
    return {
        "softmax": classifier(forest3, 6, [0, 1, 2], post="SOFTMAX", base=[0.1, 0.0, -0.1]),
        "logistic": classifier(binary, 6, [0, 1], post="LOGISTIC", base=[0.2]),
        "raw": regressor(_forest(32, 4, 4, 6, n_targets=2), 6, 2, aggregate="SUM", base=[0.5, -0.5]),
    }


# ~13 s for raw scores (the default check), 18-28 s with the probability outputs (slow).
@pytest.mark.parametrize(
    "name", [pytest.param("softmax", marks=pytest.mark.slow), pytest.param("logistic", marks=pytest.mark.slow), "raw"]
)
def test_explainer_is_complete_and_locally_complete(name: str, rng: np.random.Generator) -> None:
    model = _classifier_models()[name]
    m = onnxshap.load(model)
    out = "scores" if name != "raw" else "y"
    x, background = _inputs(rng, 3, 6, nan=0.0), _inputs(rng, 8, 6, nan=0.0)
    explainer = onnxshap.Explainer(m, background, outputs=[out])
    e = explainer.explain(x)
    assert e.max_relative_residual < 1e-5, e.max_relative_residual
    assert not e.gradient_nodes
    n_out = e.values.shape[-1] if e.values.ndim == 3 else 1
    nodes = explainer._pass.diagnose(
        {"x": x[:1].astype(np.float64)}, {"x": background[:1].astype(np.float64)}, n_out - 1, n_out
    )
    assert_locally_complete(nodes)
    # Against the exact Shapley value of the explained output, averaged over the background.
    values = np.asarray(e.values, np.float64).reshape(3, 6, -1)
    exact = np.zeros_like(values)
    for i in range(3):
        for b in background:
            game = run_ort(model, {"x": _coalitions(x[i], b)})[out].astype(np.float64)
            exact[i] += _exact_shapley(game, 6) / len(background)
    error = np.abs(values - exact).max() / np.abs(exact).max()
    print(f"\n{name}: max |phi - phi_exact| / max |phi_exact| = {error:.3e}")
    if name == "raw":
        assert error < 1e-5
