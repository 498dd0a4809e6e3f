"""ai.onnx.ml ops that scikit-learn converters (skl2onnx) emit for linear and neural-network models.

The spec leaves much of this domain open (shapes, attribute lengths, binary classifiers), so each
function follows onnxruntime's CPU kernel, which is what these models are run with in practice;
where onnxruntime's result is undefined or contradicts the spec, the function raises instead.
Spec: https://onnx.ai/onnx/operators/ (domain ai.onnx.ml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from onnxshap._composite import Pair, composite_rule, linear, rescale
from onnxshap._errors import UnsupportedOpError
from onnxshap.ops._common import unsupported_attribute

Array = Any

_POST_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")
_FLOAT32_LOWEST = float(np.finfo(np.float32).min)


def _is_host(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.generic))


def _rows(x: Array, op: str) -> Array:
    """The [N, C] view onnxruntime's ml kernels take: a 1-D input is one row; rank > 2 is rejected."""
    x = jnp.asarray(x)
    if x.ndim == 1:
        return x[None, :]
    if x.ndim != 2:
        raise UnsupportedOpError(f"{op} takes a [N, C] or [C] input; got rank {x.ndim} (shape {x.shape}).")
    return x


def _per_feature(values: Sequence[float], n_features: int, op: str, name: str, rank: int) -> np.ndarray:
    """An attribute of 1 or C values, as a float32 vector broadcasting along the last axis."""
    array = np.asarray(values, np.float32).reshape(-1)
    if array.size == 1:
        return array
    if rank > 2:
        # onnxruntime strides these by dims[1], which is not the feature axis for rank > 2.
        raise UnsupportedOpError(
            f"{op} with {array.size} {name} values on a rank-{rank} input is not supported: per-feature values "
            "are defined for [N, C] inputs only (onnxruntime indexes them by axis 1 whatever the rank)."
        )
    if array.size != n_features:
        raise UnsupportedOpError(
            f"{op} has {array.size} {name} values for {n_features} features; it needs 1 or {n_features}."
        )
    return array


# --- preprocessing ---------------------------------------------------------------------------------


def scaler(x: Array, *, offset: list[float] | None = None, scale: list[float] | None = None) -> Array:
    """Y = (X - offset) * scale along the last axis, as float32; offset and scale have 1 or C values.

    A missing offset is 0 and a missing scale 1 (onnxruntime rejects such models).
    """
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise UnsupportedOpError("Scaler needs an input of rank >= 1.")
    n = x.shape[-1]
    off = _per_feature([0.0] if offset is None else offset, n, "Scaler", "offset", x.ndim)
    sc = _per_feature([1.0] if scale is None else scale, n, "Scaler", "scale", x.ndim)
    # onnxruntime computes (x - offset) * scale in double for double inputs and in float otherwise.
    work = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    y = (x.astype(work) - jnp.asarray(off, work)) * jnp.asarray(sc, work)
    return y.astype(jnp.float32)


def binarizer(x: Array, *, threshold: float) -> Array:
    """1 where x > threshold, else 0, in the input's type."""
    x = jnp.asarray(x)
    return (x > jnp.asarray(threshold, x.dtype)).astype(x.dtype)


def imputer(
    x: Array,
    *,
    replaced_value_float: float,
    replaced_value_int64: int,
    imputed_value_floats: list[float] | None = None,
    imputed_value_int64s: list[int] | None = None,
) -> Array:
    """Replace elements equal to the replaced value (NaN matches NaN) by the imputed value of their feature.

    Float inputs use the *_float(s) attributes, integer inputs the *_int64(s) ones. The imputed values
    have 1 or C entries (C = last axis); per-feature values need a [N, C] or [C] input.
    """
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise UnsupportedOpError("Imputer needs an input of rank >= 1.")
    is_float = jnp.issubdtype(x.dtype, jnp.floating)
    values = imputed_value_floats if is_float else imputed_value_int64s
    if not values:
        kind = "imputed_value_floats" if is_float else "imputed_value_int64s"
        raise UnsupportedOpError(f"Imputer on a {x.dtype} input needs the attribute {kind}.")
    n = x.shape[-1]
    if len(values) not in (1, n) or (len(values) > 1 and x.ndim > 2):
        raise UnsupportedOpError(
            f"Imputer has {len(values)} imputed values for an input of shape {x.shape}; it needs 1 value, or one "
            "per feature on a [N, C] or [C] input."
        )
    imputed = jnp.asarray(np.asarray(values), x.dtype)
    if is_float:
        replaced = jnp.asarray(replaced_value_float, x.dtype)
        hit = (x == replaced) | (jnp.isnan(x) & jnp.isnan(replaced))
    else:
        hit = x == jnp.asarray(replaced_value_int64, x.dtype)
    return jnp.where(hit, imputed, x)


