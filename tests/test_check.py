"""`onnxshap check`: onnxshap's forward pass against onnxruntime's, without false verdicts.

Outputs are judged with numpy.allclose's test (so a tiny difference on an output that is 0 passes),
NaN and infinities must be at the same places on both sides, random inputs are drawn in range (ids
within their table, masks mostly 1), and a model onnxruntime refuses is a clean error. Runs call
`onnxshap.cli.main` in-process on the bundled models and on tiny models built here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxshap
from onnxshap import cli
from onnxshap._check import random_feeds
from tests.conftest import REPO

MODELS = REPO / "models"


def run_check(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = cli.main(["check", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def save_model(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list[int]]],
    outputs: list[tuple[str, int]],
    initializers: Sequence[onnx.TensorProto] = (),
) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        list(initializers),
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def sqrt_log(tmp_path: Path) -> Path:
    """y = sqrt(x): NaN where x < 0; z = log(relu(x)): -inf there. Both sides agree on where."""
    return save_model(
        tmp_path / "sqrt_log.onnx",
        [
            helper.make_node("Sqrt", ["x"], ["y"]),
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Log", ["r"], ["z"]),
        ],
        [("x", TensorProto.FLOAT, [2, 4])],
        [("y", TensorProto.FLOAT), ("z", TensorProto.FLOAT)],
    )


# ----------------------------------------------------------------------------- 1. the tolerance


def test_tiny_difference_on_a_zero_output_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # All-zero ids: prob is 0.0 in onnxruntime (its fast sigmoid) and ~3e-10 in onnxshap, which a
    # relative difference diff / (|ref| + atol) called a mismatch.
    np.save(tmp_path / "zeros.npy", np.zeros((2, 50), np.int32))
    code, out, err = run_check(capsys, MODELS / "keras_text_gap.onnx", "--input", tmp_path / "zeros.npy")
    assert code == 0, out + err
    assert re.search(r"prob: shape \[2, 1\], max abs difference [0-9.e-]+; worst at \[\d, 0\]: ", out), out
    assert out.strip().splitlines()[-1].startswith("OK: ") and "atol + rtol * |onnxruntime|" in out
    code, out, err = run_check(capsys, MODELS / "keras_text_gap.onnx")  # random ids
    assert code == 0, out + err


def test_differences_beyond_atol_plus_rtol_are_a_mismatch(
    sqrt_log: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = onnxshap.Model.run

    def off_by_a_thousandth(self: onnxshap.Model, feeds: Any, outputs: Any = None) -> dict[str, Any]:
        result = run(self, feeds, outputs)
        return {**result, "y": result["y"] * np.float32(1.001)}

    monkeypatch.setattr(onnxshap.Model, "run", off_by_a_thousandth)
    code, out, err = run_check(capsys, sqrt_log)
    assert code == 1
    assert err.startswith("MISMATCH in y: ") and "atol 1e-05, rtol 0.0001" in err
    assert re.search(r"worst at \[\d, \d\]: [0-9.]+ vs onnxruntime [0-9.]+ \(\|difference\| ", err), err
    assert "internal error" not in err
    code, out, err = run_check(capsys, sqrt_log, "--rtol", "2e-3")  # the flag widens the test
    assert code == 0, out + err


# ----------------------------------------------------------------------------- 2. NaN and infinities


def test_nan_and_inf_at_the_same_places_are_ok(
    sqrt_log: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, fed = onnxshap.Model.run, list[np.ndarray]()

    def record(self: onnxshap.Model, feeds: Any, outputs: Any = None) -> dict[str, Any]:
        fed.append(feeds["x"])
        return run(self, feeds, outputs)

    monkeypatch.setattr(onnxshap.Model, "run", record)
    code, out, err = run_check(capsys, sqrt_log)
    negative = int(np.count_nonzero(fed[0] < 0))
    assert 0 < negative < fed[0].size
    assert code == 0, out + err
    assert f"y: shape [2, 4], NaN at the same {negative} position(s) in both, max abs difference" in out
    assert f"z: shape [2, 4], -inf at the same {negative} position(s) in both, max abs difference" in out
    assert "max abs difference nan" not in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("nan", "NaN at 1 position(s) in onnxshap's output, not in onnxruntime's (first at [{i}, {j}]: nan vs"),
        ("finite", "NaN at {n} position(s) in onnxruntime's output, not in onnxshap's (first at [{i}, {j}]: 0.0 vs"),
        ("inf", "infinities differ at 1 position(s) (first at [{i}, {j}]: inf vs onnxruntime"),
    ],
)
def test_nan_or_inf_on_one_side_is_a_mismatch(
    change: str, message: str, sqrt_log: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, changed = onnxshap.Model.run, list[np.ndarray]()

    def inject(self: onnxshap.Model, feeds: Any, outputs: Any = None) -> dict[str, Any]:
        x, result = feeds["x"], run(self, feeds, outputs)
        if change == "finite":  # ours 0 where onnxruntime's sqrt is NaN
            where = x < 0
        else:  # one value that is finite in onnxruntime
            where = np.zeros(x.shape, bool)
            where[np.unravel_index(int(np.argmax(x >= 0)), x.shape)] = True
        changed.append(where)
        value = {"nan": np.nan, "finite": 0.0, "inf": np.inf}[change]
        return {**result, "y": np.where(where, np.float32(value), result["y"])}

    monkeypatch.setattr(onnxshap.Model, "run", inject)
    code, out, err = run_check(capsys, sqrt_log)
    where = changed[0]
    i, j = (int(v[0]) for v in np.nonzero(where))
    assert code == 1, out
    assert message.format(i=i, j=j, n=int(where.sum())) in err, err
    assert err.startswith("MISMATCH in y: ")


# ----------------------------------------------------------------------------- 3. random inputs in range


def test_random_ids_are_within_the_table_and_masks_mostly_one(capsys: pytest.CaptureFixture[str]) -> None:
    path = MODELS / "seq_transformer_ts.onnx"  # x: int64[batch, 16] -> 100-row embedding; mask: int64[batch, 16]
    feeds, _ = random_feeds(onnxshap.load(path))
    ids, mask = feeds["x"], feeds["mask"]
    assert ids.shape == (2, 16) and ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 100
    assert len(np.unique(ids)) > 8
    assert set(np.unique(mask)) == {0, 1} and mask.mean() > 0.6
    code, out, err = run_check(capsys, path)
    assert code == 0, out + err
    assert "  x int64[2, 16] in [0, 100) (ids of Gather node '/tok/Gather')" in out
    assert "  mask int64[2, 16] 0/1, mostly 1 (a mask)" in out
    assert "nan" not in out


def test_random_inputs_follow_how_the_graph_reads_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ids -> Gather of a 7-row table; keep -> Cast to bool -> Where (a mask by use, not by name);
    count -> Cast to float (a plain integer); flag: bool; f: float."""
    table = numpy_helper.from_array(np.arange(21, dtype=np.float32).reshape(7, 3), "table")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    path = save_model(
        tmp_path / "reads.onnx",
        [
            helper.make_node("Gather", ["table", "ids"], ["emb"]),
            helper.make_node("ReduceSum", ["emb", "axes"], ["s"], keepdims=0),
            helper.make_node("Cast", ["keep"], ["k"], to=TensorProto.BOOL),
            helper.make_node("Where", ["k", "s", "zero"], ["kept"]),
            helper.make_node("Cast", ["count"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["kept", "c"], ["a"]),
            helper.make_node("Add", ["a", "f"], ["y"]),
            helper.make_node("Not", ["flag"], ["not_flag"]),
        ],
        [
            ("ids", TensorProto.INT64, [2, 6]),
            ("keep", TensorProto.INT64, [2, 6]),
            ("count", TensorProto.INT32, [2, 6]),
            ("flag", TensorProto.BOOL, [2, 6]),
            ("f", TensorProto.FLOAT, [2, 6]),
        ],
        [("y", TensorProto.FLOAT), ("not_flag", TensorProto.BOOL)],
        [table, axes, zero],
    )
    feeds, drawn = random_feeds(onnxshap.load(path))
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 7 and len(np.unique(feeds["ids"])) > 2
    assert set(np.unique(feeds["keep"])) == {0, 1} and feeds["keep"].mean() > 0.5
    assert feeds["count"].dtype == np.int32 and feeds["count"].min() >= 0 and feeds["count"].max() < 10
    assert len(np.unique(feeds["count"])) > 2
    assert feeds["flag"].dtype == np.bool_ and set(np.unique(feeds["flag"])) == {False, True}
    assert feeds["f"].dtype == np.float32 and feeds["f"].std() > 0.1
    assert drawn == [
        "ids int64[2, 6] in [0, 7) (ids of Gather node #0)",
        "keep int64[2, 6] 0/1, mostly 1 (a mask)",
        "count int32[2, 6] in [0, 10)",
        "flag bool[2, 6] random True/False",
        "f float32[2, 6] standard normal",
    ]
    code, out, err = run_check(capsys, path)
    assert code == 0, out + err
    assert "not_flag: shape [2, 6], identical to onnxruntime" in out


# ----------------------------------------------------------------------------- 4. onnxruntime refuses


@pytest.mark.parametrize(
    ("kind", "ort_words"),
    [
        # Abs on bfloat16 is valid ONNX; onnxruntime's CPU provider has no kernel for it.
        ("bfloat16_abs", "NOT_IMPLEMENTED : Could not find an implementation for Abs(13)"),
        # Relu on uint8 is outside the op's type constraints, which onnxruntime enforces.
        ("uint8_relu", "INVALID_GRAPH : Load model from"),
    ],
)
def test_a_model_onnxruntime_refuses_is_a_clean_error(
    kind: str, ort_words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "bfloat16_abs":
        nodes = [
            helper.make_node("Cast", ["x"], ["h"], to=TensorProto.BFLOAT16),
            helper.make_node("Abs", ["h"], ["a"]),
            helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
        ]
        io_type = TensorProto.FLOAT
    else:
        nodes, io_type = [helper.make_node("Relu", ["x"], ["y"])], TensorProto.UINT8
    path = save_model(tmp_path / f"{kind}.onnx", nodes, [("x", io_type, [2, 3])], [("y", io_type)])
    code, _out, err = run_check(capsys, path)
    assert code == 1
    assert err.startswith(f"onnxshap check: error: onnxruntime could not load the model {str(path)!r}: "), err
    assert ort_words in err and "needs onnxruntime to load the model" in err and ".." not in err
    if kind == "uint8_relu":
        assert "Type Error: Type 'tensor(uint8)' of input parameter (x) of operator (Relu)" in err
    assert "internal error" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with pytest.raises(onnxshap.ModelLoadError):
        cli.main(["check", str(path), "--debug"])
