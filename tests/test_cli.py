"""The `onnxshap` command line on the committed .onnx models (no framework needed).

End-to-end tests run `python -m onnxshap ...` as a subprocess and check exit codes, messages and that
the written files load and sum to the prediction. Error paths and option variants call
`onnxshap.cli.main` in-process (same code, without a Python start-up each). Converting framework
models is tested in tests/test_convert.py.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxshap
from onnxshap import cli
from tests.conftest import REPO
from tests.helpers import run_ort

MODELS = REPO / "models"
DIGITS = MODELS / "torch_cnn_digits_ts.onnx"  # x: float32[batch, 1, 8, 8] -> probs[batch, 10]
DIGITS_SAMPLES = MODELS / "data" / "digits_samples.npy"  # (8, 1, 8, 8) in [0, 1]
DIGITS_BACKGROUND = MODELS / "data" / "digits_background.npy"  # (64, 1, 8, 8)
MLP = MODELS / "torch_mlp_logits_probs_ts.onnx"  # x: float32[batch, 10] -> logits, probs [batch, 3]


def run_cli(*args: Any, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onnxshap", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=600,
    )


def run_main(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_complete(path: Path, rtol: float = 1e-4) -> onnxshap.Explanation:
    """The written file loads, and its values sum to prediction - base_values."""
    e = onnxshap.Explanation.load(path)
    n, k = e.prediction.shape
    total = sum(e.values_for(name).reshape(n, -1, k).sum(axis=1) for name in e.input_names)
    np.testing.assert_allclose(total, e.prediction - e.base_values, rtol=rtol, atol=1e-5)
    return e


def _no_partial_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if "partial" in p.name]


# ----------------------------------------------------------------------------- subprocess end to end


def test_help_shows_an_example_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    top = run_cli("--help")
    assert top.returncode == 0, top.stderr
    for command in ("convert", "inspect", "check", "explain"):
        assert command in top.stdout
        code, out, _ = run_main(capsys, command, "--help")
        assert code == 0
        assert "example" in out and f"onnxshap {command} " in out.split("example")[1]


def test_console_script_is_installed() -> None:
    script = shutil.which("onnxshap", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the onnxshap console script is not installed next to this Python")
    result = subprocess.run([script, "--version"], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"onnxshap {onnxshap.__version__}"


def test_inspect_lists_inputs_outputs_and_rules() -> None:
    result = run_cli("inspect", DIGITS)
    assert result.returncode == 0, result.stderr
    assert "x: float32[batch, 1, 8, 8]" in result.stdout
    assert "probs: float32[batch, 10]" in result.stdout
    for op, rule in (("MaxPool", "max"), ("Conv", "linear"), ("Relu", "rescale"), ("Softmax", "composite")):
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(op + " "))
        assert line.endswith(f"rule: {rule}"), line
    assert "all 6 op types are supported" in result.stdout


def test_check_matches_onnxruntime() -> None:
    result = run_cli("check", DIGITS, "--input", DIGITS_SAMPLES)
    assert result.returncode == 0, result.stderr
    assert "probs: shape [8, 10], max abs difference" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("OK")


def test_explain_writes_complete_values(tmp_path: Path) -> None:
    out = tmp_path / "digits.npz"
    result = run_cli(
        "explain",
        DIGITS,
        "--input",
        DIGITS_SAMPLES,
        "--background",
        DIGITS_BACKGROUND,
        "--output",
        "predicted",
        "-o",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    e = assert_complete(out)
    x = np.load(DIGITS_SAMPLES)
    probs = run_ort(onnx.load(DIGITS), {"x": x})["probs"]
    np.testing.assert_array_equal(e.output_indices[:, 0], probs.argmax(1))
    np.testing.assert_allclose(e.prediction[:, 0], probs.max(1), rtol=1e-5, atol=1e-7)
    base = run_ort(onnx.load(DIGITS), {"x": np.load(DIGITS_BACKGROUND)})["probs"].mean(0)
    np.testing.assert_allclose(e.base_values[:, 0], base[probs.argmax(1)], rtol=1e-4, atol=1e-6)
    assert e.values_for("x").shape == (8, 1, 8, 8, 1)
    _no_partial_files(tmp_path)


# ----------------------------------------------------------------------------- in-process: explain options


def test_explain_from_image_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PNG files in a folder, scaled to 0..1, laid out NCHW from the model's input shape."""
    pil = pytest.importorskip("PIL.Image", reason="image inputs need Pillow (the onnxshap[image] extra)")
    x = np.load(DIGITS_SAMPLES)[:3]
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, img in enumerate(x):
        pil.fromarray(np.round(img[0] * 255).astype(np.uint8), mode="L").save(folder / f"{i}.png")
    out = tmp_path / "values.npz"
    code, _, err = run_main(
        capsys, "explain", DIGITS, "--input", folder, "--background", DIGITS_BACKGROUND, "--output", "3", "-o", out
    )
    assert code == 0, err
    e = assert_complete(out)
    np.testing.assert_allclose(e.data, x, atol=0.5 / 255 + 1e-6)  # 8-bit rounding only
    assert e.output_names == ["probs[3]"]
    _no_partial_files(tmp_path)


