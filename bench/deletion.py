"""Deletion benchmark: a Radarr `MovieDelete` until its `media_items` row is gone, on an idle stack (a real
Prefect server, deployments, a worker and the gateway as in `make run`, the demo services as Plex and
Radarr), against a baseline in the same run: a Radarr `Download` until its row is there (the same way
through the gateway, the queue, the scan grace, a flow run and Plex).

Plex scans as soon as the file is gone (what Radarr's own Plex connection asks for), so the time is
the pipeline's: the quiet window, the scan grace, the run. Before, the row stayed until the next scheduled
full sync (up to 12 h). Goal (issue 10): p50 ≤ quiet window + 15 s, the scan grace included.

`python -m bench deletion` writes its section into docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prefect.context import refresh_global_settings_context
from sqlalchemy import Engine, select

from deployments.processes import VENV_BIN, free_port, spawn, start_prefect_server, stop, wait_until_healthy
from simulators import radarr
from simulators.demo import build_world, create_demo_app, service_env
from simulators.plex_library import MOVIE, Item
from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.store import make_engine
from smartplex_sync.store.tables import media_items
from tests.support.prefect_stack import PrefectStack, create_work_pool, deploy, stack_env, start_worker

RUNS = 10
QUIET, GRACE = 2.0, 5
DEADLINE = 180.0


def _radarr_movie(item: Item) -> dict[str, object]:
    tmdb = next((int(g[7:]) for g in item.guids if g.startswith("tmdb://")), 0)
    return {"id": item.rating_key, "title": item.title, "year": item.year, "tmdbId": tmdb,
            "imdbId": f"tt{item.rating_key:07d}", "path": f"/movies/{item.title}", "sizeOnDisk": 1}  # fmt: skip


def _stored(engine: Engine, rating_key: int) -> bool:
    with engine.connect() as conn:
        found = conn.scalar(select(media_items.c.id).where(media_items.c.plex_id == str(rating_key)))
    return found is not None


def _until(condition: Callable[[], bool]) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > DEADLINE:
            raise TimeoutError(f"not done within {DEADLINE:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def measure(root: Path) -> tuple[list[float], list[float]]:
    """Seconds per MovieDelete until the row is gone, and per Download until the row is there."""
    database_url = f"sqlite:///{root / 'smartplex.db'}"
    engine = make_engine(database_url)
    migrate(engine)
    world = build_world(seed=11, movies=30, shows=2, plays=0)
    section = next(s.key for s in world.library.sections.values() if s.type == MOVIE)
    processes = []
    with serve_in_thread(create_demo_app(world)) as services:
        server, api_url = start_prefect_server(root / "prefect", free_port(), root / "prefect.log")
        processes.append(server)
        try:
            port = free_port()
            settings = {
                "SMARTPLEX_DATABASE_URL": database_url,
                "SMARTPLEX_DATA_DIR": str(root),
                "SMARTPLEX_GATEWAY_PORT": str(port),
                "SMARTPLEX_PLEX_QUIET_SECONDS": str(QUIET),
                "SMARTPLEX_PLEX_SCAN_GRACE_SECONDS": str(GRACE),
                **service_env(services),
            }
            env = stack_env(api_url, settings)
            create_work_pool(env)
            deploy(env)
            processes.append(start_worker(PrefectStack(api_url, env, database_url), root / "worker.log"))
            processes.append(spawn([str(VENV_BIN / "python"), "-m", "webhook_gateway"], env, root / "gw.log"))
            gateway = f"http://127.0.0.1:{port}"
            wait_until_healthy(f"{gateway}/healthz", timeout=60, process=processes[-1])
            os.environ.update(env)
            refresh_global_settings_context()
            from flows.library_sync import plex_library_sync
            from smartplex_sync.requests import PlexLibrarySync, PlexScope
            from smartplex_sync.settings import get_settings
            from smartplex_sync.store.accounts import configure

            get_settings.cache_clear()
            owner = configure(engine, get_settings())  # the owner, their server and services, as rows
            assert owner is not None and owner.server_id is not None
            plex_library_sync(PlexLibrarySync.on([owner.server_id], PlexScope(mode="full")))
            url = f"{gateway}/api/webhooks/radarr"
            deletes, downloads = [], []
            movies = [i for i in world.library.items.values() if i.type == MOVIE and i.guids][:RUNS]
            for movie in movies:
                with world.lock:  # Radarr deletes the file; its Plex connection has Plex scan the folder
                    world.library.delete_files(movie.rating_key)
                    world.library.scan(section)
                assert radarr.send(url, radarr.movie_delete_payload(_radarr_movie(movie))).status_code == 202
                deletes.append(_until(lambda key=movie.rating_key: not _stored(engine, key)))
                with world.lock:
                    added = world.library.add_movie(section)
                assert radarr.send(url, radarr.download_payload(_radarr_movie(added))).status_code == 202
                downloads.append(_until(lambda key=added.rating_key: _stored(engine, key)))
                print(f"delete {deletes[-1]:.1f} s, download {downloads[-1]:.1f} s", flush=True)
            return deletes, downloads
        finally:
            for process in reversed(processes):
                stop(process)


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        deletes, downloads = measure(Path(tmp))
    p50_delete, p50_download = statistics.median(deletes), statistics.median(downloads)
    goal = QUIET + 15  # the scan grace counts against the 15 s
    return "\n".join(
        [
            "## Deletions: a Radarr MovieDelete until its row is gone",
            "",
            f"{RUNS} deletes and {RUNS} downloads, one at a time, on an idle stack (Prefect server, worker, "
            f"gateway, demo services), quiet window {QUIET:.0f} s, scan grace {GRACE} s; Plex scans as soon "
            "as the file is gone. Baseline: a Radarr Download until its row is there, same path. Before, a "
            "deleted movie's row stayed until the next scheduled full sync (every 12 h).",
            "",
            "| | p50 | min | max |",
            "|---|---|---|---|",
            f"| MovieDelete → row gone | {p50_delete:.1f} s | {min(deletes):.1f} s | {max(deletes):.1f} s |",
            f"| Download → row there (baseline) | {p50_download:.1f} s | {min(downloads):.1f} s | "
            f"{max(downloads):.1f} s |",
            "",
            f"Ratio delete / download p50: {p50_delete / p50_download:.2f}. Goal p50 ≤ quiet + 15 s "
            f"= {goal:.0f} s: {'met' if p50_delete <= goal else 'NOT met'}.",
            "",
        ]
    )


if __name__ == "__main__":
    print(main())
