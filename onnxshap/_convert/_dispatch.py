"""The entry points: tell a model's framework from its class or its file's suffix and hand it
to that framework's converter, then to the common parity check."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from onnxshap._convert._boosting import (
    LIGHTGBM_SUFFIXES,
    XGBOOST_SUFFIXES,
    _boosting_library,
    _convert_boosting,
    _load_boosting_file,
)
from onnxshap._convert._core import (
    PARITY_ATOL,
    PARITY_RTOL,
    ParityReport,
    Shape,
    _Converted,
    _finish,
    _first_line,
    _normalize_dtypes,
    _normalize_shapes,
)
from onnxshap._convert._keras import KERAS_SUFFIXES, _convert_keras, _load_keras_file
from onnxshap._convert._pickle import PICKLE_SUFFIXES, _load_pickle, untrusted_message
from onnxshap._convert._sklearn import _convert_sklearn
from onnxshap._convert._torch import (
    EXPORTED_PROGRAM_SUFFIXES,
    TORCH_SUFFIXES,
    _convert_torch,
    _load_torch_file,
    training_mode_message,
)
from onnxshap._errors import ConversionError, OnnxShapError

if TYPE_CHECKING:
    from onnxshap._model import Model

#: Files whose loader unpickles (runs code from the file): converting them needs trust_pickle=True.
UNTRUSTED_SUFFIXES = PICKLE_SUFFIXES | EXPORTED_PROGRAM_SUFFIXES
BOOSTING_SUFFIXES = XGBOOST_SUFFIXES | LIGHTGBM_SUFFIXES
SUPPORTED_SUFFIXES = KERAS_SUFFIXES | TORCH_SUFFIXES | EXPORTED_PROGRAM_SUFFIXES | PICKLE_SUFFIXES | BOOSTING_SUFFIXES


def framework_of(obj: Any) -> str | None:
    """ "torch", "keras", "xgboost", "lightgbm" or "sklearn" for a model object of that framework,
    else None (XGBoost's and LightGBM's scikit-learn wrappers are theirs, not "sklearn").

    Looks at the class hierarchy and `sys.modules` only: never imports a framework.
    """
    roots = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    torch = sys.modules.get("torch")
    torch_model = (
        "torch" in roots and torch is not None and isinstance(obj, (torch.nn.Module, torch.export.ExportedProgram))
    )
    if torch_model:
        return "torch"
    if roots & {"keras", "tf_keras"} or "tensorflow" in roots and hasattr(obj, "predict"):
        return "keras"
    library = _boosting_library(obj)
    if library is not None:
        return library
    if "sklearn" in roots:
        return "sklearn"
    return None


def _convert_known(
    obj: Any, kind: str | None, sample: Any, shapes: list[Shape] | None, dtypes: Any, opset: int | None
) -> _Converted | None:
    """`obj` exported by its framework's converter (`kind` from `framework_of`); None for an unknown kind."""
    if kind == "torch":
        return _convert_torch(obj, sample, shapes, dtypes, opset)
    if kind == "keras":
        return _convert_keras(obj, sample, shapes, dtypes, opset)
    if kind == "sklearn":
        return _convert_sklearn(obj, sample, shapes, opset)
    if kind in ("xgboost", "lightgbm"):
        return _convert_boosting(obj, kind, sample, shapes, opset)
    return None


