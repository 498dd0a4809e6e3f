"""The `onnxshap` command line: convert, inspect, check, explain.

It parses arguments, calls the library (input files: onnxshap/_inputs.py; what `check` compares:
_check.py; what `inspect` reports: _inspect.py) and prints or writes results.
Exit codes: 0 success, 1 error (bad model or input, unsupported op, failed conversion, incomplete
attributions), 2 usage error (bad or missing arguments, missing files), 130 interrupted (Ctrl-C).
Errors print one message on stderr; `--debug` shows the traceback instead. Output files are written
whole or not at all.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxshap._explanation import concatenate, first_samples
from onnxshap._inputs import (
    CLI_NAMES,
    SCALES,
    ArgumentError,
    ImageOptions,
    InputFiles,
    load_files,
    pad_rows,
    read_fixed,
    require_file,
    rows as _rows,
    sample_rows,
    take as _take,
)

EXAMPLES = {
    "convert": (
        "examples:\n"
        "  onnxshap convert models/frameworks/keras_mlp.keras -o keras_mlp.onnx\n"
        "  onnxshap convert models/frameworks/torch_cnn.pt --input-shape 1,8,8 -o torch_cnn.onnx\n"
        "  onnxshap convert models/frameworks/torch_mlp.pt2 --trust-pickle -o torch_mlp.onnx\n"
        "  onnxshap convert models/frameworks/sklearn_logreg.joblib --trust-pickle -o logreg.onnx\n"
        "  onnxshap convert booster.json -o xgb.onnx   # an XGBoost model file (.json/.ubj); LightGBM: .txt\n"
        "\n"
        "Needs the framework: pip install 'onnxshap[torch]', 'onnxshap[keras]', 'onnxshap[sklearn]' or\n"
        "'onnxshap[boosting]' (XGBoost, LightGBM)."
    ),
    "inspect": (
        "examples:\n"
        "  onnxshap inspect models/torch_cnn_digits_ts.onnx\n"
        "  onnxshap inspect models/torch_mlp_logits_probs_ts.onnx --tensors   # names for --outputs-from"
    ),
    "check": (
        "examples:\n"
        "  onnxshap check models/torch_cnn_digits_ts.onnx --input models/data/digits_samples.npy\n"
        "  onnxshap check models/sklearn_mlp.onnx                             # random input"
    ),
    "explain": (
        "examples:\n"
        "  onnxshap explain models/torch_cnn_digits_ts.onnx --input models/data/digits_samples.npy \\\n"
        "      --background models/data/digits_background.npy --output predicted -o digits_values.npz\n"
        "  onnxshap explain model.onnx --input x.csv --background-size 50 --output all -o values.npz\n"
        "  onnxshap explain model.onnx --input x.npy --outputs-from logits --output 'logits[3]' -o values.npz\n"
        "  onnxshap explain models/torch_cnn_digits_ts.onnx --input models/data/digits_samples.npy \\\n"
        "      --inputs-from /features/features.2/MaxPool_output_0 --channel-axis 0 --plot maps.png -o maps.npz\n"
        "  onnxshap explain model.onnx --input photos/ --image-size 32 32 --plot shap.png -o values.npz\n"
        "  onnxshap explain lstm.onnx --input x.npy --fixed h0=h0.npy --fixed c0=c0.npy -o values.npz\n"
        "  onnxshap explain model.onnx --input rows.parquet --background bg.npy -o out/ --engine ray --workers 4\n"
        "\n"
        "Any batch layout: a model whose batch is fixed at 1 takes any number of rows (each fed as a\n"
        "batch of one); for a model without a batch axis give (n, *declared shape). The run prints how\n"
        "it read each input (docs/real-exports.md).\n"
        "\n"
        "The .npz holds values/<input> (n_samples, *input_shape, n_outputs), base_values, prediction,\n"
        "residual (n_samples, n_outputs), data/<input>, input_names, output_names, output_indices;\n"
        "values sum to prediction - base_values. Load it with onnxshap.Explanation.load(path)."
    ),
}

DEFAULT_BACKGROUND_SIZE = 100
DEFAULT_BATCH_SIZE = 32


#: What helps when a command runs out of memory (only options the command has).
OUT_OF_MEMORY_ADVICE = {
    "explain": "Lower --batch-size (samples per call) or --background-size (reference rows).",
    "check": "The forward pass needs more memory than is free: give fewer rows with --input.",
}


class UsageError(Exception):
    """Wrong command-line usage (exit code 2)."""


# ----------------------------------------------------------------------------- reading inputs


def _require_onnx(path: str) -> Path:
    """The model argument of inspect/check/explain: an existing file that is not a framework file."""
    from onnxshap._convert import SUPPORTED_SUFFIXES

    p = require_file(path, "model file")
    if p.suffix.lower() in SUPPORTED_SUFFIXES:
        raise UsageError(
            f"{path!r} is a framework model, not ONNX. Convert it first: onnxshap convert {path} -o {p.stem}.onnx"
        )
    return p


def _require_output_dir(path: str, flag: str) -> Path:
    p = Path(path)
    if not p.parent.is_dir():
        raise UsageError(f"{flag} {path!r}: folder {str(p.parent)!r} does not exist.")
    if p.is_dir():
        raise UsageError(f"{flag} {path!r} is a folder; give a file name.")
    return p


def _load_inputs(paths: Sequence[str], model: Any, args: argparse.Namespace, what: str) -> InputFiles:
    """--input/--background files as `model`'s inputs (onnxshap/_inputs.py), images read with the
    image options of `args`."""
    size = (args.image_size[0], args.image_size[1]) if args.image_size else None
    options = ImageOptions(
        size=size, scale=args.scale, mean=args.mean, std=args.std, layout=args.layout, names=CLI_NAMES
    )
    return load_files(paths, model.inputs, what, options)


# ----------------------------------------------------------------------------- explanations


# ----------------------------------------------------------------------------- commands


def cmd_convert(args: argparse.Namespace) -> int:
    from onnxshap._convert import SUPPORTED_SUFFIXES, convert_file
    from onnxshap._errors import ConversionError
    from onnxshap._inspect import describe_io
    from onnxshap._model import save_proto

    source = require_file(args.model, "model file")
    suffix = source.suffix.lower()
    if suffix == ".onnx":
        raise UsageError(f"{args.model!r} is already ONNX: run `onnxshap inspect {args.model}` or explain it directly.")
    if suffix not in SUPPORTED_SUFFIXES and not source.is_dir():
        raise UsageError(
            f"cannot tell the framework of {args.model!r} from its suffix {suffix or '(none)'}: use .keras/.h5 (Keras), "
            ".pt/.pth (TorchScript), .pt2 (torch.export), .json/.ubj (XGBoost), .txt (LightGBM), or "
            ".pkl/.pickle/.joblib (scikit-learn, XGBoost, LightGBM)."
        )
    # A file that must be unpickled without --trust-pickle is refused by convert_file (ConversionError,
    # exit 1) for every suffix, not here as a usage error (exit 2): for a .pt file only torch can tell,
    # by opening it, whether it is a TorchScript archive (no pickle) or a module saved with torch.save.
    out = _require_output_dir(args.o or str(source.with_suffix(".onnx")), "-o")
    shapes = [s for s, _ in args.input_shape] if args.input_shape else None
    dtypes = (
        [d or "float32" for _, d in args.input_shape]
        if args.input_shape and any(d for _, d in args.input_shape)
        else None
    )
    try:
        proto, report = convert_file(
            source,
            opset=args.opset,
            input_shape=shapes,
            input_dtype=dtypes,
            trust_pickle=args.trust_pickle,
            rtol=args.rtol,
            atol=args.atol,
        )
    except ConversionError as exc:
        if exc.report is not None:
            print(exc.report.summary())  # type: ignore[attr-defined]
        raise
    print(f"converted {args.model}: {report.source}")
    print(f"  with {report.exporter}")
    for line in describe_io(proto):
        print(f"  {line}")
    print(report.summary())
    size = save_proto(proto, out)
    import onnxshap

    problems = onnxshap.unsupported_ops(proto)
    if problems:
        print(
            f"warning: onnxshap cannot explain this model yet ({len(problems)} unsupported op type(s)); "
            f"run `onnxshap inspect {out}` for details.",
            file=sys.stderr,
        )
    print(f"wrote {out} ({size} bytes)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import onnxshap
    from onnxshap._inspect import index_lookups, input_roles, node_rule
    from onnxshap._load import load_graph
    from onnxshap._tokens import default_explained

    path = _require_onnx(args.model)
    graph = load_graph(path).graph
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(graph.opsets.items()))
    print(f"model: {args.model}  (opsets: {opsets})")
    print("inputs:")
    for i in graph.inputs:
        print(f"  {i.describe()}")
    print("outputs:")
    for o in graph.outputs:
        print(f"  {o.describe()}")
    nodes = list(graph.all_nodes())
    found = index_lookups(graph)
    lookups = [e for per_input in found.values() for e in per_input]
    floats, tokens = default_explained(graph, found)
    explained = floats + [e.tensor for e in tokens]
    for line in input_roles(graph, floats, tokens, found):
        print(line)
    what = " and ".join(w for w, there in (("the float inputs", floats), ("the token ids' lookups", tokens)) if there)
    varying = graph.descendants_of(explained)
    counts = Counter((n.domain, n.op_type, node_rule(n, varying)) for n in nodes)
    print(f"ops ({len(nodes)} nodes; rules as applied when explaining {what or 'nothing'}):")
    for (domain, op, rule), count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        name = f"{domain}::{op}" if domain else op
        print(f"  {name:<28} x{count:<4} rule: {rule}")
    if args.tensors:
        print("tensors (name: dtype[shape] <- producing node; use with --outputs-from / --inputs-from):")
        from onnxshap._model import graph_tensors  # the list Model.tensors() returns

        for info, node in graph_tensors(graph):
            text = info.describe() if info.dtype is not None or info.shape is not None else f"{info.name}: ?"
            print(f"  {text}  <- {node.label}")
    plain = [e.tensor for e in lookups if e.kind == "embedding" and not e.float_ids]
    if plain:
        print(
            f"token ids: integer inputs feed the embedding lookup(s) {', '.join(plain)}; explain attributes to "
            "the looked-up vectors and reports per-token values"
        )
    for e in lookups:
        if e.kind != "embedding" or e.float_ids:
            print(f"index input: {e.describe()}; explained there, values summed per position")
    if graph.lowered:
        print("control flow (lowered into the nodes above; docs/rules/control-flow.md):")
        for line in graph.lowered:
            print(f"  {line}")
    problems = graph.unsupported()
    if problems:
        print("unsupported:")
        for p in problems:
            print(f"  - {p}")
        print(
            f"{len(problems)} op type(s) or control-flow node(s) are not supported: onnxshap cannot explain this "
            "model (up to a tensor before them it can: --outputs-from).",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(counts)} op types are supported (onnxshap {onnxshap.__version__}).")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import onnxshap
    from onnxshap._check import compare, random_feeds, reference_outputs

    path = _require_onnx(args.model)
    model = onnxshap.load(path)
    if args.input:
        feeds = _load_inputs(args.input, model, args, "input").data
        if not isinstance(feeds, dict):
            feeds = {model.input_names[0]: feeds}
        shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in feeds.items())
        print(f"inputs from {', '.join(args.input)}: {shapes}")
    else:
        feeds, drawn = random_feeds(model)
        print("inputs from random input (seed 0):\n" + "\n".join(f"  {line}" for line in drawn))
    ours = model.run(feeds)
    theirs = reference_outputs(path, feeds)
    worst, failed = 0.0, []
    for name, value in ours.items():
        text, share = compare(value, theirs[name], args.rtol, args.atol)
        print(f"{name}: {text}")
        worst = max(worst, share)
        if not share <= 1:
            failed.append((name, text))
    tolerance = f"|onnxshap - onnxruntime| <= atol + rtol * |onnxruntime| (atol {args.atol:g}, rtol {args.rtol:g})"
    if not failed:
        closest = f"the worst uses {100 * worst:.2g}% of its tolerance" if worst > 0 else "no element differs"
        print(f"OK: onnxshap's forward pass matches onnxruntime: every element within {tolerance}; {closest}")
        return 0
    names = ", ".join(name for name, _ in failed)
    print(f"MISMATCH in {names}: not every element within {tolerance}. {failed[0][0]}: {failed[0][1]}", file=sys.stderr)
    return 1


def _parse_output(text: str | None) -> Any:
    """--output -> Explainer.explain's output=: None (all), "predicted", or a list of indices and labels
    (resolved there against the explained outputs' labels; a label's own commas, probs[0,3], stay)."""
    if text is None or text == "all":
        return None
    if text == "predicted":
        return "predicted"
    items = [v.strip() for v in re.split(r",(?![^\[]*\])", text)]
    if not all(items):
        raise UsageError(
            f"--output {text!r}: use all, predicted, an index such as 3, a label such as 'probs[3]', "
            "or a list such as 0,2."
        )
    return [int(v) if re.fullmatch(r"-?\d+", v) else v for v in items]


def _refuse_overwriting_inputs(args: argparse.Namespace, out: Path, plot: Path | None) -> None:
    """-o and --plot must not name a file the command reads (it would be replaced), nor each other."""
    read = [
        ("the model", args.model),
        *(("--input", p) for p in args.input),
        *(("--background", p) for p in args.background or ()),
        *(("--fixed", f) for _, f in args.fixed or ()),
        *((("--vocab", args.vocab),) if args.vocab else ()),
    ]
    written = [("-o", out), *((("--plot", plot),) if plot is not None else ())]
    for flag, target in written:
        for source_flag, source in read:
            if Path(source).exists() and Path(source).resolve() == target.resolve():
                raise UsageError(
                    f"{flag} {str(target)!r} is also {source_flag}: it would be replaced by the result. "
                    "Write the result to another file."
                )
    if plot is not None and plot.resolve() == out.resolve():
        raise UsageError(f"-o and --plot name the same file {str(out)!r}; give each its own name.")


def _use_compilation_cache(args: argparse.Namespace) -> None:
    """--compilation-cache [DIR]; else the default cache, unless --no-compilation-cache or
    ONNXSHAP_COMPILATION_CACHE=0. A default folder that cannot be used is a note, not an error."""
    from onnxshap import _compile_cache
    from onnxshap._errors import OutputError

    if args.compilation_cache is not None:
        _compile_cache.enable_compilation_cache(args.compilation_cache or None)
    elif not args.no_compilation_cache and _compile_cache.default_cache_wanted():
        try:
            _compile_cache.enable_compilation_cache()
        except OutputError as exc:
            print(
                f"note: {exc} This run compiles without it (ONNXSHAP_COMPILATION_CACHE=0 skips the cache).",
                file=sys.stderr,
            )


def _check_sizes(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")
    if args.background_size is not None and args.background_size < 1:
        raise UsageError("--background-size must be at least 1.")


def cmd_explain(args: argparse.Namespace) -> int:
    if _dataset_mode(args):
        return cmd_explain_dataset(args)
    import onnxshap
    from onnxshap._explainer import check_finite
    from onnxshap._files import partial_path
    from onnxshap._interrupt import held
    from onnxshap._layout import read_feeds
    from onnxshap._progress import Bar

    path = _require_onnx(args.model)
    out = _require_output_dir(args.o, "-o")
    plot = _require_output_dir(args.plot, "--plot") if args.plot else None
    if plot is not None:
        from onnxshap._plots import check_suffix

        try:  # before the explain pass, not after it
            check_suffix(plot, html_ok=args.plot_kind in ("auto", "text"))
        except onnxshap.InputError as exc:
            raise UsageError(str(exc)) from None
    _refuse_overwriting_inputs(args, out, plot)
    if args.vocab:
        require_file(args.vocab, "--vocab file")
    output = _parse_output(args.output)
    _check_sizes(args)
    _use_compilation_cache(args)
    model = onnxshap.load(path)
    loaded = _load_inputs(args.input, model, args, "input")
    x = loaded.data
    fixed = read_fixed(args.fixed or [], model.inputs)
    # Check the samples before the background is sampled from them (errors then name the input).
    fed = [i for i in model.inputs if i.name not in fixed]
    if not isinstance(x, dict) and len(fed) > 1:
        raise UsageError(
            f"The model has {len(fed)} inputs besides --fixed ones ({', '.join(i.describe() for i in fed)}): pass an "
            ".npz file with one array per input name, e.g. np.savez('x.npz', "
            + ", ".join(f"{i.name}=..." for i in fed)
            + ")."
        )
    feeds = x if isinstance(x, dict) else {i.name: x for i in fed}
    # Read the samples as the explainer will (rows, whole examples, or one value for every sample),
    # so that values given once (recurrent state) are passed as fixed, not cut into batches.
    read = read_feeds(model.inputs, feeds, what="input", fixed_ok=list(feeds), given_fixed=fixed)
    fixed = dict(read.fixed)
    # Whole-input checks first: a bad row is named by its row in the file (not within a batch), and
    # before any background is sampled from the input.
    check_finite(read.examples, "--input data")
    x = {k: v for k, v in feeds.items() if k not in fixed} if isinstance(x, dict) else x
    background_note = ""  # printed once the run succeeded: it qualifies the result
    if args.background:
        background = _load_inputs(args.background, model, args, "background").data
        if isinstance(background, dict):
            for name in [k for k in background if k in fixed]:
                if not np.array_equal(background.pop(name), fixed[name]):
                    raise UsageError(
                        f"Input {name!r} is one fixed value for every sample, but the background file "
                        "holds another value for it; leave it out of the background."
                    )
        if args.background_size is not None:
            background = sample_rows(background, args.background_size, args.seed)
    else:
        background = sample_rows(x, args.background_size or DEFAULT_BACKGROUND_SIZE, args.seed)
        n_bg, n_x = _rows(background), _rows(x)
        used = (
            f"{n_bg} of the {n_x} --input rows (sampled, --seed {args.seed}) are"
            if n_bg < n_x
            else f"all {n_x} --input rows are"
        )
        background_note = (
            f"note: no --background: {used} the reference, so each sample is explained against the "
            "others; pass --background FILE with typical data for a fixed reference."
        )
    explainer = onnxshap.Explainer(
        model,
        background,
        inputs=args.inputs_from,
        outputs=args.outputs_from,
        rules=dict(args.rule or []),
        check=args.check,
        fixed=fixed or None,
    )
    print(f"inputs: {read.describe()}")
    n = _rows(x)
    size = min(args.batch_size, max(n, 1))
    batches = [(start, min(start + size, n)) for start in range(0, n, size)] or [(0, 0)]
    # One bar over every batch (compiling, then each background chunk), on stderr: with --progress or
    # on a terminal, never in a pipe unless asked.
    bar = Bar(len(batches), "explain") if args.progress or sys.stderr.isatty() else None
    progress: Any = bar if bar is not None else False
    parts = []
    try:
        for start, stop in batches:
            chunk = _take(x, slice(start, stop))
            if stop - start < size and len(batches) > 1:
                parts.append(
                    first_samples(
                        explainer.explain(pad_rows(chunk, size), output=output, progress=progress), stop - start
                    )
                )
            else:
                parts.append(explainer.explain(chunk, output=output, progress=progress))
    finally:
        if bar is not None:
            bar.close()  # ends its line before an error message
    e = concatenate(parts)
    if plot is not None:
        # The plot is renamed into place only once the values are written too: both or neither.
        tmp_plot = partial_path(plot)
        try:
            _plot(e, tmp_plot, args, loaded)
            with held():  # once the values are in place, a Ctrl-C must not leave the plot out
                e.save(out)
                tmp_plot.replace(plot)
        finally:
            tmp_plot.unlink(missing_ok=True)
    else:
        with held():  # a Ctrl-C after the rename would report "no output" for a written file
            e.save(out)
    n_bg = _rows(explainer.background)
    outputs = ", ".join(repr(o) for o in explainer.outputs)
    print(
        f"explained {n} sample(s) x {e.prediction.shape[1]} output(s) of tensor {outputs} against {n_bg} background row(s)"
        + (f" in {len(batches)} batches" if len(batches) > 1 else "")
    )
    print(
        f"completeness: attributions sum to f(x) - mean f(background) within {e.max_relative_residual:.2g} (relative)"
    )
    shapes = ", ".join(f"values/{name} {list(e.values_for(name).shape)}" for name in e.input_names)
    print(f"wrote {out}: {shapes}, base_values, prediction, residual {list(e.residual.shape)}, names")
    if plot is not None:
        print(f"wrote {plot}")
    if background_note:
        print(background_note, file=sys.stderr)
    return 0


class DatasetInterrupted(KeyboardInterrupt):
    """Ctrl-C during a dataset run: the blocks written before it stay, and a rerun resumes."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


