"""Pair forwards of composite ops (see onnxshap/_composite.py): each function is both the op's
decomposition into rule-carrying primitives and, called with plain arrays, a forward pass. The rule
table names the `*_rule` objects in its `composite` column."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._composite import Pair, bilinear, composite_rule, linear, max_over, rescale, shapley, x_side
from onnxshap._errors import UnsupportedOpError
from onnxshap._multipliers import Rule, comparison
from onnxshap.ops._common import normalize_axis, onnx_dtype, unsupported_attribute
from onnxshap.ops.ml import _FLOAT32_LOWEST, _POST_TRANSFORMS, _linear_scores, _logistic, _probit, _rows
from onnxshap.ops.nn import _accumulation_dtype, _PoolGeometry
from onnxshap.ops.reduce import _axes as reduce_axes

Array = Any
sg = lax.stop_gradient


def layer_normalization(
    x: Any, scale: Any, b: Any = None, *, axis: int, epsilon: float, stash_type: int
) -> tuple[Any, Any, Any]:
    """LayerNormalization as in the spec's function body: centre (linear), square (rescale), mean
    (linear), 1/sqrt(v + eps) (rescale), centred * inv_std (two-player Shapley), scale and bias
    (linear for constant scale; bilinear if the scale varies). Returns (Y, Mean, InvStdDev)."""
    stash = onnx_dtype(stash_type)
    if not np.issubdtype(stash, np.floating):
        raise unsupported_attribute("LayerNormalization", "stash_type", stash_type, ["a float type"])
    dtype = jnp.result_type(x_side(x))
    rank = jnp.ndim(x_side(x))
    axes = tuple(range(normalize_axis(axis, rank), rank))
    xs = linear(lambda v: v.astype(stash), x)
    mean = linear(lambda v: jnp.mean(v, axis=axes, keepdims=True), xs)
    centred = linear(lambda v: v - jnp.mean(v, axis=axes, keepdims=True), xs)
    square = rescale(lambda v: v * v, centred)
    var = linear(lambda v: jnp.mean(v, axis=axes, keepdims=True), square)
    inv_std = rescale(lambda v: lax.rsqrt(v + jnp.asarray(epsilon, stash)), var)
    normed = bilinear(lambda c, s: (c * s).astype(dtype), centred, inv_std)
    y = bilinear(lambda n, s: n * s.astype(dtype), normed, scale)
    if b is not None:
        y = linear(lambda v, c: v + c.astype(dtype), y, b)
    return y, mean, inv_std


layer_normalization_rule = composite_rule(layer_normalization)


# --- helpers -----------------------------------------------------------------------------------------


def _shared_max(p: Any, axes: tuple[int, ...]) -> Array:
    """max over `axes` (kept) of both sides of a Pair, or of a plain array; 0 where not finite. A shift by
    this one constant on both sides leaves every multiplier unchanged (it cancels in the secants)."""
    sides = [p.x, p.r] if isinstance(p, Pair) else [p]
    c = functools.reduce(jnp.maximum, [jnp.max(s, axis=axes, keepdims=True, initial=-jnp.inf) for s in sides])
    return sg(jnp.where(jnp.isfinite(c), c, jnp.zeros_like(c)))


def _per_side(fn: Callable[[Array], Array], p: Any) -> Any:
    """fn applied to each side of a Pair (values only, no multipliers), or to a plain array."""
    return Pair(sg(fn(p.x)), sg(fn(p.r))) if isinstance(p, Pair) else fn(p)


def _shifted_log_sum_exp(p: Any, axes: tuple[int, ...], c: Array, mask: Callable[[Array], Array] | None = None) -> Any:
    """l = log(sum over `axes` (kept) of exp(p - c)) as exp (rescale), sum (linear), log (rescale), for a
    shift c shared by both sides (`_shared_max`). With `mask`, only elements where mask(p) hold are summed.

    float32-stable when the sides are far apart: the exponentials are <= 1 and the side holding the max
    sums to >= 1; the other side may underflow to 0, so log's two values come from a per-side logsumexp
    (`rescale(..., values=...)`), which keeps the log step exact.
    """
    keep = mask if mask is not None else (lambda v: jnp.ones(jnp.shape(v), bool))
    e = rescale(lambda v: jnp.where(keep(v), jnp.exp(v - c), 0), p)
    s = linear(lambda v: jnp.sum(v, axis=axes, keepdims=True, dtype=v.dtype), e)

    def stable(v: Array) -> Array:
        return jax.nn.logsumexp(jnp.where(keep(v), v, -jnp.inf), axis=axes, keepdims=True) - c

    if not isinstance(p, Pair):
        return jnp.log(s)
    return rescale(jnp.log, s, _per_side(stable, p))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _power(v: Array, exponent: float) -> Array:
    """v ** exponent (jnp.sqrt for 1/2) for v >= 0: roots of sums of squares or of p-th powers. Its
    derivative is 0 at v = 0 instead of inf: rescale takes the midpoint derivative only where both sides
    are ~0, and an inf multiplier would turn 0 * inf into NaN upstream."""
    return jnp.sqrt(v) if exponent == 0.5 else v**exponent


@_power.defjvp
def _power_jvp(exponent: float, primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (v,), (t,) = primals, tangents
    positive = v > 0
    safe = jnp.where(positive, v, jnp.ones_like(v))
    return _power(v, exponent), jnp.where(positive, exponent * safe ** (exponent - 1), 0).astype(t.dtype) * t


def _keep_or_squeeze(p: Any, axes: tuple[int, ...], keepdims: int) -> Any:
    return p if keepdims else linear(lambda v: jnp.squeeze(v, axis=axes), p)


# --- reductions ----------------------------------------------------------------------------------------


def _reduction(data: Any, axes_input: Any, axes: Sequence[int] | None, noop_with_empty_axes: int) -> tuple[int, ...]:
    return reduce_axes(x_side(data), axes_input, axes, noop_with_empty_axes)


def _sum_kept(p: Any, axes: tuple[int, ...]) -> Any:
    return linear(lambda v: jnp.sum(v, axis=axes, keepdims=True, dtype=v.dtype), p)


def reduce_l1(
    data: Any,
    axes_input: Any = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Any:
    """ReduceL1 as in its function body: |x| (rescale), sum (linear)."""
    red = _reduction(data, axes_input, axes, noop_with_empty_axes)
    return _keep_or_squeeze(_sum_kept(rescale(jnp.abs, data), red), red, keepdims)


def reduce_sum_square(
    data: Any,
    axes_input: Any = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Any:
    """ReduceSumSquare as in its function body: x * x (rescale; multiplier x + r), sum (linear)."""
    red = _reduction(data, axes_input, axes, noop_with_empty_axes)
    return _keep_or_squeeze(_sum_kept(rescale(lambda v: v * v, data), red), red, keepdims)


def reduce_l2(
    data: Any,
    axes_input: Any = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Any:
    """ReduceL2 as in its function body: x * x (rescale), sum (linear), sqrt (rescale). Integer inputs
    take the root in float64 and cast back."""
    red = _reduction(data, axes_input, axes, noop_with_empty_axes)
    dtype = jnp.result_type(x_side(data))
    total = _sum_kept(rescale(lambda v: v * v, data), red)
    if jnp.issubdtype(dtype, jnp.integer):
        root = rescale(lambda v: jnp.sqrt(v.astype(jnp.float64)).astype(dtype), total)
    else:
        root = rescale(lambda v: _power(v, 0.5), total)
    return _keep_or_squeeze(root, red, keepdims)


def reduce_log_sum(
    data: Any,
    axes_input: Any = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Any:
    """ReduceLogSum as in its function body: sum (linear), log (rescale); an empty reduction gives -inf."""
    red = _reduction(data, axes_input, axes, noop_with_empty_axes)
    dtype = jnp.result_type(x_side(data))
    log = rescale(lambda v: jnp.log(v).astype(dtype), _sum_kept(data, red))
    return _keep_or_squeeze(log, red, keepdims)


def reduce_log_sum_exp(
    data: Any,
    axes_input: Any = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Any:
    """ReduceLogSumExp as in its function body: exp (rescale), sum (linear), log (rescale), all shifted by
    one constant c shared by both sides (the larger side's max; the multipliers do not depend on it).
    float32-stable when one side saturates (see `_shifted_log_sum_exp`); an empty reduction gives -inf."""
    red = _reduction(data, axes_input, axes, noop_with_empty_axes)
    dtype = jnp.result_type(x_side(data))
    c = _shared_max(data, red)
    out = linear(lambda v: (v + c).astype(dtype), _shifted_log_sum_exp(data, red, c))
    return _keep_or_squeeze(out, red, keepdims)


#: ReduceProd over at most this many elements gets the exact k-player Shapley value (2^k coalitions).
PROD_SHAPLEY_MAX = 8


def reduce_prod(
    data: Any,
    axes_input: Any = None,
    *,
    keepdims: int,
    axes: Sequence[int] | None = None,
    noop_with_empty_axes: int = 0,
) -> Any:
    """ReduceProd; an empty reduction gives 1.

    Rule: the product of the k reduced elements is a k-player game. For k <= PROD_SHAPLEY_MAX (8) each
    element gets its exact Shapley value (`shapley` over the k elements, 2^k coalitions). For larger k
    it is the DeepLIFT chain of two-player products ((x1 * x2) * x3) * ... in row-major order over the
    reduced axes, each step an exact two-player Shapley value: complete, but not the k-player value.
    """
    red = _reduction(data, axes_input, axes, noop_with_empty_axes)
    if not isinstance(data, Pair):
        return jnp.prod(data, axis=red, keepdims=bool(keepdims), dtype=jnp.result_type(data))
    rank = jnp.ndim(data.x)
    kept = [a for a in range(rank) if a not in red]
    shape = jnp.shape(data.x)
    k = int(np.prod([shape[a] for a in red]))
    out_shape = tuple(1 if a in red else shape[a] for a in range(rank)) if keepdims else tuple(shape[a] for a in kept)
    # Reduced elements along a trailing axis of length k.
    flat = linear(lambda v: jnp.transpose(v, kept + list(red)).reshape(*[shape[a] for a in kept], k), data)
    if k == 0:
        return linear(lambda v: jnp.ones(out_shape, v.dtype), data)
    if k <= PROD_SHAPLEY_MAX:
        factors = [linear(lambda v, j=j: v[..., j], flat) for j in range(k)]
        product = shapley(lambda *vs: functools.reduce(jnp.multiply, vs), *factors)
    else:
        stacked = linear(lambda v: jnp.moveaxis(v, -1, 0), flat)

        def step(acc: Pair, factor: Pair) -> tuple[Pair, None]:
            return bilinear(jnp.multiply, acc, factor), None

        product, _ = lax.scan(step, linear(lambda v: v[0], stacked), linear(lambda v: v[1:], stacked))
    return linear(lambda v: v.reshape(out_shape), product)


reduce_l1_rule = composite_rule(reduce_l1)
reduce_l2_rule = composite_rule(reduce_l2)
reduce_sum_square_rule = composite_rule(reduce_sum_square)
reduce_log_sum_rule = composite_rule(reduce_log_sum)
reduce_log_sum_exp_rule = composite_rule(reduce_log_sum_exp)
reduce_prod_rule = composite_rule(reduce_prod)


# --- normalization and pooling ---------------------------------------------------------------------


def instance_normalization(x: Any, scale: Any, b: Any, *, epsilon: float) -> Any:
    """InstanceNormalization, decomposed like LayerNormalization over the spatial axes of each sample and
    channel: centre (linear), square (rescale), mean (linear), 1/sqrt(v + eps) (rescale), centred * inv_std
    (two-player Shapley), per-channel scale (linear, bilinear if it varies) and bias (linear). Half
    precision accumulates in float32."""
    dtype = jnp.result_type(x_side(x))
    rank = jnp.ndim(x_side(x))
    acc = _accumulation_dtype(x_side(x))
    axes = tuple(range(2, rank))
    per_channel = (-1,) + (1,) * (rank - 2)
    xs = linear(lambda v: v.astype(acc), x)
    centred = linear(lambda v: v - jnp.mean(v, axis=axes, keepdims=True), xs)
    var = linear(lambda v: jnp.mean(v, axis=axes, keepdims=True), rescale(lambda v: v * v, centred))
    inv_std = rescale(lambda v: lax.rsqrt(v + jnp.asarray(epsilon, acc)), var)
    normed = bilinear(jnp.multiply, centred, inv_std)
    y = bilinear(lambda n, s: n * jnp.reshape(s, per_channel).astype(acc), normed, scale)
    return linear(lambda v, c: (v + jnp.reshape(c, per_channel).astype(acc)).astype(dtype), y, b)


def lrn(x: Any, *, alpha: float, beta: float, bias: float, size: int) -> Any:
    """Local response normalization across channels, y = x / (bias + alpha/size * sum of x^2 over the
    channel window)^beta: square (rescale), window sum (linear), (bias + alpha/size * s)^beta (rescale),
    x / d (two-player Shapley). The window holds floor((size-1)/2) channels before, the rest after."""
    dtype = jnp.result_type(x_side(x))
    rank = jnp.ndim(x_side(x))
    acc = _accumulation_dtype(x_side(x))
    before = (size - 1) // 2
    window = (1, size) + (1,) * (rank - 2)
    padding = [(0, 0), (before, size - 1 - before)] + [(0, 0)] * (rank - 2)

    def window_sum(v: Array) -> Array:
        return lax.reduce_window(v, np.zeros((), acc), lax.add, window, (1,) * rank, padding)

    xs = linear(lambda v: v.astype(acc), x)
    square_sum = linear(window_sum, rescale(lambda v: v * v, xs))
    divisor = rescale(lambda s: (bias + (alpha / size) * s) ** beta, square_sum)
    return shapley(lambda a, d: (a / d).astype(dtype), xs, divisor)


def lp_pool(
    x: Any,
    *,
    auto_pad: str,
    p: float,
    kernel_shape: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    ceil_mode: int = 0,
    dilations: Sequence[int] | None = None,
) -> Any:
    """(sum over the window of |x|^p)^(1/p), padding contributing zeros: |x|^p (rescale), window sum
    (linear), ^(1/p) (rescale)."""
    geo = _PoolGeometry(
        "LpPool",
        x_side(x),
        auto_pad=auto_pad,
        kernel_shape=kernel_shape,
        strides=strides,
        pads=pads,
        dilations=dilations,
        ceil_mode=ceil_mode,
    )
    dtype = jnp.result_type(x_side(x))
    acc = _accumulation_dtype(x_side(x))
    powered = rescale(lambda v: jnp.abs(v.astype(acc)) ** p, x)
    total = linear(lambda v: geo.reduce(v, np.zeros((), acc), lax.add), powered)
    return rescale(lambda v: _power(v, 1.0 / p).astype(dtype), total)


def global_lp_pool(x: Any, *, p: float) -> Any:
    """(sum over the spatial axes of |x|^p)^(1/p): |x|^p (rescale), sum (linear), ^(1/p) (rescale)."""
    dtype = jnp.result_type(x_side(x))
    acc = _accumulation_dtype(x_side(x))
    axes = tuple(range(2, jnp.ndim(x_side(x))))
    powered = rescale(lambda v: jnp.abs(v.astype(acc)) ** p, x)
    total = linear(lambda v: jnp.sum(v, axis=axes, keepdims=True), powered)
    return rescale(lambda v: _power(v, 1.0 / p).astype(dtype), total)


instance_normalization_rule = composite_rule(instance_normalization)
lrn_rule = composite_rule(lrn)
lp_pool_rule = composite_rule(lp_pool)
global_lp_pool_rule = composite_rule(global_lp_pool)


# --- ai.onnx.ml --------------------------------------------------------------------------------------


def _nonzero_divisor(a: Array, d: Array) -> Array:
    """a / d, or a itself where d == 0 (onnxruntime copies such rows); NaN-free derivatives."""
    zero = d == 0
    return jnp.where(zero, a, a / jnp.where(zero, jnp.ones_like(d), d))


def normalizer(x: Any, *, norm: str) -> Any:
    """Each row of a [N, C] (or [C]) input divided by its max (MAX), sum of |x| (L1) or Euclidean norm (L2),
    as float32; a row whose divisor is 0 is copied unchanged, MAX skips NaNs (as onnxruntime does).

    Rule: the divisor d is max_over (exact Shapley value of the max game), |x| (rescale) then sum (linear),
    or x * x (rescale) then sum (linear); y = f(x, d) elementwise is a two-player Shapley value
    (f = x / d, x / sqrt(s) for L2, the copy where d = 0 included), so y = x * (1 / d) as a product of two
    varying operands.
    """
    if norm not in ("MAX", "L1", "L2"):
        raise unsupported_attribute("Normalizer", "norm", norm, ["MAX", "L1", "L2"])
    shape = jnp.shape(x_side(x))
    rows = linear(lambda v: _rows(v, "Normalizer"), x)
    xf = linear(lambda v: v.astype(jnp.float32), rows)
    if norm == "MAX":
        lowest = jnp.float32(_FLOAT32_LOWEST)
        clean = rescale(lambda v: jnp.where(jnp.isnan(v), lowest, jnp.maximum(v, lowest)), xf)
        y = shapley(_nonzero_divisor, xf, max_over(clean, axis=1, keepdims=True))
    elif norm == "L1":
        y = shapley(_nonzero_divisor, xf, linear(lambda v: jnp.sum(v, axis=1, keepdims=True), rescale(jnp.abs, xf)))
    else:
        # x * x in the input's precision, then float32, as onnxruntime does.
        work = jnp.float64 if jnp.result_type(x_side(rows)) == jnp.float64 else jnp.float32
        squares = rescale(lambda v: (v.astype(work) * v.astype(work)).astype(jnp.float32), rows)
        total = linear(lambda v: jnp.sum(v, axis=1, keepdims=True), squares)
        y = shapley(lambda a, s: _nonzero_divisor(a, _power(s, 0.5)), xf, total)
    return linear(lambda v: v.reshape(shape), y)


def _softmax_zero(scores: Any) -> Any:
    """onnxruntime's ComputeSoftmaxZero over axis 1: scores with |s| > 1e-7 get exp(s - L), the others
    s * exp(-L), where L is the log-sum-exp of the former.

    Rule: L as in `_shifted_log_sum_exp` over the counted scores. Where a score counts on both sides,
    exp (rescale) of s - L, as the Softmax rule; where it counts on neither, s * exp(-L) (bilinear, exp by
    rescale); where it counts on one side only, the two-player Shapley value of the piecewise f(s, L)
    (the other elements feed f a harmless constant, so that no overflow leaks into their multipliers).
    """
    c = _shared_max(scores, (1,))

    def counted(v: Array) -> Array:
        return (v > 1e-7) | (v < -1e-7)

    def piecewise(s: Array, l: Array) -> Array:
        return jnp.where(counted(s), jnp.exp(s - c - l), s * jnp.exp(-c - l))

    log_total = _shifted_log_sum_exp(scores, (1,), c, mask=counted)
    both = _per_side(counted, scores)
    both = both.x & both.r if isinstance(both, Pair) else both
    either = _per_side(counted, scores)
    either = either.x | either.r if isinstance(either, Pair) else either
    one_side = either & ~both
    smooth = rescale(jnp.exp, linear(lambda v, l: v - c - l, scores, log_total))
    scaled = bilinear(jnp.multiply, scores, rescale(jnp.exp, linear(lambda l: -c - l, log_total)))
    shape = jnp.shape(x_side(scores))
    switching = shapley(
        piecewise,
        linear(lambda v: jnp.where(one_side, v, 1), scores),
        linear(lambda l: jnp.where(one_side, jnp.broadcast_to(l, shape), 1 - c), log_total),
    )
    return linear(lambda a, b, m: jnp.where(both, a, jnp.where(either, m, b)), smooth, scaled, switching)


def _post_transform(scores: Any, post_transform: str) -> Any:
    """The transform onnxruntime applies to [N, T] scores with T >= 2. SOFTMAX decomposes as the Softmax
    rule does: exp (rescale) of s - L, L = log (rescale) of sum (linear) of exp (rescale), shifted by one
    constant shared by both sides; LOGISTIC and PROBIT are elementwise (rescale)."""
    if post_transform == "SOFTMAX":
        c = _shared_max(scores, (1,))
        shifted = linear(lambda v: v - c, scores)
        return rescale(jnp.exp, linear(jnp.subtract, shifted, _shifted_log_sum_exp(scores, (1,), c)))
    if post_transform == "LOGISTIC":
        return rescale(_logistic, scores)
    if post_transform == "SOFTMAX_ZERO":
        return _softmax_zero(scores)
    if post_transform == "PROBIT":
        return rescale(_probit, scores)
    return scores


def linear_classifier(
    x: Any,
    *,
    coefficients: list[float],
    post_transform: str,
    multi_class: int,
    intercepts: list[float] | None = None,
    classlabels_ints: list[int] | None = None,
    classlabels_strings: list[str] | None = None,
) -> tuple[Array, Any]:
    """(label int64 [N], scores float32 [N, K]); scores = post_transform(X W^T + b), computed in float32.

    With K >= 2 coefficient rows the label is the class of the first maximal raw score. With one
    row (skl2onnx's binary LogisticRegression) the label is classlabels[1] where the score s > 0, else
    classlabels[0], and the scores are [1 - p, p] with p = logistic(s) for LOGISTIC and p = s for every
    other transform (onnxruntime applies no softmax to a single score). multi_class is ignored, as in
    onnxruntime. String class labels (no string tensors in JAX) and binary PROBIT (onnxruntime's output
    is undefined) are not supported.

    Rule: X W^T + b (linear), then the post_transform (see `_post_transform`; binary: logistic by rescale,
    [1 - p, p] linear). The integer label carries no attribution.
    """
    if classlabels_strings:
        raise UnsupportedOpError(
            "LinearClassifier with classlabels_strings is not supported: its label output would be a string "
            "tensor, and JAX has no string dtype. Re-export with integer class labels (encode the classes as "
            "0..K-1 before training), or drop the label output."
        )
    if not classlabels_ints:
        raise UnsupportedOpError("LinearClassifier needs classlabels_ints (or classlabels_strings).")
    if post_transform not in _POST_TRANSFORMS:
        raise unsupported_attribute("LinearClassifier", "post_transform", post_transform, _POST_TRANSFORMS)
    scores = linear(
        lambda v: _linear_scores(_rows(v, "LinearClassifier"), coefficients, intercepts, "LinearClassifier"), x
    )
    raw = x_side(scores)
    labels = np.asarray(classlabels_ints, np.int64)
    n_targets = raw.shape[1]
    if n_targets == 1:
        if labels.size != 2:
            raise UnsupportedOpError(
                f"LinearClassifier with one coefficient row is a binary classifier and needs 2 class labels, "
                f"got {labels.size}."
            )
        if post_transform == "PROBIT":
            raise UnsupportedOpError(
                "LinearClassifier with one coefficient row and post_transform='PROBIT' is not supported: "
                "onnxruntime leaves half of its scores output uninitialised, so there is no reference to match."
            )
        label = jnp.where(raw[:, 0] > 0, labels[1], labels[0])
        p = rescale(_logistic, scores) if post_transform == "LOGISTIC" else scores
        return label, linear(lambda v: jnp.concatenate([1 - v, v], axis=1), p)
    if labels.size != n_targets:
        raise UnsupportedOpError(f"LinearClassifier has {n_targets} coefficient rows but {labels.size} class labels.")
    label = jnp.asarray(labels)[jnp.argmax(raw, axis=1)]
    return label, _post_transform(scores, post_transform)


normalizer_rule = composite_rule(normalizer)
linear_classifier_rule = composite_rule(linear_classifier)


# --- comparisons -------------------------------------------------------------------------------------

#: Equal, Less, Greater, LessOrEqual, GreaterOrEqual: a step of d = a - b, linear then rescale, written out
#: (both steps have closed forms, so no pair trace is needed; `compare` is the same rule as a primitive).
comparison_rule: Rule = comparison
