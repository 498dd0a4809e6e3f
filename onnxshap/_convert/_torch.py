"""PyTorch -> ONNX with torch.onnx, and the loader of saved torch models.

An `nn.Module` goes through the dynamo exporter (opset 18, TorchScript exporter as fallback), a
TorchScript `.pt` file or `ScriptModule` through the TorchScript exporter (opset 17), a
`torch.export` `.pt2` file or `ExportedProgram` through the dynamo exporter (opset 18). The batch
axis is made dynamic.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

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
from onnxshap._convert._pickle import _class_not_importable, _importable_beside
from onnxshap._errors import ConversionError, OnnxShapError

#: Default opsets of the exporters: the versions the example models in models/ were exported with.
TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 18

TORCH_SUFFIXES = frozenset({".pt", ".pth"})
EXPORTED_PROGRAM_SUFFIXES = frozenset({".pt2"})

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


def _torch_flatten(out: Any) -> tuple[list[Any], list[str] | None]:
    """Model output -> (tensors, names or None for positional outputs)."""
    import torch  # pyright: ignore[reportMissingImports]  # optional: the torch extra

    if isinstance(out, torch.Tensor):
        return [out], None
    if isinstance(out, Mapping):
        tensors, names = [], []
        for k, v in out.items():
            if not isinstance(v, torch.Tensor):
                raise ConversionError(
                    f"Output {k!r} of the PyTorch model is a {type(v).__name__}; only tensors can be exported."
                )
            tensors.append(v)
            names.append(str(k))
        return tensors, names
    if isinstance(out, (tuple, list)):
        tensors = []
        for v in out:
            inner, _ = _torch_flatten(v)
            tensors += inner
        return tensors, None
    raise ConversionError(
        f"The PyTorch model returns a {type(out).__name__}; it must return tensors (or tuples/dicts of them)."
    )


def _torch_inputs(sample: Any) -> list[np.ndarray]:
    if isinstance(sample, Mapping):
        raise ConversionError(
            "Pass the sample input of a PyTorch model as a tensor or a tuple of tensors (positional arguments), not a dict."
        )
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
    import torch  # pyright: ignore[reportMissingImports]  # optional: the torch extra

    notes: list[str] = []
    is_program = isinstance(obj, torch.export.ExportedProgram)
    is_script = isinstance(obj, (torch.jit.ScriptModule, torch.jit.ScriptFunction))
    if not (is_program or isinstance(obj, torch.nn.Module) or is_script):
        raise ConversionError(
            f"Cannot convert a {type(obj).__name__} with torch.onnx; pass an nn.Module or an ExportedProgram."
        )
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
        schema_args = (
            obj.schema.arguments if isinstance(obj, torch.jit.ScriptFunction) else obj.forward.schema.arguments[1:]
        )
        names = [_clean_name(a.name, f"x{i}") for i, a in enumerate(schema_args)]
        known = [(None, np.dtype(np.float32))] * len(names)
        example = None
    else:
        kind = f"PyTorch module {type(obj).__name__}"
        params = [
            p
            for p in inspect.signature(obj.forward).parameters.values()
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
    param = next(
        (p for p in (obj.parameters() if isinstance(obj, torch.nn.Module) else []) if p.is_floating_point()), None
    )
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
                model,
                tuple(tensors),
                buffer,
                dynamo=False,
                opset_version=opset or TORCHSCRIPT_OPSET,
                input_names=names,
                output_names=out_names,
                dynamic_axes=dynamic,
                training=torch.onnx.TrainingMode.EVAL,
            )
            return onnx.load_from_string(buffer.getvalue())

        def dynamo_export(model: Any, dynamic: bool) -> onnx.ModelProto:
            _require("torch", ["onnxscript"])
            kwargs: dict[str, Any] = {}
            if dynamic:
                kwargs["dynamic_shapes"] = tuple({0: torch.export.Dim.AUTO} if t.ndim else None for t in tensors)
            program = torch.onnx.export(
                model,
                () if is_program else tuple(tensors),
                dynamo=True,
                opset_version=opset or DYNAMO_OPSET,
                input_names=names,
                output_names=out_names,
                verbose=False,
                **kwargs,
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
                except Exception as dynamo_exc:  # noqa: BLE001 - fall back to TorchScript
                    exporter = f"torch.onnx TorchScript exporter, opset {opset or TORCHSCRIPT_OPSET}"
                    try:
                        proto = torchscript_export(obj)
                    except Exception as exc:
                        raise ConversionError(
                            f"torch.onnx could not export the {kind}. Dynamo exporter: {_first_line(dynamo_exc)}. "
                            f"TorchScript exporter: {_first_line(exc)}."
                        ) from exc
                    notes.append(
                        f"the dynamo exporter failed ({_first_line(dynamo_exc)}); used the TorchScript exporter"
                    )
    finally:
        if was_training:
            module.train()
    first = next((vi for vi in proto.graph.input if vi.type.HasField("tensor_type")), None)
    if (
        first is not None
        and first.type.tensor_type.shape.dim
        and first.type.tensor_type.shape.dim[0].HasField("dim_value")
    ):
        notes.append(
            f"the batch axis of input {first.name!r} is fixed at {first.type.tensor_type.shape.dim[0].dim_value}: "
            "explain that many samples at a time (export with a dynamic batch dimension to lift this)"
        )
    feeds = dict(zip(names, arrays))
    return _Converted(proto, feeds, reference, source, exporter, origin, notes)


def _load_torch_file(path: Path, trust_pickle: bool, notes: list[str]) -> Any:
    _require("torch", ["torch"])
    import torch  # pyright: ignore[reportMissingImports]  # optional: the torch extra

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
        except Exception as jit_exc:  # noqa: BLE001 - not TorchScript: try torch.load below
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