def array_feature_extractor(x: Array, indices: Array) -> Array:
    """Select `indices` (flattened) along the last axis; a 1-D input gives a [1, k] output.

    Out-of-range indices raise when the indices are constants; computed indices (skl2onnx's
    ArgMax -> class label lookup) are clamped, where onnxruntime raises.
    """
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise UnsupportedOpError("ArrayFeatureExtractor needs an input of rank >= 1.")
    n = x.shape[-1]
    if _is_host(indices):
        flat = np.asarray(indices).reshape(-1).astype(np.int64)
        bad = flat[(flat < 0) | (flat >= n)]
        if bad.size:
            raise UnsupportedOpError(
                f"ArrayFeatureExtractor index {int(bad[0])} is out of range for a last axis of size {n}."
            )
        picked = jnp.take(x, jnp.asarray(flat), axis=-1)
    else:
        picked = jnp.take(x, jnp.reshape(indices, (-1,)), axis=-1, mode="clip")
    return picked[None, :] if x.ndim == 1 else picked


def feature_vectorizer(*xs: Array, inputdimensions: list[int] | None = None) -> Array:
    """Concatenate the inputs as [N, C_i] float32 blocks, each cut or zero-padded to inputdimensions[i].

    A 1-D input is one row; higher ranks are flattened after the batch axis. Without
    inputdimensions each input keeps its own width.
    """
    present = [jnp.asarray(x) for x in xs if x is not None]
    if not present:
        raise UnsupportedOpError("FeatureVectorizer needs at least one input.")
    if inputdimensions is not None and len(inputdimensions) != len(present):
        raise UnsupportedOpError(
            f"FeatureVectorizer has {len(present)} inputs but {len(inputdimensions)} inputdimensions."
        )
    blocks = []
    for i, x in enumerate(present):
        if x.ndim == 0:
            raise UnsupportedOpError("FeatureVectorizer inputs must have rank >= 1.")
        block = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
        width = block.shape[1] if inputdimensions is None else int(inputdimensions[i])
        block = block[:, :width].astype(jnp.float32)
        if block.shape[1] < width:
            block = jnp.pad(block, ((0, 0), (0, width - block.shape[1])))
        blocks.append(block)
    sizes = {b.shape[0] for b in blocks}
    if len(sizes) > 1:
        raise UnsupportedOpError(f"FeatureVectorizer inputs have different batch sizes {sorted(sizes)}.")
    return jnp.concatenate(blocks, axis=1)


# --- linear models ---------------------------------------------------------------------------------


def _linear_scores(x: Array, coefficients: Sequence[float], intercepts: Sequence[float] | None, op: str) -> Array:
    """X [N, C] (as float32) times coefficients [T, C] transposed, plus intercepts [T]: [N, T] float32."""
    xf = x.astype(jnp.float32)
    n_features = xf.shape[1]
    coef = np.asarray(coefficients, np.float32).reshape(-1)
    if n_features == 0 or coef.size == 0 or coef.size % n_features:
        raise UnsupportedOpError(
            f"{op} has {coef.size} coefficients, which is not a multiple of the {n_features} input features."
        )
    weights = coef.reshape(-1, n_features)
    n_targets = weights.shape[0]
    bias = np.zeros(n_targets, np.float32) if intercepts is None else np.asarray(intercepts, np.float32).reshape(-1)
    if bias.size != n_targets:
        raise UnsupportedOpError(f"{op} has {bias.size} intercepts for {n_targets} coefficient rows.")
    # HIGHEST: keep float32 products exact on accelerators that would otherwise use TF32/bf16 passes.
    scores = jnp.matmul(xf, jnp.asarray(weights.T), precision=lax.Precision.HIGHEST)
    return scores + jnp.asarray(bias)


