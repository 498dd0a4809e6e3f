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
    if sample is not None:
        x = _as_numpy(sample.values if hasattr(sample, "columns") else sample)
        if x.ndim != 2:
            raise ConversionError(f"The sample input of a scikit-learn model must be 2-D (rows, features); got shape {list(x.shape)}.")
        x, origin = x.astype(np.float32), "sample"
        n_features = x.shape[1]
    else:
        n_features = getattr(est, "n_features_in_", None)
        if shapes is not None:
            if len(shapes) != 1 or len(shapes[0]) != 1:
                raise ConversionError(f"A scikit-learn model takes one input of shape (n_features,); got input shapes {shapes}.")
            if n_features is not None and shapes[0][0] != n_features:
                raise ConversionError(f"The estimator was fitted on {n_features} features, not {shapes[0][0]}.")
            n_features = shapes[0][0]
        if n_features is None:
            raise ConversionError("The estimator does not record its number of features: pass --input-shape N_FEATURES.")
        x = np.random.default_rng(0).standard_normal((8, int(n_features))).astype(np.float32)
        origin = "random"
    options = {"zipmap": False} if sklearn.base.is_classifier(est) else None
    target = {"": opset or SKL2ONNX_OPSET, "ai.onnx.ml": SKL2ONNX_ML_OPSET}
    exporter = f"skl2onnx {skl2onnx.__version__}, opset {target['']} (ai.onnx.ml {SKL2ONNX_ML_OPSET})"
    notes: list[str] = []
    try:
        with _quiet(notes):
            proto = convert_sklearn(
                est, name=type(est).__name__, initial_types=[("x", FloatTensorType([None, int(n_features)]))],
                target_opset=target, options=options,
            )
    except Exception as exc:
        raise ConversionError(f"skl2onnx could not convert the {source}: {_first_line(exc)}") from exc
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
        # Labels are compared as the class index dtype onnxruntime returns (int64 or strings).
        ort_type = next(o.type.tensor_type.elem_type for o in proto.graph.output if o.name == "label")
        np_type = onnx.helper.tensor_dtype_to_np_dtype(ort_type)
        if np.dtype(np_type).kind in "iu":
            reference["label"] = reference["label"].astype(np_type)
    return _Converted(proto, {"x": x}, reference, source, exporter, origin, notes)
