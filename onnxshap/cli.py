"""The `onnxshap` command line: convert, inspect, check, explain.

It parses arguments, reads input files, calls the public API and prints or writes results.
Exit codes: 0 success, 1 error (bad model or input, unsupported op, failed conversion, incomplete
attributions), 2 usage error (bad or missing arguments, missing files), 130 interrupted (Ctrl-C).
Errors print one message on stderr; `--debug` shows the traceback instead. Output files are written
whole or not at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES = {
    "convert": (
        "examples:\n"
        "  onnxshap convert models/frameworks/keras_mlp.keras -o keras_mlp.onnx\n"
        "  onnxshap convert models/frameworks/torch_cnn.pt --input-shape 1,8,8 -o torch_cnn.onnx\n"
        "  onnxshap convert models/frameworks/torch_mlp.pt2 --trust-pickle -o torch_mlp.onnx\n"
        "  onnxshap convert models/frameworks/sklearn_logreg.joblib --trust-pickle -o logreg.onnx\n"
        "\n"
        "Needs the framework: pip install 'onnxshap[torch]', 'onnxshap[keras]' or 'onnxshap[sklearn]'."
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

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
ARRAY_SUFFIXES = frozenset({".npy", ".npz", ".csv"})
#: --scale: pixel values 0..255 -> this range (factor, offset). -1..1 is 0-1 with --mean 0.5 --std 0.5.
SCALES = {"0-1": (1 / 255, 0.0), "0-255": (1.0, 0.0)}
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


def _require_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {path!r} does not exist.")
    return p


def _require_onnx(path: str) -> Path:
    """The model argument of inspect/check/explain: an existing file that is not a framework file."""
    from onnxshap._convert import SUPPORTED_SUFFIXES

    p = _require_file(path, "model file")
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


def _read_csv(path: Path, header: list[str] | None = None) -> np.ndarray:
    """Rows of numbers; a first row that is not numeric is taken as column names (into `header`)."""
    from onnxshap._errors import InputError

    with open(path) as fh:
        first = fh.readline()
        has_rows = any(line.strip() for line in fh)
    cells = [v.strip() for v in first.strip().split(",")]
    try:
        [float(v) for v in cells if v]
        skip = 0
    except ValueError:
        skip = 1
        if header is not None:
            header[:] = [c.strip('"') for c in cells]
    if not (has_rows or (skip == 0 and first.strip())):
        raise InputError(
            f"{str(path)!r} has no data rows" + (" (only a header)" if skip else " (the file is empty)")
            + ": give one row of comma-separated numbers per sample."
        )
    return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, skiprows=skip)


def _read_array_file(path: Path, what: str, header: list[str] | None = None) -> np.ndarray | dict[str, np.ndarray]:
    from onnxshap._errors import InputError

    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            # Our own handle: np.load leaves its file open when the archive is not a zip file.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        return _read_csv(path, header)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # numpy reads any file that is not .npy/.npz as a pickle, and then suggests unpickling it.
        reason = str(exc) if suffix == ".csv" else f"it is not a valid {suffix} file (corrupt, truncated, or another format)"
        raise InputError(
            f"Cannot read {what} file {str(path)!r}: {reason}. Save arrays with np.save (.npy) or np.savez (.npz); "
            "onnxshap never loads pickled data."
        ) from None


def _image_files(paths: Sequence[Path], what: str) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise UsageError(f"{what} folder {str(p)!r} contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
            files += found
        else:
            files.append(p)
    return files


def _image_layout(shape: tuple[Any, ...] | None, requested: str | None) -> tuple[str, int | None, tuple[Any, Any]]:
    """(layout, channels or None if free, (H, W) as the model declares them) for an image input."""
    if shape is None:
        raise UsageError("The model does not declare its input shape, so images cannot be laid out; pass a .npy file.")
    if len(shape) == 3:  # N, H, W: grayscale without a channel axis
        return "NHW", 1, (shape[1], shape[2])
    if len(shape) != 4:
        raise UsageError(f"Images need a model input of rank 4 (or 3 for grayscale without channels); it has {len(shape)}.")

    def is_channels(d: Any) -> bool:
        return isinstance(d, int) and d in (1, 3, 4)

    layout = requested
    if layout is None:
        first, last = is_channels(shape[1]), is_channels(shape[3])
        if first and not last:
            layout = "NCHW"
        elif last and not first:
            layout = "NHWC"
        else:
            raise UsageError(
                f"Cannot tell the channel axis of input shape {list(shape)}: pass --layout NCHW or --layout NHWC."
            )
    c_axis = 1 if layout == "NCHW" else 3
    channels = shape[c_axis] if isinstance(shape[c_axis], int) and shape[c_axis] > 0 else None
    hw = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    return layout, channels, hw


def _read_images(files: Sequence[Path], info: Any, args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """Images -> (float32 array in the model's layout, resized, scaled, normalised per channel; the layout)."""
    from onnxshap._errors import InputError, MissingDependencyError

    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError(
            "Reading images needs Pillow, which is not installed. Install it with: pip install 'onnxshap[image]'"
        ) from exc
    layout, channels, (mh, mw) = _image_layout(info.shape, args.layout)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels or 3)
    if mode is None:
        raise UsageError(f"The model input has {channels} channels; images have 1 (grayscale), 3 (RGB) or 4 (RGBA).")
    size: tuple[int, int] | None = None
    if args.image_size:
        size = (args.image_size[0], args.image_size[1])
    elif isinstance(mh, int) and isinstance(mw, int) and mh > 0 and mw > 0:
        size = (mh, mw)
    pixels = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if size is not None and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels.append(np.asarray(im, dtype=np.float32))
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"Cannot read image {str(f)!r}: {exc}") from exc
    sizes = {p.shape[:2] for p in pixels}
    if len(sizes) > 1:
        raise UsageError(f"The images have different sizes {sorted(sizes)}; pass --image-size H W to resize them.")
    x = np.stack(pixels)
    if x.ndim == 3:
        x = x[..., None]  # grayscale: N, H, W -> N, H, W, 1
    factor, offset = SCALES[args.scale]
    x = x * np.float32(factor) + np.float32(offset)
    n_channels = x.shape[-1]
    for flag, values, apply in (("--mean", args.mean, np.subtract), ("--std", args.std, np.divide)):
        if values:
            if len(values) not in (1, n_channels):
                raise UsageError(f"{flag} takes 1 or {n_channels} values (one per channel); got {len(values)}.")
            x = apply(x, np.asarray(values, dtype=np.float32))
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    elif layout == "NHW":
        x = x[..., 0]
    return np.ascontiguousarray(x, dtype=np.float32), layout


