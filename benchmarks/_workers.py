"""One benchmark measurement per process: `python benchmarks/run.py --worker TASK.json`.

A fresh process per (tool, model, configuration) makes `ru_maxrss` that tool's own high-water mark.
Modules are imported lazily so that an onnxruntime or onnxshap worker never loads torch. The result
is written to the task's "result" path after every mode, so a run killed by the parent's time limit
still reports what it finished.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Task = dict[str, Any]


def rss_mb() -> float:
    """High-water resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def progress(message: str) -> None:
    print(f"    [{os.getpid()}] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any], max_reps: int, budget_s: float) -> tuple[float, list[float], Any]:
    """(first call seconds, later calls' seconds, first call's result).

    The first call is the warm-up (it includes compilation where there is one); then up to `max_reps`
    calls, stopping early once they have taken `budget_s` in total (at least one).
    """
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < max_reps and (not times or sum(times) < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, times, result


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:400]


def load_data(task: Task) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(task["data"]) as f:
        x = {k[2:]: f[k] for k in f.files if k.startswith("x:")}
        bg = {k[3:]: f[k] for k in f.files if k.startswith("bg:")}
    return x, bg


def relative_residual(phi: np.ndarray, fx: np.ndarray, base: np.ndarray) -> float:
    """max |sum(phi) - (f(x) - base)| / mean |f(x) - base|; phi (B, ..., n_sel), fx and base (B, n_sel)."""
    total = phi.reshape(phi.shape[0], -1, phi.shape[-1]).sum(axis=1)
    gap = fx - base
    scale = max(float(np.mean(np.abs(gap))), 1e-12)
    return float(np.max(np.abs(total - gap)) / scale)


# --- forward passes ---------------------------------------------------------------------------------


def tiled(x: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Each sample repeated k times: the B*K rows a pair-wise pass evaluates."""
    return {name: np.repeat(v, k, axis=0) for name, v in x.items()}


def ort_session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_forward(task: Task, result: dict[str, Any], save: Callable[[], None]) -> None:
    x, bg = load_data(task)
    k = next(iter(bg.values())).shape[0]
    feeds = tiled(x, k)
    rows = next(iter(feeds.values())).shape[0]
    if task["tool"] == "ort_forward":
        session = ort_session(task["onnx"], task["threads"])
        fn: Callable[[], Any] = lambda: session.run(None, feeds)
    else:
        import onnxshap

        model = onnxshap.load(task["onnx"])
        fn = lambda: model.run(feeds)
    result["rss_base_mb"] = rss_mb()
    progress(f"{task['tool']} forward of {rows} rows")
    first, times, _ = timed(fn, task["max_reps"], task["rep_budget_s"])
    result["modes"]["forward"] = {
        "first_s": first,
        "median_s": statistics.median(times),
        "times_s": times,
        "rows": rows,
        "rss_peak_mb": rss_mb(),
    }
    save()


# --- onnxshap -------------------------------------------------------------------------------------------


def run_onnxshap(task: Task, result: dict[str, Any], save: Callable[[], None]) -> None:
    import onnxshap

    x, bg = load_data(task)
    try:
        model = onnxshap.load(task["onnx"])
        rules = {"MaxPool": "cross_max"} if task["tool"] == "onnxshap_cross_max" else None
        background: Any = bg if len(bg) > 1 else next(iter(bg.values()))
        explainer = onnxshap.Explainer(
            model, background, inputs=task.get("explain_input"), rules=rules, check=task.get("check", "raise")
        )
    except onnxshap.OnnxShapError as exc:
        for mode in task["modes"]:
            result["modes"][mode] = {"error": "unsupported: " + error_text(exc)}
        save()
        return
    samples: Any = x if len(x) > 1 else next(iter(x.values()))
    result["rss_base_mb"] = rss_mb()
    for mode in task["modes"]:
        output = 0 if mode == "one" else None
        progress(f"onnxshap explain output={output}")
        try:
            first, times, e = timed(
                lambda output=output: explainer.explain(samples, output=output), task["max_reps"], task["rep_budget_s"]
            )
        except Exception as exc:  # noqa: BLE001 - an unsupported op or a failing rule: recorded, never fatal
            prefix = "unsupported: " if isinstance(exc, onnxshap.OnnxShapError) else "error: "
            result["modes"][mode] = {"error": prefix + error_text(exc)}
            save()
            continue
        values = e.values if not isinstance(e.values, dict) else next(iter(e.values.values()))
        median = statistics.median(times)
        result["modes"][mode] = {
            "first_s": first,
            "median_s": median,
            "compile_s": max(first - median, 0.0),
            "times_s": times,
            "rss_peak_mb": rss_mb(),
            "n_outputs": int(values.shape[-1]),
            "residual": relative_residual(values, e.prediction, e.base_values),
            "onnxshap_max_relative_residual": e.max_relative_residual,
        }
        save()


# --- shap and Captum (PyTorch) -----------------------------------------------------------------------


def torch_twin(task: Task) -> tuple[Any, Any, dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """(module to explain, full module, sample feeds, background feeds, max |torch - onnxruntime|).

    For the transformer the explained module starts at the token embeddings and the returned feeds
    hold the embeddings ("embedded") next to the held mask.
    """
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _torch_models as T

    T.torch_threads(task["threads"])
    spec = task["torch"]
    if spec["kind"] == "zoo":
        full = T.zoo_module(spec["name"])
    elif spec["kind"] == "light":
        full = T.light_module(task["onnx"])
    else:
        full = T.tiny_maxpool()
    x, bg = load_data(task)
    session = ort_session(task["onnx"], task["threads"])
    with torch.no_grad():
        ours = full(*[torch.from_numpy(v) for v in x.values()]).numpy()
    reference = session.run(None, x)[0]
    diff = float(np.max(np.abs(ours - reference)))
    if diff > 1e-4 * max(1.0, float(np.max(np.abs(reference)))):
        raise RuntimeError(f"the PyTorch twin differs from the ONNX model by {diff:.3g}; refusing to time it")
    if spec["name"] == "seq_transformer_ts":
        with torch.no_grad():
            embed = lambda ids: full.tok(torch.from_numpy(ids)).numpy()
            x = {"embedded": embed(x["x"]), "mask": x["mask"]}
            bg = {"embedded": embed(bg["x"])}
        return T.FromEmbedding(full).eval(), full, x, bg, diff
    return full, full, x, bg, diff


def n_outputs_of(module: Any, x: dict[str, np.ndarray]) -> int:
    import torch

    with torch.no_grad():
        return int(module(*[torch.from_numpy(v[:1]) for v in x.values()]).shape[1])


def reference_outputs(
    module: Any, x: dict[str, np.ndarray], bg: dict[str, np.ndarray], columns: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """f(x) (B, n_sel) and base (B, n_sel) for the residual; held inputs take each sample's value."""
    import torch

    held = [k for k in x if k not in bg]
    with torch.no_grad():
        fx = module(*[torch.from_numpy(v) for v in x.values()]).numpy()[:, columns]
        if not held:
            base = module(*[torch.from_numpy(v) for v in bg.values()]).numpy()[:, columns].mean(axis=0)
            return fx, np.broadcast_to(base, fx.shape)
        k = next(iter(bg.values())).shape[0]
        rows = []
        for b in range(fx.shape[0]):
            args = [torch.from_numpy(bg[n] if n in bg else np.repeat(x[n][b : b + 1], k, axis=0)) for n in x]
            rows.append(module(*args).numpy()[:, columns].mean(axis=0))
        return fx, np.stack(rows)


def run_torch_tool(task: Task, result: dict[str, Any], save: Callable[[], None]) -> None:
    import torch

    try:
        module, _, x, bg, diff = torch_twin(task)
    except Exception as exc:  # noqa: BLE001 - a benchmark records each failure and goes on
        for mode in task["modes"]:
            result["modes"][mode] = {"error": "skipped: no PyTorch twin: " + error_text(exc)}
        save()
        return
    result["max_abs_diff_vs_onnx"] = diff
    held = [k for k in x if k not in bg]
    n_out = n_outputs_of(module, x)
    xt = {k: torch.from_numpy(v) for k, v in x.items()}
    bgt = {k: torch.from_numpy(v) for k, v in bg.items()}
    result["rss_base_mb"] = rss_mb()
    for mode in task["modes"]:
        columns = [0] if mode == "one" else list(range(n_out))
        if task["tool"] == "shap":
            if held:
                result["modes"][mode] = {
                    "error": "skipped: shap's DeepExplainer replaces every model input by the background, so it "
                    "cannot hold the padding mask at each sample's value"
                }
                save()
                continue
            fn = shap_call(module, xt, bgt, columns, select=mode == "one")
        else:
            fn = captum_call(module, xt, bgt, columns, task["captum_pairs"])
        progress(f"{task['tool']} explain {len(columns)} output(s)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                first, times, phi = timed(fn, task["max_reps"], task["rep_budget_s"])
            except Exception as exc:  # noqa: BLE001 - a benchmark records each failure and goes on
                result["modes"][mode] = {"error": "error: " + error_text(exc)}
                save()
                continue
        messages = sorted({str(w.message) for w in caught if "unrecognized nn.Module" in str(w.message)})
        fx, base = reference_outputs(module, x, bg, columns)
        median = statistics.median(times)
        result["modes"][mode] = {
            "first_s": first,
            "median_s": median,
            "compile_s": max(first - median, 0.0),
            "times_s": times,
            "rss_peak_mb": rss_mb(),
            "n_outputs": len(columns),
            "residual": relative_residual(phi, fx, base),
            "warnings": messages,
        }
        save()


def shap_call(
    module: Any, xt: dict[str, Any], bgt: dict[str, Any], columns: list[int], *, select: bool = True
) -> Callable[[], np.ndarray]:
    """shap.DeepExplainer on the chosen output columns -> phi (B, *input, n_sel).

    With select=False the module is explained as is (all its outputs, what a user explaining every
    output would write); otherwise a wrapper keeps `columns` only.
    """
    import shap

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _torch_models as T

    target = T.SelectOutputs(module, columns) if select else module
    explainer = shap.DeepExplainer(target, next(iter(bgt.values())))

    def call() -> np.ndarray:
        values = explainer.shap_values(next(iter(xt.values())), check_additivity=False)
        values = np.asarray(values)
        return values if values.ndim == next(iter(xt.values())).ndim + 1 else values[..., None]

    return call


def captum_call(
    module: Any, xt: dict[str, Any], bgt: dict[str, Any], columns: list[int], max_pairs: int
) -> Callable[[], np.ndarray]:
    """Captum DeepLiftShap, one target at a time, samples in chunks of max(1, max_pairs // K) so that
    one call holds at most ~max_pairs (sample, reference) pairs -> phi (B, *input, n_sel)."""
    from captum.attr import DeepLiftShap

    explainer = DeepLiftShap(module)
    name = next(iter(bgt))
    x, baselines = xt[name], bgt[name]
    held = [xt[k] for k in xt if k not in bgt]
    k = baselines.shape[0]
    step = max(1, max_pairs // k)

    def call() -> np.ndarray:
        per_target = []
        for target in columns:
            parts = []
            for start in range(0, x.shape[0], step):
                extra = tuple(h[start : start + step] for h in held) or None
                attr = explainer.attribute(
                    x[start : start + step], baselines=baselines, target=target, additional_forward_args=extra
                )
                parts.append(attr.detach().numpy())
            per_target.append(np.concatenate(parts))
        return np.stack(per_target, axis=-1)

    return call


# --- accuracy against exact Shapley values ------------------------------------------------------------------


def run_accuracy(task: Task, result: dict[str, Any], save: Callable[[], None]) -> None:
    """Exact interventional Shapley values of output 0 vs onnxshap (exact rules, cross_max) and shap/Captum."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _exact

    x, bg = load_data(task)
    ((name, xs),) = x.items()
    session = ort_session(task["onnx"], task["threads"])
    t0 = time.perf_counter()
    exact = _exact.exact_shapley(lambda rows: session.run(None, {name: rows.astype(np.float32)})[0], xs, bg[name], 0)
    result["exact_s"] = time.perf_counter() - t0
    result["features"] = int(xs.shape[1])
    scale = float(np.mean(np.abs(exact)))
    result["mean_abs_exact"] = scale
    fx = session.run(None, {name: xs})[0][:, 0]
    base = float(np.mean(session.run(None, {name: bg[name]})[0][:, 0]))
    result["exact_completeness_error"] = float(np.max(np.abs(exact.sum(axis=1) - (fx - base))))
    tools: dict[str, Callable[[], np.ndarray]] = {}

    import onnxshap

    model = onnxshap.load(task["onnx"])
    tools["onnxshap"] = lambda: onnxshap.Explainer(model, bg[name]).explain(xs, output=0).values[..., 0]
    if task.get("has_maxpool"):
        tools["onnxshap_cross_max"] = lambda: (
            onnxshap.Explainer(model, bg[name], rules={"MaxPool": "cross_max"}).explain(xs, output=0).values[..., 0]
        )
    try:
        module, _, tx, tbg, diff = torch_twin(task)
        result["max_abs_diff_vs_onnx"] = diff
        import torch

        xt = {k: torch.from_numpy(v) for k, v in tx.items()}
        bgt = {k: torch.from_numpy(v) for k, v in tbg.items()}
        tools["shap"] = lambda: shap_call(module, xt, bgt, [0])()[..., 0]
        tools["captum"] = lambda: captum_call(module, xt, bgt, [0], 1 << 16)()[..., 0]
    except Exception as exc:  # noqa: BLE001 - a benchmark records each failure and goes on
        result["torch_error"] = error_text(exc)
    result["tools"] = {}
    for tool, fn in tools.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                phi = np.asarray(fn(), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - a benchmark records each failure and goes on
            result["tools"][tool] = {"error": error_text(exc)}
            continue
        err = np.abs(phi - exact)
        result["tools"][tool] = {
            "mae_rel": float(np.mean(err) / scale),
            "max_abs_err_rel": float(np.max(err) / scale),
        }
        save()
    save()


# --- entry point -----------------------------------------------------------------------------------------------

RUNNERS = {
    "ort_forward": run_forward,
    "own_forward": run_forward,
    "onnxshap": run_onnxshap,
    "onnxshap_cross_max": run_onnxshap,
    "shap": run_torch_tool,
    "captum": run_torch_tool,
    "accuracy": run_accuracy,
}


def main(task_path: str) -> int:
    task: Task = json.loads(Path(task_path).read_text())
    result: dict[str, Any] = {"modes": {}, "pid": os.getpid()}
    out = Path(task["result"])

    def save() -> None:
        tmp = out.with_name(out.name + ".partial")
        tmp.write_text(json.dumps(result))
        tmp.replace(out)

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        RUNNERS[task["tool"]](task, result, save)
    except Exception as exc:  # noqa: BLE001 - a benchmark records each failure and goes on
        result["fatal"] = error_text(exc)
        traceback.print_exc()
    save()
    return 0
