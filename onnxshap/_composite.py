"""Composite rules: an op's rule built from rule-carrying primitives, complete by construction.

A composite op (LayerNormalization, LSTM, ...) is written once as a forward function over *pairs*:
every varying tensor is a `Pair(x, r)` holding its sample-side and reference-side values. The
primitives below compute both sides' values exactly and attach their rule's multipliers as the
gradient of a surrogate (value: the true output; derivative: the rule's multiplier), so one
`jax.vjp` of the composite forward, seeded with (m, -m), yields the DeepLIFT multipliers of the
decomposition. Each primitive is locally complete, hence so is the composite (chain rule of
multipliers). `lax.scan`, `vmap` and reshapes compose with pairs like any pytree.

The primitives and their families (see docs/rules/):
    linear(f, *args)     affine f: ordinary Jacobian (exact)
    rescale(f, p)        one-input elementwise f: secant / midpoint derivative (exact)
    shapley(f, *args)    elementwise f of k varying inputs: exact k-player Shapley value
    bilinear(f, *args)   f multilinear in its varying inputs: each at the others' midpoints
                         (exact two-player Shapley value for two)
    max_over(p, axis)    max along an axis: exact Shapley value of the max game
    compare(cmp, a, b)   a comparison (a step of a - b): linear, then the step's secant (exact)
    select(c, a, b)      Where(c, a, b): exact 3-player Shapley value when c varies
Arguments that are not pairs are constants (the same on both sides).

Booleans carry multipliers as numbers: a boolean pair holds 0/1 in a float dtype (what `compare`
returns, and how `composite_rule` passes a varying boolean or integer input), so its difference
x - r is in {-1, 0, 1}, as the pass reads it (`onnxshap._multipliers.numeric`). Every primitive
accepts such pairs; a boolean-valued f (rescale(jnp.logical_not, p), shapley(jnp.logical_and, p, q))
gives 0/1 numbers with the step's multipliers attached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from onnxshap._multipliers import (
    NodeContext,
    Rule,
    _near_zero,
    is_discrete,
    max_shapley_values,
    numeric,
    pair_difference,
    rescale_slope,
    shapley_slopes,
    step_slope,
    where_slopes,
)
from onnxshap.ops._common import OUTPUT_COUNT_FLAG

Array = Any
sg = lax.stop_gradient


class Pair(NamedTuple):
    """A tensor's sample-side (x) and reference-side (r) values, same shape and dtype."""

    x: Array
    r: Array


def x_side(v: Any) -> Array:
    """The sample-side value of a Pair, or the value itself (for shapes and dtypes in pair forwards)."""
    return v.x if isinstance(v, Pair) else v


def _side(args: Sequence[Any], side: int) -> list[Any]:
    return [a[side] if isinstance(a, Pair) else a for a in args]


def _pair_positions(args: Sequence[Any]) -> list[int]:
    return [i for i, a in enumerate(args) if isinstance(a, Pair)]


def _attach(y: Array, terms: Sequence[tuple[Array, Array]]) -> Array:
    """y with derivative sum_j M_j * d(p_j): value y exactly, gradient the multipliers M_j (broadcast)."""
    out = sg(y)
    for multiplier, p in terms:
        out = out + sg(multiplier) * (p - sg(p))
    return out


def linear(f: Callable[..., Array], *args: Any) -> Any:
    """Affine f: both sides evaluated; the multipliers are f's Jacobian (exact)."""
    if not _pair_positions(args):
        return f(*args)
    return Pair(f(*_side(args, 0)), f(*_side(args, 1)))


def rescale(f: Callable[[Array], Array], p: Any, values: Any = None) -> Any:
    """One-input elementwise f: multiplier (f(x) - f(r)) / (x - r), f'((x + r) / 2) where x ~ r.

    `values`: f's two output values when they are computed more stably elsewhere than f(p.x), f(p.r)
    (the log of a sum that underflowed on one side); the secant of those values keeps the step exact.
    """
    if not isinstance(p, Pair):
        return f(p) if values is None else values
    y_x, y_r = (f(p.x), f(p.r)) if values is None else values
    m = rescale_slope(f, sg(p.x), sg(p.r), sg(y_x), sg(y_r))
    return Pair(_attach(y_x, [(m, p.x)]), _attach(y_r, [(m, p.r)]))