def _dataset_mode(args: argparse.Namespace) -> bool:
    """`explain` over a dataset (into a folder of parquet files): --engine given, or a parquet --input."""
    return args.engine is not None or any(Path(p).suffix.lower() == ".parquet" for p in args.input)


def cmd_explain_dataset(args: argparse.Namespace) -> int:
    """`explain --engine local|ray` / a parquet --input: onnxshap.explain_dataset into the folder -o."""
    import onnxshap
    from onnxshap import _interrupt

    path = _require_onnx(args.model)
    single_only = [
        ("--plot", args.plot),
        ("--vocab", args.vocab),
        ("--plot-sample", args.plot_sample),
        ("--channel-axis", args.channel_axis),
        ("--image-size", args.image_size),
    ]
    refused = [flag for flag, value in single_only if value is not None]
    if refused:
        raise UsageError(
            f"{refused[0]} does not apply to a dataset run (--engine, or a parquet --input): draw plots from "
            "onnxshap.DatasetResult.explanation() in Python, or explain the rows to plot without --engine."
        )
    if not args.background:
        raise UsageError(
            "A dataset run needs --background FILE (reference rows: .npy, .npz or .csv); it does not sample "
            "them from the dataset."
        )
    engine = args.engine or "local"
    workers = args.workers if args.workers is not None else 1
    if engine == "local" and workers != 1:
        raise UsageError(f"--workers {workers} needs --engine ray; the local engine runs in this process.")
    if args.address is not None and engine != "ray":
        raise UsageError("--address names a Ray cluster: it needs --engine ray.")
    out = Path(args.o)
    if not out.parent.is_dir():
        raise UsageError(f"-o {args.o!r}: folder {str(out.parent)!r} does not exist.")
    if out.is_file():
        raise UsageError(f"-o {args.o!r} is a file; a dataset run writes a folder of parquet files: give a folder.")
    _refuse_overwriting_inputs(args, out, None)
    output = _parse_output(args.output)
    _check_sizes(args)
    _use_compilation_cache(args)
    model = onnxshap.load(path)
    background = _load_inputs(args.background, model, args, "background").data
    if args.background_size is not None:
        background = sample_rows(background, args.background_size, args.seed)
    fixed = read_fixed(args.fixed or [], model.inputs)
    print(f"dataset: {', '.join(args.input)}; engine {engine}, {workers} worker(s)")
    try:
        result = onnxshap.explain_dataset(
            path,
            background,
            args.input[0] if len(args.input) == 1 else args.input,
            out,
            output=output,
            engine=engine,
            workers=workers,
            batch_size=args.batch_size,
            block_size=args.block_size,
            inputs=args.inputs_from,
            outputs=args.outputs_from,
            columns=dict(args.column) if args.column else None,
            keep=args.keep or (),
            rules=dict(args.rule) if args.rule else None,
            check=args.check,
            fixed=fixed or None,
            overwrite=args.overwrite,
            progress=bool(args.progress or sys.stderr.isatty()),
            address=args.address,
        )
    except BaseException as exc:
        installed = _interrupt._installed
        if isinstance(exc, KeyboardInterrupt) or (installed is not None and installed.requested):
            raise DatasetInterrupted(
                f"the blocks written before it are in {out}; rerun the same command to resume from there."
            ) from exc
        raise
    print(
        f"explained {result.rows} row(s) in {result.blocks} block(s) ({result.written} written now, {result.skipped} "
        f"already there) with engine {engine}, {workers} worker(s): {result.seconds:.1f} s, "
        f"{result.rows_per_second:.0f} rows/s"
    )
    print(
        "completeness: attributions sum to f(x) - mean f(background) within "
        f"{result.max_relative_residual:.2g} (relative, worst row of every block)"
    )
    print(
        f"wrote {out}/: manifest.json and {result.blocks} part file(s) with row, values/<input>, base_values, "
        "prediction, residual, output_indices"
    )
    return 0