@dataclasses.dataclass
class InputFiles:
    """What was read from --input/--background: one array (one-input models) or a dict by input name,
    plus what labels plots: the CSV column names, the image layout and the image file names (one per
    row), when there were any."""

    data: Any
    feature_names: list[str] | None = None
    layout: str | None = None
    sample_names: list[str] | None = None


def _load_inputs(paths: Sequence[str], model: Any, args: argparse.Namespace, what: str) -> InputFiles:
    """Read --input/--background files: .npy, .npz, .csv, or images (cast to the model's dtypes)."""
    from onnxshap._errors import InputError

    if not model.inputs:
        raise InputError(
            f"The model has no graph inputs (its outputs are constants), so there is nothing to feed from {what} "
            "files or to explain; `onnxshap check MODEL` without --input evaluates it."
        )
    files = [_require_file(p, f"{what} file") for p in paths]
    kinds = {"image" if f.is_dir() or f.suffix.lower() in IMAGE_SUFFIXES else f.suffix.lower() for f in files}
    if kinds == {"image"}:
        floats = [i for i in model.inputs if i.dtype is None or i.dtype.kind == "f"]
        if len(model.inputs) != 1 or not floats:
            raise UsageError(
                f"Images can feed a model with one float input; this model's inputs are "
                f"{', '.join(i.describe() for i in model.inputs)}. Pass an .npz file with one array per input."
            )
        image_files = _image_files(files, what)
        images, layout = _read_images(image_files, model.inputs[0], args)
        return InputFiles(_cast_to_model(images, model), layout=layout, sample_names=[f.name for f in image_files])
    unknown = [str(f) for f in files if f.suffix.lower() not in ARRAY_SUFFIXES | IMAGE_SUFFIXES and not f.is_dir()]
    if unknown:
        raise UsageError(f"{what} file {unknown[0]!r}: use .npy, .npz (one array per input name), .csv, or images (png/jpg).")
    if len(files) != 1:
        raise UsageError(f"Give one .npy/.npz/.csv {what} file (several files are only for images); got {len(files)}.")
    header: list[str] = []
    data = _read_array_file(files[0], what, header)
    names = [i.name for i in model.inputs]
    if isinstance(data, dict) and len(data) == 1 and len(names) == 1 and names[0] not in data:
        data = next(iter(data.values()))  # np.savez(path, x) stores "arr_0": accept it for one-input models
    return InputFiles(_cast_to_model(data, model), feature_names=header or None)


def _cast_to_model(feeds: Any, model: Any) -> Any:
    """Cast floats to the declared float dtype and integers to the declared integer dtype (files are
    often float64 / int64 where models take float32 / int32); integers only when the values fit."""
    declared = {i.name: i.dtype for i in model.inputs}

    def cast(name: str, a: np.ndarray) -> np.ndarray:
        want = declared.get(name)
        if want is None or a.dtype == want:
            return a
        if a.dtype.kind == "f" and want.kind == "f":
            return a.astype(want)
        if a.dtype.kind in "iu" and want.kind in "iu" and a.size:
            info = np.iinfo(want)
            if info.min <= a.min() and a.max() <= info.max:
                return a.astype(want)
        return a

    if isinstance(feeds, dict):
        return {k: cast(k, np.asarray(v)) for k, v in feeds.items()}
    if len(declared) == 1:
        return cast(next(iter(declared)), np.asarray(feeds))
    return feeds


def _rows(data: Any) -> int:
    first = next(iter(data.values())) if isinstance(data, dict) else data
    return int(first.shape[0]) if np.ndim(first) else 0


