"""Framework models -> ONNX with each framework's own exporter, checked against onnxruntime.

- PyTorch: an `nn.Module` (torch.onnx dynamo exporter, opset 18, TorchScript exporter as fallback),
  a TorchScript `.pt` file or `ScriptModule` (TorchScript exporter, opset 17), a `torch.export`
  `.pt2` file or `ExportedProgram` (dynamo exporter, opset 18). The batch axis is made dynamic.
- Keras 3 / tf.keras (`.keras`, `.h5`): tf2onnx, opset 17, through a `tf.function` with an input
  signature and `tf2onnx.convert.from_function` (`tf2onnx.convert.from_keras` fails on Keras 3).
- scikit-learn estimators and pipelines (pickle/joblib files): skl2onnx, opsets {"": 17,
  "ai.onnx.ml": 3}, float32 input named "x", classifiers with a probabilities tensor (no ZipMap).

The frameworks are optional extras (`pip install 'onnxshap[torch]'`, `[keras]`, `[sklearn]`),
imported only when one of their models is converted. Every conversion runs the framework's model
and onnxruntime on the same input (the sample given, or a seeded random one) and compares every
output; a difference over `atol + rtol * |framework output|` raises `ConversionError` with the
`ParityReport` attached.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxshap._errors import ConversionError, MissingDependencyError, OnnxShapError

if TYPE_CHECKING:
    from onnxshap._model import Model

#: Default opsets per exporter: the versions the example models in models/ were exported with.
TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 18
TF2ONNX_OPSET = 17
SKL2ONNX_OPSET = 17
SKL2ONNX_ML_OPSET = 3

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
}

KERAS_SUFFIXES = frozenset({".keras", ".h5", ".hdf5"})
TORCH_SUFFIXES = frozenset({".pt", ".pth"})
EXPORTED_PROGRAM_SUFFIXES = frozenset({".pt2"})
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib"})
#: Files whose loader unpickles (runs code from the file): converting them needs trust_pickle=True.
UNTRUSTED_SUFFIXES = PICKLE_SUFFIXES | EXPORTED_PROGRAM_SUFFIXES
SUPPORTED_SUFFIXES = KERAS_SUFFIXES | TORCH_SUFFIXES | EXPORTED_PROGRAM_SUFFIXES | PICKLE_SUFFIXES

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


# ----------------------------------------------------------------------------- helpers


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
QUIET_LOGGERS = ("torch.onnx", "torch.export", "tf2onnx", "skl2onnx", "onnxscript")


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
        raise ConversionError(f"Unknown input dtype in {items}: {exc}. Use numpy names such as float32 or int64.") from exc


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
                fixed = [(a, d) for a, (d, s) in enumerate(zip(declared[1:], per_sample), 1) if d is not None and d != s]
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
        for vi in graph.input if vi.name not in initializers and vi.type.HasField("tensor_type")
    ):
        symbols, symbol = {""}, ""  # an anonymous dynamic axis (skl2onnx's None)
    if len(symbols) != 1 or "batch" in symbols:
        return
    (symbol,) = symbols
    if symbol:
        # Exporters may give outputs their own symbol for the same axis (tf2onnx: unk__41 in, unk__42 out).
        inside = {d.dim_param for vi in [*graph.input, *graph.value_info] if vi.type.HasField("tensor_type")
                  for d in vi.type.tensor_type.shape.dim if d.dim_param}
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
        raise ConversionError(f"The converted model expects an input {exc} that the framework model does not have.") from exc
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


# ----------------------------------------------------------------------------- detection


def framework_of(obj: Any) -> str | None:
    """"torch", "keras" or "sklearn" for a model object of that framework, else None.

    Looks at the class hierarchy and `sys.modules` only: never imports a framework.
    """
    roots = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    torch = sys.modules.get("torch")
    if "torch" in roots and torch is not None:
        if isinstance(obj, (torch.nn.Module, torch.export.ExportedProgram)):
            return "torch"
    if roots & {"keras", "tf_keras"} or "tensorflow" in roots and hasattr(obj, "predict"):
        return "keras"
    if "sklearn" in roots:
        return "sklearn"
    return None


# ----------------------------------------------------------------------------- PyTorch


def _torch_flatten(out: Any) -> tuple[list[Any], list[str] | None]:
    """Model output -> (tensors, names or None for positional outputs)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out], None
    if isinstance(out, Mapping):
        tensors, names = [], []
        for k, v in out.items():
            if not isinstance(v, torch.Tensor):
                raise ConversionError(f"Output {k!r} of the PyTorch model is a {type(v).__name__}; only tensors can be exported.")
            tensors.append(v)
            names.append(str(k))
        return tensors, names
    if isinstance(out, (tuple, list)):
        tensors = []
        for v in out:
            inner, _ = _torch_flatten(v)
            tensors += inner
        return tensors, None
    raise ConversionError(f"The PyTorch model returns a {type(out).__name__}; it must return tensors (or tuples/dicts of them).")


