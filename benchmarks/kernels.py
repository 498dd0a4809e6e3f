"""Ways to run the attribution pass's convolutions on CPU, measured end to end (issue 18, item 2).

Run by hand from the repository root (not part of the test suite):

    python benchmarks/kernels.py                        # writes docs/benchmarks-kernels.md
    python benchmarks/kernels.py --models cnn_cifar --configs 16x64 --rounds 2 --doc /tmp/k.md

Each option is a candidate forward function for Conv, installed as `onnxshap.ops.nn.conv` before
the rule table is read; it dispatches at trace time on `OPTION`, so every option runs in one
process, on one Explainer per option, interleaved round by round with today's code (the machine is
shared: one option's slow minute must not look like its fault). Time = median over all rounds of
`Explainer(model, background).explain(x, output=0)` after a warm-up call.

Options (the input-gradient is what the linear rule's VJP computes for every (sample, reference)
pair; an option falls back to today's convolution where its kernel does not apply):

- xla: today's `onnxshap.ops.nn.conv` (XLA:CPU; its layout pass already runs the pass's
  convolutions channels-last).
- channels_last: NHWC/HWIO `lax.conv_general_dilated`, transposed at the op's boundary.
- patches: forward and input-gradient as patches + dot (im2col; `custom_vjp`, the gradient as
  the stride-1 convolution with the flipped, transposed kernel), group 1.
- ort_t1 / ort_t2: onnxruntime's CPU `Conv` through `jax.pure_callback` (every vmap folded into
  the batch axis with `custom_vmap`, so the B x K pairs reach it as one call), its input-gradient
  another onnxruntime `Conv` (flipped, transposed kernel; `ConvTranspose` for strides > 1),
  sessions cached per (geometry, shapes, kernel); 1 or 2 intra-op threads.
- free_grad: NOT a candidate, a bound: the input-gradient replaced by a copy of the cotangent's
  first channel (wrong values, no convolution), i.e. the time the pass would take if its
  input-gradient convolutions cost nothing. No kernel can beat it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import Tracer

import onnxshap
from onnxshap.ops import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # models, data, machine description, formatting

Array = Any
KERNEL_MODELS = ("cnn_digits", "cnn_cifar", "resblock")
OPTIONS = ("xla", "channels_last", "patches", "ort_t1", "ort_t2", "free_grad")
CANDIDATES = tuple(o for o in OPTIONS if o not in ("xla", "free_grad"))
#: The bar an option must clear on every CNN/ResNet configuration to be worth landing.
TARGET = 1.5
#: The option Conv's forward function dispatches to; read at trace time.
OPTION = "xla"
TODAY = nn.conv


# --- geometry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """A convolution's strides, (begin, end) padding and dilations per spatial axis, and groups."""

    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilations: tuple[int, ...]
    group: int

    def span(self, kernel: Sequence[int]) -> list[int]:
        return [(k - 1) * d + 1 for k, d in zip(kernel, self.dilations)]

    def flipped(self, kernel: Sequence[int]) -> Geometry | None:
        """The stride-1 convolution of the cotangent that gives the input-gradient (kernel
        flipped and transposed, `flip_transpose`); None for strides > 1 or pads beyond the span."""
        spans = zip(self.span(kernel), self.padding)
        pads = tuple((sp - 1 - lo, sp - 1 - hi) for sp, (lo, hi) in spans)
        if any(s != 1 for s in self.strides) or any(lo < 0 or hi < 0 for lo, hi in pads):
            return None
        return Geometry(self.strides, pads, self.dilations, self.group)


def geometry_of(x: Array, w: Array, attrs: dict[str, Any]) -> Geometry:
    """The geometry `nn.conv` derives from its attributes (its own helpers)."""
    nn._check_kernel_shape("Conv", attrs.get("kernel_shape"), w)
    n = x.ndim - 2
    s = nn._per_axis(attrs.get("strides"), n, 1)
    d = nn._per_axis(attrs.get("dilations"), n, 1)
    kernel = tuple(w.shape[2:])
    pads = attrs.get("pads")
    padding = nn._window_pads("Conv", attrs["auto_pad"], x.shape[2:], kernel, s, d, pads)
    return Geometry(s, tuple((int(lo), int(hi)) for lo, hi in padding), d, int(attrs["group"]))


