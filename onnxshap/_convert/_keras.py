"""Keras 3 / tf.keras -> ONNX with tf2onnx, and the loader of `.keras` / `.h5` files.

tf2onnx, opset 17, through a `tf.function` with an input signature and
`tf2onnx.convert.from_function` (`tf2onnx.convert.from_keras` fails on Keras 3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxshap._convert._core import (
    Shape,
    _as_numpy,
    _clean_name,
    _Converted,
    _first_line,
    _output_names,
    _quiet,
    _require,
    _test_inputs,
)
from onnxshap._errors import ConversionError

#: Default opset of tf2onnx: the version the example models in models/ were exported with.
TF2ONNX_OPSET = 17

KERAS_SUFFIXES = frozenset({".keras", ".h5", ".hdf5"})


def _import_tensorflow() -> None:
    # Quiet TensorFlow's C++ start-up logging and make sure Keras 3 picks the backend tf2onnx converts.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    _require("keras")


def _convert_keras(
    model: Any,
    sample: Any,
    shapes: list[Shape] | None,
    dtypes: list[np.dtype[Any]] | None,
    opset: int | None,
) -> _Converted:
    _import_tensorflow()
    # Optional, all three: the keras extra (pyright has tensorflow's stubs but not its source).
    import keras  # pyright: ignore[reportMissingImports]
    import tensorflow as tf  # pyright: ignore[reportMissingModuleSource]
    import tf2onnx  # pyright: ignore[reportMissingImports]

    backend = keras.backend.backend() if hasattr(keras, "backend") else "tensorflow"
    if backend != "tensorflow":
        raise ConversionError(
            f"Keras runs on the {backend!r} backend, but tf2onnx converts TensorFlow graphs. Set the environment "
            "variable KERAS_BACKEND=tensorflow before Keras is imported."
        )
    notes: list[str] = []
    source = f"Keras model {getattr(model, 'name', type(model).__name__)!r} (tensorflow {tf.__version__}, keras {keras.__version__})"
    try:
        declared = list(model.inputs or [])
    except (AttributeError, ValueError):
        declared = []
    if sample is not None:
        if isinstance(sample, Mapping):
            order = [getattr(t, "name", "") for t in declared] if declared else list(sample)
            missing = [n for n in order if n not in sample]
            if missing or len(sample) != len(order):
                raise ConversionError(
                    f"The sample input has keys {list(sample)}; the Keras model's inputs are {order}."
                )
            items = [sample[n] for n in order]
        else:
            items = list(sample) if isinstance(sample, (tuple, list)) else [sample]
        arrays = [_as_numpy(a) for a in items]
        arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]
        origin = "sample"
    else:
        arrays, origin = [], "random"
    if declared:
        names = [_clean_name(getattr(t, "name", ""), f"x{i}") for i, t in enumerate(declared)]
        known = [
            (tuple(None if d is None else int(d) for d in t.shape), np.dtype(str(getattr(t.dtype, "name", t.dtype))))
            for t in declared
        ]
    elif arrays:
        names = ["x"] if len(arrays) == 1 else [f"x{i}" for i in range(len(arrays))]
        known = [((None, *a.shape[1:]), a.dtype) for a in arrays]
    else:
        raise ConversionError(
            "The Keras model has not been built, so its inputs are unknown: call it once on data (or pass a sample input)."
        )
    if len(set(names)) != len(names):
        names = [f"x{i}" for i in range(len(names))]
    if not arrays:
        arrays = _test_inputs(names, known, shapes, dtypes, "Keras model")
    if len(arrays) != len(names):
        raise ConversionError(f"The Keras model takes {len(names)} input(s) {names} but {len(arrays)} were given.")
    specs = tuple(
        tf.TensorSpec((None, *shape[1:]) if shape is not None else (None, *a.shape[1:]), tf.as_dtype(a.dtype), name=n)
        for n, (shape, _), a in zip(names, known, arrays)
    )

    def named(out: Any) -> dict[str, Any]:
        if isinstance(out, Mapping):
            keys, values = list(out), list(out.values())
            names_ = _output_names(len(values), keys)
        elif isinstance(out, (tuple, list)):
            values = list(out)
            names_ = _output_names(len(values))
        else:
            values, names_ = [out], _output_names(1)
        return dict(zip(names_, values))

    @tf.function(input_signature=specs)
    def forward(*args: Any) -> dict[str, Any]:
        return named(model(args[0] if len(args) == 1 else list(args), training=False))

    try:
        with _quiet(notes):
            reference = {k: _as_numpy(v) for k, v in forward(*[tf.constant(a) for a in arrays]).items()}
    except Exception as exc:
        shapes_text = ", ".join(f"{a.dtype}{list(a.shape)}" for a in arrays)
        raise ConversionError(
            f"Running the {source} on a {origin} input ({shapes_text}) failed: {_first_line(exc)}"
        ) from exc
    exporter = f"tf2onnx {tf2onnx.__version__} (tf.function + convert.from_function), opset {opset or TF2ONNX_OPSET}"
    try:
        with _quiet(notes):
            proto, _ = tf2onnx.convert.from_function(forward, input_signature=specs, opset=opset or TF2ONNX_OPSET)
    except Exception as exc:
        raise ConversionError(f"tf2onnx could not convert the {source}: {_first_line(exc)}") from exc
    return _Converted(proto, dict(zip(names, arrays)), reference, source, exporter, origin, notes)


def _load_keras_file(path: Path, trust_pickle: bool, notes: list[str]) -> Any:
    _import_tensorflow()
    import keras  # pyright: ignore[reportMissingImports]  # optional: the keras extra

    try:
        with _quiet(notes):
            # safe_mode refuses to deserialize Lambda layers (arbitrary Python bytecode) unless trusted.
            return keras.saving.load_model(str(path), compile=False, safe_mode=not trust_pickle)
    except Exception as exc:
        message = _first_line(exc)
        hint = ""
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            hint = " The model contains Python code (a Lambda layer); if you trust the file, pass --trust-pickle."
        elif "custom" in str(exc).lower() or "Could not locate" in str(exc):
            hint = (
                " The model uses custom layers or objects: load it in Python with keras.saving.load_model(path, "
                "custom_objects=...) and pass the model to onnxshap.convert or onnxshap.Explainer."
            )
        raise ConversionError(f"Keras {keras.__version__} could not load {str(path)!r} ({message}).{hint}") from exc