def _take(data: Any, index: Any) -> Any:
    return {k: v[index] for k, v in data.items()} if isinstance(data, dict) else data[index]


def _sample_rows(data: Any, n: int, seed: int) -> Any:
    total = _rows(data)
    if n >= total:
        return data
    pick = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return _take(data, pick)


# ----------------------------------------------------------------------------- explanations


def _per_sample_fields(e: Any) -> list[str]:
    """Fields of an Explanation with a leading sample axis: arrays, and dicts of arrays (by input)."""

    def per_sample(value: Any) -> bool:
        if isinstance(value, dict):
            return all(v is None or isinstance(v, np.ndarray) for v in value.values())
        return isinstance(value, np.ndarray)

    return [f.name for f in dataclasses.fields(e) if per_sample(getattr(e, f.name))]


def _concat(parts: Sequence[Any]) -> Any:
    """Join per-batch Explanations along the sample axis."""
    if len(parts) == 1:
        return parts[0]

    def cat(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {k: cat([v[k] for v in values]) for k in values[0]}
        if values[0] is None:
            return None
        return np.concatenate(values)

    return dataclasses.replace(parts[0], **{f: cat([getattr(p, f) for p in parts]) for f in _per_sample_fields(parts[0])})


def _head(e: Any, n: int) -> Any:
    """The first n samples of an Explanation (drops the rows that pad the last batch)."""

    def cut(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: cut(a) for k, a in v.items()}
        return None if v is None else v[:n]

    return dataclasses.replace(e, **{f: cut(getattr(e, f)) for f in _per_sample_fields(e)})


def _pad(data: Any, n: int) -> Any:
    """Pad to n rows by repeating the last row, so every batch has the same shape (no recompile)."""
    rows = _rows(data)
    if rows >= n:
        return data
    index = np.concatenate([np.arange(rows), np.full(n - rows, rows - 1)])
    return _take(data, index)


# ----------------------------------------------------------------------------- commands


def cmd_convert(args: argparse.Namespace) -> int:
    from onnxshap._convert import SUPPORTED_SUFFIXES, convert_file
    from onnxshap._errors import ConversionError
    from onnxshap._model import save_proto

    source = _require_file(args.model, "model file")
    suffix = source.suffix.lower()
    if suffix == ".onnx":
        raise UsageError(f"{args.model!r} is already ONNX: run `onnxshap inspect {args.model}` or explain it directly.")
    if suffix not in SUPPORTED_SUFFIXES and not source.is_dir():
        raise UsageError(
            f"cannot tell the framework of {args.model!r} from its suffix {suffix or '(none)'}: use .keras/.h5 (Keras), "
            ".pt/.pth (TorchScript), .pt2 (torch.export), or .pkl/.pickle/.joblib (scikit-learn)."
        )
    # A file that must be unpickled without --trust-pickle is refused by convert_file (ConversionError,
    # exit 1) for every suffix, not here as a usage error (exit 2): for a .pt file only torch can tell,
    # by opening it, whether it is a TorchScript archive (no pickle) or a module saved with torch.save.
    out = _require_output_dir(args.o or str(source.with_suffix(".onnx")), "-o")
    shapes = [s for s, _ in args.input_shape] if args.input_shape else None
    dtypes = [d or "float32" for _, d in args.input_shape] if args.input_shape and any(d for _, d in args.input_shape) else None
    try:
        proto, report = convert_file(
            source, opset=args.opset, input_shape=shapes, input_dtype=dtypes, trust_pickle=args.trust_pickle,
            rtol=args.rtol, atol=args.atol,
        )
    except ConversionError as exc:
        if exc.report is not None:
            print(exc.report.summary())  # type: ignore[attr-defined]
        raise
    print(f"converted {args.model}: {report.source}")
    print(f"  with {report.exporter}")
    for line in _describe_io(proto):
        print(f"  {line}")
    print(report.summary())
    size = save_proto(proto, out)
    import onnxshap

    problems = onnxshap.unsupported_ops(proto)
    if problems:
        print(f"warning: onnxshap cannot explain this model yet ({len(problems)} unsupported op type(s)); "
              f"run `onnxshap inspect {out}` for details.", file=sys.stderr)
    print(f"wrote {out} ({size} bytes)")
    return 0


def _describe_io(proto: Any) -> list[str]:
    from onnxshap._graph import load_graph

    graph = load_graph(proto).graph
    return [f"input  {i.describe()}" for i in graph.inputs] + [f"output {o.describe()}" for o in graph.outputs]


def cmd_inspect(args: argparse.Namespace) -> int:
    import onnxshap
    from onnxshap._graph import load_graph
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
    found = _index_lookups(graph)
    lookups = [e for per_input in found.values() for e in per_input]
    floats, tokens = default_explained(graph, found)
    explained = floats + [e.tensor for e in tokens]
    for line in _input_roles(graph, floats, tokens, found):
        print(line)
    what = " and ".join(w for w, there in (("the float inputs", floats), ("the token ids' lookups", tokens)) if there)
    varying = graph.descendants_of(explained)
    counts = Counter((n.domain, n.op_type, _node_rule(n, varying)) for n in nodes)
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
        print(f"{len(problems)} op type(s) or control-flow node(s) are not supported: onnxshap cannot explain this "
              "model (up to a tensor before them it can: --outputs-from).", file=sys.stderr)
        return 1
    print(f"all {len(counts)} op types are supported (onnxshap {onnxshap.__version__}).")
    return 0


def _index_lookups(graph: Any) -> dict[str, list[Any]]:
    """Per id input (integers, or floats used only as ids), its lookups (embeddings, one-hot encodings)."""
    from onnxshap._errors import UnsupportedOpError
    from onnxshap._interpreter import fold_constants
    from onnxshap._tokens import find_lookups

    try:
        constants: dict[str, Any] = fold_constants(graph)
    except UnsupportedOpError:  # an unsupported op among the constants: inspect still lists what it can
        constants = dict(graph.initializers)
    return find_lookups(graph, constants)


def _input_roles(graph: Any, floats: Sequence[str], tokens: Sequence[Any], found: dict[str, list[Any]]) -> list[str]:
    """What `explain` without --inputs-from does with each graph input (the Explainer's own choice,
    `_tokens.default_explained`): attributes to it, explains it at its lookup, or holds it."""
    upstream = graph.ancestors([*floats, *(e.tensor for e in tokens)])
    token_inputs = {e.input for e in tokens}
    lines = ["explain without --inputs-from:"]
    for i in graph.inputs:
        if i.name in floats:
            role = "explained (a float input)"
        elif i.name in token_inputs:
            via = ", ".join(repr(e.tensor) for e in tokens if e.input == i.name)
            role = f"ids, explained at their lookup {via}; values summed per position"
        elif i.name in upstream:
            role = "feeds an explained lookup (takes the background's values)"
        elif i.name in found:
            role = "ids of a smaller lookup (segment or position ids): held at the sample's values"
        elif i.dtype is not None and i.dtype.kind in "iub" and _is_mask(graph, i.name):
            role = "a mask: held at the sample's values"
        else:
            role = "held at the sample's values (not upstream of an explained input)"
        lines.append(f"  {i.name}: {role}")
    if not floats and not tokens:
        lines.append("  nothing to explain by default: name float tensors with --inputs-from (see --tensors)")
    return lines


def _node_rule(node: Any, varying: set[str]) -> str:
    """The rule family a node gets: the table's, or what it reduces to given which inputs vary."""
    if node.spec is None:
        return "UNSUPPORTED"
    if node.problem is not None:
        return "UNSUPPORTED (control flow that cannot be lowered)"
    n_varying = sum(1 for i in node.inputs if i and i in varying)
    if n_varying == 0:
        return "none (constant)"
    if node.spec.rule == "bilinear" and n_varying == 1:
        return "linear (bilinear; one operand is constant)"
    return str(node.spec.rule)


#: Ops that read an integer input as a condition: such an input is a mask (0/1), not a count or an id.
_MASK_READERS = frozenset({"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Where"})
#: Ops that pass integers on with their values unchanged (a mask is often unsqueezed before it is read).
_VALUE_KEEPING = frozenset({"Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Transpose"})


def _is_mask(graph: Any, name: str) -> bool:
    """Whether integer input `name` is a mask: so named, or read as a condition (a comparison, Where,
    a Cast to bool), directly or after reshapes and integer casts."""
    from onnxshap._tokens import _kind, _np_dtype

    if "mask" in name.lower():
        return True
    region = {name}
    for node in graph.nodes:  # topological order: a reshaped copy joins `region` before it is read
        if not region.intersection(node.reads):
            continue
        cast_to = _kind(_np_dtype(int(node.attrs.get("to", 0)))) if node.op_type == "Cast" else None
        if node.op_type in _MASK_READERS or cast_to == "b":
            return True
        if node.op_type in _VALUE_KEEPING or cast_to in ("i", "u"):
            region.update(o for o in node.outputs if o)
    return False


def _random_feeds(model: Any) -> tuple[dict[str, np.ndarray], list[str]]:
    """Seeded random inputs (free dims 2) that exercise the model, and per input what was drawn.

    Zeros would hide faults (every id the same row, every mask off, masked attention all NaN): ids
    that feed a lookup are drawn within its table, masks are 0/1 (mostly 1), other integers small
    and non-negative, booleans True/False, floats standard normal.
    """
    from onnxshap._tokens import find_embeddings

    rng = np.random.default_rng(0)
    lookups = find_embeddings(model)
    feeds: dict[str, np.ndarray] = {}
    drawn: list[str] = []
    for i in model.inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else 2 for d in (i.shape or ()))
        dtype = i.dtype or np.dtype(np.float32)
        kind = "f" if dtype.kind == "V" and "float" in dtype.name else dtype.kind  # ml_dtypes: bfloat16, float8
        if i.name in lookups:
            found = lookups[i.name]
            high = min(e.vocab for e in found)
            if kind in "iu":
                high = min(high, int(np.iinfo(dtype).max) + 1)
            value, how = rng.integers(0, high, shape), f"in [0, {high}) (ids of {found[0].via})"
        elif kind == "b":
            value, how = rng.random(shape) < 0.5, "random True/False"
        elif kind in "iu" and _is_mask(model.graph, i.name):
            value, how = rng.random(shape) < 0.8, "0/1, mostly 1 (a mask)"
        elif kind in "iu":
            value, how = rng.integers(0, 10, shape), "in [0, 10)"
        elif kind == "f":
            value, how = rng.standard_normal(shape), "standard normal"
        else:
            value, how = np.zeros(shape), "zeros"
        feeds[i.name] = np.asarray(value).astype(dtype)  # an array even for shape (): rng gives scalars
        drawn.append(f"{i.name} {dtype}{list(shape)} {how}")
    return feeds, drawn