def _logistic(s: Array) -> Array:
    """onnxruntime's ComputeLogistic: 1 / (1 + exp(-|s|)), mirrored for s < 0."""
    v = 1 / (1 + jnp.exp(-jnp.abs(s)))
    return jnp.where(s < 0, 1 - v, v)


def _probit(p: Array) -> Array:
    """onnxruntime's ComputeProbit: sqrt(2) * ErfInv(2p - 1) with Winitzki's approximation (a = 0.147).

    Not the exact inverse normal CDF (relative error ~1e-3); NaN outside (0, 1).
    """
    f32 = np.float32
    # The barrier keeps XLA from simplifying 1 + (2p - 1) to 2p, which rounds differently near p = 0.
    x = lax.optimization_barrier(2 * p - 1)
    sign = jnp.where(x < 0, f32(-1), f32(1))
    log = jnp.log((1 - x) * (1 + x))
    v = f32(2) / (f32(np.pi) * f32(0.147)) + f32(0.5) * log
    v2 = f32(1) / f32(0.147) * log
    return f32(np.sqrt(2)) * sign * jnp.sqrt(-v + jnp.sqrt(v * v - v2))


def linear_regressor(
    x: Array,
    *,
    targets: int,
    post_transform: str,
    coefficients: list[float] | None = None,
    intercepts: list[float] | None = None,
) -> Array:
    """Y [N, targets] = X W^T + b, computed in float32.

    Only transforms that keep the op affine are supported: NONE, and (for one target, where
    onnxruntime ignores them) SOFTMAX, LOGISTIC and SOFTMAX_ZERO.
    """
    if post_transform not in _POST_TRANSFORMS:
        raise unsupported_attribute("LinearRegressor", "post_transform", post_transform, _POST_TRANSFORMS)
    if post_transform == "PROBIT" or (post_transform != "NONE" and targets != 1):
        raise UnsupportedOpError(
            f"LinearRegressor with post_transform={post_transform!r} and targets={targets} is not supported: "
            "its rule is linear, so only transforms that leave the output affine are accepted (NONE; any but "
            "PROBIT for a single target, which onnxruntime leaves untransformed)."
        )
    if not coefficients:
        raise UnsupportedOpError("LinearRegressor needs the coefficients attribute.")
    rows = _rows(x, "LinearRegressor")
    scores = _linear_scores(rows, coefficients, intercepts, "LinearRegressor")
    if scores.shape[1] != targets:
        raise UnsupportedOpError(
            f"LinearRegressor has {len(coefficients)} coefficients for {rows.shape[1]} features, i.e. "
            f"{scores.shape[1]} targets, but targets={targets}."
        )
    return scores


# --- outputs that are not tensors ------------------------------------------------------------------


def zip_map(
    x: Array, *, classlabels_int64s: list[int] | None = None, classlabels_strings: list[str] | None = None
) -> list[dict[Any, float]]:
    """One {class label: score} dict per row of a [N, C] (or [C]) float tensor, as onnxruntime returns.

    Host only: the output is a sequence of maps, not a tensor, so it cannot be traced; this runs on a
    numpy array, and is only usable where the ZipMap output is a graph output (the model runner
    applies it to the computed scores). Keys are Python ints or strs, values Python floats.
    """
    if not _is_host(x):
        raise UnsupportedOpError(
            "ZipMap's output is a sequence of maps, not a tensor, so it cannot be computed inside the compiled "
            "model; it is supported only as a graph output, applied on the host to the computed scores. "
            "Re-export without ZipMap (skl2onnx: options={id(model): {'zipmap': False}}) to get a tensor."
        )
    if bool(classlabels_int64s) == bool(classlabels_strings):
        raise UnsupportedOpError("ZipMap needs exactly one of classlabels_int64s and classlabels_strings.")
    keys: list[Any] = [int(k) for k in classlabels_int64s] if classlabels_int64s else list(classlabels_strings or [])
    scores = np.asarray(x)
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.ndim != 2 or scores.shape[1] != len(keys):
        raise UnsupportedOpError(
            f"ZipMap takes a [N, {len(keys)}] or [{len(keys)}] input (one column per class label); got shape "
            f"{np.shape(x)}."
        )
    return [dict(zip(keys, (float(v) for v in row))) for row in scores]


