"""Atomic file writes: what a crash at any moment leaves is the old file or the new, never half.

Every file attn-lib writes that another run may read (checkpoints, ``config.json``,
``metrics.jsonl`` rewrites, weights, manifests, data-set caches, results) goes through
:func:`atomic_write`: a temporary file in the target's folder, flushed and fsynced, then renamed
over the target with ``os.replace`` (atomic on POSIX and Windows), and the folder fsynced so
that the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Union

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` atomically with what ``write`` writes to a binary file.

    The file gets the mode any new file would (``0o666`` less the umask), not ``mkstemp``'s
    private ``0o600``: a run folder or a data cache may be shared.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a stray temp file behind.
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not possible (nor needed) on Windows.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