def _torch_inputs(sample: Any) -> list[np.ndarray]:
    if isinstance(sample, Mapping):
        raise ConversionError("Pass the sample input of a PyTorch model as a tensor or a tuple of tensors (positional arguments), not a dict.")
    items = list(sample) if isinstance(sample, (tuple, list)) else [sample]
    return [_as_numpy(s) for s in items]


def _convert_torch(
    obj: Any,
    sample: Any,
    shapes: list[Shape] | None,
    dtypes: list[np.dtype[Any]] | None,
    opset: int | None,
) -> _Converted:
    _require("torch", ["torch"])
    import torch

    notes: list[str] = []
    is_program = isinstance(obj, torch.export.ExportedProgram)
    is_script = isinstance(obj, (torch.jit.ScriptModule, torch.jit.ScriptFunction))
    if not (is_program or isinstance(obj, torch.nn.Module) or is_script):
        raise ConversionError(f"Cannot convert a {type(obj).__name__} with torch.onnx; pass an nn.Module or an ExportedProgram.")
    version = f"torch {torch.__version__}"
    if is_program:
        kind = "torch.export program"
        names = [_clean_name(n, f"x{i}") for i, n in enumerate(obj.graph_signature.user_inputs)]
        placeholders = {n.name: n for n in obj.graph.nodes if n.op == "placeholder"}
        known = []
        for n in obj.graph_signature.user_inputs:
            val = placeholders[n].meta.get("val") if n in placeholders else None
            if val is None or not hasattr(val, "shape"):
                known.append((None, np.dtype(np.float32)))
                continue
            dims = tuple(d if isinstance(d, int) else None for d in val.shape)
            known.append((dims, np.dtype(str(val.dtype).removeprefix("torch."))))
        example = obj.example_inputs[0] if obj.example_inputs else None
    elif is_script:
        kind = "TorchScript module"
        schema_args = obj.schema.arguments if isinstance(obj, torch.jit.ScriptFunction) else obj.forward.schema.arguments[1:]
        names = [_clean_name(a.name, f"x{i}") for i, a in enumerate(schema_args)]
        known = [(None, np.dtype(np.float32))] * len(names)
        example = None
    else:
        kind = f"PyTorch module {type(obj).__name__}"
        params = [
            p for p in inspect.signature(obj.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names = [_clean_name(p.name, f"x{i}") for i, p in enumerate(params)]
        known = [(None, np.dtype(np.float32))] * len(names)
        example = None
    source = f"{kind} ({version})"

    if sample is not None:
        arrays, origin = _torch_inputs(sample), "sample"
    elif shapes is None and example is not None and all(isinstance(e, torch.Tensor) for e in example):
        arrays, origin = [_as_numpy(e) for e in example], "example"
    else:
        arrays, origin = _test_inputs(names, known, shapes, dtypes, "PyTorch model"), "random"
    if len(arrays) > len(names) and not is_script:
        raise ConversionError(f"The {kind} takes {len(names)} input(s) {names} but {len(arrays)} were given.")
    names = names[: len(arrays)] if len(names) >= len(arrays) else [f"x{i}" for i in range(len(arrays))]
    # Float samples follow the weights' dtype (numpy data is often float64, weights float32).
    param = next((p for p in (obj.parameters() if isinstance(obj, torch.nn.Module) else []) if p.is_floating_point()), None)
    if param is not None:
        want = np.dtype(str(param.dtype).removeprefix("torch."))
        arrays = [a.astype(want) if a.dtype.kind == "f" else a for a in arrays]
    if origin != "random" and arrays and arrays[0].ndim and arrays[0].shape[0] == 1:
        # Exporters specialise size-1 axes to constants; export with two rows so the batch stays dynamic.
        export_arrays = [np.concatenate([a, a]) if a.ndim else a for a in arrays]
    else:
        export_arrays = arrays
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in export_arrays]
    check_tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]

    module = obj.module() if is_program else obj
    # An exported program is already in the mode it was exported in (and refuses .eval()).
    was_training = bool(getattr(module, "training", False)) and not is_program
    if was_training:
        notes.append(training_mode_message(module))
        module.eval()
    try:
        with torch.no_grad():
            try:
                out = module(*check_tensors)
            except Exception as exc:
                shapes_text = ", ".join(f"{a.dtype}{list(a.shape)}" for a in arrays)
                raise ConversionError(
                    f"Running the {kind} on a {origin} input ({shapes_text}) failed: {_first_line(exc)}. "
                    "Check the input shape (one sample, without the batch axis) and dtype."
                ) from exc
        outs, keys = _torch_flatten(out)
        out_names = _output_names(len(outs), keys)
        reference = {n: _as_numpy(t) for n, t in zip(out_names, outs)}
        batch = arrays[0].shape[0] if arrays and arrays[0].ndim else None

        def torchscript_export(model: Any) -> onnx.ModelProto:
            dynamic = {n: {0: "batch"} for n, a in zip(names, export_arrays) if a.ndim}
            dynamic.update({n: {0: "batch"} for n, r in reference.items() if r.ndim and r.shape[0] == batch})
            buffer = io.BytesIO()
            torch.onnx.export(
                model, tuple(tensors), buffer, dynamo=False, opset_version=opset or TORCHSCRIPT_OPSET,
                input_names=names, output_names=out_names, dynamic_axes=dynamic,
                training=torch.onnx.TrainingMode.EVAL,
            )
            return onnx.load_from_string(buffer.getvalue())

        def dynamo_export(model: Any, dynamic: bool) -> onnx.ModelProto:
            _require("torch", ["onnxscript"])
            kwargs: dict[str, Any] = {}
            if dynamic:
                kwargs["dynamic_shapes"] = tuple({0: torch.export.Dim.AUTO} if t.ndim else None for t in tensors)
            program = torch.onnx.export(
                model, () if is_program else tuple(tensors), dynamo=True, opset_version=opset or DYNAMO_OPSET,
                input_names=names, output_names=out_names, verbose=False, **kwargs,
            )
            return program.model_proto

        with _quiet(notes):
            if is_script:
                exporter = f"torch.onnx TorchScript exporter, opset {opset or TORCHSCRIPT_OPSET}"
                try:
                    proto = torchscript_export(obj)
                except Exception as exc:
                    raise ConversionError(f"torch.onnx could not export the {kind}: {_first_line(exc)}") from exc
            elif is_program:
                exporter = f"torch.onnx dynamo exporter, opset {opset or DYNAMO_OPSET}"
                try:
                    proto = dynamo_export(obj, dynamic=False)
                except OnnxShapError:
                    raise
                except Exception as exc:
                    raise ConversionError(f"torch.onnx could not export the {kind}: {_first_line(exc)}") from exc
            else:
                exporter = f"torch.onnx dynamo exporter, opset {opset or DYNAMO_OPSET}"
                try:
                    proto = dynamo_export(obj, dynamic=True)
                except OnnxShapError:
                    raise
                except Exception as dynamo_exc:
                    exporter = f"torch.onnx TorchScript exporter, opset {opset or TORCHSCRIPT_OPSET}"
                    try:
                        proto = torchscript_export(obj)
                    except Exception as exc:
                        raise ConversionError(
                            f"torch.onnx could not export the {kind}. Dynamo exporter: {_first_line(dynamo_exc)}. "
                            f"TorchScript exporter: {_first_line(exc)}."
                        ) from exc
                    notes.append(f"the dynamo exporter failed ({_first_line(dynamo_exc)}); used the TorchScript exporter")
    finally:
        if was_training:
            module.train()
    first = next((vi for vi in proto.graph.input if vi.type.HasField("tensor_type")), None)
    if first is not None and first.type.tensor_type.shape.dim and first.type.tensor_type.shape.dim[0].HasField("dim_value"):
        notes.append(
            f"the batch axis of input {first.name!r} is fixed at {first.type.tensor_type.shape.dim[0].dim_value}: "
            "explain that many samples at a time (export with a dynamic batch dimension to lift this)"
        )
    feeds = dict(zip(names, arrays))
    return _Converted(proto, feeds, reference, source, exporter, origin, notes)