def _compare(value: Any, ref: Any, rtol: float, atol: float) -> tuple[str, float]:
    """(description, the worst element's share of its tolerance) of our output vs onnxruntime's.

    Floats agree where |ours - ref| <= atol + rtol * |ref| (numpy.allclose's test), and only if NaN
    and infinities are at the same places in both; other dtypes must be equal. A share above 1 is a
    mismatch (inf for a different shape, dtype, integer value, NaN or infinity).
    """

    def at(mask: np.ndarray) -> tuple[int, tuple[int, ...], str]:
        """(count, first index, "[i, j]") of the True elements of `mask`."""
        index = tuple(int(k) for k in np.unravel_index(int(np.argmax(mask)), mask.shape))
        return int(np.count_nonzero(mask)), index, str(list(index))

    if isinstance(value, list):  # ZipMap: a list of {label: probability} dicts
        same_keys = len(value) == len(ref) and all(a.keys() == b.keys() for a, b in zip(value, ref))
        if not same_keys:
            return "DIFFERENT labels from onnxruntime", float("inf")
        ours = np.array([[a[k] for k in sorted(a)] for a in value], dtype=np.float64)
        theirs = np.array([[b[k] for k in sorted(b)] for b in ref], dtype=np.float64)
        value, ref = ours, theirs
    value, ref = np.asarray(value), np.asarray(ref)
    head = f"shape {list(value.shape)}"
    if value.shape != ref.shape:
        return f"{head} but onnxruntime gives {list(ref.shape)}", float("inf")
    if value.dtype.kind == "V" and ref.dtype.kind == "u" and value.dtype.itemsize == ref.dtype.itemsize:
        ref = ref.view(value.dtype)  # onnxruntime returns float 8 tensors as their raw bytes (uint8)
    if value.dtype != ref.dtype:
        return f"{head}, dtype {value.dtype} but onnxruntime gives {ref.dtype}", float("inf")
    if value.dtype.kind == "V":  # ml_dtypes (bfloat16, float 8, int4): compare the values
        value, ref = value.astype(np.float64), ref.astype(np.float64)
    if value.dtype.kind not in "fc":
        if np.array_equal(value, ref):
            return f"{head}, identical to onnxruntime", 0.0
        n, k, where = at(value != ref)
        return (f"{head}, DIFFERENT from onnxruntime at {n} of {value.size} position(s) "
                f"(first at {where}: {value[k]} vs onnxruntime {ref[k]})"), float("inf")
    wide = np.complex128 if value.dtype.kind == "c" else np.float64
    a, b = value.astype(wide), ref.astype(wide)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    for only, side in ((nan_a & ~nan_b, "onnxshap's output, not in onnxruntime's"),
                       (nan_b & ~nan_a, "onnxruntime's output, not in onnxshap's")):
        if only.any():
            n, k, where = at(only)
            return (f"{head}, NaN at {n} position(s) in {side} "
                    f"(first at {where}: {a[k]} vs onnxruntime {b[k]})"), float("inf")
    infinite = (np.isinf(a) | np.isinf(b)) & ~nan_a
    if np.any(infinite & (a != b)):
        n, k, where = at(infinite & (a != b))
        return (f"{head}, infinities differ at {n} position(s) "
                f"(first at {where}: {a[k]} vs onnxruntime {b[k]})"), float("inf")
    notes = [head]
    for label, same in (("NaN", nan_a), ("+inf", infinite & (a.real > 0)), ("-inf", infinite & ~(a.real > 0))):
        if same.any():
            notes.append(f"{label} at the same {int(np.count_nonzero(same))} position(s) in both")
    finite = ~(nan_a | infinite)
    if not finite.any():
        return ", ".join([*notes, "no finite values"]), 0.0
    a, b = np.where(finite, a, 0), np.where(finite, b, 0)  # no inf - inf below
    diff = np.abs(a - b)
    allowed = atol + rtol * np.abs(b)
    share = np.divide(diff, allowed, out=np.where(diff > 0, np.inf, 0.0), where=allowed > 0)
    worst = float(np.max(share))
    text = f"max abs difference {float(np.max(diff)):.3g}"
    if worst > 0:
        _, k, where = at(share == worst)
        text += (f"; worst at {where}: {a[k]:.8g} vs onnxruntime {b[k]:.8g} "
                 f"(|difference| {diff[k]:.3g}, tolerance {allowed[k]:.3g})")
    return ", ".join([*notes, text]), worst


