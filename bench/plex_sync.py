"""Plex library sync benchmark: a 20,000-item library, a full sync into SmartPlex's `media_items` on SQLite,
50 new items, then an incremental sync against a full sync in the same run. `python -m bench.plex_sync` prints the section.

The simulator runs in its own process, as a real Plex Media Server would (in a thread of this process its
JSON encoding would fight the sync for the GIL); it shares the machine's two cores with the sync.
Flows run for real (through Prefect: a temporary local API unless PREFECT_API_URL is set), so their
wall times include Prefect's per-run and per-task overhead; `sync seconds` is the time inside the flow.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

MOVIES, SHOWS, SEASONS, EPISODES = 10_000, 100, 5, 20  # 10,000 movies + 10,000 episodes (+ 600 parents)
NEW_MOVIES, NEW_EPISODES = 30, 20
TOKEN = "bench-token"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def _timed(run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def _simulator(control: Connection) -> None:
    """The simulator process: serve the library, answer `requests` / `reset` / `add_new` / `stop`."""
    from simulators.plex import create_plex_app
    from simulators.plex_library import PlexLibrary
    from simulators.serving import serve_in_thread

    library = PlexLibrary.generate(
        seed=20_000, movies=MOVIES, shows=SHOWS, seasons_per_show=SEASONS, episodes_per_season=EPISODES
    )
    app = create_plex_app(library, token=TOKEN)
    state = app.state.plex
    with serve_in_thread(app) as url:
        control.send(url)
        while (command := control.recv()) != "stop":
            if command == "add_new":
                for _ in range(NEW_MOVIES):
                    library.add_movie(1)
                show = next(i for i in library.items.values() if i.type == "show")
                library.add_season(show.rating_key, episodes=NEW_EPISODES)
            elif command == "reset":
                state.reset_counter()
            control.send(state.requests)


def main() -> str:
    """Run the benchmark and return its markdown section."""
    from bench._stack import restore_environ
    from smartplex_sync.migrate import migrate
    from smartplex_sync.settings import get_settings
    from smartplex_sync.store import make_engine
    from smartplex_sync.store.accounts import configure

    control, child_end = multiprocessing.get_context("spawn").Pipe()
    simulator = multiprocessing.get_context("spawn").Process(
        target=_simulator, args=(child_end,), daemon=True
    )
    simulator.start()
    url = control.recv()

    def ask(command: str) -> int:
        control.send(command)
        return int(control.recv())

    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        saved = {
            k: os.environ.get(k)
            for k in (
                "SMARTPLEX_DATABASE_URL",
                "SMARTPLEX_PLEX_URL",
                "SMARTPLEX_PLEX_TOKEN",
                "SMARTPLEX_DATA_DIR",
            )
        }
        os.environ.update(
            SMARTPLEX_DATABASE_URL=database_url,
            SMARTPLEX_PLEX_URL=url,
            SMARTPLEX_PLEX_TOKEN=TOKEN,
            SMARTPLEX_DATA_DIR=tmp,
        )
        get_settings.cache_clear()
        engine = make_engine(database_url)
        migrate(engine)
        owner = configure(engine, get_settings())  # the SmartPlex user and server the settings describe
        engine.dispose()
        assert owner is not None and owner.server_id is not None
        server_id = owner.server_id
        try:
            from flows.library_sync import plex_library_sync
            from smartplex_sync.requests import PlexLibrarySync, PlexScope

            page_size = get_settings().plex_page_size
            # Warm up Prefect (an unknown key: nothing written).
            plex_library_sync(PlexLibrarySync.on([server_id], PlexScope(rating_keys=["0"])))

            def run(mode: str) -> tuple[dict[str, Any], float, int]:
                ask("reset")
                request = PlexLibrarySync.on([server_id], PlexScope(mode=mode))  # type: ignore[arg-type]
                result, seconds = _timed(lambda: plex_library_sync(request))
                return (
                    {**result["servers"][str(server_id)], "seconds": result["seconds"]},
                    seconds,
                    ask("requests"),
                )

            rss_before = _rss_mb()
            first, first_s, first_requests = run("full")
            rss_growth = _rss_mb() - rss_before
            ask("add_new")
            incremental, incremental_s, incremental_requests = run("incremental")
            full, full_s, full_requests = run("full")
            os.environ["SMARTPLEX_PLEX_PAGE_SIZE"] = "100"  # python-plexapi's default page
            get_settings.cache_clear()
            small, small_s, small_requests = run("full")
        finally:
            control.send("stop")
            simulator.join(20)
            os.environ.pop("SMARTPLEX_PLEX_PAGE_SIZE", None)
            restore_environ(saved)
            get_settings.cache_clear()

    rows_written = first["added"]
    write_rate = rows_written / first["seconds"]
    lines = [
        "## Plex library sync",
        "",
        f"Library: {MOVIES:,} movies and {SHOWS} shows x {SEASONS} seasons x {EPISODES} episodes "
        f"({rows_written:,} rows with show and season rows), page size {page_size}, SQLite (SmartPlex's "
        f"`media_items`, one `servers` row made from the settings), simulator in its own process. Then {NEW_MOVIES} new movies and a new season of {NEW_EPISODES} "
        "episodes of a known show.",
        "",
        "| run | added | updated | unchanged | Plex requests | wall s (flow call) | sync s (in flow) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result, seconds, requests in (
        ("full, empty database", first, first_s, first_requests),
        ("incremental after 50 new", incremental, incremental_s, incremental_requests),
        ("full after 50 new", full, full_s, full_requests),
        ("full, page size 100", small, small_s, small_requests),
    ):
        lines.append(
            f"| {name} | {result['added']:,} | {result['updated']:,} | {result['unchanged']:,} | {requests} "
            f"| {seconds:.2f} | {result['seconds']:.2f} |"
        )
    fewer = full_requests / incremental_requests
    inside = full["seconds"] / max(incremental["seconds"], 1e-9)
    lines += [
        "",
        f"- Incremental vs full (same run): **{fewer:.1f}x fewer requests** "
        f"(goal ≥ 20x: {_verdict(fewer >= 20)}), **{full_s / incremental_s:.1f}x faster** end to end "
        f"and {inside:.1f}x faster inside the flow (goal ≥ 10x: {_verdict(inside >= 10)}). "
        f"With {page_size}-item pages a full sync needs only {full_requests} requests; with 100-item pages "
        f"(python-plexapi's default) it needs {small_requests}, {small_requests / incremental_requests:.1f}x "
        "the incremental's.",
        f"- Full sync into an empty SQLite: **{write_rate:,.0f} items/s** inside the flow "
        f"({rows_written / first_s:,.0f} items/s end to end; goal ≥ 2,000: {_verdict(write_rate >= 2000)}), "
        f"peak RSS growth **{rss_growth:.0f} MB** (ru_maxrss; goal < 300 MB: {_verdict(rss_growth < 300)}).",
        "- The incremental run's requests: the server's identity (`/`, checked against its `servers` row "
        "before anything is written), the sections, and one listing per section and type; a full sync of "
        "this library needs few enough 500-item pages that the 20x request goal cannot be reached here.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main())
