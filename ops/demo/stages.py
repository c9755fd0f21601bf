"""How the demo runs a stage: numbered progress lines, one log file per stage, and a
failure that names the stage and the log to read.

A stage is either work done in this process (``Stages.step``), a command run to its
end with its output copied to the stage's log and shown as it comes (``Stages.command``),
or a background process the demo leaves running (``Stages.service``, recorded in a pid
file so that ``movierec demo down`` stops exactly what the demo started).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeAlias, TypeVar

from movierec.errors import MovierecError
from ops.stack import procs

T = TypeVar("T")

Note: TypeAlias = Callable[[str], None]
"""What a stage's work is handed to show a line of progress (and log it)."""


def pid_file(run_dir: Path, name: str) -> Path:
    """Where a demo service's pid is recorded (``demo down`` and ``status`` read it)."""
    return run_dir / f"demo-{name}.pid"


def log_file(log_dir: Path, name: str) -> Path:
    """One log per stage; a service's stage log is the service's own log."""
    return log_dir / f"{name}.log"


class DemoError(MovierecError):
    """A demo stage failed; the message names the stage and the log file to read."""


@dataclass
class Stages:
    """Runs the demo's stages in order and reports each one on ``out``.

    ``log_dir`` gets ``<stage>.log`` per stage; ``run_dir`` the pid files of the
    services the demo starts; ``total`` is the number of stages, for "[3/10]".
    """

    log_dir: Path
    run_dir: Path
    total: int
    timeout_s: float = 1800.0
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    number: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def log_of(self, name: str) -> Path:
        return log_file(self.log_dir, name)

    def pid_file(self, name: str) -> Path:
        return pid_file(self.run_dir, name)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _begin(self, name: str, what: str) -> float:
        self.number += 1
        self.say(f"\n[{self.number}/{self.total}] {name}: {what}")
        return time.perf_counter()

    def _end(self, name: str, started: float) -> None:
        self.timings[name] = time.perf_counter() - started
        self.say(f"      {name} done in {self.timings[name]:.1f} s")

    def _fail(self, name: str, why: str) -> DemoError:
        log = self.log_of(name)
        tail = procs.tail(log, 12)
        return DemoError(f"stage {name!r} failed: {why}\nread {log}"
                         + (f"; its last lines:\n{tail}" if tail else ""))

    def step(self, name: str, what: str, work: Callable[[Note], T]) -> T:
        """Run ``work(note)`` in this process; ``note(text)`` shows progress and logs it."""
        started = self._begin(name, what)
        log = self.log_of(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as fh:
            def note(text: str) -> None:
                fh.write(text + "\n")
                fh.flush()
                self.say(f"      {text}")

            try:
                result = work(note)
            except Exception as exc:  # any failure becomes the stage's failure
                why = str(exc) if isinstance(exc, DemoError) else f"{type(exc).__name__}: {exc}"
                fh.write(why + "\n")
                fh.flush()
                raise self._fail(name, why) from exc
        self._end(name, started)
        return result

    def command(self, name: str, what: str, argv: Sequence[str], *,
                env: dict[str, str] | None = None) -> str:
        """Run ``argv`` to its end; its output goes to the stage's log and, line by line,
        to ``out`` (progress bars redraw in place on a terminal). Returns the output."""
        started = self._begin(name, what)
        log = self.log_of(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        tty = self.out.isatty()
        chunks: list[bytes] = []
        with log.open("ab") as fh:
            fh.write(("$ " + " ".join(argv) + "\n").encode())
            # its own session: a Ctrl-C meant for the demo does not hit it half-way, and
            # whatever ends this stage early (a timeout, Ctrl-C, SIGTERM) stops it with
            # its children instead of leaving an orphan writing into the next demo's topic
            child = subprocess.Popen(list(argv), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
            try:
                assert child.stdout is not None
                give_up = time.monotonic() + self.timeout_s
                pending, fd = b"", child.stdout.fileno()
                while True:
                    if time.monotonic() > give_up:
                        raise self._fail(name, f"still running after {self.timeout_s:.0f} s")
                    if not select.select([fd], [], [], 1.0)[0]:
                        continue
                    if not (chunk := os.read(fd, 65536)):
                        break
                    fh.write(chunk)
                    fh.flush()
                    chunks.append(chunk)
                    pending = self._show(pending + chunk, tty)
                code = child.wait()
            finally:
                _stop_group(child)
                if child.stdout is not None:
                    child.stdout.close()
        if tty:
            self.out.write("\n")
        if code != 0:
            raise self._fail(name, f"`{' '.join(argv[-3:])}` exited with status {code}")
        self._end(name, started)
        return b"".join(chunks).decode("utf-8", "replace")

    def _show(self, data: bytes, tty: bool) -> bytes:
        """Echo complete lines; on a terminal also redraw the current progress bar.
        Returns the incomplete rest."""
        *done, rest = data.replace(b"\r\n", b"\n").split(b"\n")
        for line in done:
            text = line.rsplit(b"\r", 1)[-1].decode("utf-8", "replace")
            if text.strip():
                self.out.write(("\r\033[K" if tty else "") + f"      {text}\n")
        if tty and b"\r" in rest:
            bar = rest.rsplit(b"\r", 2)[-2 if rest.endswith(b"\r") else -1]
            self.out.write("\r\033[K      " + bar.decode("utf-8", "replace")[:150])
        self.out.flush()
        return rest[-4096:]

    def service(self, name: str, what: str, argv: Sequence[str], *,
                ready: Callable[[], bool], env: dict[str, str] | None = None,
                timeout_s: float | None = None) -> int:
        """Start ``argv`` in the background (left running), wait until ``ready()``
        (``timeout_s``, default the stage timeout). A ``ready`` that raises counts as not
        ready yet (a part may refuse connections while it starts), except a ``DemoError``:
        that is the check's verdict, and the stage fails with it."""
        started = self._begin(name, what)
        log, pid_file = self.log_of(name), self.pid_file(name)
        limit = self.timeout_s if timeout_s is None else timeout_s

        def answers() -> bool:
            try:
                return ready()
            except DemoError:
                raise  # the check's own verdict: the stage has failed
            except Exception as exc:  # logged, then polled again
                with log.open("a", encoding="utf-8") as fh:
                    fh.write(f"[demo] not ready yet: {type(exc).__name__}: {exc}\n")
                time.sleep(1.0)
                return False

        try:
            procs.terminate(pid_file)  # a leftover of an earlier demo
            pid = procs.spawn(argv, pid_file=pid_file, log=log, env=env)
        except procs.StackError as exc:
            raise self._fail(name, str(exc)) from exc
        try:
            came_up = procs.wait_until(answers, timeout=limit,
                                       alive=lambda: procs.owned_pid(pid_file) is not None)
        except DemoError as exc:
            raise self._fail(name, str(exc)) from exc
        if not came_up:
            alive = procs.owned_pid(pid_file) is not None
            raise self._fail(name, ("is running but not ready" if alive else "exited")
                             + f" within {limit:.0f} s")
        self.say(f"      running as pid {pid}; log {log}")
        self._end(name, started)
        return pid


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM the child's process group unless it has ended; SIGKILL after 10 s."""
    if child.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
