"""Composite rules built from pair primitives (onnxshap/ops/composites.py).

1. Local completeness of every composite rule of the table (through its row: the `composite` rule and
   the `impl` forward), per output element, in float64 where the op allows it, on random sample /
   reference pairs with x == r at some positions and with saturated inputs.
2. Independent references: the onnx backend's function-expanded cases (the op's function body as a
   graph of primitive ops, each explained with its own table rule) must give the same attributions as
   the op; ops without a function body are compared with naive graphs of primitive ops built with
   onnx.helper, and ReduceProd with brute-force Shapley values.
3. End to end: small graphs using each op, and the skl2onnx LogisticRegression export, explain completely.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap._graph import Node, _schema_defaults
from onnxshap._interpreter import node_function
from onnxshap._multipliers import NodeContext
from onnxshap._registry import registry
from onnxshap.ops.composites import PROD_SHAPLEY_MAX
from tests.conftest import REPO
from tests.helpers import player_shapley

ML = "ai.onnx.ml"
COMPOSITE_OPS = [
    ("", "InstanceNormalization"),
    ("", "LRN"),
    ("", "LpPool"),
    ("", "GlobalLpPool"),
    ("", "ReduceProd"),
    ("", "ReduceL1"),
    ("", "ReduceL2"),
    ("", "ReduceSumSquare"),
    ("", "ReduceLogSum"),
    ("", "ReduceLogSumExp"),
    (ML, "Normalizer"),
    (ML, "LinearClassifier"),
]


def test_every_listed_op_has_a_composite_rule() -> None:
    for domain, op in COMPOSITE_OPS:
        spec = registry().get(op, domain)
        assert spec is not None and spec.rule == "composite" and spec.composite is not None, op
        assert spec.impl(spec.since[-1]).__module__ == "onnxshap.ops.composites", op


# --- 1. local completeness -----------------------------------------------------------------------------


def _node(op: str, domain: str, since: int, n_inputs: int, n_outputs: int, attrs: dict[str, Any]) -> Node:
    spec = registry().get(op, domain)
    assert spec is not None and since in spec.since
    return Node(
        index=0,
        name="n",
        op_type=op,
        domain=domain,
        since_version=since,
        inputs=tuple(f"i{k}" for k in range(n_inputs)),
        outputs=tuple(f"o{k}" for k in range(n_outputs)),
        attrs={**_schema_defaults(op, domain, since), **attrs},
        spec=spec,
    )


def local_completeness(
    op: str,
    xs: Sequence[Any],
    rs: Sequence[Any],
    attrs: dict[str, Any],
    *,
    since: int,
    domain: str = "",
    n_outputs: int = 1,
) -> list[np.ndarray]:
    """Per float output, per element e: |sum_i m_i(e) * (x_i - r_i) - (y_e(x) - y_e(r))| relative to
    max(|dy_e|, sum_i |m_i(e) * (x_i - r_i)|, floor * max(1, |y_e(x)|, |y_e(r)|)), with the rule seeded
    by the one-hot m_out = e. The floor is 1e-9 for float64 outputs; float32 outputs (the ml ops compute
    in float32 whatever the input) are judged at their resolution (floor 1): paths into one input element
    may cancel, leaving rounding noise of the order of the output, not of the difference.

    Inputs that differ between xs and rs are the varying ones (the others are passed as constants).
    """
    node = _node(op, domain, since, len(xs), n_outputs, attrs)
    assert node.spec is not None and node.spec.composite is not None
    fn = node_function(node)

    def value(v: Any) -> Any:  # static integer inputs (axes) stay on the host, as the interpreter keeps them
        return v if v is None or (isinstance(v, np.ndarray) and v.dtype.kind in "iu") else jnp.asarray(v)

    xin, rin = [value(v) for v in xs], [value(v) for v in rs]
    varying = [x is not None and not isinstance(x, np.ndarray) and not bool(jnp.all(x == r)) for x, r in zip(xin, rin)]
    assert any(varying)
    xout, rout = fn(*xin), fn(*rin)
    ctx = NodeContext(node, fn, xin, rin, xout, rout, varying)
    errors = []
    for k, (yx, yr) in enumerate(zip(xout, rout)):
        if not jnp.issubdtype(yx.dtype, jnp.inexact):
            continue

        def flows(seed: Any, k: int = k, shape: Any = yx.shape) -> tuple[Any, Any]:
            m_out: list[Any] = [None] * len(xout)
            m_out[k] = seed.reshape(shape)
            m_in = node.spec.composite(ctx, m_out)  # type: ignore[union-attr]
            terms = [m * (x - r) for m, x, r, v in zip(m_in, xin, rin, varying) if v and m is not None]
            return sum(jnp.sum(t) for t in terms), sum(jnp.sum(jnp.abs(t)) for t in terms)

        inflow, mass = jax.jit(jax.vmap(flows))(jnp.eye(yx.size, dtype=yx.dtype))
        inflow, mass = np.asarray(inflow, np.float64), np.asarray(mass, np.float64)
        delta = np.asarray(yx, np.float64).reshape(-1) - np.asarray(yr, np.float64).reshape(-1)
        assert np.all(np.isfinite(inflow)), f"{op}: non-finite multipliers for output {k}"
        size = np.maximum(1, np.maximum(np.abs(np.asarray(yx)), np.abs(np.asarray(yr)))).reshape(-1)
        floor = (1e-9 if yx.dtype == jnp.float64 else 1.0) * size
        errors.append(np.abs(inflow - delta) / np.maximum(np.maximum(np.abs(delta), mass), floor))
    return errors


def _pair(shape: tuple[int, ...], rng: np.random.Generator, *, same: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """A float64 sample / reference pair; a fraction `same` of the reference equals the sample."""
    x = rng.standard_normal(shape)
    r = rng.standard_normal(shape)
    keep = rng.uniform(size=shape) < same
    return x, np.where(keep, x, r)


REDUCE_OPS = ["ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]
# (since-version, attributes, axes input or None); axes as attribute before 18, as static input from 18.
REDUCE_AXES = [
    (13, dict(axes=[1], keepdims=1), None),
    (11, dict(axes=[0, 2], keepdims=0), None),
    (18, dict(keepdims=0), np.array([-1], np.int64)),
    (18, dict(keepdims=1, noop_with_empty_axes=1), np.array([], np.int64)),
    (18, dict(keepdims=1), None),
]


def _reduce_data(op: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, r = _pair((3, 4, 5), rng)
    if op in ("ReduceL1", "ReduceL2"):
        # Zero slices on both sides, on one side only, and scattered zeros.
        x[0, 1], r[0, 1] = 0, 0
        x[1, 2] = 0
        r[2, :, 3] = 0
        x[x < -1.5] = 0
    elif op == "ReduceLogSum":
        # Positive data; slices whose sums are near zero.
        x, r = np.abs(x), np.abs(r)
        x[0], r[0] = 1e-3 * x[0], 2e-3 * r[0]
    elif op == "ReduceLogSumExp":
        # One side saturated: exp overflows float32 and float64 without a shift, and the other side's
        # shifted exponentials underflow.
        x[1] += 1000.0
        r[2, 1:] -= 800.0
    return x, r


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_rules_are_locally_complete(op: str) -> None:
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        for since, attrs, axes in REDUCE_AXES:
            x, r = _reduce_data(op, rng)
            xs, rs = ([x], [r]) if axes is None else ([x, axes], [r, axes])
            (err,) = local_completeness(op, xs, rs, attrs, since=since)
            assert err.max() < 1e-10, (op, attrs, axes, err.max())


def test_reduce_log_sum_exp_is_stable_in_float32() -> None:
    rng = np.random.default_rng(2)
    x, r = _pair((4, 6), rng)
    x[:2] += 1000.0  # exp overflows on the sample side ...
    r[1:3] -= 500.0  # ... and the reference side is 1500 below: its shifted sum underflows to 0
    (err,) = local_completeness(
        "ReduceLogSumExp", [x.astype(np.float32)], [r.astype(np.float32)], dict(axes=[1], keepdims=1), since=13
    )
    assert err.max() < 1e-5, err.max()


# Near 0, 'x ~ r' must be judged relative to the values, else log and sqrt take a far-off midpoint slope.
@pytest.mark.parametrize(
    ("op", "x", "r"),
    [
        ("ReduceLogSum", np.full((1, 4), 0.25e-7), np.full((1, 4), 0.5e-7)),  # sums 1e-7 and 2e-7: 4% off
        ("ReduceL2", np.zeros((1, 4)), np.full((1, 4), 0.5e-4)),
    ],  # sums of squares 0 and 1e-8: 29% off
    ids=["log-of-tiny-sums", "sqrt-of-tiny-sums"],
)
def test_rescale_is_complete_for_tiny_values_near_zero(op: str, x: np.ndarray, r: np.ndarray) -> None:
    with jax.enable_x64(True):
        (err,) = local_completeness(op, [x], [r], dict(axes=[1], keepdims=1), since=13)
    assert err.max() < 1e-10, err.max()


@pytest.mark.parametrize("k", [2, 5, PROD_SHAPLEY_MAX, PROD_SHAPLEY_MAX + 1, 30])
def test_reduce_prod_is_locally_complete_for_both_paths(k: int) -> None:
    rng = np.random.default_rng(k)
    x, r = _pair((3, k), rng)
    x, r = 1 + 0.5 * x, 1 + 0.5 * r  # factors of order 1: products of 30 factors stay O(1)
    with jax.enable_x64(True):
        (err,) = local_completeness("ReduceProd", [x], [r], dict(axes=[1], keepdims=0), since=13)
    assert err.max() < 1e-10, err.max()


def _nn_cases() -> list[Any]:
    rng = np.random.default_rng(3)
    x, r = _pair((2, 5, 4, 3), rng)
    scale, scale_r = _pair((5,), rng, same=0.0)
    bias, bias_r = _pair((5,), rng, same=0.0)
    zeros_x, zeros_r = x.copy(), r.copy()
    zeros_x[0, :, :2], zeros_r[0, :, :2] = 0, 0  # windows that are zero on both sides
    zeros_x[1, 1] = 0
    return [
        pytest.param(
            "InstanceNormalization", 6, [x, scale, bias], [r, scale, bias], dict(epsilon=1e-3), id="instancenorm"
        ),
        pytest.param(
            "InstanceNormalization",
            22,
            [x, scale, bias],
            [r, scale_r, bias_r],
            dict(epsilon=1e-5),
            id="instancenorm-varying-scale-bias",
        ),
        pytest.param("LRN", 13, [x], [r], dict(size=3, alpha=0.2, beta=0.75, bias=1.0), id="lrn-3"),
        pytest.param("LRN", 1, [x], [r], dict(size=4, alpha=0.5, beta=0.6, bias=2.0), id="lrn-even"),
        pytest.param("LpPool", 18, [zeros_x], [zeros_r], dict(kernel_shape=[2, 2], p=2), id="lppool-p2-zeros"),
        pytest.param(
            "LpPool",
            18,
            [x],
            [r],
            dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1], ceil_mode=1, p=3),
            id="lppool-p3",
        ),
        pytest.param("LpPool", 11, [x], [r], dict(kernel_shape=[2, 3], auto_pad="SAME_UPPER", p=1), id="lppool-p1"),
        pytest.param("GlobalLpPool", 2, [zeros_x], [zeros_r], dict(p=2), id="globallppool-p2-zeros"),
        pytest.param("GlobalLpPool", 22, [x], [r], dict(p=3), id="globallppool-p3"),
    ]


@pytest.mark.parametrize(("op", "since", "xs", "rs", "attrs"), _nn_cases())
def test_nn_rules_are_locally_complete(
    op: str, since: int, xs: list[np.ndarray], rs: list[np.ndarray], attrs: dict[str, Any]
) -> None:
    with jax.enable_x64(True):
        (err,) = local_completeness(op, xs, rs, attrs, since=since)
    assert err.max() < 1e-10, err.max()


ROWS = np.array(
    [
        [1.0, -2.0, 3.0, 0.5],
        [0.0, 0.0, 0.0, 0.0],
        [-4.0, -1.0, -2.0, -0.5],
        [-1.0, 0.0, -2.0, 0.0],
        [0.3, 0.2, -0.1, 2.5],
        [0.0, 0.0, 0.0, 0.0],
    ]
)
ROWS_R = np.array(
    [
        [0.5, -2.0, 1.0, 0.5],
        [0.0, 0.0, 0.0, 0.0],
        [1.0, 2.0, -2.0, 0.0],
        [-1.0, 3.0, -2.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.3, -0.2, 0.1, 1.0],
    ]
)


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer_rule_is_locally_complete(norm: str) -> None:
    """Rows zero on both sides, on one side only (the row is then copied on that side), negative rows,
    rows whose max is 0; float32 as onnxruntime computes."""
    with jax.enable_x64(True):
        (err,) = local_completeness("Normalizer", [ROWS], [ROWS_R], dict(norm=norm), since=1, domain=ML)
        assert err.max() < 1e-5, err.max()
        (err,) = local_completeness("Normalizer", [ROWS[0]], [ROWS_R[2]], dict(norm=norm), since=1, domain=ML)
        assert err.max() < 1e-5, err.max()


W3 = [0.5, -1.0, 0.2, 1.0, 0.3, -0.4, -0.2, 0.1, 0.7]
B3 = [0.1, -0.2, 0.3]
X5 = np.array([[1.0, -2.0, 3.0], [0.0, 0.0, 0.0], [-4.0, -1.0, -2.0], [0.1, 0.2, -0.1], [0.05, 0.1, 0.0]])
R5 = np.array([[0.5, -2.0, 1.0], [1.0, 0.0, 2.0], [-4.0, -1.0, -2.0], [0.0, 0.0, 0.0], [300.0, -100.0, 50.0]])


@pytest.mark.parametrize("post_transform", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_linear_classifier_rule_is_locally_complete(post_transform: str) -> None:
    """3 classes and the one-row binary form; the last reference row saturates the softmax, and
    intercepts with a 0 make SOFTMAX_ZERO treat some scores as zero on one side only."""
    x, r = X5, R5
    intercepts = [0.0, -0.2, 0.3] if post_transform == "SOFTMAX_ZERO" else B3
    if post_transform == "PROBIT":  # defined for scores in (0, 1)
        x, r = 0.05 * np.abs(x) + 0.3, 0.05 * np.abs(np.clip(r, -3, 3)) + 0.3
        intercepts = [0.2, 0.3, 0.4]
    coefficients = W3 if post_transform != "PROBIT" else [abs(w) * 0.1 for w in W3]
    attrs = dict(
        coefficients=coefficients, intercepts=intercepts, classlabels_ints=[3, 5, 7], post_transform=post_transform
    )
    with jax.enable_x64(True):
        # float32 throughout (as onnxruntime): the saturated row has log-sum-exps ~260 apart, whose float32
        # spacing (3e-5) bounds how exactly the softmax's log step can match an output change of ~0.7.
        (err,) = local_completeness("LinearClassifier", [x], [r], attrs, since=1, domain=ML, n_outputs=2)
        assert err.max() < 1e-4, err.max()
        if post_transform != "PROBIT":
            binary = dict(
                coefficients=[0.5, -1.0, 0.2], intercepts=[-0.1], classlabels_ints=[4, 9], post_transform=post_transform
            )
            (err,) = local_completeness("LinearClassifier", [x], [r], binary, since=1, domain=ML, n_outputs=2)
            assert err.max() < 1e-5, err.max()


# --- 2. references -------------------------------------------------------------------------------------

# Function-expanded backend cases: the op's function body as a graph of primitive ops.
EXPANDED_PREFIXES = (
    "test_layer_normalization_",
    "test_reduce_l1_",
    "test_reduce_l2_",
    "test_reduce_sum_square_",
    "test_reduce_log_sum_",
    "test_reduce_log_sum_exp_",
)


def _cases() -> dict[str, Any]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.name: c for c in collect_testcases(None) if c.name.startswith(EXPANDED_PREFIXES)}


def _mixes_samples(case: Any) -> bool:
    """Whether the case's node normalizes over axis 0, or reduces it away: the explainer evaluates each
    sample (row of axis 0) separately, so such a case has no per-sample meaning."""
    node = case.model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    data = case.data_sets[0][0]
    rank = data[0].ndim
    if node.op_type == "LayerNormalization":
        return attrs.get("axis", -1) % rank == 0
    axes = data[1].tolist() if len(data) > 1 else attrs.get("axes", [])
    return not attrs.get("keepdims", 1) and (not axes or 0 in [a % rank for a in axes])


def _expanded_pairs() -> list[Any]:
    cases = _cases()
    params = []
    seen: set[str] = set()
    for name, case in sorted(cases.items()):
        if name.endswith("_expanded") or "_expanded_" in name or f"{name}_expanded" not in cases:
            continue
        if "empty_set" in name or name.endswith("_example"):
            continue  # nothing to explain / a duplicate of the random case with fixed data
        if _mixes_samples(case):
            continue
        op = case.model.graph.node[0].op_type
        # One case per op in the default run; the sweep over all of them is marked slow.
        slow = op in seen
        seen.add(op)
        params.append(pytest.param(name, id=name[5:], marks=[pytest.mark.slow] if slow else []))
    return params


def _as_explainable(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> tuple[onnx.ModelProto, np.ndarray]:
    """The first graph input stays an input with a symbolic batch dim; the others (axes, scale, bias)
    become initializers. Returns the model and the first input's value."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    first, *rest = list(graph.input)
    for vi, value in zip(rest, inputs[1:]):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), vi.name))
    del graph.input[1:]
    first.type.tensor_type.shape.dim[0].ClearField("dim_value")
    first.type.tensor_type.shape.dim[0].dim_param = "N"
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    return model, np.asarray(inputs[0])


