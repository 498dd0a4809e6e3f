"""JAX's persistent compilation cache, switched on for onnxshap's compiled passes."""

from __future__ import annotations

import os
from pathlib import Path

import jax

from onnxshap._errors import OutputError


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/onnxshap/jax, or ~/.cache/onnxshap/jax."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onnxshap" / "jax"


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path:
    """Keep compiled forward and attribution passes on disk, so a later process skips compilation.

    Uses JAX's persistent compilation cache: an entry is keyed by the compiled program (model, shapes,
    dtypes, explained outputs), the JAX version and the device, so a stale entry is never used. Every
    compilation is cached, however short. Call it before the first explain() of the process.

    Args:
        path: the cache folder (created if missing); default `default_cache_dir()`.

    Returns:
        The folder in use.

    Raises:
        OutputError: the folder cannot be created (a file has its name, or no permission).
    """
    directory = Path(path) if path is not None else default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        taken = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{str(taken)!r} is a file, not a folder" if taken is not None else (exc.strerror or str(exc))
        raise OutputError(f"Cannot use {str(directory)!r} as the compilation cache: {reason}. Give a folder.") from None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
