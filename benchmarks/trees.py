"""Tree ensembles: onnxshap's exact TreeSHAP rule against shap's TreeExplainer (interventional).

Run by hand (not part of the test suite) from the repository root, in an environment with
scikit-learn, skl2onnx, shap and onnxshap's dependencies:

    python benchmarks/trees.py                     # writes docs/benchmarks-trees.md
    python benchmarks/trees.py --quick --doc /tmp/trees.md   # small sizes: a smoke test

Models (trained here on synthetic data with 20 features, exported with skl2onnx into a temporary
folder; not committed): a 500-tree GradientBoostingRegressor of depth 5 and a 100-tree
RandomForestRegressor of depth 8. Each tool explains the same 100 samples against the same 100
references: onnxshap with `Explainer(onnx_model, background).explain(x)`, shap with
`TreeExplainer(model, data=background, feature_perturbation="interventional").shap_values(x)`.
Every measurement runs in a fresh subprocess (`--worker TASK.json`, as benchmarks/run.py), so peak
RSS is that tool's own; the tools alternate over --rounds rounds so that a change in the machine's
load touches both. Progress goes to stderr.

A second table (skipped with --no-probability) explains small GradientBoostingClassifiers on their
probability output with onnxshap's default rule, with its "tree_exact" rule and with shap's
TreeExplainer (model_output="probability"), each against the exact interventional Shapley values by
brute force over the coalitions (onnxruntime as the game).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _workers as workers  # benchmarks/ is not a package: modules from beside this file
import run as bench

N_FEATURES = 20
#: key: (scikit-learn estimator, keyword arguments)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "gbr": ("GradientBoostingRegressor", {"n_estimators": 500, "max_depth": 5, "random_state": 0}),
    "rf": ("RandomForestRegressor", {"n_estimators": 100, "max_depth": 8, "random_state": 0, "n_jobs": 1}),
}
QUICK = {"gbr": {"n_estimators": 50}, "rf": {"n_estimators": 10}}
TOOLS = ("onnxshap", "shap")
VERSIONS = ("scikit-learn", "skl2onnx")  # beside run.machine()'s list


# --- preparation (parent process) --------------------------------------------------------------------------


def prepare(key: str, quick: bool, samples: int, references: int, workdir: Path) -> dict[str, Any]:
    """Train and export one model; write its pickle, ONNX file and data. Returns their facts."""
    import sklearn.ensemble
    from skl2onnx import to_onnx

    name, kwargs = MODELS[key]
    kwargs = {**kwargs, **(QUICK[key] if quick else {})}
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((2000, N_FEATURES)).astype(np.float32)
    y = (
        2 * x_train[:, 0]
        + np.sin(3 * x_train[:, 1])
        + x_train[:, 2] * x_train[:, 3]
        + 0.5 * np.maximum(x_train[:, 4], 0)
        + 0.1 * rng.standard_normal(len(x_train))
    )
    model = getattr(sklearn.ensemble, name)(**kwargs).fit(x_train, y)
    onx = to_onnx(model, x_train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    paths = {"onnx": workdir / f"{key}.onnx", "pickle": workdir / f"{key}.pkl", "data": workdir / f"{key}.npz"}
    paths["onnx"].write_bytes(onx.SerializeToString())
    paths["pickle"].write_bytes(pickle.dumps(model))
    np.savez(
        paths["data"],
        x=rng.standard_normal((samples, N_FEATURES)).astype(np.float32),
        bg=rng.standard_normal((references, N_FEATURES)).astype(np.float32),
    )
    estimators = np.asarray(model.estimators_).reshape(-1)
    leaves = [int(e.tree_.n_leaves) for e in estimators]
    return {
        "model": key,
        "description": name,
        "trees": len(estimators),
        "depth": max(int(e.tree_.max_depth) for e in estimators),
        "leaves": sum(leaves),
        "onnx_mb": paths["onnx"].stat().st_size / 2**20,
        "B": samples,
        "K": references,
        **{k: str(v) for k, v in paths.items()},
    }


def run_worker(task: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    """One measurement in a fresh process; the result dict (with "error" if the worker failed)."""
    result, status, _ = bench.spawn_worker(str(Path(__file__).resolve()), task, workdir, timeout)
    if status != "ok":
        result.setdefault("error", status)
    return result


# --- workers (fresh processes) -------------------------------------------------------------------------------


def worker(task_path: str) -> int:
    task = json.loads(Path(task_path).read_text())
    result: dict[str, Any] = {}
    with np.load(task["data"]) as data:
        x, bg = data["x"], data["bg"]
    if task["tool"] == "onnxshap":
        import onnx

        import onnxshap

        explainer = onnxshap.Explainer(onnx.load(task["onnx"]), bg)
        first, times, e = workers.timed(lambda: explainer.explain(x), task["reps"], task["budget_s"])
        phi = np.asarray(e.values)[..., 0]  # [B, C]: the regressor's one output
        fx, base = np.asarray(e.prediction)[:, 0], np.asarray(e.base_values)[:, 0]
    else:
        import shap

        model = pickle.loads(Path(task["pickle"]).read_bytes())
        explainer = shap.TreeExplainer(model, data=bg, feature_perturbation="interventional")
        first, times, phi = workers.timed(lambda: explainer.shap_values(x), task["reps"], task["budget_s"])
        fx = model.predict(x)
        base = np.full(len(x), float(np.asarray(explainer.expected_value).reshape(-1)[0]))
    median = statistics.median(times)
    values = Path(task["result"]).with_suffix(".npy")
    np.save(values, np.asarray(phi, np.float64))
    result.update(
        {
            "first_s": first,
            "median_s": median,
            "compile_s": max(first - median, 0.0),
            "times_s": times,
            "rss_peak_mb": workers.rss_mb(),
            "values": str(values),
            "residual": workers.relative_residual(np.asarray(phi, np.float64)[..., None], fx[:, None], base[:, None]),
        }
    )
    Path(task["result"]).write_text(json.dumps(result))
    return 0


# --- probability outputs: accuracy against brute force (parent process) --------------------------------------

#: key: (description, number of classes); small GradientBoostingClassifiers on PROB_FEATURES features.
PROB_MODELS = {
    "binary": ("GradientBoostingClassifier, 2 classes", 2),
    "3-class": ("GradientBoostingClassifier, 3 classes", 3),
}
PROB_FEATURES = 6
PROB_PAIRS = (10, 10)  # samples x references for the errors (brute force: 2^6 coalitions per pair)
PROB_TIMED = (100, 100)  # samples x references for the times


def probability_row(key: str, quick: bool) -> dict[str, Any]:
    """One small classifier explained on its probability output by onnxshap's default rule (TreeSHAP,
    then DeepSHAP's chain through the post transform), by its "tree_exact" rule, and by shap's
    TreeExplainer (model_output="probability", interventional); each against the exact interventional
    Shapley values (all 2^n coalitions per pair through onnxruntime, averaged over the references)."""
    import onnxruntime as ort
    import shap
    import sklearn.ensemble
    from shap.utils._exceptions import InvalidModelError  # not re-exported by shap
    from skl2onnx import to_onnx

    import onnxshap

    description, n_classes = PROB_MODELS[key]
    rng = np.random.default_rng(1)
    x_train = rng.standard_normal((1000, PROB_FEATURES)).astype(np.float32)
    score = x_train[:, 0] + np.sin(2 * x_train[:, 1]) + x_train[:, 2] * x_train[:, 3] + 0.3 * rng.standard_normal(1000)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]))
    n_trees = 10 if quick else 30
    model = sklearn.ensemble.GradientBoostingClassifier(n_estimators=n_trees, max_depth=3, random_state=0)
    model.fit(x_train, y)
    onx = to_onnx(model, x_train[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    out = "probabilities"
    b, k = PROB_PAIRS
    x = rng.standard_normal((b, PROB_FEATURES)).astype(np.float32)
    bg = rng.standard_normal((k, PROB_FEATURES)).astype(np.float32)
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    n = PROB_FEATURES
    masks = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    weights = np.zeros((n, 2**n))
    for i in range(n):
        without = np.flatnonzero(masks[:, i] == 0)
        size = masks[without].sum(axis=1)
        w = np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in size])
        weights[i, without | 1 << i] += w
        weights[i, without] -= w
    exact = np.zeros((b, n, n_classes))
    for i in range(b):
        for r in bg:
            z = np.where(masks == 1, x[i], r).astype(np.float32)
            exact[i] += weights @ session.run([out], {"X": z})[0].astype(np.float64) / k
    row: dict[str, Any] = {"model": key, "description": description, "trees": n_trees, "features": n}
    scale = np.abs(exact).max()
    for name, rules in (("chain", None), ("exact", {"TreeEnsembleClassifier": "tree_exact"})):
        explainer = onnxshap.Explainer(onx, bg, outputs=[out], rules=rules)
        values = np.asarray(explainer.explain(x).values, np.float64).reshape(exact.shape)
        row[f"{name}_error"] = float(np.abs(values - exact).max() / scale)
        tb, tk = PROB_TIMED
        xt = rng.standard_normal((tb, n)).astype(np.float32)
        timer = onnxshap.Explainer(onx, rng.standard_normal((tk, n)).astype(np.float32), outputs=[out], rules=rules)
        _, times, _ = workers.timed(lambda t=timer, v=xt: t.explain(v), 3, 30.0)
        row[f"{name}_s"] = statistics.median(times)
    try:
        explainer = shap.TreeExplainer(
            model, data=bg, feature_perturbation="interventional", model_output="probability"
        )
        theirs = np.asarray(explainer.shap_values(x), np.float64)
    except InvalidModelError as exc:  # multiclass GradientBoostingClassifier: shap says binary only
        row["shap_error"] = f"not supported by shap ({type(exc).__name__})"
        return row
    # shap gives the positive class of a binary model ([B, n]) or every class ([B, n, K]).
    ours_exact = exact[..., 1] if theirs.ndim == 2 else exact
    row["shap_error"] = float(np.abs(theirs - ours_exact).max() / np.abs(ours_exact).max())
    return row


# --- the report ----------------------------------------------------------------------------------------------


def summarise(facts: dict[str, Any], results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per tool: the median over rounds of each round's median, compile time, peak RSS; the values'
    difference (max |Δ| / max |φ_shap|) and each tool's completeness residual."""
    row: dict[str, Any] = {**facts}
    for tool in TOOLS:
        ok = [r for r in results[tool] if "error" not in r]
        if not ok:
            row[tool] = {"error": results[tool][0].get("error", "no result") if results[tool] else "not run"}
            continue
        row[tool] = {
            "median_s": statistics.median(r["median_s"] for r in ok),
            "rounds_s": [r["median_s"] for r in ok],
            "compile_s": statistics.median(r["compile_s"] for r in ok),
            "rss_peak_mb": max(r["rss_peak_mb"] for r in ok),
            "residual": max(r["residual"] for r in ok),
            "values": ok[0]["values"],
        }
    if all("median_s" in row[t] for t in TOOLS):
        ours, theirs = np.load(row["onnxshap"]["values"]), np.load(row["shap"]["values"])
        row["difference"] = float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))
        row["ratio"] = row["onnxshap"]["median_s"] / row["shap"]["median_s"]
    return row


