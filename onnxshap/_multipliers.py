"""The closed set of multiplier rule families (DeepLIFT / DeepSHAP; see docs/rules/index.md).

A rule maps the multipliers of a node's outputs to multipliers of its varying inputs, for one
(sample, reference) pair. Every rule here is *locally complete*: for each output element,
sum over inputs of m_in * (x_in - r_in) equals m_out * (y_x - y_r). Completeness of the whole
graph follows by the chain rule of multipliers (Shrikumar et al., 2017, "Learning Important
Features Through Propagating Activation Differences"; Lundberg & Lee, 2017; Chen, Lundberg &
Lee, 2022, "Explaining a series of models by propagating Shapley values").

Signature of every family: `rule(ctx, m_out) -> list[Array | None]`, one entry per node input,
None where the input does not vary.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._errors import UnsupportedOpError
from onnxshap._graph import Node
from onnxshap._registry import registry

Array = Any

#: |x - r| below this fraction of max(|x|, |r|) counts as "no difference": rescale then uses the
#: derivative at the midpoint instead of the secant slope (the two agree as x -> r).
NEAR_ZERO = 1e-6


@dataclass(frozen=True)
class NodeContext:
    """One node seen from one (sample, reference) pair.

    Attributes:
        node: the graph node.
        fn: its forward function with the attributes bound: fn(*inputs) -> tuple of outputs.
        xin / rin: input values on the sample side and the reference side (None for absent inputs).
        xout / rout: output values on both sides.
        varying: per input, whether it depends on the explained inputs.
    """

    node: Node
    fn: Callable[..., tuple[Array, ...]]
    xin: Sequence[Array | None]
    rin: Sequence[Array | None]
    xout: Sequence[Array | None]
    rout: Sequence[Array | None]
    varying: Sequence[bool]

    @property
    def varying_positions(self) -> list[int]:
        return [i for i, v in enumerate(self.varying) if v]

    def call_with(self, replacements: dict[int, Array], side: str = "x") -> tuple[Array, ...]:
        """Evaluate the node with some inputs replaced; the others from `side` ("x" or "r")."""
        base = self.xin if side == "x" else self.rin
        args = [replacements.get(i, v) for i, v in enumerate(base)]
        return self.fn(*args)


def _cotangent(m: Array | None, y: Array) -> Array:
    """An output's multiplier in the output's dtype; zeros shaped like the output if it has none."""
    return (m if m is not None else jnp.zeros(jnp.shape(y))).astype(jnp.result_type(y))


def _float_outputs(ctx: NodeContext) -> list[int]:
    return [i for i, y in enumerate(ctx.xout) if y is not None and jnp.issubdtype(jnp.result_type(y), jnp.inexact)]


def _vjp_at(
    ctx: NodeContext, point: dict[int, Array], wrt: Sequence[int], m_out: Sequence[Array | None]
) -> list[Array | None]:
    """VJP of the node with respect to inputs `wrt`, evaluated with inputs from `point` (others x side)."""
    if any(is_discrete(point.get(i, ctx.xin[i])) for i in wrt):
        return _vjp_numeric(ctx, point, wrt, m_out)
    outs = _float_outputs(ctx)

    def f(*vs: Array) -> tuple[Array, ...]:
        replaced = dict(point)
        replaced.update(zip(wrt, vs))
        ys = ctx.call_with(replaced)
        return tuple(ys[i] for i in outs)

    primals = [point.get(i, ctx.xin[i]) for i in wrt]
    _, vjp = jax.vjp(f, *primals)
    grads = vjp(tuple(_cotangent(m_out[i], ctx.xout[i]) for i in outs))
    result: list[Array | None] = [None] * len(ctx.xin)
    for i, g in zip(wrt, grads):
        result[i] = g
    return result


def _vjp_numeric(
    ctx: NodeContext, point: dict[int, Array], wrt: Sequence[int], m_out: Sequence[Array | None]
) -> list[Array | None]:
    """`_vjp_at` where some inputs in `wrt` are booleans or integers (a mask moved by Reshape, Expand,
    Concat, Gather...): those enter as numbers of the multiplier dtype (booleans 0/1), so the
    data-movement op carries their multipliers like any other value. Only linear rows get here, and a
    linear op that moves data computes the same on 0/1 numbers as on booleans."""
    dtype = multiplier_dtype(ctx, m_out)
    wanted: list[int] = []

    def f(*vs: Array) -> tuple[Array, ...]:
        replaced = dict(point)
        replaced.update(zip(wrt, vs))
        ys = ctx.call_with(replaced)
        wanted[:] = [i for i, y in enumerate(ys) if y is not None and jnp.issubdtype(jnp.result_type(y), jnp.inexact)]
        return tuple(ys[i] for i in wanted)

    primals = [numeric(v, dtype) if is_discrete(v) else v for v in (point.get(i, ctx.xin[i]) for i in wrt)]
    ys, vjp = jax.vjp(f, *primals)
    cotangents = (_cotangent(m_out[i] if i < len(m_out) else None, y) for i, y in zip(wanted, ys))
    grads = vjp(tuple(cotangents))
    result: list[Array | None] = [None] * len(ctx.xin)
    for i, g in zip(wrt, grads):
        result[i] = g
    return result


def _near_zero(x: Array, r: Array) -> Array:
    # x == r also covers equal infinities (masked attention scores), where x - r is NaN.
    # Relative to the values themselves (not floored at 1): tiny but distinct values keep their secant.
    scale = jnp.maximum(jnp.abs(x), jnp.abs(r))
    return (x == r) | (jnp.abs(x - r) <= NEAR_ZERO * scale)


def is_discrete(v: Array | None) -> bool:
    """Whether a value is boolean or integer: its differences are whole steps, read as numbers (booleans 0/1)."""
    return v is not None and not jnp.issubdtype(jnp.result_type(v), jnp.inexact)


def numeric(v: Array, dtype: Any) -> Array:
    """A value as numbers of `dtype`: booleans as 0/1, integers as themselves. This is the reading every
    multiplier of a boolean or integer tensor refers to: its difference x - r is numeric(x) - numeric(r)
    (in {-1, 0, 1} for booleans), as the pass's completeness records read it."""
    return jnp.asarray(v).astype(dtype)


def multiplier_dtype(ctx: NodeContext, m_out: Sequence[Array | None]) -> Any:
    """The float dtype multipliers take at this node: the outputs' multipliers', else the first float
    output's or input's, else float32."""
    for v in (*m_out, *ctx.xout, *ctx.xin):
        if v is not None and jnp.issubdtype(jnp.result_type(v), jnp.inexact):
            return jnp.result_type(v)
    return jnp.float32


def _numeric_delta(x: Array, r: Array, dtype: Any) -> Array:
    """numeric(x) - numeric(r), exactly 0 where x == r (equal infinities included)."""
    return jnp.where(x == r, 0, numeric(x, dtype) - numeric(r, dtype)).astype(dtype)


