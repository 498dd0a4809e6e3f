"""Dataset scale: rows/s of `onnxshap.explain_dataset` on the local engine and on Ray with 1 and 2
workers, against a single process explaining the same rows in memory.

Run by hand (not part of the test suite) from the repository root, on an otherwise idle machine:

    python benchmarks/dataset.py                         # 1M tabular rows, 20k images: docs/benchmarks-dataset.md
    python benchmarks/dataset.py --rows-scale 0.002 --doc /tmp/dataset.md    # smoke run, seconds of work

Models: the tabular MLP `models/torch_mlp_ts.onnx` (10 features -> 3 probabilities; parquet with
one column per feature) and the CNN `models/torch_cnn_digits_ts.onnx` (1x8x8 images -> 10
probabilities; parquet with one list column of 64 pixels). Each configuration runs in a fresh
process (benchmarks/run.py's `spawn_worker`):

- *single process*: the rows read into memory, `Explainer.explain` over batches of `--batch-size`
  (the baseline: no blocks, no files);
- *local*: `explain_dataset(engine="local")`;
- *ray, N workers*: `explain_dataset(engine="ray", workers=N)` on a local Ray started in that
  process (`ray.init(num_cpus=N)`; its start-up is timed apart).

Rows/s is rows / wall time of the explain call (compiling included). Memory: the peak resident
set (VmHWM) of the process that explains, i.e. of each Ray actor, and for Ray also the resident
memory of Ray's own processes (GCS, raylet, ...) at the end. Overhead = wall time / the single
process's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import run as bench  # benchmarks/ is not a package: run.py from beside this file

MODELS = {
    "mlp": {"file": "torch_mlp_ts.onnx", "rows": 1_000_000, "shape": (10,), "label": "tabular MLP 10->32->16->3"},
    "cnn": {"file": "torch_cnn_digits_ts.onnx", "rows": 20_000, "shape": (1, 8, 8), "label": "CNN digits 1x8x8"},
}
SHARD_ROWS = 100_000


def write_source(key: str, rows: int, background_rows: int, workdir: Path, seed: int = 0) -> tuple[Path, Path]:
    """(a folder of parquet shards of `rows` rows, a background .npy of `background_rows`) for model
    `key` (fixed seed; the shards are reused when the folder exists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = MODELS[key]
    folder = workdir / f"{key}_{rows}"
    background = workdir / f"{key}_background.npy"
    rng = np.random.default_rng(seed)
    shape = spec["shape"]
    np.save(background, rng.uniform(0, 1, size=(background_rows, *shape)).astype(np.float32))
    if folder.is_dir():
        return folder, background
    folder.mkdir()
    size = int(np.prod(shape))
    for i, start in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - start)
        x = rng.uniform(0, 1, size=(n, size)).astype(np.float32)
        if key == "mlp":
            table = pa.table({f"f{j}": x[:, j] for j in range(size)})
        else:
            table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), size)})
        pq.write_table(table, folder / f"shard-{i:04d}.parquet")
    return folder, background


