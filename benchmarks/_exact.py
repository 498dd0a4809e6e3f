"""Exact interventional Shapley values by enumerating all 2^d coalitions (the accuracy reference).

For sample x, background rows r_1..r_K and coalition S, v(S) = mean_k f(x_S, r_k,rest): features in S
take the sample's value, the others the background row's. phi_i = sum over S not containing i of
|S|! (d - |S| - 1)! / d! * (v(S + i) - v(S)); the values sum to f(x) - mean_k f(r_k) exactly.
Cost: 2^d * K model rows per sample, so only for d <= ~12 features.
"""

from __future__ import annotations

from collections.abc import Callable
from math import factorial

import numpy as np

#: above this many features the 2^d enumeration is not attempted.
MAX_FEATURES = 12


def coalition_masks(d: int) -> np.ndarray:
    """(2^d, d) bool: row s has feature i present iff bit i of s is set."""
    s = np.arange(2**d)[:, None]
    return ((s >> np.arange(d)[None, :]) & 1).astype(bool)


def exact_shapley(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    background: np.ndarray,
    output: int,
    *,
    rows_per_call: int = 1 << 18,
) -> np.ndarray:
    """(n_samples, d) exact interventional Shapley values of f(.)[:, output].

    Args:
        f: model on float rows (n, d) -> (n, n_outputs).
        x: (n_samples, d) samples; background: (K, d) reference rows.
        output: which output column to explain.
    """
    n, d = x.shape
    if d > MAX_FEATURES:
        raise ValueError(f"{d} features: 2^{d} coalitions is too many for the exact reference (max {MAX_FEATURES}).")
    masks = coalition_masks(d)
    n_coalitions, k = masks.shape[0], background.shape[0]
    sizes = masks.sum(axis=1)
    weight = np.array([factorial(s) * factorial(d - s - 1) / factorial(d) if s < d else 0.0 for s in range(d + 1)])
    phi = np.zeros((n, d))
    for b in range(n):
        rows = np.where(masks[:, None, :], x[b][None, None, :], background[None, :, :]).reshape(-1, d)
        out = np.concatenate([f(rows[i : i + rows_per_call])[:, output] for i in range(0, len(rows), rows_per_call)])
        v = out.astype(np.float64).reshape(n_coalitions, k).mean(axis=1)
        for i in range(d):
            without = ~masks[:, i]
            s_idx = np.flatnonzero(without)
            phi[b, i] = np.sum(weight[sizes[s_idx]] * (v[s_idx | (1 << i)] - v[s_idx]))
    return phi
