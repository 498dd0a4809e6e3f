"""Each rule family against an independent, naive reference, in float64.

References are deliberately slow and obvious: Shapley values by enumerating every coalition,
secants by definition. Every rule is also checked for local completeness.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onnxshap import _multipliers as M
from onnxshap._graph import Node
from onnxshap.ops import elementwise as E
from tests.helpers import player_shapley


@pytest.fixture(autouse=True)
def x64() -> Any:
    with jax.enable_x64(True):
        yield


def _node(op: str, attrs: dict[str, Any] | None = None, since: int = 13) -> Node:
    return Node(0, "n", op, "", since, ("a", "b", "c")[:1], ("y",), attrs or {}, None)


def _ctx(
    op: str, fn: Callable[..., Any], xs: list[Any], rs: list[Any], attrs: dict[str, Any] | None = None, since: int = 13
) -> M.NodeContext:
    f = lambda *a: (fn(*a),)
    xs = [jnp.asarray(v) for v in xs]
    rs = [jnp.asarray(v) for v in rs]
    return M.NodeContext(_node(op, attrs, since), f, xs, rs, f(*xs), f(*rs), [True] * len(xs))


def brute_force_shapley(f: Callable[..., np.ndarray], xs: list[np.ndarray], rs: list[np.ndarray]) -> list[np.ndarray]:
    """Shapley value of each whole input (player) for every output element, by enumeration."""
    k = len(xs)
    phis = []
    for j in range(k):
        others = [p for p in range(k) if p != j]
        total = 0.0
        for size in range(k):
            for subset in itertools.combinations(others, size):
                w = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                with_j = [xs[p] if (p in subset or p == j) else rs[p] for p in range(k)]
                without = [xs[p] if p in subset else rs[p] for p in range(k)]
                total = total + w * (f(*with_j) - f(*without))
        phis.append(np.asarray(total))
    return phis


def _seeded_phi(rule: M.Rule, ctx: M.NodeContext, position: int, out_index: tuple[int, ...]) -> float:
    """Attribution of input `position` to one output element: seed that element, sum m * delta."""
    seed = jnp.zeros_like(ctx.xout[0]).at[out_index].set(1.0)
    m = rule(ctx, [seed])[position]
    return float(jnp.sum(m * (ctx.xin[position] - ctx.rin[position])))


@pytest.mark.parametrize(
    ("op", "fn"), [("Mul", E.mul), ("Div", E.div), ("Max", E.max_), ("Min", E.min_), ("Pow", E.pow_)]
)
def test_shapley_two_players_matches_enumeration(op: str, fn: Callable[..., Any], rng: np.random.Generator) -> None:
    x = [rng.uniform(0.5, 2, (3, 4)), rng.uniform(0.5, 2, (3, 4))]
    r = [rng.uniform(0.5, 2, (3, 4)), rng.uniform(0.5, 2, (3, 4))]
    r[0][0, 0] = x[0][0, 0]  # a player that does not move
    ctx = _ctx(op, fn, x, r)
    want = brute_force_shapley(lambda a, b: np.asarray(fn(jnp.asarray(a), jnp.asarray(b))), x, r)
    for i, j in [(0, 0), (1, 2), (2, 3)]:
        for p in range(2):
            assert _seeded_phi(M.shapley, ctx, p, (i, j)) == pytest.approx(float(want[p][i, j]), rel=1e-9, abs=1e-12)


def test_shapley_three_players_with_broadcast(rng: np.random.Generator) -> None:
    fn = lambda a, b, c: E.max_(a, b, c)
    x = [rng.normal(size=(2, 3)), rng.normal(size=(1, 3)), rng.normal(size=(2, 1))]
    r = [rng.normal(size=(2, 3)), rng.normal(size=(1, 3)), rng.normal(size=(2, 1))]
    ctx = _ctx("Max", fn, x, r)
    ctx = M.NodeContext(
        Node(0, "n", "Max", "", 13, ("a", "b", "c"), ("y",), {}, None),
        ctx.fn,
        ctx.xin,
        ctx.rin,
        ctx.xout,
        ctx.rout,
        [True, True, True],
    )
    for i, j in [(0, 0), (1, 2)]:
        # Each broadcast player contributes through one element per output element.
        xs = [x[0][i, j], x[1][0, j], x[2][i, 0]]
        rs = [r[0][i, j], r[1][0, j], r[2][i, 0]]
        want = brute_force_shapley(lambda a, b, c: np.maximum(np.maximum(a, b), c), xs, rs)
        for p in range(3):
            assert _seeded_phi(M.shapley, ctx, p, (i, j)) == pytest.approx(float(want[p]), abs=1e-12)


def test_rescale_is_the_secant_and_finite_at_equal_inputs() -> None:
    x = jnp.array([1.0, -2.0, 0.3, 0.7])
    r = jnp.array([-1.0, 3.0, 0.3, 0.7 + 1e-12])
    ctx = _ctx("Tanh", E.tanh, [x], [r])
    m = M.rescale(ctx, [jnp.ones(4)])[0]
    secant = (np.tanh(x) - np.tanh(r))[:2] / (x - r)[:2]
    np.testing.assert_allclose(np.asarray(m[:2]), secant, rtol=1e-12)
    # x == r: the derivative, never NaN.
    np.testing.assert_allclose(np.asarray(m[2:]), 1 - np.tanh(np.asarray(x[2:])) ** 2, rtol=1e-6)


def test_bilinear_matmul_is_exact_two_player_shapley(rng: np.random.Generator) -> None:
    a, ar = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    b, br = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    ctx = _ctx("MatMul", jnp.matmul, [a, b], [ar, br])
    want = brute_force_shapley(lambda p, q: p @ q, [a, b], [ar, br])
    for i, j in [(0, 0), (1, 3)]:
        for p in range(2):
            assert _seeded_phi(M.bilinear, ctx, p, (i, j)) == pytest.approx(float(want[p][i, j]), abs=1e-12)


#: The max rule as the pass runs it, compiled (run op by op, each test compiled dozens of primitives).
_max_values = jax.jit(M.max_shapley_values)


def brute_force_max(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    return player_shapley(np.max, x, r)


def test_max_rule_worked_example_from_design() -> None:
    phi = np.asarray(M.max_shapley_values(jnp.array([[1.0, 3.0, 2.0]]), jnp.array([[2.5, 0.0, 0.0]])))[0]
    np.testing.assert_allclose(phi, [-7 / 12, 11 / 12, 1 / 6], atol=1e-12)
    cross = np.asarray(M.cross_max_values(jnp.array([[1.0, 3.0, 2.0]]), jnp.array([[2.5, 0.0, 0.0]])))[0]
    np.testing.assert_allclose(cross, [0.0, 0.5, 0.0], atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8, 11])
def test_max_rule_matches_enumeration(n: int, rng: np.random.Generator) -> None:
    xs = rng.normal(size=(20, n))
    rs = rng.normal(size=(20, n))
    xs[:5] = np.round(xs[:5])  # ties within and across sides
    rs[:5] = np.round(rs[:5])
    rs[5] = xs[5]  # x == r
    got = np.asarray(_max_values(jnp.asarray(xs), jnp.asarray(rs)))
    for row in range(20):
        want = brute_force_max(xs[row], rs[row])
        np.testing.assert_allclose(got[row], want, atol=1e-10, err_msg=f"row {row}")
        assert got[row].sum() == pytest.approx(xs[row].max() - rs[row].max(), abs=1e-10)


@pytest.mark.parametrize("n", [4, 9])
def test_max_rule_masked_positions_get_nothing(n: int, rng: np.random.Generator) -> None:
    # -inf on both sides (masked attention scores): finite values, zero credit to the masked players.
    x, r = rng.normal(size=(6, n)), rng.normal(size=(6, n))
    x[:, :2] = r[:, :2] = -np.inf
    x[0, 2:] = r[0, 2:] = -np.inf  # a fully masked window
    phi = np.asarray(_max_values(jnp.asarray(x), jnp.asarray(r)))
    assert np.all(np.isfinite(phi))
    np.testing.assert_array_equal(phi[:, :2], 0)
    for row in range(1, 6):
        np.testing.assert_allclose(phi[row, 2:], brute_force_max(x[row, 2:], r[row, 2:]), atol=1e-10)


def test_max_game_weight_table_equals_lgamma(monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator) -> None:
    x, r = rng.normal(size=(5, 40)), rng.normal(size=(5, 40))
    table = np.asarray(M.max_shapley_values(jnp.asarray(x), jnp.asarray(r)))
    monkeypatch.setattr(M, "MAX_WEIGHT_TABLE_SIZE", 0)
    direct = np.asarray(M.max_shapley_values(jnp.asarray(x), jnp.asarray(r)))
    np.testing.assert_allclose(table, direct, rtol=1e-12, atol=1e-14)


def test_max_rule_large_window_is_complete(rng: np.random.Generator) -> None:
    x, r = rng.normal(size=(4, 1000)), rng.normal(size=(4, 1000))
    phi = np.asarray(_max_values(jnp.asarray(x), jnp.asarray(r)))
    np.testing.assert_allclose(phi.sum(-1), x.max(-1) - r.max(-1), atol=1e-9)


def _naive_log_softmax_multipliers(x: np.ndarray, r: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Step by step: z = x - L; L = log(S) (secant); S = sum(e) (linear); e = exp(x) (secant)."""
    e_x, e_r = np.exp(x), np.exp(r)
    s_x, s_r = e_x.sum(), e_r.sum()
    m_l = -m.sum()
    m_s = m_l * (np.log(s_x) - np.log(s_r)) / (s_x - s_r)
    return m + m_s * (e_x - e_r) / (x - r)


