"""Recurrent ops (LSTM, GRU, RNN) as pair forwards (see onnxshap/_composite.py).

Each op is one function written with the rule-carrying primitives: called with plain arrays it is the
op's forward pass; through `composite_rule` it is the op's attribution rule, complete by construction:

- gate pre-activations X·Wᵀ + H·Rᵀ + B (constant W, R; peepholes P ⊙ C) are `linear`;
- activations, with `clip` folded in (a one-input elementwise function), are `rescale`;
- gate products (f ⊙ C, i ⊙ g, o ⊙ h(C); GRU's r ⊙ H, (1 − z) ⊙ h̃, z ⊙ H) get the exact two-player
  Shapley value, the numbers the `shapley` rule gives an exporter's unrolled Mul nodes. It is computed
  with `bilinear` (each factor's multiplier is the other factor's midpoint), which for a product is the
  same value without the coalition enumeration, the secant divisions or their near-zero switch;
- `sequence_lens`: steps past a sequence's length keep the state and output 0 (`jnp.where` with a
  constant mask, linear), as onnxruntime does; a length of 0 gives Y_h = Y_c = 0.

The time loop is one `lax.scan` over both sides of every pair and all directions at once (the
direction is a leading axis of the states; a reverse direction takes its steps in reversed order).

Shapes (ONNX spec): layout 0: X [seq, batch, input], Y [seq, dirs, batch, hidden], Y_h / Y_c /
initial states [dirs, batch, hidden]; layout 1: X [batch, seq, input], Y [batch, seq, dirs, hidden],
states [batch, dirs, hidden]. W [dirs, gates * hidden, input], R [dirs, gates * hidden, hidden],
B [dirs, 2 * gates * hidden] (Wb then Rb), P [dirs, 3 * hidden] (i, o, f).

Deviations from onnxruntime, where the spec decides: activations without `activation_alpha` /
`activation_beta` take the ONNX operators' defaults (ThresholdedRelu alpha 1.0, Affine 1.0 and 0.0;
onnxruntime uses 0), ThresholdedRelu keeps x when x >= alpha (onnxruntime: x > alpha). As in
onnxruntime, `clip` bounds the gates' pre-activations, not the cell state fed to h.
Spec: https://onnx.ai/onnx/operators/onnx__LSTM.html (GRU, RNN alike).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._composite import Pair, bilinear, composite_rule, linear, rescale, x_side
from onnxshap._errors import UnsupportedOpError
from onnxshap.ops._common import unsupported_attribute

Array = Any
Activation = Callable[[Array], Array]

_HIGHEST = lax.Precision.HIGHEST


# --- activations -----------------------------------------------------------------------------------

# name -> (f(x, alpha, beta), takes alpha, takes beta, default alpha, default beta). Defaults are the
# ONNX operators' (None: the spec names none, so the model must give the value).
_ACTIVATIONS: dict[str, tuple[Callable[[Array, Any, Any], Array], bool, bool, float | None, float | None]] = {
    "relu": (lambda x, a, b: jnp.maximum(x, 0), False, False, None, None),
    "tanh": (lambda x, a, b: jnp.tanh(x), False, False, None, None),
    "sigmoid": (lambda x, a, b: jax.nn.sigmoid(x), False, False, None, None),
    "affine": (lambda x, a, b: a * x + b, True, True, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: jnp.where(x >= 0, x, a * x), True, False, 0.01, None),
    "thresholdedrelu": (lambda x, a, b: jnp.where(x >= a, x, 0), True, False, 1.0, None),
    "scaledtanh": (lambda x, a, b: a * jnp.tanh(b * x), True, True, None, None),
    "hardsigmoid": (lambda x, a, b: jnp.clip(a * x + b, 0, 1), True, True, 0.2, 0.5),
    "elu": (lambda x, a, b: jnp.where(x >= 0, x, a * jnp.expm1(jnp.minimum(x, 0))), True, False, 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + jnp.abs(x)), False, False, None, None),
    "softplus": (lambda x, a, b: jnp.logaddexp(x, 0), False, False, None, None),
}

_SPELLINGS = [
    "Relu",
    "Tanh",
    "Sigmoid",
    "Affine",
    "LeakyRelu",
    "ThresholdedRelu",
    "ScaledTanh",
    "HardSigmoid",
    "Elu",
    "Softsign",
    "Softplus",
]


def _activations(
    op: str,
    names: Sequence[str] | None,
    alphas: Sequence[float] | None,
    betas: Sequence[float] | None,
    defaults: Sequence[str],
    n_dirs: int,
    clip: float | None,
) -> list[Activation]:
    """The op's activation functions (f, g, h order), each over a leading direction axis.

    alpha and beta values are consumed in the order of the `activations` list, each by the functions
    that take one (onnxruntime's reading of "consumed in the order of activation functions"); clip is
    applied to the input of every activation but the last of LSTM (onnxruntime's h(C) is unclipped).
    """
    per_dir = len(defaults)
    given = list(names) if names else list(defaults) * n_dirs
    if len(given) == per_dir * n_dirs:
        used = given
    elif len(given) == 2 * per_dir and n_dirs == 1:
        used = given[:per_dir]  # RNN's schema default lists two functions whatever the direction
    elif len(given) == per_dir and n_dirs == 2:
        used = given * 2
    else:
        raise UnsupportedOpError(
            f"{op} with {n_dirs} direction(s) needs {per_dir * n_dirs} activation functions "
            f"({per_dir} per direction), but `activations` lists {len(given)}: {given}. Fix the attribute."
        )
    alpha_it, beta_it = iter(alphas or []), iter(betas or [])
    specs: list[tuple[str, float | None, float | None, float | None]] = []
    for position, name in enumerate(used):
        key = name.lower()
        if key not in _ACTIVATIONS:
            raise unsupported_attribute(op, "activations", name, _SPELLINGS)
        _, takes_alpha, takes_beta, default_alpha, default_beta = _ACTIVATIONS[key]
        alpha = next(alpha_it, default_alpha) if takes_alpha else None
        beta = next(beta_it, default_beta) if takes_beta else None
        if (takes_alpha and alpha is None) or (takes_beta and beta is None):
            raise UnsupportedOpError(
                f"{op}: activation {name} needs activation_alpha and activation_beta values, which the ONNX spec "
                "gives no defaults for, and the node's lists ran out. Add the values to the node's attributes."
            )
        unclipped = op == "LSTM" and position % per_dir == per_dir - 1
        specs.append((key, alpha, beta, None if unclipped else clip))
    gates: list[Activation] = []
    for k in range(per_dir):
        column = [specs[d * per_dir + k] for d in range(n_dirs)]
        if all(c == column[0] for c in column):
            gates.append(_bind(*column[0]))
        else:  # directions with different functions: each on its own slice of the direction axis
            fns = [_bind(*c) for c in column]
            gates.append(lambda v, fns=fns: jnp.stack([f(v[d]) for d, f in enumerate(fns)]))
    return gates


def _bind(key: str, alpha: float | None, beta: float | None, clip: float | None) -> Activation:
    f = _ACTIVATIONS[key][0]

    def act(x: Array) -> Array:
        a = None if alpha is None else jnp.asarray(alpha, x.dtype)
        b = None if beta is None else jnp.asarray(beta, x.dtype)
        if clip is not None:
            x = jnp.clip(x, -jnp.asarray(clip, x.dtype), jnp.asarray(clip, x.dtype))
        return f(x, a, b).astype(x.dtype)

    return act


# --- the shared time loop --------------------------------------------------------------------------


def _reverse_flags(op: str, direction: str) -> list[bool]:
    if direction in ("forward", "foward"):  # "foward": GRU-1's schema default, a typo for "forward"
        return [False]
    if direction == "reverse":
        return [True]
    if direction == "bidirectional":
        return [False, True]
    raise unsupported_attribute(op, "direction", direction, ["forward", "reverse", "bidirectional"])


def _recurrent_matmul(h: Array, r: Array) -> Array:
    """Per direction h · rᵀ: h [dirs, batch, hidden], r [dirs, rows, hidden] -> [dirs, batch, rows]."""
    return jnp.einsum("dbh,dgh->dbg", h, r, precision=_HIGHEST)


def _lift(value: Any, varying: bool) -> Any:
    # lax.scan needs one carry structure: once anything varies, every state is a pair.
    return Pair(value, value) if varying and not isinstance(value, Pair) else value


#: cell(xw_t [dirs, batch, gates * hidden], states (each [dirs, batch, hidden])) -> new states, hidden first.
Cell = Callable[[Any, tuple[Any, ...]], tuple[Any, ...]]


def _recurrence(
    op: str,
    X: Any,
    W: Array,
    B: Any,
    sequence_lens: Array | None,
    states: Sequence[Any],
    *,
    hidden: int,
    reverse: Sequence[bool],
    layout: int,
    fold_bias: Callable[[Array], Array],
    cell: Cell,
) -> tuple[Any, list[Any]]:
    """Run `cell` over time. Returns Y and the final states, in the node's layout.

    All directions advance together in one `lax.scan`: the direction is the leading axis of every state,
    and a reverse direction reads its inputs, and writes its outputs, in reversed time order. X·Wᵀ +
    fold_bias(B) is computed for all steps at once (linear); `states` are the initial states in layout 0
    (None: zeros).
    """
    if layout not in (0, 1):
        raise unsupported_attribute(op, "layout", layout, [0, 1])
    xs = x_side(X)
    if jnp.ndim(xs) != 3:
        raise UnsupportedOpError(f"{op}: X must have rank 3, got shape {tuple(jnp.shape(xs))}.")
    if layout == 1:
        X = linear(lambda v: jnp.swapaxes(v, 0, 1), X)
    steps, batch = jnp.shape(x_side(X))[:2]
    n_dirs = len(reverse)
    dtype = jnp.result_type(xs)
    varying = any(isinstance(v, Pair) for v in (X, B, *states))
    init = tuple(_lift(jnp.zeros((n_dirs, batch, hidden), dtype) if s is None else s, varying) for s in states)

    def in_step_order(v: Array) -> Array:
        """[seq, dirs, ...] from time order to step order (an involution: also back)."""
        if not any(reverse):
            return v
        if all(reverse):
            return v[::-1]
        return jnp.stack([v[::-1, d] if r else v[:, d] for d, r in enumerate(reverse)], axis=1)

    def project(x: Array, b: Array | None) -> Array:
        xw = jnp.einsum("tbi,dgi->tdbg", x, W, precision=_HIGHEST)
        return in_step_order(xw if b is None else xw + fold_bias(b)[None, :, None, :])

    xw = linear(project, X, B)  # [seq, dirs, batch, gates * hidden]
    mask = lens = None
    if sequence_lens is not None:
        lens = jnp.reshape(jnp.asarray(sequence_lens).astype(jnp.int32), (batch,))
        if not (isinstance(sequence_lens, np.ndarray) and np.all(np.asarray(sequence_lens) >= steps)):
            valid = jnp.arange(steps, dtype=jnp.int32)[:, None] < lens[None, :]  # [seq, batch]
            mask = in_step_order(jnp.broadcast_to(valid[:, None, :, None], (steps, n_dirs, batch, 1)))

    def step(carry: tuple[Any, ...], inputs: tuple[Any, Any]) -> tuple[tuple[Any, ...], Any]:
        xw_t, m_t = inputs
        new = cell(xw_t, carry)
        if m_t is None:
            return new, new[0]
        # Past a sequence's length the state is kept and the output is 0 (a constant mask: linear).
        kept = tuple(linear(lambda a, b: jnp.where(m_t, a, b), n, c) for n, c in zip(new, carry))
        return kept, linear(lambda h: jnp.where(m_t, h, 0), new[0])

    final, ys = lax.scan(step, init, (xw, mask))
    Y = linear(in_step_order, ys)  # [seq, dirs, batch, hidden]
    final_states = list(final)
    if lens is not None:
        # onnxruntime: a sequence of length 0 ends in zero states, not the initial ones.
        started = (lens > 0)[None, :, None]
        final_states = [linear(lambda v: jnp.where(started, v, 0), s) for s in final_states]
    if layout == 1:
        Y = linear(lambda v: jnp.transpose(v, (2, 0, 1, 3)), Y)
        final_states = [linear(lambda v: jnp.swapaxes(v, 0, 1), s) for s in final_states]
    return Y, final_states


def _states_in_layout0(states: Sequence[Any], layout: int) -> list[Any]:
    return [s if s is None or layout == 0 else linear(lambda v: jnp.swapaxes(v, 0, 1), s) for s in states]


class _Prepared(NamedTuple):
    hidden: int
    reverse: list[bool]
    activations: list[Activation]
    dtype: Any  # of the outputs; the recurrence runs in `_work_dtype(dtype)`
    X: Any
    W: Array
    R: Array
    B: Any
    states: list[Any]


def _prepare(
    op: str,
    X: Any,
    W: Array,
    R: Array,
    B: Any,
    states: Sequence[Any],
    *,
    gates: int,
    hidden_size: int | None,
    direction: str,
    activations: Sequence[str] | None,
    activation_alpha: Sequence[float] | None,
    activation_beta: Sequence[float] | None,
    default_activations: Sequence[str],
    clip: float | None,
) -> _Prepared:
    """What LSTM, GRU and RNN share before their cells: W and R checked against the hidden size and
    the directions, the activations resolved, and every operand in the working dtype."""
    reverse = _reverse_flags(op, direction)
    hidden = int(hidden_size) if hidden_size is not None else int(jnp.shape(R)[-1])
    for name, value, last in (("W", W, jnp.shape(x_side(X))[-1]), ("R", R, hidden)):
        if tuple(jnp.shape(value)) != (len(reverse), gates * hidden, last):
            raise UnsupportedOpError(
                f"{op}: {name} has shape {tuple(jnp.shape(value))}, but direction={direction!r} and hidden_size="
                f"{hidden} need {(len(reverse), gates * hidden, last)}. The model is malformed."
            )
    acts = _activations(op, activations, activation_alpha, activation_beta, default_activations, len(reverse), clip)
    dtype = jnp.result_type(x_side(X))
    work = _work_dtype(dtype)
    return _Prepared(
        hidden,
        reverse,
        acts,
        dtype,
        _cast(X, work),
        jnp.asarray(W).astype(work),
        jnp.asarray(R).astype(work),
        _cast(B, work),
        [_cast(v, work) for v in states],
    )


def _mul(a: Array, b: Array) -> Array:
    return a * b


def _add(a: Array, b: Array) -> Array:
    return a + b


# --- the ops -----------------------------------------------------------------------------------------


def lstm(
    X: Any,
    W: Array,
    R: Array,
    B: Any = None,
    sequence_lens: Array | None = None,
    initial_h: Any = None,
    initial_c: Any = None,
    P: Array | None = None,
    *,
    hidden_size: int | None = None,
    direction: str = "forward",
    layout: int = 0,
    activations: Sequence[str] | None = None,
    activation_alpha: Sequence[float] | None = None,
    activation_beta: Sequence[float] | None = None,
    clip: float | None = None,
    input_forget: int = 0,
    output_sequence: int = 0,
) -> tuple[Any, Any, Any]:
    """LSTM (versions 1, 7, 14, 22) -> (Y, Y_h, Y_c). Gates iofc; default activations f=Sigmoid, g=h=Tanh.

    i = f(Xi + Hi + Pi ⊙ C₋), f = f(Xf + Hf + Pf ⊙ C₋) (1 − i with input_forget), g = g(Xc + Hc),
    C = f ⊙ C₋ + i ⊙ g, o = f(Xo + Ho + Po ⊙ C), H = o ⊙ h(C). `output_sequence` (version 1) is
    ignored: the node's outputs say what is computed.
    """
    del output_sequence
    H, reverse, (f_act, g_act, h_act), dtype, X, W, R, B, (initial_h, initial_c) = _prepare(
        "LSTM",
        X,
        W,
        R,
        B,
        [initial_h, initial_c],
        gates=4,
        hidden_size=hidden_size,
        direction=direction,
        activations=activations,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        default_activations=("Sigmoid", "Tanh", "Tanh"),
        clip=clip,
    )
    # Peepholes [dirs, 3 * hidden] (i, o, f), broadcast over the batch.
    peep = None if P is None else jnp.asarray(P).astype(W.dtype)[:, None, :]
    p_i, p_o, p_f = (None if peep is None else peep[..., k * H : (k + 1) * H] for k in range(3))

    def peephole(z: Any, c: Any, p: Array | None) -> Any:
        return z if p is None else linear(lambda v, cv: v + p * cv, z, c)

    def cell(xw_t: Any, carry: tuple[Any, ...]) -> tuple[Any, ...]:
        h, c = carry
        z = linear(lambda a, hv: a + _recurrent_matmul(hv, R), xw_t, h)
        zi, zo, zf, zc = (linear(lambda v, k=k: v[..., k * H : (k + 1) * H], z) for k in range(4))
        i = rescale(f_act, peephole(zi, c, p_i))
        f = linear(lambda v: 1 - v, i) if input_forget else rescale(f_act, peephole(zf, c, p_f))
        g = rescale(g_act, zc)
        c_new = linear(_add, bilinear(_mul, f, c), bilinear(_mul, i, g))
        o = rescale(f_act, peephole(zo, c_new, p_o))
        h_new = bilinear(_mul, o, rescale(h_act, c_new))
        return h_new, c_new

    Y, (Y_h, Y_c) = _recurrence(
        "LSTM",
        X,
        W,
        B,
        sequence_lens,
        _states_in_layout0([initial_h, initial_c], layout),
        hidden=H,
        reverse=reverse,
        layout=layout,
        fold_bias=lambda b: b[..., : 4 * H] + b[..., 4 * H :],
        cell=cell,
    )
    return _cast(Y, dtype), _cast(Y_h, dtype), _cast(Y_c, dtype)


def gru(
    X: Any,
    W: Array,
    R: Array,
    B: Any = None,
    sequence_lens: Array | None = None,
    initial_h: Any = None,
    *,
    hidden_size: int | None = None,
    direction: str = "forward",
    layout: int = 0,
    activations: Sequence[str] | None = None,
    activation_alpha: Sequence[float] | None = None,
    activation_beta: Sequence[float] | None = None,
    clip: float | None = None,
    linear_before_reset: int = 0,
    output_sequence: int = 0,
) -> tuple[Any, Any]:
    """GRU (versions 1, 3, 7, 14, 22) -> (Y, Y_h). Gates zrh; default activations f=Sigmoid, g=Tanh.

    z = f(Xz + Hz), r = f(Xr + Hr), h̃ = g(Xh + (r ⊙ H₋)·Rhᵀ + Rbh) or, with linear_before_reset,
    g(Xh + r ⊙ (H₋·Rhᵀ + Rbh)); H = (1 − z) ⊙ h̃ + z ⊙ H₋.
    """
    del output_sequence
    H, reverse, (f_act, g_act), dtype, X, W, R, B, (initial_h,) = _prepare(
        "GRU",
        X,
        W,
        R,
        B,
        [initial_h],
        gates=3,
        hidden_size=hidden_size,
        direction=direction,
        activations=activations,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        default_activations=("Sigmoid", "Tanh"),
        clip=clip,
    )
    r_zr, r_h = R[:, : 2 * H], R[:, 2 * H :]
    # With linear_before_reset, Rbh sits inside the reset product: keep it out of the folded bias.
    rb_h = None if B is None or not linear_before_reset else linear(lambda b: b[:, None, 5 * H :], B)

    def fold_bias(b: Array) -> Array:
        if linear_before_reset:
            return jnp.concatenate([b[..., : 2 * H] + b[..., 3 * H : 5 * H], b[..., 2 * H : 3 * H]], axis=-1)
        return b[..., : 3 * H] + b[..., 3 * H :]

    def cell(xw_t: Any, carry: tuple[Any, ...]) -> tuple[Any, ...]:
        (h,) = carry
        zr = linear(lambda a, hv: a[..., : 2 * H] + _recurrent_matmul(hv, r_zr), xw_t, h)
        z = rescale(f_act, linear(lambda v: v[..., :H], zr))
        r = rescale(f_act, linear(lambda v: v[..., H:], zr))
        if linear_before_reset:
            hr = linear(lambda hv, b: _recurrent_matmul(hv, r_h) + (0 if b is None else b), h, rb_h)
            pre = linear(lambda a, v: a[..., 2 * H :] + v, xw_t, bilinear(_mul, r, hr))
        else:
            pre = linear(lambda a, v: a[..., 2 * H :] + _recurrent_matmul(v, r_h), xw_t, bilinear(_mul, r, h))
        candidate = rescale(g_act, pre)
        h_new = linear(_add, bilinear(lambda zv, v: (1 - zv) * v, z, candidate), bilinear(_mul, z, h))
        return (h_new,)

    Y, (Y_h,) = _recurrence(
        "GRU",
        X,
        W,
        B,
        sequence_lens,
        _states_in_layout0([initial_h], layout),
        hidden=H,
        reverse=reverse,
        layout=layout,
        fold_bias=fold_bias,
        cell=cell,
    )
    return _cast(Y, dtype), _cast(Y_h, dtype)


def rnn(
    X: Any,
    W: Array,
    R: Array,
    B: Any = None,
    sequence_lens: Array | None = None,
    initial_h: Any = None,
    *,
    hidden_size: int | None = None,
    direction: str = "forward",
    layout: int = 0,
    activations: Sequence[str] | None = None,
    activation_alpha: Sequence[float] | None = None,
    activation_beta: Sequence[float] | None = None,
    clip: float | None = None,
    output_sequence: int = 0,
) -> tuple[Any, Any]:
    """RNN (versions 1, 7, 14, 22) -> (Y, Y_h): H = f(X·Wᵀ + H₋·Rᵀ + Wb + Rb), default f=Tanh."""
    del output_sequence
    H, reverse, (f_act,), dtype, X, W, R, B, (initial_h,) = _prepare(
        "RNN",
        X,
        W,
        R,
        B,
        [initial_h],
        gates=1,
        hidden_size=hidden_size,
        direction=direction,
        activations=activations,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        default_activations=("Tanh",),
        clip=clip,
    )

    def cell(xw_t: Any, carry: tuple[Any, ...]) -> tuple[Any, ...]:
        (h,) = carry
        return (rescale(f_act, linear(lambda a, hv: a + _recurrent_matmul(hv, R), xw_t, h)),)

    Y, (Y_h,) = _recurrence(
        "RNN",
        X,
        W,
        B,
        sequence_lens,
        _states_in_layout0([initial_h], layout),
        hidden=H,
        reverse=reverse,
        layout=layout,
        fold_bias=lambda b: b[..., :H] + b[..., H:],
        cell=cell,
    )
    return _cast(Y, dtype), _cast(Y_h, dtype)


def _work_dtype(dtype: Any) -> Any:
    # Half-precision recurrences run in float32 and round once at the end (states would drift otherwise).
    return jnp.float32 if dtype in (jnp.float16, jnp.bfloat16) else dtype


def _cast(value: Any, dtype: Any) -> Any:
    if value is None or jnp.result_type(x_side(value)) == dtype:
        return value
    return linear(lambda v: v.astype(dtype), value)


lstm_rule = composite_rule(lstm)
gru_rule = composite_rule(gru)
rnn_rule = composite_rule(rnn)
