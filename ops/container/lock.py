"""Write ops/container/requirements.lock: every distribution ``movierec[sim]`` needs at
run time (its dependency closure, markers evaluated for this Python on Linux), pinned to
the version installed in this virtualenv, the one the test suite ran against. The image
installs exactly these (``pip install -r``), so it runs what CI tested.

    .venv/bin/python ops/container/lock.py        # after changing dependencies

``tests/unit/test_container_files.py`` checks the lock satisfies pyproject.toml.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

LOCK = Path(__file__).with_name("requirements.lock")
ROOT_EXTRAS = ("sim",)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(name: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Distribution name -> installed version, for ``name[extras]`` and everything under it."""
    found: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(name, extras)]
    while todo:
        current, wanted = todo.pop()
        try:
            dist = distribution(current)
        except PackageNotFoundError:
            sys.exit(f"{current} is not installed in this environment")
        key = _norm(dist.metadata["Name"])
        if key != _norm(name):
            found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            if _norm(req.name) not in found or req.extras:
                todo.append((req.name, tuple(req.extras)))
    return found


def main() -> None:
    pinned = closure("movierec", ROOT_EXTRAS)
    lines = [f"{name}=={version}" for name, version in sorted(pinned.items())]
    LOCK.write_text("# written by ops/container/lock.py from the tested virtualenv; do not edit\n"
                    + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"{LOCK}: {len(lines)} pins")


if __name__ == "__main__":
    main()
