"""explain_dataset with the local engine (no Ray): parquet and .npy/.npz sources, the block plan,
the manifest, resume after an interrupt, refusals before any work, and `onnxshap explain` over a
dataset. The Ray engine is tested in tests/test_dataset_ray.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import onnxshap
from onnxshap import cli
from onnxshap._dataset import _blocks
from tests.conftest import REPO

pa = pytest.importorskip("pyarrow", reason="parquet datasets need pyarrow: pip install 'onnxshap[ray]'")
pq = pytest.importorskip("pyarrow.parquet", reason="parquet datasets need pyarrow: pip install 'onnxshap[ray]'")

MLP = REPO / "models" / "torch_mlp_ts.onnx"  # x: float32[batch, 10] -> probs [batch, 3]
CNN = REPO / "models" / "torch_cnn_digits_ts.onnx"  # x: float32[batch, 1, 8, 8] -> probs [batch, 10]
ROWS, FEATURES, BATCH, BLOCK = 30, 10, 4, 8
FEATURE_NAMES = [f"f{i}" for i in range(FEATURES)]


def rel_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-6) -> None:
    """Equal to `rtol` relative to the largest magnitude of `want` (values near 0 carry no digits of their own)."""
    scale = max(float(np.max(np.abs(want))), 1e-30)
    assert got.shape == want.shape
    assert float(np.max(np.abs(got - want))) <= rtol * scale, float(np.max(np.abs(got - want))) / scale


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return {
        "x": rng.normal(size=(ROWS, FEATURES)).astype(np.float32),
        "bg": rng.normal(size=(6, FEATURES)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def reference(data: dict[str, Any]) -> onnxshap.Explanation:
    """A plain Explainer.explain over every row at once."""
    return onnxshap.Explainer(MLP, data["bg"]).explain(data["x"])


@pytest.fixture(scope="module")
def parquet_file(data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature columns f0..f9 plus an id column, in row groups that do not line up with the blocks."""
    path = tmp_path_factory.mktemp("source") / "rows.parquet"
    columns = {name: data["x"][:, i] for i, name in enumerate(FEATURE_NAMES)}
    pq.write_table(pa.table({"id": np.arange(ROWS) * 10 + 3, **columns}), path, row_group_size=7)
    return path


