"""Where a dataset's rows come from: parquet files or .npy/.npz shards, read by row range.

A `Source` is a plain, picklable description (shard paths, row counts, which columns feed which
input); a `Reader` opens it in one process (a worker) and keeps the last shard open, so that blocks
that follow each other in a shard do not reread it. Rows are numbered by their position in the
source: shard after shard, in the order the paths were given (a folder's files in name order).

`describe_source` checks the columns or arrays against the model's inputs (names, shapes, dtypes)
on the caller's side, before any worker starts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxshap._errors import InputError, MissingDependencyError
from onnxshap._inputs import ArgumentError, cast_to_inputs, read_array_file, require_file

if TYPE_CHECKING:
    import pyarrow as pa

    from onnxshap._graph import TensorInfo

#: File suffixes a dataset may be stored in.
SHARD_SUFFIXES = (".parquet", ".npy", ".npz")

#: How messages name numpy dtype kinds.
_KINDS = {"f": "float", "i": "integer", "u": "unsigned integer", "b": "boolean"}

SourceLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def pyarrow_module() -> Any:
    """pyarrow, or `MissingDependencyError` naming the extra that installs it."""
    try:
        import pyarrow
        import pyarrow.parquet  # the submodule is what reads and writes the files
    except ImportError as exc:
        raise MissingDependencyError(
            "Explaining a dataset reads and writes parquet with pyarrow, which is not installed. Install it with: "
            "pip install 'onnxshap[ray]' (or pip install pyarrow for the local engine only)."
        ) from exc
    return pyarrow


@dataclasses.dataclass(frozen=True)
class Shard:
    """One file of a source: its path, kind ("parquet", "npy", "npz") and number of rows."""

    path: str
    kind: str
    rows: int


@dataclasses.dataclass(frozen=True)
class Source:
    """The rows to explain.

    Attributes:
        shards: the files, in row order.
        columns: input name -> the parquet columns (one tensor/list column, or scalar feature
            columns stacked in order) or the .npz array (one name) that feed it; for .npy shards
            the one input's name -> ().
        shapes: input name -> the shape of one row (without the sample axis).
        dtypes: input name -> the dtype the model declares (rows are cast to it).
        keep: parquet columns copied into the output beside the row id.
    """

    shards: tuple[Shard, ...]
    columns: Mapping[str, tuple[str, ...]]
    shapes: Mapping[str, tuple[int, ...]]
    dtypes: Mapping[str, str]
    keep: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies these rows in a manifest: each file (resolved path, rows, bytes) and the mapping."""
        return {
            "files": [[s.path, s.rows, os.path.getsize(s.path)] for s in self.shards],
            "rows": self.rows,
            "columns": {k: list(v) for k, v in self.columns.items()},
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "dtypes": dict(self.dtypes),
            "keep": list(self.keep),
        }


def _shard_paths(source: SourceLike) -> list[Path]:
    """The files of `source`: one file, a folder (its .parquet/.npy/.npz files in name order), or a list."""
    listed = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not listed:
        raise ArgumentError("The dataset source is an empty list: give parquet, .npy or .npz files, or a folder.")
    files: list[Path] = []
    for item in listed:
        p = require_file(item, "dataset file")
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SHARD_SUFFIXES)
            if not found:
                raise ArgumentError(f"Dataset folder {str(p)!r} holds no {', '.join(SHARD_SUFFIXES)} files.")
            files += found
        else:
            files.append(p)
    kinds = {f.suffix.lower() for f in files}
    unknown = sorted(kinds - set(SHARD_SUFFIXES))
    if unknown:
        raise ArgumentError(f"Dataset files must be {', '.join(SHARD_SUFFIXES)}; got {unknown[0]!r}.")
    if len(kinds) > 1:
        raise ArgumentError(f"Dataset files mix formats ({', '.join(sorted(kinds))}): give one kind of shard.")
    return [f.resolve() for f in files]