def flip_transpose(w: Array, group: int) -> Array:
    """(M, C/g, k...) -> (C, M/g, k...) spatially flipped: the kernel of the input-gradient."""
    m, c_per_group, *kernel = w.shape
    v = w.reshape(group, m // group, c_per_group, *kernel).swapaxes(1, 2)
    v = v.reshape(group * c_per_group, m // group, *kernel)
    return v[(slice(None), slice(None), *(slice(None, None, -1) for _ in kernel))]


def xla_conv(x: Array, w: Array, g: Geometry) -> Array:
    return lax.conv_general_dilated(
        x,
        w,
        g.strides,
        g.padding,
        rhs_dilation=g.dilations,
        feature_group_count=g.group,
        precision=lax.Precision.HIGHEST,
    )


def xla_input_grad(c: Array, w: Array, g: Geometry, row: tuple[int, ...]) -> Array:
    """d conv(x, w) / dx applied to the cotangent c; x has rows of shape `row`."""
    zeros = jnp.zeros((c.shape[0], *row), c.dtype)
    return jax.vjp(lambda v: xla_conv(v, w, g), zeros)[1](c)[0]


InputGrad = Callable[[Array, Array, tuple[int, ...]], Array]


def with_input_grad(
    forward: Callable[[Array, Array], Array], input_grad: InputGrad, g: Geometry
) -> Callable[[Array, Array], Array]:
    """forward(x, w) whose x-gradient is input_grad(cotangent, w, row shape); the w-gradient is
    XLA's (no rule asks for it, so XLA drops it)."""

    @jax.custom_vjp
    def f(x: Array, w: Array) -> Array:
        return forward(x, w)

    def fwd(x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
        return forward(x, w), (x, w)

    def bwd(res: tuple[Array, Array], c: Array) -> tuple[Array, Array]:
        x, w = res
        _, vjp_w = jax.vjp(lambda v: xla_conv(x, v, g), w)
        return input_grad(c, w, tuple(x.shape[1:])), vjp_w(c)[0]

    f.defvjp(fwd, bwd)
    return f


# --- channels last --------------------------------------------------------------------------------


def channels_last(x: Array, w: Array, g: Geometry) -> Array | None:
    n = x.ndim - 2
    if n > 3:
        return None
    spatial = "DHW"[3 - n :]
    y = lax.conv_general_dilated(
        jnp.moveaxis(x, 1, -1),
        jnp.moveaxis(w, (0, 1), (-1, -2)),
        g.strides,
        g.padding,
        rhs_dilation=g.dilations,
        feature_group_count=g.group,
        precision=lax.Precision.HIGHEST,
        dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
    )
    return jnp.moveaxis(y, -1, 1)


# --- patches + dot --------------------------------------------------------------------------------


def patch_conv(x: Array, w: Array, g: Geometry) -> Array:
    """Group-1 convolution: patches (N, C * k..., O...) contracted with the kernel (M, C * k...)."""
    cols = lax.conv_general_dilated_patches(
        x,
        tuple(w.shape[2:]),
        g.strides,
        g.padding,
        rhs_dilation=g.dilations,
        precision=lax.Precision.HIGHEST,
    )
    flat = w.reshape(w.shape[0], -1)
    return jnp.einsum("nf...,mf->nm...", cols, flat, precision=lax.Precision.HIGHEST)


@functools.cache
def _patches(g: Geometry, kernel: tuple[int, ...]) -> Callable[[Array, Array], Array]:
    back = g.flipped(kernel)

    def input_grad(c: Array, w: Array, row: tuple[int, ...]) -> Array:
        if back is None:
            return xla_input_grad(c, w, g, row)
        return patch_conv(c, flip_transpose(w, 1), back)

    return with_input_grad(lambda x, w: patch_conv(x, w, g), input_grad, g)


def patches(x: Array, w: Array, g: Geometry) -> Array | None:
    return _patches(g, tuple(w.shape[2:]))(x, w) if g.group == 1 else None


# --- onnxruntime through a callback --------------------------------------------------------------

#: (kind, geometry, row shapes, threads, kernel digest) -> InferenceSession (any batch size).
_SESSIONS: dict[tuple[Any, ...], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _ort_session(
    kind: str, g: Geometry, in_row: tuple[int, ...], out_row: tuple[int, ...], w: np.ndarray, threads: int
) -> Any:
    """One node: "conv" (the forward) or "input_grad" (a Conv with the flipped, transposed kernel
    at stride 1, else a ConvTranspose with the kernel itself and the output_padding giving
    `out_row`)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    attrs: dict[str, Any] = {"dilations": list(g.dilations), "group": g.group}
    op, kernel, geo = "Conv", w, g
    if kind == "input_grad":
        back = g.flipped(w.shape[2:])
        if back is not None:
            kernel, geo = np.ascontiguousarray(flip_transpose(w, g.group)), back
        else:
            op = "ConvTranspose"
            sides = zip(g.strides, in_row[1:], g.span(w.shape[2:]), g.padding)
            full = [s * (o - 1) + sp - lo - hi for s, o, sp, (lo, hi) in sides]
            attrs["output_padding"] = [size - f for size, f in zip(out_row[1:], full)]
    attrs["strides"] = list(geo.strides)
    attrs["pads"] = [lo for lo, _ in geo.padding] + [hi for _, hi in geo.padding]
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"], **attrs)],
        "kernel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_row])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_row])],
        [numpy_helper.from_array(np.ascontiguousarray(kernel, np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_run(
    kind: str, g: Geometry, out_row: tuple[int, ...], threads: int, x: np.ndarray, w: np.ndarray
) -> np.ndarray:
    x, w = np.ascontiguousarray(x), np.asarray(w)
    key = (kind, g, x.shape[1:], out_row, threads, w.shape, hashlib.blake2b(w.tobytes()).digest())
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = _ort_session(kind, g, tuple(x.shape[1:]), out_row, w, threads)
        session = _SESSIONS[key]
    return session.run(None, {"x": x})[0]  # type: ignore[no-any-return]


@functools.cache
def _ort_kernel(kind: str, g: Geometry, row: tuple[int, ...] | None, threads: int) -> Callable[[Array, Array], Array]:
    """(x (N, C, S...), w) -> y on onnxruntime; "input_grad": x is the cotangent, `row` the input's
    row shape. Every vmap over x folds into N; a vmap over w falls back to XLA."""

    def xla(x: Array, w: Array) -> Array:
        return xla_conv(x, w, g) if kind == "conv" else xla_input_grad(x, w, g, row or ())

    @jax.custom_batching.custom_vmap
    def kernel(x: Array, w: Array) -> Array:
        out_row = tuple(jax.eval_shape(xla, x, w).shape[1:])
        host = functools.partial(_ort_run, kind, g, out_row, threads)
        return jax.pure_callback(host, jax.ShapeDtypeStruct((x.shape[0], *out_row), x.dtype), x, w)

    @kernel.def_vmap
    def rule(axis_size: int, in_batched: Sequence[bool], x: Array, w: Array) -> tuple[Array, bool]:
        x_batched, w_batched = in_batched
        if w_batched:  # a kernel per row: XLA's batched convolution
            return jax.vmap(xla, in_axes=(0 if x_batched else None, 0))(x, w), True
        if not x_batched:
            return kernel(x, w), False
        y = kernel(x.reshape(axis_size * x.shape[1], *x.shape[2:]), w)
        return y.reshape(axis_size, x.shape[1], *y.shape[1:]), True

    return kernel  # type: ignore[no-any-return]


@functools.cache
def _ort(g: Geometry, threads: int) -> Callable[[Array, Array], Array]:
    def input_grad(c: Array, w: Array, row: tuple[int, ...]) -> Array:
        return _ort_kernel("input_grad", g, row, threads)(c, w)

    return with_input_grad(_ort_kernel("conv", g, None, threads), input_grad, g)


def ort_conv(threads: int) -> Callable[[Array, Array, Geometry], Array | None]:
    def kernel(x: Array, w: Array, g: Geometry) -> Array | None:
        return _ort(g, threads)(x, w) if jax.default_backend() == "cpu" else None

    return kernel


# --- the bound ------------------------------------------------------------------------------------


@functools.cache
def _free_grad(g: Geometry) -> Callable[[Array, Array], Array]:
    def input_grad(c: Array, w: Array, row: tuple[int, ...]) -> Array:
        # The cotangent's first channel, cropped or padded to the input's rows: no convolution,
        # but a value XLA cannot fold away (zeros would let it delete the rules upstream).
        first = c[:, :1]
        first = first[(slice(None), slice(None), *(slice(0, size) for size in row[1:]))]
        pad = [(0, 0), (0, 0), *((0, size - have) for size, have in zip(row[1:], first.shape[2:]))]
        return jnp.broadcast_to(jnp.pad(first, pad), (c.shape[0], *row))

    return with_input_grad(lambda x, w: xla_conv(x, w, g), input_grad, g)


def free_grad(x: Array, w: Array, g: Geometry) -> Array | None:
    return _free_grad(g)(x, w)


KERNELS: dict[str, Callable[[Array, Array, Geometry], Array | None]] = {
    "channels_last": channels_last,
    "patches": patches,
    "ort_t1": ort_conv(1),
    "ort_t2": ort_conv(2),
    "free_grad": free_grad,
}
#: Number of convolutions traced with each option's own kernel (proves the dispatch took effect).
USED: dict[str, int] = {}


def conv(x: Array, w: Array, b: Array | None = None, **attrs: Any) -> Array:
    """Conv's forward function while benchmarking: today's, or `OPTION`'s kernel where it applies
    (a traced float32 input; for the kernel, a float32 weight)."""
    kernel = KERNELS.get(OPTION)
    floats = x.dtype == jnp.float32 and w.dtype == jnp.float32
    if kernel is None or not isinstance(x, Tracer) or not floats:
        return TODAY(x, w, b, **attrs)
    y = kernel(x, w, geometry_of(x, w, attrs))
    if y is None:
        return TODAY(x, w, b, **attrs)
    USED[OPTION] = USED.get(OPTION, 0) + 1
    return nn._channel_bias(y, b).astype(x.dtype)


def install() -> None:
    """Make `conv` Conv's forward function, before the rule table is read (it keeps what it
    finds)."""
    from onnxshap import _registry

    if _registry.registry.cache_info().currsize:
        raise RuntimeError("the rule table was read before the benchmark could install its Conv")
    nn.conv = conv


# --- measurements ---------------------------------------------------------------------------------


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def explainers(model: Any, background: np.ndarray, options: Sequence[str]) -> dict[str, Any]:
    """One Explainer per option; each traces with its option on at its warm-up call."""
    global OPTION
    out = {}
    for option in options:
        OPTION = option
        check = "off" if option == "free_grad" else "raise"
        out[option] = onnxshap.Explainer(model, background, check=check)
    return out


def measure(
    spec: bench.ModelSpec,
    path: Path,
    b: int,
    k: int,
    options: Sequence[str],
    rounds: int,
    reps: int,
    workdir: Path,
    f64: bool,
) -> dict[str, Any]:
    """Warm-up then `rounds` rounds of `reps` calls per option, options interleaved."""
    global OPTION
    data = workdir / f"{spec.key}_{b}x{k}.npz"
    bench.make_data(spec, path, b, k, data)
    with np.load(data) as z:
        x, bg = z["x:x"], z["bg:x"]
    model = onnxshap.load(str(path))
    exps = explainers(model, bg, options)
    record: dict[str, Any] = {"model": spec.key, "B": b, "K": k, "options": {}, "load_start": os.getloadavg()}
    values: dict[str, np.ndarray] = {}
    for option in options:
        OPTION = option
        t0 = time.perf_counter()
        values[option] = np.asarray(exps[option].explain(x, output=0).values)
        record["options"][option] = {"first_s": time.perf_counter() - t0, "times_s": []}
    for _ in range(rounds):
        for option in options:
            OPTION = option
            for _ in range(reps):
                t0 = time.perf_counter()
                exps[option].explain(x, output=0)
                record["options"][option]["times_s"].append(time.perf_counter() - t0)
    today = statistics.median(record["options"]["xla"]["times_s"])
    exact = float64_values(spec, path, x, bg, workdir) if f64 else None
    for option, entry in record["options"].items():
        entry["median_s"] = statistics.median(entry["times_s"])
        entry["speedup"] = today / entry["median_s"]
        entry["rel_vs_today"] = relative(values[option], values["xla"])
        if exact is not None:
            entry["rel_vs_float64"] = relative(values[option], exact)
    record["load_end"] = os.getloadavg()
    return record


def float64_values(spec: bench.ModelSpec, path: Path, x: np.ndarray, bg: np.ndarray, workdir: Path) -> np.ndarray:
    """Today's attributions of a float64 copy of the model: how exact float32 is to begin with."""
    import onnx
    from onnx import TensorProto, numpy_helper

    global OPTION
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float64), init.name))
    for info in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        if info.type.tensor_type.elem_type == TensorProto.FLOAT:
            info.type.tensor_type.elem_type = TensorProto.DOUBLE
    twin = workdir / f"{spec.key}_float64.onnx"
    onnx.save(proto, str(twin))
    OPTION = "xla"
    explainer = onnxshap.Explainer(onnxshap.load(str(twin)), bg.astype(np.float64), check="off")
    return np.asarray(explainer.explain(x.astype(np.float64), output=0).values)