@pytest.fixture(scope="module")
def written(data: dict[str, Any], parquet_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One local run over the parquet file, shared by the checks of its output."""
    before = digest(parquet_file)
    out = tmp_path_factory.mktemp("run") / "out"
    result = onnxshap.explain_dataset(
        MLP, data["bg"], parquet_file, out, batch_size=BATCH, block_size=BLOCK, keep=["id"]
    )
    assert digest(parquet_file) == before  # the source is read, never written
    return result


def test_values_equal_a_plain_explain(written: Any, reference: onnxshap.Explanation) -> None:
    e = written.explanation()
    for field in ("values", "base_values", "prediction", "residual"):
        rel_close(getattr(e, field), getattr(reference, field))
    assert e.output_names == reference.output_names
    assert written.rows == ROWS and written.rows_written == ROWS and written.skipped == 0
    assert 0 <= written.max_relative_residual < 1e-4  # float32's completeness tolerance


def test_blocks_cover_each_row_once_and_keep_the_id_column(written: Any) -> None:
    blocks = _blocks.plan(ROWS, BLOCK)
    assert [b.start for b in blocks] == list(range(0, ROWS, BLOCK))
    assert blocks[-1].stop == ROWS and all(b.stop - b.start <= BLOCK for b in blocks)
    names = sorted(p.name for p in written.output_dir.iterdir())
    assert names == [_blocks.MANIFEST] + [_blocks.part_name(b.index) for b in blocks]  # no partial file
    for block in blocks:
        table = pq.read_table(written.output_dir / _blocks.part_name(block.index))
        rows = table.column("row").to_numpy()
        np.testing.assert_array_equal(rows, np.arange(block.start, block.stop))
        np.testing.assert_array_equal(table.column("id").to_numpy(), rows * 10 + 3)
    ids = _blocks.row_ids(written.output_dir)
    assert sorted(ids.tolist()) == list(range(ROWS))


def test_rows_by_id(written: Any, reference: onnxshap.Explanation) -> None:
    picked = written.explanation(rows=[17, 2])
    rel_close(picked.values, reference.values[[17, 2]])
    with pytest.raises(onnxshap.InputError, match=r"\[99\]"):
        written.explanation(rows=[99])


def test_load_opens_a_results_folder(written: Any, tmp_path: Path) -> None:
    loaded = onnxshap.DatasetResult.load(written.output_dir)
    assert (loaded.rows, loaded.blocks, loaded.skipped, loaded.written) == (ROWS, written.blocks, written.blocks, 0)
    assert loaded.max_relative_residual == written.max_relative_residual
    with pytest.raises(onnxshap.InputError, match="not the results folder"):
        onnxshap.DatasetResult.load(tmp_path)


def test_the_manifest_records_what_determines_the_values(written: Any) -> None:
    found = json.loads((written.output_dir / _blocks.MANIFEST).read_text())
    assert found["model_sha256"] == hashlib.sha256(MLP.read_bytes()).hexdigest()
    assert found["batch_size"] == BATCH and found["block_size"] == BLOCK
    assert found["source"]["rows"] == ROWS and found["source"]["columns"] == {"x": FEATURE_NAMES}
    assert found["source"]["dtypes"] == {"x": "float32"}


def test_a_rerun_with_the_same_arguments_writes_nothing(written: Any, data: dict[str, Any], parquet_file: Path) -> None:
    stamps = {p.name: p.stat().st_mtime_ns for p in written.output_dir.iterdir()}
    again = onnxshap.explain_dataset(
        MLP, data["bg"], parquet_file, written.output_dir, batch_size=BATCH, block_size=BLOCK, keep=["id"]
    )
    assert again.written == 0 and again.skipped == again.blocks
    assert {p.name: p.stat().st_mtime_ns for p in written.output_dir.iterdir()} == stamps


def test_other_arguments_are_refused_then_overwritten(
    written: Any, data: dict[str, Any], parquet_file: Path, tmp_path: Path, reference: onnxshap.Explanation
) -> None:
    out = tmp_path / "out"
    args: dict[str, Any] = dict(batch_size=BATCH, block_size=BLOCK, keep=["id"])
    onnxshap.explain_dataset(MLP, data["bg"], parquet_file, out, output=0, **args)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(onnxshap.OutputError, match=r"differ in: output\b.*overwrite=True \(--overwrite\)"):
        onnxshap.explain_dataset(MLP, data["bg"], parquet_file, out, output=2, **args)
    with pytest.raises(onnxshap.OutputError, match="background_sha256"):
        onnxshap.explain_dataset(MLP, data["bg"][:3], parquet_file, out, output=0, **args)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # refused: nothing touched
    result = onnxshap.explain_dataset(MLP, data["bg"], parquet_file, out, output=2, overwrite=True, **args)
    assert result.written == result.blocks
    rel_close(result.explanation().values, reference.values[..., 2:3])


def test_an_interrupted_run_resumes_where_it_stopped(
    data: dict[str, Any], parquet_file: Path, tmp_path: Path, reference: onnxshap.Explanation
) -> None:
    out = tmp_path / "out"
    seen: list[int] = []

    def stop_after_two_blocks(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 3:  # the first call reports the start, then one call per block
            raise KeyboardInterrupt

    args: dict[str, Any] = dict(batch_size=BATCH, block_size=BLOCK, keep=["id"])
    with pytest.raises(KeyboardInterrupt):
        onnxshap.explain_dataset(MLP, data["bg"], parquet_file, out, progress=stop_after_two_blocks, **args)
    first = sorted(p.name for p in out.iterdir())
    assert first == [_blocks.MANIFEST, _blocks.part_name(0), _blocks.part_name(1)]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    resumed = onnxshap.explain_dataset(MLP, data["bg"], parquet_file, out, **args)
    assert (resumed.skipped, resumed.written) == (2, resumed.blocks - 2)
    assert resumed.rows_written == ROWS - 2 * BLOCK
    assert all(stamps[name] == (out / name).stat().st_mtime_ns for name in first)  # the first blocks stay as written
    ids = _blocks.row_ids(out)
    assert len(ids) == ROWS and sorted(ids.tolist()) == list(range(ROWS))
    rel_close(resumed.explanation().values, reference.values)


def test_npy_and_npz_shards(data: dict[str, Any], tmp_path: Path, reference: onnxshap.Explanation) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "a.npy", data["x"][:11].astype(np.float64))  # cast to the declared float32
    np.save(shards / "b.npy", data["x"][11:])
    npz = [tmp_path / "a.npz", tmp_path / "b.npz"]
    np.savez(npz[0], x=data["x"][:20])
    np.savez(npz[1], x=data["x"][20:])
    for source, out in ((shards, tmp_path / "out_npy"), (npz, tmp_path / "out_npz")):
        result = onnxshap.explain_dataset(MLP, data["bg"], source, out, batch_size=BATCH, block_size=BLOCK)
        assert result.rows == len(data["x"])
        assert sorted(_blocks.row_ids(out).tolist()) == list(range(len(data["x"])))  # shards read in name order, once
        got = result.explanation()
        assert got.values.dtype == np.float32  # the float64 shard was cast to the declared float32
        rel_close(got.values, reference.values)


def test_a_list_column_feeds_an_image_input(tmp_path: Path) -> None:
    images = np.load(REPO / "models" / "data" / "digits_samples.npy")[:5]
    bg = np.load(REPO / "models" / "data" / "digits_background.npy")[:4]
    path = tmp_path / "images.parquet"
    flat = pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 64)
    pq.write_table(pa.table({"pixels": flat, "name": [f"img{i}" for i in range(5)]}), path)
    result = onnxshap.explain_dataset(
        CNN, bg, path, tmp_path / "out", output="predicted", columns={"x": "pixels"}, keep=["name"], batch_size=2
    )
    want = onnxshap.Explainer(CNN, bg).explain(images, output="predicted")
    got = result.explanation()
    rel_close(got.values, want.values)
    np.testing.assert_array_equal(got.output_indices, want.output_indices)
    assert pq.read_table(tmp_path / "out" / _blocks.part_name(0)).column("name").to_pylist()[1] == "img1"


# ----------------------------------------------------------------------------- refusals before any work


def _table(columns: dict[str, Any], path: Path) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(
    ("columns", "options", "message"),
    [
        ({f"f{i}": np.zeros(4, np.float32) for i in range(9)}, {}, r"'x' takes float32\[10\] per row.*9 column"),
        ({"x": pa.array([[0.0] * 9] * 4, pa.list_(pa.float32(), 9))}, {}, r"'x'.*9 values.*float32\[10\]"),
        ({"x": pa.array([[0.0] * 10, [0.0] * 9], pa.list_(pa.float32()))}, {}, r"Column 'x'.*list of 10 numbers"),
        ({"label": ["a", "b"], **{f"f{i}": np.zeros(2) for i in range(9)}}, {"columns": {"x": ["label"]}}, "label"),
        ({f"f{i}": np.zeros(2) for i in range(10)}, {"columns": {"x": ["f0", "nope"]}}, r"Column 'nope'.*not in"),
        ({f"f{i}": np.zeros(2) for i in range(10)}, {"columns": {"y": "f0"}}, r"columns= names \['y'\]"),
        ({f"f{i}": np.zeros(2) for i in range(10)}, {"keep": ["id"]}, r"keep= names column 'id'"),
        ({f"f{i}": np.zeros(2) for i in range(10)}, {"keep": ["row"]}, r"keep= column 'row'"),
        ({f"f{i}": pa.array([1.0, None]) for i in range(10)}, {}, r"Column 'f0' has 1 missing value"),
    ],
    ids=[
        "feature-count",
        "list-size",
        "list-lengths",
        "strings",
        "missing",
        "unknown-input",
        "keep",
        "reserved",
        "null",
    ],
)
def test_columns_that_do_not_fit_are_refused_before_anything_is_written(
    columns: dict[str, Any], options: dict[str, Any], message: str, data: dict[str, Any], tmp_path: Path
) -> None:
    source = _table(columns, tmp_path / "bad.parquet")
    out = tmp_path / "out"
    with pytest.raises(onnxshap.InputError, match=message):
        onnxshap.explain_dataset(MLP, data["bg"], source, out, **options)
    assert not out.exists()


def test_shards_that_do_not_fit_are_refused(data: dict[str, Any], tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", data["x"][:5])
    np.save(tmp_path / "b.npy", data["x"][:5, :9])
    with pytest.raises(onnxshap.InputError, match=r"shape \[9\], and those of the first shard \[10\]"):
        onnxshap.explain_dataset(MLP, data["bg"], [tmp_path / "a.npy", tmp_path / "b.npy"], tmp_path / "out")
    np.save(tmp_path / "c.npy", np.array(["a"] * 20).reshape(2, 10))
    with pytest.raises(onnxshap.InputError, match=r"given as <U1; the model declares x: float32"):
        onnxshap.explain_dataset(MLP, data["bg"], tmp_path / "c.npy", tmp_path / "out")
    np.savez(tmp_path / "d.npz", y=data["x"][:5], z=data["x"][:5])
    with pytest.raises(onnxshap.InputError, match=r"no array for input x: float32.*\['y', 'z'\]"):
        onnxshap.explain_dataset(MLP, data["bg"], tmp_path / "d.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_folder_holding_other_files_is_refused(data: dict[str, Any], parquet_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(onnxshap.OutputError, match=r"notes\.txt.*new or empty folder"):
            onnxshap.explain_dataset(MLP, data["bg"], parquet_file, out, keep=["id"], overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bad_arguments(data: dict[str, Any], parquet_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for options, message in [
        ({"engine": "spark"}, "engine must be"),
        ({"workers": 2}, "engine='ray'"),
        ({"block_size": 0}, "block_size must be a whole number"),
        ({"batch_size": 2.5}, "batch_size must be a whole number"),
    ]:
        with pytest.raises(onnxshap.InputError, match=message):
            onnxshap.explain_dataset(MLP, data["bg"], parquet_file, out, keep=["id"], **options)
    with pytest.raises(onnxshap.InputError, match="does not exist"):
        onnxshap.explain_dataset(MLP, data["bg"], tmp_path / "missing.parquet", out)
    assert not out.exists()


def test_a_failing_block_names_its_rows_and_keeps_the_blocks_before(data: dict[str, Any], tmp_path: Path) -> None:
    x = data["x"].copy()
    x[19, 3] = np.nan  # block 2 (rows 16..23), its row 3
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    with pytest.raises(onnxshap.InputError, match=r"Block 2 \(rows 16\.\.23 of the dataset\).*NaN"):
        onnxshap.explain_dataset(MLP, data["bg"], tmp_path / "x.npy", out, batch_size=BATCH, block_size=BLOCK)
    assert sorted(p.name for p in out.iterdir()) == [_blocks.MANIFEST, _blocks.part_name(0), _blocks.part_name(1)]


# ----------------------------------------------------------------------------- the command line


def run_main(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_explains_a_parquet_dataset_and_resumes(
    data: dict[str, Any], parquet_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bg = tmp_path / "bg.npy"
    np.save(bg, data["bg"])
    out = tmp_path / "out"
    common = ["explain", MLP, "--input", parquet_file, "--background", bg, "--batch-size", BATCH, "--keep", "id"]
    code, stdout, err = run_main(capsys, *common, "--block-size", BLOCK, "-o", out)
    assert code == 0, err
    assert "explained 30 row(s) in 4 block(s) (4 written now, 0 already there) with engine local" in stdout
    assert "rows/s" in stdout and "completeness:" in stdout
    loaded = onnxshap.DatasetResult.load(out)
    assert (loaded.rows, loaded.blocks, loaded.skipped) == (ROWS, 4, 4)
    rel_close(loaded.explanation().values, onnxshap.Explainer(MLP, data["bg"]).explain(data["x"]).values)
    code, stdout, _ = run_main(capsys, *common, "--block-size", BLOCK, "-o", out)
    assert code == 0 and "(0 written now, 4 already there)" in stdout
    code, _, err = run_main(capsys, *common, "--block-size", 5, "-o", out)
    assert code == 1 and "differ in: block_size, blocks" in err and "--overwrite" in err and "Traceback" not in err
    code, stdout, err = run_main(capsys, *common, "--block-size", 5, "--overwrite", "-o", out)
    assert code == 0 and "in 6 block(s) (6 written now" in stdout


def test_cli_refusals(
    data: dict[str, Any], parquet_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bg = tmp_path / "bg.npy"
    np.save(bg, data["bg"])
    out = tmp_path / "out"
    base = ["explain", MLP, "--input", parquet_file, "--keep", "id", "-o", out]
    for extra, code_wanted, message in [
        ([], 2, "needs --background"),
        (["--background", bg, "--workers", "2"], 2, "--workers 2 needs --engine ray"),
        (["--background", bg, "--plot", tmp_path / "p.png"], 2, "--plot does not apply to a dataset run"),
        (["--background", bg, "--column", "x=f0,f1"], 1, r"2 column\(s\) feed it"),
        (["--background", bg, "--column", "x="], 2, "use INPUT=COLUMN"),
    ]:
        code, _, err = run_main(capsys, *base, *extra)
        assert code == code_wanted and message.replace("\\", "") in err.replace("\\", ""), err
        assert "Traceback" not in err
    assert not out.exists()


def test_cli_ctrl_c_keeps_the_written_blocks(
    data: dict[str, Any], parquet_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    bg = tmp_path / "bg.npy"
    np.save(bg, data["bg"])
    out = tmp_path / "out"
    real = _blocks.BlockExplainer.__call__

    def interrupted_after_one(self: Any, block: Any) -> Any:
        if block.index == 1:
            raise KeyboardInterrupt
        return real(self, block)

    monkeypatch.setattr(_blocks.BlockExplainer, "__call__", interrupted_after_one)
    args = ["explain", MLP, "--input", parquet_file, "--background", bg, "--engine", "local", "--keep", "id"]
    args += ["--block-size", BLOCK]
    code, _, err = run_main(capsys, *args, "-o", out)
    assert code == 130
    assert f"interrupted; the blocks written before it are in {out}; rerun the same command to resume" in err
    assert sorted(p.name for p in out.iterdir()) == [_blocks.MANIFEST, _blocks.part_name(0)]
    monkeypatch.setattr(_blocks.BlockExplainer, "__call__", real)
    code, stdout, _ = run_main(capsys, *args, "-o", out)
    assert code == 0 and "(3 written now, 1 already there)" in stdout
    assert sorted(_blocks.row_ids(out).tolist()) == list(range(ROWS))