def _row_shape(info: TensorInfo) -> tuple[int, ...]:
    """One row's shape for parquet columns: the declared shape without its first (sample) axis."""
    dims = [d for d in (info.shape or ())[1:] if isinstance(d, int) and d >= 1]
    if info.shape is None or not info.shape or len(dims) != len(info.shape) - 1:
        raise InputError(
            f"Input {info.describe()} has no fixed shape per row, so parquet columns cannot be laid out for it. "
            "Store the rows as .npy/.npz shards (one array of shape (n, *row shape) per input) instead."
        )
    return tuple(dims)


def _numeric(field_type: Any, pa: Any) -> bool:
    return bool(pa.types.is_integer(field_type) or pa.types.is_floating(field_type) or pa.types.is_boolean(field_type))


def _list_value_type(field_type: Any, pa: Any) -> Any:
    """The value type of a list column, or None for any other column. Tensor columns (Ray Data's,
    pyarrow's fixed-shape tensors) are extension types stored as lists of the flattened values."""
    if isinstance(field_type, pa.ExtensionType):
        field_type = field_type.storage_type
    if pa.types.is_list(field_type) or pa.types.is_large_list(field_type) or pa.types.is_fixed_size_list(field_type):
        return field_type.value_type
    return None


def _expected(info: TensorInfo, shape: tuple[int, ...]) -> str:
    return f"{info.dtype}{list(shape)} per row (input {info.describe()})"


def _dtype_fits(kind: str, want: np.dtype[Any] | None) -> bool:
    """Whether values of numpy kind `kind` may feed an input of dtype `want` (floats take integers too)."""
    if want is None:
        return True
    if want.kind == "f":
        return kind in "fiub"
    if want.kind in "iu":
        return kind in "iub"
    return kind == want.kind


def _parquet_mapping(
    schema: Any, inputs: Sequence[TensorInfo], columns: Mapping[str, Any] | None, reserved: set[str], pa: Any
) -> dict[str, tuple[str, ...]]:
    """Input name -> its columns: as given in `columns`, else the column named like the input, else
    (for the one input left) every other numeric scalar column, in schema order."""
    names = list(schema.names)
    given = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in (columns or {}).items()}
    unknown_inputs = [k for k in given if k not in {i.name for i in inputs}]
    if unknown_inputs:
        raise InputError(
            f"columns= names {unknown_inputs}, which are not inputs the rows feed: "
            + ", ".join(i.describe() for i in inputs)
            + "."
        )
    mapping: dict[str, tuple[str, ...]] = {}
    for info in inputs:
        if info.name in given:
            mapping[info.name] = given[info.name]
        elif info.name in names:
            mapping[info.name] = (info.name,)
    left = [i for i in inputs if i.name not in mapping]
    if len(left) == 1:
        used = {c for cols in mapping.values() for c in cols} | reserved
        features = tuple(n for n in names if n not in used and _numeric(schema.field(n).type, pa))
        if features:
            mapping[left[0].name] = features
            left = []
    if left:
        raise InputError(
            f"No parquet column feeds input(s) {', '.join(i.describe() for i in left)}; the columns are {names}. "
            "Name a column like the input, or pass columns={input name: column or [feature columns]} "
            "(--column INPUT=COL[,COL...] on the command line)."
        )
    for info in inputs:
        shape = _row_shape(info)
        size = int(np.prod(shape))
        cols = mapping[info.name]
        missing = [c for c in cols if c not in names]
        if missing:
            raise InputError(
                f"Column {missing[0]!r} (for input {info.name!r}) is not in the dataset; its columns are {names}."
            )
        if len(cols) == 1 and _list_value_type(schema.field(cols[0]).type, pa) is not None:
            column_type = schema.field(cols[0]).type
            if isinstance(column_type, pa.ExtensionType):
                column_type = column_type.storage_type
            value_type = _list_value_type(column_type, pa)
            if not _numeric(value_type, pa):
                raise InputError(
                    f"Column {cols[0]!r} holds lists of {value_type}; input {info.name!r} takes {_expected(info, shape)}."
                )
            kind = np.dtype(value_type.to_pandas_dtype()).kind
            if pa.types.is_fixed_size_list(column_type) and column_type.list_size != size:
                raise InputError(
                    f"Column {cols[0]!r} holds lists of {column_type.list_size} values; input {info.name!r} takes "
                    f"{_expected(info, shape)}, i.e. {size} values per row."
                )
        else:
            bad = [c for c in cols if not _numeric(schema.field(c).type, pa)]
            if bad:
                raise InputError(
                    f"Column {bad[0]!r} is {schema.field(bad[0]).type}, not numbers; input {info.name!r} takes "
                    f"{_expected(info, shape)}. Leave it out with columns= or keep it with keep=."
                )
            if len(cols) != size:
                raise InputError(
                    f"Input {info.name!r} takes {_expected(info, shape)}: {size} value(s) per row, and "
                    f"{len(cols)} column(s) feed it: {list(cols)}. Pass columns={{{info.name!r}: [...]}} with "
                    f"{size} feature columns, or one list column of {size} values."
                )
            kinds = {np.dtype(schema.field(c).type.to_pandas_dtype()).kind for c in cols}
            kind = "f" if "f" in kinds else min(kinds)
        if not _dtype_fits(kind, info.dtype):
            raise InputError(
                f"Column(s) {list(cols)} hold {_KINDS.get(kind, kind)} values; input {info.name!r} takes "
                f"{_expected(info, shape)}. Convert the column(s) or choose other columns with columns=."
            )
    return mapping