def _in_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every float32 tensor made float64: declared types, initializers, Constant values,
    Cast targets and LayerNormalization's stash_type, so that both references compute in float64."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name)
            )
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float64), attr.t.name))
            elif (node.op_type, attr.name) in (("Cast", "to"), ("LayerNormalization", "stash_type")) and (
                attr.i == TensorProto.FLOAT
            ):
                attr.i = TensorProto.DOUBLE
        if node.op_type == "LayerNormalization" and not any(a.name == "stash_type" for a in node.attribute):
            node.attribute.append(helper.make_attribute("stash_type", TensorProto.DOUBLE))
    return model


def _background(x: np.ndarray, rng: np.random.Generator, n: int = 4) -> np.ndarray:
    """n perturbed copies of the first sample: multiplicative noise keeps signs (positive data stays
    positive for ReduceLogSum); about a quarter of the positions equal the sample's."""
    base = np.broadcast_to(x[:1], (n, *x.shape[1:]))
    noisy = base * np.exp(0.3 * rng.standard_normal(base.shape)) + 0.05 * np.abs(base).mean() * rng.standard_normal(
        base.shape
    )
    if np.all(x > 0):
        noisy = np.abs(noisy)
    keep = rng.uniform(size=base.shape) < 0.25
    return np.where(keep, base, noisy).astype(x.dtype)


