"""What every framework's converter shares: the parity check against onnxruntime and its
report, the seeded random test input, output and batch-axis naming, optional imports and the
exporter-chatter filter. Imports no framework."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxshap._errors import ConversionError, MissingDependencyError

#: Parity tolerance: |onnx - framework| <= PARITY_ATOL + PARITY_RTOL * |framework|, elementwise.
PARITY_RTOL = 1e-4
PARITY_ATOL = 1e-5

#: Rows of the random input used when no sample is given (2, not 1: exporters specialise size-1 axes).
TEST_BATCH = 2

#: pip extra -> (framework name, modules it needs).
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("PyTorch", ("torch", "onnxscript")),
    "keras": ("Keras", ("tensorflow", "keras", "tf2onnx")),
    "sklearn": ("scikit-learn", ("sklearn", "skl2onnx")),
    "boosting": ("gradient-boosting (XGBoost, LightGBM)", ("xgboost", "lightgbm", "onnxmltools")),
}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class OutputParity:
    """How one output of the ONNX model compares with the framework's.

    `max_abs_diff` is max |onnx - framework|; `worst_ratio` is max |onnx - framework| /
    (atol + rtol * |framework|): the output passes when it is <= 1.
    """

    name: str
    shape: Shape
    dtype: str
    max_abs_diff: float
    worst_ratio: float

    @property
    def ok(self) -> bool:
        return self.worst_ratio <= 1.0


@dataclass
class ParityReport:
    """The framework-vs-onnxruntime comparison made after a conversion.

    Attributes:
        source: what was converted, e.g. "TorchScript module (torch 2.13.0+cpu)".
        exporter: the exporter and opset, e.g. "torch.onnx TorchScript exporter, opset 17".
        inputs: the compared input: name -> (shape with the batch axis, dtype).
        input_origin: "sample" (the input given) or "random" (seeded random data).
        outputs: one `OutputParity` per framework output.
        rtol / atol: the tolerance applied.
        notes: things the user should know (exporter fallback, static batch axis, tracer warnings).
    """

    source: str
    exporter: str
    inputs: dict[str, tuple[Shape, str]]
    input_origin: str
    outputs: list[OutputParity]
    rtol: float = PARITY_RTOL
    atol: float = PARITY_ATOL
    notes: list[str] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        """The largest |onnx - framework| over all outputs."""
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def summary(self) -> str:
        """A few lines for people: what was compared and the largest differences."""
        shapes = ", ".join(f"{n}: {dt}{list(s)}" for n, (s, dt) in self.inputs.items())
        lines = [f"parity: onnxruntime vs {self.source} on the {self.input_origin} input ({shapes})"]
        for o in self.outputs:
            verdict = "ok" if o.ok else "MISMATCH"
            lines.append(f"  {o.name} {o.dtype}{list(o.shape)}: max abs diff {o.max_abs_diff:.3g} ({verdict})")
        lines.append(
            f"largest difference: {self.max_abs_diff:.3g} (tolerance {self.atol:g} + {self.rtol:g} x |framework output|)"
        )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class _Converted:
    """What a framework converter hands to the common parity check."""

    proto: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    source: str
    exporter: str
    input_origin: str
    notes: list[str] = field(default_factory=list)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _require(extra: str, modules: Sequence[str] | None = None) -> None:
    """Import the modules of a pip extra, or raise MissingDependencyError naming the extra."""
    framework, needed = EXTRAS[extra]
    for module in modules or needed:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(
                f"Converting a {framework} model needs the Python package {module!r}, which is not installed "
                f"({_first_line(exc)}). Install it with: pip install 'onnxshap[{extra}]'"
            ) from exc


#: Warning classes worth showing: the trace may be wrong for other inputs (PyTorch), the pickle was
#: written by another version of the library (scikit-learn). The rest is exporter chatter.
KEPT_WARNINGS = frozenset({"TracerWarning", "InconsistentVersionWarning"})
#: Loggers of the exporters, quieted to errors while they run (e.g. "torchvision is not installed").
QUIET_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "tf2onnx",
    "skl2onnx",
    "onnxscript",
    "onnxmltools",
)


@contextlib.contextmanager
def _quiet(notes: list[str]) -> Iterator[None]:
    """Silence exporter chatter (progress prints, deprecation warnings); keep KEPT_WARNINGS as notes."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("always")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    for w in caught:
        if w.category.__name__ in KEPT_WARNINGS:
            message = f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
            if message not in notes:
                notes.append(message)


