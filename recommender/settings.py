"""Where the model registry and the experiment file live: shared by training and the loop
(write them) and serving (reads them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from movierec.settings import setting


@dataclass(frozen=True)
class RegistrySettings:
    """Where the model registry lives (written by training, read by serving)."""

    registry_dir: Path = setting(Path("var/registry"), "Folder of the model registry")


@dataclass(frozen=True)
class ExperimentsSettings:
    """Where the running experiment is kept (written by the admin endpoint and the loop,
    read by every serving worker)."""

    serve_experiments_file: Path = setting(
        Path("var/registry/experiments.json"),
        "JSON file with the running experiment (arms, shares, window); changed at run time",
    )
