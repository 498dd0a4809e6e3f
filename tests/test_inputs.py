"""`onnxshap.read_inputs`: data files (.npy, .npz, .csv, images) read as a model's inputs, as
`onnxshap explain --input` reads them; errors are `InputError`s that name the Python options.

The command line's use of the same code (its messages and exit codes) is tested in test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxshap
from tests.conftest import REPO

MODELS = REPO / "models"
DIGITS = MODELS / "torch_cnn_digits_ts.onnx"  # x: float32[batch, 1, 8, 8]
TRANSFORMER = MODELS / "seq_transformer_ts.onnx"  # x, mask: int64[batch, 16]
MLP = MODELS / "torch_mlp_ts.onnx"  # x: float32[batch, 10]
NEEDS_PILLOW = "image inputs need Pillow (the onnxshap[image] extra)"


def relu_model(shape: list[int | str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_arrays_are_read_by_input_name_and_cast_to_the_declared_dtypes(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((3, 1, 8, 8))  # float64, as files often are
    np.save(tmp_path / "x.npy", x)
    feeds = onnxshap.read_inputs(tmp_path / "x.npy", DIGITS)  # a path is loaded as the model
    assert list(feeds) == ["x"] and feeds["x"].dtype == np.float32
    np.testing.assert_array_equal(feeds["x"], x.astype(np.float32))

    ids, mask = np.arange(32, dtype=np.int32).reshape(2, 16), np.ones((2, 16), dtype=np.int32)
    np.savez(tmp_path / "tokens.npz", x=ids, mask=mask)
    feeds = onnxshap.read_inputs([str(tmp_path / "tokens.npz")], onnxshap.load(TRANSFORMER))
    assert sorted(feeds) == ["mask", "x"]
    assert feeds["x"].dtype == np.int64 and feeds["mask"].dtype == np.int64
    np.testing.assert_array_equal(feeds["x"], ids)


def test_a_csv_header_row_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    rows = np.arange(20, dtype=np.float32).reshape(2, 10)
    path.write_text(
        ",".join(f"f{i}" for i in range(10)) + "\n" + "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    )
    feeds = onnxshap.read_inputs(path, MLP)
    np.testing.assert_array_equal(feeds["x"], rows)


def test_an_image_folder_follows_the_model_input(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image", reason=NEEDS_PILLOW)
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, (16, 12)).astype(np.uint8) for _ in range(2)]
    for i, p in enumerate(pixels):
        pil.fromarray(p, mode="L").save(tmp_path / f"{i}.png")
    feeds = onnxshap.read_inputs(tmp_path, DIGITS, mean=[0.5], std=[0.25])  # resized to 8 x 8, NCHW
    assert feeds["x"].shape == (2, 1, 8, 8) and feeds["x"].dtype == np.float32
    with pil.open(tmp_path / "0.png") as im:
        small = np.asarray(im.resize((8, 8), pil.Resampling.BILINEAR), np.float32)
    np.testing.assert_allclose(feeds["x"][0, 0], (small / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-5)
    raw = onnxshap.read_inputs(tmp_path / "0.png", DIGITS, scale="0-255", image_size=(8, 8))
    np.testing.assert_allclose(raw["x"][0, 0], small, atol=1e-4)


def test_errors_name_the_python_options(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image", reason=NEEDS_PILLOW)
    image = tmp_path / "a.png"
    pil.fromarray(np.zeros((4, 4, 3), np.uint8), mode="RGB").save(image)
    cifar = MODELS / "torch_cnn_cifar_ts.onnx"  # x: float32[batch, 3, 32, 32]
    mean = r"^mean takes 1 or 3 values \(one per channel\); got 2\.$"
    with pytest.raises(onnxshap.InputError, match=mean):
        onnxshap.read_inputs(image, cifar, mean=[0.1, 0.2])
    with pytest.raises(onnxshap.InputError, match=r"pass layout='NCHW' or layout='NHWC'\.$"):
        onnxshap.read_inputs(image, relu_model(["n", 3, 5, 3]))
    with pytest.raises(onnxshap.InputError, match="layout must be 'NCHW' or 'NHWC', not 'CHW'"):
        onnxshap.read_inputs(image, cifar, layout="CHW")
    with pytest.raises(onnxshap.InputError, match="scale must be one of"):
        onnxshap.read_inputs(image, cifar, scale="0-2")


def test_file_errors_are_input_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npy"
    with pytest.raises(onnxshap.InputError, match=f"^input file {str(missing)!r} does not exist"):
        onnxshap.read_inputs(missing, MLP)
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(onnxshap.InputError, match="use .npy, .npz"):
        onnxshap.read_inputs(tmp_path / "x.txt", MLP)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(onnxshap.InputError, match="onnxshap never loads pickled data"):
        onnxshap.read_inputs(tmp_path / "bad.npy", MLP)
    np.save(tmp_path / "ids.npy", np.zeros((2, 16), np.int64))
    with pytest.raises(onnxshap.InputError, match="The model has 2 inputs .*pass an .npz file"):
        onnxshap.read_inputs(tmp_path / "ids.npy", TRANSFORMER)
