"""explain_dataset with engine="ray" on a two-node local Ray cluster (ray.cluster_utils.Cluster, one
CPU per node, started once for the module and shut down at its end): the values equal the local
engine's and a plain Explainer's, blocks spread over both nodes (the multi-node path), a worker
killed mid-run is retried by Ray with every row written once, a worker that cannot import onnxshap
is a clear error, and bad input fails before any worker starts."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import onnxshap
from onnxshap import cli
from onnxshap._dataset import _blocks, _ray
from tests.conftest import REPO
from tests.test_dataset import rel_close

ray = pytest.importorskip("ray", reason="the Ray engine needs Ray: pip install 'onnxshap[ray]'")
pytest.importorskip("ray.data", reason="the Ray engine runs on Ray Data: pip install 'onnxshap[ray]'")
pa = pytest.importorskip("pyarrow", reason="parquet datasets need pyarrow: pip install 'onnxshap[ray]'")
pq = pytest.importorskip("pyarrow.parquet", reason="parquet datasets need pyarrow: pip install 'onnxshap[ray]'")

MLP = REPO / "models" / "torch_mlp_ts.onnx"  # x: float32[batch, 10] -> probs [batch, 3]
ROWS, FEATURES, BATCH, BLOCK = 48, 10, 4, 6
#: Small object stores: the blocks travel as (index, start, stop) only; rows are read by the actors.
OBJECT_STORE_BYTES = 80 * 1024**2

pytestmark = pytest.mark.filterwarnings(
    # Ray Data's DataContext warns about its own deprecated settings when a run reads it; onnxshap sets none.
    "ignore::DeprecationWarning:ray",
    # Starting the cluster's node processes forks this process, where earlier tests started JAX's threads;
    # the children exec Ray's binaries at once, so JAX's at-fork warning about deadlocks does not apply.
    r"ignore:os\.fork\(\) was called:RuntimeWarning",
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node and a second node, one CPU each: two workers land on two nodes."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False},
    )
    nodes.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
    ray.init(address=nodes.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    bg = rng.normal(size=(5, FEATURES)).astype(np.float32)
    source = tmp_path_factory.mktemp("source") / "rows.parquet"
    pq.write_table(pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), FEATURES)}), source)
    return {"x": x, "bg": bg, "source": source, "reference": onnxshap.Explainer(MLP, bg).explain(x)}


def test_ray_equals_local_and_a_plain_explain_on_two_nodes(cluster: Any, data: dict[str, Any], tmp_path: Path) -> None:
    args = dict(batch_size=BATCH, block_size=BLOCK)
    on_ray = onnxshap.explain_dataset(
        MLP, data["bg"], data["source"], tmp_path / "ray", engine="ray", workers=2, **args
    )
    local = onnxshap.explain_dataset(MLP, data["bg"], data["source"], tmp_path / "local", **args)
    reference = data["reference"]
    for field in ("values", "base_values", "prediction", "residual"):
        rel_close(getattr(on_ray.explanation(), field), getattr(reference, field))
        rel_close(getattr(on_ray.explanation(), field), getattr(local.explanation(), field))
    # The same files: block by block, row for row.
    for block in _blocks.plan(ROWS, BLOCK):
        a = pq.read_table(tmp_path / "ray" / _blocks.part_name(block.index))
        b = pq.read_table(tmp_path / "local" / _blocks.part_name(block.index))
        assert a.schema == b.schema and a.column("row").equals(b.column("row"))
    assert on_ray.written == on_ray.blocks and on_ray.rows_written == ROWS
    nodes = {label.rsplit("@", 1)[1] for label in on_ray.worker_blocks}
    assert len(nodes) == 2, on_ray.worker_blocks  # each node's actor wrote blocks


def _actor_pids() -> list[int]:
    """Processes of this cluster's Ray Data actors running RayBlockWorker (found by their process title)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if title.startswith(b"ray::") and b"MapWorker" in title:
            pids.append(int(entry))
    return pids