def kernel_times(path: Path, options: Sequence[str], rows: int, rounds: int) -> list[dict[str, Any]]:
    """Each Conv of the model alone, forward and input-gradient at `rows` rows (a multiplier call's
    size), jitted, per option; options interleaved."""
    import onnx

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in (*proto.graph.input, *proto.graph.value_info)
    }
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    rng = np.random.default_rng(0)
    out = []
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        attrs = {"auto_pad": "NOTSET", "group": 1, **attrs}
        w = jnp.asarray(inits[node.input[1]])
        x = jnp.asarray(rng.standard_normal((rows, *shapes[node.input[0]][1:])), jnp.float32)
        y = jax.eval_shape(functools.partial(TODAY, **attrs), x, w)
        c = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
        fns = {o: _conv_calls(o, x, w, c, attrs) for o in options if o != "free_grad"}
        times: dict[tuple[str, str], list[float]] = {}
        for option, pair in fns.items():
            for what, fn in pair.items():
                jax.block_until_ready(fn())
        for _ in range(rounds):
            for option, pair in fns.items():
                for what, fn in pair.items():
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn())
                    times.setdefault((option, what), []).append(time.perf_counter() - t0)
        out.append(
            {
                "conv": f"{node.input[1]} {list(w.shape)} on {shapes[node.input[0]][1:]}",
                "times": {f"{o}/{what}": statistics.median(t) for (o, what), t in times.items()},
            }
        )
    return out


