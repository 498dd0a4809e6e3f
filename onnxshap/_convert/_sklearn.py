"""scikit-learn estimators and pipelines -> ONNX with skl2onnx.

Opsets {"": 17, "ai.onnx.ml": 3}, float32 input named "x", classifiers with a probabilities
tensor (no ZipMap), StandardScaler / RobustScaler / MaxAbsScaler computed in float64 as
scikit-learn computes them (Cast, Sub, Div, Cast). XGBoost and LightGBM wrappers inside a pipeline
(or a ColumnTransformer, an ensemble) are converted by onnxmltools' converters, registered with
skl2onnx on first use.
Their files are pickles, loaded by `onnxshap._convert._pickle`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from onnxshap._convert._boosting import _register_with_skl2onnx
from onnxshap._convert._core import (
    Shape,
    _Converted,
    _first_line,
    _predictor_reference,
    _quiet,
    _require,
    _tabular_input,
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
    from sklearn.preprocessing import MaxAbsScaler, RobustScaler, StandardScaler

    boosting = _register_with_skl2onnx(est)
    source = f"scikit-learn {type(est).__name__} (scikit-learn {sklearn.__version__})"
    n_declared = getattr(est, "n_features_in_", None)
    x, origin = _tabular_input(sample, shapes, n_declared, "scikit-learn model")
    n_features = x.shape[1]
    # skl2onnx's Scaler multiplies by 1 / scale in float32; "div_cast" divides in float64 as scikit-learn does,
    # so that a value on a split threshold (XGBoost's are training values) lands on the same side.
    options: dict[Any, dict[str, Any]] = {
        cls: {"div": "div_cast"} for cls in (StandardScaler, RobustScaler, MaxAbsScaler)
    }
    if sklearn.base.is_classifier(est):
        options[id(est)] = {"zipmap": False}
    target = {"": opset or SKL2ONNX_OPSET, "ai.onnx.ml": SKL2ONNX_ML_OPSET}
    exporter = f"skl2onnx {skl2onnx.__version__}, opset {target['']} (ai.onnx.ml {SKL2ONNX_ML_OPSET})"
    if boosting:
        exporter += f" with {boosting} for the boosted trees"
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
    _float64_centres(proto, est)
    reference = _predictor_reference(est, proto, x, notes)
    return _Converted(proto, {"x": x}, reference, source, exporter, origin, notes)


def _float64_centres(proto: onnx.ModelProto, est: Any) -> None:
    """Give the float64 Sub of each div_cast scaler scikit-learn's centre, not its float32 rounding.

    skl2onnx (1.20) rounds the offset to float32 before it casts it to float64; with the rounded
    centre a scaled value can still differ from scikit-learn's by one float32 step.
    """
    from sklearn.preprocessing import RobustScaler, StandardScaler

    params = est.get_params(deep=True) if hasattr(est, "get_params") else {}
    scalers = [m for m in [est, *params.values()] if isinstance(m, (StandardScaler, RobustScaler))]
    centres = [
        np.asarray(c, np.float64)
        for m in scalers
        if (c := getattr(m, "mean_", getattr(m, "center_", None))) is not None
    ]
    offsets = {n.input[1] for n in proto.graph.node if n.op_type == "Sub" and len(n.input) == 2}
    for init in proto.graph.initializer:
        if init.name not in offsets or init.data_type != onnx.TensorProto.DOUBLE:
            continue
        value = onnx.numpy_helper.to_array(init)
        exact = next(
            (c for c in centres if c.shape == value.shape and np.array_equal(c.astype(np.float32), value)), None
        )
        if exact is not None:
            init.CopyFrom(onnx.numpy_helper.from_array(exact, init.name))
