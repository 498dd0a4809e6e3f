"""Broken models give a typed error that names the fault, from `onnxshap.load`, the Explainer and the CLI:
external data past the end of its file, initializers whose dims do not match their data, constants too
large to build, opsets newer than onnx knows, and models without inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap import cli


def _mlp() -> onnx.ModelProto:
    """x: float32[N, 4] -> y: float32[N, 3], with initializers w (4 x 3) and b (3)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _save(proto: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(proto.SerializeToString())
    return path


def _cli_error(capsys: pytest.CaptureFixture[str], command: str, *args: Any) -> str:
    """Run `onnxshap COMMAND ...` in-process; it must fail with exit 1 and one clean line on stderr."""
    code = cli.main([command, *map(str, args)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith(f"onnxshap {command}: error:") and len(err.strip().splitlines()) == 1, err
    assert "internal error" not in err and "Traceback" not in err
    return err


def _set_external(tensor: onnx.TensorProto, **entries: str | None) -> None:
    """Set (or, for None, remove) keys of a tensor's external-data entry."""
    kept = {e.key: e.value for e in tensor.external_data}
    kept.update(entries)
    del tensor.external_data[:]
    for key, value in kept.items():
        if value is not None:
            tensor.external_data.add(key=key, value=value)


@pytest.mark.parametrize("length", ["48", None], ids=["with-length", "no-length"])
def test_external_data_offset_past_the_end_of_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], length: str | None
) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(
        _mlp(), path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0
    )
    size = (tmp_path / "ext.data").stat().st_size
    proto = onnx.load(path, load_external_data=False)
    _set_external(proto.graph.initializer[0], offset="100000", length=length)
    _save(proto, path)
    with pytest.raises(onnxshap.ExternalDataError) as info:
        onnxshap.load(path)
    text = str(info.value)
    for key in (
        "'w'",
        "'ext.data'",
        "offset 100000",
        f"only {size} bytes",
        "truncated or does not belong to this model",
    ):
        assert key in text, text
    out = tmp_path / "values.npz"
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 4), np.float32))
    assert "'ext.data'" in _cli_error(capsys, "explain", path, "--input", x, "-o", out)
    assert not out.exists()
    assert "'ext.data'" in _cli_error(capsys, "inspect", path)


def test_external_data_shorter_than_the_tensor(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(
        _mlp(), path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0
    )
    proto = onnx.load(path, load_external_data=False)
    _set_external(proto.graph.initializer[0], length="40")  # w is 4 x 3 float32: 48 bytes
    _save(proto, path)
    with pytest.raises(
        onnxshap.ExternalDataError, match=r"'w' has dims \[4, 3\] of float, which take 48 bytes.*40 bytes long"
    ):
        onnxshap.load(path)


@pytest.mark.parametrize("storage", ["raw_data", "float_data", "constant"])
def test_tensor_dims_that_do_not_match_its_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], storage: str
) -> None:
    proto = _mlp()
    w = proto.graph.initializer[0]
    if storage == "float_data":
        values = numpy_helper.to_array(w).reshape(-1).tolist()
        w.ClearField("raw_data")
        w.float_data.extend(values)
    if storage != "constant":
        w.dims[0] = 5  # 12 floats stored, 15 needed
    else:  # the same tensor as a Constant node's value
        tensor = onnx.TensorProto()
        tensor.CopyFrom(w)
        tensor.dims[0] = 5
        del proto.graph.initializer[0]
        proto.graph.node.insert(0, helper.make_node("Constant", [], ["w"], name="const_w", value=tensor))
    what = "Tensor attribute 'value' of Constant node 'const_w'" if storage == "constant" else "Initializer 'w'"
    with pytest.raises(onnxshap.ModelLoadError) as info:
        onnxshap.load(proto)
    assert type(info.value) is onnxshap.ModelLoadError
    text = str(info.value)
    for key in (what, "dims [5, 3]", "need 15 float element(s)", "stores 12 element(s)", "export the model again"):
        assert key in text, text
    assert what in _cli_error(capsys, "check", _save(proto, tmp_path / "bad.onnx"))


