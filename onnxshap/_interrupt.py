"""Ctrl-C in the command line: whenever it comes, one message on stderr, exit code 130, no file left.

Python's own handling raises KeyboardInterrupt wherever the main thread is, which goes wrong in a JAX
program: inside an extension module's initialisation it becomes an ImportError; inside a gc callback
(jax's `_xla_gc_callback`) Python prints "Exception ignored" and drops it, so the run goes on to the
end; and after it stopped the main thread waiting for an XLA compilation, interpreter shutdown
destroys the XLA client and its thread pool while the compilation still runs there: a segfault.
So the handler here only records a Ctrl-C, except while the command runs (`Interrupts.armed`): there
it raises KeyboardInterrupt once, so that the command's own clean-up (`finally`, `.partial` files)
runs uninterrupted, and again where Python dropped it. `exit_now` then ends the process without
the shutdown. Stdlib only: the program installs it before anything heavy is imported.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NoReturn

#: Exit code of an interrupted command (128 + SIGINT, as shells report a Ctrl-C).
EXIT_INTERRUPTED = 130
#: A KeyboardInterrupt that Python dropped is raised again after this long (seconds).
REDELIVERY_DELAY_S = 0.01


class Interrupts:
    """The SIGINT policy of one run of the command line."""

    def __init__(self) -> None:
        self.requested = False  # a Ctrl-C came
        self._armed = False
        self._raised = False  # its KeyboardInterrupt is on its way up: later ones must not cut the clean-up short
        self._previous_hook = sys.unraisablehook

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._armed and not self._raised:
            self._raised = True
            raise KeyboardInterrupt

    def _on_unraisable(self, info: Any) -> None:
        if not issubclass(info.exc_type, KeyboardInterrupt):
            self._previous_hook(info)
            return
        # Raised where Python drops exceptions (a gc callback, __del__): raise it again a moment later,
        # from a thread, so that it lands outside there (the main thread would take it in this hook).
        self._raised = False
        if self._armed:
            timer = threading.Timer(REDELIVERY_DELAY_S, _signal_main_thread)
            timer.daemon = True
            timer.start()

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """Ctrl-C raises KeyboardInterrupt in the block; one that came before stops it at the start."""
        if self.requested and not self._raised:
            self._raised = True
            raise KeyboardInterrupt
        self._armed = True
        try:
            yield
        finally:
            self._armed = False


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Ctrl-C does not raise in the block (it is recorded): for the renames that put finished output
    files in place, which must happen together or not at all."""
    interrupts = _installed
    if interrupts is None or not interrupts._armed:
        yield
        return
    interrupts._armed = False
    try:
        yield
    finally:
        interrupts._armed = True


def _signal_main_thread() -> None:
    if hasattr(signal, "pthread_kill"):  # a real signal: it also cuts a sleep or a wait short
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
    else:
        _thread.interrupt_main(signal.SIGINT)


_installed: Interrupts | None = None


def install() -> Interrupts:
    """Handle SIGINT with one `Interrupts` for the rest of the process (the program's entry point).

    Where SIGINT is ignored (a background job of a script) or off the main thread, nothing is
    installed and the object returned never sees a Ctrl-C."""
    global _installed
    if _installed is not None:
        return _installed
    interrupts = Interrupts()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, interrupts._on_sigint)
        sys.unraisablehook = interrupts._on_unraisable
        _installed = interrupts
    return interrupts


@contextlib.contextmanager
def handling() -> Iterator[Interrupts]:
    """`install()` for the block, then Python's own handling back (for `cli.main` called in-process);
    inside an installed one, that one."""
    global _installed
    if _installed is not None:
        yield _installed
        return
    previous_handler, previous_hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    interrupts = install()
    try:
        yield interrupts
    finally:
        if _installed is interrupts:
            _installed = None
            signal.signal(signal.SIGINT, previous_handler if previous_handler is not None else signal.SIG_DFL)
            sys.unraisablehook = previous_hook


def exit_now(code: int) -> NoReturn:
    """End the process at once after flushing stdout and stderr, without interpreter shutdown (after an
    interrupt XLA may still be compiling on the thread pool that shutdown destroys). Only for when
    nothing is left to write: the command's clean-up has run."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe must not turn the exit into a traceback
            stream.flush()
    os._exit(code)


def run_program(command: Callable[[], Callable[[], int]]) -> NoReturn:
    """Run a command line as the program and end the process with its exit code.

    The Ctrl-C handler is installed before `command()` imports the command line's modules, so at any
    moment Ctrl-C gives one message and exit code 130; after an interrupt the process ends at once."""
    install()
    code = command()()
    if code == EXIT_INTERRUPTED:
        exit_now(code)
    sys.exit(code)
