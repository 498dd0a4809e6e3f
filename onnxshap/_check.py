"""`onnxshap check`: onnxshap's forward pass against onnxruntime's, on given or random inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnxshap._errors import ModelLoadError
from onnxshap._inspect import is_mask
from onnxshap._model import Model
from onnxshap._tokens import find_embeddings


def random_feeds(model: Model) -> tuple[dict[str, np.ndarray], list[str]]:
    """Seeded random inputs (free dims 2) that exercise the model, and per input what was drawn.

    Zeros would hide faults (every id the same row, every mask off, masked attention all NaN): ids
    that feed a lookup are drawn within its table, masks are 0/1 (mostly 1), other integers small
    and non-negative, booleans True/False, floats standard normal.
    """
    rng = np.random.default_rng(0)
    lookups = find_embeddings(model)
    feeds: dict[str, np.ndarray] = {}
    drawn: list[str] = []
    for i in model.inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else 2 for d in (i.shape or ()))
        dtype = i.dtype or np.dtype(np.float32)
        # ml_dtypes (bfloat16, float 8) are kind "V"
        kind = "f" if dtype.kind == "V" and "float" in dtype.name else dtype.kind
        if i.name in lookups:
            found = lookups[i.name]
            high = min(e.vocab for e in found)
            if kind in "iu":
                high = min(high, int(np.iinfo(dtype.name).max) + 1)
            value, how = rng.integers(0, high, shape), f"in [0, {high}) (ids of {found[0].via})"
        elif kind == "b":
            value, how = rng.random(shape) < 0.5, "random True/False"
        elif kind in "iu" and is_mask(model.graph, i.name):
            value, how = rng.random(shape) < 0.8, "0/1, mostly 1 (a mask)"
        elif kind in "iu":
            value, how = rng.integers(0, 10, shape), "in [0, 10)"
        elif kind == "f":
            value, how = rng.standard_normal(shape), "standard normal"
        else:
            value, how = np.zeros(shape), "zeros"
        # An array even for shape (): rng gives scalars.
        feeds[i.name] = np.asarray(value).astype(dtype)
        drawn.append(f"{i.name} {dtype}{list(shape)} {how}")
    return feeds, drawn


def compare(value: Any, ref: Any, rtol: float, atol: float) -> tuple[str, float]:
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
    same_size = value.dtype.itemsize == ref.dtype.itemsize
    if value.dtype.kind == "V" and ref.dtype.kind == "u" and same_size:
        ref = ref.view(value.dtype)  # onnxruntime returns float 8 tensors as raw bytes (uint8)
    if value.dtype != ref.dtype:
        return f"{head}, dtype {value.dtype} but onnxruntime gives {ref.dtype}", float("inf")
    if value.dtype.kind == "V":  # ml_dtypes (bfloat16, float 8, int4): compare the values
        value, ref = value.astype(np.float64), ref.astype(np.float64)
    if value.dtype.kind not in "fc":
        if np.array_equal(value, ref):
            return f"{head}, identical to onnxruntime", 0.0
        n, k, where = at(value != ref)
        return (
            f"{head}, DIFFERENT from onnxruntime at {n} of {value.size} position(s) "
            f"(first at {where}: {value[k]} vs onnxruntime {ref[k]})"
        ), float("inf")
    wide = np.complex128 if value.dtype.kind == "c" else np.float64
    a, b = value.astype(wide), ref.astype(wide)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    for only, side in (
        (nan_a & ~nan_b, "onnxshap's output, not in onnxruntime's"),
        (nan_b & ~nan_a, "onnxruntime's output, not in onnxshap's"),
    ):
        if only.any():
            n, k, where = at(only)
            return (
                f"{head}, NaN at {n} position(s) in {side} (first at {where}: {a[k]} vs onnxruntime {b[k]})"
            ), float("inf")
    infinite = (np.isinf(a) | np.isinf(b)) & ~nan_a
    if np.any(infinite & (a != b)):
        n, k, where = at(infinite & (a != b))
        return (
            f"{head}, infinities differ at {n} position(s) (first at {where}: {a[k]} vs onnxruntime {b[k]})"
        ), float("inf")
    notes = [head]
    positive = a.real > 0
    marks = (("NaN", nan_a), ("+inf", infinite & positive), ("-inf", infinite & ~positive))
    for label, same in marks:
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
        text += (
            f"; worst at {where}: {a[k]:.8g} vs onnxruntime {b[k]:.8g} "
            f"(|difference| {diff[k]:.3g}, tolerance {allowed[k]:.3g})"
        )
    return ", ".join([*notes, text]), worst


def reference_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """onnxruntime's outputs by name for the model file at `path` (CPU, graph optimisations off).

    Raises:
        ModelLoadError: onnxruntime cannot load or run the model.
    """
    import onnxruntime as ort
    from onnxruntime.capi import (
        onnxruntime_pybind11_state as ort_state,  # type: ignore[attr-defined]
    )

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # The model as written: optimised, onnxruntime fuses QDQ pairs into integer kernels
    # (QLinearConv, ...), which round differently, so a faithful pass would look like a mismatch.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    refused = (
        ort_state.Fail,
        ort_state.InvalidGraph,
        ort_state.InvalidArgument,
        ort_state.InvalidProtobuf,
        ort_state.NotImplemented,
        ort_state.RuntimeException,
        ort_state.EPFail,
    )
    stage = "load"
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        stage = "run"
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except refused as exc:
        first = next((line.strip().rstrip(".") for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelLoadError(
            f"onnxruntime could not {stage} the model {str(path)!r}: {first}. `onnxshap check` "
            "compares onnxshap's forward pass with onnxruntime's, so it needs onnxruntime to "
            f"{stage} the model; onnxshap itself ran it. Check the model with "
            "onnx.checker.check_model(path, full_check=True), or compare Model.run with another "
            "reference in Python."
        ) from exc
