"""What both engines share: the block plan, the manifest, and the per-block explain-and-write.

A dataset of n rows is cut into blocks of `block_size` rows: block i covers rows
[i * block_size, min((i + 1) * block_size, n)), always the same rows for the same arguments. Each
block is explained by a `BlockExplainer` (one per worker: the `Explainer` is built, and its pass
compiled, once and reused for every block) in batches of `batch_size` rows, the last one padded
so that every call has one shape, and written to `part-<i>.parquet` whole or not at all
(`_files.write_whole`). A block whose file exists is done: a rerun skips it.

`manifest.json` in the output folder records the arguments that determine the values; a rerun
resumes only under the same manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxshap._dataset._source import Reader, Source, pyarrow_module
from onnxshap._errors import InputError, OutputError
from onnxshap._files import write_whole
from onnxshap._inputs import pad_rows, take

MANIFEST = "manifest.json"
#: The manifest's format; a folder written in another format is not resumed.
FORMAT = "onnxshap-dataset/1"
#: Key of the schema metadata that describes a part file's columns.
META_KEY = b"onnxshap"


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


@dataclasses.dataclass(frozen=True)
class Block:
    """Rows [start, stop) of the source, written to part_name(index)."""

    index: int
    start: int
    stop: int


def plan(rows: int, block_size: int) -> list[Block]:
    """The blocks of a dataset of `rows` rows: consecutive, `block_size` rows each, the last one shorter."""
    return [Block(i, start, min(start + block_size, rows)) for i, start in enumerate(range(0, rows, block_size))]


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a worker needs to explain any block (picklable: it travels to Ray actors).

    `model` is a path or the model's bytes; `explainer` holds the keywords of `Explainer`
    (background included); `output` is `Explainer.explain`'s output=.
    """

    model: str | bytes
    explainer: Mapping[str, Any]
    output: Any
    source: Source
    output_dir: str
    batch_size: int
    block_size: int
    rows: int


def _hash_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{a.dtype.str}:{list(a.shape)};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def model_hash(model: str | bytes) -> str:
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    return hashlib.sha256(data).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def manifest(job: Job, background: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The arguments that determine the results (compared on resume), and who wrote them (not compared)."""
    from onnxshap import __version__

    options = {k: v for k, v in job.explainer.items() if k not in ("background", "fixed")}
    fixed = job.explainer.get("fixed") or {}
    return {
        "format": FORMAT,
        "model_sha256": model_hash(job.model),
        "background_sha256": _hash_arrays(background),
        "fixed_sha256": _hash_arrays({k: np.asarray(v) for k, v in fixed.items()}) if fixed else None,
        "explainer": _jsonable(options),
        "output": _jsonable(job.output),
        "source": job.source.fingerprint(),
        "batch_size": job.batch_size,
        "block_size": job.block_size,
        "blocks": len(plan(job.rows, job.block_size)),
        "written_by": f"onnxshap {__version__}",
    }


#: The folder a ray.data.Dataset source is written to inside the output folder (see _ray.stage_dataset).
STAGED = "source"


def _ours(name: str) -> bool:
    """Files this module writes into an output folder (a partial part file included), and the copy of
    a ray.data.Dataset source (complete or partial)."""
    if name in (MANIFEST, STAGED, f".{STAGED}.partial"):
        return True
    return name.endswith(".parquet") and name.lstrip(".").startswith("part-")


def _remove(folder: Path, names: Sequence[str]) -> None:
    """Remove the files `names` of `folder` (the staged source folder stays: its owner replaces it)."""
    for n in names:
        if not (folder / n).is_dir():
            (folder / n).unlink(missing_ok=True)


def check_folder(output_dir: Path) -> list[str]:
    """The names in `output_dir` (none if it does not exist yet), refusing a file, a missing parent
    folder, or a folder that holds files onnxshap did not write (`OutputError`)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir} is a file; the results of a dataset go into a folder. Give a folder name.")
    if not output_dir.parent.is_dir():
        raise OutputError(f"Cannot write {output_dir}: the folder {output_dir.parent} does not exist. Create it first.")
    names = sorted(p.name for p in output_dir.iterdir()) if output_dir.exists() else []
    foreign = [n for n in names if not _ours(n)]
    if foreign:
        raise OutputError(
            f"{output_dir} holds files that are not onnxshap dataset results ({', '.join(foreign[:3])}"
            + (" ..." if len(foreign) > 3 else "")
            + "). Write the results to a new or empty folder."
        )
    return names