def _array_header(path: Path, kind: str) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """Array name -> (shape, dtype) of an .npy shard (name "") or .npz shard, without reading the data
    of an .npy file."""
    if kind == "npy":
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError):
            read_array_file(path, "dataset")  # raises its InputError for an unreadable file
            raise
        return {"": (tuple(a.shape), a.dtype)}
    data = read_array_file(path, "dataset")
    assert isinstance(data, dict)
    return {k: (tuple(v.shape), v.dtype) for k, v in data.items()}


def _array_mapping(
    headers: Sequence[dict[str, tuple[tuple[int, ...], np.dtype[Any]]]],
    paths: Sequence[Path],
    inputs: Sequence[TensorInfo],
    columns: Mapping[str, Any] | None,
    kind: str,
) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[int, ...]]]:
    """Input name -> (the .npz array feeding it,), and the row shape of each, checked across shards."""
    if kind == "npy":
        if len(inputs) != 1:
            raise InputError(
                f"The model has {len(inputs)} inputs ({', '.join(i.describe() for i in inputs)}): store the rows "
                "as .npz shards with one array per input name."
            )
        mapping: dict[str, tuple[str, ...]] = {inputs[0].name: ("",)}
    else:
        given = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in (columns or {}).items()}
        mapping = {}
        first = headers[0]
        for info in inputs:
            name = given.get(info.name, (info.name,))
            if name[0] not in first and len(inputs) == 1 and len(first) == 1:
                name = (next(iter(first)),)  # np.savez(path, x) stores "arr_0"
            if len(name) != 1 or name[0] not in first:
                raise InputError(
                    f"{str(paths[0])!r} has no array for input {info.describe()}; its arrays are {sorted(first)}. "
                    "Save each shard with np.savez(path, **{input name: rows}) or pass columns={input: array name}."
                )
            mapping[info.name] = name
    shapes: dict[str, tuple[int, ...]] = {}
    for info in inputs:
        (key,) = mapping[info.name]
        for path, header in zip(paths, headers, strict=True):
            if key not in header:
                raise InputError(f"Shard {str(path)!r} has no array {key!r} for input {info.name!r}.")
            shape, dtype = header[key]
            if not shape:
                raise InputError(f"Shard {str(path)!r}: array {key or 'of the .npy file'} is a scalar, not rows.")
            if info.name not in shapes:
                shapes[info.name] = shape[1:]
            elif shape[1:] != shapes[info.name]:
                raise InputError(
                    f"Shard {str(path)!r}: the rows of input {info.name!r} have shape {list(shape[1:])}, and those of "
                    f"the first shard {list(shapes[info.name])}; every shard must hold rows of one shape."
                )
            if not _dtype_fits(dtype.kind, info.dtype):
                raise InputError(
                    f"Shard {str(path)!r}: input {info.name!r} is given as {dtype}; the model declares "
                    f"{info.describe()}."
                )
        declared = info.shape
        if declared is not None and len(declared) == len(shapes[info.name]) + 1:
            for got, want in zip(shapes[info.name], declared[1:], strict=True):
                if isinstance(want, int) and want > 0 and got != want:
                    raise InputError(
                        f"Input {info.name!r}: each row has shape {list(shapes[info.name])}; the model declares "
                        f"{info.describe()}."
                    )
    return mapping, shapes


