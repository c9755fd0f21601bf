"""Run ``movierec serve`` as a child process: for load tests, the serving benchmark and the
serving integration tests. Started in its own session so a stop takes the gunicorn
master and all its workers; ``wait_ready`` polls /ready, and a process that dies while
starting raises with the tail of its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from movierec.errors import MovierecError

READY_TIMEOUT_S = 90.0


def staged_env(*, redis_url: str, prefix: str, root: Path, kafka_bootstrap: str,
               served_topic: str, **extra: str) -> dict[str, str]:
    """MOVIEREC_* overrides for a service on what ``stage.stage`` wrote: the features under
    ``prefix`` in Redis, the registry in ``root/registry``, the experiment file in ``root``;
    served records to ``served_topic``. ``extra``: more variables, as given."""
    return {"MOVIEREC_REDIS_URL": redis_url, "MOVIEREC_REDIS_PREFIX": prefix,
            "MOVIEREC_REGISTRY_DIR": str(root / "registry"),
            "MOVIEREC_SERVE_EXPERIMENTS_FILE": str(root / "experiments.json"),
            "MOVIEREC_KAFKA_BOOTSTRAP": kafka_bootstrap, "MOVIEREC_SERVED_TOPIC": served_topic,
            **extra}


class ServiceError(MovierecError):
    """The service did not start or did not become ready."""


class ServiceProcess:
    """``movierec serve`` with ``env`` (MOVIEREC_* overrides) on ``port``; logs to ``log``."""

    def __init__(self, *, port: int, env: dict[str, str], log: Path, workers: int = 2,
                 metrics_dir: Path | None = None) -> None:
        self.port, self.log, self.workers = port, log, workers
        self.env = {**os.environ, **env, "MOVIEREC_SERVE_PORT": str(port),
                    "MOVIEREC_SERVE_HOST": "127.0.0.1", "MOVIEREC_SERVE_WORKERS": str(workers)}
        self.metrics_dir = metrics_dir or log.parent / f"serve-metrics-{port}"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> ServiceProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        movierec = Path(sys.executable).with_name("movierec")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(movierec), "serve", "--metrics-dir", str(self.metrics_dir)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()  # never leave a half-started gunicorn holding the port
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceError(f"the service exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise ServiceError(f"not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