def _tolerance(dtype: np.dtype[Any]) -> float:
    return 1e-9 if dtype == np.float64 else 2e-5


def assert_attributions_agree(a: np.ndarray, b: np.ndarray, dtype: np.dtype[Any], what: str) -> float:
    """|a - b| <= tol * max|b| (attributions of both references are rounded at the model's precision)."""
    scale = max(float(np.abs(b).max()), 1e-30)
    gap = float(np.abs(a - b).max()) / scale
    assert gap < _tolerance(dtype), f"{what}: attributions differ by {gap:.3g} of their largest value"
    return gap


@pytest.mark.parametrize("name", _expanded_pairs())
def test_agrees_with_function_expanded_case(name: str) -> None:
    """The op and its function body explained on the same sample and background give the same attributions
    (both models made float64).

    They agree exactly in exact arithmetic: each step of the body carries the same primitive rule as the
    composite (Mul(x, x) is a two-player Shapley value with multiplier x + r, the rescale of x*x; a chain
    of one-input rescales is the rescale of their composition, as the secants telescope; Div(d, s) is
    the bilinear d * (1/s); LayerNormalization's E[x^2] - E[x]^2 has the same multipliers as E[(x - m)^2]
    because the centred multipliers sum to zero). ReduceLogSumExp's shift cancels in the secants.
    """
    cases = _cases()
    case, expanded = cases[name], cases[f"{name}_expanded"]
    inputs = [np.asarray(v, np.float64) if np.asarray(v).dtype == np.float32 else v for v in case.data_sets[0][0]]
    op_model, x = _as_explainable(_in_float64(case.model), inputs)
    exp_model, _ = _as_explainable(_in_float64(expanded.model), inputs)
    background = _background(x, np.random.default_rng(5))
    got = onnxshap.Explainer(op_model, background).explain(x)
    want = onnxshap.Explainer(exp_model, background).explain(x)
    assert got.max_relative_residual < 1e-5 and want.max_relative_residual < 1e-5
    np.testing.assert_allclose(got.prediction, want.prediction, rtol=1e-5, atol=1e-6)
    assert_attributions_agree(got.values, want.values, x.dtype, name)


