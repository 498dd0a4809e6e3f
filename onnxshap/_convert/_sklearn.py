"""scikit-learn estimators and pipelines -> ONNX with skl2onnx.

Opsets {"": 17, "ai.onnx.ml": 3}, float32 input named "x", classifiers with a probabilities
tensor (no ZipMap). Their files are pickles, loaded by `onnxshap._convert._pickle`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from onnxshap._convert._core import (
    Shape,
    _as_numpy,
    _Converted,
    _first_line,
    _quiet,
    _require,
)
from onnxshap._errors import ConversionError

#: Default opsets of skl2onnx: the versions the example models in models/ were exported with.
SKL2ONNX_OPSET = 17
SKL2ONNX_ML_OPSET = 3


def _convert_sklearn(
    est: Any,
    sample: Any,
    shapes: list[Shape] | None,
    opset: int | None,
) -> _Converted:
    _require("sklearn")
    # skl2onnx is optional: the sklearn extra.
    import skl2onnx  # pyright: ignore[reportMissingImports]
    import sklearn
    from skl2onnx import convert_sklearn  # pyright: ignore[reportMissingImports]
    from skl2onnx.common.data_types import FloatTensorType  # pyright: ignore[reportMissingImports]

    source = f"scikit-learn {type(est).__name__} (scikit-learn {sklearn.__version__})"
    n_declared = getattr(est, "n_features_in_", None)
    x, origin = _tabular_input(sample, shapes, n_declared, "scikit-learn model")
    n_features = x.shape[1]
    options = {"zipmap": False} if sklearn.base.is_classifier(est) else None
    target = {"": opset or SKL2ONNX_OPSET, "ai.onnx.ml": SKL2ONNX_ML_OPSET}
    exporter = f"skl2onnx {skl2onnx.__version__}, opset {target['']} (ai.onnx.ml {SKL2ONNX_ML_OPSET})"
    notes: list[str] = []
    try:
        with _quiet(notes):
            proto = convert_sklearn(
                est,
                name=type(est).__name__,
                initial_types=[("x", FloatTensorType([None, int(n_features)]))],
                target_opset=target,
                options=options,
            )
    except Exception as exc:
        raise ConversionError(f"skl2onnx could not convert the {source}: {_first_line(exc)}") from exc
    reference = _predictor_reference(est, proto, x, notes)
    return _Converted(proto, {"x": x}, reference, source, exporter, origin, notes)


def _tabular_input(
    sample: Any, shapes: list[Shape] | None, n_features: int | None, what: str
) -> tuple[np.ndarray, str]:
    """The test input of a model on feature rows: (float32 (rows, features), "sample" or "random").

    `sample` is a 2-D array or DataFrame; without it, 8 seeded standard-normal rows of
    `n_features` columns (the model's record of them, or `shapes` [(n_features,)]).
    """
    if sample is not None:
        x = _as_numpy(sample.values if hasattr(sample, "columns") else sample)
        if x.ndim != 2:
            raise ConversionError(
                f"The sample input of a {what} must be 2-D (rows, features); got shape {list(x.shape)}."
            )
        return x.astype(np.float32), "sample"
    if shapes is not None:
        if len(shapes) != 1 or len(shapes[0]) != 1:
            raise ConversionError(f"A {what} takes one input of shape (n_features,); got input shapes {shapes}.")
        if n_features is not None and shapes[0][0] != n_features:
            raise ConversionError(f"The estimator was fitted on {n_features} features, not {shapes[0][0]}.")
        n_features = shapes[0][0]
    if n_features is None:
        raise ConversionError("The estimator does not record its number of features: pass --input-shape N_FEATURES.")
    x = np.random.default_rng(0).standard_normal((8, int(n_features))).astype(np.float32)
    return x, "random"


def _predictor_reference(est: Any, proto: onnx.ModelProto, x: np.ndarray, notes: list[str]) -> dict[str, np.ndarray]:
    """What a scikit-learn-style estimator gives for each graph output (label, probabilities,
    variable) at the float32 rows `x`; outputs with no matching method get a note."""
    # scikit-learn computes in float64; feed it the float32 values onnxruntime sees.
    x64 = x.astype(np.float64)
    reference: dict[str, np.ndarray] = {}
    with _quiet(notes):
        for out in proto.graph.output:
            if out.name == "label" and hasattr(est, "predict"):
                reference[out.name] = np.asarray(est.predict(x64))
            elif out.name == "probabilities" and hasattr(est, "predict_proba"):
                reference[out.name] = np.asarray(est.predict_proba(x64), dtype=np.float32)
            elif out.name == "variable":
                y = est.predict(x64) if hasattr(est, "predict") else est.transform(x64)
                reference[out.name] = np.asarray(y, dtype=np.float32).reshape(len(x), -1)
            else:
                notes.append(f"output {out.name!r} is not compared (no matching scikit-learn method)")
    if "label" in reference:
        reference["label"] = _as_label_dtype(reference["label"], proto)
    return reference


def _as_label_dtype(label: np.ndarray, proto: onnx.ModelProto) -> np.ndarray:
    """Labels as the class index dtype onnxruntime returns for the "label" output (int64 or
    strings)."""
    ort_type = next(o.type.tensor_type.elem_type for o in proto.graph.output if o.name == "label")
    np_type = onnx.helper.tensor_dtype_to_np_dtype(ort_type)
    return label.astype(np_type) if np.dtype(np_type).kind in "iu" else label
