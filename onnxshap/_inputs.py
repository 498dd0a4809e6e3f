"""Data files read as a model's inputs: .npy, .npz, .csv, and images (files or folders).

`read_inputs` is the public entry point; `load_files` is what `onnxshap explain` and `check` use
(it also returns the CSV header, the image layout and the image file names that label plots).
Arrays are cast to the model's declared input dtypes. Errors about the paths or options given
are `ArgumentError` (an `InputError`; the command line's usage error, exit 2); errors about a
file's contents are `InputError`.

This module imports only numpy: `import onnxshap.cli` stays light (onnxshap/_interrupt.py).
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxshap._errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from onnxshap._graph import ModelLike, TensorInfo
    from onnxshap._model import Model

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
ARRAY_SUFFIXES = frozenset({".npy", ".npz", ".csv"})
#: scale=: pixel values 0..255 -> this range (factor, offset). -1..1 is 0-1 with mean 0.5, std 0.5.
SCALES = {"0-1": (1 / 255, 0.0), "0-255": (1.0, 0.0)}

#: How messages name the image options: Python keywords (read_inputs) or command-line flags.
PYTHON_NAMES: Mapping[str, str] = {
    "layout": "layout={!r}",
    "image_size": "image_size=(H, W)",
    "mean": "mean",
    "std": "std",
}
CLI_NAMES: Mapping[str, str] = {
    "layout": "--layout {}",
    "image_size": "--image-size H W",
    "mean": "--mean",
    "std": "--std",
}

FilePath = str | os.PathLike[str]


class ArgumentError(InputError):
    """The paths or options given are wrong (a missing file, an unknown suffix, a `mean` of the
    wrong length), not a file's contents; the command line reports it as a usage error (exit 2)."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How images become arrays: resized to `size` (H, W; default the model's input size), pixel
    values 0..255 mapped by `scale` (a key of SCALES), then `mean` subtracted and divided by `std`
    (1 value, or one per channel), laid out as `layout` ("NCHW"/"NHWC"; default from the model's
    input shape). `names` spells the options in messages (PYTHON_NAMES or CLI_NAMES)."""

    size: tuple[int, int] | None = None
    scale: str = "0-1"
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    layout: str | None = None
    names: Mapping[str, str] = dataclasses.field(default_factory=lambda: PYTHON_NAMES)


@dataclasses.dataclass
class InputFiles:
    """What was read from input files: one array (one-input models) or a dict by input name,
    plus what labels plots: the CSV column names, the image layout and the image file names (one per
    row), when there were any."""

    data: Any
    feature_names: list[str] | None = None
    layout: str | None = None
    sample_names: list[str] | None = None


def require_file(path: FilePath, what: str) -> Path:
    """`path` as a Path; `ArgumentError` "{what} {path!r} does not exist." if it does not."""
    p = Path(path)
    if not p.exists():
        raise ArgumentError(f"{what} {str(path)!r} does not exist.")
    return p


def _read_csv(path: Path, header: list[str] | None = None) -> np.ndarray:
    """Rows of numbers, float32 (rows, columns); a first row that is not numeric is taken as
    column names (into `header`)."""
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
            f"{str(path)!r} has no data rows"
            + (" (only a header)" if skip else " (the file is empty)")
            + ": give one row of comma-separated numbers per sample."
        )
    return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, skiprows=skip)


def read_array_file(path: Path, what: str, header: list[str] | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """An .npy file's array, an .npz file's arrays by name, or a .csv file's rows (see _read_csv).
    Never unpickles: an unreadable file is an `InputError`."""
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
        reason = (
            str(exc) if suffix == ".csv" else f"it is not a valid {suffix} file (corrupt, truncated, or another format)"
        )
        raise InputError(
            f"Cannot read {what} file {str(path)!r}: {reason}. Save arrays with np.save (.npy) or "
            "np.savez (.npz); onnxshap never loads pickled data."
        ) from None


def _image_files(paths: Sequence[Path], what: str) -> list[Path]:
    """The image files among `paths`, a folder standing for its image files in name order."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise ArgumentError(
                    f"{what} folder {str(p)!r} contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))})."
                )
            files += found
        else:
            files.append(p)
    return files


