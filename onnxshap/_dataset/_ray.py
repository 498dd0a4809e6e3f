"""The Ray engine: Ray Data hands the blocks to a pool of actors, each holding one `BlockExplainer`.

The dataset Ray Data runs over is the list of blocks to do (index, start, stop), one Ray block
each; `map_batches` with the callable class `RayBlockWorker` keeps one compiled explainer per
actor, and each actor reads its block's rows from the source itself and writes the part file, so
no row travels through the driver. Ray restarts an actor whose process dies and retries its
blocks there (Ray Data's actor pool: max_restarts=-1, max_task_retries=-1); a block written
twice is written whole twice, so each block's file still appears once.

Before the pool starts, a probe on every node imports onnxshap there: a broken cluster
environment is an error naming the node, not a pool that never starts.
"""

from __future__ import annotations

import importlib
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxshap._dataset._blocks import Block, BlockExplainer, BlockSummary, Job
from onnxshap._errors import InputError, MissingDependencyError, OnnxShapError

if TYPE_CHECKING:
    from onnxshap._graph import TensorInfo

#: Seconds to wait for each node's probe (a worker process starting and importing onnxshap).
WORKER_START_TIMEOUT_S = 120.0
#: What the probe imports on each node: the module the actors' class lives in.
WORKER_MODULE = "onnxshap._dataset._ray"


def stage_dataset(
    dataset: Any,
    output_dir: Path,
    inputs: Sequence[TensorInfo],
    columns: Mapping[str, Any] | None,
    keep: Sequence[str],
    overwrite: bool,
) -> Path:
    """Write a ray.data.Dataset once to `output_dir/source/` as parquet, so that its rows get stable ids
    (positions in those files, in name order) and a rerun resumes; an existing copy is reused unless
    `overwrite`. Its schema is checked against the model's `inputs` first (before any task runs)."""
    from onnxshap._dataset._blocks import STAGED, check_folder
    from onnxshap._dataset._source import check_schema, pyarrow_module

    pa = pyarrow_module()
    schema = getattr(dataset.schema(), "base_schema", None)
    if not isinstance(schema, pa.Schema):
        raise InputError(
            "The ray.data.Dataset does not hold Arrow blocks (it has no Arrow schema), so its columns cannot be "
            "checked: convert it with dataset.map_batches(lambda b: b, batch_format='pyarrow'), or write it to "
            "parquet and pass the folder."
        )
    check_schema(schema, inputs, columns, keep)
    check_folder(output_dir)
    target = output_dir / STAGED
    if target.is_dir() and not overwrite:
        return target
    output_dir.mkdir(exist_ok=True)
    partial = output_dir / f".{STAGED}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    dataset.write_parquet(str(partial))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # the copy appears whole or not at all
    return target


def ray_module() -> Any:
    """ray (with Ray Data), or `MissingDependencyError` naming the extra."""
    try:
        import ray
        import ray.data  # the engine's scheduler
    except ImportError as exc:
        raise MissingDependencyError(
            f"engine='ray' needs Ray Data, which is not installed ({exc}). Install it with: pip install "
            "'onnxshap[ray]', or use engine='local'."
        ) from exc
    return ray


def _import_probe(module: str) -> str:
    """Run on a node: import `module` and say where it came from."""
    imported = importlib.import_module(module)
    return str(getattr(imported, "__file__", module))