def _load_torch_file(path: Path, trust_pickle: bool, notes: list[str]) -> Any:
    _require("torch", ["torch"])
    import torch

    if path.suffix.lower() in EXPORTED_PROGRAM_SUFFIXES:
        with _quiet(notes), _importable_beside(path):  # a .pt2 is only loaded when trusted
            try:
                return torch.export.load(str(path))
            except Exception as exc:
                raise ConversionError(
                    f"{str(path)!r} is not a torch.export program torch {torch.__version__} can load ({_first_line(exc)}). "
                    "Save it with torch.export.save(torch.export.export(model, args), path)."
                ) from exc
    with _quiet(notes):
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as jit_exc:
            jit_error = jit_exc
    # Not TorchScript: a checkpoint saved with torch.save. A weights-only load is safe and tells
    # a state_dict (weights without the code) from a pickled module.
    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as safe_exc:
        if not trust_pickle:
            # torch's own text goes on about corrupt checkpoints: its first sentence says enough.
            jit_reason = _first_line(jit_error).split(". ")[0]
            raise ConversionError(
                f"{str(path)!r} is not a TorchScript archive; it looks like a model pickled with torch.save(model). "
                "Loading it runs code stored in the file: if you trust the file, pass --trust-pickle "
                "(trust_pickle=True). Better, save it as TorchScript (torch.jit.save(torch.jit.script(model), path)) "
                f"or with torch.export.save. (TorchScript loader: {jit_reason}.)"
            ) from safe_exc
        try:
            with _importable_beside(path):
                content = torch.load(str(path), map_location="cpu", weights_only=False)
        except ModuleNotFoundError as exc:
            raise ConversionError(_class_not_importable(path, exc)) from exc
        except Exception as exc:
            raise ConversionError(
                f"Could not load {str(path)!r} with torch.load ({_first_line(exc)}). A pickled module can only be loaded "
                "where its class can be imported; save it as TorchScript or with torch.export.save instead."
            ) from exc
    if isinstance(content, torch.nn.Module):
        return content
    if isinstance(content, Mapping):
        raise ConversionError(
            f"{str(path)!r} holds a state_dict (weights only, no model code), which cannot be converted on its own. "
            "In Python, load it into your nn.Module (model.load_state_dict(torch.load(path))) and pass the module "
            "to onnxshap.Explainer, or save the model with torch.jit.save(torch.jit.script(model), path)."
        )
    raise ConversionError(f"{str(path)!r} holds a {type(content).__name__}, not a PyTorch model.")


