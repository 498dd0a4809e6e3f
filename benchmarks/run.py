"""Benchmark onnxshap against shap's DeepExplainer, Captum's DeepLiftShap and plain forward passes.

Run by hand (not part of the test suite) from the repository root, in an environment with the
optional dependencies (see benchmarks/README.md):

    python benchmarks/run.py                       # everything; writes benchmarks/results.json and docs/benchmarks.md
    python benchmarks/run.py --quick               # one small configuration per model: a smoke test
    python benchmarks/run.py --models mlp,cnn_digits --configs 16x64 --out /tmp/r.json --doc /tmp/r.md

Every (tool, model, configuration) runs in a fresh subprocess (see _workers.py) on the same data,
so peak RSS is that tool's own. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

DEFAULT_CONFIGS: list[tuple[int, int]] = [(16, 64), (128, 128), (32, 1000)]
#: ResNet-50 / VGG-19 at 224x224 take ~0.5 s / ~1.5 s per image forward on 2 cores: a pair-wise
#: pass over 16 x 64 pairs would take many minutes per tool, so they get one small configuration
#: and one explained output (all 1000 outputs would be 1000 backward passes).
LIGHT_CONFIGS: list[tuple[int, int]] = [(1, 4)]
QUICK_CONFIGS: list[tuple[int, int]] = [(4, 8)]
QUICK_LIGHT_CONFIGS: list[tuple[int, int]] = [(1, 2)]
ACCURACY_CONFIG = (16, 64)
TOOLS = ["ort_forward", "own_forward", "onnxshap", "onnxshap_cross_max", "captum", "shap"]
TOOL_LABELS = {
    "onnxshap": "onnxshap",
    "onnxshap_cross_max": "onnxshap (cross_max)",
    "shap": "shap DeepExplainer",
    "captum": "Captum DeepLiftShap",
    "ort_forward": "ORT forward (B×K rows)",
    "own_forward": "own forward (B×K rows)",
}


@dataclass
class ModelSpec:
    """One benchmarked model. `data`: "normal", "unit" (uniform [0, 1)) or "tokens" (ids + mask)."""

    key: str
    onnx: str  # path relative to the repo, or "light:<name>" / "generated:<name>"
    torch: dict[str, str]
    data: str
    description: str
    explain_input: str | None = None
    light: bool = False
    #: onnxshap's completeness check; "off" for the light graphs, whose constant-filled weights blow
    #: activations up to ~1e6 and leave a flat softmax, so float32 cancellation alone exceeds 1e-4.
    check: str = "raise"
    #: why shap's DeepExplainer cannot run this model (recorded without starting a worker).
    shap_skip: str | None = None


MODELS: dict[str, ModelSpec] = {
    m.key: m
    for m in [
        ModelSpec(
            "mlp",
            "models/torch_mlp_ts.onnx",
            {"kind": "zoo", "name": "torch_mlp_ts"},
            "normal",
            "MLP 10→32→16→3, ReLU, softmax",
        ),
        ModelSpec(
            "cnn_digits",
            "models/torch_cnn_digits_ts.onnx",
            {"kind": "zoo", "name": "torch_cnn_digits_ts"},
            "unit",
            "CNN 1×8×8 (MNIST-shaped digits): 2×(conv3×3, ReLU, MaxPool2), linear, softmax",
        ),
        ModelSpec(
            "cnn_cifar",
            "models/torch_cnn_cifar_ts.onnx",
            {"kind": "zoo", "name": "torch_cnn_cifar_ts"},
            "unit",
            "CNN 3×32×32 (CIFAR-shaped): 2×(conv3×3, ReLU, MaxPool2), linear logits",
        ),
        ModelSpec(
            "resblock",
            "models/torch_resblock_ts.onnx",
            {"kind": "zoo", "name": "torch_resblock_ts"},
            "normal",
            "ResNet-style block 3×16×16: conv-BN-ReLU-conv-BN + 1×1 projection, GAP, linear",
        ),
        ModelSpec(
            "lstm",
            "models/seq_lstm_regressor_ts.onnx",
            {"kind": "zoo", "name": "seq_lstm_regressor_ts"},
            "normal",
            "LSTM(5→16) over 20 steps, linear regressor",
        ),
        ModelSpec(
            "gru",
            "models/seq_gru_classifier_ts.onnx",
            {"kind": "zoo", "name": "seq_gru_classifier_ts"},
            "normal",
            "GRU(5→16) over 20 steps, linear, softmax",
        ),
        ModelSpec(
            "transformer",
            "models/seq_transformer_ts.onnx",
            {"kind": "zoo", "name": "seq_transformer_ts"},
            "tokens",
            "1-layer Transformer encoder over 16 token ids + padding mask; attributed from the "
            "token embeddings (16×32), mask held",
            explain_input="/tok/Gather_output_0",
            shap_skip="skipped: shap's DeepExplainer replaces every model input by the background, so it "
            "cannot hold the padding mask at each sample's value",
        ),
        ModelSpec(
            "resnet50_light",
            "light:resnet50",
            {"kind": "light", "name": "resnet50"},
            "unit",
            "onnx wheel's light ResNet-50, 3×224×224 (constant-filled weights)",
            light=True,
            check="off",
        ),
        ModelSpec(
            "vgg19_light",
            "light:vgg19",
            {"kind": "light", "name": "vgg19"},
            "unit",
            "onnx wheel's light VGG-19, 3×224×224 (constant-filled weights)",
            light=True,
            check="off",
        ),
    ]
}
#: Models for the accuracy table (<= 12 input features): exact Shapley values by enumeration.
ACCURACY_MODELS: dict[str, ModelSpec] = {
    "mlp": MODELS["mlp"],
    "tiny_maxpool": ModelSpec(
        "tiny_maxpool",
        "generated:tiny_maxpool",
        {"kind": "tiny", "name": "tiny_maxpool"},
        "normal",
        "12 features → Linear(16), ReLU, MaxPool1d(4), Linear(2); random weights (seed 0), built by the benchmark",
    ),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        try:
            b, k = part.lower().split("x")
            out.append((int(b), int(k)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected BxK[,BxK...], e.g. 16x64,128x128; got {part!r}") from None
    return out


# --- preparation ---------------------------------------------------------------------------------------------


def onnx_path(spec: ModelSpec, workdir: Path) -> Path:
    if spec.onnx.startswith("light:"):
        return workdir / f"{spec.key}.onnx"
    if spec.onnx.startswith("generated:"):
        return workdir / f"{spec.key}.onnx"
    return REPO / spec.onnx


def prepare_model(spec: ModelSpec, workdir: Path) -> Path:
    """Materialise generated / folded models in the work directory; return the ONNX path."""
    path = onnx_path(spec, workdir)
    if path.exists():
        return path
    sys.path.insert(0, str(HERE))
    import _torch_models as T

    if spec.onnx.startswith("light:"):
        T.fold_light_model(LIGHT_DIR / f"light_{spec.onnx.split(':', 1)[1]}.onnx", path)
    elif spec.onnx.startswith("generated:"):
        T.export_tiny_maxpool(path)
    return path


def graph_facts(path: Path) -> tuple[list[tuple[str, list[int]]], bool]:
    """(graph inputs with their per-sample shape, whether the graph has max pooling)."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim][1:]
        inputs.append((value.name, dims))
    has_max = any(n.op_type in ("MaxPool", "GlobalMaxPool") for n in model.graph.node)
    return inputs, has_max