def is_ray_dataset(source: Any) -> bool:
    """Whether `source` is a ray.data.Dataset (without importing Ray)."""
    return type(source).__module__.startswith("ray.data") and hasattr(source, "write_parquet")


def check_schema(
    schema: Any, inputs: Sequence[TensorInfo], columns: Mapping[str, Any] | None, keep: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """Input name -> its columns in an Arrow `schema`, checked against the model's `inputs` (see
    `_parquet_mapping`); the `keep` columns must exist."""
    pa = pyarrow_module()
    missing_keep = [c for c in keep if c not in schema.names]
    if missing_keep:
        raise InputError(
            f"keep= names column {missing_keep[0]!r}, which is not in the dataset; its columns are {schema.names}."
        )
    return _parquet_mapping(schema, inputs, columns, set(keep), pa)


def describe_source(
    source: SourceLike,
    inputs: Sequence[TensorInfo],
    columns: Mapping[str, Any] | None = None,
    keep: Sequence[str] = (),
) -> Source:
    """Check `source` against the model's fed `inputs` and describe it (see `Source`). Reads parquet
    schemas and metadata and .npy headers only (.npz shards are read whole once)."""
    paths = _shard_paths(source)
    kind = paths[0].suffix.lower().lstrip(".")
    keep = tuple(keep)
    if kind == "parquet":
        pa = pyarrow_module()
        import pyarrow.parquet as pq

        try:
            metas = [pq.ParquetFile(p).metadata for p in paths]
            schemas = [pq.read_schema(p) for p in paths]
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"Cannot read the parquet dataset: {exc}") from None
        mapping = check_schema(schemas[0], inputs, columns, keep)
        needed = {c for cols in mapping.values() for c in cols} | set(keep)
        for path, schema in zip(paths[1:], schemas[1:], strict=True):
            for c in sorted(needed):
                if c not in schema.names or schema.field(c).type != schemas[0].field(c).type:
                    raise InputError(
                        f"Parquet file {str(path)!r}: column {c!r} is "
                        + (f"{schema.field(c).type}" if c in schema.names else "missing")
                        + f", and {schemas[0].field(c).type} in {str(paths[0])!r}; every file must have the same columns."
                    )
        shards = tuple(Shard(str(p), kind, int(m.num_rows)) for p, m in zip(paths, metas, strict=True))
        shapes = {i.name: _row_shape(i) for i in inputs}
    else:
        if keep:
            raise InputError("keep= copies parquet columns; .npy/.npz shards have none (rows keep their `row` id).")
        headers = [_array_header(p, kind) for p in paths]
        mapping, shapes = _array_mapping(headers, paths, inputs, columns, kind)
        first_key = next(iter(mapping.values()))[0]
        rows = [h[first_key][0][0] for h in headers]
        for path, header, n in zip(paths, headers, rows, strict=True):
            for name, (key,) in mapping.items():
                if header[key][0][0] != n:
                    raise InputError(
                        f"Shard {str(path)!r}: input {name!r} has {header[key][0][0]} rows and {first_key or 'the'} "
                        f"array {n}; every array of a shard must have one row per sample."
                    )
        shards = tuple(Shard(str(p), kind, int(n)) for p, n in zip(paths, rows, strict=True))
    dtypes = {i.name: str(i.dtype) if i.dtype is not None else "" for i in inputs}
    described = Source(shards, mapping, shapes, dtypes, keep)
    if described.rows == 0:
        raise InputError("The dataset has no rows to explain.")
    # The first rows go through the same conversion as every block: errors in the values themselves
    # (nulls, lists of the wrong length) show here, before any worker starts.
    Reader(described).read(0, min(described.rows, 2))
    return described


