"""Explaining a dataset: every row of parquet or .npy/.npz shards, on this process or on Ray, into
parquet files written block by block (resumable, each block whole or not at all).

`_source.py` reads rows by range, `_blocks.py` holds the block plan, the manifest and the
per-block explain-and-write that both engines share, `_local.py` and `_ray.py` schedule the blocks,
`_api.py` is `explain_dataset`. See docs/dataset.md.
"""

from onnxshap._dataset._api import DatasetResult as DatasetResult, explain_dataset as explain_dataset

__all__ = ["DatasetResult", "explain_dataset"]