def prepare_output(output_dir: Path, wanted: dict[str, Any], overwrite: bool) -> set[int]:
    """Make `output_dir` ready for a run under manifest `wanted`; return the blocks already written.

    A new or empty folder gets the manifest. A folder with the same manifest is resumed (its
    leftover partial files removed). A folder with another manifest is refused unless `overwrite`
    (then onnxshap's own files are removed); a folder holding other files is always refused.
    """
    names = [n for n in check_folder(output_dir) if n not in (STAGED, f".{STAGED}.partial")]
    output_dir.mkdir(exist_ok=True)
    path = output_dir / MANIFEST
    if path.exists():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = {}
        differs = sorted(k for k in set(found) | set(wanted) if k != "written_by" and found.get(k) != wanted.get(k))
        if differs and not overwrite:
            raise OutputError(
                f"{output_dir} holds results of other arguments (they differ in: {', '.join(differs)}), so they "
                "cannot be resumed. Pass overwrite=True (--overwrite) to replace them, or write to another folder."
            )
        if differs:
            _remove(output_dir, names)
            names = []
    elif names:
        if not overwrite:
            raise OutputError(
                f"{output_dir} holds part files but no {MANIFEST}, so what they hold is unknown. Pass overwrite=True "
                "(--overwrite) to replace them, or write to another folder."
            )
        _remove(output_dir, names)
        names = []
    _remove(output_dir, [n for n in names if n.startswith(".")])  # partial files of an interrupted run
    if not path.exists():
        write_whole(path, lambda tmp: tmp.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8"))
    done = set()
    for n in os.listdir(output_dir):
        if n.startswith("part-") and n.endswith(".parquet"):
            done.add(int(n[len("part-") : -len(".parquet")]))
    return done


@dataclasses.dataclass(frozen=True)
class BlockSummary:
    """What a worker reports about one written block."""

    index: int
    rows: int
    max_relative_residual: float
    seconds: float
    worker: str


def _list_column(array: np.ndarray) -> Any:
    """(n, ...) -> a fixed-size-list column of the flattened rows."""
    pa = pyarrow_module()
    flat = np.ascontiguousarray(array.reshape(array.shape[0], -1))
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def block_table(block: Block, e: Any, kept: Any) -> Any:
    """One block's explanation as a table: `row` (position in the source), the kept columns, then
    `values/<input>` (each row flattened from (*input_shape, n_outputs)), `base_values`,
    `prediction`, `residual` and `output_indices` (n_outputs each). The schema metadata records the
    shapes and names that `read_results` needs to rebuild an `Explanation`."""
    pa = pyarrow_module()
    columns: dict[str, Any] = {"row": pa.array(np.arange(block.start, block.stop, dtype=np.int64))}
    if kept is not None:
        for name in kept.column_names:
            columns[name] = kept.column(name)
    shapes = {}
    for name in e.input_names:
        values = e.values_for(name)
        shapes[name] = list(values.shape[1:])
        columns[f"values/{name}"] = _list_column(values)
    for field in ("base_values", "prediction", "residual", "output_indices"):
        columns[field] = _list_column(getattr(e, field))
    meta = {
        "input_names": e.input_names,
        "values_shapes": shapes,
        "output_names": e.output_names,
        "all_output_names": e.all_output_names,
        "gradient_nodes": e.gradient_nodes,
        "max_relative_residual": e.max_relative_residual,
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


class BlockExplainer:
    """Explains and writes blocks of one `Job`; build one per worker (it compiles on its first block)."""

    def __init__(self, job: Job, explainer: Any = None):
        """`explainer`: an `Explainer` already built from the job's model and keywords (the local
        engine's, built by the caller to validate them), else built here."""
        from onnxshap._explainer import Explainer

        self.job = job
        self.explainer = explainer if explainer is not None else Explainer(job.model, **job.explainer)
        self.reader = Reader(job.source)
        #: Rows per explain call: every call has this shape (the last batch of a block is padded).
        self.batch = min(job.batch_size, job.rows)

    def explain_rows(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """An `Explanation` of the rows `feeds` (by input name), in calls of `self.batch` rows."""
        from onnxshap._explanation import concatenate, first_samples
        from onnxshap._inputs import rows

        n = rows(dict(feeds))
        parts = []
        for start in range(0, n, self.batch):
            chunk = take(dict(feeds), slice(start, min(start + self.batch, n)))
            got = min(start + self.batch, n) - start
            e = self.explainer.explain(pad_rows(chunk, self.batch), output=self.job.output)
            parts.append(first_samples(e, got) if got < self.batch else e)
        return concatenate(parts)

    def __call__(self, block: Block) -> BlockSummary:
        """Explain `block` and write its part file (whole or not at all)."""
        started = time.perf_counter()
        try:
            feeds, kept = self.reader.read(block.start, block.stop)
            e = self.explain_rows(feeds)
        except InputError as exc:
            # Rows in the message count from the block's first row: say which rows of the dataset they are.
            raise type(exc)(
                f"Block {block.index} (rows {block.start}..{block.stop - 1} of the dataset): {exc}"
            ) from exc
        table = block_table(block, e, kept)
        import pyarrow.parquet as pq

        write_whole(Path(self.job.output_dir) / part_name(block.index), lambda tmp: pq.write_table(table, tmp))
        return BlockSummary(
            block.index, block.stop - block.start, e.max_relative_residual, time.perf_counter() - started, worker_id()
        )


def worker_id() -> str:
    """host:pid of this process (which worker wrote a block)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def part_files(output_dir: Path) -> list[Path]:
    return sorted(p for p in output_dir.glob("part-*.parquet") if not p.name.startswith("."))


def block_residuals(output_dir: Path) -> dict[int, tuple[int, float]]:
    """Block index -> (rows, worst relative residual) of each written part file (from its metadata)."""
    import pyarrow.parquet as pq

    found = {}
    for path in part_files(output_dir):
        meta = pq.read_metadata(path)
        info = json.loads((meta.metadata or {}).get(META_KEY, b"{}"))
        found[int(path.stem.split("-")[1])] = (meta.num_rows, float(info.get("max_relative_residual", np.nan)))
    return found


def read_results(output_dir: str | Path, rows: Sequence[int] | None = None) -> Any:
    """The part files of `output_dir` as one `Explanation`, rows in source order (`data` is None:
    the inputs stay in the source; join them on `row`). `rows` picks rows by id."""
    import pyarrow.parquet as pq

    from onnxshap._explanation import Explanation

    pa = pyarrow_module()
    output_dir = Path(output_dir)
    files = part_files(output_dir)
    if not files:
        raise InputError(f"{output_dir} holds no part files: no block of the dataset was written there yet.")
    tables = [pq.read_table(p) for p in files]
    table = pa.concat_tables(tables)
    meta = json.loads(tables[0].schema.metadata[META_KEY])
    ids = table.column("row").to_numpy()
    order = np.argsort(ids, kind="stable")
    if rows is not None:
        position = {int(r): i for i, r in enumerate(ids)}
        missing = [r for r in rows if int(r) not in position]
        if missing:
            raise InputError(f"Row(s) {missing[:10]} are not in the written blocks of {output_dir}.")
        order = np.array([position[int(r)] for r in rows], dtype=np.int64)

    def column(name: str, shape: Sequence[int]) -> np.ndarray:
        chunked = table.column(name).combine_chunks()
        flat = chunked.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(ids), *shape)[order]

    names = meta["input_names"]
    values = {n: column(f"values/{n}", meta["values_shapes"][n]) for n in names}
    k = len(meta["output_names"])
    single = len(names) == 1
    return Explanation(
        values=values[names[0]] if single else values,
        base_values=column("base_values", [k]),
        data=None if single else dict.fromkeys(names),
        prediction=column("prediction", [k]),
        residual=column("residual", [k]),
        input_names=names,
        output_names=meta["output_names"],
        output_indices=column("output_indices", [k]),
        all_output_names=meta["all_output_names"],
        gradient_nodes=meta["gradient_nodes"],
    )


def row_ids(output_dir: str | Path) -> np.ndarray:
    """The `row` ids of every written part file, in file order (for exactly-once checks)."""
    import pyarrow.parquet as pq

    files = part_files(Path(output_dir))
    return np.concatenate([pq.read_table(p, columns=["row"]).column("row").to_numpy() for p in files] or [[]])


def clean_partials(output_dir: Path) -> None:
    """Remove partial part files (left by a worker killed mid-write)."""
    for path in output_dir.glob(".part-*.parquet"):
        path.unlink(missing_ok=True)