def convert_object(
    obj: Any,
    sample_input: Any,
    *,
    opset: int | None = None,
    rtol: float = PARITY_RTOL,
    atol: float = PARITY_ATOL,
) -> tuple[onnx.ModelProto, ParityReport]:
    """Convert an in-memory framework model to ONNX and check it against the framework.

    Args:
        obj: a `torch.nn.Module` (TorchScript modules included), a `torch.export.ExportedProgram`,
            a Keras model, a fitted scikit-learn estimator or pipeline, or an XGBoost or LightGBM
            model (scikit-learn wrapper or Booster).
        sample_input: real input with a batch axis: a tensor/array or a tuple of them (PyTorch
            positional arguments; a list of arrays for a multi-input Keras model; a 2-D array for
            scikit-learn, XGBoost and LightGBM). Used for tracing and for the parity check. None: a
            seeded random input from the shapes the model declares (all but torch.nn.Module).
        opset: ONNX opset (default: 18 for the dynamo exporter, 15 for onnxmltools (XGBoost,
            LightGBM), 17 for the others).
        rtol / atol: parity tolerance, |onnx - framework| <= atol + rtol * |framework| elementwise.

    Returns:
        (the ONNX model with a dynamic batch axis where the exporter allows it, the parity report).

    Raises:
        MissingDependencyError: the framework or its exporter is not installed (names the extra).
        ConversionError: the exporter failed, or the ONNX model's outputs differ from the framework's
            beyond the tolerance (`.report` holds the comparison).
    """
    kind = framework_of(obj)
    if sample_input is None and kind == "torch" and type(obj).__name__ != "ExportedProgram":
        raise ConversionError(
            "A PyTorch module does not record its input shape: pass a sample input (a tensor or a tuple of tensors "
            "with a batch axis) to trace it."
        )
    conv = _convert_known(obj, kind, sample_input, None, None, opset)
    if conv is None:
        raise ConversionError(
            f"Cannot convert a {type(obj).__module__}.{type(obj).__name__} to ONNX: pass a torch.nn.Module, a "
            "torch.export.ExportedProgram, a Keras model, a fitted scikit-learn estimator or an "
            "XGBoost or LightGBM model (or an ONNX model)."
        )
    return _finish(conv, rtol, atol)


def convert(
    model: Any,
    sample: Any = None,
    *,
    outputs: Sequence[str] | None = None,
    opset: int | None = None,
    rtol: float = PARITY_RTOL,
    atol: float = PARITY_ATOL,
) -> Model:
    """Export an in-memory framework model to ONNX with its framework's exporter, check the export
    against the framework, and load it.

    Args:
        model: a `torch.nn.Module`, `torch.export.ExportedProgram`, Keras model, fitted
            scikit-learn estimator or XGBoost/LightGBM model. A torch module in training mode
            is exported in eval mode
            (a `UserWarning` says so) and left in the mode it was in.
        sample: an example input with a batch axis (torch: a tensor or a tuple of tensors, needed;
            Keras: an array, a list or a dict by input name; scikit-learn, XGBoost, LightGBM: a 2-D
            array). It is traced and compared on; None: a seeded random input from the declared
            shapes.
        outputs: the tensors that will be explained, if not the graph outputs (see `load`).
        opset: ONNX opset (default: 18 for the dynamo exporter, 15 for onnxmltools (XGBoost,
            LightGBM), 17 for the others).
        rtol / atol: parity tolerance, |onnx - framework| <= atol + rtol * |framework| elementwise.

    Returns:
        A `Model`: `conversion` holds the `ParityReport`, `save(path)` writes the .onnx file,
        `tensors()` lists the tensor names (e.g. the logits to explain).

    Raises:
        MissingDependencyError: the framework or its exporter is not installed (names the extra).
        ConversionError: the export failed or does not reproduce the framework's outputs (`.report`).
    """
    from onnxshap._model import load

    if framework_of(model) == "torch" and bool(getattr(model, "training", False)):
        message = training_mode_message(model)
        warnings.warn(message[0].upper() + message[1:], UserWarning, stacklevel=_user_stacklevel())
    proto, report = convert_object(model, sample, opset=opset, rtol=rtol, atol=atol)
    loaded = load(proto, outputs)
    loaded.conversion = report
    return loaded


