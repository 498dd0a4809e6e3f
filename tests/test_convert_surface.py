"""What conversion hands back, without any framework installed: `onnxshap.convert`, `Model.save`,
`Model.tensors` (the list `onnxshap inspect --tensors` prints), the `outputs="logits"` alias, the
refusal of untrusted files (one exit code for every suffix), and the import path a trusted pickle
is loaded with. The torch side (training-mode warning, a .pt whose class sits next to it) is in
tests/test_convert.py."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxshap
from onnxshap import _model, cli
from onnxshap._convert import convert_file
from onnxshap._errors import ConversionError, InputError, OutputError
from tests.conftest import REPO

MODELS = REPO / "models"
DIGITS = MODELS / "torch_cnn_digits_ts.onnx"  # probs = Softmax(/features/features.7/Gemm_output_0)
DIGITS_LOGITS = "/features/features.7/Gemm_output_0"
LOGITS_PROBS = MODELS / "torch_mlp_logits_probs_ts.onnx"  # a tensor literally named "logits", then Softmax


def run_main(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _squashed(op: str, *, identity: bool = False, **attrs: Any) -> onnx.ModelProto:
    """x[N, 3] -> Gemm -> scores -> `op` (-> Identity) -> y: the shape of a classifier's export."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["scores"]), helper.make_node(op, ["scores"], ["p"], **attrs)]
    if identity:
        nodes.append(helper.make_node("Identity", ["p"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y" if identity else "p", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, [3, 2], np.arange(6, dtype=np.float32) / 6),
            helper.make_tensor("b", TensorProto.FLOAT, [2], [0.1, -0.1]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def digits() -> onnxshap.Model:
    return onnxshap.load(DIGITS)


# ----------------------------------------------------------------------------- outputs="logits"


def test_logits_alias_explains_the_scores_before_the_softmax(digits: onnxshap.Model) -> None:
    x = np.load(MODELS / "data" / "digits_samples.npy")[:2]
    background = np.load(MODELS / "data" / "digits_background.npy")[:8]
    explainer = onnxshap.Explainer(digits, background, outputs="logits")
    assert explainer.outputs == [DIGITS_LOGITS]
    e = explainer.explain(x, output=3)
    np.testing.assert_allclose(
        e.prediction[:, 0], digits.run({"x": x}, outputs=[DIGITS_LOGITS])[DIGITS_LOGITS][:, 3], rtol=1e-5, atol=1e-6
    )
    assert e.max_relative_residual < 1e-4
    # The same from a path (load(..., outputs=["logits"]) resolves the alias for its op check too).
    assert onnxshap.Explainer(DIGITS, background, outputs=["logits"]).outputs == [DIGITS_LOGITS]


def test_a_tensor_named_logits_wins() -> None:
    background = np.zeros((2, 10), np.float32)
    assert onnxshap.Explainer(LOGITS_PROBS, background, outputs="logits").outputs == ["logits"]


@pytest.mark.parametrize(
    ("op", "attrs", "identity"),
    [("Softmax", {"axis": -1}, False), ("LogSoftmax", {"axis": 1}, False), ("Sigmoid", {}, True)],
)
def test_logits_alias_looks_behind_each_squashing_op(op: str, attrs: dict[str, Any], identity: bool) -> None:
    model = onnxshap.load(_squashed(op, identity=identity, **attrs))
    assert _model.logits_tensor(model.graph) == "scores"
    assert onnxshap.Explainer(model, np.zeros((2, 3), np.float32), outputs="logits").outputs == ["scores"]


def test_logits_alias_without_a_squashing_op_is_refused() -> None:
    with pytest.raises(InputError, match=r"Normalizer node .*Model\.tensors\(\)"):
        onnxshap.Explainer(MODELS / "sklearn_logreg.onnx", np.zeros((2, 6), np.float32), outputs="logits")


def test_cli_outputs_from_logits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.load(MODELS / "data" / "digits_samples.npy")[:2])
    np.save(tmp_path / "bg.npy", np.load(MODELS / "data" / "digits_background.npy")[:4])
    out = tmp_path / "v.npz"
    code, _, err = run_main(
        capsys,
        "explain",
        DIGITS,
        "--input",
        tmp_path / "x.npy",
        "--background",
        tmp_path / "bg.npy",
        "--outputs-from",
        "logits",
        "--output",
        "0",
        "-o",
        out,
    )
    assert code == 0, err
    assert onnxshap.Explanation.load(out).output_names == [f"{DIGITS_LOGITS}[0]"]


# ----------------------------------------------------------------------------- Model.tensors / save


def test_tensors_are_what_inspect_lists(digits: onnxshap.Model, capsys: pytest.CaptureFixture[str]) -> None:
    tensors = digits.tensors()
    assert tensors[-2:] == [
        _model.TensorInfo(DIGITS_LOGITS, np.dtype(np.float32), ("batch", 10)),
        _model.TensorInfo("probs", np.dtype(np.float32), ("batch", 10)),
    ]
    code, out, _ = run_main(capsys, "inspect", DIGITS, "--tensors")
    assert code == 0
    listed = out.split("tensors (", 1)[1].splitlines()[1:]
    listed = [line.strip().split("  <- ")[0] for line in listed if line.startswith("  ") and "  <- " in line]
    assert listed == [t.describe() for t in tensors]


def test_save_writes_the_model_whole(digits: onnxshap.Model, tmp_path: Path) -> None:
    target = tmp_path / "copy.onnx"
    digits.save(target)
    assert target.read_bytes() == digits.proto.SerializeToString()
    assert onnx.load(target).graph.output[0].name == "probs"
    assert onnxshap.load(target).tensors() == digits.tensors()
    assert digits.conversion is None  # an ONNX model was not converted
    with pytest.raises(OutputError, match="is a directory"):
        digits.save(tmp_path)
    with pytest.raises(OutputError, match="does not exist"):
        digits.save(tmp_path / "missing" / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.onnx"]


def test_save_refuses_a_model_over_the_protobuf_limit(
    digits: onnxshap.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_model, "_PROTO_LIMIT", 100)
    with pytest.raises(OutputError, match="save_as_external_data=True"):
        digits.save(tmp_path / "big.onnx")
    assert not list(tmp_path.iterdir())


def test_convert_is_public_and_refuses_non_models() -> None:
    assert "convert" in onnxshap.__all__ and "convert" in dir(onnxshap)
    with pytest.raises(ConversionError, match="Cannot convert a numpy.ndarray"):
        onnxshap.convert(np.zeros(3))


# ----------------------------------------------------------------------------- untrusted files, import path


@pytest.mark.parametrize("name", ["torch_mlp.pt2", "sklearn_logreg.joblib"])
def test_untrusted_refusal_is_exit_1_for_every_suffix(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A .pt pickle is refused the same way once torch has opened it (tests/test_convert.py).
    code, out, err = run_main(capsys, "convert", REPO / "models" / "frameworks" / name, "-o", tmp_path / "m.onnx")
    assert code == 1 and not out
    assert err.count("\n") == 1 and "--trust-pickle" in err and "runs code stored in the file" in err
    assert not list(tmp_path.iterdir())


CLASS_MODULE = "onnxshap_test_pickled_thing"


@pytest.fixture
def pickled_thing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """models/thing.pkl holding an object of a class defined in models/<CLASS_MODULE>.py, as a
    training script run from models/ would save it; afterwards the module is not importable."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / f"{CLASS_MODULE}.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    module = __import__(CLASS_MODULE)
    (folder / "thing.pkl").write_bytes(pickle.dumps(module.Thing()))
    monkeypatch.delitem(sys.modules, CLASS_MODULE)
    sys.path.remove(str(folder))
    return folder / "thing.pkl"


def test_trusted_pickle_imports_classes_next_to_the_file(
    pickled_thing: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = list(sys.path)
    # Unpickling succeeds (the class is found beside the file); the object is just no model.
    with pytest.raises(ConversionError, match=rf"holds a {CLASS_MODULE}\.Thing, which is not a PyTorch"):
        convert_file(pickled_thing, trust_pickle=True)
    assert sys.path == before  # the folder was on the import path for the load only
    sys.modules.pop(CLASS_MODULE, None)
    code, _, err = run_main(capsys, "convert", pickled_thing, "--trust-pickle", "-o", elsewhere / "m.onnx")
    assert code == 1 and f"holds a {CLASS_MODULE}.Thing" in err
    sys.modules.pop(CLASS_MODULE, None)
    # From the current directory too: the file elsewhere, the class here.
    moved = elsewhere / "thing.pkl"
    pickled_thing.replace(moved)
    monkeypatch.chdir(pickled_thing.parent)
    with pytest.raises(ConversionError, match=rf"holds a {CLASS_MODULE}\.Thing"):
        convert_file(moved, trust_pickle=True)
    sys.modules.pop(CLASS_MODULE, None)


def test_trusted_pickle_whose_class_is_nowhere(
    pickled_thing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pickled_thing.parent / f"{CLASS_MODULE}.py").unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConversionError, match=rf"needs the module '{CLASS_MODULE}'.*next to the model file"):
        convert_file(pickled_thing, trust_pickle=True)
