"""`explain_dataset`: explain every row of a parquet or .npy/.npz dataset into a folder of parquet files."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from onnxshap._dataset._blocks import (
    BlockExplainer,
    BlockSummary,
    Job,
    block_residuals,
    clean_partials,
    manifest,
    plan,
    prepare_output,
    read_results,
)
from onnxshap._dataset._source import SourceLike, describe_source, is_ray_dataset, pyarrow_module
from onnxshap._errors import InputError

Engine = Literal["local", "ray"]
#: progress(rows done, rows in all): called as blocks are written (those already written count as done).
RowProgress = Callable[[int, int], None]
#: Output columns a kept source column must not shadow.
RESERVED_COLUMNS = ("row", "base_values", "prediction", "residual", "output_indices")


@dataclasses.dataclass
class DatasetResult:
    """What `explain_dataset` did.

    Attributes:
        output_dir: the folder holding `manifest.json` and one `part-<block>.parquet` per block.
        rows: rows in the dataset (all written once the call returns).
        blocks: blocks in the plan.
        written: blocks explained and written by this call.
        skipped: blocks already written by an earlier call with the same manifest (resumed).
        seconds: wall time of this call.
        max_relative_residual: the worst completeness residual over every written block (see
            `Explanation.relative_residual`).
        engine, workers: how the blocks were explained.
        worker_blocks: blocks written by this call per worker ("host:pid", with "@node" on Ray).
    """

    output_dir: Path
    rows: int
    blocks: int
    written: int
    skipped: int
    rows_written: int
    seconds: float
    max_relative_residual: float
    engine: str
    workers: int
    worker_blocks: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        """Rows explained by this call per second of its wall time."""
        return self.rows_written / self.seconds if self.seconds > 0 else float("nan")

    @classmethod
    def load(cls, output_dir: str | os.PathLike[str]) -> DatasetResult:
        """The results folder of an earlier run (`onnxshap explain --engine ...`, or another process), as a
        result of a call that did nothing: `written` 0, the written blocks `skipped`; engine and workers
        unknown ("", 0). Raises InputError for a folder without a manifest."""
        import json

        from onnxshap._dataset._blocks import MANIFEST

        folder = Path(output_dir)
        try:
            found = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(
                f"{folder} has no readable {MANIFEST}: it is not the results folder of explain_dataset."
            ) from None
        residuals = block_residuals(folder)
        return cls(
            output_dir=folder.resolve(),
            rows=int(found["source"]["rows"]),
            blocks=int(found["blocks"]),
            written=0,
            skipped=len(residuals),
            rows_written=0,
            seconds=0.0,
            max_relative_residual=max((r for _, r in residuals.values()), default=0.0),
            engine="",
            workers=0,
        )

    def explanation(self, rows: Sequence[int] | None = None) -> Any:
        """The written values as one `Explanation`, in row order (or the rows with these ids); its
        `data` is None (the inputs stay in the source; join on the `row` column)."""
        return read_results(self.output_dir, rows)


class _RowBar:
    """A tqdm bar over rows on stderr."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="explain", unit="row", file=sys.stderr, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _model_reference(model: Any) -> str | bytes:
    """A path (resolved) or the model's bytes: what workers load the model from."""
    import onnx

    from onnxshap._model import Model

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            from onnxshap._errors import ModelLoadError

            raise ModelLoadError(f"Model file {str(model)!r} does not exist.")
        return str(path.resolve())
    if isinstance(model, bytes):
        return model
    if isinstance(model, Model):
        model = model.proto
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    raise InputError(
        f"model must be a path to an .onnx file, its bytes, an onnx.ModelProto or an onnxshap.Model, not "
        f"{type(model).__name__} (convert a framework model with onnxshap.convert first)."
    )


