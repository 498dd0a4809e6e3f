"""Pair forwards of composite ops (see onnxshap/_composite.py): each function is both the op's
decomposition into rule-carrying primitives and, called with plain arrays, a forward pass. The rule
table names the `*_rule` objects in its `composite` column."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._composite import bilinear, composite_rule, linear, rescale, x_side
from onnxshap.ops._common import normalize_axis, onnx_dtype, unsupported_attribute

Array = Any


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
