"""Where a model came from: the code version, the package versions and the host.

The registry stores these with every model version (issue #5, provenance), so a served
prediction can be traced to the commit and library versions that trained it. The helpers
only read; none of them fails because the facts are unavailable: outside a git checkout,
or without git, the commit is ``None`` rather than an exception, so training still works
from an unpacked source tree.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES: tuple[str, ...] = ("implicit", "numpy", "scipy", "pandas", "pyarrow", "movierec")
"""Distributions whose versions change what a trained model is (plus our own)."""

GIT_TIMEOUT_S = 5.0
"""Upper bound on each git call; a hung filesystem must not hang training."""


def _git(repo_root: Path, *args: str) -> str | None:
    """stdout of ``git -C repo_root args`` or None if git fails, is missing or hangs."""
    try:
        done = subprocess.run(["git", "-C", str(repo_root), *args], capture_output=True,
                              text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(repo_root: Path | str, *, built_from: str = "",
                 built_dirty: bool = False) -> dict:
    """``{"commit": <40-hex sha> | None, "dirty": bool | None}`` of the checkout at
    ``repo_root``. ``dirty`` is True when tracked or untracked files differ from the commit
    (``git status --porcelain`` is non-empty): such a model cannot be rebuilt exactly.
    Without a checkout (an installed copy, the container image): ``built_from``, the
    commit the code was built from, and ``built_dirty``, whether its files differed
    (``MOVIEREC_CODE_COMMIT`` and ``MOVIEREC_CODE_DIRTY``, which ``make image`` bakes in)."""
    root = Path(repo_root)
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        if re.fullmatch(r"[0-9a-f]{40}", built_from.strip()):
            return {"commit": built_from.strip(), "dirty": built_dirty}
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def package_versions() -> dict:
    """``{"python": "3.11.x", <package>: <version> | None}`` for ``PACKAGES``; None when a
    package is not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def host_info() -> dict:
    """The machine that trained: host name, OS, architecture and CPU count (timings in
    the metadata mean little without it)."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def peak_memory_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss``; Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