def _peak_rss_mib(pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _ray_processes() -> dict[int, str]:
    """pid -> process title of every Ray process on this machine."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "ray" in title.split(" ")[0] or title.startswith("ray::") or "/ray/" in title:
                found[int(entry)] = title
    return found


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def worker_main(task: dict[str, Any]) -> dict[str, Any]:
    """One configuration in this process; returns its measurements."""
    import onnxshap

    model = REPO / "models" / MODELS[task["model"]]["file"]
    background = np.load(task["background"])
    mode = task["mode"]
    result: dict[str, Any] = {**task}
    if mode == "single":
        import pyarrow.parquet as pq

        table = pq.read_table(task["source"])
        if task["model"] == "mlp":
            x = np.stack([table.column(c).to_numpy() for c in table.column_names], axis=1)
        else:
            x = table.column("x").combine_chunks().flatten().to_numpy().reshape(-1, *MODELS["cnn"]["shape"])
        t0 = time.perf_counter()
        explainer = onnxshap.Explainer(model, background)
        batch = task["batch_size"]
        worst = 0.0
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            if len(chunk) < batch:
                from onnxshap._explanation import first_samples
                from onnxshap._inputs import pad_rows

                e = first_samples(explainer.explain(pad_rows(chunk, batch)), len(chunk))
            else:
                e = explainer.explain(chunk)
            worst = max(worst, e.max_relative_residual)
        result.update(seconds=time.perf_counter() - t0, worker_peak_mib=[_peak_rss_mib()], residual=worst)
        return result
    out = Path(task["out"])
    peaks: dict[int, float] = {}
    options: dict[str, Any] = {"batch_size": task["batch_size"], "block_size": task["block_size"], "overwrite": True}
    if mode == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=task["workers"], include_dashboard=False, logging_level="WARNING")
        result["ray_start_s"] = time.perf_counter() - t0

        def watch(done: int, total: int) -> None:
            for pid, title in _ray_processes().items():
                if "MapWorker" in title:
                    peaks[pid] = max(peaks.get(pid, 0.0), _peak_rss_mib(pid) or 0.0)

        options.update(engine="ray", workers=task["workers"], progress=watch)
    t0 = time.perf_counter()
    done = onnxshap.explain_dataset(model, background, task["source"], out, **options)
    result.update(seconds=time.perf_counter() - t0, residual=done.max_relative_residual, blocks=done.blocks)
    if mode == "ray":
        import ray

        system = [pid for pid, title in _ray_processes().items() if "MapWorker" not in title and pid != os.getpid()]
        result["ray_system_mib"] = sum(_rss_mib(pid) for pid in system)
        result["worker_peak_mib"] = sorted(peaks.values())
        ray.shutdown()
    else:
        result["worker_peak_mib"] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    return result


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def write_doc(results: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    m = meta["machine"]
    lines = [
        "# Dataset scale",
        "",
        "Generated by `benchmarks/dataset.py`. Do not edit by hand: re-run the script.",
        "",
        *([f"**{meta['label']}**", ""] if meta.get("label") else []),
        f"- Date: {meta['date']}; wall time {meta['duration_s'] / 60:.1f} min; git {m['git'] or '?'}.",
        f"- Command: `{meta['command']}`",
        (
            f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, {m['os']}, Python {m['python']}; "
            f"load average {meta['load_start']} at the start, {meta['load_end']} at the end."
        ),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
        (
            f"- Background {meta['background']} rows, batch size {meta['batch_size']}, block size "
            f"{meta['block_size']} rows; every output of each row explained."
        ),
        "",
        "## Method",
        "",
        (
            "Each configuration runs in a fresh process on parquet shards written beforehand: *single process* reads "
            "every row into memory and calls `Explainer.explain` batch by batch (no blocks, no files); *local* is "
            '`explain_dataset(engine="local")`; *ray* is `explain_dataset(engine="ray", workers=N)` on a local '
            "Ray (`ray.init(num_cpus=N)`, its start-up timed apart). Wall time of the explain call, compiling "
            "included; rows/s = rows / that time. Peak RSS: VmHWM of the explaining process (each Ray actor). "
            "Ray system: resident memory of Ray's own processes at the end. Overhead: wall time / the single "
            "process's."
        ),
        "",
        "## Results",
        "",
        (
            "| model | rows | configuration | wall s | rows/s | overhead | peak RSS per worker (MiB) | Ray start s | "
            "Ray system (MiB) | worst residual |"
        ),
        "|---|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    single = {r["model"]: r["seconds"] for r in results if r["mode"] == "single" and "seconds" in r}
    for r in results:
        name = {"single": "single process", "local": "local engine"}.get(r["mode"], f"ray, {r['workers']} worker(s)")
        if "seconds" not in r:
            lines.append(f"| {MODELS[r['model']]['label']} | {r['rows']} | {name} | {r['status']} | | | | | | |")
            continue
        overhead = f"{r['seconds'] / single[r['model']]:.2f}x" if r["model"] in single else ""
        peaks = ", ".join(f"{p:.0f}" for p in r.get("worker_peak_mib", []))
        lines.append(
            f"| {MODELS[r['model']]['label']} | {r['rows']} | {name} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:.0f} "
            f"| {overhead} | {peaks} | {_number(r.get('ray_start_s'), '.1f')} | {_number(r.get('ray_system_mib'), '.0f')} | "
            f"{r['residual']:.1e} |"
        )
    lines += [
        "",
        "## On a cluster",
        "",
        (
            "Start Ray on each machine (`ray start --head` on one, `ray start --address HEAD:6379` on the others), "
            "with onnxshap installed on every node, then explain from the head with `--engine ray --address auto` "
            '(`explain_dataset(..., engine="ray", address="auto")`); see [Explaining a dataset](dataset.md).'
        ),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows-scale", type=float, default=1.0, help="fraction of the rows (default 1: 1M and 20k)")
    parser.add_argument("--models", default="mlp,cnn", help="mlp, cnn or both (default)")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts (default 1,2)")
    parser.add_argument("--background", type=int, default=32, help="background rows (default 32)")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per explain call (default 256)")
    parser.add_argument("--block-size", type=int, default=16384, help="rows per block (default 16384)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per configuration (default 3600)")
    parser.add_argument("--workdir", type=Path, help="where the data and results go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=HERE / "dataset_results.json", help="results JSON")
    parser.add_argument("--doc", default=str(REPO / "docs" / "benchmarks-dataset.md"), help="report ('none': skip)")
    parser.add_argument("--label", help="a line at the top of the report, e.g. SMOKE RUN")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        task = json.loads(args.worker.read_text())
        Path(task["result"]).write_text(json.dumps(worker_main(task)))
        return 0
    started, load_start = time.time(), [round(v, 2) for v in os.getloadavg()]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnxshap_dataset_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for key in args.models.split(","):
        rows = max(1, int(MODELS[key]["rows"] * args.rows_scale))
        source, background = write_source(key, rows, args.background, workdir)
        common = {
            "model": key,
            "rows": rows,
            "source": str(source),
            "background": str(background),
            "batch_size": args.batch_size,
            "block_size": args.block_size,
        }
        configs = [{"mode": "single", "workers": 1}, {"mode": "local", "workers": 1}]
        configs += [{"mode": "ray", "workers": int(w)} for w in args.workers.split(",")]
        for config in configs:
            task = {**common, **config, "out": str(workdir / f"out_{key}_{config['mode']}_{config['workers']}")}
            print(f"{key}: {config['mode']} x{config['workers']} over {rows} rows ...", file=sys.stderr)
            got, status, _ = bench.spawn_worker(__file__, task, workdir, args.timeout)
            results.append({**task, **got, "status": status})
            if "seconds" in got:
                print(f"  {got['seconds']:.1f} s, {rows / got['seconds']:.0f} rows/s", file=sys.stderr)
            else:
                print(f"  {status}", file=sys.stderr)
    meta = bench.report_meta(
        "benchmarks/dataset.py",
        argv,
        started,
        load_start,
        background=args.background,
        batch_size=args.batch_size,
        block_size=args.block_size,
        label=args.label,
    )
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    if args.doc != "none":
        write_doc(results, meta, Path(args.doc))
        print(f"wrote {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