def test_explain_batches_match_one_call_and_show_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(4)
    np.save(tmp_path / "x.npy", rng.standard_normal((5, 10)))  # float64 on disk: cast to the model's float32
    np.save(tmp_path / "bg.npy", rng.standard_normal((8, 10)))
    whole, batched = tmp_path / "whole.npz", tmp_path / "batched.npz"
    common = ["explain", MLP, "--input", tmp_path / "x.npy", "--background", tmp_path / "bg.npy"]
    code, _, err = run_main(capsys, *common, "-o", whole)
    assert code == 0, err
    code, out, err = run_main(capsys, *common, "--batch-size", "2", "-o", batched)
    assert code == 0, err
    assert "in 3 batches" in out
    assert err == ""  # stderr is not a terminal and no --progress: no progress bar
    code, out, err = run_main(capsys, *common, "--batch-size", "2", "--progress", "-o", batched)
    assert code == 0, err
    # One tqdm bar over the batches: 2 compile steps on the first (the reference side; the sample side
    # with its one background chunk), then one call per batch.
    states = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert states[0].startswith("explain (compiling):") and states[-1].startswith("explain (done): 100%")
    assert "| 5/5 " in states[-1] and err.endswith("\n")
    a, b = onnxshap.Explanation.load(whole), onnxshap.Explanation.load(batched)
    np.testing.assert_allclose(b.values, a.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.prediction, a.prediction, rtol=1e-6)
    assert b.values.shape[0] == 5  # the padding rows of the last batch are dropped
    assert_complete(batched)


def test_explain_csv_with_header_and_sampled_background(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 10))
    csv = tmp_path / "x.csv"
    header = ",".join(f"f{i}" for i in range(10))
    np.savetxt(csv, x, delimiter=",", header=header, comments="")
    out = tmp_path / "v.npz"
    code, stdout, err = run_main(
        capsys, "explain", MLP, "--input", csv, "--background-size", "5", "--output", "all", "-o", out
    )
    assert code == 0, err
    assert "against 5 background row(s)" in stdout
    e = assert_complete(out)
    np.testing.assert_allclose(e.data, x.astype(np.float32))
    assert e.values.shape == (12, 10, 3)


def test_explain_sub_graph_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    x, bg = rng.standard_normal((4, 10)).astype(np.float32), rng.standard_normal((6, 10)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    np.save(tmp_path / "bg.npy", bg)
    out = tmp_path / "v.npz"
    code, _, err = run_main(
        capsys,
        "explain",
        MLP,
        "--input",
        tmp_path / "x.npz",
        "--background",
        tmp_path / "bg.npy",
        "--outputs-from",
        "logits",
        "--output",
        "2",
        "-o",
        out,
    )
    assert code == 0, err
    e = assert_complete(out)
    want = run_ort(onnx.load(MLP), {"x": x})["logits"][:, 2]
    np.testing.assert_allclose(e.prediction[:, 0], want, rtol=1e-5)
    np.testing.assert_allclose(
        e.base_values[:, 0], run_ort(onnx.load(MLP), {"x": bg})["logits"][:, 2].mean(), rtol=1e-5
    )


def test_progress_bar_redraws_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    np.save(tmp_path / "x.npy", np.random.default_rng(6).standard_normal((3, 10)).astype(np.float32))
    args = [
        "explain",
        str(MLP),
        "--input",
        str(tmp_path / "x.npy"),
        "--background",
        str(tmp_path / "x.npy"),
        "--batch-size",
        "2",
        "-o",
        str(tmp_path / "v.npz"),
    ]
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    assert cli.main(args) == 0  # on a terminal the bar shows without --progress
    text = stream.getvalue()
    # Redrawn in place (carriage returns), one line left at the end: 2 compile steps, 2 batches x 1 call.
    assert text.count("\r") >= 3 and text.endswith("\n") and text.count("\n") == 1
    assert "explain (compiling):" in text and "explain (done): 100%" in text and "| 4/4 " in text
    quiet = io.StringIO()  # not a terminal (a pipe, a log file): nothing without --progress
    monkeypatch.setattr(sys, "stderr", quiet)
    assert cli.main(args) == 0
    assert quiet.getvalue() == ""


def test_explain_intermediate_tensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(7).standard_normal((5, 10)).astype(np.float32))
    out = tmp_path / "v.npz"
    code, _, err = run_main(
        capsys,
        "explain",
        MLP,
        "--input",
        tmp_path / "x.npy",
        "--inputs-from",
        "/body/body.1/Relu_output_0",
        "--outputs-from",
        "logits",
        "-o",
        out,
    )
    assert code == 0, err
    e = assert_complete(out)
    assert e.input_names == ["/body/body.1/Relu_output_0"] and e.values.shape == (5, 32, 3)