def _whole(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, not {value!r}.")
    return int(value)


def explain_dataset(
    model: Any,
    background: Any,
    source: SourceLike | Any,
    output_dir: str | os.PathLike[str],
    *,
    output: int | Sequence[int] | str | None = None,
    engine: Engine = "local",
    workers: int = 1,
    batch_size: int = 32,
    block_size: int = 4096,
    inputs: Sequence[str] | str | None = None,
    outputs: Sequence[str] | str | None = None,
    columns: Mapping[str, str | Sequence[str]] | None = None,
    keep: Sequence[str] = (),
    rules: Mapping[str, str] | None = None,
    check: Literal["raise", "warn", "off"] = "raise",
    chunk_size: int | None = None,
    fixed: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool | RowProgress = False,
    address: str | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
) -> DatasetResult:
    """Explain every row of a dataset and write the attributions as parquet, block by block.

    The rows are cut into blocks of `block_size` rows (block i: rows [i * block_size, ...), the
    same rows for the same arguments); each block is explained in calls of `batch_size` rows and
    written to `output_dir/part-<i>.parquet` whole or not at all. One row per sample: `row` (its
    position in the source), the `keep` columns, `values/<input>` (flattened (*input_shape,
    n_outputs)), `base_values`, `prediction`, `residual`, `output_indices`. `DatasetResult.explanation()`
    reads them back as an `Explanation`. A rerun with the same arguments skips the blocks already
    written (after a crash or Ctrl-C); different arguments are refused unless `overwrite`.

    Args:
        model: a path to an .onnx file (workers load it from there: on a cluster, a path every node
            sees), its bytes, an `onnx.ModelProto` or an `onnxshap.Model`.
        background: reference rows, as for `Explainer`.
        source: a parquet file, .npy/.npz shard, a folder of them (in name order) or a list of them.
            Parquet: the column named like the input (a list or tensor column, reshaped to one row of
            the input), or scalar feature columns; .npy: rows of the one input; .npz: one array per
            input. A ray.data.Dataset (engine="ray") is written once to `output_dir/source/` and read
            from there (row ids are positions in that copy: keep= an id column to join on).
        output_dir: the results folder (created; its parent must exist).
        output: as `Explainer.explain`'s output= (None: every explained output).
        engine: "local" (this process) or "ray" (Ray Data actors; pip install 'onnxshap[ray]').
        workers: Ray actors, each compiling the explainer once (default 1; the local engine runs one).
        batch_size: rows per explain call (default 32); every call is padded to this shape.
        block_size: rows per part file and per unit of work, resumed or retried whole (default 4096).
        inputs, outputs, rules, check, chunk_size, fixed: as for `Explainer`.
        columns: input name -> its parquet column (a list column) or feature columns, or its .npz
            array name. Default: the column named like the input, else every other numeric column.
        keep: parquet columns copied into the output, to join rows back (the `row` id always is).
        overwrite: replace the results in `output_dir` when they come from other arguments.
        progress: True draws a bar over rows on stderr; a callable progress(done, total) is called
            after each block instead.
        address: engine="ray": the cluster to connect to ("auto", "ray://head:10001"); default the
            Ray initialised in this process, else a new local one.
        ray_remote_args: engine="ray": options of each actor (num_cpus, default 1; num_gpus, default 1
            where the cluster has GPUs; runtime_env; ...).

    Returns:
        A `DatasetResult` (rows, blocks written and skipped, time, rows/s, worst residual).

    Raises:
        InputError: a column, array shape or dtype that does not fit the model (before any worker
            starts), or bad arguments.
        OutputError: `output_dir` holds results of other arguments, or files that are not results.
        MissingDependencyError: pyarrow or Ray missing, or Ray workers that cannot import onnxshap.
        AdditivityError: as `Explainer` (check="raise"); the blocks written before stay.
    """
    from onnxshap._explainer import Explainer

    started = time.perf_counter()
    if engine not in ("local", "ray"):
        raise InputError(f"engine must be 'local' or 'ray', not {engine!r}.")
    workers = _whole(workers, "workers")
    if engine == "local" and workers != 1:
        raise InputError(f"The local engine runs in this process (workers=1); for workers={workers} use engine='ray'.")
    batch_size = _whole(batch_size, "batch_size")
    block_size = _whole(block_size, "block_size")
    if isinstance(keep, str):
        keep = [keep]
    clash = [c for c in keep if c in RESERVED_COLUMNS or c.startswith("values/")]
    if clash:
        raise InputError(f"keep= column {clash[0]!r} has the name of an output column; rename it in the dataset.")
    pyarrow_module()
    if engine == "ray":
        from onnxshap._dataset._ray import ray_module

        ray_module()  # before any work: a missing extra is said at once
    model_ref = _model_reference(model)
    options: dict[str, Any] = {
        "inputs": inputs,
        "outputs": outputs,
        "rules": dict(rules) if rules else None,
        "check": check,
        "chunk_size": chunk_size,
        "fixed": dict(fixed) if fixed else None,
    }
    # Built here whatever the engine: a bad model, background or option fails before any worker starts.
    explainer = Explainer(model_ref, background, **options)
    fed = [i for i in explainer.model.inputs if i.name not in explainer.fixed]
    if is_ray_dataset(source):
        if engine != "ray":
            raise InputError("A ray.data.Dataset is explained on Ray: pass engine='ray' (and workers=N).")
        from onnxshap._dataset._ray import stage_dataset

        source = stage_dataset(source, Path(output_dir).resolve(), fed, columns, keep, overwrite)
    described = describe_source(source, fed, columns, keep)
    job = Job(
        model=model_ref if engine == "local" or isinstance(model_ref, bytes) else Path(model_ref).read_bytes(),
        explainer={**options, "background": background},
        output=output,
        source=described,
        output_dir=str(Path(output_dir).resolve()),
        batch_size=batch_size,
        block_size=block_size,
        rows=described.rows,
    )
    out = Path(job.output_dir)
    done_blocks = prepare_output(out, manifest(job, explainer.background), overwrite)
    blocks = plan(job.rows, block_size)
    todo = [b for b in blocks if b.index not in done_blocks]
    rows_done = sum(b.stop - b.start for b in blocks if b.index in done_blocks)
    bar = _RowBar() if progress is True else None
    report: RowProgress | None = bar if bar is not None else (progress if callable(progress) else None)
    written: list[BlockSummary] = []

    def finished(summary: BlockSummary) -> None:
        nonlocal rows_done
        written.append(summary)
        rows_done += summary.rows
        if report is not None:
            report(rows_done, job.rows)

    try:
        if report is not None:
            report(rows_done, job.rows)
        if todo and engine == "local":
            from onnxshap._dataset._local import run_local

            worker = BlockExplainer(job, explainer)
            run_local(worker, todo, finished)
        elif todo:
            from onnxshap._dataset._ray import run_ray

            try:
                run_ray(job, todo, finished, workers=workers, address=address, ray_remote_args=ray_remote_args)
            finally:
                clean_partials(out)  # a worker killed mid-write leaves its partial file
    finally:
        if bar is not None:
            bar.close()
    residuals = block_residuals(out)
    missing = [b.index for b in blocks if b.index not in residuals]
    if missing:
        from onnxshap._errors import OutputError

        raise OutputError(
            f"Blocks {missing[:10]} of {out} were not written (their part files are missing after the run); "
            "rerun the same call to write them."
        )
    return DatasetResult(
        output_dir=out,
        rows=job.rows,
        blocks=len(blocks),
        written=len(written),
        skipped=len(blocks) - len(todo),
        rows_written=sum(s.rows for s in written),
        seconds=time.perf_counter() - started,
        max_relative_residual=max((r for _, r in residuals.values()), default=0.0),
        engine=engine,
        workers=workers,
        worker_blocks=dict(Counter(s.worker for s in written)),
    )