def test_killed_workers_are_restarted_and_every_row_is_written_once(
    cluster: Any, data: dict[str, Any], tmp_path: Path
) -> None:
    killed: list[int] = []

    def kill_the_workers(done: int, total: int) -> None:
        if done and not killed:  # after the first block, with the others still to do
            killed.extend(_actor_pids())
            assert killed, "no Ray Data actor process found"
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    out = tmp_path / "out"
    result = onnxshap.explain_dataset(
        MLP,
        data["bg"],
        data["source"],
        out,
        engine="ray",
        workers=2,
        batch_size=BATCH,
        block_size=2,  # 24 blocks: most of them still to do when the workers die
        progress=kill_the_workers,
    )
    # Every actor died after the first block: the other blocks were retried by restarted actors (new processes).
    assert killed
    after = {label for label in result.worker_blocks if int(label.split("@")[0].split(":")[1]) not in killed}
    assert sum(result.worker_blocks[label] for label in after) >= result.blocks // 2, result.worker_blocks
    ids = _blocks.row_ids(out)
    assert len(ids) == ROWS and sorted(ids.tolist()) == list(range(ROWS))
    assert not list(out.glob(".*"))  # no partial file left
    rel_close(result.explanation().values, data["reference"].values)


def test_a_worker_that_cannot_import_onnxshap_is_a_clear_error(
    cluster: Any, data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe imports WORKER_MODULE on every node; a module no node has stands for a broken environment.
    monkeypatch.setattr(_ray, "WORKER_MODULE", "onnxshap_not_installed_here")
    monkeypatch.setattr(_ray, "WORKER_START_TIMEOUT_S", 60.0)
    started = time.monotonic()
    with pytest.raises(
        onnxshap.MissingDependencyError, match=r"cannot import onnxshap_not_installed_here.*onnxshap\[ray\]"
    ):
        onnxshap.explain_dataset(MLP, data["bg"], data["source"], tmp_path / "out", engine="ray", workers=2)
    assert time.monotonic() - started < 60
    assert not _blocks.part_files(tmp_path / "out")


def test_bad_input_fails_before_any_worker_starts(cluster: Any, data: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(18, np.float32)), 9)}), source)
    before = set(_actor_pids())
    with pytest.raises(onnxshap.InputError, match=r"Column 'x' holds lists of 9 values; input 'x' takes float32\[10\]"):
        onnxshap.explain_dataset(MLP, data["bg"], source, tmp_path / "out", engine="ray", workers=2)
    assert not (tmp_path / "out").exists() and set(_actor_pids()) <= before


def test_cli_on_ray(cluster: Any, data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bg = tmp_path / "bg.npy"
    np.save(bg, data["bg"])
    out = tmp_path / "out"
    args = ["explain", MLP, "--input", data["source"], "--background", bg, "--engine", "ray", "--workers", "2"]
    code = cli.main([str(a) for a in [*args, "--block-size", 16, "-o", out]])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert (
        f"explained {ROWS} row(s) in 3 block(s) (3 written now, 0 already there) with engine ray, 2 worker(s)" in stdout
    )
    rel_close(onnxshap.DatasetResult.load(out).explanation().values, data["reference"].values)


def test_a_ray_dataset_is_written_once_then_explained(cluster: Any, data: dict[str, Any], tmp_path: Path) -> None:
    dataset = ray.data.from_items([{"id": i, "features": data["x"][i]} for i in range(ROWS)])
    out = tmp_path / "out"
    args: dict[str, Any] = dict(columns={"x": "features"}, keep=["id"], batch_size=BATCH, block_size=16)
    with pytest.raises(onnxshap.InputError, match="engine='ray'"):
        onnxshap.explain_dataset(MLP, data["bg"], dataset, out, **args)
    result = onnxshap.explain_dataset(MLP, data["bg"], dataset, out, engine="ray", workers=2, **args)
    assert (out / _blocks.STAGED).is_dir()
    table = pa.concat_tables([pq.read_table(p) for p in _blocks.part_files(out)])
    rows, ids = table.column("row").to_numpy(), table.column("id").to_numpy()
    assert sorted(rows.tolist()) == list(range(ROWS)) and sorted(ids.tolist()) == list(range(ROWS))
    by_row = ids[np.argsort(rows)]  # the dataset's id of each row of the copy
    rel_close(result.explanation().values, data["reference"].values[by_row])
    again = onnxshap.explain_dataset(MLP, data["bg"], dataset, out, engine="ray", workers=2, **args)
    assert (again.written, again.skipped) == (0, result.blocks)  # the copy is reused: resumed, nothing redone
