"""How every benchmark shows its figures: one aligned line per figure, or the same dict as
JSON (``--json``), and written to a file for docs/benchmarks.md (``--out PATH``). The
options mean what they mean in every ``movierec`` command."""

from __future__ import annotations

import argparse
import json


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--json`` (print JSON instead of lines) and ``--out PATH`` (also write JSON there)."""
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of lines")
    parser.add_argument("--out", metavar="PATH", help="also write the figures to this JSON file")


def emit(result: dict, args: argparse.Namespace | None = None) -> None:
    """Print ``result`` as aligned ``name value`` lines (lists and dicts as their text), or
    as JSON with ``--json``; write it to ``--out`` if given."""
    if args is not None and getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        width = max((len(k) for k in result), default=0) + 2
        for key, value in result.items():
            print(f"{key:{width}s} {value:>14,}" if isinstance(value, int)
                  else f"{key:{width}s} {value!s:>14}")
    out = getattr(args, "out", None) if args is not None else None
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
