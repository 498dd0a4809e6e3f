"""Shared helpers for the export scripts (manifest, ONNX inspection, ORT check).

Only used by models/export_*.py; the library and its tests never import this.
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(MODELS_DIR, "manifest.json")

RTOL = 1e-5
ATOL = 1e-6

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.STRING: "string",
    onnx.TensorProto.BOOL: "bool",
}


def model_path(name: str) -> str:
    return os.path.join(MODELS_DIR, name + ".onnx")


def _value_info(vi: onnx.ValueInfoProto) -> dict:
    t = vi.type
    if t.HasField("tensor_type"):
        tt = t.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        return {"name": vi.name, "shape": shape, "dtype": _DTYPES.get(tt.elem_type, str(tt.elem_type))}
    if t.HasField("sequence_type"):
        inner = t.sequence_type.elem_type
        if inner.HasField("map_type"):
            mt = inner.map_type
            k = _DTYPES.get(mt.key_type, str(mt.key_type))
            v = _DTYPES.get(mt.value_type.tensor_type.elem_type, "?")
            return {"name": vi.name, "shape": None, "dtype": f"seq(map({k},{v}))"}
        return {"name": vi.name, "shape": None, "dtype": "sequence"}
    return {"name": vi.name, "shape": None, "dtype": "unknown"}


def _ops(model: onnx.ModelProto) -> list[str]:
    ops = set()

    def walk(graph):
        for n in graph.node:
            ops.add(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for g in a.graphs:
                    walk(g)

    walk(model.graph)
    return sorted(ops)


def check_file(path: str) -> onnx.ModelProto:
    """Load (with any external data), shape-infer and run the full checker."""
    model = onnx.load(path)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(inferred, full_check=True)
    return model


def ort_run(path: str, feeds: dict) -> list:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def compare(name: str, got: list, want: list) -> float:
    """Compare ORT outputs with the framework's; returns max abs diff, raises on mismatch."""
    assert len(got) == len(want), f"{name}: {len(got)} outputs vs {len(want)}"
    worst = 0.0
    for g, w in zip(got, want):
        g = np.asarray(g)
        w = np.asarray(w)
        assert g.shape == w.shape, f"{name}: shape {g.shape} vs {w.shape}"
        if g.dtype.kind in "iub":
            assert np.array_equal(g, w), f"{name}: integer output mismatch"
            continue
        d = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) if g.size else 0.0
        worst = max(worst, d)
        if not np.allclose(g, w, rtol=RTOL, atol=ATOL):
            raise AssertionError(f"{name}: ORT vs framework mismatch, max abs diff {d:.3g}")
    print(f"  {name}: ORT vs framework max abs diff = {worst:.3g}")
    return worst


def describe(name: str, *, exporter: str, framework: str, converter: str | None, max_abs_diff: float,
             description: str, input_range, extra: dict | None = None) -> dict:
    path = model_path(name)
    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer}
    entry = {
        "file": os.path.basename(path),
        "exporter": exporter,
        "framework_version": framework,
        "converter_version": converter,
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [_value_info(v) for v in model.graph.input if v.name not in inits],
        "outputs": [_value_info(v) for v in model.graph.output],
        "ops": _ops(model),
        "num_nodes": len(model.graph.node),
        "file_size": os.path.getsize(path),
        "max_abs_diff_vs_framework": float(f"{max_abs_diff:.3g}"),
        "description": description,
        "input_range": input_range,
    }
    if extra:
        entry.update(extra)
    return entry


def update_manifest(entries: dict) -> None:
    data = {}
    if os.path.exists(MANIFEST):
        with open(MANIFEST) as f:
            data = json.load(f)
    data.update(entries)
    with open(MANIFEST, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"manifest: {len(entries)} entries updated, {len(data)} total -> {MANIFEST}")