def _tokens(e: Any, vocab_path: Path) -> list[list[str]]:
    """Token strings per sample from a vocabulary file (line i holds the token of id i)."""
    from onnxshap._errors import InputError

    vocab = vocab_path.read_text(encoding="utf-8").splitlines()
    ids = e.data if not isinstance(e.data, dict) else e.data.get(e.input_names[0])
    if ids is not None and ids.dtype.kind == "f" and e.input_names[0] in e.embedding_values:
        ids = ids.astype(np.int64)  # float ids (checked whole when explained)
    if ids is None or ids.dtype.kind not in "iu" or ids.ndim != 2:
        raise InputError("--vocab applies to token-id inputs (integer arrays of shape (n_samples, seq_len)).")
    if ids.size and (ids.min() < -len(vocab) or ids.max() >= len(vocab)):
        raise InputError(
            f"Token id {int(ids.max())} is out of range for the {len(vocab)}-line vocabulary {str(vocab_path)!r}."
        )
    return [[vocab[int(i)] for i in row] for row in ids]


def _plot(e: Any, path: Path, args: argparse.Namespace, loaded: InputFiles) -> None:
    from onnxshap._errors import MissingDependencyError, OnnxShapError

    try:
        from onnxshap import _plots

        kwargs: dict[str, Any] = {}
        if args.plot_sample is not None:
            kwargs["sample"] = args.plot_sample
        if args.channel_axis is not None:
            kwargs["channel_axis"] = args.channel_axis
        elif loaded.layout in ("NCHW", "NHWC") and not args.inputs_from:
            # Channel axis of one image (no batch axis); an explained intermediate tensor has its own.
            kwargs["channel_axis"] = 0 if loaded.layout == "NCHW" else 2
        if args.vocab:
            kwargs["tokens"] = _tokens(e, Path(args.vocab))
        kind = args.plot_kind
        if kind == "auto":
            kind = _plots.auto_kind(
                e, tokens=kwargs.get("tokens"), sample=kwargs.get("sample"), channel_axis=kwargs.get("channel_axis")
            )
        if args.channel_axis is not None and kind != "image":
            raise UsageError(f"--channel-axis applies to image plots; this plot is --plot-kind {kind}.")
        n_features = int(np.prod(e.values_for(e.input_names[0]).shape[1:-1]))
        # Feature names (a CSV header) label tabular plots only.
        if loaded.feature_names and len(loaded.feature_names) == n_features and kind in ("bar", "waterfall"):
            kwargs["feature_names"] = loaded.feature_names
        if kind == "image" and loaded.sample_names:
            kwargs["sample_names"] = loaded.sample_names  # rows titled by their image files
        _plots.plot(e, path, kind=args.plot_kind, **kwargs)
    except OnnxShapError:
        raise
    except ImportError as exc:  # matplotlib (or the plotting module) missing
        raise MissingDependencyError(
            f"--plot needs matplotlib ({exc}). Install it with: pip install 'onnxshap[plot]'"
        ) from exc