def make_data(spec: ModelSpec, path: Path, b: int, k: int, out: Path) -> None:
    """Samples and background for one configuration: the same arrays for every tool."""
    rng = np.random.default_rng([zlib.crc32(spec.key.encode()), b, k])
    inputs, _ = graph_facts(path)
    arrays: dict[str, np.ndarray] = {}
    if spec.data == "tokens":
        for prefix, n in (("x:", b), ("bg:", k)):
            arrays[prefix + "x"] = rng.integers(0, 100, (n, 16)).astype(np.int64)
        lengths = rng.integers(4, 17, b)  # as models/export_sequence.py: keep the first L positions
        arrays["x:mask"] = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int64)
    else:
        for name, dims in inputs:
            for prefix, n in (("x:", b), ("bg:", k)):
                shape = (n, *dims)
                value = rng.standard_normal(shape) if spec.data == "normal" else rng.random(shape)
                arrays[prefix + name] = value.astype(np.float32)
    np.savez(out, **arrays)


# --- running workers ---------------------------------------------------------------------------------------------


def spawn_worker(script: str, task: dict[str, Any], workdir: Path, timeout: float) -> tuple[dict[str, Any], str, float]:
    """Run `script --worker TASK.json` in a fresh process: (its result JSON or {}, status, wall seconds)."""
    task_path = workdir / f"task_{os.getpid()}_{time.monotonic_ns()}.json"
    result_path = task_path.with_suffix(".result.json")
    task_path.write_text(json.dumps({**task, "result": str(result_path)}))
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    status = "ok"
    try:
        proc = subprocess.run(
            [sys.executable, script, "--worker", str(task_path)],
            stdout=sys.stderr,
            stderr=sys.stderr,
            timeout=timeout,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            status = f"worker exited with code {proc.returncode}"
    except subprocess.TimeoutExpired:
        status = f"timeout after {timeout:.0f} s"
    result: dict[str, Any] = json.loads(result_path.read_text()) if result_path.exists() else {}
    return result, status, time.perf_counter() - t0


def run_worker(task: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    result, status, wall = spawn_worker(str(Path(__file__).resolve()), task, workdir, timeout)
    result.setdefault("modes", {})
    for mode in task.get("modes", []):
        if mode not in result["modes"]:
            result["modes"][mode] = {"error": status if status != "ok" else "no result"}
    result["wall_s"] = wall
    result["status"] = status
    return result


def report_meta(script: str, argv: list[str], started: float, load_start: list[float], **extra: Any) -> dict[str, Any]:
    """The header facts of a generated report: date, command, machine, load at the start and end, run time."""
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", script, *argv]),
        "machine": machine(),
        **extra,
        "load_start": load_start,
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "duration_s": time.time() - started,
    }


def estimate(
    history: dict[tuple[str, str, str], tuple[int, float]], key: tuple[str, str, str], pairs: int
) -> float | None:
    """Seconds per call at `pairs` B×K pairs, scaled linearly from the last measured configuration."""
    if key not in history:
        return None
    prev_pairs, seconds = history[key]
    return seconds * pairs / prev_pairs


STICKY_PREFIXES = ("unsupported:", "skipped:")


def benchmark(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    history: dict[tuple[str, str, str], tuple[int, float]] = {}
    sticky: dict[tuple[str, str, str], str] = {}
    for key in args.models:
        spec = MODELS[key]
        path = prepare_model(spec, workdir)
        _, has_max = graph_facts(path)
        configs = args.configs_for(spec)
        modes = ["one"] if spec.light else ["one", "all"]
        for b, k in configs:
            data = workdir / f"{key}_{b}x{k}.npz"
            make_data(spec, path, b, k, data)
            for tool in args.tools:
                if tool == "onnxshap_cross_max" and (not has_max or spec.light):
                    continue  # the exact-vs-cross_max comparison is made on the zoo CNNs
                tool_modes = ["forward"] if tool.endswith("_forward") else modes
                record: dict[str, Any] = {"model": key, "B": b, "K": k, "tool": tool, "modes": {}}
                todo = []
                for mode in tool_modes:
                    hist_key = (key, tool, mode)
                    if hist_key in sticky:
                        record["modes"][mode] = {"error": sticky[hist_key]}
                        continue
                    if tool == "shap" and spec.shap_skip:
                        record["modes"][mode] = {"error": spec.shap_skip}
                        continue
                    guess = estimate(history, hist_key, b * k)
                    if guess is not None and guess > args.timeout * args.skip_fraction:
                        prev = history[hist_key]
                        record["modes"][mode] = {
                            "error": f"skipped: estimated {guess:.0f} s per call (scaled from {prev[1]:.1f} s at "
                            f"{prev[0]} pairs) exceeds the time budget"
                        }
                        continue
                    todo.append(mode)
                if todo:
                    log(f"[{time.strftime('%H:%M:%S')}] {key} B={b} K={k} {tool} {todo}")
                    task = {
                        "tool": tool,
                        "onnx": str(path),
                        "data": str(data),
                        "modes": todo,
                        "torch": spec.torch,
                        "explain_input": spec.explain_input,
                        "check": spec.check,
                        "threads": args.threads,
                        "max_reps": args.reps,
                        "rep_budget_s": args.rep_budget,
                        "captum_pairs": args.captum_pairs,
                    }
                    result = run_worker(task, workdir, args.timeout)
                    record["modes"].update(result.pop("modes"))
                    record.update(result)
                    for mode in todo:
                        entry = record["modes"][mode]
                        if "median_s" in entry:
                            history[(key, tool, mode)] = (b * k, entry["median_s"])
                            log(f"    {mode}: median {entry['median_s']:.4g} s (first {entry['first_s']:.4g} s)")
                        else:
                            log(f"    {mode}: {entry['error']}")
                            if entry["error"].startswith(STICKY_PREFIXES):
                                sticky[(key, tool, mode)] = entry["error"]
                            elif entry["error"].startswith("timeout"):
                                history[(key, tool, mode)] = (b * k, args.timeout)
                runs.append(record)
    return runs


def accuracy(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    out = []
    b, k = ACCURACY_CONFIG
    for key, spec in ACCURACY_MODELS.items():
        path = prepare_model(spec, workdir)
        _, has_max = graph_facts(path)
        data = workdir / f"acc_{key}_{b}x{k}.npz"
        make_data(spec, path, b, k, data)
        log(f"[{time.strftime('%H:%M:%S')}] accuracy {key} B={b} K={k}")
        task = {
            "tool": "accuracy",
            "onnx": str(path),
            "data": str(data),
            "torch": spec.torch,
            "threads": args.threads,
            "has_maxpool": has_max,
        }
        result = run_worker(task, workdir, args.timeout)
        result.pop("modes", None)
        out.append({"model": key, "description": spec.description, "B": b, "K": k, **result})
    return out


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[tuple[str, int, int, str], dict[str, Any]] = {}
    for r in runs:
        for mode, entry in r["modes"].items():
            by.setdefault((r["model"], r["B"], r["K"], mode), {})[r["tool"]] = entry
    rows = []
    for (model, b, k, mode), tools in by.items():
        if mode == "forward":
            continue
        fwd = by.get((model, b, k, "forward"), {})

        def median(entry: dict[str, Any] | None) -> float | None:
            return entry.get("median_s") if entry else None

        ours = median(tools.get("onnxshap"))
        row: dict[str, Any] = {"model": model, "B": b, "K": k, "mode": mode, "onnxshap_s": ours}
        for tool, entry in (
            ("shap", tools.get("shap")),
            ("captum", tools.get("captum")),
            ("ort_forward", fwd.get("ort_forward")),
            ("own_forward", fwd.get("own_forward")),
            ("onnxshap_cross_max", tools.get("onnxshap_cross_max")),
        ):
            theirs = median(entry)
            row[f"{tool}_s"] = theirs
            row[f"onnxshap_over_{tool}"] = ours / theirs if ours and theirs else None
        rows.append(row)
    return rows


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result set from several runs (e.g. a long run split in two); meta from the first run."""
    meta = dict(parts[0]["meta"])
    meta["command"] = " ; ".join(p["meta"]["command"] for p in parts)
    meta["duration_s"] = sum(p["meta"]["duration_s"] for p in parts)
    meta["load_end"] = parts[-1]["meta"]["load_end"]
    runs = [r for p in parts for r in p["runs"]]
    return {"meta": meta, "runs": runs, "ratios": ratios(runs), "accuracy": [a for p in parts for a in p["accuracy"]]}


# --- description of the machine ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for package in (
        "onnxshap",
        "jax",
        "jaxlib",
        "onnxruntime",
        "onnx",
        "numpy",
        "torch",
        "shap",
        "captum",
        "onnx2torch",
    ):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "", False
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git": commit + (" (modified)" if dirty else ""),
    }


# --- the markdown report ---------------------------------------------------------------------------------------------


def fmt_s(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def fmt_x(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}×"


def cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "—"
    if "median_s" in entry:
        return fmt_s(entry["median_s"])
    return "n/a†"


#: The speed targets the report checks: the pass against our own forward of the B×K rows, the exact
#: max rule against cross_max, and onnxshap against the faster of shap and Captum.
FLOOR_TARGET = 1.5
MAX_RULE_TARGET = 1.3
PEER_TARGET = 10.0
PEER_MODELS = ("cnn_digits", "cnn_cifar", "resblock", "lstm", "gru")
PEER_CONFIGS = ((16, 64), (128, 128))


def targets_section(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: each speed target, met or missed, per model and configuration, with the margin."""

    def verdict(value: float | None, limit: float, at_most: bool) -> str:
        if value is None:
            return "not measured"
        short = value / limit if at_most else limit / value  # > 1 when missed
        return "met" if short <= 1 else f"missed by {short:.2f}×"

    lines = [
        "",
        "## Targets",
        "",
        f"- **Floor:** explaining one output costs ≤ {FLOOR_TARGET}× our own jitted forward of the same B×K rows.",
        f"- **Max rule:** the exact max rule costs ≤ {MAX_RULE_TARGET}× `cross_max`.",
        (
            f"- **Peers:** ≥ {PEER_TARGET:g}× faster than the faster of shap and Captum on {', '.join(PEER_MODELS)} "
            "at 16×64 and 128×128, one output and all outputs."
        ),
        "",
        "Why each missed target is missed: [the profiles](benchmarks-profile.md) (`benchmarks/profile.py`).",
        "",
        "| model | B×K | outputs | ÷ own fwd | floor | exact ÷ cross_max | max rule | peer ÷ onnxshap | peers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = r.get("onnxshap_over_own_forward") if r["mode"] == "one" else None
        cross = r.get("onnxshap_over_onnxshap_cross_max")
        peer_times = [t for t in (r.get("shap_s"), r.get("captum_s")) if t]
        ours = r.get("onnxshap_s")
        peer = min(peer_times) / ours if peer_times and ours else None
        in_peer_target = r["model"] in PEER_MODELS and (r["B"], r["K"]) in PEER_CONFIGS
        lines.append(
            f"| {r['model']} | {r['B']}×{r['K']} | {r['mode']} | {fmt_x(floor)} | "
            f"{verdict(floor, FLOOR_TARGET, True) if r['mode'] == 'one' else '—'} | {fmt_x(cross)} | "
            f"{verdict(cross, MAX_RULE_TARGET, True) if r.get('onnxshap_cross_max_s') else '—'} | {fmt_x(peer)} | "
            f"{verdict(peer, PEER_TARGET, False) if in_peer_target else '—'} |"
        )
    return lines


def table_head(intro: str, columns: list[str]) -> list[str]:
    """Markdown: a sentence introducing a table, then the table's header and rule rows."""
    return [intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def companion_section() -> list[str]:
    """Markdown: the headline rows of the other benchmark scripts, read from their last results file
    (benchmarks/trees_results.json, benchmarks/dataset_results.json); each links its own report."""
    lines = ["", "## Trees and datasets", ""]
    trees = HERE / "trees_results.json"
    if trees.exists():
        data = json.loads(trees.read_text())
        lines += table_head(
            f"Tree ensembles against shap's TreeExplainer (interventional, same background), from "
            f"[benchmarks-trees.md](benchmarks-trees.md) ({data['meta'].get('date', '?')}, load "
            f"{data['meta'].get('load_start', '?')} at its start):",
            ["model", "trees", "B×K", "onnxshap", "shap", "onnxshap ÷ shap", "max \\|Δ\\| / max \\|φ\\|"],
        )
        for r in data["rows"]:
            ours, theirs = r.get("onnxshap", {}).get("median_s"), r.get("shap", {}).get("median_s")
            diff = f"{r['difference']:.2g}" if "difference" in r else "—"
            lines.append(
                f"| {r['description']} | {r['trees']} | {r['B']}×{r['K']} | {fmt_s(ours)} | {fmt_s(theirs)} | "
                f"{fmt_x(r.get('ratio'))} | {diff} |"
            )
        lines.append("")
    dataset = HERE / "dataset_results.json"
    if dataset.exists():
        data = json.loads(dataset.read_text())
        lines += table_head(
            f"`explain_dataset` rows/s, from [benchmarks-dataset.md](benchmarks-dataset.md) "
            f"({data['meta'].get('date', '?')}); overhead = wall time ÷ one process explaining the rows in memory:",
            ["model", "rows", "configuration", "rows/s", "overhead", "peak RSS per worker"],
        )
        single = {r["model"]: r["seconds"] for r in data["results"] if r.get("mode") == "single" and "seconds" in r}
        for r in data["results"]:
            if "seconds" not in r:
                continue
            what = {"single": "one process", "local": "local engine"}.get(r["mode"], f"ray, {r['workers']} worker(s)")
            peaks = ", ".join(f"{m:.0f} MiB" for m in r.get("worker_peak_mib", []))
            overhead = r["seconds"] / single[r["model"]] if r["model"] in single else None
            lines.append(
                f"| {r['model']} | {r['rows']} | {what} | {r['rows'] / r['seconds']:.0f} | {fmt_x(overhead)} | {peaks} |"
            )
    return lines


def write_doc(results: dict[str, Any], path: Path) -> None:
    meta, runs = results["meta"], results["runs"]
    index = {(r["model"], r["B"], r["K"], r["tool"]): r for r in runs}
    lines = [
        "# Benchmarks",
        "",
        (
            "Generated by `benchmarks/run.py` (see `benchmarks/README.md` for the environment). "
            "Do not edit by hand: re-run the script."
        ),
        "",
    ]
    if meta.get("label"):
        lines += [f"> **{meta['label']}**", ""]
    m = meta["machine"]
    v = m["versions"]
    lines += [
        f"- Date: {meta['date']}; wall time {meta['duration_s'] / 60:.1f} min; git {m['git'] or '?'}.",
        f"- Command: `{meta['command']}`",
        (
            f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, {m['os']}, Python {m['python']}; "
            f"load average {meta['load_start']} at the start, {meta['load_end']} at the end."
        ),
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        f"- Threads: torch and onnxruntime {meta['settings']['threads']}; JAX/XLA its default (all cores).",
        "",
        "## Method",
        "",
        (
            "- Same data for every tool: B samples and K background rows per model and configuration (fixed seed; "
            "standard normal or uniform [0, 1) inputs as in models/manifest.json; token ids plus padding mask for "
            "the transformer)."
        ),
        (
            f"- Each tool, model and configuration runs in a fresh subprocess. The first call is the warm-up; the time "
            f"is the median of up to {meta['settings']['reps']} further calls (fewer once they exceed "
            f"{meta['settings']['rep_budget_s']} s). *Compile* = first call − median (onnxshap: JAX tracing + XLA "
            "compilation; for the others the first-call overhead). Constructing the explainer is not timed."
        ),
        (
            "- *One output*: output 0 (onnxshap `output=0`, Captum `target=0`, shap through a wrapper module that "
            "returns column 0). *All outputs*: every output of the model (onnxshap `output=None`, shap's default, "
            "Captum one `attribute` call per target)."
        ),
        (
            "- Peak RSS is the worker's `ru_maxrss` after the mode finished; one process measures one-output first, "
            "then all-outputs, so the all-outputs figure is the high-water mark of both (all ≥ one in practice). "
            "It includes the imports (jax ≈ 0.2 GB, torch + shap ≈ 0.45 GB)."
        ),
        (
            f"- Captum is called on chunks of samples holding at most {meta['settings']['captum_pairs']} "
            "(sample, reference) pairs, since DeepLiftShap materialises every pair at once; shap's DeepExplainer "
            "loops over samples itself; onnxshap chunks the background by its own memory budget."
        ),
        (
            "- The forward references evaluate the B×K tiled sample rows once: onnxruntime's `InferenceSession.run` "
            "and `onnxshap.load(model).run` (JAX). The algorithmic bar for onnxshap is one-output attribution "
            "≤ 2.5 × own forward."
        ),
        (
            "- The PyTorch twins (for shap and Captum) are the export scripts' module classes loaded with the "
            "TorchScript export's initializers (`load_state_dict(strict=True)`); light zoo graphs go through "
            "onnx2torch. Each twin is compared with onnxruntime before timing (max |Δ| column)."
        ),
        (
            f"- A worker is killed after {meta['settings']['timeout_s']:.0f} s; a run whose per-call time, scaled "
            "linearly in B×K from the same tool's previous configuration, would exceed "
            f"{meta['settings'].get('skip_fraction', 0.3)} of that is skipped and marked (†)."
        ),
        (
            "- Light ResNet-50 / VGG-19 (224×224, from the onnx wheel): only the light configurations and one "
            "explained output (all 1000 outputs would be 1000 backward passes); their weights are constant fills, so "
            'activations reach ~1e6 and the softmax is flat: onnxshap runs with `check="off"` there (float32 '
            "cancellation alone exceeds the 1e-4 completeness tolerance) and the residual column shows the result."
        ),
        (
            "- *Residual*: max over samples and outputs of |Σφ − (f(x) − E f(background))| / mean |f(x) − E f(bg)|: "
            "how far each tool's attributions are from summing to the prediction."
        ),
        "",
        "## Speed",
        "",
        "Median seconds per call. Ratios are time(onnxshap) / time(other): below 1 means onnxshap is faster.",
        "",
        "| model | B×K | outputs | onnxshap | shap | Captum | ORT fwd | own fwd | ÷shap | ÷Captum | ÷ORT fwd | ÷own fwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    footnotes: list[str] = []

    def note(entry: dict[str, Any] | None, what: str) -> None:
        if entry is not None and "median_s" not in entry:
            footnotes.append(f"{what}: {entry.get('error', '?')}")

    for row in results["ratios"]:
        key = (row["model"], row["B"], row["K"])
        entries = {t: (index.get((*key, t)) or {}).get("modes", {}) for t in TOOLS}
        ours = entries["onnxshap"].get(row["mode"])
        shap_e = entries["shap"].get(row["mode"])
        captum_e = entries["captum"].get(row["mode"])
        ort_e = entries["ort_forward"].get("forward")
        own_e = entries["own_forward"].get("forward")
        where = f"{row['model']} {row['B']}×{row['K']} {row['mode']}"
        for tool, e in (("onnxshap", ours), ("shap", shap_e), ("Captum", captum_e)):
            note(e, f"{where}, {tool}")
        if row["mode"] == "one":
            note(ort_e, f"{where}, ORT forward")
            note(own_e, f"{where}, own forward")
        lines.append(
            f"| {row['model']} | {row['B']}×{row['K']} | {row['mode']} | {cell(ours)} | {cell(shap_e)} | "
            f"{cell(captum_e)} | {cell(ort_e)} | {cell(own_e)} | {fmt_x(row['onnxshap_over_shap'])} | "
            f"{fmt_x(row['onnxshap_over_captum'])} | {fmt_x(row['onnxshap_over_ort_forward'])} | "
            f"{fmt_x(row['onnxshap_over_own_forward'])} |"
        )
    if footnotes:
        lines += ["", "† Not measured:", ""] + [f"- {f}" for f in dict.fromkeys(footnotes)]

    cross = [r for r in results["ratios"] if r.get("onnxshap_cross_max_s") is not None]
    if cross:
        lines += [
            "",
            "### Max pooling rule",
            "",
            'onnxshap\'s exact Shapley rule for MaxPool against the shap-compatible `rules={"MaxPool": "cross_max"}`.',
            "",
            "| model | B×K | outputs | onnxshap (exact max) | onnxshap (cross_max) | exact ÷ cross_max |",
            "|---|---|---|---|---|---|",
        ]
        for r in cross:
            lines.append(
                f"| {r['model']} | {r['B']}×{r['K']} | {r['mode']} | {fmt_s(r['onnxshap_s'])} | "
                f"{fmt_s(r['onnxshap_cross_max_s'])} | {fmt_x(r['onnxshap_over_onnxshap_cross_max'])} |"
            )

    lines += targets_section(results["ratios"])
    lines += companion_section()

    lines += [
        "",
        "## Compile time, peak memory, completeness",
        "",
        "| model | B×K | outputs | tool | first call | compile | peak RSS | residual | max |Δ| twin vs ONNX |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for mode, e in r["modes"].items():
            if "median_s" not in e:
                continue
            resid = e.get("residual")
            diff = r.get("max_abs_diff_vs_onnx")
            flat = MODELS[r["model"]].light if r["model"] in MODELS else False
            resid_text = "flat‡" if flat and resid is not None else ("—" if resid is None else f"{resid:.2g}")
            lines.append(
                f"| {r['model']} | {r['B']}×{r['K']} | {mode} | {TOOL_LABELS[r['tool']]} | {fmt_s(e['first_s'])} | "
                f"{fmt_s(e.get('compile_s'))} | {e['rss_peak_mb']:.0f} MB | "
                f"{resid_text} | {'—' if diff is None else f'{diff:.1g}'} |"
            )
    if any(MODELS.get(r["model"]) and MODELS[r["model"]].light for r in runs):
        lines += [
            "",
            (
                "‡ Light zoo graphs: f(x) − E f(background) is ~0 (constant weights, flat softmax), so the relative "
                "residual is not meaningful; see results.json for the raw value."
            ),
        ]
    warned = sorted({w for r in runs for e in r["modes"].values() for w in e.get("warnings", [])})
    if warned:
        lines += [
            "",
            "shap warned (these modules get plain gradients, not a DeepLIFT rule): "
            + "; ".join(f"`{w}`" for w in warned)
            + ".",
        ]

    if results.get("accuracy"):
        lines += [
            "",
            "## Accuracy against exact Shapley values",
            "",
            (
                "Exact interventional Shapley values of output 0, by enumerating all 2^d coalitions over the "
                "background (v(S) = mean_k f(x_S, r_k,rest)). Error = mean |φ_tool − φ_exact| / mean |φ_exact| "
                "(and the maximum, relative to the same scale). DeepSHAP is not the exact Shapley value of a deep "
                "network, so no tool reaches 0; the comparison shows how far each one is."
            ),
            "",
            "| model | d | B×K | tool | mean error | max error |",
            "|---|---|---|---|---|---|",
        ]
        for a in results["accuracy"]:
            if "tools" not in a:
                lines.append(f"| {a['model']} | — | {a['B']}×{a['K']} | — | {a.get('fatal', a.get('status'))} | |")
                continue
            for tool, t in a["tools"].items():
                if "error" in t:
                    lines.append(
                        f"| {a['model']} | {a['features']} | {a['B']}×{a['K']} | {TOOL_LABELS.get(tool, tool)} | "
                        f"error: {t['error']} | |"
                    )
                else:
                    lines.append(
                        f"| {a['model']} | {a['features']} | {a['B']}×{a['K']} | {TOOL_LABELS.get(tool, tool)} | "
                        f"{t['mae_rel']:.3g} | {t['max_abs_err_rel']:.3g} |"
                    )
        lines += [""] + [f"- {a['model']}: {a['description']}." for a in results["accuracy"]]

    lines += ["", "## Models", ""] + [
        f"- **{k}**: {MODELS[k].description}." for k in dict.fromkeys(r["model"] for r in runs)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# --- command line --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of: {', '.join(MODELS)} (default: all)"
    )
    p.add_argument(
        "--configs",
        type=parse_configs,
        default=None,
        help="BxK list for the zoo models, e.g. 16x64,128x128 (default: 16x64,128x128,32x1000)",
    )
    p.add_argument(
        "--light-configs",
        type=parse_configs,
        default=None,
        help="BxK list for the light ResNet-50 / VGG-19 (default: 1x4; one explained output only)",
    )
    p.add_argument("--quick", action="store_true", help="one small configuration (4x8; light models 1x2), 2 reps")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of: {', '.join(TOOLS)}")
    p.add_argument("--no-accuracy", action="store_true", help="skip the exact-Shapley accuracy table")
    p.add_argument(
        "--out", type=Path, default=HERE / "results.json", help="results JSON (default: benchmarks/results.json)"
    )
    p.add_argument(
        "--doc",
        type=Path,
        default=REPO / "docs" / "benchmarks.md",
        help="markdown report (default: docs/benchmarks.md); 'none' to skip",
    )
    p.add_argument("--label", default="", help="a line shown at the top of the report, e.g. 'DRAFT run'")
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="only rewrite --doc (and --out, when several files are merged) from existing results JSON files",
    )
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per worker process (default 240)")
    p.add_argument(
        "--skip-fraction",
        type=float,
        default=0.3,
        help="skip a run whose estimated per-call time exceeds this fraction of --timeout (default 0.3)",
    )
    p.add_argument("--reps", type=int, default=5, help="timed calls after the warm-up (default 5)")
    p.add_argument("--rep-budget", type=float, default=10.0, help="stop repeating once the calls took this long (s)")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch / onnxruntime threads (default: all cores)"
    )
    p.add_argument("--captum-pairs", type=int, default=4096, help="max (sample, reference) pairs per Captum call")
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep generated data and models here (default: a temp dir)"
    )
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in args.tools if t not in TOOLS]
    if bad:
        p.error(f"unknown tool(s) {bad}; choose from {TOOLS}")
    if args.quick:
        args.reps = min(args.reps, 2)
        args.rep_budget = min(args.rep_budget, 3.0)

    def configs_for(spec: ModelSpec) -> list[tuple[int, int]]:
        chosen = args.light_configs if spec.light else args.configs
        if chosen is not None:
            return chosen
        if args.quick:
            return QUICK_LIGHT_CONFIGS if spec.light else QUICK_CONFIGS
        return LIGHT_CONFIGS if spec.light else DEFAULT_CONFIGS

    args.configs_for = configs_for
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        sys.path.insert(0, str(HERE))
        import _workers

        return _workers.main(argv[1])
    args = parse_args(argv)
    if args.from_json is not None:
        parts = [json.loads(p.read_text()) for p in args.from_json]
        results = parts[0] if len(parts) == 1 else merge(parts)
        if args.label:
            results["meta"]["label"] = args.label
        if len(parts) > 1:
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            log(f"wrote {args.out}")
        write_doc(results, args.doc)
        log(f"wrote {args.doc}")
        return 0
    started = time.time()
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="onnxshap-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        runs = benchmark(args, workdir)
        acc = [] if args.no_accuracy else accuracy(args, workdir)
    results = {
        "meta": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([sys.executable, "benchmarks/run.py", *argv]),
            "label": args.label,
            "machine": machine(),
            "settings": {
                "threads": args.threads,
                "reps": args.reps,
                "rep_budget_s": args.rep_budget,
                "timeout_s": args.timeout,
                "skip_fraction": args.skip_fraction,
                "captum_pairs": args.captum_pairs,
                "quick": args.quick,
            },
            "load_start": load_start,
            "load_end": [round(x, 2) for x in os.getloadavg()],
            "duration_s": time.time() - started,
        },
        "runs": runs,
        "ratios": ratios(runs),
        "accuracy": acc,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {args.out}")
    if str(args.doc) != "none":
        write_doc(results, args.doc)
        log(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
