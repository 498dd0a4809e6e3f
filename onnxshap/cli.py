"""The `onnxshap` command line. It parses arguments, calls the public API and prints or writes results.

Exit codes: 0 success, 1 error (bad model, bad input, unsupported op, incomplete attributions),
2 usage error. User errors print one line (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES = {
    "inspect": "example:\n  onnxshap inspect models/torch_cnn_digits_ts.onnx",
    "check": "example:\n  onnxshap check models/torch_mlp_ts.onnx --input x.npy",
    "explain": (
        "examples:\n"
        "  onnxshap explain models/torch_mlp_ts.onnx --input x.npy --background bg.npy -o values.npz\n"
        "  onnxshap explain model.onnx --input x.npy --background-size 50 --output predicted -o values.npz\n"
        "  onnxshap explain model.onnx --input x.npy --outputs-from logits --output 3 -o values.npz"
    ),
}


class UsageError(Exception):
    """Wrong command-line usage (exit code 2)."""


def _load_array_file(path: str, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file {path!r} does not exist.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if suffix == ".csv":
        return np.loadtxt(p, delimiter=",", dtype=np.float32, ndmin=2)
    raise UsageError(f"{what} file {path!r}: use .npy, .npz (one array per input name) or .csv.")


def _cast_to_model(feeds: Any, model: Any) -> Any:
    """Cast float arrays to the dtype the model declares (files are often float64)."""
    declared = {i.name: i.dtype for i in model.inputs}

    def cast(name: str, a: np.ndarray) -> np.ndarray:
        want = declared.get(name)
        return a.astype(want) if want is not None and a.dtype.kind == "f" and want.kind == "f" else a

    if isinstance(feeds, dict):
        return {k: cast(k, v) for k, v in feeds.items()}
    if len(declared) == 1:
        return cast(next(iter(declared)), feeds)
    return feeds


def cmd_inspect(args: argparse.Namespace) -> int:
    import onnxshap
    from onnxshap._graph import load_graph

    loaded = load_graph(args.model)
    graph = loaded.graph
    print(f"model: {args.model}  (opsets: " + ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(graph.opsets.items())) + ")")
    print("inputs:")
    for i in graph.inputs:
        print(f"  {i.describe()}")
    print("outputs:")
    for o in graph.outputs:
        print(f"  {o.describe()}")
    counts = Counter((n.domain, n.op_type) for n in graph.all_nodes())
    print("ops:")
    for (domain, op), count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        node = next(n for n in graph.all_nodes() if n.op_type == op and n.domain == domain)
        rule = node.spec.rule if node.spec is not None else "UNSUPPORTED"
        name = f"{domain}::{op}" if domain else op
        print(f"  {name:<28} x{count:<4} rule: {rule}")
    problems = graph.unsupported()
    if problems:
        print("unsupported:")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"all {len(counts)} op types are supported (onnxshap {onnxshap.__version__}).")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    import onnxshap

    model = onnxshap.load(args.model)
    if args.input:
        feeds = _cast_to_model(_load_array_file(args.input, "input"), model)
        if not isinstance(feeds, dict):
            feeds = {model.input_names[0]: feeds}
    else:
        rng = np.random.default_rng(0)
        feeds = {}
        for i in model.inputs:
            shape = tuple(d if isinstance(d, int) and d > 0 else 2 for d in (i.shape or ()))
            dtype = i.dtype or np.dtype(np.float32)
            feeds[i.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    ours = model.run(feeds)
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    theirs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    worst = 0.0
    for name, value in ours.items():
        ref = np.asarray(theirs[name])
        if value.dtype.kind == "f":
            diff = float(np.max(np.abs(value - ref) / (np.abs(ref) + 1e-6), initial=0.0))
            worst = max(worst, diff)
            print(f"{name}: shape {list(value.shape)}, max relative difference vs onnxruntime {diff:.3g}")
        else:
            same = bool(np.array_equal(value, ref))
            worst = max(worst, 0.0 if same else np.inf)
            print(f"{name}: shape {list(value.shape)}, {'identical to' if same else 'DIFFERENT from'} onnxruntime")
    ok = worst <= args.rtol
    print("OK" if ok else f"MISMATCH: largest relative difference {worst:.3g} > {args.rtol:g}")
    return 0 if ok else 1


def cmd_explain(args: argparse.Namespace) -> int:
    import onnxshap

    model = onnxshap.load(args.model)
    x = _cast_to_model(_load_array_file(args.input, "input"), model)
    if args.background:
        background = _cast_to_model(_load_array_file(args.background, "background"), model)
    else:
        rows = next(iter(x.values())) if isinstance(x, dict) else x
        n = min(args.background_size, len(rows))
        pick = np.random.default_rng(args.seed).choice(len(rows), size=n, replace=False)
        background = {k: v[pick] for k, v in x.items()} if isinstance(x, dict) else x[pick]
    output: Any = None
    if args.output not in (None, "all"):
        output = "predicted" if args.output == "predicted" else [int(v) for v in args.output.split(",")]
    explainer = onnxshap.Explainer(
        model, background, inputs=args.inputs_from, outputs=args.outputs_from, rules=dict(args.rule or []),
        check=args.check,
    )
    e = explainer.explain(x, output=output)
    e.save(args.o)
    print(
        f"explained {e.prediction.shape[0]} sample(s) x {e.prediction.shape[1]} output(s) against "
        f"{len(next(iter(explainer.background.values())))} background row(s); "
        f"max relative residual {e.max_relative_residual:.2g}; wrote {args.o}"
    )
    return 0


def _rule_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected OP=RULE, e.g. MaxPool=cross_max, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxshap",
        description="Exact DeepSHAP attributions for ONNX models, compiled with JAX.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `onnxshap COMMAND --help` for each command's options and an example.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("inspect", "Show a model's inputs, outputs, ops and the attribution rule each op gets.")
    p.add_argument("model", help="path to an .onnx file")
    p.set_defaults(func=cmd_inspect)

    p = add("check", "Compare onnxshap's forward pass with onnxruntime's, output by output.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--input", help="inputs (.npy for one input, .npz by input name, .csv); default: random")
    p.add_argument("--rtol", type=float, default=1e-4, help="largest relative difference accepted (default 1e-4)")
    p.set_defaults(func=cmd_check)

    p = add("explain", "Attribute a model's outputs to its inputs (DeepSHAP) and write an .npz file.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--input", required=True, help="samples to explain (.npy, .npz by input name, or .csv)")
    p.add_argument("--background", help="reference rows (same formats); default: sampled from --input")
    p.add_argument("--background-size", type=int, default=100, help="rows to sample when no --background (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed for background sampling (default 0)")
    p.add_argument("--output", help="which outputs: all (default), an index or comma list, or 'predicted'")
    p.add_argument("--outputs-from", action="append", help="explain this tensor instead of the model output (repeatable)")
    p.add_argument("--inputs-from", action="append", help="attribute to this tensor instead of the model input (repeatable)")
    p.add_argument("--rule", action="append", type=_rule_pair, metavar="OP=RULE", help="override a rule, e.g. MaxPool=cross_max")
    p.add_argument("--check", choices=["raise", "warn", "off"], default="raise",
                   help="when attributions do not sum to f(x) - mean f(background) (default raise)")
    p.add_argument("-o", required=True, metavar="OUT.npz", help="where to write values, base values, residuals and names")
    p.set_defaults(func=cmd_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from onnxshap._errors import OnnxShapError

    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"onnxshap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (OnnxShapError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"onnxshap {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