def pair_difference(x: Array, r: Array) -> Array:
    """x - r as every multiplier reads it: 0 where x == r or both sides are NaN, 1 where only one side
    is NaN (a missing value: one step from r's value to x's, as a boolean moves by 0/1), else x - r.
    Values that are not floats as x - r."""
    x, r = jnp.asarray(x), jnp.asarray(r)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x - r
    nan_x, nan_r = jnp.isnan(x), jnp.isnan(r)
    step = jnp.where(nan_x & nan_r, 0, 1).astype(jnp.result_type(x))
    return jnp.where(nan_x | nan_r, step, jnp.where(x == r, 0, x - r))


def _with_missing(x: Array, r: Array, y_x: Array, y_r: Array, slope: Array, dtype: Any) -> Array:
    """A one-input elementwise rule's slope where x or r is NaN: the output's change per step of the
    missing value (`pair_difference`), so an Imputer gives its imputed value's change and an op that
    keeps NaN gives 1; 0 where both sides are NaN (a dummy)."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        return slope
    dy = _numeric_delta(y_x, y_r, dtype) if is_discrete(y_x) else pair_difference(y_x, y_r)
    missing = jnp.isnan(x) | jnp.isnan(r)
    return jnp.where(missing, pair_difference(x, r) * dy, slope).astype(jnp.result_type(slope))


def step_slope(x: Array, r: Array, y_x: Array, y_r: Array, dtype: Any) -> Array:
    """Multiplier of a one-input function with a discrete input or output (a comparison's step of
    d = u - v, a Cast to or from booleans or integers): the secant (y(x) - y(r)) / (x - r) over numbers,
    booleans read as 0/1; 0 where the output does not change. A discrete value moves by a whole step or
    not at all, so the secant is exact and locally complete wherever x != r, and no derivative is
    needed where x ~ r: there the output is the same on both sides. Output-shaped, in `dtype`.
    """
    dy = _numeric_delta(y_x, y_r, dtype)
    dx = _numeric_delta(x, r, dtype)
    ok = (dy != 0) & (dx != 0) & jnp.isfinite(dx)
    return jnp.where(ok, dy / jnp.where(ok, dx, 1), 0).astype(dtype)


def _bool_slope(f: Callable[[Array], Array], x: Array, dtype: Any) -> Array:
    """Multiplier of a one-input function of a boolean: f(True) - f(False) read as numbers. Any function
    of one boolean is affine in its 0/1 reading, so this is its exact Jacobian (the secant wherever the
    input changes): Not gives -1, a Cast to numbers 1."""
    shape = jnp.shape(x)
    return numeric(f(jnp.ones(shape, bool)), dtype) - numeric(f(jnp.zeros(shape, bool)), dtype)


# --- families --------------------------------------------------------------------------------------


def linear(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """Affine in the varying inputs: multipliers are the ordinary Jacobian (exact)."""
    return _vjp_at(ctx, {}, ctx.varying_positions, m_out)


def gradient(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """The Jacobian at the sample side (plain gradient x input). NOT complete for nonlinear ops: only
    used when a user names it or allows it as a fallback; the Explanation then lists the node."""
    return _vjp_at(ctx, {}, ctx.varying_positions, m_out)


def zero(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """No attribution flows (shape arithmetic, comparisons, integer outputs)."""
    return [None] * len(ctx.xin)


def rescale_slope(f: Callable[[Array], Array], x: Array, r: Array, y_x: Array, y_r: Array, dtype: Any = None) -> Array:
    """Multiplier of a one-input elementwise f: the secant (f(x) - f(r)) / (x - r), or f'((x + r) / 2)
    where x ~ r (the limit of the secant; never 0/0). Output-shaped.

    A boolean input gives f(True) - f(False) (`_bool_slope`); an integer input or a boolean or integer
    output gives the step secant (`step_slope`), both in `dtype` (default: the float dtype of x or y,
    else float32). Where x or r is NaN: the output's change per step of the missing value (`_with_missing`).
    """
    if is_discrete(x) or is_discrete(y_x):
        if dtype is None:
            dtype = next((jnp.result_type(v) for v in (x, y_x) if not is_discrete(v)), jnp.float32)
        if jnp.result_type(x) == jnp.bool_:
            return _bool_slope(f, x, dtype)
        return _with_missing(x, r, y_x, y_r, step_slope(x, r, y_x, y_r, dtype), dtype)
    near = _near_zero(x, r)
    dx = x - r
    secant = (y_x - y_r) / jnp.where(near, jnp.ones_like(dx), dx)
    mid = (x + r) / 2
    _, slope = jax.jvp(f, (mid,), (jnp.ones_like(mid),))
    return _with_missing(x, r, y_x, y_r, jnp.where(near, slope, secant), dtype)


def _rescale_one(ctx: NodeContext, position: int, m_out: Sequence[Array | None]) -> list[Array | None]:
    x, r = ctx.xin[position], ctx.rin[position]
    # Only absent optional operands are None: a varying input and the first output are present.
    assert x is not None and ctx.xout[0] is not None
    discrete = is_discrete(x) or is_discrete(ctx.xout[0])
    dtype = multiplier_dtype(ctx, m_out) if discrete else None
    multiplier = rescale_slope(lambda v: ctx.call_with({position: v})[0], x, r, ctx.xout[0], ctx.rout[0], dtype)
    m = m_out[0] if m_out[0] is not None else jnp.zeros(jnp.shape(ctx.xout[0]), dtype or jnp.result_type(ctx.xout[0]))
    result: list[Array | None] = [None] * len(ctx.xin)
    result[position] = _unbroadcast(scaled(m, multiplier), jnp.shape(x))
    return result


def rescale(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """One varying input, elementwise: m = (f(x) - f(r)) / (x - r); f'((x + r) / 2) where x ~ r. Exact.

    Booleans and integers are read as numbers (`step_slope`, `_bool_slope`): Cast between booleans,
    integers and floats, and Not, are exact and locally complete.
    """
    positions = ctx.varying_positions
    if len(positions) != 1:
        return shapley(ctx, m_out)
    return _rescale_one(ctx, positions[0], m_out)


def scaled(m: Array, slope: Array) -> Array:
    """m * slope, and 0 where m is 0 and the slope is not finite. A node whose output carries no
    multiplier passes none, even where a side is not finite (the 0/0 branch of a divide_no_nan, or
    the log of a negative number in an untaken branch, that a Where does not select).

    The guard is on the slope, so the product stays the last operation: XLA then fuses it with what
    follows as before, and finite slopes give the bits of m * slope.
    """
    return m * jnp.where(jnp.isfinite(slope) | (m != 0), slope, jnp.zeros((), jnp.result_type(slope)))


def _unbroadcast(value: Array, shape: tuple[int, ...]) -> Array:
    """Sum `value` down to `shape` (the inverse of numpy broadcasting)."""
    if jnp.shape(value) == tuple(shape):
        return value
    extra = jnp.ndim(value) - len(shape)
    value = jnp.sum(value, axis=tuple(range(extra))) if extra else value
    axes = tuple(i for i, (a, b) in enumerate(zip(jnp.shape(value), shape)) if b == 1 and a != 1)
    return jnp.sum(value, axis=axes, keepdims=True) if axes else value


def shapley_slopes(
    f: Callable[[Sequence[Array]], Array], xs: Sequence[Array], rs: Sequence[Array], dtype: Any = None
) -> list[Array]:
    """Per player j of an elementwise f(players), the output-shaped multiplier phi_j / (x_j - r_j), where
    phi_j is the exact Shapley value over the 2^k coalitions (player j takes x_j or r_j). Where player j
    barely moves, phi_j / dx_j is 0/0: the partial derivative at the midpoint of all players (its limit).

    Boolean or integer players or outputs (And, Or, Xor; Min of integers) are read as numbers of
    `dtype` (booleans 0/1): f is still evaluated on the players' own values, only the coalition values
    and the differences are numeric. A discrete player moves by a whole step or not at all, so its
    multiplier is phi_j / dx_j where it moves and 0 where it does not; a discrete output has no
    derivative to fall back on, so every player's multiplier is its secant.
    """
    k = len(xs)
    raw: dict[frozenset[int], Array] = {}
    for size in range(k + 1):
        for subset in itertools.combinations(range(k), size):
            raw[frozenset(subset)] = f([xs[p] if p in subset else rs[p] for p in range(k)])
    discrete_players = [is_discrete(v) for v in xs]
    discrete_out = is_discrete(raw[frozenset(range(k))])
    if not any(discrete_players) and not discrete_out:
        return _float_shapley_slopes(f, xs, rs, raw)
    if dtype is None:
        dtype = next((jnp.result_type(v) for v, d in zip(xs, discrete_players) if not d), jnp.float32)
    values = {s: numeric(v, dtype) for s, v in raw.items()}
    shape = jnp.shape(values[frozenset(range(k))])
    # Discrete players keep their x value where a derivative is taken (it is never taken along them).
    mid = [xs[p] if discrete_players[p] else (xs[p] + rs[p]) / 2 for p in range(k)]
    slopes = []
    for j in range(k):
        phi = _coalition_phi(values, j, k)
        xb, rb = jnp.broadcast_to(xs[j], shape), jnp.broadcast_to(rs[j], shape)
        if discrete_players[j] or discrete_out:
            dx = _numeric_delta(xb, rb, dtype)
            ok = (dx != 0) & (phi != 0) & jnp.isfinite(dx)
            slopes.append(jnp.where(ok, phi / jnp.where(ok, dx, 1), 0).astype(dtype))
            continue
        near = _near_zero(xb, rb)
        _, partial = jax.jvp(
            lambda v, j=j: f([v if p == j else mid[p] for p in range(k)]), (mid[j],), (jnp.ones_like(mid[j]),)
        )
        slopes.append(jnp.where(near, partial, phi / jnp.where(near, 1, xb - rb)))
    return slopes


def _coalition_phi(values: Mapping[frozenset[int], Array], j: int, k: int) -> Array:
    """phi_j = sum over coalitions S without j of |S|! (k - |S| - 1)! / k! * (v(S + j) - v(S))."""
    others = [p for p in range(k) if p != j]
    phi = jnp.zeros_like(values[frozenset(range(k))])
    for size in range(k):
        weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
        for subset in itertools.combinations(others, size):
            s = frozenset(subset)
            phi = phi + weight * (values[s | {j}] - values[s])
    return phi


def _float_shapley_slopes(
    f: Callable[[Sequence[Array]], Array],
    xs: Sequence[Array],
    rs: Sequence[Array],
    values: Mapping[frozenset[int], Array],
) -> list[Array]:
    """`shapley_slopes` for float players and a float output, given the coalition values."""
    k = len(xs)
    y_x = values[frozenset(range(k))]
    shape = jnp.shape(y_x)
    mid = [(x + r) / 2 for x, r in zip(xs, rs)]
    slopes = []
    for j in range(k):
        phi = _coalition_phi(values, j, k)
        xb, rb = jnp.broadcast_to(xs[j], shape), jnp.broadcast_to(rs[j], shape)
        near = _near_zero(xb, rb)
        _, partial = jax.jvp(
            lambda v, j=j: f([v if p == j else mid[p] for p in range(k)]), (mid[j],), (jnp.ones_like(mid[j]),)
        )
        slopes.append(jnp.where(near, partial, phi / jnp.where(near, 1, xb - rb)))
    return slopes


def shapley(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """Elementwise op of k varying inputs: exact Shapley value of the k-player game per output element.

    Player j "takes its x value or its r value"; the 2^k coalitions are enumerated. With one varying
    input this is the rescale rule. Booleans and integers are read as numbers (`shapley_slopes`).
    Where with a varying condition has a closed form (`where_shapley`).
    """
    positions = ctx.varying_positions
    k = len(positions)
    if k == 0:
        return [None] * len(ctx.xin)
    if ctx.node.op_type == "Where" and ctx.varying[0]:
        return where_shapley(ctx, m_out)
    if k == 1:
        return _rescale_one(ctx, positions[0], m_out)
    xs = [ctx.xin[p] for p in positions]
    assert ctx.xout[0] is not None  # the output of an elementwise op is never absent
    discrete = any(is_discrete(v) for v in (*xs, ctx.xout[0]))
    dtype = multiplier_dtype(ctx, m_out) if discrete else None
    slopes = shapley_slopes(
        lambda vals: ctx.call_with(dict(zip(positions, vals)))[0], xs, [ctx.rin[p] for p in positions], dtype
    )
    m = m_out[0] if m_out[0] is not None else jnp.zeros(jnp.shape(ctx.xout[0]), dtype or jnp.result_type(ctx.xout[0]))
    result: list[Array | None] = [None] * len(ctx.xin)
    for j, x, slope in zip(positions, xs, slopes):
        assert x is not None  # a varying input is present
        result[j] = _unbroadcast(scaled(m, slope), jnp.shape(x))
    return result


def where_slopes(
    c: tuple[Array, Array], a: tuple[Array, Array], b: tuple[Array, Array], dtype: Any
) -> tuple[Array, Array, Array]:
    """Output-shaped multipliers (of c, of a, of b) of y = Where(c, a, b): the exact 3-player Shapley value.

    Read as numbers, y = b + c (a - b) is multilinear in (c, a, b), so its Shapley value is the midpoint
    rule of each product: phi_c = dc (abar - bbar), phi_a = cbar da, phi_b = (1 - cbar) db, with
    abar = (a_x + a_r) / 2 and cbar in {0, 1/2, 1}. They sum to y_x - y_r. Where c agrees on both sides
    (cbar in {0, 1}) this is the rule for a constant condition (a's multiplier 1 where c holds, b's
    where it does not) and c gets 0. Each argument is (x side, r side); give a constant twice.

    Where c moves, a branch that is not finite on one side (the NaN that divide_no_nan guards against,
    a -inf fill) is read on both sides as its value on the side that selects it: a dummy player, so
    the game stays finite, and y_x - y_r, which never reads the unselected value, goes to the others.
    """
    cx, cr = numeric(c[0], dtype), numeric(c[1], dtype)
    cbar = (cx + cr) / 2
    moved = c[0] != c[1]
    x_selects_a = c[0] if jnp.result_type(c[0]) == jnp.bool_ else c[0] != 0

    def player(v: tuple[Array, Array], selected: Array) -> tuple[Array, Array]:
        vx, vr = numeric(v[0], dtype), numeric(v[1], dtype)
        finite = jnp.isfinite(vx) & jnp.isfinite(vr)
        mean = jnp.where(finite | ~moved, (vx + vr) / 2, jnp.where(selected, vx, vr))
        return mean, finite | ~moved

    abar, a_moves = player(a, x_selects_a)
    bbar, b_moves = player(b, ~x_selects_a)
    # 0, not the gap, where c agrees: a masked value (-inf) on both sides must not give inf * 0 upstream.
    m_c = jnp.where(moved, abar - bbar, 0).astype(dtype)
    return m_c, jnp.where(a_moves, cbar, 0).astype(dtype), jnp.where(b_moves, 1 - cbar, 0).astype(dtype)


def where_shapley(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """Where(c, a, b) with a varying condition: the exact 3-player Shapley value over (c, a, b)
    (`where_slopes`), players that do not vary held at their x value. Broadcasting c, a and b."""
    dtype = multiplier_dtype(ctx, m_out)
    assert ctx.xout[0] is not None  # the output of an elementwise op is never absent
    m = m_out[0] if m_out[0] is not None else jnp.zeros(jnp.shape(ctx.xout[0]), dtype)

    def sides(p: int) -> tuple[Array, Array]:
        x = ctx.xin[p]
        return (x, ctx.rin[p]) if ctx.varying[p] else (x, x)

    wide = jnp.result_type(dtype, *[v for v in ctx.xin[1:] if not is_discrete(v)])
    slopes = where_slopes(sides(0), sides(1), sides(2), wide)
    result: list[Array | None] = [None] * len(ctx.xin)
    for p, slope in enumerate(slopes):
        if ctx.varying[p]:
            x = ctx.xin[p]
            assert x is not None  # a varying input is present
            result[p] = _unbroadcast(jnp.broadcast_to(m * slope, jnp.shape(m)), jnp.shape(x))
    return result


def comparison(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """Equal, Less, Greater, LessOrEqual, GreaterOrEqual of (u, v): a step function of d = u - v, so
    linear (d) then rescale (the step's secant): the multiplier of u is
    m * (y(x) - y(r)) / (d(x) - d(r)) with the boolean output read as 0/1, that of v its negative.
    Exact and locally complete: zero where the comparison comes out the same on both sides, and
    dy in {-1, 1} otherwise, with d(x) != d(r). Broadcasting u and v; integers read as numbers.
    """
    dtype = multiplier_dtype(ctx, m_out)
    assert ctx.xout[0] is not None  # the output of a comparison is never absent
    m = m_out[0] if m_out[0] is not None else jnp.zeros(jnp.shape(ctx.xout[0]), dtype)
    # An input that does not vary is held at its x value, as in every rule (its difference is 0).
    du, dv = (_numeric_delta(ctx.xin[p], ctx.rin[p], dtype) if ctx.varying[p] else 0 for p in (0, 1))
    dd = du - dv
    dy = _numeric_delta(ctx.xout[0], ctx.rout[0], dtype)
    ok = (dy != 0) & (dd != 0) & jnp.isfinite(dd)
    slope = m * jnp.where(ok, dy / jnp.where(ok, dd, 1), 0).astype(dtype)
    result: list[Array | None] = [None] * len(ctx.xin)
    for p, sign in ((0, 1), (1, -1)):
        if ctx.varying[p]:
            x = ctx.xin[p]
            assert x is not None  # a varying input is present
            result[p] = _unbroadcast(sign * slope, jnp.shape(x))
    return result


def bilinear(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """Multilinear op (MatMul, Gemm, Einsum): m_j = VJP w.r.t. input j with the other operands at
    their midpoints (x + r) / 2. For a bilinear f this is the exact two-player Shapley value:
    f(A, B) - f(A_r, B_r) = f(dA, (B + B_r)/2) + f((A + A_r)/2, dB).
    """
    positions = ctx.varying_positions
    mid: dict[int, Array] = {}
    for p in positions:
        x, r = ctx.xin[p], ctx.rin[p]
        assert x is not None and r is not None  # a varying input is present on both sides
        mid[p] = (x + r) / 2
    result: list[Array | None] = [None] * len(ctx.xin)
    for j in positions:
        point = {p: v for p, v in mid.items() if p != j}
        result[j] = _vjp_at(ctx, point, [j], m_out)[j]
    return result


# --- max ------------------------------------------------------------------------------------------


#: Windows up to this size enumerate the coalitions of each element's window (dense, branch-free
#: elementwise work, fastest for pooling windows); larger ones merge the two sides' sorted values,
#: O(n log n).
MAX_ENUMERATION_SIZE = 5


def _larger(a: Array, b: Array) -> Array:
    """max(a, b) as a compare and a select, for the dozens of maxima per element of the enumeration.

    `jnp.maximum` lowers on XLA:CPU to a NaN-propagating maximum of several instructions; a compare
    and select is one vector `maxps`. A NaN element still gets a NaN multiplier (its x - r is NaN).
    """
    return jnp.where(a > b, a, b)


def max_shapley_values(x: Array, r: Array, axes: Sequence[int] = (-1,)) -> Array:
    """Exact Shapley values of y = max over a window, players taking x_i (present) or r_i (absent).

    x, r: the same shape; the window of an element is every element that differs from it only along
    `axes` (default: the last axis). Returns phi in that layout. Small windows
    (n <= MAX_ENUMERATION_SIZE): `_max_shapley_enumerated`; larger: `_max_shapley_merged`. Exact:
    the values are the Shapley values and sum over each window to max(x) - max(r).
    """
    axes = _normalise_axes(axes, jnp.ndim(x))
    if math.prod(x.shape[a] for a in axes) <= MAX_ENUMERATION_SIZE:
        return _max_shapley_enumerated(x, r, axes)
    return _along_last_axis(_max_shapley_merged, x, r, axes)


def _normalise_axes(axes: Sequence[int], rank: int) -> tuple[int, ...]:
    return tuple(sorted(int(a) % rank for a in axes))


def _to_last_axis(v: Array, axes: tuple[int, ...]) -> Array:
    """v with its other axes first (in order) and the window spanning `axes` flattened last."""
    kept = [a for a in range(v.ndim) if a not in axes]
    return jnp.transpose(v, kept + list(axes)).reshape(tuple(v.shape[a] for a in kept) + (-1,))


def _along_last_axis(values: Callable[[Array, Array], Array], x: Array, r: Array, axes: tuple[int, ...]) -> Array:
    """`values` of windows laid out on the last axis, applied to windows spanning `axes`."""
    order = [a for a in range(x.ndim) if a not in axes] + list(axes)
    moved = tuple(x.shape[a] for a in order)
    phi = values(_to_last_axis(x, axes), _to_last_axis(r, axes))
    return jnp.transpose(phi.reshape(moved), np.argsort(order).tolist())


def _window_position(shape: tuple[int, ...], axes: tuple[int, ...]) -> Array:
    """Each element's position in its window (C order over `axes`), shaped to broadcast against `shape`."""
    position = jnp.zeros([1] * len(shape), jnp.int32)
    for a in axes:
        iota_shape = [1] * len(shape)
        iota_shape[a] = shape[a]
        position = position * shape[a] + lax.broadcasted_iota(jnp.int32, iota_shape, a)
    return position


def _per_window_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with 1 on the window axes: one value per window, broadcasting over its elements."""
    return tuple(1 if a in axes else d for a, d in enumerate(shape))


def _max_shapley_enumerated(x: Array, r: Array, axes: tuple[int, ...]) -> Array:
    """The same values, for each element i from the coalitions S of the other players of its window:
    phi_i = sum_S w(|S|) (max(x_i, M_S) - max(r_i, M_S)), M_S = max(max_{j in S} x_j, max_{j not in S} r_j).

    Computed per element in the input's own layout: the window's players are slices along `axes`
    broadcast back, and "the others" are chosen by the element's position in its window with
    selects, so XLA fuses the rule into one branch-free, vectorised loop. Stacking per-player
    results instead makes XLA fuse the stack into its consumer (the transpose to the convolution's
    channels-last layout) and evaluate the window's whole game once per element, in scalar code.
    The terms and their order are those of enumerating the window's 2^n coalitions.
    """
    positions = list(itertools.product(*(range(x.shape[a]) for a in axes)))
    n = len(positions)

    def player(v: Array, position: tuple[int, ...]) -> Array:
        index = [slice(None)] * v.ndim
        for a, p in zip(axes, position):
            index[a] = slice(p, p + 1)
        return v[tuple(index)]

    position = _window_position(x.shape, axes)
    # The other players, in window order.
    win_x, win_r = [player(x, p) for p in positions], [player(r, p) for p in positions]
    others_x = [jnp.where(position > j, win_x[j], win_x[j + 1]) for j in range(n - 1)]
    others_r = [jnp.where(position > j, win_r[j], win_r[j + 1]) for j in range(n - 1)]
    # -inf (masked scores) becomes a very negative finite value, so that equal infinities gain 0, not
    # NaN. Flooring the element's own values is enough: the others enter only through the maxima.
    floor = np.asarray(np.finfo(x.dtype).min / 4, x.dtype)
    own_x, own_r = _larger(x, floor), _larger(r, floor)
    full = (1 << (n - 1)) - 1
    # Maxima of the others in S (present, x) and in S's complement (absent, r); None: no one.
    best_x: list[Array | None] = [None]
    best_r: list[Array | None] = [None]
    for mask in range(1, full + 1):
        j, rest = (mask & -mask).bit_length() - 1, mask & (mask - 1)
        best_x.append(others_x[j] if not rest else _larger(best_x[rest], others_x[j]))
        best_r.append(others_r[j] if not rest else _larger(best_r[rest], others_r[j]))
    weight = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    phi: Array | None = None
    for mask in range(full + 1):
        present, absent = best_x[mask], best_r[full ^ mask]
        if present is None or absent is None:
            top = present if absent is None else absent
        else:
            top = _larger(present, absent)
        gain = own_x - own_r if top is None else _larger(own_x, top) - _larger(own_r, top)
        term = weight[mask.bit_count()] * gain
        phi = term if phi is None else phi + term
    return phi


#: Windows up to this size look the max game's weights up in a precomputed (n+1)^2 table.
MAX_WEIGHT_TABLE_SIZE = 512


def _max_game_weights(p: Array, q: Array, n: int, dtype: Any) -> tuple[Array, Array]:
    """(gain, loss) = (q!(p-1)!/(p+q)!, (q-1)!p!/(p+q)!) at integer arrays p, q in [0, n]; 0 at p = 0 (q = 0).

    Float32 lgamma is off by ~5e-7 even at 1, so the weights come from float64 (a numpy table, or
    lgamma in float64 where x64 is on) rounded once.
    """
    if n <= MAX_WEIGHT_TABLE_SIZE:
        gain, loss = _max_game_weight_table(n)
        cell = p * (n + 1) + q
        return jnp.asarray(gain, dtype)[cell], jnp.asarray(loss, dtype)[cell]
    # jax.config sets its options as attributes at import, which its stub does not declare.
    x64 = jax.config.jax_enable_x64  # pyright: ignore[reportAttributeAccessIssue]
    wide = jnp.float64 if x64 else dtype
    p, q = p.astype(wide), q.astype(wide)
    lg = lax.lgamma
    gain = jnp.where(p > 0, jnp.exp(lg(q + 1) + lg(jnp.maximum(p, 1)) - lg(p + q + 1)), 0)
    loss = jnp.where(q > 0, jnp.exp(lg(jnp.maximum(q, 1)) + lg(p + 1) - lg(p + q + 1)), 0)
    return gain.astype(dtype), loss.astype(dtype)


@functools.cache
def _max_game_weight_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The float64 weights of `_max_game_weights` for every p, q in [0, n], flat over p * (n+1) + q."""
    p, q = np.meshgrid(np.arange(n + 1.0), np.arange(n + 1.0), indexing="ij")
    lg = np.vectorize(math.lgamma)
    gain = np.where(p > 0, np.exp(lg(q + 1) + lg(np.maximum(p, 1)) - lg(p + q + 1)), 0.0)
    loss = np.where(q > 0, np.exp(lg(np.maximum(q, 1)) + lg(p + 1) - lg(p + q + 1)), 0.0)
    return gain.reshape(-1), loss.reshape(-1)


def _max_shapley_merged(x: Array, r: Array) -> Array:
    """The same values as an integral of indicators over thresholds t, O(n log n) per window.

    max(z) integrates 1{max z > t}. Between consecutive breakpoints of the 2n values, let
    A = {i: x_i > t}, B = {i: r_i > t}, p = |A|, q = |B|. Where A and B intersect the indicator is
    constant; otherwise each i in A gains q!(p-1)!/(p+q)! per unit of t and each i in B loses
    (q-1)!p!/(p+q)!. So phi_i = (gain over segments ending at or below x_i) - (loss over segments
    ending at or below r_i).

    Each side is sorted on its own: under the pair vmap that sort runs once per sample or reference,
    not per pair. Per pair, the two sorted lists are merged by binary search (x before an equal r);
    a segment ends at each breakpoint and starts at its predecessor in merged order, and its p and q
    follow from the ranks. Prefix sums per side give the integrals.
    """
    n = x.shape[-1]
    dtype = x.dtype
    floor = np.asarray(np.finfo(dtype).min / 4, dtype)
    x, r = jnp.maximum(x, floor), jnp.maximum(r, floor)
    (sx, rank_x), (sr, rank_r) = _sort_with_ranks(x), _sort_with_ranks(r)
    lowest = jnp.asarray(-jnp.inf, dtype)
    c = _batched_searchsorted(sr, sx, "left")  # number of r before x_a in merged order
    d = _batched_searchsorted(sx, sr, "right")  # number of x before r_b
    pad = jnp.full_like(sx[..., :1], lowest)
    # Predecessor in merged order: the larger of the previous element on the own side and the last
    # element of the other side before it.
    pred_x = jnp.maximum(
        jnp.concatenate([pad, sx[..., :-1]], -1), jnp.take_along_axis(jnp.concatenate([pad, sr], -1), c, -1)
    )
    pred_r = jnp.maximum(
        jnp.concatenate([pad, sr[..., :-1]], -1), jnp.take_along_axis(jnp.concatenate([pad, sx], -1), d, -1)
    )
    both = jnp.max(jnp.minimum(x, r), axis=-1, keepdims=True)
    # The lowest breakpoint has no segment below it that counts (every player is above t there).
    len_x = jnp.where((pred_x > lowest) & (sx > both), sx - pred_x, 0)
    len_r = jnp.where((pred_r > lowest) & (sr > both), sr - pred_r, 0)
    rank = jnp.arange(n)
    # On the segment ending at a breakpoint of positive length: p = #{x >= b}, q = #{r >= b}.
    gain_x, loss_x = _max_game_weights(n - rank, n - c, n, dtype)
    gain_r, loss_r = _max_game_weights(n - d, n - rank, n, dtype)
    zero = jnp.zeros_like(sx[..., :1])
    cum_gx = jnp.cumsum(len_x * gain_x, -1)
    cum_lx = jnp.concatenate([zero, jnp.cumsum(len_x * loss_x, -1)], -1)
    cum_gr = jnp.concatenate([zero, jnp.cumsum(len_r * gain_r, -1)], -1)
    cum_lr = jnp.cumsum(len_r * loss_r, -1)
    gain_at_x = cum_gx + jnp.take_along_axis(cum_gr, c, -1)
    loss_at_r = cum_lr + jnp.take_along_axis(cum_lx, d, -1)
    return jnp.take_along_axis(gain_at_x, rank_x, -1) - jnp.take_along_axis(loss_at_r, rank_r, -1)


#: Up to this length a window is sorted by counting (n^2 comparisons, dense); beyond, by XLA's sort,
#: which on CPU costs microseconds per short row.
MAX_COUNTING_SORT_SIZE = 32


def _sort_with_ranks(v: Array) -> tuple[Array, Array]:
    """(v sorted along the last axis, rank of each element in that order); ties keep their order."""
    n = v.shape[-1]
    if n > MAX_COUNTING_SORT_SIZE:
        order = jnp.argsort(v, axis=-1, stable=True)
        return jnp.take_along_axis(v, order, -1), jnp.argsort(order, axis=-1)
    before = (v[..., None, :] < v[..., :, None]) | (
        (v[..., None, :] == v[..., :, None]) & (np.arange(n)[None, :] < np.arange(n)[:, None])
    )  # [i, j]: element j comes before element i
    rank = jnp.sum(before, axis=-1)
    placed = rank[..., None, :] == np.arange(n)[:, None]  # [k, i]: element i goes to position k
    return jnp.sum(jnp.where(placed, v[..., None, :], 0), axis=-1), rank


def _batched_searchsorted(sorted_vals: Array, queries: Array, side: str) -> Array:
    lead = sorted_vals.shape[:-1]
    flat_s = sorted_vals.reshape(-1, sorted_vals.shape[-1])
    flat_q = queries.reshape(-1, queries.shape[-1])
    out = jax.vmap(lambda s, q: jnp.searchsorted(s, q, side=side, method="scan"))(flat_s, flat_q)
    return out.reshape(*lead, queries.shape[-1])


def cross_max_values(x: Array, r: Array, axes: Sequence[int] = (-1,)) -> Array:
    """shap/Captum's max-pool rule (not the Shapley value): max(X, R) - R to argmax(x), X - max(X, R) to
    argmax(r) (the first maximum of each window spanning `axes`, laid out as in `max_shapley_values`)."""
    axes = _normalise_axes(axes, jnp.ndim(x))
    position = _window_position(x.shape, axes)
    per_window = _per_window_shape(x.shape, axes)

    def side(v: Array) -> tuple[Array, Array]:
        # Per side (sample or reference row), over windows made contiguous; the maximum read at the
        # arg-max, so that XLA makes one reduction of the two.
        rows = _to_last_axis(v, axes)
        arg = jnp.argmax(rows, -1, keepdims=True)
        return jnp.take_along_axis(rows, arg, -1).reshape(per_window), arg.astype(position.dtype).reshape(per_window)

    (big_x, arg_x), (big_r, arg_r) = side(x), side(r)
    top = jnp.maximum(big_x, big_r)
    return jnp.where(position == arg_x, top - big_r, 0) + jnp.where(position == arg_r, big_x - top, 0)


#: phi per element from (x, r, window axes), as `max_shapley_values` and `cross_max_values`.
MaxValues = Callable[[Array, Array, Sequence[int]], Array]


def _window_multipliers(xw: Array, rw: Array, m_window: Array, values: MaxValues, axes: tuple[int, ...]) -> Array:
    """Per element: m_out * phi_i / (x_i - r_i), 0 where x_i ~ r_i (a dummy player).

    xw, rw: windows spanning `axes`; m_window: xw's shape with 1 on `axes` (one multiplier per window).
    """
    near = _near_zero(xw, rw)
    # The slope does not depend on m: written apart, it is computed once per pair, not once per seed.
    slope = jnp.where(near, 0, values(xw, rw, axes) / jnp.where(near, 1, xw - rw))
    return m_window * slope


def make_max_rule(values: MaxValues) -> Callable[[NodeContext, Sequence[Array | None]], list[Array | None]]:
    def rule(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
        x, r = ctx.xin[0], ctx.rin[0]
        # The data input is the one that varies; the reduced output is present.
        assert x is not None and r is not None and ctx.xout[0] is not None
        m = m_out[0] if m_out[0] is not None else jnp.zeros_like(ctx.xout[0])
        sign = -1 if ctx.node.op_type == "ReduceMin" else 1
        axes_input = ctx.xin[1] if len(ctx.xin) > 1 else None
        in_shape, out_shape = tuple(jnp.shape(x)), tuple(jnp.shape(ctx.xout[0]))
        result: list[Array | None] = [None] * len(ctx.xin)
        blocks = _block_windows(ctx.node, in_shape, out_shape, axes_input)
        if blocks is not None:
            to_blocks, from_blocks, axes = blocks
            xb, rb = to_blocks(sign * x), to_blocks(sign * r)
            mb = m.reshape(_per_window_shape(xb.shape, axes))
            result[0] = from_blocks(_window_multipliers(xb, rb, mb, values, axes))
            return result
        index = window_index(ctx.node, in_shape, out_shape, axes_input)
        flat_x = (sign * x).reshape(-1)
        flat_r = (sign * r).reshape(-1)
        pad = jnp.asarray(-jnp.inf, x.dtype)
        valid = index >= 0
        safe = np.where(valid, index, 0)
        xw = jnp.where(valid, flat_x[safe], pad)
        rw = jnp.where(valid, flat_r[safe], pad)
        # Padding positions take the smallest real value of their window on both sides: never the
        # unique max, zero difference, hence zero credit.
        low = jnp.minimum(
            jnp.min(jnp.where(valid, xw, jnp.inf), -1, keepdims=True),
            jnp.min(jnp.where(valid, rw, jnp.inf), -1, keepdims=True),
        )
        xw = jnp.where(valid, xw, low)
        rw = jnp.where(valid, rw, low)
        mw = _window_multipliers(xw, rw, m.reshape(-1, 1), values, (1,))
        mw = jnp.where(valid, mw, 0)
        result[0] = _scatter_windows(mw.reshape(-1), index, flat_x.shape[0]).reshape(in_shape)
        return result

    return rule


Reshaper = Callable[[Array], Array]


def _block_windows(
    node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...], axes_input: Any = None
) -> tuple[Reshaper, Reshaper, tuple[int, ...]] | None:
    """(to_blocks, from_blocks, axes) where the windows tile the input: reshapes only, no transposes.

    to_blocks maps the input to a layout in which each window spans `axes`, its other axes in the
    output's order (a Reduce* node: the input itself and its reduced axes; a tiling MaxPool:
    (N, C, O1, k1, O2, k2, ...) with axes 3, 5, ...). from_blocks maps per-element values back, 0
    where no window reads. None where windows overlap or pad: a gather on the static `window_index`
    handles those. Transposes would be fused, with the whole rule, into the consumer's transpose
    (the convolution before a pool wants channels-last), and a gather with a scatter back costs
    several times the max game itself on a pooling layer.
    """
    op = node.op_type
    rank = len(in_shape)
    if op in REDUCING_MAX_OPS:
        order, n_kept = _reduce_order(node, rank, axes_input)
        return (lambda v: v), (lambda w: w), tuple(order[n_kept:])
    if op != "MaxPool":
        return None
    nd = rank - 2
    kernel = list(node.attrs["kernel_shape"])
    strides = list(node.attrs.get("strides") or [1] * nd)
    dilations = list(node.attrs.get("dilations") or [1] * nd)
    pads = list(node.attrs.get("pads") or [0] * (2 * nd))
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    spatial_out = list(out_shape[2:])
    tiled = (
        strides == kernel
        and all(d == 1 for d in dilations)
        and auto_pad in ("NOTSET", "VALID")
        and (auto_pad == "VALID" or not any(pads))
        and all(o * k <= i for o, k, i in zip(spatial_out, kernel, in_shape[2:]))
    )
    if not tiled:
        return None
    lead = list(in_shape[:2])
    split = lead + [d for o, k in zip(spatial_out, kernel) for d in (o, k)]  # (N, C, O1, k1, O2, k2, ...)
    used = tuple(slice(0, o * k) for o, k in zip(spatial_out, kernel))
    tail = [(0, i - o * k) for o, k, i in zip(spatial_out, kernel, in_shape[2:])]

    def to_blocks(v: Array) -> Array:
        return v[(slice(None), slice(None), *used)].reshape(split)

    def from_blocks(w: Array) -> Array:
        return jnp.pad(w.reshape(lead + [o * k for o, k in zip(spatial_out, kernel)]), [(0, 0), (0, 0), *tail])

    return to_blocks, from_blocks, tuple(3 + 2 * i for i in range(nd))


def _scatter_windows(values: Array, index: np.ndarray, size: int) -> Array:
    """Sum window values (flat over `index`'s shape) back onto `size` input positions.

    A gather with a static inverse table, not a scatter-add: XLA:CPU runs scatters element by element,
    and an input position lies in only a few windows.
    """
    flat_index = index.reshape(-1)
    valid = flat_index >= 0
    owners = np.bincount(flat_index[valid], minlength=size)
    depth = max(int(owners.max(initial=0)), 1)
    order = np.argsort(np.where(valid, flat_index, size), kind="stable")[: int(valid.sum())]
    # Rank of each occurrence among the windows that share its input position.
    start = np.concatenate([[0], np.cumsum(owners)[:-1]])
    rank = np.arange(order.size) - start[flat_index[order]]
    table = np.full((size, depth), -1, np.int64)
    table[flat_index[order], rank] = order
    gathered = values[np.maximum(table, 0)]
    return jnp.sum(jnp.where(table >= 0, gathered, 0), axis=-1)


def window_index(
    node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...], axes_input: Any = None
) -> np.ndarray:
    """Static (n_out_elements, window) array of flat input indices per output element; -1 = padding."""
    op = node.op_type
    rank = len(in_shape)
    ids = np.arange(int(np.prod(in_shape)), dtype=np.int64).reshape(in_shape)
    if op in REDUCING_MAX_OPS:
        order, n_kept = _reduce_order(node, rank, axes_input)
        return np.transpose(ids, order).reshape(int(np.prod([in_shape[a] for a in order[:n_kept]])), -1)
    if op == "MaxPool":
        return _pool_windows(node, in_shape, out_shape)
    raise UnsupportedOpError(f"The max rule does not know how to form windows for {op}.")


