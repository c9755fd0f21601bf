"""How every benchmark shows its figures: one aligned line per figure, and the same dict
as JSON when asked (``--json out.json``), for docs/benchmarks.md."""

from __future__ import annotations

import json


def emit(result: dict, json_path: str | None = None) -> None:
    """Print ``result`` as aligned ``name value`` lines (lists and dicts as their text);
    write it to ``json_path`` if given."""
    width = max((len(k) for k in result), default=0) + 2
    for key, value in result.items():
        print(f"{key:{width}s} {value:>14,}" if isinstance(value, int) else f"{key:{width}s} {value!s:>14}")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
