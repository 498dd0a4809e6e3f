"""Loading a model: bytes or a file -> a validated `Graph` ready to evaluate and attribute.

Loading checks everything that can be checked before any data arrives: the bytes parse as an ONNX
model, external data exists inside the model's folder, the opsets are known, no Range or Tile of
constants is too large to build, and every node has a row in the rule table (`Graph.unsupported()`
lists the ones that do not, without raising). QuantizeLinear -> DequantizeLinear pairs are fused
(`onnxshap.ops.quant`), and control flow (If, Loop, Scan) is lowered into ordinary nodes
(`onnxshap._control`), so that every node the interpreter runs and the attribution pass visits is
one node of the main graph. This module sits above the graph, the interpreter and the ops it uses.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx.defs
import onnx.external_data_helper
import onnx.shape_inference
from google.protobuf.message import DecodeError

from onnxshap._control import lower_control_flow
from onnxshap._errors import ExternalDataError, ModelLoadError, OpsetError
from onnxshap._graph import _CORRUPT, Graph, ModelLike, Node, _raw_bytes, _type_name, tensor_array
from onnxshap._interpreter import check_folded_size
from onnxshap._registry import max_opsets, normalize_domain
from onnxshap.ops.quant import fuse_quantize_dequantize


def _read_proto(model: ModelLike) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(model, onnx.ModelProto):
        return model, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        base_dir = None
        origin = f"the {len(data)} bytes given"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelLoadError(
                f"Model file {str(path)!r} does not exist. Check the path (relative paths are from {os.getcwd()!r})."
            )
        if path.is_dir():
            raise ModelLoadError(f"{str(path)!r} is a directory; pass the path of the .onnx file inside it.")
        data = path.read_bytes()
        base_dir = path.resolve().parent
        origin = f"file {str(path)!r}"
    else:
        raise ModelLoadError(
            f"Cannot load a model from a {type(model).__name__}: pass a path to an .onnx file, its bytes, or an onnx.ModelProto."
        )
    if not data:
        raise ModelLoadError(f"The {origin} is empty (0 bytes); the model was not written completely. Export it again.")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as exc:
        raise ModelLoadError(
            f"The {origin} is not a valid ONNX model: the protobuf cannot be decoded ({exc}). The file is "
            "truncated, corrupt, or in another format (a PyTorch checkpoint, a Keras .h5, ...). "
            "Convert framework models with `onnxshap convert` first."
        ) from exc
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise ModelLoadError(
            f"The {origin} decodes as protobuf but is not an ONNX model (no graph, IR version or opset). "
            "It is probably a different file format; convert the framework model to ONNX first."
        )
    return proto, base_dir


def _load_external_data(proto: onnx.ModelProto, base_dir: Path | None) -> None:
    tensors = [
        t for t in onnx.external_data_helper._get_all_tensors(proto) if onnx.external_data_helper.uses_external_data(t)
    ]
    if not tensors:
        return
    if base_dir is None:
        raise ExternalDataError(
            f"Tensor {tensors[0].name!r} is stored in an external file, but the model was given as bytes or a "
            "ModelProto, so there is no folder to find it in. Load the model from its .onnx path instead, or "
            "embed the data with onnx.save(model, path, save_as_external_data=False)."
        )
    root = base_dir.resolve()
    for t in tensors:
        try:
            info = onnx.external_data_helper.ExternalDataInfo(t)
        except ValueError as exc:  # a negative or non-numeric offset or length
            raise ExternalDataError(
                f"Tensor {t.name!r} has an invalid external-data entry ({exc}). {_CORRUPT}"
            ) from None
        location = Path(info.location)
        target = (root / location).resolve()
        if location.is_absolute() or not target.is_relative_to(root):
            raise ExternalDataError(
                f"Tensor {t.name!r} points to external data at {info.location!r}, which lies outside the model's "
                f"folder {str(root)!r}. For safety onnxshap reads external data only from inside that folder; "
                "move the data file next to the model and fix the location."
            )
        if not target.is_file():
            raise ExternalDataError(
                f"Tensor {t.name!r} is stored in external file {info.location!r}, which does not exist in "
                f"{str(root)!r}. Copy the data file next to the .onnx file (exporters write it beside the model)."
            )
        size = target.stat().st_size
        offset = info.offset or 0
        # Without a length, the tensor's bytes run from the offset to the end of the file (as onnx reads them).
        length = info.length if info.length is not None else max(size - offset, 0)
        span = f"offset {offset}" + (f", length {info.length}" if info.length is not None else "")
        fix = (
            "The data file is truncated or does not belong to this model: copy the data file that was exported "
            "with this .onnx file next to it, or export the model again."
        )
        if offset > size:
            raise ExternalDataError(
                f"Tensor {t.name!r} is stored in external file {info.location!r} at {span}, past the end of that "
                f"file, which has only {size} bytes. {fix}"
            )
        if offset + length > size:
            raise ExternalDataError(
                f"Tensor {t.name!r} is stored in external file {info.location!r} at {span}, up to byte "
                f"{offset + length}, but that file has only {size} bytes. {fix}"
            )
        dims = [int(d) for d in t.dims]
        need = _raw_bytes(t.data_type, math.prod(dims))
        if need is not None and length != need:
            raise ExternalDataError(
                f"Tensor {t.name!r} has dims {dims} of {_type_name(t.data_type)}, which take {need} bytes, but its "
                f"entry in external file {info.location!r} ({size} bytes) is {length} bytes long ({span}). {fix}"
            )
    onnx.external_data_helper.load_external_data_for_model(proto, str(root))


def _check_opsets(proto: onnx.ModelProto) -> dict[str, int]:
    """Domain -> imported opset; OpsetError for an opset newer than onnx defines: the meaning of its ops
    is unknown (onnxruntime refuses such a model too). Domains onnx does not define (vendor ops) pass;
    their ops are unsupported."""
    opsets: dict[str, int] = {}
    for imp in proto.opset_import:
        opsets[normalize_domain(imp.domain)] = int(imp.version)
    known = max_opsets()
    for domain, version in sorted(opsets.items()):
        if domain in known and version > known[domain]:
            raise OpsetError(
                f"The model imports opset {version} of domain {domain or 'ai.onnx'!r}, but the installed onnx "
                f"package (version {onnx.__version__}) knows opsets up to {known[domain]} of that domain, so the "
                f"meaning of its ops is unknown. Upgrade onnx (pip install -U onnx) or export the model with "
                f"opset <= {known[domain]} for that domain."
            )
    return opsets


#: Ops whose output onnx's shape inference computes in full when it propagates values (data_prop).
_PROPAGATED_OPS = frozenset({"Range", "Tile"})


def _check_propagated_sizes(proto: onnx.ModelProto) -> None:
    """Refuse a Range or Tile of constants too large to build before shape inference computes it (in
    C++, until memory runs out and the process is killed), with the error folding would raise."""
    known = {t.name: t for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    known[n.output[0]] = a.t
    for index, n in enumerate(proto.graph.node):
        if n.op_type in _PROPAGATED_OPS and normalize_domain(n.domain) == "" and all(i in known for i in n.input if i):
            node = Node(index, n.name, n.op_type, "", None, tuple(n.input), tuple(n.output), {}, None)
            inputs = [tensor_array(known[i], f"Input {i!r} of {node.label}") if i else None for i in n.input]
            check_folded_size(node, inputs)


@dataclass
class LoadedModel:
    proto: onnx.ModelProto
    graph: Graph
    base_dir: Path | None


def load_graph(model: ModelLike) -> LoadedModel:
    """Parse and validate a model; unsupported ops are recorded, not raised (see `Graph.unsupported`)."""
    proto, base_dir = _read_proto(model)
    _load_external_data(proto, base_dir)
    opsets = _check_opsets(proto)
    _check_propagated_sizes(proto)
    # Shape inference is advisory (better error messages; the lengths control flow is unrolled over,
    # which the lowering verifies when the graph runs); evaluation does not need it. Data propagation
    # carries Shape -> Concat -> Reshape chains into static dims.
    inferred = proto
    for data_prop in (True, False):
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=data_prop)
            break
        except Exception:  # noqa: BLE001, S112 - advisory (see above): try without data propagation, or go on
            continue
    graph = Graph(inferred.graph, opsets, base_dir=base_dir, rewrite=fuse_quantize_dequantize)
    if any(n.subgraphs for n in graph.nodes):
        lower_control_flow(graph)
    return LoadedModel(proto=proto, graph=graph, base_dir=base_dir)
