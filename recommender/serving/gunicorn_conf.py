"""gunicorn configuration of the recommendation service (``movierec serve`` passes it
with ``-c``). gunicorn executes this file in the master before forking the workers.

- bind, workers, worker class and the listen backlog come from ``ServeSettings``
  (``MOVIEREC_SERVE_*``); "sync" runs ``accept_worker.AcceptWorker``, gunicorn's sync
  worker shedding old /recommend requests before parsing them;
- the app is not preloaded: each worker builds its own (threads and sockets do not
  survive a fork), model arrays are memory-mapped and so shared anyway;
- Prometheus multiprocess mode: the folder is emptied at start and a dead worker's live
  gauges are dropped (https://prometheus.github.io/client_python/multiprocess/);
- logging: gunicorn's own log and every worker's take ``MOVIEREC_LOG_LEVEL`` (the root
  command exports its ``--log-level``); a forked worker is configured again in
  ``post_fork``, so the model watcher's and telemetry's lines reach stderr.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from movierec import logs
from movierec.settings import load
from recommender.serving.settings import ServeSettings

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

_settings = load(ServeSettings)

bind = f"{_settings.serve_host}:{_settings.serve_port}"
workers = _settings.serve_workers
# "sync" is gunicorn's sync worker that also sheds at accept time (accept_worker.py)
worker_class = ("recommender.serving.accept_worker.AcceptWorker"
                if _settings.serve_worker_class == "sync" else _settings.serve_worker_class)
threads = _settings.serve_threads
backlog = _settings.serve_backlog
keepalive = 5
timeout = 30
graceful_timeout = 10
accesslog = None
loglevel = logs.level_from_env().lower()
proc_name = "movierec-serve"
# gunicorn >= 25 opens ~/.gunicorn/gunicorn.ctl: unused, and shared between instances
control_socket_disable = True


def on_starting(server: Arbiter) -> None:  # gunicorn's hook signature
    logs.configure()
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def post_fork(server: Arbiter, worker: Worker) -> None:
    logs.configure()


def child_exit(server: Arbiter, worker: Worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server: Arbiter, worker: Worker) -> None:
    """Flush the served records a worker still holds and stop its watcher."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "movierec" in getattr(app, "extensions", {}):
        from recommender.serving.wsgi import shutdown

        shutdown(app)
