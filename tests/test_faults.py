"""Bad arguments and bad data, through the API and the CLI: a typed error whose message says what,
why and what to do; nothing silently accepted, no file replaced or left behind (issue 17's
fault-injection findings for the explainer, Explanation files and `onnxshap explain`).

Model-file faults are in tests/test_model_faults.py, `onnxshap check` in tests/test_check.py and
interrupts in tests/test_interrupt.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from tests.test_cli import DIGITS, DIGITS_SAMPLES, MLP, run_main


@pytest.fixture(scope="module")
def mlp() -> tuple[onnxshap.Explainer, np.ndarray]:
    """The committed MLP (x: float32[batch, 10] -> logits, probs), 3 samples against 8 references."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 10)).astype(np.float32)
    return onnxshap.Explainer(MLP, rng.standard_normal((8, 10)).astype(np.float32)), x


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("output", [[], 3.0, True, [True], [0.5], "1", np.bool_(True)], ids=repr)
def test_output_that_is_not_an_index_is_refused(mlp: tuple[onnxshap.Explainer, np.ndarray], output: object) -> None:
    explainer, x = mlp
    with pytest.raises(onnxshap.InputError, match="output must be None, an int, a non-empty list of ints"):
        explainer.explain(x, output=output)  # type: ignore[arg-type]


def test_numpy_integer_outputs_are_indices(mlp: tuple[onnxshap.Explainer, np.ndarray]) -> None:
    explainer, x = mlp
    assert explainer.explain(x, output=np.int64(1)).output_names == ["logits[1]"]
    assert explainer.explain(x, output=[np.int32(0), 2]).output_names == ["logits[0]", "logits[2]"]


@pytest.mark.parametrize("chunk_size", [0, -5, 2.5, True], ids=repr)
def test_chunk_size_must_be_a_positive_whole_number(chunk_size: object) -> None:
    with pytest.raises(onnxshap.InputError, match="chunk_size must be a whole number of background rows >= 1"):
        onnxshap.Explainer(MLP, np.zeros((2, 10), np.float32), chunk_size=chunk_size)  # type: ignore[arg-type]


def test_rules_for_no_op_and_no_node_are_refused() -> None:
    background = np.zeros((2, 10), np.float32)
    with pytest.raises(
        onnxshap.InputError, match=r"'NoSuchOp'.*neither an op type nor a node name.*\['Gemm', 'Relu', 'Softmax'\]"
    ):
        onnxshap.Explainer(MLP, background, rules={"NoSuchOp": "linear"})
    with pytest.raises(onnxshap.InputError, match=r"did you mean \['Softmax'\]"):
        onnxshap.Explainer(MLP, background, rules={"SoftMax": "linear"})
    with pytest.raises(onnxshap.InputError, match=r"the rule must be one of \['bilinear'"):
        onnxshap.Explainer(MLP, background, rules={"Gemm": "nonsense"})
    with pytest.raises(onnxshap.InputError, match="rules must be a dict"):
        onnxshap.Explainer(MLP, background, rules=["Gemm"])  # type: ignore[arg-type]


def test_rules_for_an_op_the_model_does_not_use_warn() -> None:
    with pytest.warns(UserWarning, match="this model has no Conv node, so the rule is not used"):
        onnxshap.Explainer(MLP, np.zeros((2, 10), np.float32), rules={"Conv": "linear"})