def test_explain_token_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Integer ids from a .npy; a text plot (HTML, no matplotlib needed) labelled from a vocabulary file."""
    pytest.importorskip("onnxshap._plots", reason="plots are not part of this installation")
    ids = np.random.default_rng(2).integers(0, 50, (3, 30))  # int64 ids; the model's embedding has more rows
    np.save(tmp_path / "ids.npy", ids)
    (tmp_path / "vocab.txt").write_text("\n".join(f"word{i}" for i in range(50)) + "\n")
    out, html = tmp_path / "v.npz", tmp_path / "v.html"
    code, _, err = run_main(
        capsys,
        "explain",
        MODELS / "seq_text_cnn_ts.onnx",
        "--input",
        tmp_path / "ids.npy",
        "--plot",
        html,
        "--plot-kind",
        "text",
        "--vocab",
        tmp_path / "vocab.txt",
        "-o",
        out,
    )
    assert code == 0, err
    e = assert_complete(out)
    assert e.values_for(e.input_names[0]).shape == (3, 30, 2)  # per token, per logit
    text = html.read_text()
    assert f"word{ids[0, 0]}" in text and f"word{ids[2, 29]}" in text


def _plots_available() -> None:
    pytest.importorskip("onnxshap._plots", reason="plots are not part of this installation")
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the onnxshap[plot] extra)")


def test_explain_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _plots_available()
    rng = np.random.default_rng(5)
    np.savetxt(
        tmp_path / "x.csv",
        rng.standard_normal((6, 10)),
        delimiter=",",
        header=",".join(f"feature_{i}" for i in range(10)),
        comments="",
    )
    out, png = tmp_path / "v.npz", tmp_path / "v.png"
    code, stdout, err = run_main(
        capsys,
        "explain",
        MLP,
        "--input",
        tmp_path / "x.csv",
        "--output",
        "predicted",
        "--plot",
        png,
        "--plot-kind",
        "bar",
        "-o",
        out,
    )
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in stdout
    assert_complete(out)
    _no_partial_files(tmp_path)


def test_failed_plot_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output files are written whole or not at all: a plot error leaves no .npz and no partial files."""
    _plots_available()
    from onnxshap import _plots

    np.save(tmp_path / "x.npy", np.random.default_rng(6).standard_normal((3, 10)))
    out = tmp_path / "v.npz"
    args = ["explain", MLP, "--input", tmp_path / "x.npy", "--output", "0", "-o", out]
    # A file type no plot can write is refused before the explain pass.
    code, _, err = run_main(capsys, *args, "--plot", tmp_path / "plot.txt")
    assert code == 2 and "Cannot write a plot to" in err
    # A plot that fails while drawing, after the values are computed.
    drawn: list[Path] = []

    def failing_plot(e: object, path: Path, **kwargs: object) -> None:
        path.write_bytes(b"half a png")
        drawn.append(path)
        raise onnxshap.InputError("drawing failed")

    monkeypatch.setattr(_plots, "plot", failing_plot)
    code, _, err = run_main(capsys, *args, "--plot", tmp_path / "plot.png")
    assert code == 1 and drawn
    assert err.startswith("onnxshap explain: error: drawing failed") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


# ----------------------------------------------------------------------------- in-process: errors and exit codes


def _unsupported_model(path: Path) -> Path:
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, path)
    return path