def _huge(op: str) -> onnx.ModelProto:
    """y = x + a constant that `op` builds from a small initializer: 4e15 bytes (3.55 PiB). Shape
    inference would compute Range and Tile in full (until the process is killed), folding the others."""

    def ints(name: str, values: Any) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, np.int64), name)

    one = numpy_helper.from_array(np.ones((1,), np.float32), "one")
    build = {
        "ConstantOfShape": ([ints("shape", [1000000, 1000000, 1000])], ["shape"]),
        "Expand": ([one, ints("shape", [1000000, 1000000, 1000])], ["one", "shape"]),
        "Tile": ([one, ints("repeats", [10**15])], ["one", "repeats"]),
        "Range": ([ints("start", 0), ints("limit", 5 * 10**14), ints("delta", 1)], ["start", "limit", "delta"]),
    }
    inits, inputs = build[op]
    cast = "Cast" if op == "Range" else "Identity"  # Range builds int64 (8 bytes each)
    nodes = [
        helper.make_node(op, inputs, ["big"], name="big"),
        helper.make_node(cast, ["big"], ["c"], name="cast", **({"to": TensorProto.FLOAT} if op == "Range" else {})),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Range"])
def test_constant_too_large_to_build_is_refused_before_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], op: str
) -> None:
    proto = _huge(op)
    with pytest.raises(onnxshap.GraphError) as info:
        onnxshap.load(proto)
    text = str(info.value)
    for key in (f"{op} node 'big'", "4,000,000,000,000,000 bytes", "too large to build", "bug in the export"):
        assert key in text, text
    if op == "ConstantOfShape":
        assert "[1000000, 1000000, 1000]" in text
        path = _save(proto, tmp_path / "huge.onnx")
        for command in ("check", "inspect"):
            err = _cli_error(capsys, command, path)
            assert "too large to build" in err and "--batch-size" not in err


def test_ml_opset_newer_than_onnx_knows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proto = _mlp()
    proto.opset_import.append(helper.make_opsetid("ai.onnx.ml", 99))
    with pytest.raises(onnxshap.OpsetError) as info:
        onnxshap.load(proto)
    text = str(info.value)
    for key in (
        "opset 99",
        "'ai.onnx.ml'",
        f"up to {onnx.defs.C.schema_version_map()['ai.onnx.ml'][1]}",
        "Upgrade onnx",
    ):
        assert key in text, text
    path = _save(proto, tmp_path / "ml99.onnx")
    assert "'ai.onnx.ml'" in _cli_error(capsys, "inspect", path)
    assert "'ai.onnx.ml'" in _cli_error(capsys, "check", path)


def test_model_without_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = numpy_helper.from_array(np.arange(3, dtype=np.float32).reshape(1, 3), "c")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "constant",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [c],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model = onnxshap.load(proto)
    np.testing.assert_array_equal(model.run({})["y"], [[0, 1, 2]])
    with pytest.raises(onnxshap.InputError, match="no graph inputs.*nothing to attribute"):
        onnxshap.Explainer(model, np.zeros((1, 3), np.float32))
    path = _save(proto, tmp_path / "constant.onnx")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 3), np.float32))
    out = tmp_path / "values.npz"
    assert "no graph inputs" in _cli_error(capsys, "explain", path, "--input", x, "-o", out)
    assert not out.exists()
    assert "no graph inputs" in _cli_error(capsys, "check", path, "--input", x)
    assert cli.main(["inspect", str(path)]) == 0
    assert "inputs:\noutputs:\n  y: float32[1, 3]" in capsys.readouterr().out


def test_attribute_of_the_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = helper.make_node("Softmax", ["x"], ["y"], name="soft", axis=1.0)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(
        onnxshap.GraphError,
        match=r"Attribute 'axis' of Softmax node 'soft' is stored as FLOAT, but Softmax-13 takes INT",
    ):
        onnxshap.load(proto)
    assert "stored as FLOAT" in _cli_error(capsys, "check", _save(proto, tmp_path / "m.onnx"))
