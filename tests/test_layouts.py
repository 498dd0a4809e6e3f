"""Any batch layout: real exports whose batch is fixed at 1, sits on another axis, or is absent, with
explicit recurrent state, '?' dimension names, or a ZipMap output (models/layout_*.onnx,
models/sklearn_mlp_zipmap.onnx).

For each fixture: the explained outputs at the samples equal onnxruntime's, one example at a time;
attributions are complete with 3 samples x 8 references; each sample's values do not change when
the other samples of the call do. Then the readings of ambiguous and bad arrays, through the API and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import onnxshap
from onnxshap import cli
from tests.conftest import REPO
from tests.helpers import run_ort

MODELS = REPO / "models"
MANIFEST: dict[str, Any] = json.loads((MODELS / "manifest.json").read_text())
LAYOUTS = sorted(name for name, entry in MANIFEST.items() if entry.get("family") == "layout")
#: Sizes of the '?' models' dynamic image sides (the issue's 48 x 192 text line, and a small one).
IMAGE_SIDES = {"layout_unknown_dims": (48, 192), "layout_unknown_dims_p2o": (16, 24)}


def _user_arrays(name: str, n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(arrays as a user passes them: (n, *example without its batch axis) or (n, *example) where the
    graph has no batch axis; fixed state values), from the manifest's declared shapes and batch axes."""
    entry = MANIFEST[name]
    fixed_names = entry.get("fixed_inputs", [])
    arrays: dict[str, np.ndarray] = {}
    fixed: dict[str, np.ndarray] = {}
    for info in entry["inputs"]:
        declared = entry["declared_shapes"][info["name"]]
        batch_axis = entry["batch_axes"][info["name"]]
        sides = iter(IMAGE_SIDES.get(name, ()))
        example = [
            1 if axis == batch_axis else d if isinstance(d, int) else next(sides) for axis, d in enumerate(declared)
        ]
        if info["name"] in fixed_names:
            fixed[info["name"]] = (0.5 * rng.standard_normal(example)).astype(np.float32)
        else:
            row = example[1:] if batch_axis == 0 else example
            arrays[info["name"]] = rng.standard_normal((n, *row)).astype(np.float32)
    return arrays, fixed