def _user_stacklevel() -> int:
    """The `stacklevel` that points a warning at the first caller outside onnxshap (for the caller of
    the function that warns), however deep inside the package the warning is raised."""
    package = str(Path(__file__).resolve().parents[1]) + os.sep  # onnxshap/, not onnxshap/_convert/
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def convert_file(
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
    input_dtype: str | Sequence[str] | None = None,
    trust_pickle: bool = False,
    rtol: float = PARITY_RTOL,
    atol: float = PARITY_ATOL,
) -> tuple[onnx.ModelProto, ParityReport]:
    """Convert a saved framework model to ONNX and check it against the framework on a random input.

    Args:
        path: `.keras` / `.h5` (Keras), `.pt` / `.pth` (TorchScript; a module pickled with
            torch.save needs trust_pickle), `.pt2` (torch.export), `.pkl` / `.pickle` / `.joblib`
            (scikit-learn, or any framework model pickled whole), `.json` / `.ubj` (an XGBoost
            Booster's save_model), `.txt` (a LightGBM Booster's save_model).
        opset: ONNX opset (default: 18 for torch.export programs, 15 for XGBoost and LightGBM,
            17 otherwise).
        input_shape: the shape of one sample without the batch axis, e.g. (3, 32, 32), or one such
            shape per input. Needed where the file does not record it (TorchScript); elsewhere it
            overrides the declared shape for the random test input.
        input_dtype: numpy dtype name of the inputs (default: the declared dtype, else float32);
            one name for all inputs or one per input. Random integer inputs are 0 or 1.
        trust_pickle: allow loaders that unpickle (run code stored in the file): pickle/joblib,
            `.pt2`, torch.save'd modules, Keras Lambda layers. Only for files you trust.
        rtol / atol: parity tolerance (see `convert_object`).

    Returns:
        (the ONNX model, the parity report).
    """
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"Model file {str(p)!r} does not exist.")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        raise ConversionError(f"{str(p)!r} is already an ONNX model: use it directly (onnxshap inspect / explain).")
    if p.is_dir():
        raise ConversionError(
            f"{str(p)!r} is a directory. TensorFlow SavedModel folders are not supported: save the Keras model as a "
            ".keras file (model.save('model.keras'))."
        )
    if suffix not in SUPPORTED_SUFFIXES:
        raise ConversionError(
            f"Cannot tell the framework of {str(p)!r} from its suffix {suffix!r}. Supported: .keras/.h5 (Keras), "
            ".pt/.pth (TorchScript), .pt2 (torch.export), .pkl/.pickle/.joblib (scikit-learn), "
            ".json/.ubj (XGBoost), .txt (LightGBM)."
        )
    if suffix in UNTRUSTED_SUFFIXES and not trust_pickle:
        raise ConversionError(untrusted_message(p))
    shapes = _normalize_shapes(input_shape)
    n_inputs = len(shapes) if shapes is not None else 1
    dtypes = _normalize_dtypes(input_dtype, n_inputs)
    notes: list[str] = []
    try:
        if suffix in KERAS_SUFFIXES:
            conv = _convert_keras(_load_keras_file(p, trust_pickle, notes), None, shapes, dtypes, opset)
        elif suffix in TORCH_SUFFIXES | EXPORTED_PROGRAM_SUFFIXES:
            conv = _convert_torch(_load_torch_file(p, trust_pickle, notes), None, shapes, dtypes, opset)
        elif suffix in BOOSTING_SUFFIXES:
            library = "xgboost" if suffix in XGBOOST_SUFFIXES else "lightgbm"
            conv = _convert_boosting(_load_boosting_file(p, library), library, None, shapes, opset)
        else:
            obj = _load_pickle(p, notes)
            conv = _convert_known(obj, framework_of(obj), None, shapes, dtypes, opset)
            if conv is None:
                raise ConversionError(
                    f"{str(p)!r} holds a {type(obj).__module__}.{type(obj).__name__}, which is not a "
                    "PyTorch, Keras, scikit-learn, XGBoost or LightGBM model."
                )
    except OnnxShapError:
        raise
    except Exception as exc:  # a framework's loader or exporter failing in a way not caught above
        raise ConversionError(f"Converting {str(p)!r} failed: {_first_line(exc)}") from exc
    conv.notes[:0] = notes
    return _finish(conv, rtol, atol)