def _argmax_model() -> onnx.ModelProto:
    """x[N, 4] -> s = x @ w; idx = ArgMax(s) (int64, not a graph output); p = Softmax(s)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["s"]),
        helper.make_node("ArgMax", ["s"], ["idx"], axis=1, keepdims=0),
        helper.make_node("Softmax", ["s"], ["p"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "argmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_integer_output_is_refused_naming_a_float_one() -> None:
    x = np.ones((2, 4), np.float32)
    with pytest.raises(onnxshap.InputError, match=r"Output 'idx' is int64 .* outputs='p', with output='predicted'"):
        onnxshap.Explainer(_argmax_model(), x, outputs="idx")
    with pytest.raises(onnxshap.InputError, match="Output 'label' is int64"):
        onnxshap.Explainer(DIGITS.parent / "sklearn_logreg.onnx", np.zeros((2, 6), np.float32), outputs="label")


def test_an_integer_output_unknown_to_shape_inference_is_refused_when_traced() -> None:
    model = onnxshap.load(_argmax_model())
    del model.graph.value_info["idx"]  # as if shape inference had not typed it: the pass's trace knows its dtype
    explainer = onnxshap.Explainer(model, np.ones((2, 4), np.float32), outputs="idx")
    with pytest.raises(onnxshap.InputError, match="Output 'idx' is int64"):
        explainer.explain(np.ones((2, 4), np.float32))


# ----------------------------------------------------------------------------- explanation files


def test_loading_what_is_not_an_explanation(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04" + b"garbage" * 20)
    (tmp_path / "random.npz").write_bytes(os.urandom(256))
    cases = {
        "other.npz": "is not an onnxshap explanation: it has no 'input_names' array",
        "zip.npz": r"is not a readable \.npz archive \(BadZipFile\)",
        "random.npz": r"is not a readable \.npz archive.*never unpickles",
        "missing.npz": "no such file",
        ".": "it is a directory",
    }
    for name, message in cases.items():
        with pytest.raises(onnxshap.InputError, match=message):
            onnxshap.Explanation.load(tmp_path / name)


# ----------------------------------------------------------------------------- non-finite model values


def _masked_mean_model() -> onnx.ModelProto:
    """y = log(sum(x * mask) / sum(mask)) per row: NaN where the mask is all 0 (0 / 0) or the mean is < 0."""
    nodes = [
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "m"], ["xm"]),
        helper.make_node("ReduceSum", ["xm", "axes"], ["num"], keepdims=1),
        helper.make_node("ReduceSum", ["m", "axes"], ["den"], keepdims=1),
        helper.make_node("Div", ["num", "den"], ["mean"]),
        helper.make_node("Log", ["mean"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "masked_mean",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nan_from_the_model_is_not_blamed_on_precision() -> None:
    x = np.full((3, 4), 2.0, np.float32)
    mask = np.ones((3, 4), np.int64)
    mask[1] = 0  # 0 / 0 at sample 1
    explainer = onnxshap.Explainer(_masked_mean_model(), np.ones((4, 4), np.float32))
    with pytest.raises(onnxshap.AdditivityError) as info:
        explainer.explain({"x": x, "mask": mask})
    message = str(info.value)
    assert "The model's output f(x) is NaN or Inf at sample(s) [1]" in message
    assert "It first appears at Div node" in message and "not a loss of precision" in message
    assert "float64" not in message
    quiet = onnxshap.Explainer(_masked_mean_model(), np.ones((4, 4), np.float32), check="warn")
    with pytest.warns(UserWarning, match=r"NaN or Inf at sample\(s\) \[1\]"):
        quiet.explain({"x": x, "mask": mask})


def test_nan_at_background_rows_names_them() -> None:
    background = np.ones((4, 4), np.float32)
    background[2] = -1.0  # log of a negative mean
    model = _masked_mean_model()
    model.graph.input.pop()  # the mask becomes a constant of ones: the base is one mean over the rows
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1, 4), np.int64), "mask"))
    with pytest.raises(
        onnxshap.AdditivityError, match=r"mean f\(background\) is NaN or Inf: .* background row\(s\) \[2\].*Log node"
    ):
        onnxshap.Explainer(model, background).explain(np.full((2, 4), 2.0, np.float32))


def test_nan_weights_are_named() -> None:
    model = onnx.load(MLP)
    weight = model.graph.initializer[0]
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] = np.nan
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    x = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    with pytest.raises(
        onnxshap.AdditivityError, match=rf"first appears at Gemm node .* constant input\(s\) \['{weight.name}'\]"
    ):
        onnxshap.Explainer(model, x).explain(x)


# ----------------------------------------------------------------------------- the CLI


def test_cli_unreadable_array_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b,c,d,e,f,g,h,i,j\n")
    (tmp_path / "random.npy").write_bytes(os.urandom(256))
    (tmp_path / "random.npz").write_bytes(os.urandom(256))
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04" + b"garbage" * 20)
    cases = {
        "empty.csv": "has no data rows (the file is empty)",
        "header.csv": "has no data rows (only a header)",
        "random.npy": "is not a valid .npy file",
        "random.npz": "is not a valid .npz file",
        "zip.npz": "is not a valid .npz file",
    }
    for name, message in cases.items():
        code, _, err = run_main(capsys, "explain", MLP, "--input", tmp_path / name, "-o", tmp_path / "out.npz")
        assert code == 1, (name, err)
        assert message in err and "internal error" not in err and "pickle=" not in err, (name, err)
        assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)


def test_cli_nan_rows_are_named_in_the_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.load(DIGITS_SAMPLES)
    x[5] = np.nan
    np.save(tmp_path / "nan.npy", x)
    # Without --background the background is sampled from the input: the input is blamed, by its row.
    for extra in (["--batch-size", "2"], []):
        code, _, err = run_main(
            capsys, "explain", DIGITS, "--input", tmp_path / "nan.npy", "-o", tmp_path / "o.npz", *extra
        )
        assert code == 1
        assert "The --input data for input 'x' contains NaN or Inf in row(s) [5]" in err and "background" not in err
    assert not (tmp_path / "o.npz").exists()


def test_cli_refuses_to_overwrite_its_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.load(DIGITS_SAMPLES))
    before = x.read_bytes()
    code, _, err = run_main(capsys, "explain", DIGITS, "--input", x, "-o", x)
    assert code == 2 and "-o" in err and "is also --input: it would be replaced" in err
    code, _, err = run_main(
        capsys, "explain", DIGITS, "--input", x, "-o", tmp_path / "v.png", "--plot", tmp_path / "v.png"
    )
    assert code == 2 and "name the same file" in err
    assert x.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_cli_bad_options_fail_before_the_explain_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_explainer(*args: object, **kwargs: object) -> None:
        raise AssertionError("the options should have been refused before building the explainer")

    monkeypatch.setattr(onnxshap, "Explainer", no_explainer)
    (tmp_path / "a_file").write_text("")
    base = ["explain", DIGITS, "--input", DIGITS_SAMPLES, "-o", tmp_path / "v.npz"]
    code, _, err = run_main(capsys, *base, "--plot", tmp_path / "plot.xyz")
    assert code == 2 and "Cannot write a plot to" in err and ".png" in err
    code, _, err = run_main(capsys, *base, "--image-size", "0", "0")
    assert code == 2 and "--image-size: expected a whole number >= 1, got '0'" in err
    code, _, err = run_main(capsys, *base, "--compilation-cache", tmp_path / "a_file")
    assert code == 1 and "as the compilation cache" in err and "is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_plot_that_fails_midway_leaves_no_file(
    mlp: tuple[onnxshap.Explainer, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the onnxshap[plot] extra)")
    from matplotlib.figure import Figure

    explainer, x = mlp
    e = explainer.explain(x, output=0)

    def full_disk(self: Figure, fname: Path, **kwargs: object) -> None:
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(onnxshap.OutputError, match="No space left on device. Nothing was written"):
        e.plot(tmp_path / "bars.png", kind="bar")
    with pytest.raises(onnxshap.OutputError, match="the folder .* does not exist"):
        e.plot(tmp_path / "missing" / "bars.png", kind="bar")
    assert list(tmp_path.iterdir()) == []


def test_cli_out_of_memory_advice_names_only_the_commands_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(onnxshap.Model, "run", no_memory)
    code, _, err = run_main(capsys, "check", MLP)
    assert code == 1 and "out of memory (MemoryError). The forward pass needs more memory" in err
    assert "--batch-size" not in err and "--background-size" not in err
    monkeypatch.setattr(onnxshap, "Explainer", no_memory)
    code, _, err = run_main(capsys, "explain", DIGITS, "--input", DIGITS_SAMPLES, "-o", tmp_path / "v.npz")
    assert code == 1 and "Lower --batch-size (samples per call) or --background-size" in err