# --- categorical encoders --------------------------------------------------------------------------


def one_hot_encoder(
    x: Any, *, cats_int64s: list[int] | None = None, cats_strings: list[str] | None = None, zeros: int = 1
) -> Any:
    """Y = one float32 channel per category: shape x.shape + [len(cats)], 1 where x equals the category.

    Numeric inputs (int64, int32, float, double) use cats_int64s, floats truncated toward zero as in
    onnxruntime; string inputs use cats_strings and must be constants (JAX has no strings). An unknown
    value gives an all-zero row; with zeros=0 onnxruntime raises instead, which onnxshap does for
    constants only (a traced input cannot raise, so its unknown values stay all-zero rows).
    Rule: each channel is a one-input step of its element, so the secant per channel (rescale of the
    input broadcast to the channels) is exact; integer differences are read as numbers.
    """
    if bool(cats_int64s) == bool(cats_strings):
        raise UnsupportedOpError("OneHotEncoder needs exactly one of cats_int64s and cats_strings.")
    value = x.x if isinstance(x, Pair) else x
    if cats_strings:
        if isinstance(x, Pair) or not _is_host(value) or np.dtype(value.dtype).kind not in "OUS":
            raise UnsupportedOpError(
                "OneHotEncoder with cats_strings needs a string input known before the data arrives (JAX has no "
                "string dtype, so string graph inputs cannot be traced); encode the strings as integer codes "
                "(cats_int64s) to explain them."
            )
        strings = np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s), otypes=[object])(value)
        hot = strings[..., None] == np.asarray(list(cats_strings), object)
        if not zeros and not hot.any(axis=-1).all():
            raise UnsupportedOpError("OneHotEncoder found an unknown category and zeros = 0 (onnxruntime fails here).")
        return hot.astype(np.float32)
    if np.dtype(value.dtype).kind not in "iuf":
        raise UnsupportedOpError(f"OneHotEncoder with cats_int64s takes an integer or float input; got {value.dtype}.")
    cats = np.asarray(cats_int64s, np.int64)
    k = len(cats)
    if _is_host(value):
        hot = np.asarray(_channel_hot(np.broadcast_to(np.asarray(value)[..., None], (*np.shape(value), k)), cats))
        if not zeros and not hot.any(axis=-1).all():
            raise UnsupportedOpError("OneHotEncoder found an unknown category and zeros = 0 (onnxruntime fails here).")
        return hot
    spread = linear(lambda v: jnp.broadcast_to(jnp.asarray(v)[..., None], (*jnp.shape(v), k)), x)
    return rescale(lambda v: _channel_hot(v, cats), spread)


one_hot_encoder_rule = composite_rule(one_hot_encoder)


def _channel_hot(v: Array, cats: np.ndarray) -> Array:
    """Channel j of v [..., k] (the element repeated) equals category j, as float32; floats are read as
    onnxruntime's static_cast to int64 does (truncated), NaN, infinities and values beyond int64 match none."""
    x = jnp.asarray(v)
    if jnp.issubdtype(x.dtype, jnp.floating):
        valid = jnp.isfinite(x) & (jnp.abs(x) < float(2**63))
        ids = jnp.where(valid, jnp.trunc(x), 0).astype(jnp.int64)
        return (valid & (ids == jnp.asarray(cats))).astype(jnp.float32)
    return (x.astype(jnp.int64) == jnp.asarray(cats)).astype(jnp.float32)


