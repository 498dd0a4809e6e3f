"""Conversion of an `Explanation` to a `shap.Explanation`, so that shap's plots can draw it.

shap (not a dependency of onnxshap) is imported only when `to_shap` is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxshap._errors import InputError, MissingDependencyError
from onnxshap._plots import (
    OutputSelector,
    channel_axis_of,
    input_name,
    output_indices,
    output_label,
)

if TYPE_CHECKING:
    from onnxshap._explainer import Explanation


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
    feature_names: Sequence[str] | None = None,
    channels_last: bool = False,
) -> Any:
    """The explanation as a `shap.Explanation` (values, base_values, data, feature_names, output_names).

    Args:
        explanation: an onnxshap `Explanation`.
        output: one explained output (a position on the explanation's output axis or a label such
            as "probs[3]"), a list of them, or None for all. With a single output, chosen here or
            the only one explained (e.g. output="predicted"), the output axis is dropped: values
            (n, *input_shape) and base_values (n,), the shape shap's waterfall/beeswarm plots expect.
            Otherwise values are (n, *input_shape, n_outputs) and base_values (n, n_outputs).
        input: which explained input, when the explanation covers several.
        feature_names: one name per feature of a 1-D input (default: input[i], as in onnxshap's plots).
        channels_last: move the image channel axis to the end, (n, C, H, W) -> (n, H, W, C), the
            layout `shap.plots.image` expects (the channel axis is found as in `onnxshap` image plots).

    Returns:
        A `shap.Explanation`. `output_names` lists the output labels; it is None for a single output,
        as shap's own single-output explanations have it (the label stays in `explanation.output_names`,
        and for output="predicted" the class of each sample in `explanation.output_indices`).

    Raises:
        MissingDependencyError: shap is not installed (an ImportError).
    """
    shap = _shap()
    name = input_name(explanation, input)
    values = np.asarray(explanation.values_for(name))
    data = explanation.data.get(name) if isinstance(explanation.data, dict) else explanation.data
    data = None if data is None else np.asarray(data)
    chosen = output_indices(explanation, output)
    values = values[..., chosen]
    base = np.asarray(explanation.base_values)[:, chosen]
    n = values.shape[0]
    labels = [[output_label(explanation, b, j) for j in chosen] for b in range(n)]
    if channels_last:
        axis = channel_axis_of(values.shape[1:-1])
        if axis is not None:
            values = np.moveaxis(values, 1 + axis, -2)
            data = None if data is None else np.moveaxis(data, 1 + axis, -1)
    names: list[str] | None = None
    per_sample_shape = values.shape[1:-1]
    if feature_names is not None:
        names = [str(f) for f in feature_names]
        if len(per_sample_shape) != 1 or len(names) != per_sample_shape[0]:
            raise InputError(
                f"feature_names has {len(names)} entries but input {name!r} has per-sample shape "
                f"{list(per_sample_shape)}; feature names fit a 1-D input with one name per feature."
            )
    elif len(per_sample_shape) == 1:
        names = [f"{name}[{i}]" for i in range(per_sample_shape[0])]
    output_names: list[str] | None
    if len(chosen) == 1:
        # shap keeps no name for a single output (a list would be taken for an output axis, and
        # shap.plots.image fails on a plain string).
        values, base, output_names = values[..., 0], base[:, 0], None
    else:
        output_names = labels[0] if all(row == labels[0] for row in labels) else [
            str(explanation.output_names[j]) for j in chosen
        ]
    return shap.Explanation(
        values=values,
        base_values=base,
        data=data,
        feature_names=names,
        output_names=output_names,
    )