# ----------------------------------------------------------------------------- argument parsing


def _fixed_pair(text: str) -> tuple[str, str]:
    name, sep, file = text.partition("=")
    if not sep or not name or not file:
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=FILE.npy, e.g. h0=h0.npy")
    return name, file


def _column_pair(text: str) -> tuple[str, list[str]]:
    name, sep, columns = text.partition("=")
    items = [c.strip() for c in columns.split(",")]
    if not sep or not name or not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: use INPUT=COLUMN or INPUT=COL1,COL2,..., e.g. x=f0,f1,f2")
    return name, items


def _rule_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected OP=RULE, e.g. MaxPool=cross_max, got {text!r}")
    return key, value


def _shape_spec(text: str) -> tuple[tuple[int, ...], str | None]:
    """ "3,32,32" or "3x32x32", optionally ":int64" -> (shape, dtype)."""
    dims_text, _, dtype = text.partition(":")
    try:
        dims = tuple(int(d) for d in dims_text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"expected the shape of one sample without the batch axis, e.g. 3,32,32 or 30:int64; got {text!r}"
        )
    if dtype:
        try:
            np.dtype(dtype)
        except TypeError:
            raise argparse.ArgumentTypeError(
                f"unknown dtype {dtype!r} in {text!r}; use e.g. float32 or int64"
            ) from None
    return dims, dtype or None