def _label_table(
    keys_floats: list[float] | None,
    keys_int64s: list[int] | None,
    keys_strings: list[str] | None,
    keys_tensor: np.ndarray | None,
    values_floats: list[float] | None,
    values_int64s: list[int] | None,
    values_strings: list[str] | None,
    values_tensor: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (keys, values) arrays of a numeric LabelEncoder; strings on either side raise."""
    keys = [k for k in (keys_floats, keys_int64s, keys_strings, keys_tensor) if k is not None and len(k)]
    values = [v for v in (values_floats, values_int64s, values_strings, values_tensor) if v is not None and len(v)]
    if len(keys) != 1 or len(values) != 1:
        raise UnsupportedOpError("LabelEncoder needs exactly one keys_* and one values_* attribute.")
    if keys_strings or values_strings or any(np.asarray(a).dtype.kind in "OUS" for a in (keys[0], values[0])):
        raise UnsupportedOpError(
            "LabelEncoder with string keys or values is not supported: JAX has no string dtype, so only numeric "
            "mappings (keys and values floats, int64s or numeric tensors) can be evaluated and explained."
        )
    key_dtype = np.float32 if keys_floats else np.int64 if keys_int64s else np.asarray(keys[0]).dtype
    value_dtype = np.float32 if values_floats else np.int64 if values_int64s else np.asarray(values[0]).dtype
    k, v = np.asarray(keys[0], key_dtype).reshape(-1), np.asarray(values[0], value_dtype).reshape(-1)
    if k.size != v.size:
        raise UnsupportedOpError(f"LabelEncoder has {k.size} keys but {v.size} values.")
    return k, v


def label_encoder(
    x: Array,
    *,
    keys_floats: list[float] | None = None,
    keys_int64s: list[int] | None = None,
    keys_strings: list[str] | None = None,
    keys_tensor: np.ndarray | None = None,
    values_floats: list[float] | None = None,
    values_int64s: list[int] | None = None,
    values_strings: list[str] | None = None,
    values_tensor: np.ndarray | None = None,
    default_float: float = -0.0,
    default_int64: int = -1,
    default_string: str = "_Unused",
    default_tensor: np.ndarray | None = None,
    _nan_matches: bool = True,
) -> Array:
    """Map each element of x through keys -> values (elementwise, x's shape); unmatched elements get the
    default (default_tensor, else default_float / default_int64 by the values' type). A NaN key matches
    NaN (opset 4; `label_encoder_2` for opset 2, where as in onnxruntime it matches nothing).

    Numeric keys and values only (opset 2: float/int64; opset 4 also numeric keys_tensor/values_tensor);
    string keys or values raise UnsupportedOpError. Rule: rescale (elementwise in one input; a step
    function, whose secant is exact; integers read as numbers).
    """
    del default_string  # only used by string-valued encoders, which are refused
    keys, values = _label_table(
        keys_floats, keys_int64s, keys_strings, keys_tensor, values_floats, values_int64s, values_strings, values_tensor
    )
    if default_tensor is not None and np.size(default_tensor):
        default = np.asarray(default_tensor).reshape(-1)[0].astype(values.dtype)
    elif values.dtype.kind == "f":
        default = np.asarray(default_float, values.dtype)
    else:
        default = np.asarray(default_int64, values.dtype)
    host = _is_host(x)
    xp: Any = np if host else jnp
    data = xp.asarray(x)
    if data.dtype.kind != keys.dtype.kind:
        raise UnsupportedOpError(f"LabelEncoder keys are {keys.dtype} but the input is {data.dtype}.")
    data_k = data.astype(keys.dtype)[..., None]
    hit = data_k == keys
    if _nan_matches and keys.dtype.kind == "f" and np.isnan(keys).any():
        hit = hit | (xp.isnan(data_k) & np.isnan(keys))
    # argmax: the first of duplicate keys wins
    found = xp.take(values, xp.argmax(hit, axis=-1))
    return xp.where(hit.any(axis=-1), found, default).astype(values.dtype)


def label_encoder_2(x: Array, **attrs: Any) -> Array:
    """LabelEncoder-2: as `label_encoder`, but a NaN key matches nothing (onnxruntime's opset-2 kernel)."""
    return label_encoder(x, **attrs, _nan_matches=False)