def test_log_softmax_composite_matches_naive_composition(rng: np.random.Generator) -> None:
    x, r, m = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
    ctx = _ctx("LogSoftmax", lambda v: jax.nn.log_softmax(v, -1), [x[None]], [r[None]], {"axis": -1})
    got = np.asarray(M.log_softmax(ctx, [jnp.asarray(m[None])])[0])[0]
    np.testing.assert_allclose(got, _naive_log_softmax_multipliers(x, r, m), rtol=1e-9)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_softmax_composite_is_complete_even_when_saturated(scale: float, rng: np.random.Generator) -> None:
    x, r = scale * rng.normal(size=(2, 6)), scale * rng.normal(size=(2, 6))
    ctx = _ctx("Softmax", lambda v: jax.nn.softmax(v, -1), [x], [r], {"axis": -1})
    for out in [(0, 0), (1, 4)]:
        phi = _seeded_phi(M.softmax, ctx, 0, out)
        delta = float(ctx.xout[0][out] - ctx.rout[0][out])
        assert phi == pytest.approx(delta, rel=1e-9, abs=1e-12)


LOCAL_CASES: list[tuple[str, M.Rule, Callable[..., Any], int]] = [
    ("rescale/Relu", M.rescale, E.relu, 1),
    ("rescale/Sigmoid", M.rescale, E.sigmoid, 1),
    ("shapley/Mul", M.shapley, E.mul, 2),
    ("shapley/Div", M.shapley, E.div, 2),
    ("bilinear/MatMul", M.bilinear, jnp.matmul, 2),
    ("linear/Add", M.linear, E.add, 2),
]


@pytest.mark.parametrize(("name", "rule", "fn", "arity"), LOCAL_CASES, ids=[c[0] for c in LOCAL_CASES])
def test_every_rule_is_locally_complete(
    name: str, rule: M.Rule, fn: Callable[..., Any], arity: int, rng: np.random.Generator
) -> None:
    shapes = [(3, 3)] * arity
    xs = [rng.uniform(0.5, 2, s) for s in shapes]
    rs = [rng.uniform(0.5, 2, s) for s in shapes]
    ctx = _ctx(name.split("/")[1], fn, xs, rs)
    m_out = jnp.asarray(rng.normal(size=ctx.xout[0].shape))
    m_in = rule(ctx, [m_out])
    inflow = sum(float(jnp.sum(m * (x - r))) for m, x, r in zip(m_in, ctx.xin, ctx.rin))
    outflow = float(jnp.sum(m_out * (ctx.xout[0] - ctx.rout[0])))
    assert inflow == pytest.approx(outflow, rel=1e-10)
