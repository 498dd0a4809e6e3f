"""Framework-free helpers of the export scripts: output folder, samplers, ONNX checks and
inspection, the onnxruntime run and comparison, failure bookkeeping, the manifest.

Only used by models/export_*.py; the library and its tests never import this. The torch pieces
are in _torch_common.py, the Keras/tf2onnx ones in _keras_common.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Collection

import numpy as np
import onnx
import onnxruntime as ort

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
#: Where model_path() and update_manifest() write: models/ unless parse_args() got --out DIR.
OUT_DIR = MODELS_DIR

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


def fix_hash_seed() -> None:
    """Re-execute this script with PYTHONHASHSEED=0 unless it already has it.

    Converters that iterate sets or dicts of strings (tf2onnx's constant de-duplication) pick
    names by hash order; a fixed seed keeps the files byte-stable. Call it before heavy imports.
    """
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)


def parse_args(doc: str | None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse sys.argv with `parser` (default: a new one) plus `--out DIR` and set OUT_DIR.

    `--out` defaults to models/; another folder is created if needed and gets its own
    manifest.json (merged into like models/manifest.json), so a rebuild can be compared with
    the committed files without touching them.
    """
    global OUT_DIR
    parser = parser or argparse.ArgumentParser()
    parser.description = doc.strip().splitlines()[0] if doc else None
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=MODELS_DIR,
        help="folder for the .onnx files and manifest.json (default: models/)",
    )
    args = parser.parse_args()
    OUT_DIR = os.path.abspath(args.out)
    os.makedirs(OUT_DIR, exist_ok=True)
    return args


def model_path(name: str) -> str:
    """OUT_DIR/<name>.onnx."""
    return os.path.join(OUT_DIR, name + ".onnx")


def normal(g: np.random.Generator, shape: int | tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """float32 standard-normal draws of `shape`, times `scale` (default 1)."""
    return (scale * g.standard_normal(shape)).astype(np.float32)


def unit(g: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    """float32 uniform [0, 1) draws of `shape` (image pixels)."""
    return g.random(shape).astype(np.float32)


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


def ort_run(path: str, feeds: dict, optimized: bool = True) -> list:
    """All outputs of the model at `path` on `feeds`, onnxruntime CPU on one thread.

    optimized=False turns graph optimisations off (onnxruntime's default is all of them on):
    the reference semantics for QDQ models, whose Q/DQ pairs it would fuse into integer kernels.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def node_summaries(path: str, ops: Collection[str]) -> list[dict]:
    """{"op", "inputs", **attributes} of the main-graph nodes whose op type is in `ops`, in graph
    order, for the printouts (graph-valued attributes left out)."""
    res = []
    for n in onnx.load(path).graph.node:
        if n.op_type in ops:
            attrs = {
                a.name: onnx.helper.get_attribute_value(a) for a in n.attribute if a.type != onnx.AttributeProto.GRAPH
            }
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
            res.append({"op": n.op_type, "inputs": list(n.input), **attrs})
    return res


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


def describe(
    name: str,
    *,
    exporter: str,
    framework: str,
    converter: str | None,
    max_abs_diff: float,
    description: str,
    input_range,
    extra: dict | None = None,
) -> dict:
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
    """Merge `entries` into OUT_DIR/manifest.json (created if missing)."""
    manifest = os.path.join(OUT_DIR, "manifest.json")
    data = {}
    if os.path.exists(manifest):
        with open(manifest) as f:
            data = json.load(f)
    data.update(entries)
    with open(manifest, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"manifest: {len(entries)} entries updated, {len(data)} total -> {manifest}")


class Results:
    """The manifest entries and the failures of one export script run."""

    def __init__(self) -> None:
        self.entries: dict[str, dict] = {}
        self.failures: dict[str, str] = {}

    def attempt(self, name: str, fn: Callable[[], object]) -> None:
        """Run `fn`, which writes model `name` and adds its entry.

        An exception is printed and recorded instead of raised, and a file it left without an
        entry is removed, so that one exporter's failure does not stop the other models.
        """
        print(f"{name}:")
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one failing export is reported; the others still run
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            print(f"  {name}: FAILED: {msg}")
            traceback.print_exc()
            self.failures[name] = msg
            path = model_path(name)
            if name not in self.entries and os.path.exists(path):
                os.remove(path)

    def finish(self) -> int:
        """Merge the entries (if any) into the manifest and print the failures; 1 if any, else 0."""
        if self.entries:
            update_manifest(self.entries)
        if not self.failures:
            print("FAILURES: none")
            return 0
        print("FAILURES:")
        for name, msg in self.failures.items():
            print(f"  {name}: {msg}")
        return 1
