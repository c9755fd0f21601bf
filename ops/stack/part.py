"""One server of the local stack, and the up/down/status logic every server shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ops.stack.procs import (
    StackError,
    owned_pid,
    port_open,
    spawn,
    tail,
    terminate,
    wait_until,
)
from ops.stack.settings import StackSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartStatus:
    """What ``infra status`` shows for one part.

    ``state`` is ``up`` (ours, answering), ``unhealthy`` (ours, running, not answering),
    ``down`` (not running) or ``foreign`` (its port is held by a process we did not start).
    """

    name: str
    state: str
    port: int
    pid: int | None
    log: Path
    detail: str

    @property
    def healthy(self) -> bool:
        return self.state == "up"


class Part:
    """A server the project fetches, configures, starts, probes and stops.

    Subclasses say how: ``check_installed``, ``prepare`` (write config, format
    storage), ``argv``, ``probe`` (None when healthy, else why not) and
    ``after_start`` (e.g. create topics).
    """

    name = "part"

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.var = settings.var_dir.resolve()

    # -- what subclasses define -----------------------------------------------------------

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def log_file(self) -> Path:
        """The log to read when this part misbehaves."""
        return self.var / "log" / f"{self.name}.log"

    def check_installed(self) -> None:
        """Raise StackError saying how to install what is missing."""

    def prepare(self) -> None:
        """Write configuration and initialise storage before a start."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def probe(self) -> str | None:
        """None if the part answers as it should, else a short reason."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Work that needs the part running (idempotent)."""

    # -- shared logic ------------------------------------------------------------------

    @property
    def pid_file(self) -> Path:
        return self.var / "run" / f"{self.name}.pid"

    @property
    def spawn_log(self) -> Path:
        """Where the process's own stdout and stderr go."""
        return self.log_file

    def status(self) -> PartStatus:
        pid = owned_pid(self.pid_file)
        if pid is not None:
            why = self.probe()
            if why is None:
                return PartStatus(self.name, "up", self.port, pid, self.log_file, "answering")
            return PartStatus(self.name, "unhealthy", self.port, pid, self.log_file, why)
        if port_open(self.port):
            return PartStatus(
                self.name, "foreign", self.port, None, self.log_file,
                f"port {self.port} is held by a process movierec did not start",
            )
        return PartStatus(self.name, "down", self.port, None, self.log_file, "not running")

    def up(self) -> PartStatus:
        """Start the part unless it already runs; wait until it answers."""
        current = self.status()
        if current.state == "foreign":
            raise StackError(
                f"{self.name}: port {self.port} is taken by a process movierec did not start; "
                f"stop it or choose another port (see `movierec config`)"
            )
        if current.state == "down":
            self.check_installed()
            self.prepare()
            log.info("starting %s on 127.0.0.1:%d (log: %s)", self.name, self.port, self.log_file)
            spawn(self.argv(), pid_file=self.pid_file, log=self.spawn_log)
        if current.state != "up":
            answered = wait_until(
                lambda: self.probe() is None,
                timeout=self.settings.start_timeout_s,
                alive=lambda: owned_pid(self.pid_file) is not None,
            )
            if not answered:
                running = owned_pid(self.pid_file) is not None
                why = "is running but did not answer" if running else "exited"
                raise StackError(
                    f"{self.name} {why} on 127.0.0.1:{self.port} "
                    f"within {self.settings.start_timeout_s:.0f}s; read {self.log_file}:\n"
                    + tail(self.log_file)
                )
        self.after_start()
        return self.status()

    def down(self) -> bool:
        """Stop the part if we started it; True if something was stopped."""
        stopped = terminate(self.pid_file)
        if stopped:
            log.info("stopped %s", self.name)
        return stopped