#: Ops whose max windows are whole axes: the kept axes index the windows, the reduced ones span them.
REDUCING_MAX_OPS = ("ReduceMax", "ReduceMin", "GlobalMaxPool")


def _reduce_order(node: Node, rank: int, axes_input: Any = None) -> tuple[list[int], int]:
    """(kept axes then reduced axes, number of kept axes) for a node in REDUCING_MAX_OPS."""
    axes = tuple(range(2, rank)) if node.op_type == "GlobalMaxPool" else reduce_axes(node, rank, axes_input)
    kept = [a for a in range(rank) if a not in axes]
    return kept + list(axes), len(kept)


def reduce_axes(node: Node, rank: int, axes_input: Any = None) -> tuple[int, ...]:
    """The reduced axes of a Reduce* node (attribute before opset 18, static input after)."""
    axes = node.attrs.get("axes") if axes_input is None else np.asarray(axes_input).reshape(-1).tolist()
    if axes is None or len(axes) == 0:
        return tuple(range(rank)) if not node.attrs.get("noop_with_empty_axes", 0) else ()
    return tuple(sorted(int(a) % rank for a in axes))


def _pool_windows(node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    spatial_in = in_shape[2:]
    spatial_out = out_shape[2:]
    nd = len(spatial_in)
    kernel = list(node.attrs["kernel_shape"])
    strides = list(node.attrs.get("strides") or [1] * nd)
    dilations = list(node.attrs.get("dilations") or [1] * nd)
    pads = list(node.attrs.get("pads") or [0] * (2 * nd))
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    begin = pads[:nd]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin = []
        for size, k, s, d, o in zip(spatial_in, kernel, strides, dilations, spatial_out):
            total = max((o - 1) * s + (k - 1) * d + 1 - size, 0)
            begin.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    elif auto_pad == "VALID":
        begin = [0] * nd
    n, c = in_shape[:2]
    out_grid = np.stack(np.meshgrid(*[np.arange(o) for o in spatial_out], indexing="ij"), -1).reshape(-1, nd)
    k_grid = np.stack(np.meshgrid(*[np.arange(k) for k in kernel], indexing="ij"), -1).reshape(-1, nd)
    coords = out_grid[:, None, :] * np.array(strides) - np.array(begin) + k_grid[None, :, :] * np.array(dilations)
    inside = np.all((coords >= 0) & (coords < np.array(spatial_in)), axis=-1)
    flat_spatial = np.ravel_multi_index(
        tuple(np.clip(coords, 0, np.array(spatial_in) - 1).transpose(2, 0, 1)), spatial_in
    )
    per_plane = np.where(inside, flat_spatial, -1)  # (n_out_spatial, window)
    plane_size = int(np.prod(spatial_in))
    planes = np.arange(n * c)[:, None, None] * plane_size
    return np.where(per_plane[None] >= 0, planes + per_plane[None], -1).reshape(-1, per_plane.shape[-1])


# --- composites -------------------------------------------------------------------------------------


def _log_softmax_multipliers(x: Array, r: Array, axis: int, m: Array) -> Array:
    """Multipliers of x through z = x - L, L = log(sum(exp(x))): linear, then log (rescale) of
    sum (linear) of exp (rescale). All intermediates stay bounded in float32: one shift c for both
    sides (attributions do not depend on it), and L computed per side with logsumexp.
    """
    c = lax.stop_gradient(jnp.maximum(jnp.max(x, axis, keepdims=True), jnp.max(r, axis, keepdims=True)))
    ex, er = jnp.exp(x - c), jnp.exp(r - c)
    sx, sr = jnp.sum(ex, axis, keepdims=True), jnp.sum(er, axis, keepdims=True)
    lx = jax.nn.logsumexp(x, axis, keepdims=True) - c
    lr = jax.nn.logsumexp(r, axis, keepdims=True) - c
    near_s = _near_zero(sx, sr)
    log_slope = jnp.where(near_s, 2 / (sx + sr), (lx - lr) / jnp.where(near_s, 1, sx - sr))
    near = _near_zero(x, r)
    exp_slope = jnp.where(near, jnp.exp((x + r) / 2 - c), (ex - er) / jnp.where(near, 1, x - r))
    m_l = -jnp.sum(m, axis, keepdims=True)
    return m + m_l * log_slope * exp_slope


def _softmax_axis(ctx: NodeContext) -> tuple[Array, Array, int, Callable[[Array], Array]]:
    x, r = ctx.xin[0], ctx.rin[0]
    assert x is not None and r is not None  # the one input, and it varies
    rank = jnp.ndim(x)
    axis = int(ctx.node.attrs.get("axis", -1))
    axis = axis % rank if rank else 0
    if ctx.node.since_version is not None and ctx.node.since_version < 13:
        # Softmax-1/11 coerce the input to 2-D at `axis`.
        shape = jnp.shape(x)
        outer = int(np.prod(shape[:axis]))
        return x.reshape(outer, -1), r.reshape(outer, -1), 1, lambda v: v.reshape(shape)
    return x, r, axis, lambda v: v


def softmax(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """Softmax = exp(LogSoftmax(x)): exp by rescale, LogSoftmax as below; complete by construction."""
    x, r, axis, back = _softmax_axis(ctx)
    assert ctx.xout[0] is not None  # the one output
    m = m_out[0] if m_out[0] is not None else jnp.zeros_like(ctx.xout[0])
    m = m.reshape(x.shape)
    zx, zr = jax.nn.log_softmax(x, axis), jax.nn.log_softmax(r, axis)
    near = _near_zero(zx, zr)
    slope = jnp.where(near, jnp.exp((zx + zr) / 2), (jnp.exp(zx) - jnp.exp(zr)) / jnp.where(near, 1, zx - zr))
    return [back(_log_softmax_multipliers(x, r, axis, m * slope))] + [None] * (len(ctx.xin) - 1)


def log_softmax(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
    """LogSoftmax = x - log(sum(exp(x))): linear, log (rescale), sum (linear), exp (rescale)."""
    x, r, axis, back = _softmax_axis(ctx)
    assert ctx.xout[0] is not None  # the one output
    m = m_out[0] if m_out[0] is not None else jnp.zeros_like(ctx.xout[0])
    return [back(_log_softmax_multipliers(x, r, axis, m.reshape(x.shape)))] + [None] * (len(ctx.xin) - 1)


Rule = Callable[[NodeContext, Sequence[Array | None]], list[Array | None]]


#: Rules selectable by name (in the table's `rule` column or the user's overrides).
RULES: dict[str, Rule] = {
    "linear": linear,
    "zero": zero,
    "rescale": rescale,
    "shapley": shapley,
    "bilinear": bilinear,
    "max": make_max_rule(max_shapley_values),
    "cross_max": make_max_rule(cross_max_values),
    "gradient": gradient,
}

#: Rules that do not guarantee completeness; nodes using them are listed in the Explanation.
INCOMPLETE_RULES = frozenset({"gradient"})


def rule_name(node: Node, overrides: Mapping[str, str] | None = None, gradient_fallback: bool = False) -> str:
    """The name of the rule a node gets: a user override by node name or op type, else its table
    family; "gradient" for a composite op without a rule when the fallback is allowed."""
    assert node.spec is not None
    name = node.spec.rule
    if overrides:
        name = overrides.get(node.name, overrides.get(node.op_type, name))
    if name == "composite" and node.spec.composite is None and gradient_fallback:
        return "gradient"
    return name


def rule_for(node: Node, overrides: Mapping[str, str] | None = None, gradient_fallback: bool = False) -> Rule:
    """The rule a node gets (see `rule_name`)."""
    assert node.spec is not None
    name = rule_name(node, overrides, gradient_fallback)
    if name == "composite":
        if node.spec.composite is not None:
            return node.spec.composite
        raise UnsupportedOpError(
            f"{node.label} needs a composite attribution rule, which onnxshap does not have yet for "
            f"{node.op_type}; its forward pass is supported, so the model runs, but it cannot be explained "
            "through this node. Explain from a tensor after it (inputs=...) or up to a tensor before it (outputs=...), "
            "or accept plain gradients for it with allow_gradient_fallback=True (not complete; the Explanation lists it)."
        )
    if name in node.spec.alternatives:
        return node.spec.alternatives[name]
    if name not in RULES:
        known = sorted({*RULES, *node.spec.alternatives})
        offering = sorted(s.op_type for s in registry() if name in s.alternatives)
        if offering:
            raise UnsupportedOpError(
                f"{node.label}: the rule {name!r} is offered only by {', '.join(offering)}; rules for "
                f"{node.op_type}: {known}."
            )
        raise UnsupportedOpError(f"Unknown rule {name!r} for {node.label}; known rules for it: {known}.")
    return RULES[name]
