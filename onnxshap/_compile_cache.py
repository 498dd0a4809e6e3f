"""JAX's persistent compilation cache, switched on for onnxshap's compiled passes.

Library calls compile in memory only, unless `enable_compilation_cache` is called. The command
line (`onnxshap explain`) switches the cache on by default at `default_cache_dir()`; the
environment variable ONNXSHAP_COMPILATION_CACHE=0 or `--no-compilation-cache` turns that off.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from onnxshap._errors import OutputError

#: Where the cache lives when no folder is given (see `default_cache_dir`).
CACHE_DIR_VARIABLE = "ONNXSHAP_CACHE_DIR"
#: "0" (or false/no/off) turns the command line's default cache off.
SWITCH_VARIABLE = "ONNXSHAP_COMPILATION_CACHE"
#: The folder is pruned to this size, least recently used entries first, when the cache is enabled.
MAX_CACHE_BYTES = 1 << 30

#: JAX names its entries <key>-cache (jax/_src/lru_cache.py); nothing else in the folder is pruned.
_ENTRY_SUFFIX = "-cache"


def default_cache_dir() -> Path:
    """$ONNXSHAP_CACHE_DIR if set, else $XDG_CACHE_HOME/onnxshap/jax, else ~/.cache/onnxshap/jax.

    Raises:
        OutputError: none of them is set and there is no home folder (HOME unset, no user entry).
    """
    own = os.environ.get(CACHE_DIR_VARIABLE)
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "onnxshap" / "jax"
    home = os.path.expanduser("~")
    if home.startswith("~"):  # expanduser leaves "~" as it is when it finds no home folder
        raise OutputError(
            "Cannot place the compilation cache: there is no home folder (HOME is not set) and "
            f"neither {CACHE_DIR_VARIABLE} nor XDG_CACHE_HOME is set."
        )
    return Path(home) / ".cache" / "onnxshap" / "jax"


def default_cache_wanted() -> bool:
    """Whether the command line uses the cache without being asked: unless
    ONNXSHAP_COMPILATION_CACHE is 0, false, no or off."""
    value = os.environ.get(SWITCH_VARIABLE, "").strip().lower()
    return value not in ("0", "false", "no", "off")


def _unusable(directory: Path) -> str | None:
    """Why `directory` cannot hold the cache (after creating it if missing), or None."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        files = (p for p in (directory, *directory.parents) if p.exists() and not p.is_dir())
        taken = next(files, None)
        if taken is not None:
            return f"{str(taken)!r} is a file, not a folder"
        return exc.strerror or str(exc)
    # JAX only warns when it cannot write an entry; refuse a read-only folder here instead.
    if not os.access(directory, os.W_OK | os.X_OK):
        return "no permission to write there"
    return None


def prune(directory: Path, max_bytes: int = MAX_CACHE_BYTES) -> int:
    """Delete the least recently used entries of `directory` until they total <= `max_bytes`.

    JAX's own size bound (jax_compilation_cache_max_size) needs the `filelock` package and keeps
    access times in files of its own; here an entry's last use is its file's access or modification
    time, whichever is later. Returns the number of entries deleted.
    """
    entries = []
    for path in directory.glob(f"*{_ENTRY_SUFFIX}"):
        try:
            stat = path.stat()
        except OSError:  # removed meanwhile by another process
            continue
        entries.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    deleted = 0
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        deleted += 1
    return deleted


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path:
    """Keep compiled forward and attribution passes on disk, so a later process skips compilation.

    Uses JAX's persistent compilation cache: an entry is keyed by the compiled program (model,
    shapes, dtypes, explained outputs), the JAX version and the device, so a stale entry is never
    used. Every compilation is cached, however short. The folder is pruned to MAX_CACHE_BYTES
    (1 GiB), least recently used entries first. Library calls compile in memory unless this is
    called; call it before the first explain() of the process.

    Args:
        path: the cache folder (created if missing); default `default_cache_dir()`.

    Returns:
        The folder in use.

    Raises:
        OutputError: the folder cannot be created or written (a file has its name, no permission),
            or, for the default folder, there is no home folder.
    """
    directory = Path(path) if path is not None else default_cache_dir()
    reason = _unusable(directory)
    if reason is not None:
        advice = "Give a folder." if path is not None else (f"Set {CACHE_DIR_VARIABLE} to a folder you can write to.")
        raise OutputError(f"Cannot use {str(directory)!r} as the compilation cache: {reason}. {advice}")
    prune(directory)
    _switch_on(directory)
    return directory


def _switch_on(directory: Path) -> None:
    """Point JAX's persistent cache at `directory`, for every compilation however short."""
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # JAX's default threshold (1 s of compile time) would skip most passes: the digits CNN's three
    # compile in 0.6, 0.6 and 1.6 s on 2 cores, an MLP's in less.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