def _normalize_shapes(input_shape: Any) -> list[Shape] | None:
    """None, one per-sample shape (ints), or one shape per input -> list of shapes or None."""
    if input_shape is None:
        return None
    items = list(input_shape)
    if all(isinstance(d, (int, np.integer)) for d in items):
        items = [items]
    shapes: list[Shape] = []
    for s in items:
        dims = tuple(int(d) for d in s)
        if any(d <= 0 for d in dims):
            raise ConversionError(f"Input shape {list(dims)} has a dimension <= 0; every dimension must be positive.")
        shapes.append(dims)
    return shapes


def _normalize_dtypes(input_dtype: Any, n: int) -> list[np.dtype[Any]] | None:
    if input_dtype is None:
        return None
    items = [input_dtype] if isinstance(input_dtype, (str, np.dtype, type)) else list(input_dtype)
    if len(items) == 1 and n > 1:
        items = items * n
    try:
        return [np.dtype(d) for d in items]
    except TypeError as exc:
        raise ConversionError(
            f"Unknown input dtype in {items}: {exc}. Use numpy names such as float32 or int64."
        ) from exc


def _random_array(rng: np.random.Generator, shape: Shape, dtype: np.dtype[Any]) -> np.ndarray:
    """Standard normal floats; integers in {0, 1} (valid ids for any embedding); random booleans."""
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 2, shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    raise ConversionError(f"Cannot make a random test input of dtype {dtype}; pass a sample input instead.")


def _test_inputs(
    names: Sequence[str],
    known: Sequence[tuple[tuple[int | None, ...] | None, np.dtype[Any]]],
    shapes: list[Shape] | None,
    dtypes: list[np.dtype[Any]] | None,
    what: str,
) -> list[np.ndarray]:
    """Seeded random inputs, shape (TEST_BATCH, *per-sample shape): from `shapes` when given, else
    from the shapes the model declares (which must then be fully known apart from the batch axis)."""
    if shapes is not None and len(shapes) != len(names):
        raise ConversionError(
            f"The {what} has {len(names)} input(s) {list(names)} but {len(shapes)} input shape(s) were given; "
            "give one per input, in order."
        )
    if dtypes is not None and len(dtypes) != len(names):
        raise ConversionError(f"The {what} has {len(names)} input(s) but {len(dtypes)} input dtype(s) were given.")
    rng = np.random.default_rng(0)
    arrays = []
    for i, name in enumerate(names):
        declared, dtype = known[i]
        if dtypes is not None:
            dtype = dtypes[i]
        if shapes is not None:
            per_sample = shapes[i]
            if declared is not None and len(declared) == len(per_sample) + 1:
                fixed = [
                    (a, d) for a, (d, s) in enumerate(zip(declared[1:], per_sample), 1) if d is not None and d != s
                ]
                if fixed:
                    raise ConversionError(
                        f"Input {name!r} of the {what} has shape {_dims(declared)}, but the input shape given is "
                        f"{list(per_sample)} (axis {fixed[0][0]} must be {fixed[0][1]})."
                    )
        else:
            if declared is None or any(d is None for d in declared[1:]):
                hint = "" if declared is None else f" (the model declares {_dims(declared)})"
                raise ConversionError(
                    f"The shape of input {name!r} of the {what} is not known{hint}. Give the shape of one sample "
                    "without the batch axis: `--input-shape 3,32,32` on the command line, input_shape=(3, 32, 32) "
                    "in Python (one per input for several inputs)."
                )
            per_sample = tuple(int(d) for d in declared[1:])  # type: ignore[arg-type]
        arrays.append(_random_array(rng, (TEST_BATCH, *per_sample), dtype))
    return arrays


def _dims(shape: Sequence[int | None] | None) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


_NAME = re.compile(r"[^A-Za-z0-9_.:/-]")


def _clean_name(name: str, fallback: str) -> str:
    name = _NAME.sub("_", str(name)).strip("_")
    return name or fallback


