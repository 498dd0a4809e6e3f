"""Where the attribution pass spends its time: XLA's own per-operation trace, grouped by the onnxshap code.

Run by hand from the repository root, in an environment with onnxshap and `xprof` (the profiler's
trace reader; see benchmarks/README.md):

    python benchmarks/profile.py                               # writes docs/benchmarks-profile.md
    python benchmarks/profile.py --models cnn_digits --configs 16x64 --doc /tmp/p.md

For each model and configuration it explains output 0 once to compile, then traces a few calls with
`jax.profiler`. Every executed XLA operation (a convolution, a dot, a fusion of elementwise work, a
sort, a while loop) is charged to the onnxshap function whose source line XLA recorded for it (for a
fusion, the functions of the operations fused into it), read from the optimised HLO that XLA dumps.
It also times our own forward of the B×K rows, so each share can be read against the floor.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # the benchmark's model table and data

DEFAULT_MODELS = ["mlp", "cnn_digits", "cnn_cifar", "resblock", "lstm", "gru", "transformer"]
DEFAULT_CONFIGS = [(16, 64)]

#: A dumped HLO instruction: `name = type opcode(...), ..., metadata={... source_file="f" source_line=N}`.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?(?P<name>[\w.\-]+) = \S+(?: \S+)*? (?P<op>[a-z][\w\-]*)\(")
_CALLS = re.compile(r"calls=(%?[\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?(?P<name>[\w.\-]+) .*\{\s*$")


_TABLE_ROW = re.compile(r"^(?P<id>\d+) (?P<rest>.*)$")
_FIELDS = re.compile(r"(\w+)=(\d+)")


def _frames(lines: list[str]) -> dict[int, str]:
    """Stack frame id -> `module:function` of its innermost onnxshap frame, from the module's tables
    (FileNames, FunctionNames, FileLocations, StackFrames) that XLA prints above the computations."""
    tables: dict[str, dict[int, str]] = {}
    current: str | None = None
    for line in lines:
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = line
            tables[current] = {}
        elif current and (m := _TABLE_ROW.match(line)):
            tables[current][int(m.group("id"))] = m.group("rest")
        elif current and line.strip() and not line[0].isdigit():
            current = None
    files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
    functions = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
    locations = {k: {a: int(b) for a, b in _FIELDS.findall(v)} for k, v in tables.get("FileLocations", {}).items()}
    parents = {k: {a: int(b) for a, b in _FIELDS.findall(v)} for k, v in tables.get("StackFrames", {}).items()}
    owners: dict[int, str] = {}
    for frame in parents:
        seen, f = set(), frame
        while f in parents and f not in seen:
            seen.add(f)
            loc = locations.get(parents[f]["file_location_id"], {})
            path = files.get(loc.get("file_name_id", -1), "")
            if "onnxshap/" in path:
                module = path.rsplit("onnxshap/", 1)[1].removesuffix(".py")
                owners[frame] = f"{module}:{functions.get(loc.get('function_name_id', -1), '?')}"
                break
            f = parents[f].get("parent_frame_id", f)
    return owners


_FRAME = re.compile(r"stack_frame_id=(\d+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def _owner(text: str, frames: dict[int, str]) -> str | None:
    """The onnxshap function an HLO instruction came from; "(VJP)" where JAX recorded it under a
    transpose: the linear rule's vector-Jacobian product of that function, not its forward."""
    m = _FRAME.search(text)
    who = frames.get(int(m.group(1))) if m else None
    if who is None:
        return None
    op_name = _OP_NAME.search(text)
    return f"{who} (VJP)" if op_name and "transpose(" in op_name.group(1) else who