def check_workers(ray: Any, module: str, timeout: float, runtime_env: Mapping[str, Any] | None) -> int:
    """Import `module` in a worker process on every alive node; return the number of nodes.

    Raises MissingDependencyError when a node cannot import it (naming the node and the error), or
    when no answer comes within `timeout` seconds (workers that do not start)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {"num_cpus": 0, "max_retries": 0}
    if runtime_env is not None:
        options["runtime_env"] = dict(runtime_env)
    probe = ray.remote(_import_probe)
    refs = {
        n["NodeManagerAddress"] + " " + n["NodeID"][:8]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False), **options
        ).remote(module)
        for n in nodes
    }
    for node, ref in refs.items():
        try:
            ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise MissingDependencyError(
                f"No Ray worker on node {node} started and imported onnxshap within {timeout:g} s: the cluster's "
                "workers do not start (check `ray status` and the node's logs under /tmp/ray/session_latest/logs)."
            ) from None
        except (ray.exceptions.RayError, ImportError) as exc:  # the import failed, or unpickling the probe did
            last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or [type(exc).__name__]
            raise MissingDependencyError(
                f"A Ray worker on node {node} cannot import {module}: {last[0].strip()}. Every node needs onnxshap "
                "and its dependencies in the Python environment its workers run: pip install 'onnxshap[ray]' "
                "there, or pass ray_remote_args={'runtime_env': {...}}."
            ) from None
    return len(nodes)


class RayBlockWorker:
    """One Ray Data actor: builds its `BlockExplainer` once, then explains and writes each block it gets."""

    def __init__(self, job: Job):
        self.worker = BlockExplainer(job)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        summaries = [
            self.worker(Block(int(i), int(start), int(stop)))
            for i, start, stop in zip(batch["index"], batch["start"], batch["stop"], strict=True)
        ]
        node = ray.get_runtime_context().get_node_id()
        return {
            "index": np.array([s.index for s in summaries], dtype=np.int64),
            "rows": np.array([s.rows for s in summaries], dtype=np.int64),
            "max_relative_residual": np.array([s.max_relative_residual for s in summaries], dtype=np.float64),
            "seconds": np.array([s.seconds for s in summaries], dtype=np.float64),
            "worker": np.array([f"{s.worker}@{node[:8]}" for s in summaries]),
        }


def _onnxshap_error(exc: BaseException) -> OnnxShapError | None:
    """The onnxshap error a worker raised, found in the exceptions Ray wraps it in."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(e, OnnxShapError) and not hasattr(e, "cause"):
            return e
        if isinstance(cause, OnnxShapError):
            return cause
        stack += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return None


@contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data's own progress bars and per-run log lines off: the caller shows progress over rows."""
    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.print_on_execution_start)
    logger = logging.getLogger("ray.data")
    level = logger.level
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        logger.setLevel(level)


def run_ray(
    job: Job,
    todo: Sequence[Block],
    done: Callable[[BlockSummary], None],
    *,
    workers: int,
    address: str | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
) -> None:
    """Explain `todo` on `workers` Ray actors, calling `done` for each block as its file is in place.

    Connects to `address` (a running cluster: "auto", "ray://host:10001", "host:6379"), or to the
    Ray already initialised in this process, or starts a local one (shut down again at the end).
    Each actor takes 1 CPU, and 1 GPU where the cluster has GPUs, unless `ray_remote_args` says
    otherwise (num_cpus, num_gpus, runtime_env, resources, ...)."""
    ray = ray_module()
    owns = not ray.is_initialized()
    if owns:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        remote_args = dict(ray_remote_args or {})
        check_workers(ray, WORKER_MODULE, WORKER_START_TIMEOUT_S, remote_args.get("runtime_env"))
        remote_args.setdefault("num_cpus", 1)
        if "num_gpus" not in remote_args and ray.cluster_resources().get("GPU", 0) > 0:
            remote_args["num_gpus"] = 1  # one actor per device
        blocks = ray.data.from_items(
            [{"index": b.index, "start": b.start, "stop": b.stop} for b in todo], override_num_blocks=len(todo)
        )
        results = blocks.map_batches(
            RayBlockWorker,
            fn_constructor_args=(job,),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            **remote_args,
        )
        with _quiet_ray_data(ray):
            try:
                for row in results.iter_rows():
                    done(
                        BlockSummary(
                            int(row["index"]),
                            int(row["rows"]),
                            float(row["max_relative_residual"]),
                            float(row["seconds"]),
                            str(row["worker"]),
                        )
                    )
            except Exception as exc:
                found = _onnxshap_error(exc)
                if found is None:
                    raise
                raise type(found)(str(found)) from None
    finally:
        if owns:
            ray.shutdown()