def versions() -> str:
    found = []
    for package in VERSIONS:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def write_doc(
    rows: list[dict[str, Any]], meta: dict[str, Any], path: Path, probability: list[dict[str, Any]] | None = None
) -> None:
    m = meta["machine"]
    fmt_mb = lambda v: f"{v:.0f} MiB"
    fmt_error = lambda v: f"{v:.2g}" if isinstance(v, float) else str(v)
    lines = [
        "# Tree ensembles: onnxshap vs shap's TreeExplainer",
        "",
        "Generated by `benchmarks/trees.py`. Do not edit by hand: re-run the script.",
        "",
        f"- Date: {meta['date']}; wall time {meta['duration_s'] / 60:.1f} min; git {m['git'] or '?'}.",
        f"- Command: `{meta['command']}`",
        (
            f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, {m['os']}, "
            f"Python {m['python']}; load average {meta['load_start']} at the start, "
            f"{meta['load_end']} at the end."
        ),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + f"; {meta['versions']}.",
        "",
        "## Method",
        "",
        (
            "- Models trained here on 2000 rows of 20 standard-normal features (a smooth target with an "
            "interaction), exported with skl2onnx (ai.onnx.ml TreeEnsembleRegressor) into a temporary "
            "folder."
        ),
        (
            "- Both tools explain the same B samples against the same K references (B × K pairs): "
            "onnxshap `Explainer(onnx_model, background).explain(x)` (exact TreeSHAP per pair, "
            "docs/rules/tree.md; its completeness check included), shap "
            '`TreeExplainer(model, data=background, feature_perturbation="interventional")'
            ".shap_values(x)` on the scikit-learn model."
        ),
        (
            f"- Each tool runs in a fresh process per round, {meta['rounds']} rounds alternating the "
            f"tools: one warm-up call, then up to {meta['reps']} timed calls; *time* is the median over "
            "rounds of each round's median, *compile* onnxshap's first call minus its median (tracing "
            "and XLA compilation). onnxshap uses every core through XLA; shap's C++ explainer one."
        ),
        (
            "- *max |Δ| / max |φ|*: onnxshap's values against shap's; *completeness*: "
            "max |Σφ − (f(x) − E f(r))| / mean |f(x) − E f(r)| for each tool's own values and outputs; "
            "*peak RSS*: the worker's high-water mark (including its imports)."
        ),
        "",
        (
            "| model | trees | depth | leaves | B×K | onnxshap | compile | shap | onnxshap ÷ shap "
            "| max \\|Δ\\| / max \\|φ\\| | completeness onnxshap / shap | peak RSS onnxshap / shap |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o, s = r["onnxshap"], r["shap"]
        if "median_s" not in o or "median_s" not in s:
            lines.append(
                f"| {r['description']} | {r['trees']} | {r['depth']} | {r['leaves']} | {r['B']}×{r['K']} "
                f"| {o.get('error', '')} | | {s.get('error', '')} | | | | |"
            )
            continue
        lines.append(
            f"| {r['description']} | {r['trees']} | {r['depth']} | {r['leaves']} | {r['B']}×{r['K']} "
            f"| {bench.fmt_s(o['median_s'])} | {bench.fmt_s(o['compile_s'])} | {bench.fmt_s(s['median_s'])} "
            f"| {bench.fmt_x(r['ratio'])} | {r['difference']:.1e} | {o['residual']:.1e} / {s['residual']:.1e} "
            f"| {fmt_mb(o['rss_peak_mb'])} / {fmt_mb(s['rss_peak_mb'])} |"
        )
    lines += [
        "",
        "Per-round medians: "
        + "; ".join(
            f"{r['model']} "
            + ", ".join(f"{t} " + " / ".join(bench.fmt_s(v) for v in r[t].get("rounds_s", [])) for t in TOOLS)
            for r in rows
        )
        + ".",
    ]
    if probability:
        tb, tk = PROB_TIMED
        lines += [
            "",
            "## Probability outputs: error against the exact Shapley values",
            "",
            (
                f"Small GradientBoostingClassifiers (max_depth 3) on {PROB_FEATURES} standard-normal features, exported "
                "with skl2onnx (TreeEnsembleClassifier, LOGISTIC or SOFTMAX), explained on the probabilities of "
                f"{PROB_PAIRS[0]} samples against {PROB_PAIRS[1]} references. *error*: max |φ − φ_exact| / max "
                "|φ_exact|, φ_exact the interventional Shapley values by brute force (all coalitions per pair "
                "through onnxruntime, averaged over the references); shap on the classes it explains. *default*: "
                "onnxshap's default rule (TreeSHAP, then DeepSHAP's chain through the post transform); "
                '*tree_exact*: `rules={"TreeEnsembleClassifier": "tree_exact"}`; shap: `TreeExplainer(model, '
                'data=background, feature_perturbation="interventional", model_output="probability")`. Times: '
                f"one explain call of {tb}×{tk} pairs after a warm-up (median of 3), in the parent process."
            ),
            "",
            "| model | trees | features | error default | error tree_exact | error shap | time default | time tree_exact |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in probability:
            lines.append(
                f"| {r['description']} | {r['trees']} | {r['features']} | {r['chain_error']:.2g} "
                f"| {r['exact_error']:.1e} | {fmt_error(r['shap_error'])} | {bench.fmt_s(r['chain_s'])} "
                f"| {bench.fmt_s(r['exact_s'])} |"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(argv[1])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    p.add_argument("--samples", type=int, default=100, help="explained samples B (default 100)")
    p.add_argument("--references", type=int, default=100, help="background rows K (default 100)")
    p.add_argument("--rounds", type=int, default=2, help="fresh-process rounds per tool, alternating (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed calls per round after the warm-up (default 3)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker (default 900)")
    p.add_argument("--quick", action="store_true", help="fewer trees: a smoke test")
    p.add_argument(
        "--out",
        type=Path,
        default=HERE / "trees_results.json",
        help="results JSON (default: benchmarks/trees_results.json)",
    )
    p.add_argument(
        "--no-probability", action="store_true", help="skip the probability-output accuracy table (small classifiers)"
    )
    p.add_argument(
        "--doc",
        type=Path,
        default=bench.REPO / "docs" / "benchmarks-trees.md",
        help="markdown report (default: docs/benchmarks-trees.md)",
    )
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    started, load_start = time.time(), [round(v, 2) for v in os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxshap-trees-") as tmp:
        workdir = Path(tmp)
        for key in keys:
            bench.log(f"{key}: training and exporting")
            facts = prepare(key, args.quick, args.samples, args.references, workdir)
            results: dict[str, list[dict[str, Any]]] = {t: [] for t in TOOLS}
            for round_ in range(args.rounds):
                for tool in TOOLS if round_ % 2 == 0 else TOOLS[::-1]:
                    bench.log(f"{key}: {tool}, round {round_ + 1}")
                    task = {**facts, "tool": tool, "reps": args.reps, "budget_s": 60.0}
                    results[tool].append(run_worker(task, workdir, args.timeout))
            rows.append(summarise(facts, results))
    probability = []
    if not args.no_probability:
        for key in PROB_MODELS:
            bench.log(f"probability outputs: {key}")
            probability.append(probability_row(key, args.quick))
    meta = bench.report_meta(
        "benchmarks/trees.py", argv, started, load_start, versions=versions(), rounds=args.rounds, reps=args.reps
    )
    write_doc(rows, meta, args.doc, probability)
    bench.log(f"wrote {args.doc}")
    # benchmarks/run.py's report summarises this run from here.
    args.out.write_text(
        json.dumps({"meta": meta, "rows": rows, "probability": probability}, indent=1, default=str) + "\n"
    )
    bench.log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
