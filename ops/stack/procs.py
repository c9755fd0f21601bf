"""Start, watch and stop a server process that the project owns.

A part we start is recorded in a pid file as ``<pid> <start-ticks>``, the process
start time from /proc/<pid>/stat (field 22). A pid alone can be reused by an
unrelated process after ours died; the pair cannot, so we never signal a process we
did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from movierec.errors import MovierecError


class StackError(MovierecError):
    """A part of the local stack could not be fetched, started, probed or stopped."""


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent has yet to reap it
        return None
    return int(fields[19])


def parse_pid_file(text: str) -> tuple[int, int] | None:
    """``"<pid> <ticks>"`` -> (pid, ticks); anything else -> None."""
    parts = text.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def owned_pid(pid_file: Path) -> int | None:
    """The pid recorded in ``pid_file`` if that very process is still running."""
    try:
        recorded = parse_pid_file(pid_file.read_text())
    except OSError:
        return None
    if recorded is None:
        return None
    pid, ticks = recorded
    return pid if start_ticks(pid) == ticks else None


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_probe(port: int, path: str, timeout: float = 1.0) -> str | None:
    """None if ``GET http://127.0.0.1:<port><path>`` answers 200, else a short reason: the
    health probe of the stack's HTTP parts (Prometheus, Alertmanager, the receiver)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return None if resp.status == 200 else f"{path} answered {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"{path} answered {exc.code}"
    except OSError as exc:
        return f"{path} failed: {exc}"


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def spawn(argv: Sequence[str], *, pid_file: Path, log: Path,
          env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached (own session, output appended to ``log``), record it in
    ``pid_file`` and return its pid.

    posix_spawn rather than subprocess.Popen: the server outlives the Popen object,
    whose finalizer would warn that the child is still running.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        pid = os.posix_spawnp(argv[0], list(argv), dict(os.environ if env is None else env),
                              file_actions=actions, setsid=True)
    except OSError as exc:
        raise StackError(f"cannot run {argv[0]}: {exc}") from None
    pid_file.write_text(f"{pid} {start_ticks(pid)}\n")
    return pid


def reap(pid: int) -> None:
    """Collect the exit status of a child of ours that has ended (no zombie left)."""
    with contextlib.suppress(ChildProcessError):  # not our child: its parent (or init) reaps it
        os.waitpid(pid, os.WNOHANG)


def wait_until(check: Callable[[], bool], *, timeout: float, alive: Callable[[], bool],
               interval: float = 0.25) -> bool:
    """Poll ``check`` until it is true (True), ``alive`` turns false or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive():
            return False
        time.sleep(interval)
    return check()


def terminate(pid_file: Path, *, grace: float = 20.0) -> bool:
    """SIGTERM the process recorded in ``pid_file`` (SIGKILL after ``grace`` s).

    Returns True if a process of ours was stopped. The pid file is removed either way.
    """
    pid = owned_pid(pid_file)
    stopped = False
    if pid is not None:
        ticks = start_ticks(pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # the part leads its own session/group
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and start_ticks(pid) == ticks:
            time.sleep(0.1)
        if start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while start_ticks(pid) == ticks:
                time.sleep(0.05)
        reap(pid)
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped
