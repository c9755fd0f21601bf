"""Registry version ids, ``<model>-<YYYYmmddTHHMMSS>-<sha6>``: how they are made and read.

Pure and import-light (no model code), so readers of served records such as
``online_eval`` can tell which model made a list without loading the registry.
"""

from __future__ import annotations

import re
from datetime import datetime

VERSION = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-\d{8}T\d{6}-[0-9a-f]{6}$")
"""A version id: the model's name, the creation time (UTC) and the artifact digest's
first six hex digits."""


def version_id(model_name: str, created: datetime, digest: str) -> str:
    """The id of ``model_name``'s artifact with ``digest`` registered at ``created``."""
    return f"{model_name}-{created:%Y%m%dT%H%M%S}-{digest[:6]}"


def model_name(version: str) -> str | None:
    """The model name in a version id; None for anything else."""
    match = VERSION.match(version)
    return match["name"] if match else None
