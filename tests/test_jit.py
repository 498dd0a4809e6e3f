"""The XLA options onnxshap compiles its programs with (onnxshap/_jit.py)."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap import _jit


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    """The once-per-process probe of the options, forgotten before and after the test."""
    _jit._probed.cache_clear()
    yield
    _jit._probed.cache_clear()


def _model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], out_type: int) -> onnxshap.Model:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", out_type, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializers)
    return onnxshap.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))


def _conv() -> onnxshap.Model:
    w = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [w], TensorProto.FLOAT)


def _relu() -> onnxshap.Model:
    return _model([helper.make_node("Relu", ["x"], ["y"])], [], TensorProto.FLOAT)


def _cast(to: int) -> onnxshap.Model:
    return _model([helper.make_node("Cast", ["x"], ["y"], to=to)], [], to)


@pytest.mark.usefixtures("fresh_probe")
def test_which_graphs_get_the_cpu_options() -> None:
    assert jax.default_backend() == "cpu"
    assert _jit.compiler_options(_relu().graph) == _jit.CPU_COMPILER_OPTIONS
    assert _jit.compiler_options(_cast(TensorProto.FLOAT16).graph) == _jit.CPU_COMPILER_OPTIONS
    assert _jit.compiler_options(_conv().graph) is None
    for narrow in (TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT4E2M1):
        assert _jit.compiler_options(_cast(narrow).graph) is None, helper.tensor_dtype_to_string(narrow)


def test_tiny_negatives_cast_to_zero_in_float8_without_negative_zero() -> None:
    # The loop emitters give NaN for -1e-7 here: why such graphs keep XLA's defaults.
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 0, 0, :3] = [-1e-7, -0.0, 0.5]
    y = _cast(TensorProto.FLOAT8E4M3FNUZ).run({"x": x})["y"].astype(np.float32)
    np.testing.assert_array_equal(y[0, 0, 0, :3], [0.0, 0.0, 0.5])


@pytest.mark.usefixtures("fresh_probe")
def test_an_option_xla_refuses_falls_back_to_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_jit, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option_in_any_version": True})
    model = _relu()
    assert _jit.compiler_options(model.graph) is None
    np.testing.assert_array_equal(model.run({"x": -np.ones((1, 2, 4, 4), np.float32)})["y"], 0.0)


@pytest.mark.usefixtures("fresh_probe")
def test_the_one_pair_diagnosis_compiles_at_the_lowest_level(monkeypatch: pytest.MonkeyPatch) -> None:
    relu, conv = _relu(), _conv()
    assert _jit.diagnostic_options(relu._compiler_options) == {
        **_jit.CPU_COMPILER_OPTIONS,
        "xla_backend_optimization_level": 0,
    }
    assert _jit.diagnostic_options(conv._compiler_options) == {"xla_backend_optimization_level": 0}
    explainer = onnxshap.Explainer(conv, np.zeros((2, 2, 4, 4), np.float32))
    x = np.linspace(-1, 1, 32).reshape(1, 2, 4, 4)
    nodes = explainer._pass.diagnose({"x": x}, {"x": np.zeros_like(x)}, 5, 48)
    assert [label for label, _, _ in nodes] == [conv.graph.nodes[0].label]
    ((_, inflow, outflow),) = nodes
    assert outflow != 0 and abs(inflow - outflow) <= 1e-12 * abs(outflow)
    # An XLA that refuses the level: the graph's own options, unchanged.
    _jit._probed.cache_clear()
    monkeypatch.setattr(_jit, "DIAGNOSTIC_COMPILER_OPTIONS", {"xla_cpu_no_such_option_in_any_version": 0})
    assert _jit.diagnostic_options(relu._compiler_options) == _jit.CPU_COMPILER_OPTIONS
    assert _jit.diagnostic_options(None) is None
