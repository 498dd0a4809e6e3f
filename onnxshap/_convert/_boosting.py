"""XGBoost and LightGBM models -> ONNX with onnxmltools.

Their scikit-learn wrappers (XGBRegressor, XGBClassifier, LGBMRegressor, LGBMClassifier) and raw
boosters (`xgboost.Booster`, `lightgbm.Booster`, e.g. loaded from a model file). Float32 input
named "x", classifiers with a probabilities tensor (no ZipMap), opset 15 by default (the highest
onnxmltools writes; it picks the ai.onnx.ml version itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxshap._convert._core import Shape, _Converted, _first_line, _quiet, _require
from onnxshap._convert._sklearn import _as_label_dtype, _predictor_reference, _tabular_input
from onnxshap._errors import ConversionError

#: The highest opset onnxmltools 1.12-1.16 converts tree boosters to.
BOOSTING_OPSET = 15

#: Model files each library writes with its Booster's save_model (data, not pickles).
XGBOOST_SUFFIXES = frozenset({".json", ".ubj"})
LIGHTGBM_SUFFIXES = frozenset({".txt"})

#: framework_of's name -> how people write the library.
LIBRARIES = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}


def _boosting_library(obj: Any) -> str | None:
    """ "xgboost" or "lightgbm" for a model of that library (wrapper or Booster), else None.

    Looks at the class hierarchy only: never imports a library.
    """
    roots = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    return next((lib for lib in LIBRARIES if lib in roots), None)


def _load_boosting_file(path: Path, library: str) -> Any:
    """A `xgboost.Booster` from a .json/.ubj file or a `lightgbm.Booster` from a .txt file."""
    _require("boosting", [library, "onnxmltools"])
    if library == "xgboost":
        import xgboost  # pyright: ignore[reportMissingImports]

        return xgboost.Booster(model_file=str(path))
    import lightgbm  # pyright: ignore[reportMissingImports]

    return lightgbm.Booster(model_file=str(path))


def _n_features(model: Any) -> int | None:
    if hasattr(model, "n_features_in_"):  # the scikit-learn wrappers
        return int(model.n_features_in_)
    if hasattr(model, "num_features"):  # xgboost.Booster
        return int(model.num_features())
    if hasattr(model, "num_feature"):  # lightgbm.Booster
        return int(model.num_feature())
    return None


def _convert_boosting(
    model: Any,
    library: str,
    sample: Any,
    shapes: list[Shape] | None,
    opset: int | None,
) -> _Converted:
    """Convert an XGBoost or LightGBM model (`library`: "xgboost" or "lightgbm") with
    onnxmltools."""
    _require("boosting", [library, "onnxmltools"])
    # onnxmltools and the libraries are optional: the boosting extra.
    import importlib

    import onnxmltools  # pyright: ignore[reportMissingImports]
    from onnxmltools.convert.common.data_types import (  # pyright: ignore[reportMissingImports]
        FloatTensorType,
    )

    version = importlib.import_module(library).__version__
    source = f"{LIBRARIES[library]} {type(model).__name__} ({library} {version})"
    x, origin = _tabular_input(sample, shapes, _n_features(model), f"{LIBRARIES[library]} model")
    target = opset or BOOSTING_OPSET
    initial_types = [("x", FloatTensorType([None, x.shape[1]]))]
    notes: list[str] = []
    try:
        with _quiet(notes):
            if library == "xgboost":
                proto = onnxmltools.convert_xgboost(
                    model,
                    name=type(model).__name__,
                    initial_types=initial_types,
                    target_opset=target,
                )
            else:
                proto = onnxmltools.convert_lightgbm(
                    model,
                    name=type(model).__name__,
                    initial_types=initial_types,
                    target_opset=target,
                    zipmap=False,
                )
    except Exception as exc:
        message = f"onnxmltools could not convert the {source}: {_first_line(exc)}"
        raise ConversionError(message) from exc
    _dynamic_label_batch(proto)
    ml = next((o.version for o in proto.opset_import if o.domain == "ai.onnx.ml"), None)
    exporter = f"onnxmltools {onnxmltools.__version__}, opset {target} (ai.onnx.ml {ml})"
    if hasattr(model, "predict") and hasattr(model, "get_params"):  # the scikit-learn wrappers
        reference = _predictor_reference(model, proto, x, notes)
    else:
        reference = _booster_reference(model, library, proto, x, notes)
    return _Converted(proto, {"x": x}, reference, source, exporter, origin, notes)


def _booster_reference(
    booster: Any, library: str, proto: onnx.ModelProto, x: np.ndarray, notes: list[str]
) -> dict[str, np.ndarray]:
    """What a raw Booster predicts for each graph output at the rows `x`: "variable" (n, targets),
    or "probabilities" (n, classes) and "label" (n,) their arg-max."""
    with _quiet(notes):
        if library == "xgboost":
            import xgboost  # pyright: ignore[reportMissingImports]

            y = np.asarray(booster.predict(xgboost.DMatrix(x)))
        else:
            y = np.asarray(booster.predict(x))
    y = y.astype(np.float32).reshape(len(x), -1)
    names = [o.name for o in proto.graph.output]
    reference: dict[str, np.ndarray] = {}
    if "probabilities" in names:
        # Binary objectives predict P(class 1) only; the graph gives both columns.
        reference["probabilities"] = np.hstack([1 - y, y]) if y.shape[1] == 1 else y
        if "label" in names:
            reference["label"] = _as_label_dtype(reference["probabilities"].argmax(axis=1), proto)
    elif "variable" in names:
        reference["variable"] = y
    notes += [f"output {n!r} is not compared (no matching Booster prediction)" for n in names if n not in reference]
    return reference


def _dynamic_label_batch(proto: onnx.ModelProto) -> None:
    """onnxmltools declares LightGBM's label output as shape [1]: give it the input's batch axis."""
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim if out.type.HasField("tensor_type") else []
        if out.name == "label" and len(dims) == 1 and dims[0].dim_value == 1:
            dims[0].Clear()