def shapley(f: Callable[..., Array], *args: Any) -> Any:
    """Elementwise f (numpy broadcasting) of k varying inputs: exact k-player Shapley value."""
    players = _pair_positions(args)
    if not players:
        return f(*args)
    if len(players) == 1:
        j = players[0]
        return rescale(lambda v: f(*[v if i == j else a for i, a in enumerate(args)]), args[j])

    def g(values: Sequence[Array]) -> Array:
        full = list(args)
        for i, v in zip(players, values):
            full[i] = v
        return f(*full)

    xs = [sg(args[i].x) for i in players]
    rs = [sg(args[i].r) for i in players]
    slopes = shapley_slopes(g, xs, rs)
    y_x, y_r = g(xs), g(rs)
    return Pair(
        _attach(y_x, [(m, args[i].x) for m, i in zip(slopes, players)]),
        _attach(y_r, [(m, args[i].r) for m, i in zip(slopes, players)]),
    )


def bilinear(f: Callable[..., Array], *args: Any) -> Any:
    """f multilinear in its varying inputs (matmul, einsum, elementwise product): the multipliers of input
    j are f's Jacobian with the other varying inputs at their midpoints (x + r) / 2. Exact Shapley value
    for two varying inputs (a bilinear game); for more, use `shapley` on elementwise products."""
    players = _pair_positions(args)
    if len(players) <= 1:
        return linear(f, *args)
    mid = {i: sg((args[i].x + args[i].r) / 2) for i in players}
    y_x, y_r = f(*_side(args, 0)), f(*_side(args, 1))

    def term(j: int, side: int) -> Array:
        def g(v: Array) -> Array:
            return f(*[v if i == j else mid.get(i, a) for i, a in enumerate(args)])

        # g is affine in v: its value minus its stopped value is zero, its derivative the Jacobian.
        v = args[j][side]
        return g(v) - sg(g(v))

    return Pair(
        sg(y_x) + sum(term(j, 0) for j in players),
        sg(y_r) + sum(term(j, 1) for j in players),
    )


def max_over(p: Any, axis: int, keepdims: bool = False) -> Any:
    """max along `axis`: each element's multiplier is its exact Shapley value in the max game over
    dx; 0 where x ~ r (a dummy player)."""
    if not isinstance(p, Pair):
        return jnp.max(p, axis=axis, keepdims=keepdims)
    xm, rm = jnp.moveaxis(sg(p.x), axis, -1), jnp.moveaxis(sg(p.r), axis, -1)
    phi = max_shapley_values(xm, rm)
    near = _near_zero(xm, rm)
    m = jnp.moveaxis(jnp.where(near, 0, phi / jnp.where(near, 1, xm - rm)), -1, axis)

    def side(v: Array) -> Array:
        y = jnp.max(v, axis=axis, keepdims=keepdims)
        return sg(y) + jnp.sum(sg(m) * (v - sg(v)), axis=axis, keepdims=keepdims)

    return Pair(side(p.x), side(p.r))


def attributed(y: tuple[Array, Array], p: Pair, phi: Array) -> Pair:
    """Outputs y = (y(x), y(r)) [..., K] of a function of p [..., C] whose attributions phi [..., K, C]
    (sum over C = y(x) - y(r)) come from a rule of the op's own (TreeSHAP): the multiplier of input j
    for output k is phi[k, j] / (x_j - r_j), 0 where x_j == r_j (a dummy player, so phi is 0 there), and
    phi[k, j] itself where one side of j is NaN (a missing value's step: `pair_difference`)."""
    delta = pair_difference(sg(p.x), sg(p.r))
    same = delta == 0
    m = sg(jnp.where(same[..., None, :], 0, phi / jnp.where(same, 1, delta)[..., None, :]))

    def side(value: Array, v: Array) -> Array:
        return sg(value) + jnp.sum(m * _tangent(v)[..., None, :], axis=-1)

    return Pair(side(y[0], p.x), side(y[1], p.r))


@jax.custom_jvp
def _tangent(v: Array) -> Array:
    """Zeros shaped like v whose derivative is the identity: v - sg(v), also where v is NaN (a tree's
    missing value, where v - sg(v) would be NaN)."""
    return jnp.zeros_like(v)


@_tangent.defjvp
def _tangent_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    return jnp.zeros_like(primals[0]), tangents[0]


def _float_dtype(*values: Any) -> Any:
    """The widest float dtype among `values` (float32 if none is a float)."""
    floats = [jnp.result_type(v) for v in values if v is not None and not is_discrete(v)]
    return jnp.result_type(*floats) if floats else jnp.float32


