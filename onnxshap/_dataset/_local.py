"""The local engine: this process explains the blocks one after another with one `BlockExplainer`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from onnxshap._dataset._blocks import Block, BlockExplainer, BlockSummary


def run_local(worker: BlockExplainer, todo: Sequence[Block], done: Callable[[BlockSummary], None]) -> None:
    """Explain and write each block of `todo` in order, calling `done` after each one is in place.

    A Ctrl-C or an error stops at once; the blocks written so far stay (each whole), so a rerun
    resumes after them."""
    for block in todo:
        done(worker(block))
