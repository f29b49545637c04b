"""`make bench` (`python -m bench`): run every benchmark and write docs/benchmarks.md.

Each benchmark compares against a baseline measured in the same run and reports the ratio, so the numbers
mean something on a small, noisy machine. Pass names to run only some: `python -m bench gateway`. Each
benchmark owns one section of the file, between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; a run
replaces the sections it measured and keeps the others as they were.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = (
    "latency",
    "burst",
    "deletion",
    "gateway",
    "plex_sync",
    "smartplex_media",
    "tautulli_sync",
    "memory",
)
OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_SECTION = re.compile(r"<!-- bench:(?P<name>\w+) -->\n.*?<!-- /bench:(?P=name) -->\n?", re.DOTALL)


def header() -> str:
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "Reproduce with `make bench` (all) or `.venv/bin/python -m bench <name>` "
            f"(names: {', '.join(BENCHMARKS)}). Each table compares against a baseline measured in the same "
            "run. The machine is shared and noisy, so read the ratios, not the absolute times.",
            "",
        ]
    )


def wrap(name: str, body: str) -> str:
    """A benchmark's section with its markers and the machine it was measured on."""
    when = (
        f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} (`python -m bench {name}`)._"
    )
    return f"<!-- bench:{name} -->\n{body.rstrip()}\n\n{when}\n<!-- /bench:{name} -->\n"


def sections_of(text: str) -> dict[str, str]:
    return {match["name"]: match.group(0).rstrip("\n") + "\n" for match in _SECTION.finditer(text)}


def render(previous: str, measured: dict[str, str]) -> str:
    """The file: the header, then every benchmark's section in BENCHMARKS order (then marked sections of
    names no longer listed), the new ones from `measured` and the others as `previous` had them."""
    kept = sections_of(previous)
    names = [*BENCHMARKS, *(name for name in kept if name not in BENCHMARKS)]
    parts = [header()]
    for name in names:
        section = measured.get(name) or kept.get(name)
        if section:
            parts.append(section)
    return "\n".join(parts).rstrip() + "\n"


def main(names: list[str]) -> None:
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(sorted(unknown))}; names: {', '.join(BENCHMARKS)}")
    measured = {}
    for name in names or BENCHMARKS:
        started = time.perf_counter()
        print(f"running bench.{name} ...", file=sys.stderr, flush=True)
        measured[name] = wrap(name, importlib.import_module(f"bench.{name}").main())
        print(f"bench.{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    previous = OUTPUT.read_text() if OUTPUT.exists() else ""
    OUTPUT.write_text(render(previous, measured))
    print(f"wrote {', '.join(measured)} into {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
