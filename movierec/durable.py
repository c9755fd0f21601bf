"""Crash-safe file writes, shared by the event store and the model registry.

A file written with ``write_atomic`` is either absent or complete after SIGKILL or power
loss: the bytes go to a temporary file in the same folder, are fsynced, renamed over the
target (``os.replace`` is atomic within a file system), and the folder is fsynced so the
new entry itself survives. Temporary names start with ``TMP_PREFIX``, so their owner can
sweep leftovers of a crash.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TMP_PREFIX = ".tmp-"


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | memoryview, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring)."""
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}")
    view = memoryview(data)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def make_dirs(directory: Path) -> None:
    """``mkdir -p``, fsyncing the parent of each new folder so its entry survives power loss."""
    if directory.is_dir():
        return
    make_dirs(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:
        return
    fsync_path(directory.parent)