def _conv_calls(option: str, x: Array, w: Array, c: Array, attrs: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Jitted calls of `option`'s Conv at x: its forward, and its input-gradient for cotangent c."""

    def forward(v: Array) -> Array:
        return _as(option, lambda: conv(v, w, **attrs))

    def input_grad(u: Array) -> Array:
        return _as(option, lambda: jax.vjp(lambda v: conv(v, w, **attrs), x)[1](u)[0])

    return {"forward": functools.partial(jax.jit(forward), x), "input_grad": functools.partial(jax.jit(input_grad), c)}


def _as(option: str, fn: Callable[[], Any]) -> Any:
    """fn() traced with `option` on."""
    global OPTION
    before, OPTION = OPTION, option
    try:
        return fn()
    finally:
        OPTION = before


# --- the report -----------------------------------------------------------------------------------


def write_doc(results: dict[str, Any], path: Path) -> None:
    meta, runs = results["meta"], results["runs"]
    m = meta["machine"]
    options = meta["options"]
    lines = [
        "# Convolution kernels on CPU (issue 18, item 2)",
        "",
        "Generated by `benchmarks/kernels.py`. Do not edit by hand: re-run the script.",
        "",
        (f"- Date: {meta['date']}; wall time {meta['duration_s'] / 60:.1f} min; git {m['git'] or '?'}."),
        f"- Command: `{meta['command']}`",
        (
            f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, {m['os']}, "
            f"Python {m['python']}; shared with other work: load average {meta['load_start']} at "
            f"the start, {meta['load_end']} at the end (`uptime`: {meta['uptime']})."
        ),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
        "",
        "## Method",
        "",
        (
            "Time: `onnxshap.Explainer(model, background).explain(x, output=0)`, one Explainer per "
            "option (each traced with its option on), a warm-up call, then "
            f"{meta['rounds']} rounds of {meta['reps']} calls per option, the options interleaved "
            "within each round; the median of all calls. Speedup = today's median ÷ the option's. "
            "Data and configurations as in `benchmarks/run.py`."
        ),
        "",
        (
            "Values: max |φ_option − φ_today| / max |φ_today| (output 0, every sample and "
            'feature); "vs float64" is the same against today\'s code on a float64 copy of the '
            "model, which shows how close float32 attributions are to exact to begin with. The "
            'completeness check (`check="raise"`) ran for every option except the bound.'
        ),
        "",
        "Options (see the docstring of `benchmarks/kernels.py`):",
        "",
        (
            "- **xla**: today's code (XLA:CPU, which already lays the pass's convolutions out "
            "channels-last and runs some through YNNPACK)."
        ),
        "- **channels_last**: NHWC/HWIO convolutions, transposed at the op's boundary.",
        "- **patches**: patches + dot (im2col) for the forward and the input-gradient.",
        (
            "- **ort_t1 / ort_t2**: onnxruntime's CPU Conv through `jax.pure_callback` (vmaps "
            "folded into one batch), input-gradient by an onnxruntime Conv with the flipped kernel; "
            "1 / 2 threads."
        ),
        (
            "- **free_grad** (a bound, not a candidate; wrong values): the input-gradient "
            "convolutions cost nothing. Today ÷ this is the most any convolution kernel could gain "
            "end to end."
        ),
        "",
        "## End to end",
        "",
        "| run | model | B×K | " + " | ".join(options) + " |",
        "|---|---|---|" + "---|" * len(options),
    ]
    for r in runs:
        cells = []
        for option in options:
            e = r["options"].get(option)
            if e is None:
                cells.append("—")
            elif "median_s" not in e:
                cells.append(e.get("error", "—"))
            elif option == "xla":
                cells.append(bench.fmt_s(e["median_s"]))
            else:
                cells.append(f"{bench.fmt_s(e['median_s'])} ({e['speedup']:.2f}×)")
        where = f"| {r.get('run', 1)} | {r['model']} | {r['B']}×{r['K']} |"
        lines.append(f"{where} " + " | ".join(cells) + " |")
    if any(e.get("error") == "dropped†" for r in runs for e in r["options"].values()):
        slower = meta.get("skip_slower", 1.5)
        lines += [
            "",
            (
                f"† Not measured: the option was more than {slower}× slower than "
                "today's on the model's smallest configuration (larger configurations "
                "make more calls of the same kind)."
            ),
        ]
    lines += [
        "",
        "Load average (1 min) at the start / end of each configuration: "
        + "; ".join(
            f"run {r.get('run', 1)} {r['model']} {r['B']}×{r['K']} {r['load_start'][0]:.1f}/{r['load_end'][0]:.1f}"
            for r in runs
        )
        + ".",
        "",
        "## Values",
        "",
        "| run | model | B×K | option | vs today | vs float64 |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        for option, e in r["options"].items():
            if "rel_vs_today" in e and option != "free_grad":
                f64 = e.get("rel_vs_float64")
                where = f"| {r.get('run', 1)} | {r['model']} | {r['B']}×{r['K']} | {option} |"
                lines.append(f"{where} {e['rel_vs_today']:.2g} | {'—' if f64 is None else f'{f64:.2g}'} |")
    if results.get("kernels"):
        lines += [
            "",
            f"## Each convolution alone ({meta['kernel_rows']} rows, jitted)",
            "",
            (
                "Median ms (run 1) of a Conv's forward and of its input-gradient (the VJP "
                "the linear rule takes) outside the pass. Inside the pass XLA fuses the "
                "layout changes into the neighbouring rules, so these do not add up to the "
                "end-to-end differences."
            ),
            "",
            "| model | conv | " + " | ".join(o for o in options if o != "free_grad") + " |",
            "|---|---|" + "---|" * len([o for o in options if o != "free_grad"]),
        ]
        for key, convs in results["kernels"].items():
            for c in convs:
                cells = [
                    f"{c['times'].get(f'{o}/forward', float('nan')) * 1e3:.3g} / "
                    f"{c['times'].get(f'{o}/input_grad', float('nan')) * 1e3:.3g}"
                    for o in options
                    if o != "free_grad"
                ]
                lines.append(f"| {key} | {c['conv']} | " + " | ".join(cells) + " |")
    lines += ["", "## Verdict", ""]
    for option in [o for o in options if o in CANDIDATES]:
        speedups = [r["options"][option]["speedup"] for r in runs if "speedup" in r["options"].get(option, {})]
        if not speedups:
            continue
        verdict = "reaches" if min(speedups) >= TARGET else "does not reach"
        lines.append(
            f"- {option}: {min(speedups):.2f}× to {max(speedups):.2f}× end to end; "
            f"{verdict} the {TARGET}× bar on every configuration measured."
        )
    bound = [r["options"]["free_grad"]["speedup"] for r in runs if "speedup" in r["options"].get("free_grad", {})]
    if bound:
        lines.append(
            f"- free_grad (the bound): {min(bound):.2f}× to {max(bound):.2f}×: no "
            "convolution kernel can gain more than this on these models."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result set from several runs (e.g. a second run for options dropped in the first): every
    run's rows, numbered (each option's speedup is against today's times of its own run), the
    first run's settings, every run's commands and loads."""
    meta = dict(parts[0]["meta"])
    meta["command"] = " ; ".join(p["meta"]["command"] for p in parts)
    meta["duration_s"] = sum(p["meta"]["duration_s"] for p in parts)
    meta["load_end"] = parts[-1]["meta"]["load_end"]
    meta["uptime"] = " ; ".join(p["meta"]["uptime"] for p in parts)
    meta["options"] = list(dict.fromkeys(o for p in parts for o in p["meta"]["options"]))
    runs = [{**r, "run": i} for i, p in enumerate(parts, 1) for r in p["runs"]]
    kernels = {k: v for p in parts for k, v in p.get("kernels", {}).items()}
    return {"meta": meta, "runs": runs, "kernels": kernels}


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(KERNEL_MODELS), help="comma-separated models")
    p.add_argument(
        "--configs",
        type=bench.parse_configs,
        default=bench.DEFAULT_CONFIGS,
        help="BxK list (default: 16x64,128x128,32x1000)",
    )
    p.add_argument("--options", default=",".join(OPTIONS), help=f"comma-separated subset of {OPTIONS} (with xla)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--reps", type=int, default=2, help="calls per option per round (default 2)")
    p.add_argument(
        "--skip-slower",
        type=float,
        default=1.5,
        help="drop an option for a model's larger configurations once it is this many "
        "times "
        "slower than today's (default 1.5)",
    )
    p.add_argument("--kernel-rows", type=int, default=512, help="rows for the per-convolution table (0: skip)")
    p.add_argument(
        "--no-float64", action="store_true", help="skip the float64 reference (on the smallest configuration)"
    )
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--doc", type=Path, default=bench.REPO / "docs" / "benchmarks-kernels.md")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/onnxshap-kernels"))
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="only rewrite --doc from the --out files of earlier runs (merged in order)",
    )
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.options = [o for o in args.options.split(",") if o]
    if "xla" not in args.options or any(o not in OPTIONS for o in args.options):
        p.error(f"--options must include xla and come from {OPTIONS}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.from_json:
        write_doc(merge([json.loads(p.read_text()) for p in args.from_json]), args.doc)
        bench.log(f"wrote {args.doc}")
        return 0
    install()
    started = time.time()
    load_start = [round(v, 2) for v in os.getloadavg()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    kernels: dict[str, list[dict[str, Any]]] = {}
    for key in args.models:
        spec = bench.MODELS[key]
        path = bench.prepare_model(spec, args.workdir)
        if args.kernel_rows:
            kernels[key] = kernel_times(path, args.options, args.kernel_rows, args.rounds)
        options = list(args.options)
        for i, (b, k) in enumerate(args.configs):
            bench.log(f"[{time.strftime('%H:%M:%S')}] {key} {b}x{k} {options}")
            record = measure(
                spec, path, b, k, options, args.rounds, args.reps, args.workdir, f64=i == 0 and not args.no_float64
            )
            for option in args.options:
                record["options"].setdefault(option, {"error": "dropped†"})
            runs.append(record)
            for option, e in record["options"].items():
                if "median_s" in e:
                    bench.log(
                        f"    {option}: {e['median_s']:.4g} s ({e['speedup']:.2f}x), values {e['rel_vs_today']:.2g}"
                    )
            for option in list(options):
                slow = record["options"][option].get("speedup", 1) < 1 / args.skip_slower
                if option not in ("xla", "free_grad") and slow:
                    options.remove(option)
                    bench.log(f"    {option} dropped for {key}'s larger configurations")
    missing = [o for o in args.options if o in KERNELS and o not in USED]
    if missing:
        raise RuntimeError(f"options {missing} never reached a convolution: the dispatch failed")
    uptime = os.popen("uptime").read().strip()
    results = {
        "meta": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([sys.executable, "benchmarks/kernels.py", *argv]),
            "machine": bench.machine(),
            "options": args.options,
            "rounds": args.rounds,
            "reps": args.reps,
            "kernel_rows": args.kernel_rows,
            "skip_slower": args.skip_slower,
            "load_start": load_start,
            "load_end": [round(v, 2) for v in os.getloadavg()],
            "uptime": uptime,
            "duration_s": time.time() - started,
        },
        "runs": runs,
        "kernels": kernels,
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    write_doc(results, args.doc)
    bench.log(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