def image_layout(shape: tuple[Any, ...] | None, options: ImageOptions) -> tuple[str, int | None, tuple[Any, Any]]:
    """(layout, channels or None if free, (H, W) as the model declares them) for an image input
    of declared `shape` (rank 4, or 3 for grayscale without a channel axis)."""
    if shape is None:
        raise ArgumentError(
            "The model does not declare its input shape, so images cannot be laid out; pass a .npy file."
        )
    if len(shape) == 3:  # N, H, W: grayscale without a channel axis
        return "NHW", 1, (shape[1], shape[2])
    if len(shape) != 4:
        raise ArgumentError(
            f"Images need a model input of rank 4 (or 3 for grayscale without channels); it has {len(shape)}."
        )

    def is_channels(d: Any) -> bool:
        return isinstance(d, int) and d in (1, 3, 4)

    layout = options.layout
    if layout is None:
        first, last = is_channels(shape[1]), is_channels(shape[3])
        if first and not last:
            layout = "NCHW"
        elif last and not first:
            layout = "NHWC"
        else:
            spell = options.names["layout"]
            raise ArgumentError(
                f"Cannot tell the channel axis of input shape {list(shape)}: pass "
                f"{spell.format('NCHW')} or {spell.format('NHWC')}."
            )
    elif layout not in ("NCHW", "NHWC"):
        raise ArgumentError(f"layout must be 'NCHW' or 'NHWC', not {layout!r}.")
    c_axis = 1 if layout == "NCHW" else 3
    channels = shape[c_axis] if isinstance(shape[c_axis], int) and shape[c_axis] > 0 else None
    hw = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    return layout, channels, hw


def _read_images(files: Sequence[Path], info: TensorInfo, options: ImageOptions) -> tuple[np.ndarray, str]:
    """Images -> (float32 array in the model's layout, resized, scaled, normalised per channel;
    the layout)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError(
            "Reading images needs Pillow, which is not installed. Install it with: pip install 'onnxshap[image]'"
        ) from exc
    if options.scale not in SCALES:
        raise ArgumentError(f"scale must be one of {sorted(SCALES)}, not {options.scale!r}.")
    layout, channels, (mh, mw) = image_layout(info.shape, options)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels or 3)
    if mode is None:
        raise ArgumentError(f"The model input has {channels} channels; images have 1 (grayscale), 3 (RGB) or 4 (RGBA).")
    size: tuple[int, int] | None = None
    if options.size:
        size = (options.size[0], options.size[1])
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
        raise ArgumentError(
            f"The images have different sizes {sorted(sizes)}; pass {options.names['image_size']} to resize them."
        )
    x = np.stack(pixels)
    if x.ndim == 3:
        x = x[..., None]  # grayscale: N, H, W -> N, H, W, 1
    factor, offset = SCALES[options.scale]
    x = x * np.float32(factor) + np.float32(offset)
    n_channels = x.shape[-1]
    steps = (("mean", options.mean, np.subtract), ("std", options.std, np.divide))
    for key, values, apply in steps:
        if values:
            if len(values) not in (1, n_channels):
                raise ArgumentError(
                    f"{options.names[key]} takes 1 or {n_channels} values (one per channel); got {len(values)}."
                )
            x = apply(x, np.asarray(values, dtype=np.float32))
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    elif layout == "NHW":
        x = x[..., 0]
    return np.ascontiguousarray(x, dtype=np.float32), layout


def load_files(
    paths: Sequence[FilePath],
    inputs: Sequence[TensorInfo],
    what: str = "input",
    options: ImageOptions | None = None,
) -> InputFiles:
    """Read one .npy/.npz/.csv file, or image files and folders, for a model with graph `inputs`
    (cast to their dtypes). `what` names the files in messages ("input", "background")."""
    if not inputs:
        raise InputError(
            "The model has no graph inputs (its outputs are constants), so there is nothing to "
            f"feed from {what} files or to explain; `onnxshap check MODEL` without --input "
            "evaluates it."
        )
    options = options or ImageOptions()
    files = [require_file(p, f"{what} file") for p in paths]
    kinds = {"image" if f.is_dir() or f.suffix.lower() in IMAGE_SUFFIXES else f.suffix.lower() for f in files}
    if kinds == {"image"}:
        floats = [i for i in inputs if i.dtype is None or i.dtype.kind == "f"]
        if len(inputs) != 1 or not floats:
            raise ArgumentError(
                f"Images can feed a model with one float input; this model's inputs are "
                f"{', '.join(i.describe() for i in inputs)}. Pass an .npz file with one array "
                "per input."
            )
        image_files = _image_files(files, what)
        images, layout = _read_images(image_files, inputs[0], options)
        return InputFiles(
            cast_to_inputs(images, inputs),
            layout=layout,
            sample_names=[f.name for f in image_files],
        )
    known = ARRAY_SUFFIXES | IMAGE_SUFFIXES
    unknown = [str(f) for f in files if f.suffix.lower() not in known and not f.is_dir()]
    if unknown:
        raise ArgumentError(
            f"{what} file {unknown[0]!r}: use .npy, .npz (one array per input name), .csv, or images (png/jpg)."
        )
    if len(files) != 1:
        raise ArgumentError(
            f"Give one .npy/.npz/.csv {what} file (several files are only for images); got {len(files)}."
        )
    header: list[str] = []
    data = read_array_file(files[0], what, header)
    names = [i.name for i in inputs]
    if isinstance(data, dict) and len(data) == 1 and len(names) == 1 and names[0] not in data:
        # np.savez(path, x) stores "arr_0": accepted for one-input models.
        data = next(iter(data.values()))
    return InputFiles(cast_to_inputs(data, inputs), feature_names=header or None)


def read_fixed(pairs: Sequence[tuple[str, FilePath]], inputs: Sequence[TensorInfo]) -> dict[str, np.ndarray]:
    """(input name, .npy file) pairs -> one value per input, cast to its declared dtype."""
    fixed: dict[str, np.ndarray] = {}
    for name, file in pairs:
        data = read_array_file(require_file(file, "--fixed file"), "--fixed")
        if isinstance(data, dict):
            if len(data) != 1:
                raise ArgumentError(f"--fixed {name}={file}: give one array (.npy), not {len(data)} arrays.")
            data = next(iter(data.values()))
        fixed[name] = cast_to_inputs({name: data}, inputs)[name]
    return fixed


def cast_to_inputs(feeds: Any, inputs: Sequence[TensorInfo]) -> Any:
    """Cast floats to the declared float dtype and integers to the declared integer dtype (files are
    often float64 / int64 where models take float32 / int32); integers only when the values fit.
    `feeds`: a dict by input name, or one array for a one-input model."""
    declared = {i.name: i.dtype for i in inputs}

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


def rows(data: Any) -> int:
    """Leading-axis length of an array, or of a dict's first array (0 for a scalar)."""
    first = next(iter(data.values())) if isinstance(data, dict) else data
    return int(first.shape[0]) if np.ndim(first) else 0


