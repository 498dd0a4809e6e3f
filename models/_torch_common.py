"""PyTorch helpers of the export scripts: settings, seeding, the two torch.onnx exporters.

Importing this module sets what every torch export wants before a model is built: warnings
off, one CPU thread and deterministic algorithms (the files must be byte-stable). Only used by
models/export_*.py; the framework-free helpers are in _common.py.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Collection, Sequence
from functools import partial

import _common as C
import numpy as np
import onnx
import onnxscript
import torch
from torch import nn

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

TS_OPSET = 17
DYNAMO_OPSET = 18
FRAMEWORK = f"torch {torch.__version__}"
#: The manifest's "exporter" and "converter_version" of each exporter.
TS_EXPORTER = "torch.onnx TorchScript"
DYNAMO_EXPORTER = "torch.onnx dynamo"
TS_CONV = f"torch.onnx TorchScript exporter, opset {TS_OPSET}"
DYNAMO_CONV = f"torch.onnx dynamo exporter (onnxscript {onnxscript.__version__}), opset {DYNAMO_OPSET}"


def seed(s: int) -> None:
    """Seed torch and numpy's global generator with `s`."""
    torch.manual_seed(s)
    np.random.seed(s)


def make(cls: Callable[..., nn.Module], s: int, *args: object) -> nn.Module:
    """`cls(*args)` initialised right after seed(s), in eval mode."""
    seed(s)
    return cls(*args).eval()


def batch_axes(names: Sequence[str], dim: str = "batch") -> dict[str, dict[int, str]]:
    """TorchScript dynamic_axes: axis 0 of each of `names` is the dynamic dim `dim`."""
    return {n: {0: dim} for n in names}


def batch_shapes(names: Sequence[str]) -> dict[str, dict[int, torch.export.Dim]]:
    """dynamo dynamic_shapes: axis 0 of each input in `names` (forward()'s argument names) is
    one dynamic batch of 1 to 4096."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return {n: {0: batch} for n in names}


def export_ts(
    model: nn.Module,
    example: tuple,
    path: str,
    in_names: Sequence[str],
    out_names: Sequence[str],
    dynamic_axes: dict | None = None,
) -> None:
    """TorchScript export (dynamo=False, opset 17, eval mode, no constant folding) to `path`.

    dynamic_axes: as torch.onnx.export takes it (see batch_axes); None (default) for static shapes.
    """
    torch.onnx.export(
        model,
        example,
        path,
        dynamo=False,
        opset_version=TS_OPSET,
        input_names=list(in_names),
        output_names=list(out_names),
        dynamic_axes=dynamic_axes,
        training=torch.onnx.TrainingMode.EVAL,
        do_constant_folding=False,
    )


def export_dynamo(
    model: nn.Module,
    example: tuple,
    path: str,
    in_names: Sequence[str],
    out_names: Sequence[str],
    dynamic_shapes: dict | tuple | None = None,
    optimize: bool = True,
) -> None:
    """dynamo export (dynamo=True, opset 18) to `path`, weights inside the one file.

    dynamic_shapes: as torch.onnx.export takes it (see batch_shapes); None (default) for static
    shapes. optimize: the exporter's graph optimisation (default on; it folds eval-mode
    BatchNorm into the preceding Conv, among others).
    """
    # The exporter may still write large weights as external data next to its file: export
    # into a temporary folder, load everything back and save one self-contained file.
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = os.path.join(tmp, "m.onnx")
        torch.onnx.export(
            model,
            example,
            tmp_path,
            dynamo=True,
            opset_version=DYNAMO_OPSET,
            input_names=list(in_names),
            output_names=list(out_names),
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            optimize=optimize,
        )
        m = onnx.load(tmp_path, load_external_data=True)
    onnx.save(m, path, save_as_external_data=False)


#: (file suffix, export(model, example, path, in_names, out_names), exporter, converter)
Variant = tuple[str, Callable[..., None], str, str]


def batch_variants(in_names: Sequence[str], out_names: Sequence[str], noopt: bool = False) -> list[Variant]:
    """Both exporters with a dynamic batch on axis 0 of every input and output.

    noopt adds "dynamo_noopt", the dynamo export with optimize=False (it keeps BatchNorm).
    """
    ts = partial(export_ts, dynamic_axes=batch_axes(list(in_names) + list(out_names)))
    dynamo = partial(export_dynamo, dynamic_shapes=batch_shapes(in_names))
    variants = [("ts", ts, TS_EXPORTER, TS_CONV), ("dynamo", dynamo, DYNAMO_EXPORTER, DYNAMO_CONV)]
    if noopt:
        variants.append(
            ("dynamo_noopt", partial(dynamo, optimize=False), DYNAMO_EXPORTER, DYNAMO_CONV + ", optimize=False")
        )
    return variants


def run_torch(model: nn.Module, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs (a tuple or one tensor) as arrays, feeds passed positionally."""
    with torch.no_grad():
        out = model(*[torch.from_numpy(v) for v in feeds.values()])
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in out]


def export_batch_model(
    run: C.Results,
    name: str,
    model: nn.Module,
    sample: Callable[[np.random.Generator, int], dict[str, np.ndarray]],
    out_names: Sequence[str],
    *,
    description: str,
    input_range: object,
    extra: dict | None = None,
    noopt: bool = False,
    second_batch: int | None = None,
    show_ops: Collection[str] = (),
) -> None:
    """Write <name>_ts and <name>_dynamo (and <name>_dynamo_noopt with `noopt`), each with a
    dynamic batch on axis 0, and add their manifest entries to `run`.

    sample(g, n): feeds of n rows (their keys are the input names, in forward()'s order). The
    example is sample(default_rng(123), 2); each file is checked and compared with torch in
    onnxruntime on sample(default_rng(42), 3), and on `second_batch` rows (default_rng(7)) if
    given. show_ops: op types whose nodes are printed (see C.node_summaries).
    """
    model.eval()
    ex_feeds = sample(np.random.default_rng(123), 2)
    example = tuple(torch.from_numpy(v) for v in ex_feeds.values())
    in_names = list(ex_feeds)
    feeds = sample(np.random.default_rng(42), 3)
    want = run_torch(model, feeds)
    for suffix, fn, exporter, conv in batch_variants(in_names, out_names, noopt):
        full = f"{name}_{suffix}"

        def export(full: str = full, fn: Callable[..., None] = fn, exporter: str = exporter, conv: str = conv) -> None:
            path = C.model_path(full)
            fn(model, example, path, in_names, out_names)
            C.check_file(path)
            diff = C.compare(full, C.ort_run(path, feeds), want)
            if second_batch:  # through the dynamic axis with another batch size
                more = sample(np.random.default_rng(7), second_batch)
                C.compare(f"{full} (batch {second_batch})", C.ort_run(path, more), run_torch(model, more))
            e = run.entries[full] = C.describe(
                full,
                exporter=exporter,
                framework=FRAMEWORK,
                converter=conv,
                max_abs_diff=diff,
                description=description,
                input_range=input_range,
                extra=extra,
            )
            print(
                f"  {full}: {e['file_size']} bytes, {e['num_nodes']} nodes, inputs "
                f"{[(i['name'], i['dtype'], i['shape']) for i in e['inputs']]}, ops {e['ops']}"
            )
            for r in C.node_summaries(path, show_ops):
                print(f"    {r}")

        run.attempt(full, export)
