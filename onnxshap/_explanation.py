"""`Explanation`: the result of `Explainer.explain`, its completeness measures and its .npz file.

Depends on nothing that computes attributions: plots (`_plots`), shap interop (`_interop`) and the
notebook view (`_notebook`) build on this module, and the methods that draw or convert import them
when called, so that reading a saved explanation needs neither JAX nor matplotlib.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxshap._errors import InputError
from onnxshap._files import write_whole

if TYPE_CHECKING:
    from onnxshap._plots import Kind

#: Completeness tolerance, relative to |f(x) - base| (floored at FLOOR * max(1, |f(x)|, |base|) so that
#: outputs that barely change are judged at the precision of the dtype: f(x) and the background mean
#: each carry a few ulps of rounding, which for a saturated float32 output (p ~ 1 everywhere) is the
#: whole of f(x) - base; with FLOOR 0.1, one ulp of max(1, |f|) reads as ~1e-6).
ADDITIVITY_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}
ADDITIVITY_FLOOR = {np.dtype(np.float32): 1e-1, np.dtype(np.float64): 1e-4}
#: A second floor, relative to the attribution mass sum(|values|): attributions that cancel each other
#: cannot sum more precisely than the rounding of their terms (float32: 1e-5 of the mass).
ADDITIVITY_MASS_FLOOR = {np.dtype(np.float32): 1e-1, np.dtype(np.float64): 1e-4}


def additivity_rtol(dtype: Any) -> float:
    """The completeness tolerance `Explainer(check=...)` applies to outputs of `dtype` (float32's for others)."""
    return ADDITIVITY_RTOL.get(np.dtype(dtype), ADDITIVITY_RTOL[np.dtype(np.float32)])


def relative_residual(residual: np.ndarray, fx: np.ndarray, base: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """|residual| / max(|f(x) - base|, floor * max(1, |f(x)|, |base|), mass_floor * sum|values|), elementwise."""
    dtype = np.dtype(fx.dtype) if np.dtype(fx.dtype) in ADDITIVITY_FLOOR else np.dtype(np.float32)
    scale = np.maximum(np.abs(fx - base), ADDITIVITY_FLOOR[dtype] * np.maximum(1, np.maximum(np.abs(fx), np.abs(base))))
    scale = np.maximum(scale, ADDITIVITY_MASS_FLOOR[dtype] * mass)
    return np.abs(residual) / scale


@dataclass
class Explanation:
    """Attributions for a batch of samples.

    Attributes:
        values: (n_samples, *input_shape, n_outputs) per explained input; a dict by input name when
            several inputs are explained, else one array. input_shape is the shape of one row of the
            array the samples were given in (see `readings`): the declared shape without its batch
            axis for ordinary exports, the whole declared shape for a graph without a batch axis.
        base_values: (n_samples, n_outputs): mean model output over the background.
        data: the explained inputs' values, like `values` without the output axis; None for an
            explained intermediate tensor (no value of its own in the samples).
        prediction: (n_samples, n_outputs): the model's explained outputs at the samples.
        residual: (n_samples, n_outputs): sum(values) - (prediction - base_values).
        input_names: names of the explained tensors.
        output_names: labels of the explained outputs ("probs[3]", "logits[12,0,5]" where the batch
            axis is not axis 0); for output="predicted" the label of each sample's class is in
            `output_indices`.
        output_indices: (n_samples, n_outputs): flat index of each explained output.
        all_output_names: labels of every output slot of one sample: every element of each explained
            output tensor of one example, in C order.
        embedding_values: for id inputs, per embedding dimension (n_samples, *ids_shape, *emb,
            n_outputs), or for one-hot encoded ids per channel (n_samples, *one-hot shape, n_outputs),
            by input name; `values` holds their sums per id position.
        gradient_nodes: nodes attributed with plain gradients (a user's choice or
            allow_gradient_fallback); empty when every rule is complete.
        readings: how each graph input's samples were read: "rows" (axis 0 indexes samples, each row
            fed as a batch of one), "examples" (each row a whole example, for graphs without a batch
            axis) or "fixed" (one value for every sample). See docs/real-exports.md.
    """

    values: np.ndarray | dict[str, np.ndarray]
    base_values: np.ndarray
    data: np.ndarray | dict[str, np.ndarray | None] | None
    prediction: np.ndarray
    residual: np.ndarray
    input_names: list[str]
    output_names: list[str]
    output_indices: np.ndarray
    all_output_names: list[str] = field(default_factory=list)
    embedding_values: dict[str, np.ndarray] = field(default_factory=dict)
    gradient_nodes: list[str] = field(default_factory=list)
    readings: dict[str, str] = field(default_factory=dict)

    def values_for(self, name: str) -> np.ndarray:
        if isinstance(self.values, dict):
            return self.values[name]
        if name != self.input_names[0]:
            raise KeyError(name)
        return self.values

    @property
    def attribution_mass(self) -> np.ndarray:
        """(n_samples, n_outputs): sum of |values| over all explained input elements."""
        arrays = self.values.values() if isinstance(self.values, dict) else [self.values]
        n, k = self.prediction.shape
        return np.sum([np.abs(v).reshape(n, -1, k).sum(axis=1) for v in arrays], axis=0)

    @property
    def relative_residual(self) -> np.ndarray:
        """(n_samples, n_outputs): the residual relative to |f(x) - base| (floors: see ADDITIVITY_*)."""
        return relative_residual(self.residual, self.prediction, self.base_values, self.attribution_mass)

    @property
    def max_relative_residual(self) -> float:
        return float(np.max(self.relative_residual, initial=0.0))

    def plot(self, path: str | Path | None = None, kind: Kind = "auto", **options: Any) -> Any:
        """Draw to `path` (.png/.svg/.pdf; .html for kind="text"): "image", "text", "bar", "waterfall" or
        "auto". Without a path, return the plot, shown inline by Jupyter: a matplotlib Figure, or for
        text a `TextHTML`. Options and layouts: docs/plots.md. Needs onnxshap[plot], except the HTML text view."""
        from onnxshap._plots import plot

        return plot(self, path, kind, **options)

    def __repr__(self) -> str:
        # The dataclass repr would print every array in full.
        from onnxshap._notebook import explanation_repr

        return explanation_repr(self, completeness(self))

    def _repr_html_(self) -> str:
        """Jupyter's view: samples, outputs, base values, completeness, and the default plot."""
        from onnxshap._notebook import explanation_html

        return explanation_html(self, completeness(self))

    def to_shap(self, output: int | str | Sequence[int | str] | None = None, **options: Any) -> Any:
        """A `shap.Explanation` (needs shap) so shap's plots work on these values; options input=,
        layout="features" (one row of features per sample; one output drops the output axis) or "image"
        (for shap.plots.image), feature_names=, tokens=, channel_axis=. See docs/plots.md."""
        from onnxshap._interop import to_shap

        return to_shap(self, output, **options)

    def save(self, path: str | Path) -> None:
        """Write an .npz file (no pickle). The file is written whole or not at all: on any failure the
        partial file is removed and `OutputError` says why."""
        arrays: dict[str, Any] = {
            "base_values": self.base_values,
            "prediction": self.prediction,
            "residual": self.residual,
            "output_indices": self.output_indices,
            "input_names": np.array(self.input_names),
            "output_names": np.array(self.output_names),
            "all_output_names": np.array(self.all_output_names),
            "gradient_nodes": np.array(self.gradient_nodes, dtype=str),
            "readings": np.array([f"{k}={v}" for k, v in self.readings.items()], dtype=str),
        }
        for name, array in self.embedding_values.items():
            arrays[f"embedding_values/{name}"] = array
        for name in self.input_names:
            arrays[f"values/{name}"] = self.values_for(name)
            data = self.data[name] if isinstance(self.data, dict) else self.data
            if data is not None:  # None for intermediate tensors
                arrays[f"data/{name}"] = data

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
                np.savez(fh, **arrays)

        write_whole(path, write)

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read an .npz file written by `save` (or `onnxshap explain -o`); never unpickles.

        Raises `InputError` for a missing file, a file that is not an .npz archive, or an archive
        that is not an explanation (the message names what is missing).
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"Cannot load {path}: " + ("it is a directory." if path.is_dir() else "no such file."))
        try:
            return cls._read(path)
        except KeyError as exc:
            missing = str(exc.args[0]).split(" ")[0] if exc.args else "?"
            raise InputError(
                f"{path} is not an onnxshap explanation: it has no {missing!r} array. Explanation.load reads the "
                ".npz files that Explanation.save and `onnxshap explain -o` write."
            ) from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(
                f"{path} is not a readable .npz archive ({type(exc).__name__}): it is corrupt, truncated, or another "
                "kind of file. Explanation.load reads the files that Explanation.save writes; onnxshap never "
                "unpickles data."
            ) from None

    @classmethod
    def _read(cls, path: Path) -> Explanation:
        # Our own handle: np.load leaves its file open when the archive is not a zip file.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            names = [str(n) for n in f["input_names"]]
            values = {n: f[f"values/{n}"] for n in names}
            data = {n: f[f"data/{n}"] if f"data/{n}" in f.files else None for n in names}
            single = len(names) == 1
            return cls(
                values=values[names[0]] if single else values,
                base_values=f["base_values"],
                data=data[names[0]] if single else data,
                prediction=f["prediction"],
                residual=f["residual"],
                input_names=names,
                output_names=[str(n) for n in f["output_names"]],
                output_indices=f["output_indices"],
                all_output_names=[str(n) for n in f["all_output_names"]],
                embedding_values={k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("embedding_values/")},
                gradient_nodes=[str(n) for n in f["gradient_nodes"]] if "gradient_nodes" in f.files else [],
                readings=dict(str(r).rsplit("=", 1) for r in f["readings"]) if "readings" in f.files else {},
            )


def _per_sample_fields(e: Explanation) -> list[str]:
    """Fields with a leading sample axis: arrays, and dicts of arrays (by input)."""

    def per_sample(value: Any) -> bool:
        if isinstance(value, dict):
            return all(v is None or isinstance(v, np.ndarray) for v in value.values())
        return isinstance(value, np.ndarray)

    return [f.name for f in dataclasses.fields(e) if per_sample(getattr(e, f.name))]


def concatenate(parts: Sequence[Explanation]) -> Explanation:
    """Explanations of consecutive batches (same model, outputs and background) as one, joined on
    the sample axis."""
    if len(parts) == 1:
        return parts[0]

    def cat(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {k: cat([v[k] for v in values]) for k in values[0]}
        if values[0] is None:
            return None
        return np.concatenate(values)

    fields = _per_sample_fields(parts[0])
    return dataclasses.replace(parts[0], **{f: cat([getattr(p, f) for p in parts]) for f in fields})


def first_samples(e: Explanation, n: int) -> Explanation:
    """The first n samples (drops the rows that pad a last batch)."""

    def cut(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: cut(a) for k, a in v.items()}
        return None if v is None else v[:n]

    return dataclasses.replace(e, **{f: cut(getattr(e, f)) for f in _per_sample_fields(e)})


def completeness(e: Explanation) -> tuple[float, float, bool]:
    """(max relative residual, tolerance, passed), judged as `Explainer(check=...)` judges it."""
    dtype = np.dtype(np.asarray(e.prediction).dtype)
    rtol = additivity_rtol(dtype)
    rel = np.asarray(e.relative_residual, dtype=np.float64)
    worst = float(np.max(np.where(np.isnan(rel), np.inf, rel), initial=0.0))
    return worst, rtol, bool(np.isfinite(worst) and worst <= rtol)