def take(data: Any, index: Any) -> Any:
    """`data[index]` for an array, or for each array of a dict."""
    return {k: v[index] for k, v in data.items()} if isinstance(data, dict) else data[index]


def pad_rows(data: Any, n: int) -> Any:
    """Pad to n rows by repeating the last row, so that every batch has one shape (no recompile)."""
    have = rows(data)
    if have >= n:
        return data
    return take(data, np.concatenate([np.arange(have), np.full(n - have, have - 1)]))


def sample_rows(data: Any, n: int, seed: int) -> Any:
    """`n` rows drawn without replacement (seeded, in file order); all of `data` if it has <= n."""
    total = rows(data)
    if n >= total:
        return data
    pick = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return take(data, pick)


def read_inputs(
    paths: FilePath | Sequence[FilePath],
    model: Model | ModelLike,
    *,
    image_size: tuple[int, int] | None = None,
    scale: str = "0-1",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layout: str | None = None,
) -> dict[str, np.ndarray]:
    """Read data files as `model`'s inputs, as `onnxshap explain --input` does.

    Args:
        paths: one .npy file (a one-input model), .npz file (one array per input name), .csv file
            (one row per sample; a header row is skipped), or image files and folders of images
            (a folder's image files in name order; one float input of rank 4, or 3 for grayscale).
        model: a `Model` from `load`, or what `load` takes (a path, bytes, an onnx.ModelProto).
        image_size: images only: resize to (H, W); default the model's input size.
        scale: images only: map pixel values 0..255 to "0-1" (default) or "0-255".
        mean, std: images only: per-channel values (or one value) subtracted, then divided by,
            after scaling.
        layout: images only: "NCHW" or "NHWC"; default from the model's input shape.

    Returns:
        Arrays by input name, cast to the declared dtypes (floats to the float type, integers to the
        integer type where the values fit); an image array is (n_images, *one image in the layout).

    Raises:
        InputError: a file is missing, has an unknown suffix or unreadable contents, or images do
            not fit the model (also for a `mean`/`std` of the wrong length).
        MissingDependencyError: images without Pillow installed.
    """
    from onnxshap._model import Model, load

    if not isinstance(model, Model):
        model = load(model)
    listed = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    options = ImageOptions(size=image_size, scale=scale, mean=mean, std=std, layout=layout)
    data = load_files(listed, model.inputs, "input", options).data
    if isinstance(data, dict):
        return dict(data)
    if len(model.inputs) > 1:
        raise ArgumentError(
            f"The model has {len(model.inputs)} inputs "
            f"({', '.join(i.describe() for i in model.inputs)}): pass an .npz file with one "
            "array per input name."
        )
    return {model.inputs[0].name: data}
