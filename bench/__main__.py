"""`make bench` (`python -m bench`): run every benchmark and write docs/benchmarks.md.

Each benchmark compares against a baseline measured in the same run and reports the ratio, so the numbers
mean something on a small, noisy machine. Pass names to run only some: `python -m bench gateway`.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = ("gateway", "plex_sync", "tautulli_sync", "deletion")
OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(names: list[str]) -> None:
    selected = names or list(BENCHMARKS)
    sections = []
    for name in selected:
        started = time.perf_counter()
        print(f"running bench.{name} ...", file=sys.stderr, flush=True)
        sections.append(importlib.import_module(f"bench.{name}").main())
        print(f"bench.{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    header = [
        "# Benchmarks",
        "",
        "Reproduce with `make bench` (all) or `.venv/bin/python -m bench <name>` "
        f"(names: {', '.join(BENCHMARKS)}). Each table compares against a baseline measured in the same run.",
        "",
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; the machine is shared and noisy, so read the ratios, not the "
        "absolute times.",
        "",
    ]
    OUTPUT.write_text("\n".join(header + sections).rstrip() + "\n")
    print(f"wrote {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
