"""What a user of `onnxshap explain` / `inspect` meets: plot options (--channel-axis, --plot-sample
lists, image file names as titles), output labels (CLI and API), the note when the samples are
their own background, which inputs `inspect` says are explained or held, and the text figure's
width. In-process `cli.main` on the committed tiny models; plots are captured, not drawn, except
where the drawing is what is tested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import onnxshap
from onnxshap import _plots, cli
from tests.conftest import REPO

MODELS = REPO / "models"
DIGITS = MODELS / "torch_cnn_digits_ts.onnx"  # x: float32[batch, 1, 8, 8] -> probs[batch, 10]
DIGITS_SAMPLES = MODELS / "data" / "digits_samples.npy"  # (8, 1, 8, 8) in [0, 1]
DIGITS_BACKGROUND = MODELS / "data" / "digits_background.npy"
MLP = MODELS / "torch_mlp_logits_probs_ts.onnx"  # x: float32[batch, 10] -> logits, probs [batch, 3]
POOLED = "/features/features.2/MaxPool_output_0"  # float32[batch, 8, 4, 4]: 8 channels of 4 x 4


def run_main(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def plotted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """The plot calls `explain --plot` makes (kind or "image_plot", options), each writing an empty file."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake(name: str) -> Any:
        def draw(e: Any, path: Path, **kwargs: Any) -> None:
            calls.append((name if name != "plot" else kwargs.pop("kind"), kwargs))
            Path(path).write_bytes(b"")

        return draw

    monkeypatch.setattr(_plots, "plot", fake("plot"))
    monkeypatch.setattr(_plots, "image_plot", fake("image_plot"))
    return calls


@pytest.fixture(scope="module")
def mlp() -> tuple[onnxshap.Explainer, np.ndarray]:
    rng = np.random.default_rng(0)
    bg = rng.standard_normal((8, 10)).astype(np.float32)
    return onnxshap.Explainer(MLP, bg), rng.standard_normal((3, 10)).astype(np.float32)


# ----------------------------------------------------------------------------- plot options


def test_intermediate_feature_map_plot_gets_channel_axis_and_sample_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plotted: list[tuple[str, dict[str, Any]]]
) -> None:
    code, _out, err = run_main(
        capsys,
        "explain",
        DIGITS,
        "--input",
        DIGITS_SAMPLES,
        "--background",
        DIGITS_BACKGROUND,
        "--inputs-from",
        POOLED,
        "--channel-axis",
        "0",
        "--plot-sample",
        "2,5",
        "--output",
        "probs[1],3",
        "--plot",
        tmp_path / "maps.png",
        "-o",
        tmp_path / "maps.npz",
    )
    assert code == 0, err
    assert plotted == [("auto", {"sample": [2, 5], "channel_axis": 0})]
    e = onnxshap.Explanation.load(tmp_path / "maps.npz")
    assert e.output_names == ["probs[1]", "probs[3]"] and e.values.shape == (8, 8, 4, 4, 2)


def test_plot_sample_takes_one_index_or_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    common = ["explain", str(MLP), "--input", "x.npy", "-o", "v.npz"]
    assert parser.parse_args([*common, "--plot-sample", "3"]).plot_sample == 3  # one int: a waterfall
    assert parser.parse_args([*common, "--plot-sample", "20,21"]).plot_sample == [20, 21]
    code, _, err = run_main(capsys, *common, "--plot-sample", "2,x")
    assert code == 2 and "a list such as 20,21" in err


def test_channel_axis_needs_an_image_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plotted: list[tuple[str, dict[str, Any]]]
) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((2, 10)).astype(np.float32))
    code, _, err = run_main(
        capsys,
        "explain",
        MLP,
        "--input",
        tmp_path / "x.npy",
        "--plot-kind",
        "bar",
        "--channel-axis",
        "0",
        "--plot",
        tmp_path / "p.png",
        "-o",
        tmp_path / "v.npz",
    )
    assert code == 2 and "--channel-axis applies to image plots; this plot is --plot-kind bar" in err
    assert plotted == [] and not (tmp_path / "v.npz").exists()


def test_image_folder_rows_are_titled_by_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plotted: list[tuple[str, dict[str, Any]]]
) -> None:
    pil = pytest.importorskip("PIL.Image", reason="image inputs need Pillow (the onnxshap[image] extra)")
    folder = tmp_path / "digits"
    folder.mkdir()
    x = np.load(DIGITS_SAMPLES)
    for i, name in enumerate(["b_seven.png", "a_three.png"]):
        pil.fromarray((np.clip(x[i, 0], 0, 1) * 255).astype(np.uint8)).save(folder / name)
    code, _, err = run_main(
        capsys,
        "explain",
        DIGITS,
        "--input",
        folder,
        "--background",
        DIGITS_BACKGROUND,
        "--output",
        "predicted",
        "--plot",
        tmp_path / "p.png",
        "-o",
        tmp_path / "v.npz",
    )
    assert code == 0, err
    assert plotted == [("auto", {"channel_axis": 0, "sample_names": ["a_three.png", "b_seven.png"]})]