# ----------------------------------------------------------------------------- Keras


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
    import keras
    import tensorflow as tf
    import tf2onnx

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
                raise ConversionError(f"The sample input has keys {list(sample)}; the Keras model's inputs are {order}.")
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
        raise ConversionError(f"Running the {source} on a {origin} input ({shapes_text}) failed: {_first_line(exc)}") from exc
    exporter = f"tf2onnx {tf2onnx.__version__} (tf.function + convert.from_function), opset {opset or TF2ONNX_OPSET}"
    try:
        with _quiet(notes):
            proto, _ = tf2onnx.convert.from_function(forward, input_signature=specs, opset=opset or TF2ONNX_OPSET)
    except Exception as exc:
        raise ConversionError(f"tf2onnx could not convert the {source}: {_first_line(exc)}") from exc
    return _Converted(proto, dict(zip(names, arrays)), reference, source, exporter, origin, notes)


def _load_keras_file(path: Path, trust_pickle: bool, notes: list[str]) -> Any:
    _import_tensorflow()
    import keras

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


# ----------------------------------------------------------------------------- scikit-learn


def _convert_sklearn(
    est: Any,
    sample: Any,
    shapes: list[Shape] | None,
    opset: int | None,
) -> _Converted:
    _require("sklearn")
    import skl2onnx
    import sklearn
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

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


