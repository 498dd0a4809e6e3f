"""onnxshap.load / Model.run: the onnxruntime contract, compile-once, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap import _interpreter
from onnxshap._errors import GraphError
from onnxshap._interpreter import fold_constants
from onnxshap._registry import load_registry, registry
from tests.conftest import REPO
from tests.helpers import assert_outputs_close, run_ort

MODELS = REPO / "models"


def _mlp(opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["z"], name="add"),
        helper.make_node("Relu", ["z"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_run_matches_onnxruntime_from_path_bytes_and_proto(tmp_path: Path, rng: np.random.Generator) -> None:
    proto = _mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(proto, path)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    want = run_ort(proto, {"x": x})
    for source in (str(path), path, proto.SerializeToString(), proto):
        assert_outputs_close(onnxshap.load(source).run({"x": x}), want, rtol=1e-6, atol=1e-6)


def test_same_shapes_do_not_retrace(rng: np.random.Generator) -> None:
    model = onnxshap.load(_mlp())
    model.run({"x": rng.normal(size=(5, 4)).astype(np.float32)})
    model.run({"x": rng.normal(size=(5, 4)).astype(np.float32)})
    assert model.trace_count == 1
    model.run({"x": rng.normal(size=(2, 4)).astype(np.float32)})
    assert model.trace_count == 2


def test_intermediate_tensors_can_be_requested(rng: np.random.Generator) -> None:
    x = rng.normal(size=(2, 4)).astype(np.float32)
    out = onnxshap.load(_mlp()).run({"x": x}, outputs=["z", "y"])
    np.testing.assert_allclose(out["y"], np.maximum(out["z"], 0))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"\x08\x07\x12\x04garbage-bytes-that-are-not-a-model\xff\xff\xff", "not"),
        (b"hello, this is a text file\n", "not"),
    ],
)
def test_garbage_bytes(data: bytes, match: str) -> None:
    with pytest.raises(onnxshap.ModelLoadError, match=match):
        onnxshap.load(data)


def test_truncated_file(tmp_path: Path) -> None:
    data = _mlp().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(onnxshap.ModelLoadError, match="truncated"):
        onnxshap.load(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(onnxshap.ModelLoadError, match="does not exist"):
        onnxshap.load(tmp_path / "nope.onnx")
    with pytest.raises(onnxshap.ModelLoadError, match="directory"):
        onnxshap.load(tmp_path)


def _with_external_data(tmp_path: Path) -> Path:
    proto = _mlp()
    path = tmp_path / "ext.onnx"
    onnx.save(
        proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0
    )
    return path


def test_external_data_loads(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _with_external_data(tmp_path)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    assert_outputs_close(onnxshap.load(path).run({"x": x}), run_ort(_mlp(), {"x": x}), rtol=1e-6, atol=1e-6)


def test_missing_external_data(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path)
    (tmp_path / "ext.data").unlink()
    with pytest.raises(onnxshap.ExternalDataError, match="does not exist"):
        onnxshap.load(path)


def test_external_data_outside_the_model_folder(tmp_path: Path) -> None:
    proto = _mlp()
    for tensor in proto.graph.initializer:
        onnx.external_data_helper.set_external_data(tensor, location="../secret.bin")
        tensor.ClearField("raw_data")
    path = tmp_path / "evil.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(onnxshap.ExternalDataError, match="outside"):
        onnxshap.load(path)


def test_external_data_from_bytes_has_no_folder(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path)
    with pytest.raises(onnxshap.ExternalDataError, match="bytes"):
        onnxshap.load(path.read_bytes())


def test_unknown_domain_is_unsupported() -> None:
    proto = _mlp()
    proto.graph.node[2].domain = "com.microsoft"
    proto.graph.node[2].op_type = "FusedGelu"
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(onnxshap.UnsupportedOpError, match="com.microsoft"):
        onnxshap.load(proto)
    assert any("FusedGelu" in p for p in onnxshap.unsupported_ops(proto))


def test_unsupported_op_names_node_op_and_opset() -> None:
    proto = _mlp()
    proto.graph.node[2].op_type = "Det"
    with pytest.raises(onnxshap.UnsupportedOpError) as info:
        onnxshap.load(proto)
    text = str(info.value)
    assert "Det" in text and "'relu'" in text and "opset 17" in text and "adding-an-op" in text


def test_opset_newer_than_onnx_knows() -> None:
    proto = _mlp(opset=onnx.defs.onnx_opset_version() + 5)
    with pytest.raises(onnxshap.OpsetError, match="Upgrade onnx"):
        onnxshap.load(proto)


def test_wrong_inputs(rng: np.random.Generator) -> None:
    model = onnxshap.load(_mlp())
    x = rng.normal(size=(2, 4)).astype(np.float32)
    with pytest.raises(onnxshap.InputError, match="Unknown input"):
        model.run({"x": x, "extra": x})
    with pytest.raises(onnxshap.InputError, match="Missing"):
        model.run({})
    with pytest.raises(onnxshap.InputError, match="astype"):
        model.run({"x": x.astype(np.float64)})
    with pytest.raises(onnxshap.InputError, match="rank"):
        model.run({"x": x[0]})
    with pytest.raises(onnxshap.InputError, match="axis 1 must be 4"):
        model.run({"x": x[:, :3]})
    with pytest.raises(onnxshap.InputError, match="Unknown output"):
        model.run({"x": x}, outputs=["nope"])


def test_rule_table_is_valid_and_rejects_bad_rows(tmp_path: Path) -> None:
    reg = registry()
    assert len(reg) > 50
    for spec in reg:
        for since in spec.since:
            assert callable(spec.impl(since))
        assert all(callable(rule) for rule in spec.alternatives.values())
    assert "tree_exact" in reg.alternative_rules()
    bad_rows = {
        "unknown op": '[NotAnOp]\nsince = [1]\nimpl = "onnxshap.ops.elementwise:relu"\nrule = "rescale"\n',
        "do not exist": '[Relu]\nsince = [2]\nimpl = "onnxshap.ops.elementwise:relu"\nrule = "rescale"\n',
        "unknown rule family": '[Relu]\nsince = [6]\nimpl = "onnxshap.ops.elementwise:relu"\nrule = "magic"\n',
        "cannot be imported": '[Relu]\nsince = [6]\nimpl = "onnxshap.ops.nothing:relu"\nrule = "rescale"\n',
        "name of a rule family": '[Relu]\nsince = [6]\nimpl = "onnxshap.ops.elementwise:relu"\nrule = "rescale"\n'
        'alternatives = { max = "onnxshap.ops.elementwise:relu" }\n',
        "must be a table": '[Relu]\nsince = [6]\nimpl = "onnxshap.ops.elementwise:relu"\nrule = "rescale"\n'
        'alternatives = "onnxshap.ops.elementwise:relu"\n',
    }
    for match, text in bad_rows.items():
        (tmp_path / "x.toml").write_text(text)
        with pytest.raises(onnxshap.RuleTableError, match="knows no op" if match == "unknown op" else match):
            load_registry(tmp_path)
    (tmp_path / "x.toml").write_text('[Relu]\nsince = [6]\nimpl = "onnxshap.ops.elementwise:relu"\nrule = "rescale"\n')
    (tmp_path / "y.toml").write_text('[Relu]\nsince = [13]\nimpl = "onnxshap.ops.elementwise:relu"\nrule = "rescale"\n')
    with pytest.raises(onnxshap.RuleTableError, match="two rows"):
        load_registry(tmp_path)


def test_operator_docs_are_generated_from_the_table() -> None:
    from onnxshap._registry import _docs_path, operators_markdown

    assert _docs_path().read_text() == operators_markdown(), "run: python -m onnxshap._registry --write-docs"


# --- constants folded at load time ---------------------------------------------------------------------


def test_folded_constants_equal_their_op_by_op_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # The quantised transformer block folds its weights through QuantizeLinear+DequantizeLinear and
    # DequantizeLinear nodes: each compiles as one program; op by op, every constant is the same, bit for bit.
    path = MODELS / "qdq_transformer_block.onnx"
    monkeypatch.setattr(_interpreter, "_FOLDERS", {})
    compiled = fold_constants(onnxshap.load(path).graph)
    assert {key[0].__name__ for key in _interpreter._FOLDERS} == {"dequantize_linear", "fake_quantize"}
    monkeypatch.setattr(_interpreter, "_folder", lambda *args: None)
    op_by_op = fold_constants(onnxshap.load(path).graph)
    assert compiled.keys() == op_by_op.keys()
    for name, value in op_by_op.items():
        np.testing.assert_array_equal(compiled[name], value, err_msg=name)
        assert np.asarray(compiled[name]).dtype == np.asarray(value).dtype, name


def _dequantized_weights(codes: list[np.ndarray], zero_point: np.ndarray) -> onnx.ModelProto:
    """y = ((x @ DQ(w0)) + (x @ DQ(w1))) @ DQ(w2), every weight dequantized with one scale and zero point."""
    inits = [numpy_helper.from_array(c, f"w{i}") for i, c in enumerate(codes)]
    inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(zero_point, "zp")]
    nodes = [helper.make_node("DequantizeLinear", [f"w{i}", "s", "zp"], [f"d{i}"], name=f"dq{i}") for i in range(3)]
    nodes += [
        helper.make_node("MatMul", ["x", "d0"], ["h0"]),
        helper.make_node("MatMul", ["x", "d1"], ["h1"]),
        helper.make_node("Add", ["h0", "h1"], ["h"]),
        helper.make_node("MatMul", ["h", "d2"], ["y"]),
    ]
    n_in, n_out = codes[0].shape[0], codes[2].shape[1]
    graph = helper.make_graph(
        nodes,
        "dq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n_out])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_equal_folded_nodes_share_one_compiled_program(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    monkeypatch.setattr(_interpreter, "_FOLDERS", {})
    codes = [rng.integers(-128, 128, shape).astype(np.int8) for shape in [(4, 8), (4, 8), (8, 2)]]
    proto = _dequantized_weights(codes, np.array(3, np.int8))
    model = onnxshap.load(proto)
    # One program for the three nodes (the same attributes, scale and zero point), compiled for two shapes.
    folders = list(_interpreter._FOLDERS.values())
    assert len(folders) == 1 and folders[0]._cache_size() == 2
    x = rng.normal(size=(3, 4)).astype(np.float32)
    assert_outputs_close(model.run({"x": x}), run_ort(proto, {"x": x}), rtol=1e-5, atol=1e-3)  # |y| up to ~300


def test_a_folded_dequantize_still_checks_its_constant_zero_point(monkeypatch: pytest.MonkeyPatch) -> None:
    # The inputs after the first stay constants in the compiled program, so the value checks on them still run.
    monkeypatch.setattr(_interpreter, "_FOLDERS", {})
    codes = [np.ones(shape, ml_dtypes.float8_e4m3fn) for shape in [(4, 8), (4, 8), (8, 2)]]
    with pytest.raises(GraphError, match="the zero point must be 0 for float types"):
        onnxshap.load(_dequantized_weights(codes, np.array(1, ml_dtypes.float8_e4m3fn)))