def parse_dump(folder: Path) -> dict[str, dict[str, Any]]:
    """Entry-computation instructions of every dumped optimised module: name -> opcode, owners, inner ops."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*after_optimizations.txt")):
        lines = path.read_text().splitlines()
        frames = _frames(lines)
        computations: dict[str, list[str]] = {}
        current: str | None = None
        entry: str | None = None
        for line in lines:
            m = _COMPUTATION.match(line)
            if m and not line.startswith(" "):  # a computation header; instructions are indented
                current = m.group("name")
                computations[current] = []
                if line.startswith("ENTRY"):
                    entry = current
                continue
            if current is not None and line.strip() and line.strip() != "}":
                computations[current].append(line)

        def walk(
            comp: str,
            seen: set[str],
            computations: dict[str, list[str]] = computations,
            frames: dict[int, str] = frames,
        ) -> tuple[collections.Counter[str], set[str]]:
            owners: collections.Counter[str] = collections.Counter()
            ops: set[str] = set()
            for text in computations.get(comp, []):
                m = _INSTRUCTION.match(text)
                if not m:
                    continue
                ops.add(m.group("op"))
                if who := _owner(text, frames):
                    owners[who] += 1
                for called in _CALLS.findall(text):
                    called = called.lstrip("%")
                    if called not in seen:
                        seen.add(called)
                        o, inner = walk(called, seen)
                        owners.update(o)
                        ops |= inner
            return owners, ops

        if entry is None:
            continue
        # Thunks run the instructions of the entry computation and of while bodies and conditions; a
        # fusion's own computation (named by calls=) is inside its thunk.
        fused = {c.lstrip("%") for lines_ in computations.values() for t in lines_ for c in _CALLS.findall(t)}
        run = [t for name, lines_ in computations.items() if name not in fused for t in lines_]
        for text in run:
            m = _INSTRUCTION.match(text)
            if not m:
                continue
            owners: collections.Counter[str] = collections.Counter()
            if who := _owner(text, frames):
                owners[who] += 1
            inner: set[str] = set()
            for called in _CALLS.findall(text):
                o, ops = walk(called.lstrip("%"), {called.lstrip("%")})
                owners.update(o)
                inner |= ops
            found.setdefault(m.group("name"), {"op": m.group("op"), "owners": owners, "inner": inner})
    return found


#: Operations that only move or lay out data.
_LAYOUT = {"copy", "transpose", "bitcast", "parameter", "constant", "broadcast", "reshape", "reverse", "slice"}
_LAYOUT |= {"concatenate", "pad", "tuple", "get-tuple-element", "iota"}
#: Container instructions: their time is the time of the thunks they run, which are counted themselves.
_CONTAINERS = {"while", "conditional", "call"}


def kind(info: dict[str, Any] | None, name: str) -> str:
    """A coarse class of XLA operation: what the time is spent on, whatever code asked for it."""
    ops = {info["op"], *info["inner"]} if info else {name.split(".")[0]}
    for label, keys in (
        ("convolution", ("convolution",)),
        ("dot / matmul", ("dot",)),
        ("sort", ("sort",)),
        ("reduce-window", ("reduce-window", "select-and-scatter")),
        (
            "gather, scatter or dynamic slice (scan steps)",
            ("gather", "scatter", "dynamic-slice", "dynamic-update-slice"),
        ),
    ):
        if any(any(op.startswith(k) for k in keys) for op in ops):
            return label
    if ops <= _LAYOUT or name.startswith(("copy", "transpose")):
        return "copy / transpose (layout only)"
    if "transpose" in ops:
        return "elementwise fusion with a transpose"
    return "elementwise / reduce fusion"


def trace_events(folder: Path) -> list[dict[str, Any]]:
    from xprof.convert import raw_to_tool_data  # pyright: ignore[reportMissingImports] - optional tool

    paths = glob.glob(str(folder / "**" / "*.xplane.pb"), recursive=True)
    data, _ = raw_to_tool_data.xspace_to_tool_data(paths, "trace_viewer", {})
    events = json.loads(data)
    return [e for e in (events["traceEvents"] if isinstance(events, dict) else events) if e.get("ph") == "X"]


#: Host-side and runtime events, not XLA operations.
_RUNTIME = re.compile(
    r"^(ThreadpoolListener|ThunkExecutor|PjitFunction|CommonPjRt|\$|Allocate|Handle|Parse|end: |Python)"
)


def profile_one(spec: bench.ModelSpec, b: int, k: int, reps: int, workdir: Path) -> dict[str, Any]:
    import jax
    import numpy as np

    import onnxshap

    path = bench.prepare_model(spec, workdir)
    data = workdir / f"{spec.key}_{b}x{k}.npz"
    bench.make_data(spec, path, b, k, data)
    with np.load(data) as f:
        x = {n[2:]: f[n] for n in f.files if n.startswith("x:")}
        bg = {n[3:]: f[n] for n in f.files if n.startswith("bg:")}
    model = onnxshap.load(str(path))
    explainer = onnxshap.Explainer(
        model, bg if len(bg) > 1 else next(iter(bg.values())), inputs=spec.explain_input, check=spec.check
    )
    samples: Any = x if len(x) > 1 else next(iter(x.values()))
    explainer.explain(samples, output=0)  # compile (and dump) before tracing
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        explainer.explain(samples, output=0)
        times.append(time.perf_counter() - t0)
    feeds = {name: np.repeat(v, k, axis=0) for name, v in x.items()}
    model.run(feeds)
    forward = []
    for _ in range(reps):
        t0 = time.perf_counter()
        model.run(feeds)
        forward.append(time.perf_counter() - t0)
    trace = workdir / f"trace_{spec.key}_{b}x{k}"
    jax.profiler.start_trace(str(trace))
    for _ in range(reps):
        explainer.explain(samples, output=0)
    jax.profiler.stop_trace()
    return {
        "explain_s": statistics.median(times),
        "forward_s": statistics.median(forward),
        "events": trace_events(trace),
        "reps": reps,
    }


def summarise(result: dict[str, Any], dump: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per XLA operation class and per onnxshap function: seconds per explain call."""
    by_kind: collections.Counter[str] = collections.Counter()
    by_owner: collections.Counter[str] = collections.Counter()
    total = 0.0
    for e in result["events"]:
        name = e["name"]
        if _RUNTIME.match(name):
            continue
        seconds = e.get("dur", 0.0) / 1e6 / result["reps"]
        info = dump.get(name)
        if info is not None and info["op"] in _CONTAINERS:
            continue
        total += seconds
        by_kind[kind(info, name)] += seconds
        owners = info["owners"] if info else collections.Counter()
        weight = sum(owners.values())
        if not weight:
            by_owner["(no onnxshap source line)"] += seconds
        for who, count in owners.items():
            by_owner[who] += seconds * count / weight
    return {"ops_s": total, "by_kind": by_kind, "by_owner": by_owner}