def test_image_plot_draws_sample_names(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the onnxshap[plot] extra)")
    rng = np.random.default_rng(2)
    e = onnxshap.Explanation(
        values=rng.standard_normal((2, 1, 4, 4, 1)),
        base_values=np.zeros((2, 1)),
        data=rng.random((2, 1, 4, 4)),
        prediction=np.ones((2, 1)),
        residual=np.zeros((2, 1)),
        input_names=["x"],
        output_names=["y"],
        output_indices=np.zeros((2, 1), dtype=np.int64),
        all_output_names=["y"],
    )
    _plots.plot(e, tmp_path / "named.png", kind="image", sample_names=["a.png", "a_rather_long_name_of_a_photo.jpg"])
    assert (tmp_path / "named.png").stat().st_size > 0
    with pytest.raises(onnxshap.InputError, match="sample_names= does not apply to kind='bar'"):
        _plots.plot(e, tmp_path / "bar.png", kind="bar", sample_names=["a.png", "b.png"])
    assert _plots._short("a_rather_long_name_of_a_photo.jpg") == "…g_name_of_a_photo.jpg"  # the end tells photos apart
    with pytest.raises(onnxshap.InputError, match="sample_names has 1 entries but the explanation has 2 samples"):
        _plots.image_plot(e, tmp_path / "bad.png", sample_names=["a.png"])


# ----------------------------------------------------------------------------- output labels


def test_explain_accepts_output_labels(mlp: tuple[onnxshap.Explainer, np.ndarray]) -> None:
    explainer, x = mlp
    by_label = explainer.explain(x, output="logits[2]")
    assert by_label.output_names == ["logits[2]"]
    np.testing.assert_array_equal(by_label.values, explainer.explain(x, output=2).values)
    assert explainer.explain(x, output=["logits[0]", 1]).output_names == ["logits[0]", "logits[1]"]
    assert explainer.explain(x, output="predicted").output_names == ["predicted"]
    with pytest.raises(
        onnxshap.InputError,
        match=r"'probs\[1\]' is not a label .* 'logits\[0\]', 'logits\[1\]', "
        r"'logits\[2\]' \(3 in all\)",
    ):
        explainer.explain(x, output="probs[1]")


def test_cli_output_labels_and_the_background_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(3).standard_normal((4, 10)).astype(np.float32))
    common = ["explain", MLP, "--input", tmp_path / "x.npy", "--outputs-from", "probs"]
    code, _, err = run_main(capsys, *common, "--output", "probs[1],0", "-o", tmp_path / "v.npz")
    assert code == 0, err
    assert onnxshap.Explanation.load(tmp_path / "v.npz").output_names == ["probs[1]", "probs[0]"]
    # The samples were their own background: said once, with what to do instead.
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes == [
        (
            "note: no --background: all 4 --input rows are the reference, so each sample is explained against the "
            "others; pass --background FILE with typical data for a fixed reference."
        )
    ]
    code, _, err = run_main(capsys, *common, "--background-size", "2", "--output", "0", "-o", tmp_path / "w.npz")
    assert code == 0 and "note: no --background: 2 of the 4 --input rows (sampled, --seed 0) are" in err
    # A failed run prints its one error line, no note.
    code, _, err = run_main(capsys, *common, "--output", "logits[1]", "-o", tmp_path / "x.npz")
    assert code == 1 and err.startswith("onnxshap explain: error:") and len(err.splitlines()) == 1
    assert "'logits[1]' is not a label of the explained outputs of one sample, which are 'probs[0]'" in err
    assert not (tmp_path / "x.npz").exists()


def test_parse_output_keeps_the_commas_of_a_label() -> None:
    assert cli._parse_output("out[2,4],1,-1") == ["out[2,4]", 1, -1]
    assert cli._parse_output("all") is None and cli._parse_output("predicted") == "predicted"
    with pytest.raises(cli.UsageError, match="a label such as 'probs\\[3\\]'"):
        cli._parse_output("1,,2")


# ----------------------------------------------------------------------------- inspect


def test_inspect_says_what_explain_attributes_to_and_holds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "inspect", MODELS / "seq_transformer_ts.onnx")
    assert code == 0
    roles = out.split("explain without --inputs-from:\n")[1].split("ops (")[0].splitlines()
    assert roles == [
        "  x: ids, explained at their lookup '/tok/Gather_output_0'; values summed per position",
        "  mask: a mask: held at the sample's values",
    ]
    # The Explainer's own choice, which inspect reports.
    explainer = onnxshap.Explainer(MODELS / "seq_transformer_ts.onnx", baseline_token=0)
    assert explainer.held_inputs == ["mask"] and explainer.inputs == ["/tok/Gather_output_0"]
    code, out, _ = run_main(capsys, "inspect", DIGITS)
    assert "explain without --inputs-from:\n  x: explained (a float input)\nops (" in out
    assert "rules as applied when explaining the float inputs" in out


# ----------------------------------------------------------------------------- text figure


def test_text_figure_is_as_wide_as_its_tokens(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the onnxshap[plot] extra)")
    from PIL import Image

    rng = np.random.default_rng(4)
    e = onnxshap.Explanation(
        values=rng.standard_normal((1, 7, 1)),
        base_values=np.zeros((1, 1)),
        data=np.arange(7)[None],
        prediction=np.ones((1, 1)),
        residual=np.zeros((1, 1)),
        input_names=["ids"],
        output_names=["y"],
        output_indices=np.zeros((1, 1), dtype=np.int64),
        all_output_names=["y"],
    )
    e.plot(tmp_path / "short.png", kind="text", tokens=["explanations"] * 7)  # one line, about 7.5 in
    pixels = np.asarray(Image.open(tmp_path / "short.png").convert("L"))
    assert 5 * 100 < pixels.shape[1] < 9 * 100  # wider than the least (5 in), narrower than the wrap width
    inked = np.flatnonzero((pixels < 250).any(axis=0))
    assert inked.max() > pixels.shape[1] - 0.4 * 100  # the tokens reach the right margin
