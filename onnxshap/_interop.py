"""Conversion of an `Explanation` to a `shap.Explanation`, so that shap's plots can draw it.

shap (not a dependency of onnxshap) is imported only when `to_shap` is called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from onnxshap._errors import InputError, MissingDependencyError
from onnxshap._plots import (
    OutputSelector,
    _feature_names,
    _has_ids,
    _id_tokens,
    _per_token,
    _token_lists,
    _View,
    _view,
    channel_axis_of,
)

if TYPE_CHECKING:
    from onnxshap._explanation import Explanation

Layout = Literal["features", "image"]
LAYOUTS: tuple[str, ...] = ("features", "image")


def _shap() -> Any:
    try:
        import shap
    except ImportError as exc:
        raise MissingDependencyError(
            "to_shap() needs the shap package, which is not installed: pip install shap "
            "(its plots also need matplotlib: pip install 'onnxshap[plot]')."
        ) from exc
    return shap


def to_shap(
    explanation: Explanation,
    output: OutputSelector = None,
    *,
    input: str | None = None,
    layout: Layout = "features",
    feature_names: Sequence[str] | None = None,
    tokens: Sequence[Sequence[str]] | None = None,
    channel_axis: int | None = None,
) -> Any:
    """The explanation as a `shap.Explanation` (values, base_values, data, feature_names, output_names).

    Args:
        explanation: an onnxshap `Explanation`.
        output: one explained output (a position on the explanation's output axis or a label such
            as "probs[3]"), a list of them, or None for all (default).
        input: which explained input, when the explanation covers several.
        layout: "features" (default): one row of features per sample, whatever the input's shape,
            for shap's bar, beeswarm, waterfall, heatmap, scatter and text plots: values
            (n, n_features, k), base_values (n, k), data (n, n_features); with one output (chosen
            here, or the only one explained, as with output="predicted") the output axis is dropped,
            values (n, n_features) and base_values (n,), as those plots need. Images and sequences
            are flattened in C order, named "x[0,3,5]".
            "image": for `shap.plots.image`: values (n, H, W, C, k) and data (n, H, W, C), the channel
            axis moved last (found as in onnxshap's image plots, or given by channel_axis); (H, W)
            inputs stay as they are. The output axis is kept, so every panel gets its label.
        feature_names: (layout="features") one name per feature, n_features in all, for any
            per-sample shape (default: x[i] for one axis, x[i,j,...] for more).
        tokens: (layout="features") the token strings of each sample, tokens[i] with one string per
            position: values become one per token, (n, seq_len[, k]), summed over an embedding axis,
            and data the tokens, each followed by a space (shap's text plot joins tokens as they are).
            Token-id inputs default to their ids as the tokens, so `shap.plots.text` works on them.
        channel_axis: (layout="image") the channel axis of one sample, when the shape does not say it.

    Returns:
        A `shap.Explanation`. `output_names` holds the output labels: a list of k, or (n, k) labels
        per sample when they differ (output="predicted": each sample's class); one string when the
        output axis is dropped.

    Raises:
        MissingDependencyError: shap is not installed (an ImportError).
        InputError: an unknown layout, an option of the other layout, names or tokens of the wrong
            length, or an input that is no image for layout="image".
    """
    shap = _shap()
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {list(LAYOUTS)}, not {layout!r}.")
    view = _view(explanation, input, None, output)
    if layout == "image":
        for option, value in (("feature_names", feature_names), ("tokens", tokens)):
            if value is not None:
                raise InputError(f"{option}= applies to layout='features'; shap.plots.image shows neither.")
        values, data = _image_arrays(view, channel_axis)
        return shap.Explanation(values=values, base_values=view.base, data=data, output_names=_output_names(view))
    if channel_axis is not None:
        raise InputError("channel_axis= applies to layout='image'; layout='features' flattens every axis.")
    if tokens is not None or _has_ids(view.data):
        view = _token_view(view, tokens)
    names = _feature_names(view, feature_names)
    n, k = view.values.shape[0], view.values.shape[-1]
    values, base = view.values.reshape(n, -1, k), view.base
    data = None if view.data is None else view.data.reshape(n, -1)
    output_names: Any = _output_names(view)
    if k == 1:
        # shap's bar/beeswarm/waterfall/heatmap take (n, n_features) only; a single name stays as a
        # string, which shap keeps without an output axis (its text plot shows it).
        values, base, output_names = values[..., 0], base[:, 0], _single_name(view)
    return shap.Explanation(values=values, base_values=base, data=data, feature_names=names, output_names=output_names)


def _output_names(view: _View) -> list[str] | np.ndarray:
    """The labels of the chosen outputs: a list, or (n, k) per sample where they differ (shap reads both)."""
    if all(row == view.labels[0] for row in view.labels):
        return list(view.labels[0])
    return np.array(view.labels)


def _single_name(view: _View) -> str:
    """The one output's label; per-sample labels ("predicted") need an output axis shap cannot keep here."""
    first = view.labels[0][0]
    return first if all(row[0] == first for row in view.labels) else view.column_labels[0]


def _image_arrays(view: _View, channel_axis: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """values (n, H, W[, C], k) and data (n, H, W[, C]) with the channel axis last."""
    shape = view.input_shape
    if len(shape) not in (2, 3):
        raise InputError(
            f"layout='image' needs a per-sample shape (H, W), (C, H, W) or (H, W, C); input {view.input_name!r} "
            f"has {list(shape)}. layout='features' (the default) flattens it for shap's other plots."
        )
    axis = channel_axis_of(shape, channel_axis)
    values, data = view.values, view.data
    if axis is not None:
        values = np.moveaxis(values, 1 + axis, -2)
        data = None if data is None else np.moveaxis(data, 1 + axis, -1)
    return values, data


def _token_view(view: _View, tokens: Sequence[Sequence[str]] | None) -> _View:
    """One value per token (summed over an embedding axis), with the tokens as the data."""
    per_token = _per_token(view)
    seq_len = per_token.shape[1]
    n = len(view.samples)
    if tokens is not None and n > 1 and not isinstance(tokens, str) and all(isinstance(t, str) for t in tokens):
        raise InputError(
            f"tokens is one sequence but the explanation has {n} samples; pass one list of strings per sample."
        )
    rows = _id_tokens(view, seq_len) if tokens is None else _token_lists(tokens, view.samples, n, seq_len)
    data = np.array([[f"{t} " for t in row] for row in rows], dtype=object)
    return dataclasses.replace(view, values=per_token, data=data)