def _example(name: str, arrays: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Sample i as the graph takes it: a batch of one where it has a batch axis."""
    axes = MANIFEST[name]["batch_axes"]
    return {k: v[i][None] if axes[k] == 0 else v[i] for k, v in arrays.items()}


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_fixture_is_explained_exactly(name: str, rng: np.random.Generator) -> None:
    path = MODELS / MANIFEST[name]["file"]
    model = onnxshap.load(path)
    x, fixed = _user_arrays(name, 3, rng)
    background, _ = _user_arrays(name, 8, rng)
    explainer = onnxshap.Explainer(model, background, fixed=fixed or None)
    e = explainer.explain(x)
    assert set(e.readings.values()) == {
        "rows" if MANIFEST[name]["batch_axes"]["x" if "x" in x else "image"] == 0 else "examples"
    }
    # The explained outputs are every element of the first output of one example, wherever its batch sits.
    first = model.outputs[0].name
    proto = onnx.load(path)
    for i in range(3):
        theirs = run_ort(proto, {**_example(name, x, i), **fixed})
        ours = model.run({**_example(name, x, i), **fixed})
        np.testing.assert_allclose(ours[first], theirs[first], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(e.prediction[i], theirs[first].reshape(-1), rtol=1e-5, atol=1e-6)
    assert e.prediction.shape == (3, int(np.prod(theirs[first].shape)))
    assert e.max_relative_residual <= 1e-5, e.max_relative_residual
    values = e.values_for(e.input_names[0])
    assert values.shape == (*x[e.input_names[0]].shape, e.prediction.shape[1])
    assert np.abs(values).sum() > 0
    # Each sample's values are its own: with the other samples of the call replaced by fresh rows (as
    # many, so the compiled pass is reused), they do not change.
    others, _ = _user_arrays(name, 3, rng)
    for i in range(3):
        mixed = {k: np.concatenate([v[:i], x[k][i : i + 1], v[i + 1 :]]) for k, v in others.items()}
        again = explainer.explain(mixed).values_for(e.input_names[0])
        np.testing.assert_allclose(again[i], values[i], rtol=1e-4, atol=1e-5 * float(np.abs(values).max()))
        assert not np.allclose(again[i - 1], values[i - 1])  # the other rows did change


def test_outputs_anywhere_are_labelled_by_their_full_index(rng: np.random.Generator) -> None:
    name = "layout_crnn_ctc_ts"  # logits [T=8, batch, 6]
    x, _ = _user_arrays(name, 2, rng)
    bg, _ = _user_arrays(name, 8, rng)
    explainer = onnxshap.Explainer(MODELS / MANIFEST[name]["file"], bg)
    # One output, as "predicted" below explains one: both calls run one compiled pass.
    e = explainer.explain(x, output=[5 * 6 + 3])
    assert e.output_names == ["logits[5,0,3]"]
    assert len(e.all_output_names) == 48
    assert e.all_output_names[0] == "logits[0,0,0]" and e.all_output_names[-1] == "logits[7,0,5]"
    assert e.max_relative_residual <= 1e-5
    # "predicted": each sample's arg-max over all 48 elements of its logits.
    theirs = np.stack(
        [
            run_ort(onnx.load(MODELS / MANIFEST[name]["file"]), _example(name, x, i))["logits"].reshape(-1)
            for i in range(2)
        ]
    )
    predicted = explainer.explain(x, output="predicted")
    np.testing.assert_array_equal(predicted.output_indices[:, 0], theirs.argmax(axis=1))
    assert predicted.max_relative_residual <= 1e-5


def test_no_batch_axis_reads_whole_examples_and_says_which(rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / "layout_nobatch_frames_ts.onnx")  # x [24, 16] -> vad [24]
    bg = rng.standard_normal((8, 24, 16)).astype(np.float32)
    explainer = onnxshap.Explainer(model, bg)
    assert explainer.background_readings == {"x": "examples"}
    one = rng.standard_normal((24, 16)).astype(np.float32)
    # Axis 0 of the model is fixed at 24, so a (24, 16) array cannot be 24 rows: the error lists the readings.
    with pytest.raises(
        onnxshap.InputError, match=r"(?s)rows:.*not possible.*fixed at 24.*examples: an array \[n, 24, 16\]"
    ):
        explainer.explain(one)
    e = explainer.explain(one[None])
    assert e.readings == {"x": "examples"} and e.values.shape == (1, 24, 16, 24)
    assert e.max_relative_residual <= 1e-5
    # The model scores each frame from its own bins: vad[t] is attributed to frame t alone.
    off_frame = ~np.eye(24, dtype=bool)[:, None, :]  # (frame, 1, output)
    assert np.all(np.where(np.broadcast_to(off_frame, e.values.shape[1:]), e.values[0], 0) == 0)
    assert np.all(np.abs(e.values[0]).sum(axis=1)[np.eye(24, dtype=bool)] > 0)


def test_dynamic_axis_zero_is_read_as_rows_and_recorded(rng: np.random.Generator) -> None:
    # [batch, 6]: a (5, 6) array is 5 rows; a (5, 1, 6) array is 5 whole examples; both give one result.
    model = onnxshap.load(MODELS / "torch_mlp_ts.onnx")
    x = rng.standard_normal((5, 10)).astype(np.float32)
    bg = rng.standard_normal((8, 10)).astype(np.float32)
    rows = onnxshap.Explainer(model, bg).explain(x)
    whole = onnxshap.Explainer(model, bg[:, None]).explain(x[:, None])
    assert rows.readings == {"x": "rows"} and whole.readings == {"x": "examples"}
    assert whole.values.shape == (5, 1, 10, 3)
    np.testing.assert_allclose(whole.values[:, 0], rows.values, rtol=1e-5, atol=1e-7)


def test_fixed_batch_of_one_keeps_onnxruntimes_contract_in_model_run(rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / "layout_cnn_static_ts.onnx")
    with pytest.raises(onnxshap.InputError, match="axis 0 must be 1"):
        model.run({"x": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)})


def test_unknown_dimension_names_tie_nothing_but_named_ones_must_agree(rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / "layout_unknown_dims.onnx")  # x ['?', 3, '?', '?']
    x = rng.standard_normal((1, 3, 48, 192)).astype(np.float32)
    np.testing.assert_allclose(
        model.run({"x": x})["fetch_name_0"],
        run_ort(onnx.load(MODELS / "layout_unknown_dims.onnx"), {"x": x})["fetch_name_0"],
        rtol=1e-5,
        atol=1e-6,
    )
    # A real exporter's shared name still ties: state h0 [1, batch, 16] must have batch 1 beside one example.
    lstm = onnxshap.load(MODELS / "layout_lstm_state_ts.onnx")
    bg = rng.standard_normal((8, 20, 5)).astype(np.float32)
    state = np.zeros((1, 2, 16), np.float32)
    with pytest.raises(onnxshap.InputError, match=r"Dimension 'batch' is 1 in .* but 2 in .*'h0'.*must be 1"):
        onnxshap.Explainer(lstm, bg, fixed={"h0": state, "c0": state})


def test_recurrent_state_given_once_three_ways_gives_one_result(rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / "layout_lstm2_state_static_ts.onnx")  # h0, c0 [2, 1, 16]
    x = rng.standard_normal((3, 20, 5)).astype(np.float32)
    bg = rng.standard_normal((8, 20, 5)).astype(np.float32)
    h, c = (0.5 * rng.standard_normal((2, 2, 1, 16))).astype(np.float32)
    by_argument = onnxshap.Explainer(model, bg, fixed={"h0": h, "c0": c}).explain(x)
    # Given with its declared shape beside rows of the signal, in the background and the samples.
    in_background = onnxshap.Explainer(model, {"x": bg, "h0": h, "c0": c}).explain({"x": x, "h0": h, "c0": c})
    # Held (not explained), given once in explain().
    held = onnxshap.Explainer(model, {"x": bg}, inputs="x").explain({"x": x, "h0": h, "c0": c})
    assert held.readings == {"x": "rows", "h0": "fixed", "c0": "fixed"}
    for other in (in_background, held):
        np.testing.assert_allclose(other.values, by_argument.values, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(other.base_values, by_argument.base_values, rtol=1e-6)
    assert by_argument.max_relative_residual <= 1e-5


def test_fixed_and_ambiguous_inputs_fail_clearly(rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / "layout_lstm2_state_static_ts.onnx")
    bg = rng.standard_normal((8, 20, 5)).astype(np.float32)
    state = np.zeros((2, 1, 16), np.float32)
    with pytest.raises(
        onnxshap.InputError, match=r"Fixed input 'h0' has shape \[2, 16\], but the model declares \[2, 1, 16\]"
    ):
        onnxshap.Explainer(model, bg, fixed={"h0": state[:, 0], "c0": state})
    with pytest.raises(onnxshap.InputError, match="not graph inputs"):
        onnxshap.Explainer(model, bg, fixed={"h": state, "c0": state})
    with pytest.raises(onnxshap.InputError, match="explained, so they cannot be fixed"):
        onnxshap.Explainer(model, bg, inputs=["x", "h0"], fixed={"h0": state, "c0": state})
    explainer = onnxshap.Explainer(model, bg, fixed={"h0": state, "c0": state})
    with pytest.raises(onnxshap.InputError, match="another value"):
        explainer.explain({"x": bg[:2], "h0": state + 1})
    with pytest.raises(
        onnxshap.InputError, match=r"(?s)fits no reading of \[1, 20, 5\]: axis 2 must be 5.*rows:.*examples:"
    ):
        explainer.explain(rng.standard_normal((2, 20, 4)).astype(np.float32))
    # Never broadcast what the user did not ask to share: an explained input given once is not fixed.
    dynamic = onnxshap.load(MODELS / "layout_lstm_state_ts.onnx")
    rows = {"x": bg, "h0": rng.standard_normal((8, 1, 16)).astype(np.float32), "c0": np.zeros((8, 1, 16), np.float32)}
    explained = onnxshap.Explainer(dynamic, rows)
    assert explained.inputs == ["x", "h0", "c0"]
    with pytest.raises(onnxshap.InputError, match="disagree on the number of samples"):
        explained.explain({"x": bg[:3], "h0": np.zeros((1, 1, 16), np.float32), "c0": np.zeros((1, 1, 16), np.float32)})


def test_rows_that_merely_disagree_in_count_are_not_taken_as_fixed(rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / "layout_lstm_state_ts.onnx")  # x [batch, 20, 5], h0 / c0 [1, batch, 16]
    x = rng.standard_normal((8, 20, 5)).astype(np.float32)
    explainer = onnxshap.Explainer(model, {"x": x}, inputs="x")  # h0, c0 held at the samples' values
    state = rng.standard_normal((3, 1, 16)).astype(np.float32)  # 3 rows for 4 samples: a mistake, not a value
    with pytest.raises(onnxshap.InputError, match="disagree on the number of samples"):
        explainer.explain({"x": x[:4], "h0": state, "c0": state})
    once = np.zeros((1, 1, 16), np.float32)  # the declared shape with batch 1: one value for every sample
    assert explainer.explain({"x": x[:4], "h0": once, "c0": once}).readings["h0"] == "fixed"


def test_background_and_samples_must_share_the_example_shape(rng: np.random.Generator) -> None:
    model = onnxshap.load(MODELS / "layout_unknown_dims.onnx")
    explainer = onnxshap.Explainer(model, rng.standard_normal((4, 3, 16, 24)).astype(np.float32))
    with pytest.raises(
        onnxshap.InputError, match=r"one sample is fed as \[1, 3, 48, 192\] but one background row as \[1, 3, 16, 24\]"
    ):
        explainer.explain(rng.standard_normal((1, 3, 48, 192)).astype(np.float32))


def test_zipmap_classifier_explains_the_probabilities_behind_the_zipmap(rng: np.random.Generator) -> None:
    path = MODELS / "sklearn_mlp_zipmap.onnx"
    x = rng.standard_normal((3, 6)).astype(np.float32)
    e = onnxshap.Explainer(path, rng.standard_normal((8, 6)).astype(np.float32)).explain(x)
    theirs = run_ort(onnx.load(path), {"x": x})["output_probability"]  # one {label: probability} per row
    np.testing.assert_allclose(e.prediction, [[row[k] for k in sorted(row)] for row in theirs], rtol=1e-5, atol=1e-6)
    assert e.max_relative_residual <= 1e-5
    # Naming the ZipMap output explains the same tensor.
    named = onnxshap.Explainer(path, rng.standard_normal((8, 6)).astype(np.float32), outputs="output_probability")
    assert named.outputs == [onnxshap.load(path).tensor_behind("output_probability")] != ["output_probability"]
    assert e.all_output_names == [f"{named.outputs[0]}[{j}]" for j in range(3)]


@pytest.mark.parametrize(
    ("name", "extra", "values_shape"),
    [
        ("layout_cnn_static_ts", [], [3, 3, 16, 16, 5]),
        ("layout_crnn_ctc_ts", ["--output", "0,47"], [3, 1, 8, 32, 2]),
        ("layout_nobatch_frames_ts", [], [3, 24, 16, 24]),
        ("layout_lstm2_state_static_ts", ["--fixed", "h0={tmp}/h0.npy", "--fixed", "c0={tmp}/c0.npy"], [3, 20, 5, 3]),
        ("layout_unknown_dims", [], [3, 3, 48, 192, 4]),
    ],
)
def test_cli_explains_every_layout(
    name: str,
    extra: list[str],
    values_shape: list[int],
    tmp_path: Path,
    rng: np.random.Generator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    x, fixed = _user_arrays(name, 3, rng)
    bg, _ = _user_arrays(name, 8, rng)
    np.save(tmp_path / "x.npy", x.popitem()[1])
    np.save(tmp_path / "bg.npy", bg.popitem()[1])
    for key, value in fixed.items():
        np.save(tmp_path / f"{key}.npy", value)
    extra = [a.format(tmp=tmp_path) for a in extra]
    out = tmp_path / "values.npz"
    code = cli.main(
        [
            "explain",
            str(MODELS / MANIFEST[name]["file"]),
            "--input",
            str(tmp_path / "x.npy"),
            "--background",
            str(tmp_path / "bg.npy"),
            "-o",
            str(out),
            *extra,
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    e = onnxshap.Explanation.load(out)
    assert list(e.values.shape) == values_shape
    assert e.max_relative_residual <= 1e-5
    assert "inputs: " in printed.out  # how the arrays were read


def test_cli_takes_state_given_once_in_the_input_file(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    state = (0.5 * rng.standard_normal((2, 1, 16))).astype(np.float32)
    x = rng.standard_normal((4, 20, 5)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x, h0=state, c0=state)
    out = tmp_path / "values.npz"
    code = cli.main(
        [
            "explain",
            str(MODELS / "layout_lstm2_state_static_ts.onnx"),
            "--input",
            str(tmp_path / "x.npz"),
            "--batch-size",
            "3",
            "-o",
            str(out),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "h0: one fixed value [2, 1, 16] for every sample" in printed.out
    e = onnxshap.Explanation.load(out)
    assert e.values.shape == (4, 20, 5, 3) and e.readings == {"x": "rows"}
    assert e.max_relative_residual <= 1e-5
    code = cli.main(
        [
            "explain",
            str(MODELS / "layout_lstm2_state_static_ts.onnx"),
            "--input",
            str(tmp_path / "x.npz"),
            "--fixed",
            "h0=missing.npy",
            "-o",
            str(out),
        ]
    )
    assert code != 0 and "missing.npy" in capsys.readouterr().err


def test_cli_explains_the_zipmap_classifier(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", rng.standard_normal((5, 6)).astype(np.float32))
    out = tmp_path / "values.npz"
    code = cli.main(
        ["explain", str(MODELS / "sklearn_mlp_zipmap.onnx"), "--input", str(tmp_path / "x.npy"), "-o", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    assert onnxshap.Explanation.load(out).values.shape == (5, 6, 3)


def test_token_ids_with_a_batch_fixed_at_one(rng: np.random.Generator) -> None:
    # The same text CNN with its batch declared [1, 30]: explained per token as with a dynamic batch.
    proto = onnx.load(MODELS / "seq_text_cnn_ts.onnx")
    dynamic = onnxshap.Explainer(proto.SerializeToString(), baseline_token=0)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    static = onnxshap.Explainer(proto, baseline_token=0)
    ids = rng.integers(1, 100, (3, 30)).astype(np.int64)
    e = static.explain(ids)
    assert e.values.shape == (3, 30, 2) and e.readings == {"x": "rows"}
    np.testing.assert_allclose(e.values, dynamic.explain(ids).values, rtol=1e-5, atol=1e-6)
    assert e.max_relative_residual <= 1e-5
