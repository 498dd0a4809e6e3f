"""Conv's input-gradient on XLA:CPU, the VJP the linear rule takes for every (sample, reference) pair.

XLA:CPU (jax 0.10) computes it wrongly for float32 convolutions padded beyond the kernel's span
(garbage or NaN); `onnxshap.ops.nn.conv` applies that padding to the input instead. The reference
is the Jacobian from forward mode, which runs the (correct) forward convolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onnxshap.ops import nn


@pytest.mark.parametrize(("group", "pads"), [(1, [5, 0]), (2, [5, 0]), (2, [4, 1]), (1, [1, 6])])
def test_conv_input_gradient_with_padding_beyond_the_kernel(
    rng: np.random.Generator, group: int, pads: list[int]
) -> None:
    x = jnp.asarray(rng.standard_normal((3, 4, 9)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((6, 4 // group, 3)), jnp.float32)

    def f(v: jax.Array) -> jax.Array:
        return nn.conv(v, w, auto_pad="NOTSET", group=group, pads=pads, strides=[1], dilations=[1])

    y = f(x)
    assert y.shape == (3, 6, 9 + sum(pads) - 2)
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    jacobian = np.asarray(jax.jacfwd(f)(x), np.float64).reshape(y.size, x.size)
    expected = (np.asarray(g, np.float64).reshape(-1) @ jacobian).reshape(x.shape)
    got = np.asarray(jax.jit(lambda c: jax.vjp(f, x)[1](c)[0])(g))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
