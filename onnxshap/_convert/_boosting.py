"""XGBoost and LightGBM models -> ONNX with onnxmltools.

Their scikit-learn wrappers (XGBRegressor, XGBClassifier, LGBMRegressor, LGBMClassifier) and raw
boosters (`xgboost.Booster`, `lightgbm.Booster`, e.g. loaded from a model file). Float32 input
named "x", classifiers with a probabilities tensor (no ZipMap), opset 15 by default (the highest
onnxmltools writes; it picks the ai.onnx.ml version itself).

Inside a scikit-learn pipeline the wrappers are converted by skl2onnx (`_sklearn`), which calls
onnxmltools' converters once `_register_with_skl2onnx` has registered them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxshap._convert._core import (
    Shape,
    _as_label_dtype,
    _Converted,
    _first_line,
    _predictor_reference,
    _quiet,
    _require,
    _tabular_input,
)
from onnxshap._errors import ConversionError

#: The highest opset onnxmltools 1.12-1.16 converts tree boosters to.
BOOSTING_OPSET = 15

#: Model files each library writes with its Booster's save_model (data, not pickles).
XGBOOST_SUFFIXES = frozenset({".json", ".ubj"})
LIGHTGBM_SUFFIXES = frozenset({".txt"})

#: framework_of's name -> how people write the library.
LIBRARIES = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}

#: The scikit-learn wrappers skl2onnx converts inside a pipeline (with onnxmltools' converters), per library.
SKL2ONNX_ESTIMATORS = {
    "xgboost": ("XGBRegressor", "XGBClassifier", "XGBRFRegressor", "XGBRFClassifier"),
    "lightgbm": ("LGBMRegressor", "LGBMClassifier"),
}
#: The libraries whose wrappers `_register_with_skl2onnx` has registered in this process.
_REGISTERED: set[str] = set()


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
    exported = _with_integer_labels(model, library, notes)
    try:
        with _quiet(notes):
            if library == "xgboost":
                proto = onnxmltools.convert_xgboost(
                    exported,
                    name=type(model).__name__,
                    initial_types=initial_types,
                    target_opset=target,
                )
            else:
                proto = onnxmltools.convert_lightgbm(
                    exported,
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


def _with_integer_labels(model: Any, library: str, notes: list[str]) -> Any:
    """`model`, or for a LightGBM classifier fitted on boolean labels its Booster, whose classes are 0 and 1.

    onnxmltools writes integer or string class labels only (its parser fails on a wrapper's boolean
    classes); the Booster's export is the same trees with labels 0 / 1 (int64) for False / True, as
    skl2onnx writes for scikit-learn classifiers, and the parity check compares them with predict()
    cast to int64.
    """
    classes = getattr(model, "classes_", None) if library == "lightgbm" else None
    if classes is None or np.asarray(classes).dtype != np.bool_:
        return model
    notes.append("boolean class labels: the 'label' output gives 0 / 1 (int64) for False / True")
    return model.booster_


def _boosting_libraries_in(est: Any) -> list[str]:
    """The boosting libraries ("xgboost", "lightgbm") of the estimators nested in a scikit-learn
    estimator (pipeline steps, ColumnTransformer and ensemble members), sorted."""
    params = est.get_params(deep=True) if hasattr(est, "get_params") else {}
    found = {_boosting_library(v) for v in [est, *params.values()]}
    return sorted(lib for lib in found if lib is not None)


def _register_with_skl2onnx(est: Any) -> str | None:
    """Let skl2onnx convert the XGBoost / LightGBM wrappers nested in `est` with onnxmltools'
    converters; None if `est` holds none, else what converts them (for the exporter's description).

    Registers once per library and process. A class skl2onnx already knows (the user registered their
    own converter) is left alone.
    """
    libraries = _boosting_libraries_in(est)
    if not libraries:
        return None
    for library in libraries:
        _require("boosting", [library, "onnxmltools"])
    import onnxmltools  # pyright: ignore[reportMissingImports]
    import skl2onnx  # pyright: ignore[reportMissingImports]
    from skl2onnx.common.shape_calculator import (  # pyright: ignore[reportMissingImports]
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    for library in sorted(set(libraries) - _REGISTERED):
        module = importlib.import_module(library)
        if library == "xgboost":
            from onnxmltools.convert.xgboost.operator_converters.XGBoost import (  # pyright: ignore[reportMissingImports]
                convert_xgboost as converter,
            )
        else:
            from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (  # pyright: ignore[reportMissingImports]
                convert_lightgbm as converter,
            )
        for name in SKL2ONNX_ESTIMATORS[library]:
            cls = getattr(module, name, None)
            if cls is None or _known_to_skl2onnx(skl2onnx, cls):
                continue
            classifier = name.endswith("Classifier")
            # skl2onnx's shape calculators, not onnxmltools': these check skl2onnx's own tensor types.
            skl2onnx.update_registered_converter(
                cls,
                f"{LIBRARIES[library]}{name}",  # the alias: any name unique in skl2onnx's registry
                calculate_linear_classifier_output_shapes if classifier else calculate_linear_regressor_output_shapes,
                converter,
                options={"nocl": [True, False], "zipmap": [True, False, "columns"]} if classifier else None,
            )
        _REGISTERED.add(library)
    versions = ", ".join(f"{lib} {importlib.import_module(lib).__version__}" for lib in libraries)
    return f"onnxmltools {onnxmltools.__version__} ({versions})"


def _known_to_skl2onnx(skl2onnx: Any, cls: type) -> bool:
    try:
        skl2onnx.get_model_alias(cls)
    except RuntimeError:  # skl2onnx's answer for a class without a converter
        return False
    return True


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
