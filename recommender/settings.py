"""Where the model registry lives: shared by training (writes it) and serving (reads it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from movierec.settings import setting


@dataclass(frozen=True)
class RegistrySettings:
    """Where the model registry lives (written by training, read by serving)."""

    registry_dir: Path = setting(Path("var/registry"), "Folder of the model registry")