# ----------------------------------------------------------------------------- public entry points


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
            a Keras model, or a fitted scikit-learn estimator or pipeline.
        sample_input: real input with a batch axis: a tensor/array or a tuple of them (PyTorch
            positional arguments; a list of arrays for a multi-input Keras model; a 2-D array for
            scikit-learn). Used for tracing and for the parity check. None: a seeded random input
            from the shapes the model declares (Keras, scikit-learn, ExportedProgram only).
        opset: ONNX opset (default: 18 for the dynamo exporter, 17 for the others).
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
    if kind == "torch":
        conv = _convert_torch(obj, sample_input, None, None, opset)
    elif kind == "keras":
        conv = _convert_keras(obj, sample_input, None, None, opset)
    elif kind == "sklearn":
        conv = _convert_sklearn(obj, sample_input, None, opset)
    else:
        raise ConversionError(
            f"Cannot convert a {type(obj).__module__}.{type(obj).__name__} to ONNX: pass a torch.nn.Module, a "
            "torch.export.ExportedProgram, a Keras model or a fitted scikit-learn estimator (or an ONNX model)."
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
        model: a `torch.nn.Module`, `torch.export.ExportedProgram`, Keras model or fitted
            scikit-learn estimator. A torch module in training mode is exported in eval mode
            (a `UserWarning` says so) and left in the mode it was in.
        sample: an example input with a batch axis (torch: a tensor or a tuple of tensors, needed;
            Keras: an array, a list or a dict by input name; scikit-learn: a 2-D array). It is
            traced and compared on; None: a seeded random input from the declared shapes.
        outputs: the tensors that will be explained, if not the graph outputs (see `load`).
        opset: ONNX opset (default: 18 for the dynamo exporter, 17 for the others).
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


#: Layers that compute differently in training mode, by a pattern of their class name, and how eval mode changes them.
TRAINING_LAYERS = (("Dropout", "dropout is off"), ("BatchNorm", "batch norm uses its running statistics"))


def training_mode_message(module: Any) -> str:
    """What exporting a torch module that is in training mode changes, naming its layers that change."""
    names = {type(m).__name__ for m in module.modules()}
    found = [(sorted(n for n in names if pattern in n), effect) for pattern, effect in TRAINING_LAYERS]
    changes = "; ".join(f"{effect} ({', '.join(layers)})" for layers, effect in found if layers)
    return (
        f"the PyTorch module {type(module).__name__} is in training mode; it is exported and explained in eval mode, "
        f"as for inference: {changes or 'dropout is off and batch norm uses its running statistics'}. Call .eval() "
        "on it (before saving, for a file) to make that choice explicit."
    )


def _user_stacklevel() -> int:
    """The `stacklevel` that points a warning at the first caller outside onnxshap (for the caller of
    the function that warns), however deep inside the package the warning is raised."""
    package = str(Path(__file__).resolve().parent) + os.sep
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
            (scikit-learn, or any framework model pickled whole).
        opset: ONNX opset (default: 18 for torch.export programs, 17 otherwise).
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
            ".pt/.pth (TorchScript), .pt2 (torch.export), .pkl/.pickle/.joblib (scikit-learn)."
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
        else:
            obj = _load_pickle(p, notes)
            kind = framework_of(obj)
            if kind == "torch":
                conv = _convert_torch(obj, None, shapes, dtypes, opset)
            elif kind == "keras":
                conv = _convert_keras(obj, None, shapes, dtypes, opset)
            elif kind == "sklearn":
                conv = _convert_sklearn(obj, None, shapes, opset)
            else:
                raise ConversionError(
                    f"{str(p)!r} holds a {type(obj).__module__}.{type(obj).__name__}, which is not a PyTorch, Keras or "
                    "scikit-learn model."
                )
    except OnnxShapError:
        raise
    except Exception as exc:  # a framework's loader or exporter failing in a way not caught above
        raise ConversionError(f"Converting {str(p)!r} failed: {_first_line(exc)}") from exc
    conv.notes[:0] = notes
    return _finish(conv, rtol, atol)


def untrusted_message(path: Path) -> str:
    """Why a file is refused without trust_pickle, and what to do."""
    return (
        f"Loading {str(path)!r} unpickles it, which runs code stored in the file. Pass --trust-pickle "
        "(trust_pickle=True in Python) only if you trust where the file comes from."
    )


@contextlib.contextmanager
def _importable_beside(path: Path) -> Iterator[None]:
    """For the duration of a trusted unpickling, let it import the classes it names from modules in
    the file's folder and in the current directory (where a training script saved it from): the
    `onnxshap` program's own folder is first on the import path, not the user's."""
    added = [d for d in dict.fromkeys([str(path.resolve().parent), os.getcwd()]) if d not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for d in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


def _class_not_importable(path: Path, exc: ModuleNotFoundError) -> str:
    return (
        f"Unpickling {str(path)!r} needs the module {exc.name!r}, which cannot be imported from the file's folder "
        f"({str(path.resolve().parent)!r}), the current directory or the installed packages. Put the module that "
        "defines the model's classes (e.g. its .py file) next to the model file, or install its package; better, "
        "save the model as TorchScript (torch.jit.save(torch.jit.script(model), path)) or with torch.export.save."
    )


def _load_pickle(path: Path, notes: list[str]) -> Any:
    # joblib reads plain pickles too; scikit-learn models are usually saved with it.
    try:
        import joblib
    except ImportError:
        joblib = None
    try:
        with _quiet(notes), _importable_beside(path):
            if joblib is not None:
                return joblib.load(path)
            import pickle

            with open(path, "rb") as fh:
                return pickle.load(fh)  # noqa: S301 - the caller passed trust_pickle
    except ModuleNotFoundError as exc:
        extra = {"sklearn": "sklearn", "torch": "torch", "keras": "keras", "tensorflow": "keras"}.get(
            (exc.name or "").split(".")[0]
        )
        if extra:
            _require(extra)
        raise ConversionError(_class_not_importable(path, exc)) from exc
    except Exception as exc:
        raise ConversionError(f"Could not unpickle {str(path)!r}: {_first_line(exc)}") from exc