class Reader:
    """Reads rows [start, stop) of a `Source` as the model's inputs (and the kept columns); one per process."""

    def __init__(self, source: Source):
        self.source = source
        self.offsets = np.cumsum([0, *(s.rows for s in source.shards)])
        self._open: tuple[int, Any] | None = None  # (shard index, its opened file or arrays)

    def _shard(self, index: int) -> Any:
        if self._open is not None and self._open[0] == index:
            return self._open[1]
        shard = self.source.shards[index]
        if shard.kind == "parquet":
            import pyarrow.parquet as pq

            opened: Any = pq.ParquetFile(shard.path)
        elif shard.kind == "npy":
            opened = {"": np.load(shard.path, mmap_mode="r", allow_pickle=False)}
        else:
            opened = read_array_file(Path(shard.path), "dataset")
        self._open = (index, opened)
        return opened

    def _parquet_rows(self, file: Any, start: int, stop: int) -> Any:
        """Rows [start, stop) of one parquet file: only the row groups that hold them are read."""
        pa = pyarrow_module()
        wanted = sorted({c for cols in self.source.columns.values() for c in cols} | set(self.source.keep))
        meta = file.metadata
        bounds = np.cumsum([0, *(meta.row_group(g).num_rows for g in range(meta.num_row_groups))])
        groups = [g for g in range(meta.num_row_groups) if bounds[g] < stop and bounds[g + 1] > start]
        table = file.read_row_groups(groups, columns=wanted) if groups else pa.table({})
        first = int(bounds[groups[0]]) if groups else start
        return table.slice(start - first, stop - start)

    def _column_array(self, table: Any, name: str) -> np.ndarray:
        pa = pyarrow_module()
        cols = self.source.columns[name]
        shape = self.source.shapes[name]
        n = table.num_rows
        for c in cols:
            nulls = table.column(c).null_count
            if nulls:
                raise InputError(f"Column {c!r} has {nulls} missing value(s) (null); drop or impute those rows.")
        if len(cols) == 1 and _list_value_type(table.schema.field(cols[0]).type, pa) is not None:
            column = table.column(cols[0]).combine_chunks()
            if isinstance(column, pa.ExtensionArray):  # a tensor column: its storage is the list of values
                column = column.storage
            values = column.flatten()
            size = int(np.prod(shape))
            if len(values) != n * size or values.null_count:
                raise InputError(
                    f"Column {cols[0]!r}: each row must be a list of {size} numbers (input {name!r}, shape "
                    f"{list(shape)} per row); some rows hold another number of values or nulls."
                )
            array = values.to_numpy(zero_copy_only=False)
        else:
            array = np.stack([table.column(c).to_numpy() for c in cols], axis=1)
        return np.ascontiguousarray(array.reshape(n, *shape))

    def read(self, start: int, stop: int) -> tuple[dict[str, np.ndarray], Any]:
        """(input name -> rows [start, stop) cast to the declared dtype, the kept columns as a pyarrow table or None)."""
        from onnxshap._graph import TensorInfo

        parts: list[dict[str, np.ndarray]] = []
        kept: list[pa.Table] = []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        index = first
        while index < len(self.source.shards) and self.offsets[index] < stop:
            lo = max(start, int(self.offsets[index])) - int(self.offsets[index])
            hi = min(stop, int(self.offsets[index + 1])) - int(self.offsets[index])
            opened = self._shard(index)
            if self.source.shards[index].kind == "parquet":
                table = self._parquet_rows(opened, lo, hi)
                parts.append({name: self._column_array(table, name) for name in self.source.columns})
                if self.source.keep:
                    kept.append(table.select(list(self.source.keep)))
            else:
                parts.append({name: np.asarray(opened[key][lo:hi]) for name, (key,) in self.source.columns.items()})
            index += 1
        feeds = {name: np.concatenate([p[name] for p in parts]) for name in self.source.columns}
        declared = [TensorInfo(k, np.dtype(v) if v else None, None) for k, v in self.source.dtypes.items()]
        feeds = cast_to_inputs(feeds, declared)
        for info in declared:  # integer or boolean columns feeding a float input (cast_to_inputs keeps them)
            if info.dtype is not None and info.dtype.kind == "f" and feeds[info.name].dtype.kind in "iub":
                feeds[info.name] = feeds[info.name].astype(info.dtype)
        if not kept:
            return feeds, None
        pa = pyarrow_module()
        return feeds, pa.concat_tables(kept)