def test_inspect_unsupported_ops_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "inspect", _unsupported_model(tmp_path / "m.onnx"))
    assert code == 1
    assert "com.example::Frobnicate" in out and "rule: UNSUPPORTED" in out
    assert "unsupported:" in out and "Frobnicate" in out.split("unsupported:")[1]
    assert "cannot explain" in err


def test_inspect_tensors_and_token_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "inspect", MLP, "--tensors")
    assert code == 0
    assert "logits: float32[batch, 3]  <- Gemm node" in out
    assert "Gemm                         x3    rule: linear (bilinear; one operand is constant)" in out
    code, out, _ = run_main(capsys, "inspect", MODELS / "seq_text_cnn_ts.onnx")
    assert code == 0
    assert "token ids: integer inputs feed the embedding lookup(s) /emb/Gather_output_0" in out


def test_check_zipmap_and_random_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "check", MODELS / "sklearn_mlp_zipmap.onnx")
    assert code == 0, err
    assert "inputs from random input" in out
    assert "output_probability: shape [2, 3], max abs difference" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", DIGITS, "--input", "missing.npy", "-o", "v.npz"], "input file 'missing.npy' does not exist"),
        (["explain", DIGITS, "--input", DIGITS_SAMPLES, "--output", "1,", "-o", "v.npz"], "--output '1,'"),
        (
            ["explain", DIGITS, "--input", DIGITS_SAMPLES, "-o", "no/such/dir/v.npz"],
            "folder 'no/such/dir' does not exist",
        ),
        (["explain", DIGITS, "--input", DIGITS_SAMPLES, "--batch-size", "0", "-o", "v.npz"], "--batch-size"),
        (["explain", DIGITS, "--input", "x.txt", "-o", "v.npz"], "does not exist"),
        (["inspect", MODELS / "frameworks" / "keras_mlp.keras"], "Convert it first: onnxshap convert"),
        (["inspect", "nope.onnx"], "model file 'nope.onnx' does not exist"),
        (["explain", DIGITS, "-o", "v.npz"], "the following arguments are required: --input"),
        (
            ["explain", MODELS / "seq_transformer_ts.onnx", "--input", DIGITS_SAMPLES, "-o", "v.npz"],
            "pass an .npz file with one array per input name, e.g. np.savez('x.npz', x=..., mask=...)",
        ),
        (["explain", DIGITS, "--input", DIGITS_SAMPLES, "-o", "v.npz", "--rule", "MaxPool"], "expected OP=RULE"),
        (["frobnicate"], "invalid choice"),
        ([], "usage: onnxshap"),
    ],
)
def test_usage_errors_exit_2(
    args: list[Any], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_main(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_wrong_file_type_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.txt").write_text("1,2,3")
    code, _, err = run_main(capsys, "explain", DIGITS, "--input", tmp_path / "x.txt", "-o", tmp_path / "v.npz")
    assert code == 2 and "use .npy, .npz" in err


def _bad_inputs(tmp_path: Path) -> list[tuple[list[Any], str]]:
    np.save(tmp_path / "wrong_shape.npy", np.zeros((2, 3, 8, 8), np.float32))
    np.save(tmp_path / "nan.npy", np.full((2, 1, 8, 8), np.nan, np.float32))
    (tmp_path / "corrupt.onnx").write_bytes(b"not a model at all")
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    return [
        (["explain", DIGITS, "--input", tmp_path / "wrong_shape.npy"], "Input 'x' has shape [2, 3, 8, 8]"),
        (["explain", DIGITS, "--input", tmp_path / "nan.npy"], "NaN"),
        (["explain", tmp_path / "corrupt.onnx", "--input", DIGITS_SAMPLES], "not a valid ONNX model"),
        (["explain", DIGITS, "--input", tmp_path / "broken.npy"], "Cannot read input file"),
        (
            ["explain", DIGITS, "--input", DIGITS_SAMPLES, "--outputs-from", "nope"],
            "Output tensor 'nope' does not exist",
        ),
        (["explain", DIGITS, "--input", DIGITS_SAMPLES, "--output", "10"], "out of range"),
        (["check", tmp_path / "corrupt.onnx"], "not a valid ONNX model"),
    ]


def test_user_errors_exit_1_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in _bad_inputs(tmp_path):
        if args[0] == "explain":
            args = [*args, "-o", tmp_path / "v.npz"]
        code, _, err = run_main(capsys, *args)
        assert code == 1, (args, err)
        assert err.startswith(f"onnxshap {args[0]}: error:"), err
        assert message in err, err
        assert "Traceback" not in err
        assert not (tmp_path / "v.npz").exists()


def test_internal_errors_are_one_line_unless_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise KeyError("something internal")

    monkeypatch.setattr(onnxshap, "Explainer", boom)
    code, _, err = run_main(capsys, "explain", DIGITS, "--input", DIGITS_SAMPLES, "-o", "unused.npz")
    assert code == 1
    assert "internal error: KeyError" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(KeyError):
        cli.main(["explain", str(DIGITS), "--input", str(DIGITS_SAMPLES), "-o", "unused.npz", "--debug"])


def _read_images(model_path: Path, files: list[Path], *options: str) -> Any:
    """Images as the CLI reads them for a model (no attribution pass, so no compile)."""
    args = cli.build_parser().parse_args(["check", str(model_path), "--input", *map(str, files), *options])
    return cli._load_inputs(args.input, onnxshap.load(model_path), args, "input")


def test_image_reading_follows_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Resize to the model's H x W, channels and layout from its input shape, scale, mean/std; errors."""
    pil = pytest.importorskip("PIL.Image", reason="image inputs need Pillow (the onnxshap[image] extra)")
    rng = np.random.default_rng(3)
    files = [tmp_path / f"{i}.jpg" for i in range(2)]
    for f in files:
        pil.fromarray(rng.integers(0, 256, (40, 48, 3)).astype(np.uint8), mode="RGB").save(f, quality=95)
    with pil.open(files[0]) as im:
        rgb = np.asarray(im.resize((32, 32), pil.Resampling.BILINEAR), np.float32)
        gray = np.asarray(im.convert("L").resize((8, 8), pil.Resampling.BILINEAR), np.float32)

    cifar = MODELS / "torch_cnn_cifar_ts.onnx"  # x: float32[batch, 3, 32, 32]
    loaded = _read_images(cifar, files, "--mean", "0.5", "--std", "0.25")
    assert loaded.layout == "NCHW" and loaded.data.shape == (2, 3, 32, 32) and loaded.data.dtype == np.float32
    np.testing.assert_allclose(loaded.data[0], (rgb.transpose(2, 0, 1) / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-5)
    raw = _read_images(cifar, files[:1], "--scale", "0-255").data
    np.testing.assert_allclose(raw[0], rgb.transpose(2, 0, 1), atol=1e-4)

    keras_cnn = MODELS / "keras_cnn.onnx"  # x: float32[?, 8, 8, 1]: one channel, NHWC
    loaded = _read_images(keras_cnn, [tmp_path])  # a folder: its image files in name order
    assert loaded.layout == "NHWC" and loaded.data.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(loaded.data[0, :, :, 0], gray / 255, atol=1e-6)
    assert _read_images(keras_cnn, files, "--image-size", "4", "6", "--layout", "NHWC").data.shape == (2, 4, 6, 1)

    out = tmp_path / "v.npz"
    for args, message in [
        ([cifar, "--input", files[0], "--mean", "1", "2"], "--mean takes 1 or 3 values"),
        ([MODELS / "seq_transformer_ts.onnx", "--input", files[0]], "Images can feed a model with one float input"),
        ([MODELS / "torch_mlp_ts.onnx", "--input", files[0]], "Images need a model input of rank 4"),
        ([cifar, "--input", tmp_path / "empty"], "does not exist"),
    ]:
        code, _, err = run_main(capsys, "explain", *args, "-o", out)
        assert code == 2, err
        assert message in err
    (tmp_path / "not_an_image.png").write_bytes(b"nope")
    code, _, err = run_main(capsys, "check", cifar, "--input", tmp_path / "not_an_image.png")
    assert code == 1 and "Cannot read image" in err
    assert not out.exists()


def test_explain_under_a_full_disk_leaves_no_partial_file(tmp_path: Path) -> None:
    import shlex

    out = tmp_path / "out.npz"
    # `ulimit -f 4`: writes past 4 KiB fail with EFBIG (Python ignores SIGXFSZ); set in a shell, since
    # forking this process (JAX is loaded, multithreaded) would not be safe.
    command = " ".join(
        shlex.quote(str(a))
        for a in [
            sys.executable,
            "-m",
            "onnxshap",
            "explain",
            DIGITS,
            "--input",
            DIGITS_SAMPLES,
            "--background",
            DIGITS_BACKGROUND,
            "-o",
            out,
        ]
    )
    done = subprocess.run(
        ["bash", "-c", f"ulimit -f 4; exec {command}"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr
    assert "File too large" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
