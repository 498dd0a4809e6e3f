"""Shared test helpers: onnxruntime as the oracle, random feeds from a graph's declared inputs,
brute-force Shapley values."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort

_ORT_FLOAT8 = {
    "tensor(float8e4m3fn)": ml_dtypes.float8_e4m3fn,
    "tensor(float8e4m3fnuz)": ml_dtypes.float8_e4m3fnuz,
    "tensor(float8e5m2)": ml_dtypes.float8_e5m2,
    "tensor(float8e5m2fnuz)": ml_dtypes.float8_e5m2fnuz,
}


def run_ort(model: onnx.ModelProto | bytes | str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a model in onnxruntime with all graph optimizations off (the reference semantics)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    outputs = session.get_outputs()
    values = session.run([o.name for o in outputs], dict(feeds))
    # onnxruntime returns float 8 tensors as their raw bytes (uint8); view them as the declared type.
    return {
        o.name: v.view(_ORT_FLOAT8[o.type]) if o.type in _ORT_FLOAT8 and getattr(v, "dtype", None) == np.uint8 else v
        for o, v in zip(outputs, values)
    }


def random_feeds(model: Any, rng: np.random.Generator, *, batch: int = 3) -> dict[str, np.ndarray]:
    """Random inputs for an onnxshap Model, symbolic dims set to `batch`."""
    feeds: dict[str, np.ndarray] = {}
    for info in model.inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else batch for d in (info.shape or ()))
        dtype = info.dtype or np.dtype(np.float32)
        if dtype.kind == "f":
            feeds[info.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[info.name] = rng.integers(0, 10, shape).astype(dtype)
        else:
            feeds[info.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def assert_outputs_close(
    got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], *, rtol: float, atol: float
) -> None:
    assert list(got) == list(want), f"output names differ: {list(got)} vs {list(want)}"
    for name in want:
        g, w = np.asarray(got[name]), np.asarray(want[name])
        assert g.shape == w.shape, f"{name}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"{name}: dtype {g.dtype} != {w.dtype}"
        if w.dtype.kind == "V":  # ml_dtypes (bfloat16, float 8, int4, ...): compare the values, NaN == NaN
            g, w = g.astype(np.float64), w.astype(np.float64)
        if w.dtype.kind in "fc":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)


def player_shapley(game: Callable[[np.ndarray], float], x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Brute-force Shapley values of game(z), z_i = x_i (player i present) or r_i (absent): 2^n coalitions."""
    n = len(x)
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                z = r.astype(np.float64, copy=True)
                z[list(subset)] = x[list(subset)]
                without = game(z)
                z[i] = x[i]
                phi[i] += weight * (game(z) - without)
    return phi


def interventional_shapley(f: Callable[[np.ndarray], Any], x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Brute-force interventional Shapley values (samples, n, k) of v(S) = mean_b f(x_S, b_rest), all 2^n coalitions.

    `f` maps rows (m, n) to outputs (m, k) or (m,); it is called once, on samples x 2^n x background rows
    of the dtype of `x`.
    """
    n = x.shape[1]
    masks = np.array(list(itertools.product([False, True], repeat=n)))  # row c: feature j present = bit n-1-j of c
    z = np.where(masks[None, :, None, :], x[:, None, None, :], background[None, None, :, :]).astype(x.dtype)
    out = np.asarray(f(z.reshape(-1, n)), np.float64).reshape(len(x), len(masks), len(background), -1)
    v = out.mean(axis=2)  # (samples, 2^n, k)
    factorial = np.array([math.factorial(k) for k in range(n + 1)], np.float64)
    phi = np.zeros((len(x), n, v.shape[-1]))
    for i in range(n):
        without = np.flatnonzero(~masks[:, i])
        size = masks[without].sum(axis=1)
        weight = factorial[size] * factorial[n - size - 1] / factorial[n]
        phi[:, i] = np.einsum("c,sck->sk", weight, v[:, without + 2 ** (n - 1 - i)] - v[:, without])
    return phi


def assert_locally_complete(nodes: list[tuple[str, float, float]], *, atol: float = 1e-7, rtol: float = 1e-5) -> None:
    """Every node of `AttributionPass.diagnose`'s list passes on what it receives:
    |sum m_in * d_in - sum m_out * d_out| <= atol + rtol * the larger of the two. The list is not empty."""
    assert nodes, "the pass visits no node"
    for label, inflow, outflow in nodes:
        assert abs(inflow - outflow) <= atol + rtol * max(abs(inflow), abs(outflow)), (label, inflow, outflow)