def _sample_list(text: str) -> int | list[int]:
    """--plot-sample: "3" -> 3 (one sample: a waterfall for tabular inputs), "20,21" -> [20, 21]."""
    try:
        items = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a sample index or a list such as 20,21, got {text!r}") from None
    return items[0] if len(items) == 1 else items


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from onnxshap import __version__

    parser = argparse.ArgumentParser(
        prog="onnxshap",
        description="Exact DeepSHAP attributions for ONNX models, compiled with JAX.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "commands in order: convert (framework model -> .onnx), inspect (ops and rules), check (forward\n"
            "pass vs onnxruntime), explain (attributions). Run `onnxshap COMMAND --help` for options and examples.\n"
            "Exit codes: 0 success, 1 error, 2 usage error."
        ),
    )
    parser.add_argument("--version", action="version", version=f"onnxshap {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES[name],
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def add_image_options(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("image inputs (png/jpg files or folders given to --input/--background; needs Pillow)")
        g.add_argument(
            "--image-size",
            type=_positive_int,
            nargs=2,
            metavar=("H", "W"),
            help="resize images to H x W (default: the model's input size)",
        )
        g.add_argument(
            "--scale",
            choices=sorted(SCALES),
            default="0-1",
            help="map pixel values 0..255 to this range (default 0-1, i.e. /255; for -1..1 add --mean 0.5 --std 0.5)",
        )
        g.add_argument(
            "--mean",
            type=float,
            nargs="+",
            metavar="M",
            help="subtract per-channel means after scaling, e.g. 0.485 0.456 0.406",
        )
        g.add_argument(
            "--std",
            type=float,
            nargs="+",
            metavar="S",
            help="then divide by per-channel standard deviations, e.g. 0.229 0.224 0.225",
        )
        g.add_argument(
            "--layout",
            choices=["NCHW", "NHWC"],
            help="channel axis of the model input (default: from the model's input shape)",
        )

    p = add(
        "convert",
        "Convert a Keras, PyTorch, scikit-learn, XGBoost or LightGBM model to ONNX and check it against the framework.",
    )
    p.add_argument(
        "model",
        help="a .keras/.h5, TorchScript .pt, torch.export .pt2, XGBoost .json/.ubj, LightGBM .txt, "
        "or pickled .pkl/.joblib file",
    )
    p.add_argument("-o", metavar="OUT.onnx", help="where to write the ONNX model (default: MODEL with suffix .onnx)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18 for .pt2, 17 otherwise)")
    p.add_argument(
        "--input-shape",
        type=_shape_spec,
        action="append",
        metavar="SHAPE[:DTYPE]",
        help="shape of one sample without the batch axis, e.g. 3,32,32 or 30:int64; once per input, in "
        "order. Needed for TorchScript .pt files, which do not record it",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading files that unpickle (.pkl, .joblib, .pt2, torch.save'd modules): loading "
        "runs code stored in the file, so use it only for files you trust",
    )
    p.add_argument(
        "--rtol",
        type=_positive_float,
        default=1e-4,
        help="parity tolerance relative to the framework's output (default 1e-4)",
    )
    p.add_argument("--atol", type=_positive_float, default=1e-5, help="absolute parity tolerance (default 1e-5)")
    p.set_defaults(func=cmd_convert)

    p = add("inspect", "Show a model's inputs, outputs, ops and the attribution rule each op gets.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--tensors", action="store_true", help="also list every intermediate tensor with its shape")
    p.set_defaults(func=cmd_inspect)

    p = add("check", "Compare onnxshap's forward pass with onnxruntime's, output by output.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument(
        "--input",
        nargs="+",
        metavar="FILE",
        help="inputs: .npy (one input), .npz (by input name), .csv, or images; default: random",
    )
    p.add_argument(
        "--rtol",
        type=_positive_float,
        default=1e-4,
        help="relative tolerance: every element must have |onnxshap - onnxruntime| <= atol + rtol * "
        "|onnxruntime| (default 1e-4; float32 keeps about 7 digits)",
    )
    p.add_argument(
        "--atol",
        type=_positive_float,
        default=1e-5,
        help="absolute tolerance in that test, which decides for outputs near 0 (default 1e-5)",
    )
    add_image_options(p)
    p.set_defaults(func=cmd_check)

    p = add("explain", "Attribute a model's outputs to its inputs (DeepSHAP) and write an .npz file.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="FILE",
        help="samples to explain: .npy, .npz (one array per input name), .csv (header row allowed), "
        "or image files / folders of images",
    )
    p.add_argument(
        "--background", nargs="+", metavar="FILE", help="reference rows (same formats); default: sampled from --input"
    )
    p.add_argument(
        "--background-size",
        type=int,
        metavar="N",
        help=f"use N reference rows, sampled from --background, or from --input when no background "
        f"file is given (default: all background rows; {DEFAULT_BACKGROUND_SIZE} from --input)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for background sampling (default 0)")
    p.add_argument(
        "--output",
        metavar="WHICH",
        help="which outputs to explain: all (default), an index such as 3 (flat over the explained "
        "outputs of one sample), a label such as 'probs[3]' (as in the .npz's output_names), a "
        "list of them such as 0,2, or predicted (each sample's arg-max)",
    )
    p.add_argument(
        "--fixed",
        action="append",
        type=_fixed_pair,
        metavar="NAME=FILE.npy",
        help="an input with one value for every sample and reference, e.g. --fixed h0=h0.npy for "
        "recurrent state, with the shape the model declares (repeatable). An array in --input "
        "that has its input's declared shape instead of one row per sample is taken as fixed too",
    )
    p.add_argument(
        "--outputs-from",
        action="append",
        metavar="TENSOR",
        help="explain this tensor instead of the model output, e.g. the logits before a softmax "
        "(repeatable; names from `onnxshap inspect --tensors`)",
    )
    p.add_argument(
        "--inputs-from",
        action="append",
        metavar="TENSOR",
        help="attribute to this tensor instead of the model input, e.g. an embedding output (repeatable)",
    )
    p.add_argument(
        "--rule",
        action="append",
        type=_rule_pair,
        metavar="OP=RULE",
        help="override a rule, e.g. MaxPool=cross_max (shap-compatible numbers)",
    )
    p.add_argument(
        "--check",
        choices=["raise", "warn", "off"],
        default="raise",
        help="when attributions do not sum to f(x) - mean f(background) (default raise: exit 1)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"samples per explain call (default {DEFAULT_BATCH_SIZE}); lower it if memory runs out",
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--compilation-cache",
        nargs="?",
        const="",
        metavar="DIR",
        help="where compiled passes are kept, so that the next run with the same "
        "model and shapes skips compiling (JAX's persistent cache, on by "
        "default; pruned to 1 GiB). Default $ONNXSHAP_CACHE_DIR, else "
        "$XDG_CACHE_HOME/onnxshap/jax, else ~/.cache/onnxshap/jax; a default "
        "folder that cannot be written is skipped with a note, a DIR given here "
        "is an error",
    )
    cache.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile in memory only (as ONNXSHAP_COMPILATION_CACHE=0 does)",
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr: compiling, then each background chunk of every batch "
        "(default: only on a terminal, never in a pipe)",
    )
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also draw the attributions: .png/.svg/.pdf (needs matplotlib: onnxshap[plot]), or .html "
        "with --plot-kind text",
    )
    p.add_argument(
        "--plot-kind",
        choices=["auto", "image", "text", "bar", "waterfall"],
        default="auto",
        help="kind of plot (default auto: images for image inputs, text for token ids, a "
        "waterfall for one tabular sample (--plot-sample), bars otherwise)",
    )
    p.add_argument(
        "--plot-sample",
        type=_sample_list,
        metavar="I[,J...]",
        help="plot only these samples, e.g. 3 or 20,21 (default: the plot's choice, the first 16)",
    )
    p.add_argument(
        "--channel-axis",
        type=int,
        metavar="N",
        help="the channel axis of one sample in image plots (0: channels first, -1: last), for "
        "explained tensors whose channels the plot cannot tell, e.g. --inputs-from a conv output "
        "of shape 8x4x4 (default: from the image layout, or the axis with 1, 3 or 4 entries)",
    )
    p.add_argument(
        "--vocab", metavar="FILE", help="token ids: a vocabulary file, line i = the token of id i, to label text plots"
    )
    p.add_argument(
        "-o",
        required=True,
        metavar="OUT.npz",
        help="where to write values, base values, residuals and names (a dataset run: a folder)",
    )
    add_image_options(p)
    g = p.add_argument_group(
        "datasets (--engine, or a parquet --input: parquet files in the folder -o; docs/dataset.md)"
    )
    g.add_argument(
        "--engine",
        choices=["local", "ray"],
        help="explain a dataset in this process (local) or on Ray actors (ray; pip install 'onnxshap[ray]'); "
        "default local for a parquet --input",
    )
    g.add_argument("--workers", type=_positive_int, metavar="N", help="Ray actors (--engine ray; default 1)")
    g.add_argument(
        "--block-size",
        type=_positive_int,
        default=4096,
        metavar="N",
        help="rows per part file, the unit that is resumed or retried (default 4096)",
    )
    g.add_argument(
        "--column",
        action="append",
        type=_column_pair,
        metavar="INPUT=COL[,COL...]",
        help="the parquet column (a list column) or feature columns feeding INPUT (repeatable; default: the "
        "column named like the input, else every other numeric column)",
    )
    g.add_argument(
        "--keep", action="append", metavar="COLUMN", help="copy this parquet column into the results (repeatable)"
    )
    g.add_argument("--overwrite", action="store_true", help="replace results in -o written with other arguments")
    g.add_argument(
        "--address",
        metavar="ADDR",
        help="the Ray cluster to run on, e.g. auto or ray://head:10001 (default: a local Ray)",
    )
    p.set_defaults(func=cmd_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code. Ctrl-C at any moment returns 130 with one message
    (onnxshap/_interrupt.py); the program (onnxshap/__main__.py) then exits without interpreter shutdown."""
    from onnxshap._interrupt import EXIT_INTERRUPTED, handling

    with handling() as interrupts:  # outside `interrupts.armed()` a Ctrl-C waits for the command's start
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version (0) or a usage error (2)
            return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        from onnxshap._errors import OnnxShapError

        debug = bool(getattr(args, "debug", False))
        prefix = f"onnxshap {args.command}: error:"
        try:
            # Every command runs on the explainer's modules (JAX, onnx). Importing them here, where a
            # Ctrl-C waits, keeps it from cutting an extension's initialisation short.
            import onnxshap._explainer  # noqa: F401

            with interrupts.armed():
                return int(args.func(args))
        except BaseException as exc:
            # An interrupt can surface as another exception (an extension's ImportError, an error of
            # the code it cut short): it is reported as the interrupt it is.
            if interrupts.requested or isinstance(exc, KeyboardInterrupt):
                note = exc.note if isinstance(exc, DatasetInterrupted) else "no output was written."
                print(f"onnxshap {args.command}: interrupted; {note}", file=sys.stderr)
                return EXIT_INTERRUPTED
            if debug or not isinstance(exc, Exception):
                raise
            if isinstance(exc, (UsageError, ArgumentError)):  # ArgumentError: paths, image options
                print(f"{prefix} {exc}", file=sys.stderr)
                print(f"(run `onnxshap {args.command} --help` for usage and examples)", file=sys.stderr)
                return 2
            if isinstance(exc, (OnnxShapError, OSError, ValueError)):
                print(f"{prefix} {exc}", file=sys.stderr)
                return 1
            if isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in str(exc):
                print(
                    f"{prefix} out of memory ({type(exc).__name__}). {OUT_OF_MEMORY_ADVICE.get(args.command, '')}".rstrip(),
                    file=sys.stderr,
                )
                return 1
            print(
                f"onnxshap {args.command}: internal error: {type(exc).__name__}: {exc}\n"
                "This is a bug in onnxshap: rerun with --debug for the traceback and report it.",
                file=sys.stderr,
            )
            return 1


if __name__ == "__main__":  # `python -m onnxshap.cli`: as the `onnxshap` program, with its Ctrl-C handling
    from onnxshap._interrupt import run_program

    run_program(lambda: main)