# Naive graphs of primitive ops for the ops without a function body.


def _model(
    nodes: list[onnx.NodeProto],
    x: np.ndarray,
    inits: dict[str, np.ndarray],
    outputs: Sequence[str] = ("y",),
    opsets: Sequence[tuple[str, int]] = (("", 18),),
) -> onnx.ModelProto:
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", elem, ["N", *x.shape[1:]])],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=8)


def _assert_explanations_agree(
    op_model: onnx.ModelProto, naive: onnx.ModelProto, x: np.ndarray, what: str, outputs: str | None = None
) -> float:
    background = _background(x, np.random.default_rng(6))
    got = onnxshap.Explainer(op_model, background, outputs=outputs).explain(x)
    want = onnxshap.Explainer(naive, background, outputs=outputs).explain(x)
    assert got.max_relative_residual < 1e-5 and want.max_relative_residual < 1e-5
    np.testing.assert_allclose(got.prediction, want.prediction, rtol=1e-5, atol=1e-6)
    return assert_attributions_agree(got.values, want.values, x.dtype, what)


def _c(value: Any, dtype: Any = np.float64) -> np.ndarray:
    return np.asarray(value, dtype)


def test_instance_normalization_agrees_with_naive_graph() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 5))
    inits = {"s": rng.standard_normal(3), "b": rng.standard_normal(3)}
    op = _model([helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)], x, inits)
    naive_inits = {
        "s4": inits["s"].reshape(3, 1, 1),
        "b4": inits["b"].reshape(3, 1, 1),
        "eps": _c(np.float32(1e-3)),
        "ax": _c([2, 3], np.int64),
    }
    naive = _model(
        [
            helper.make_node("ReduceMean", ["x", "ax"], ["mean"]),
            helper.make_node("Sub", ["x", "mean"], ["c"]),
            helper.make_node("Mul", ["c", "c"], ["c2"]),
            helper.make_node("ReduceMean", ["c2", "ax"], ["var"]),
            helper.make_node("Add", ["var", "eps"], ["ve"]),
            helper.make_node("Sqrt", ["ve"], ["std"]),
            helper.make_node("Div", ["c", "std"], ["n"]),
            helper.make_node("Mul", ["n", "s4"], ["ns"]),
            helper.make_node("Add", ["ns", "b4"], ["y"]),
        ],
        x,
        naive_inits,
    )
    _assert_explanations_agree(op, naive, x, "InstanceNormalization")