def compare(cmp: Callable[[Array, Array], Array], a: Any, b: Any) -> Any:
    """cmp(a, b) for a comparison (jnp.less, jnp.equal, ...): a step function of d = a - b, so linear
    (d) then rescale (the step's secant (y(x) - y(r)) / (d(x) - d(r)), 0 where y agrees). The values
    are cmp of each side's own inputs (exact, whatever d rounds to), as 0/1 numbers in the inputs'
    float dtype; a plain boolean where nothing varies."""
    if not _pair_positions([a, b]):
        return cmp(a, b)
    y_x, y_r = cmp(*_side([a, b], 0)), cmp(*_side([a, b], 1))
    dtype = _float_dtype(x_side(a), x_side(b))
    d = linear(lambda u, v: numeric(u, dtype) - numeric(v, dtype), a, b)
    m = step_slope(sg(d.x), sg(d.r), y_x, y_r, dtype)
    return Pair(_attach(numeric(y_x, dtype), [(m, d.x)]), _attach(numeric(y_r, dtype), [(m, d.r)]))


def _truth(v: Array) -> Array:
    return v if jnp.result_type(v) == jnp.bool_ else v != 0


def select(c: Any, a: Any, b: Any) -> Any:
    """Where(c, a, b), c boolean or 0/1 numbers. A constant c selects (linear in a and b); a varying c
    is a third player: the exact 3-player Shapley value (`onnxshap._multipliers.where_slopes`), which
    reduces to the constant-condition rule wherever c agrees on both sides."""
    if not isinstance(c, Pair):
        return linear(lambda u, v: jnp.where(_truth(jnp.asarray(c)), u, v), a, b)
    dtype = _float_dtype(x_side(a), x_side(b), c.x)

    def sides(v: Any) -> tuple[Array, Array]:
        return (sg(v.x), sg(v.r)) if isinstance(v, Pair) else (v, v)

    m_c, m_a, m_b = where_slopes(sides(c), sides(a), sides(b), dtype)

    def side(k: int) -> Array:
        a_k, b_k = _side([a, b], k)
        y = jnp.where(_truth(c[k]), a_k, b_k)
        terms = [(m_c, c[k])] + [(m, v[k]) for m, v in ((m_a, a), (m_b, b)) if isinstance(v, Pair)]
        return _attach(y, terms)

    return Pair(side(0), side(1))


# --- turning a pair forward into a rule -------------------------------------------------------------

#: Returns one output (a Pair, or a plain value that does not vary) or a tuple or list of outputs.
PairForward = Callable[..., Any]


def composite_rule(forward: PairForward) -> Rule:
    """A Rule from a pair forward `forward(*inputs, **attrs) -> output or tuple of outputs`, called like a
    forward function of the rule table (attributes as keywords, schema defaults filled in). Varying inputs
    arrive as Pairs, the others as their (shared) values or None. Written with the primitives above, the
    same function with plain arrays is the op's forward pass.
    """

    def rule(ctx: NodeContext, m_out: Sequence[Array | None]) -> list[Array | None]:
        positions = ctx.varying_positions
        result: list[Array | None] = [None] * len(ctx.xin)
        if not positions:
            return result

        attrs = dict(ctx.node.attrs)
        if getattr(forward, OUTPUT_COUNT_FLAG, False):
            attrs["output_count"] = len(ctx.node.outputs)
        wanted: list[int] = []

        def run(*pairs: Pair) -> list[Pair]:
            outs = forward(*_with(ctx, positions, pairs), **attrs)
            # A Pair is itself a tuple: a lone Pair is one output, not two.
            outs = (outs,) if isinstance(outs, Pair) or not isinstance(outs, (tuple, list)) else outs
            wanted.clear()
            wanted.extend(
                i for i, o in enumerate(outs) if isinstance(o, Pair) and i < len(m_out) and m_out[i] is not None
            )
            return [outs[i] for i in wanted]

        # Varying booleans and integers enter as numbers (booleans 0/1): jax differentiates floats only.
        given = [m for m in m_out if m is not None]
        dtype = jnp.result_type(given[0]) if given else _float_dtype(*ctx.xout)
        primals = [
            Pair(numeric(ctx.xin[p], dtype), numeric(ctx.rin[p], dtype))
            if is_discrete(ctx.xin[p])
            else Pair(ctx.xin[p], ctx.rin[p])
            for p in positions
        ]
        outs, vjp = jax.vjp(run, *primals)  # traces `run` once, filling `wanted`
        if not wanted:
            return result
        cotangents = [
            Pair(m_out[i].astype(o.x.dtype), -m_out[i].astype(o.x.dtype))  # type: ignore[union-attr]
            for i, o in zip(wanted, outs)
        ]
        grads = vjp(cotangents)
        for p, g in zip(positions, grads):
            result[p] = g.x
        return result

    rule.__doc__ = forward.__doc__
    rule.__name__ = getattr(forward, "__name__", "composite")
    return rule


def _with(ctx: NodeContext, positions: Sequence[int], pairs: Sequence[Pair]) -> list[Any]:
    args: list[Any] = list(ctx.xin)
    for p, v in zip(positions, pairs):
        args[p] = v
    return args
