"""The loop's durable journal and its lock: the adapters under the cycle's state machine.

``Journal`` is an append-only JSON-lines file (one entry per line: ``cycle``, ``stage``,
``at`` and the stage's numbers). Each append is written with one ``write`` call and
fsynced before it returns, so after SIGKILL or power loss the file holds every entry that
was acknowledged and at most one torn last line, which reading skips (it was never
acknowledged, so the action it described is redone: ``recommender.loop.cycle``).

``LoopLock`` makes sure two loop processes never run cycles at once. It is an exclusive
``flock`` on a file: the kernel releases it when the holder's file is closed, which
happens when the process dies however it dies (SIGKILL included), so a crashed holder
never leaves a stale lock behind, unlike a pid file. The file also records the holder's
pid and start time for ``movierec loop status``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from movierec.durable import fsync_path, make_dirs
from movierec.errors import MovierecError
from recommender.loop.cycle import Cycle, Stage, fold


class LoopError(MovierecError):
    """The loop cannot go on: its lock is held, or its journal is unreadable."""


class Journal:
    """Entries of every cycle at ``path`` (created with its folder on the first append)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def append(self, cycle: str, stage: Stage, *, at: datetime | None = None,
               **fields: object) -> dict:
        """Append one entry and make it durable; returns it. ``at`` defaults to now (UTC)."""
        entry = {"cycle": cycle, "stage": stage.value,
                 "at": (at or datetime.now(UTC)).isoformat(timespec="milliseconds"), **fields}
        line = (json.dumps(entry, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        new = not self.path.exists()
        make_dirs(self.path.parent)
        self._drop_torn_tail()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_path(self.path.parent)
        return entry

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line (a crash mid-append) before appending after it: glued to
        the next entry it would hide that entry and turn into corruption mid-file."""
        try:
            with open(self.path, "rb+") as fh:
                size = fh.seek(0, os.SEEK_END)
                if size == 0:
                    return
                fh.seek(size - 1)
                if fh.read(1) == b"\n":
                    return
                fh.seek(0)
                data = fh.read()
                fh.truncate(data.rfind(b"\n") + 1)
                fh.flush()
                os.fsync(fh.fileno())
        except FileNotFoundError:
            return

    def entries(self) -> list[dict]:
        """Every complete entry, oldest first. A line that does not parse can only be the
        last, torn by a crash mid-write; one anywhere else is corruption (``LoopError``)."""
        try:
            lines = self.path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise LoopError(f"cannot read the loop journal {self.path}: {exc}") from exc
        out = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, Mapping) or not {"cycle", "stage", "at"} <= set(entry):
                    raise ValueError("not an entry")
            except ValueError as exc:
                if number >= len(lines) - 1:  # the last line (the file may end in "\n")
                    break
                raise LoopError(f"loop journal {self.path} line {number} is corrupt: {exc}. "
                                f"Repair or move the file; the registry and the experiment "
                                f"file hold the current state") from exc
            out.append(dict(entry))
        return out

    def cycles(self) -> list[Cycle]:
        return fold(self.entries())


class LoopLock:
    """An exclusive, crash-released lock at ``path``: ``with LoopLock(p):`` or
    ``acquire``/``release``. ``LoopError`` naming the holder when another process has it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        make_dirs(self.path.parent)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LoopError(f"the loop is already running ({holder}); "
                            f"stop it first, or use `movierec loop status`") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.truncate(0)
            self._fh.close()
            self._fh = None

    def holder(self) -> str | None:
        """Who holds the lock now (``pid N since T``), or None when nobody does."""
        if self._fh is not None:
            return f"pid {os.getpid()} (this process)"
        try:
            with open(self.path, encoding="utf-8") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return fh.read().strip() or "unknown"
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                return None
        except FileNotFoundError:
            return None

    def __enter__(self) -> LoopLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