@pytest.mark.parametrize("size", [3, pytest.param(4, marks=pytest.mark.slow)])
def test_lrn_agrees_with_naive_graph(size: int) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 5, 3, 2))
    # ONNX float attributes are float32: the naive graph's float64 constants take the same rounded values.
    alpha, beta, bias = (float(np.float32(v)) for v in (0.4, 0.75, 1.5))
    op = _model([helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)], x, {})
    before = (size - 1) // 2
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("Pad", ["sq", "pads"], ["padded"])]
    inits = {
        "pads": _c([0, before, 0, 0, 0, size - 1 - before, 0, 0], np.int64),
        "axis": _c([1], np.int64),
        "k": _c(alpha / size),
        "bias": _c(bias),
        "beta": _c(beta),
    }
    for i in range(size):
        inits[f"s{i}"], inits[f"e{i}"] = _c([i], np.int64), _c([i + 5], np.int64)
        nodes.append(helper.make_node("Slice", ["padded", f"s{i}", f"e{i}", "axis"], [f"w{i}"]))
    total = "w0"
    for i in range(1, size):
        nodes.append(helper.make_node("Add", [total, f"w{i}"], [f"t{i}"]))
        total = f"t{i}"
    nodes += [
        helper.make_node("Mul", [total, "k"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["base"]),
        helper.make_node("Pow", ["base", "beta"], ["d"]),
        helper.make_node("Div", ["x", "d"], ["y"]),
    ]
    _assert_explanations_agree(op, _model(nodes, x, inits), x, f"LRN size {size}")


@pytest.mark.parametrize("p", [pytest.param(1, marks=pytest.mark.slow), 2, pytest.param(3, marks=pytest.mark.slow)])
def test_lp_pool_agrees_with_naive_graph(p: int) -> None:
    """LpPool = (window sum of |x|^p)^(1/p); the naive window sum is AveragePool (padding counted) times
    the window size."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 2, 5, 6))
    pool = dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1])
    op = _model([helper.make_node("LpPool", ["x"], ["y"], p=p, **pool)], x, {})
    naive = _model(
        [
            helper.make_node("Abs", ["x"], ["a"]),
            helper.make_node("Pow", ["a", "p"], ["ap"]),
            helper.make_node("AveragePool", ["ap"], ["avg"], count_include_pad=1, **pool),
            helper.make_node("Mul", ["avg", "k"], ["total"]),
            helper.make_node("Pow", ["total", "inv_p"], ["y"]),
        ],
        x,
        {"p": _c(p), "k": _c(6.0), "inv_p": _c(1.0 / p)},
    )
    _assert_explanations_agree(op, naive, x, f"LpPool p={p}")


def test_global_lp_pool_agrees_with_naive_graph() -> None:
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 4, 2))
    op = _model([helper.make_node("GlobalLpPool", ["x"], ["y"], p=3)], x, {})
    naive = _model(
        [
            helper.make_node("Abs", ["x"], ["a"]),
            helper.make_node("Pow", ["a", "p"], ["ap"]),
            helper.make_node("ReduceSum", ["ap", "ax"], ["total"], keepdims=1),
            helper.make_node("Pow", ["total", "inv_p"], ["y"]),
        ],
        x,
        {"p": _c(3.0), "ax": _c([2, 3], np.int64), "inv_p": _c(1 / 3)},
    )
    _assert_explanations_agree(op, naive, x, "GlobalLpPool")


def test_reduce_prod_chain_agrees_with_mul_chain() -> None:
    """Over more than PROD_SHAPLEY_MAX elements the rule is the DeepLIFT chain ((x0 * x1) * x2) * ...:
    the same as a graph of Mul nodes in that order (each Mul an exact two-player Shapley value)."""
    rng = np.random.default_rng(11)
    k = PROD_SHAPLEY_MAX + 3
    x = 1 + 0.4 * rng.standard_normal((2, k, 3))
    op = _model([helper.make_node("ReduceProd", ["x", "ax"], ["y"], keepdims=0)], x, {"ax": _c([1], np.int64)})
    nodes = [helper.make_node("Gather", ["x", f"i{j}"], [f"f{j}"], axis=1) for j in range(k)]
    inits = {f"i{j}": _c(j, np.int64) for j in range(k)}
    acc = "f0"
    for j in range(1, k):
        out = "y" if j == k - 1 else f"p{j}"
        nodes.append(helper.make_node("Mul", [acc, f"f{j}"], [out]))
        acc = out
    _assert_explanations_agree(op, _model(nodes, x, inits), x, "ReduceProd chain")


@pytest.mark.parametrize("k", [3, pytest.param(PROD_SHAPLEY_MAX, marks=pytest.mark.slow)])
def test_reduce_prod_gives_exact_shapley_values(k: int) -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, k))
    x[1, 0] = 0.0  # a zero factor
    background = rng.standard_normal((3, k))
    background[0, 1] = x[0, 1]
    model = _model([helper.make_node("ReduceProd", ["x"], ["y"], axes=[1], keepdims=0)], x, {}, opsets=(("", 13),))
    e = onnxshap.Explainer(model, background).explain(x)
    want = np.array([np.mean([player_shapley(np.prod, xi, ri) for ri in background], axis=0) for xi in x])
    np.testing.assert_allclose(e.values[..., 0], want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "norm", [pytest.param("MAX", marks=pytest.mark.slow), pytest.param("L1", marks=pytest.mark.slow), "L2"]
)
def test_normalizer_agrees_with_naive_graph(norm: str) -> None:
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    op = _model([helper.make_node("Normalizer", ["x"], ["y"], domain=ML, norm=norm)], x, {}, opsets=(("", 18), (ML, 3)))
    inits = {"ax": _c([1], np.int64)}
    divisor = {
        "MAX": [helper.make_node("ReduceMax", ["x", "ax"], ["d"], keepdims=1)],
        "L1": [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("ReduceSum", ["a", "ax"], ["d"], keepdims=1)],
        "L2": [
            helper.make_node("Mul", ["x", "x"], ["sq"]),
            helper.make_node("ReduceSum", ["sq", "ax"], ["s"], keepdims=1),
            helper.make_node("Sqrt", ["s"], ["d"]),
        ],
    }[norm]
    naive = _model([*divisor, helper.make_node("Div", ["x", "d"], ["y"])], x, inits)
    _assert_explanations_agree(op, naive, x, f"Normalizer {norm}")


@pytest.mark.parametrize(
    "post_transform",
    [
        "SOFTMAX",
        "BINARY_LOGISTIC",
        *(pytest.param(t, marks=pytest.mark.slow) for t in ("NONE", "LOGISTIC", "SOFTMAX_ZERO", "BINARY_NONE")),
    ],
)
def test_linear_classifier_agrees_with_naive_graph(post_transform: str) -> None:
    """NONE = MatMul + Add; SOFTMAX (and SOFTMAX_ZERO without zero scores) = Softmax after it; LOGISTIC =
    Sigmoid; the one-row binary form = Concat(1 - p, p)."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    binary = post_transform.startswith("BINARY_")
    transform = post_transform.removeprefix("BINARY_")
    w = rng.standard_normal((1 if binary else 3, 4)).astype(np.float32)
    b = rng.standard_normal(len(w)).astype(np.float32)
    labels = [0, 1] if binary else [0, 1, 2]
    op = _model(
        [
            helper.make_node(
                "LinearClassifier",
                ["x"],
                ["label", "y"],
                domain=ML,
                coefficients=w.reshape(-1).tolist(),
                intercepts=b.tolist(),
                classlabels_ints=labels,
                post_transform=transform,
            )
        ],
        x,
        {},
        outputs=("label", "y"),
        opsets=(("", 18), (ML, 3)),
    )
    nodes = [helper.make_node("MatMul", ["x", "wt"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["s"])]
    last = {
        "NONE": [],
        "SOFTMAX": [helper.make_node("Softmax", ["s"], ["t"], axis=1)],
        "SOFTMAX_ZERO": [helper.make_node("Softmax", ["s"], ["t"], axis=1)],
        "LOGISTIC": [helper.make_node("Sigmoid", ["s"], ["t"])],
    }[transform]
    nodes += last
    score = "t" if last else "s"
    inits = {"wt": w.T.copy(), "b": b}
    if binary:
        nodes += [
            helper.make_node("Sub", ["one", score], ["q"]),
            helper.make_node("Concat", ["q", score], ["y"], axis=1),
        ]
        inits["one"] = np.ones((1, 1), np.float32)
    else:
        nodes.append(helper.make_node("Identity", [score], ["y"]))
    _assert_explanations_agree(op, _model(nodes, x, inits), x, f"LinearClassifier {post_transform}", outputs="y")


# --- 3. end to end ---------------------------------------------------------------------------------------


def _e2e_groups() -> list[Any]:
    """Graphs of several branches, one per op, each reading h = x @ W reshaped to [N, 3, 4] (h4: [N, 3, 4, 1],
    h2: [N, 12], hp: |h| for the logs of sums) and writing output "<op>": one compilation per group."""
    ml = (("", 18), (ML, 3))
    reduce18 = [
        helper.make_node(op, ["hp" if op == "ReduceLogSum" else "h", "ax"], [op], keepdims=0) for op in REDUCE_OPS
    ]
    reduce13 = [
        helper.make_node(op, ["hp" if op == "ReduceLogSum" else "h"], [op], axes=[2], keepdims=1) for op in REDUCE_OPS
    ]
    nn = [
        helper.make_node("InstanceNormalization", ["h", "s", "b"], ["InstanceNormalization"]),
        helper.make_node("LRN", ["h4"], ["LRN"], size=3, alpha=0.3),
        helper.make_node("LpPool", ["h4"], ["LpPool"], kernel_shape=[2, 2], p=2, pads=[1, 0, 0, 1]),
        helper.make_node("GlobalLpPool", ["h4"], ["GlobalLpPool"], p=3),
    ]
    normalizers = [
        helper.make_node("Normalizer", ["h2"], [f"Normalizer-{n}"], domain=ML, norm=n) for n in ("MAX", "L1", "L2")
    ]

    def classifier(transform: str, intercepts: list[float]) -> onnx.NodeProto:
        return helper.make_node(
            "LinearClassifier",
            ["h2"],
            [f"label-{transform}", f"LinearClassifier-{transform}"],
            domain=ML,
            coefficients=(np.arange(36) % 5 * 0.03 - 0.05).tolist(),
            intercepts=intercepts,
            classlabels_ints=[0, 1, 2],
            post_transform=transform,
        )

    classifiers = [classifier(t, [0.1, -0.2, 0.3]) for t in ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO")]
    # PROBIT is defined for scores in (0, 1): intercepts 0.4-0.6 and small inputs (scale 0.1 below).
    probit = [classifier("PROBIT", [0.4, 0.5, 0.6])]
    inits = {
        "ax": np.array([1], np.int64),
        "s": np.array([1.5, -0.5, 2.0], np.float32),
        "b": np.array([0.1, 0.2, -0.3], np.float32),
    }
    return [
        pytest.param(reduce18, inits, (("", 18),), 300.0, id="reduce-axes-input"),
        pytest.param(reduce13, inits, (("", 13),), 300.0, id="reduce-axes-attribute"),
        pytest.param(nn, inits, (("", 18),), 1.0, id="nn"),
        pytest.param(normalizers, inits, ml, 1.0, id="normalizer"),
        pytest.param(classifiers, inits, ml, 1.0, id="linear-classifier"),
        pytest.param(probit, inits, ml, 0.1, id="ml-probit"),
    ]


@pytest.mark.parametrize(("nodes", "inits", "opsets", "scale"), _e2e_groups())
def test_small_graphs_explain_completely(
    nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], opsets: tuple[tuple[str, int], ...], scale: float
) -> None:
    """x [N, 6] -> MatMul W [6, 12] -> the ops, float32. A scale above 1 multiplies the first two samples
    (300: exp saturates in float32 in ReduceLogSumExp, products and squares grow large); below 1, all rows."""
    rng = np.random.default_rng(15)
    w = rng.standard_normal((6, 12)).astype(np.float32)
    mix = [
        helper.make_node("MatMul", ["x", "w"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape3"], ["h"]),
        helper.make_node("Abs", ["h"], ["hp"]),
        helper.make_node("Reshape", ["h", "shape4"], ["h4"]),
        helper.make_node("Reshape", ["h", "shape2"], ["h2"]),
    ]
    shapes = {
        "shape3": np.array([-1, 3, 4], np.int64),
        "shape4": np.array([-1, 3, 4, 1], np.int64),
        "shape2": np.array([-1, 12], np.int64),
    }
    x = rng.standard_normal((4, 6)).astype(np.float32)
    background = rng.standard_normal((8, 6)).astype(np.float32)
    if scale > 1:
        x[:2] *= scale
    else:
        x, background = scale * x, scale * background
    explained = [o for n in nodes for o in n.output if not o.startswith("label")]
    model = _model(
        mix + nodes, x, {"w": w, **shapes, **inits}, outputs=[o for n in nodes for o in n.output], opsets=opsets
    )
    e = onnxshap.Explainer(model, background, outputs=explained).explain(x)
    assert np.all(np.isfinite(e.prediction))
    worst = {name: 0.0 for name in explained}
    for label, rel in zip(e.output_names, e.relative_residual.max(axis=0)):
        name = label.split("[")[0]
        worst[name] = max(worst[name], float(rel))
    assert max(worst.values()) < 1e-5, worst


def test_sklearn_logistic_regression_explains_completely() -> None:
    """models/sklearn_logreg.onnx: Scaler, LinearClassifier (SOFTMAX), Normalizer (L1)."""
    model = onnxshap.load(REPO / "models" / "sklearn_logreg.onnx")
    rng = np.random.default_rng(16)
    shift = np.array([0, 1, -1, 2, 0, 5], np.float32)
    scale = np.array([1, 2, 0.5, 3, 1, 1], np.float32)
    x = (rng.standard_normal((5, 6)) * scale + shift).astype(np.float32)
    background = (rng.standard_normal((16, 6)) * scale + shift).astype(np.float32)
    e = onnxshap.Explainer(model, background, outputs="probabilities").explain(x)
    assert e.values.shape == (5, 6, 3)
    assert e.max_relative_residual < 1e-5
    # Probabilities sum to 1 for every input, so each feature's attributions over the classes cancel.
    np.testing.assert_allclose(e.values.sum(axis=-1), 0, atol=1e-5)