def cmd_check(args: argparse.Namespace) -> int:
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    import onnxshap
    from onnxshap._errors import ModelLoadError

    path = _require_onnx(args.model)
    model = onnxshap.load(path)
    if args.input:
        feeds = _load_inputs(args.input, model, args, "input").data
        if not isinstance(feeds, dict):
            feeds = {model.input_names[0]: feeds}
        shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in feeds.items())
        print(f"inputs from {', '.join(args.input)}: {shapes}")
    else:
        feeds, drawn = _random_feeds(model)
        print("inputs from random input (seed 0):\n" + "\n".join(f"  {line}" for line in drawn))
    ours = model.run(feeds)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # The model as written: optimised, onnxruntime fuses QDQ pairs into integer kernels (QLinearConv,
    # ...), which round differently, so a faithful forward pass would look like a mismatch.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    refused = (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidArgument, ort_state.InvalidProtobuf,
               ort_state.NotImplemented, ort_state.RuntimeException, ort_state.EPFail)
    stage = "load"
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        stage = "run"
        theirs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except refused as exc:
        first = next((line.strip().rstrip(".") for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelLoadError(
            f"onnxruntime could not {stage} the model {str(path)!r}: {first}. `onnxshap check` compares onnxshap's "
            f"forward pass with onnxruntime's, so it needs onnxruntime to {stage} the model; onnxshap itself ran it. "
            "Check the model with onnx.checker.check_model(path, full_check=True), or compare Model.run with "
            "another reference in Python."
        ) from exc
    worst, failed = 0.0, []
    for name, value in ours.items():
        text, share = _compare(value, theirs[name], args.rtol, args.atol)
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
        raise UsageError(f"--output {text!r}: use all, predicted, an index such as 3, a label such as 'probs[3]', "
                         "or a list such as 0,2.")
    return [int(v) if re.fullmatch(r"-?\d+", v) else v for v in items]


def _fixed_files(pairs: Sequence[tuple[str, str]], model: Any) -> dict[str, np.ndarray]:
    """--fixed NAME=FILE.npy: one value per input, cast to the model's dtype."""
    fixed: dict[str, np.ndarray] = {}
    for name, file in pairs:
        data = _read_array_file(_require_file(file, "--fixed file"), "--fixed")
        if isinstance(data, dict):
            if len(data) != 1:
                raise UsageError(f"--fixed {name}={file}: give one array (.npy), not {len(data)} arrays.")
            data = next(iter(data.values()))
        fixed[name] = _cast_to_model({name: data}, model)[name]
    return fixed


def _refuse_overwriting_inputs(args: argparse.Namespace, out: Path, plot: Path | None) -> None:
    """-o and --plot must not name a file the command reads (it would be replaced), nor each other."""
    read = [("the model", args.model), *(("--input", p) for p in args.input), *(("--background", p) for p in args.background or ()),
            *(("--fixed", f) for _, f in args.fixed or ()), *((("--vocab", args.vocab),) if args.vocab else ())]
    written = [("-o", out), *((("--plot", plot),) if plot is not None else ())]
    for flag, target in written:
        for source_flag, source in read:
            if Path(source).exists() and Path(source).resolve() == target.resolve():
                raise UsageError(f"{flag} {str(target)!r} is also {source_flag}: it would be replaced by the result. "
                                 "Write the result to another file.")
    if plot is not None and plot.resolve() == out.resolve():
        raise UsageError(f"-o and --plot name the same file {str(out)!r}; give each its own name.")


def cmd_explain(args: argparse.Namespace) -> int:
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
        _require_file(args.vocab, "--vocab file")
    output = _parse_output(args.output)
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")
    if args.background_size is not None and args.background_size < 1:
        raise UsageError("--background-size must be at least 1.")
    if args.compilation_cache is not None:
        onnxshap.enable_compilation_cache(args.compilation_cache or None)
    model = onnxshap.load(path)
    loaded = _load_inputs(args.input, model, args, "input")
    x = loaded.data
    fixed = _fixed_files(args.fixed or [], model)
    # Check the samples before the background is sampled from them (errors then name the input).
    fed = [i for i in model.inputs if i.name not in fixed]
    if not isinstance(x, dict) and len(fed) > 1:
        raise UsageError(
            f"The model has {len(fed)} inputs besides --fixed ones ({', '.join(i.describe() for i in fed)}): pass an "
            ".npz file with one array per input name, e.g. np.savez('x.npz', " + ", ".join(f"{i.name}=..." for i in fed) + ")."
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
                    raise UsageError(f"Input {name!r} is one fixed value for every sample, but the background file "
                                     "holds another value for it; leave it out of the background.")
        if args.background_size is not None:
            background = _sample_rows(background, args.background_size, args.seed)
    else:
        background = _sample_rows(x, args.background_size or DEFAULT_BACKGROUND_SIZE, args.seed)
        n_bg, n_x = _rows(background), _rows(x)
        used = f"{n_bg} of the {n_x} --input rows (sampled, --seed {args.seed}) are" if n_bg < n_x else f"all {n_x} --input rows are"
        background_note = (f"note: no --background: {used} the reference, so each sample is explained against the "
                           "others; pass --background FILE with typical data for a fixed reference.")
    explainer = onnxshap.Explainer(
        model, background, inputs=args.inputs_from, outputs=args.outputs_from, rules=dict(args.rule or []),
        check=args.check, fixed=fixed or None,
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
                parts.append(_head(explainer.explain(_pad(chunk, size), output=output, progress=progress), stop - start))
            else:
                parts.append(explainer.explain(chunk, output=output, progress=progress))
    finally:
        if bar is not None:
            bar.close()  # ends its line before an error message
    e = _concat(parts)
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
    print(f"completeness: attributions sum to f(x) - mean f(background) within {e.max_relative_residual:.2g} (relative)")
    shapes = ", ".join(f"values/{name} {list(e.values_for(name).shape)}" for name in e.input_names)
    print(f"wrote {out}: {shapes}, base_values, prediction, residual {list(e.residual.shape)}, names")
    if plot is not None:
        print(f"wrote {plot}")
    if background_note:
        print(background_note, file=sys.stderr)
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
        raise InputError(f"Token id {int(ids.max())} is out of range for the {len(vocab)}-line vocabulary {str(vocab_path)!r}.")
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
            kind = _plots.auto_kind(e, tokens=kwargs.get("tokens"), sample=kwargs.get("sample"),
                                    channel_axis=kwargs.get("channel_axis"))
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


def _rule_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected OP=RULE, e.g. MaxPool=cross_max, got {text!r}")
    return key, value


def _shape_spec(text: str) -> tuple[tuple[int, ...], str | None]:
    """"3,32,32" or "3x32x32", optionally ":int64" -> (shape, dtype)."""
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
            raise argparse.ArgumentTypeError(f"unknown dtype {dtype!r} in {text!r}; use e.g. float32 or int64") from None
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
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name], parents=[common],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    def add_image_options(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("image inputs (png/jpg files or folders given to --input/--background; needs Pillow)")
        g.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                       help="resize images to H x W (default: the model's input size)")
        g.add_argument("--scale", choices=sorted(SCALES), default="0-1",
                       help="map pixel values 0..255 to this range (default 0-1, i.e. /255; for -1..1 add --mean 0.5 --std 0.5)")
        g.add_argument("--mean", type=float, nargs="+", metavar="M",
                       help="subtract per-channel means after scaling, e.g. 0.485 0.456 0.406")
        g.add_argument("--std", type=float, nargs="+", metavar="S",
                       help="then divide by per-channel standard deviations, e.g. 0.229 0.224 0.225")
        g.add_argument("--layout", choices=["NCHW", "NHWC"],
                       help="channel axis of the model input (default: from the model's input shape)")

    p = add("convert", "Convert a Keras, PyTorch or scikit-learn model to ONNX and check it against the framework.")
    p.add_argument("model", help="a .keras/.h5, TorchScript .pt, torch.export .pt2, or scikit-learn .pkl/.joblib file")
    p.add_argument("-o", metavar="OUT.onnx", help="where to write the ONNX model (default: MODEL with suffix .onnx)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18 for .pt2, 17 otherwise)")
    p.add_argument("--input-shape", type=_shape_spec, action="append", metavar="SHAPE[:DTYPE]",
                   help="shape of one sample without the batch axis, e.g. 3,32,32 or 30:int64; once per input, in "
                        "order. Needed for TorchScript .pt files, which do not record it")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow loading files that unpickle (.pkl, .joblib, .pt2, torch.save'd modules): loading "
                        "runs code stored in the file, so use it only for files you trust")
    p.add_argument("--rtol", type=_positive_float, default=1e-4,
                   help="parity tolerance relative to the framework's output (default 1e-4)")
    p.add_argument("--atol", type=_positive_float, default=1e-5, help="absolute parity tolerance (default 1e-5)")
    p.set_defaults(func=cmd_convert)

    p = add("inspect", "Show a model's inputs, outputs, ops and the attribution rule each op gets.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--tensors", action="store_true", help="also list every intermediate tensor with its shape")
    p.set_defaults(func=cmd_inspect)

    p = add("check", "Compare onnxshap's forward pass with onnxruntime's, output by output.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--input", nargs="+", metavar="FILE",
                   help="inputs: .npy (one input), .npz (by input name), .csv, or images; default: random")
    p.add_argument("--rtol", type=_positive_float, default=1e-4,
                   help="relative tolerance: every element must have |onnxshap - onnxruntime| <= atol + rtol * "
                        "|onnxruntime| (default 1e-4; float32 keeps about 7 digits)")
    p.add_argument("--atol", type=_positive_float, default=1e-5,
                   help="absolute tolerance in that test, which decides for outputs near 0 (default 1e-5)")
    add_image_options(p)
    p.set_defaults(func=cmd_check)

    p = add("explain", "Attribute a model's outputs to its inputs (DeepSHAP) and write an .npz file.")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--input", required=True, nargs="+", metavar="FILE",
                   help="samples to explain: .npy, .npz (one array per input name), .csv (header row allowed), "
                        "or image files / folders of images")
    p.add_argument("--background", nargs="+", metavar="FILE",
                   help="reference rows (same formats); default: sampled from --input")
    p.add_argument("--background-size", type=int, metavar="N",
                   help=f"use N reference rows, sampled from --background, or from --input when no background "
                        f"file is given (default: all background rows; {DEFAULT_BACKGROUND_SIZE} from --input)")
    p.add_argument("--seed", type=int, default=0, help="seed for background sampling (default 0)")
    p.add_argument("--output", metavar="WHICH",
                   help="which outputs to explain: all (default), an index such as 3 (flat over the explained "
                        "outputs of one sample), a label such as 'probs[3]' (as in the .npz's output_names), a "
                        "list of them such as 0,2, or predicted (each sample's arg-max)")
    p.add_argument("--fixed", action="append", type=_fixed_pair, metavar="NAME=FILE.npy",
                   help="an input with one value for every sample and reference, e.g. --fixed h0=h0.npy for "
                        "recurrent state, with the shape the model declares (repeatable). An array in --input "
                        "that has its input's declared shape instead of one row per sample is taken as fixed too")
    p.add_argument("--outputs-from", action="append", metavar="TENSOR",
                   help="explain this tensor instead of the model output, e.g. the logits before a softmax "
                        "(repeatable; names from `onnxshap inspect --tensors`)")
    p.add_argument("--inputs-from", action="append", metavar="TENSOR",
                   help="attribute to this tensor instead of the model input, e.g. an embedding output (repeatable)")
    p.add_argument("--rule", action="append", type=_rule_pair, metavar="OP=RULE",
                   help="override a rule, e.g. MaxPool=cross_max (shap-compatible numbers)")
    p.add_argument("--check", choices=["raise", "warn", "off"], default="raise",
                   help="when attributions do not sum to f(x) - mean f(background) (default raise: exit 1)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"samples per explain call (default {DEFAULT_BATCH_SIZE}); lower it if memory runs out")
    p.add_argument("--compilation-cache", nargs="?", const="", metavar="DIR",
                   help="keep compiled passes on disk so the next run with the same model and shapes skips "
                        "compiling (JAX's persistent cache; DIR default ~/.cache/onnxshap/jax)")
    p.add_argument("--progress", action="store_true",
                   help="show a progress bar on stderr: compiling, then each background chunk of every batch "
                        "(default: only on a terminal, never in a pipe)")
    p.add_argument("--plot", metavar="OUT.png",
                   help="also draw the attributions: .png/.svg/.pdf (needs matplotlib: onnxshap[plot]), or .html "
                        "with --plot-kind text")
    p.add_argument("--plot-kind", choices=["auto", "image", "text", "bar", "waterfall"], default="auto",
                   help="kind of plot (default auto: images for image inputs, text for token ids, a "
                        "waterfall for one tabular sample (--plot-sample), bars otherwise)")
    p.add_argument("--plot-sample", type=_sample_list, metavar="I[,J...]",
                   help="plot only these samples, e.g. 3 or 20,21 (default: the plot's choice, the first 16)")
    p.add_argument("--channel-axis", type=int, metavar="N",
                   help="the channel axis of one sample in image plots (0: channels first, -1: last), for "
                        "explained tensors whose channels the plot cannot tell, e.g. --inputs-from a conv output "
                        "of shape 8x4x4 (default: from the image layout, or the axis with 1, 3 or 4 entries)")
    p.add_argument("--vocab", metavar="FILE",
                   help="token ids: a vocabulary file, line i = the token of id i, to label text plots")
    p.add_argument("-o", required=True, metavar="OUT.npz", help="where to write values, base values, residuals and names")
    add_image_options(p)
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
                print(f"onnxshap {args.command}: interrupted; no output was written.", file=sys.stderr)
                return EXIT_INTERRUPTED
            if debug or not isinstance(exc, Exception):
                raise
            if isinstance(exc, UsageError):
                print(f"{prefix} {exc}", file=sys.stderr)
                print(f"(run `onnxshap {args.command} --help` for usage and examples)", file=sys.stderr)
                return 2
            if isinstance(exc, (OnnxShapError, OSError, ValueError)):
                print(f"{prefix} {exc}", file=sys.stderr)
                return 1
            if isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in str(exc):
                print(f"{prefix} out of memory ({type(exc).__name__}). {OUT_OF_MEMORY_ADVICE.get(args.command, '')}".rstrip(),
                      file=sys.stderr)
                return 1
            print(
                f"onnxshap {args.command}: internal error: {type(exc).__name__}: {exc}\n"
                "This is a bug in onnxshap: rerun with --debug for the traceback and report it.",
                file=sys.stderr,
            )
            return 1


if __name__ == "__main__":  # `python -m onnxshap.cli`: the program's entry point, with its Ctrl-C handling
    from onnxshap.__main__ import main as program

    program()
