"""Progress of an explain call: the steps `AttributionPass.run` reports, and the tqdm bar that shows them.

A call's steps are its compile steps (each jitted piece of the pass compiled for new shapes), then
one step per (sample block, background chunk). The callback is told the phase running now and how
many of the call's steps are finished: `progress("compile", 0, 7)` ... `progress("attribute", 3, 7)`
... `progress("done", 7, 7)`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from onnxshap._errors import InputError

#: progress(phase, done, total): phase "compile", "attribute" or "done"; done of total steps finished.
ProgressCallback = Callable[[str, int, int], None]

#: How the bar names each phase.
_SHOWN = {"compile": "compiling", "attribute": "attributing", "done": "done"}


class Bar:
    """A tqdm bar on `file` (default stderr) over the steps of `calls` explain calls, used as their
    `progress=` callback. Later calls are counted at this call's background chunks: they reuse the
    compiled pass (one bar over the batches of `onnxshap explain`). Closes after the last call."""

    def __init__(self, calls: int = 1, label: str = "explain", file: TextIO | None = None):
        self.calls_left = calls
        self.label = label
        self.file = file
        self.offset = 0  # steps of the finished calls
        self.chunks: int | None = None  # background-chunk steps of one call, once known
        self.bar: Any = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.chunks is None and phase != "compile":
            self.chunks = total - done
        # Until this call's chunks start, they number at most the steps after this compile step.
        later = (self.calls_left - 1) * (self.chunks if self.chunks is not None else total - done - 1)
        last = self.calls_left <= 1
        # Between calls the bar keeps the phase it showed: "done" is for the end of the last call.
        description = f"{self.label} ({_SHOWN.get(phase, phase)})" if phase != "done" or last else None
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total + later, desc=description, unit="step", file=self.file or sys.stderr, dynamic_ncols=True
            )
        self.bar.total = self.offset + total + later
        changed = description is not None and description != self.bar.desc
        if changed:
            self.bar.set_description_str(description, refresh=False)
        if phase == "done" and last:
            self.bar.n = self.offset + done
            self.close()  # draws the final state
            return
        drawn = self.bar.update(self.offset + done - self.bar.n)  # at tqdm's pace within a phase
        if changed and not drawn:
            self.bar.refresh()  # at once at a phase change, so that "compiling" shows while XLA compiles
        if phase == "done":
            self.offset += total
            self.calls_left -= 1
            self.chunks = None

    def close(self) -> None:
        """End the bar's line (also after an error or Ctrl-C part-way)."""
        if self.bar is not None:
            self.bar.close()


def progress_callback(progress: bool | ProgressCallback | None) -> ProgressCallback | None:
    """The callback `progress=` asks for: None for False/None, a new `Bar` for True, else the callable."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return Bar()
    if callable(progress):
        return progress
    raise InputError(
        f"progress must be True (a bar on stderr), False, or a callable progress(phase, done, total), not {progress!r}."
    )