def _output_names(count: int, keys: Sequence[str] | None = None) -> list[str]:
    if keys is not None:
        return [_clean_name(k, f"output_{i}") for i, k in enumerate(keys)]
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _name_batch_dim(proto: onnx.ModelProto) -> None:
    """Rename the exporter's symbol for the batch axis (s77, unk__41, ...) to "batch" everywhere."""
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    symbols = set()
    for vi in graph.input:
        if vi.name in initializers or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            symbols.add(dims[0].dim_param)
    if not symbols and all(
        vi.type.tensor_type.shape.dim and not vi.type.tensor_type.shape.dim[0].HasField("dim_value")
        for vi in graph.input
        if vi.name not in initializers and vi.type.HasField("tensor_type")
    ):
        symbols, symbol = {""}, ""  # an anonymous dynamic axis (skl2onnx's None)
    if len(symbols) != 1 or "batch" in symbols:
        return
    (symbol,) = symbols
    if symbol:
        # Exporters may give outputs their own symbol for the same axis (tf2onnx: unk__41 in, unk__42 out).
        inside = {
            d.dim_param
            for vi in [*graph.input, *graph.value_info]
            if vi.type.HasField("tensor_type")
            for d in vi.type.tensor_type.shape.dim
            if d.dim_param
        }
        for vi in graph.output:
            dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
            if dims and dims[0].dim_param and dims[0].dim_param not in inside:
                dims[0].dim_param = symbol
    if not symbol:
        for vi in [*graph.input, *graph.output]:
            dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
            if vi.name not in initializers and dims and not dims[0].HasField("dim_value") and not dims[0].dim_param:
                dims[0].dim_param = "batch"
        return
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                if d.dim_param == symbol:
                    d.dim_param = "batch"


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # tf
        value = value.numpy()
    return np.asarray(value)


def _finish(conv: _Converted, rtol: float, atol: float) -> tuple[onnx.ModelProto, ParityReport]:
    """Validate the ONNX model, run it in onnxruntime on the same input and compare every output."""
    import onnxruntime as ort

    proto = conv.proto
    _name_batch_dim(proto)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ConversionError(
            f"The {conv.exporter} produced an invalid ONNX model ({_first_line(exc)}). Try another --opset."
        ) from exc
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        feeds = {i.name: conv.feeds[i.name] for i in session.get_inputs()}
        got = dict(zip(names, session.run(names, feeds)))
    except KeyError as exc:
        raise ConversionError(
            f"The converted model expects an input {exc} that the framework model does not have."
        ) from exc
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime cannot run the model the {conv.exporter} produced ({_first_line(exc)})."
        ) from exc
    outputs = []
    for name, want in conv.reference.items():
        if name not in got:
            raise ConversionError(
                f"The converted model has no output {name!r} (it has {names}); the exporter renamed or dropped it."
            )
        have = np.asarray(got[name])
        if have.shape != want.shape:
            raise ConversionError(
                f"Output {name!r}: onnxruntime returns shape {list(have.shape)}, the framework {list(want.shape)}.",
            )
        if want.dtype.kind not in "fciub":  # string labels
            same = have.astype(str) == want.astype(str)
            max_abs, worst = 0.0 if bool(np.all(same)) else float("nan"), 0.0 if bool(np.all(same)) else np.inf
        elif want.dtype.kind in "fc":
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            bound = atol + rtol * np.abs(want.astype(np.float64))
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(diff == 0, 0.0, np.where(np.isnan(diff), np.inf, diff / bound))
            max_abs = float(np.nanmax(diff, initial=0.0)) if not np.isnan(diff).all() else float("nan")
            worst = float(np.max(ratio, initial=0.0))
        else:
            same = have.astype(want.dtype) == want
            max_abs = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64)), initial=0.0))
            worst = 0.0 if bool(np.all(same)) else np.inf
        outputs.append(OutputParity(name, tuple(want.shape), str(want.dtype), max_abs, worst))
    report = ParityReport(
        source=conv.source,
        exporter=conv.exporter,
        inputs={k: (tuple(v.shape), str(v.dtype)) for k, v in conv.feeds.items()},
        input_origin=conv.input_origin,
        outputs=outputs,
        rtol=rtol,
        atol=atol,
        notes=conv.notes,
    )
    if not report.ok:
        bad = [o for o in outputs if not o.ok]
        raise ConversionError(
            f"The converted model does not reproduce the {conv.source} ({conv.exporter}): output "
            + ", ".join(f"{o.name!r} differs by up to {o.max_abs_diff:.3g}" for o in bad)
            + f" (tolerance {atol:g} + {rtol:g} x |output|). Try another opset; if the differences are float "
            "rounding of a large model, loosen the tolerance (--rtol/--atol).",
            report,
        )
    return proto, report


# --- tabular predictors (scikit-learn, XGBoost, LightGBM) ---


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