def fmt(seconds: float) -> str:
    return bench.fmt_s(seconds)


def write_doc(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    lines = [
        "# Where the pass spends its time",
        "",
        "Generated by `benchmarks/profile.py`. Do not edit by hand: re-run the script.",
        "",
        f"- Date: {meta['date']}; git {meta['git']}; command `{meta['command']}`.",
        f"- Machine: {meta['machine']}; load average {meta['load_start']} at the start.",
        "",
        (
            "Each model explains output 0 of B samples against K background rows (the benchmark's data), once to "
            "compile, then traced with `jax.profiler`. *XLA ops* is the summed duration of the operations XLA ran "
            "(on two cores, operations that overlap count once each, so it can exceed the wall time). Each "
            "operation is charged to the onnxshap functions whose source lines XLA recorded inside it (a fusion "
            "shares its time among the functions fused into it, by instruction count). *Own forward* is our jitted "
            "forward of the B×K rows: the floor the pass is compared with."
        ),
    ]
    for r in rows:
        s = r["summary"]
        lines += [
            "",
            f"## {r['model']} {r['B']}×{r['K']}",
            "",
            (
                f"explain (one output) {fmt(r['explain_s'])}; own forward of {r['B'] * r['K']} rows "
                f"{fmt(r['forward_s'])} (explain ÷ forward {r['explain_s'] / r['forward_s']:.2f}×); XLA ops "
                f"{fmt(s['ops_s'])} per call."
            ),
            "",
            "| XLA operation class | time per call | share |",
            "|---|---|---|",
        ]
        for label, sec in s["by_kind"].most_common():
            lines.append(f"| {label} | {fmt(sec)} | {sec / s['ops_s']:.0%} |")
        lines += ["", "| onnxshap function | time per call | share |", "|---|---|---|"]
        for who, sec in s["by_owner"].most_common(10):
            lines.append(f"| `{who}` | {fmt(sec)} | {sec / s['ops_s']:.0%} |")
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated benchmark model keys")
    p.add_argument("--configs", default="16x64", help="comma-separated BxK (default 16x64)")
    p.add_argument("--reps", type=int, default=3, help="traced calls per model (default 3)")
    p.add_argument("--doc", type=Path, default=bench.REPO / "docs" / "benchmarks-profile.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(task_path: str) -> int:
    """One model and configuration in this process, with XLA dumping its optimised HLO."""
    task = json.loads(Path(task_path).read_text())
    spec = bench.MODELS[task["model"]]
    workdir = Path(task["workdir"])
    result = profile_one(spec, task["B"], task["K"], task["reps"], workdir)
    dump = parse_dump(Path(task["dump"]))
    summary = summarise(result, dump)
    out = {
        "model": spec.key,
        "B": task["B"],
        "K": task["K"],
        "explain_s": result["explain_s"],
        "forward_s": result["forward_s"],
        "summary": {
            "ops_s": summary["ops_s"],
            "by_kind": dict(summary["by_kind"]),
            "by_owner": dict(summary["by_owner"]),
        },
    }
    Path(task["result"]).write_text(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker)
    import datetime as dt
    import subprocess

    started = time.time()
    load_start = [round(v, 2) for v in os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for key in args.models.split(","):
            for b, k in bench.parse_configs(args.configs):
                dump = workdir / f"dump_{key}_{b}x{k}"
                task = {"model": key, "B": b, "K": k, "reps": args.reps, "workdir": tmp, "dump": str(dump)}
                task["result"] = str(workdir / f"result_{key}_{b}x{k}.json")
                task_file = workdir / f"task_{key}_{b}x{k}.json"
                task_file.write_text(json.dumps(task))
                env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump} --xla_dump_hlo_as_text")
                print(f"profiling {key} {b}x{k}", file=sys.stderr, flush=True)
                proc = subprocess.run([sys.executable, __file__, "--worker", str(task_file)], env=env, check=False)
                if proc.returncode != 0:
                    print(f"  {key} {b}x{k} failed (exit {proc.returncode})", file=sys.stderr)
                    continue
                row = json.loads(Path(task["result"]).read_text())
                s = row["summary"]
                s["by_kind"] = collections.Counter(s["by_kind"])
                s["by_owner"] = collections.Counter(s["by_owner"])
                rows.append(row)
                shutil.rmtree(dump, ignore_errors=True)
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=bench.REPO, check=False
    )
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git.stdout.strip(),
        "command": " ".join(["python", "benchmarks/profile.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{os.cpu_count()} cores",
        "load_start": load_start,
    }
    write_doc(rows, meta, args.doc)
    print(f"wrote {args.doc} in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
