"""How a user's arrays map onto the examples a graph evaluates, whatever its batch layout.

The attribution pass evaluates every sample and every reference as its own example: one feed per
graph input, with exactly the shape the graph declares for a batch of one. Each array the user
passes is read one of three ways:

- ``"rows"``: the array has the input's rank; axis 0 indexes the samples and each row is fed with
  a batch axis of 1 in front. Needs the declared axis 0 to be 1 or dynamic. This is the reading
  for ordinary exports (``[batch, ...]``) and for a batch fixed at 1 (``[1, 3, 800, 608]``).
- ``"examples"``: the array has the input's rank + 1; each row is a whole example, fed as it is.
  This is the reading for graphs without a batch axis (``[frames, bins]``), and for any layout
  when the user passes ``x[:, None]``-style arrays.
- ``"fixed"``: one value shared by every sample and reference (recurrent state, a threshold),
  given with the declared shape. Only for inputs that are not explained.

Ranks tell "rows" and "examples" apart. The one ambiguity left is a dynamic axis 0 that is not a
batch axis (an input ``[frames, bins]`` given as a ``(frames, bins)`` array): it is read as rows,
and the reading is recorded (``Explanation.readings``) and printed by the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from onnxshap._errors import InputError
from onnxshap._graph import TensorInfo

Reading = Literal["rows", "examples", "fixed"]

#: Dimension names that only say "unknown": they tie no axes together. PaddlePaddle writes "?" for
#: every dynamic dimension, tf2onnx "unk__<n>", others "-1", "None" or "dynamic".
_UNKNOWN_DIM = re.compile(r"^(|\?|-1|none|null|unk|unknown|dynamic|unk__\d+)$", re.IGNORECASE)


def is_unknown_dim(dim: Any) -> bool:
    """True for a dimension that is dynamic and named by nothing that ties it to another axis."""
    return (
        dim is None
        or (isinstance(dim, int) and dim <= 0)
        or (isinstance(dim, str) and bool(_UNKNOWN_DIM.match(dim.strip())))
    )


def dims_text(shape: Sequence[Any] | None) -> str:
    """A declared shape as text: [1, 3, ?, ?], with symbolic names kept."""
    if shape is None:
        return "[any shape]"
    return "[" + ", ".join("?" if d is None or (isinstance(d, int) and d <= 0) else str(d) for d in shape) + "]"


@dataclass(frozen=True)
class Feeds:
    """User arrays read into examples.

    Attributes:
        examples: per input read as "rows" or "examples": (n, *example_shape), where example_shape is
            what the graph takes for one sample (a batch of one where the graph has a batch axis).
        fixed: per input read as "fixed": one example-shaped value for every sample.
        readings: how each input's array was read.
        n: the number of samples (0 when every input is fixed).
    """

    examples: dict[str, np.ndarray]
    fixed: dict[str, np.ndarray]
    readings: dict[str, Reading]
    n: int

    def example_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.examples[name].shape[1:]) if name in self.examples else tuple(self.fixed[name].shape)

    def describe(self) -> str:
        """One phrase per input: 'x: 8 rows, each fed as [1, 3, 16, 16]'."""
        parts = []
        for name, reading in self.readings.items():
            shape = list(self.example_shape(name))
            if reading == "rows":
                parts.append(f"{name}: {self.n} row(s), each fed as a batch of one {shape}")
            elif reading == "examples":
                parts.append(f"{name}: {self.n} whole example(s) {shape}")
            else:
                parts.append(f"{name}: one fixed value {shape} for every sample")
        return "; ".join(parts)


def check_names(inputs: Sequence[TensorInfo], given: Collection[str], what: str) -> None:
    """Every given name is an input and every input is given, else an InputError listing the inputs."""
    expected = [i.name for i in inputs]
    unknown = [k for k in given if k not in expected]
    if unknown:
        raise InputError(
            f"Unknown {what} name(s) {unknown}. The model's inputs are: "
            + ", ".join(i.describe() for i in inputs)
            + "."
        )
    missing = [n for n in expected if n not in given]
    if missing:
        raise InputError(
            f"Missing {what}(s) {missing}. Provide every {what}: " + ", ".join(i.describe() for i in inputs) + "."
        )


def check_dtype(info: TensorInfo, array: np.ndarray, what: str) -> None:
    """The array has the declared element type, else an InputError with the cast to make."""
    if info.dtype is not None and array.dtype != info.dtype:
        hint = f" Convert it with `x.astype(np.{info.dtype.name})`." if array.dtype.kind in "fiub" else ""
        raise InputError(
            f"{what.capitalize()} {info.name!r} has dtype {array.dtype}, but the model expects {info.dtype}.{hint}"
        )


def _fits(shape: Sequence[int], declared: Sequence[Any]) -> bool:
    """Static dims equal; dynamic ones anything (symbols are checked across inputs later)."""
    return len(shape) == len(declared) and all(
        not (isinstance(want, int) and want > 0) or got == want for got, want in zip(shape, declared)
    )


def _first_mismatch(shape: Sequence[int], declared: Sequence[Any], offset: int) -> str:
    for axis, (got, want) in enumerate(zip(shape, declared), offset):
        if isinstance(want, int) and want > 0 and got != want:
            return f": axis {axis} must be {want}, not {got}"
    return ""


def _readings_tried(info: TensorInfo, shape: tuple[int, ...], fixed_ok: bool) -> str:
    declared = info.shape
    assert declared is not None
    if len(shape) == len(declared):
        why = _first_mismatch(shape[1:], declared[1:], 1) or " (as one row per sample)"
    elif len(shape) == len(declared) + 1:
        why = _first_mismatch(shape[1:], declared, 1) or ""
    else:
        why = f": rank {len(shape)}, but the model expects rank {len(declared)} (or {len(declared) + 1} for whole examples)"
    lines = [
        f"  rows: an array {dims_text(('n', *declared[1:]))} whose rows are fed as a batch of one"
        + (
            ""
            if declared and not (isinstance(declared[0], int) and declared[0] > 1)
            else f" (not possible: the model's axis 0 is fixed at {declared[0]}, so it is no batch axis)"
        ),
        f"  examples: an array {dims_text(('n', *declared))} whose rows are whole examples",
    ]
    if fixed_ok:
        lines.append(f"  fixed: one value {dims_text(declared)} shared by every sample")
    return (
        f"{info.name!r} has shape {list(shape)}, which fits no reading of {dims_text(declared)}{why}. Tried:\n"
        + "\n".join(lines)
    )


def read_feeds(
    inputs: Sequence[TensorInfo],
    feeds: Mapping[str, Any],
    *,
    what: str = "input",
    fixed_ok: Collection[str] = (),
    given_fixed: Mapping[str, Any] | None = None,
) -> Feeds:
    """Read user arrays (and values declared fixed) into examples of `inputs`.

    Args:
        inputs: the graph inputs the arrays are for; every one must be in `feeds` or `given_fixed`.
        feeds: arrays by input name, read as "rows" or "examples", or as "fixed" for names in
            `fixed_ok` whose array has the declared shape where the row count cannot be the samples'.
        given_fixed: values the user declared fixed (``fixed=``), each with the declared shape.

    Raises:
        InputError: unknown or missing names, a wrong dtype, an array no reading fits (the readings
            tried are listed), inputs disagreeing on the number of samples or on a named dimension.
    """
    expected = {i.name: i for i in inputs}
    given_fixed = dict(given_fixed or {})
    twice = [k for k in feeds if k in given_fixed]
    if twice:
        raise InputError(f"{what.capitalize()} {twice} are given both as fixed values and as {what}s; give each once.")
    check_names(inputs, [*feeds, *given_fixed], what)
    arrays = {name: np.asarray(value) for name, value in {**feeds, **given_fixed}.items()}
    for name, array in arrays.items():
        check_dtype(expected[name], array, what)
    for name in given_fixed:
        info, array = expected[name], arrays[name]
        if info.shape is not None and not _fits(array.shape, info.shape):
            raise InputError(
                f"Fixed input {name!r} has shape {list(array.shape)}, but the model declares {dims_text(info.shape)}: "
                "a fixed value is one example's value, given with the declared shape."
            )

    readings: dict[str, Reading] = {name: "fixed" for name in given_fixed}
    examples: dict[str, np.ndarray] = {}
    undecided: list[str] = []
    for name in feeds:
        info, array = expected[name], arrays[name]
        if info.shape is None:  # unknown rank: rows along axis 0
            if array.ndim == 0:
                raise InputError(f"{what.capitalize()} {name!r} is a scalar; pass rows, shape (n_samples, ...).")
            readings[name], examples[name] = "rows", array[:, None]
            continue
        declared = info.shape
        rows = array.ndim == len(declared) and array.ndim > 0 and not (isinstance(declared[0], int) and declared[0] > 1)
        rows = rows and _fits(array.shape[1:], declared[1:])
        whole = array.ndim == len(declared) + 1 and _fits(array.shape[1:], declared)
        # Given once: the declared shape, with every dynamic dim 1 (a batch of one), never a count
        # of rows that merely differs from the samples'.
        fixed = (
            name in fixed_ok
            and _fits(array.shape, declared)
            and all(got == 1 for got, want in zip(array.shape, declared) if not (isinstance(want, int) and want > 0))
        )
        if fixed and not rows:
            readings[name] = "fixed"
        elif rows and fixed:
            undecided.append(name)  # rows or fixed: decided by the samples' count below
        elif rows:
            readings[name], examples[name] = "rows", array[:, None]
        elif whole:
            readings[name], examples[name] = "examples", array
        else:
            raise InputError(f"{what.capitalize()} {_readings_tried(info, array.shape, name in fixed_ok)}")

    counts = {name: int(v.shape[0]) for name, v in examples.items()}
    if undecided and not counts:
        # Only held inputs: their rows are the samples.
        counts = {name: int(arrays[name].shape[0]) for name in undecided}
    n_values = set(counts.values())
    if len(n_values) > 1:
        raise InputError(
            f"The {what}s disagree on the number of samples: "
            + ", ".join(f"{k} has {v} ({readings.get(k, 'rows')})" for k, v in counts.items())
            + ". Every array holds one entry per sample, except fixed values (shared by every sample)."
        )
    n = n_values.pop() if n_values else 0
    for name in undecided:
        array = arrays[name]
        if array.shape[0] == n:
            readings[name], examples[name] = "rows", array[:, None]
        else:
            readings[name] = "fixed"
    fixed_values = {name: arrays[name] for name, r in readings.items() if r == "fixed"}
    result = Feeds(examples, fixed_values, {k: readings[k] for k in expected if k in readings}, n)
    _check_symbols(expected, result, what)
    return result


def _check_symbols(expected: Mapping[str, TensorInfo], feeds: Feeds, what: str) -> None:
    """Named dimensions must agree across the inputs of one example; unknown names tie nothing."""
    symbols: dict[str, tuple[int, str]] = {}
    for name, info in expected.items():
        if info.shape is None or name not in feeds.readings:
            continue
        shape = feeds.example_shape(name)
        for axis, (got, want) in enumerate(zip(shape, info.shape)):
            if not isinstance(want, str) or is_unknown_dim(want):
                continue
            if want in symbols and symbols[want][0] != got:
                other_size, other = symbols[want]
                raise InputError(
                    f"Dimension {want!r} is {other_size} in {what} {other!r} but {got} in {what} {name!r} (axis {axis}) "
                    f"for one example ({feeds.describe()}); inputs that share a named dimension must agree on its size."
                    + (
                        " A fixed value is fed beside a batch of one, so its batch dimension must be 1."
                        if feeds.readings[name] == "fixed" or feeds.readings[other] == "fixed"
                        else ""
                    )
                )
            symbols[want] = (got, name)
