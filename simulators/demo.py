"""Demo mode: simulated Plex, Tautulli, Sonarr, Radarr and Overseerr on one loopback port, plus a driver
that makes things happen (new movies and seasons, plays) and sends the webhooks real servers would send.

`make run` starts this when no SMARTPLEX_PLEX_URL is configured; the tests use `build_world` and
`create_demo_app` to give flow runs real services to talk to. `python -m simulators.demo [--port N]` serves
it, writes the settings that point at it to `$SMARTPLEX_DATA_DIR/demo.env`, and drives it until stopped.
`make run` passes the same port on every restart, so the worker's settings stay true.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from simulators import overseerr, plex, radarr, sonarr, tautulli
from simulators.plex_library import EPISODE, MOVIE, SHOW, Item, PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.settings import get_settings

log = logging.getLogger("smartplex.demo")

PLEX_TOKEN = "demo-plex-token"
TAUTULLI_KEY = "demo-tautulli-key"
SONARR_KEY = "demo-sonarr-key"
RADARR_KEY = "demo-radarr-key"
OVERSEERR_KEY = "demo-overseerr-key"


@dataclass
class DemoWorld:
    """The simulated services' truth, shared by their apps and the driver."""

    library: PlexLibrary
    history: tautulli.TautulliHistory
    series: list[dict[str, Any]]  # Sonarr's catalogue: the Plex shows, and a few Plex does not have yet
    movies: list[dict[str, Any]]  # Radarr's catalogue, likewise
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    lock: threading.Lock = field(default_factory=threading.Lock)


def history_item(library: PlexLibrary, item: Item) -> tautulli.HistoryItem:
    """How Tautulli would describe a play of this Plex item."""
    duration = max((sum(p.duration for p in m.parts) for m in item.media), default=5_400_000) // 1000
    if item.type != EPISODE:
        return tautulli.HistoryItem(item.rating_key, item.title, MOVIE, item.year, duration)
    season = library.items[item.parent_key] if item.parent_key else None
    show = library.items[item.grandparent_key] if item.grandparent_key else None
    return tautulli.HistoryItem(
        item.rating_key,
        item.title,
        EPISODE,
        item.year,
        duration,
        parent_rating_key=item.parent_key,
        grandparent_rating_key=item.grandparent_key,
        parent_title=season.title if season else "",
        grandparent_title=show.title if show else "",
        media_index=item.index,
        parent_media_index=season.index if season else None,
    )


def playable(library: PlexLibrary) -> list[tautulli.HistoryItem]:
    return [history_item(library, i) for i in library.items.values() if i.type in (MOVIE, EPISODE)]


def _guid(item: Item, scheme: str) -> int | None:
    return next((int(g.split("://", 1)[1]) for g in item.guids if g.startswith(f"{scheme}://")), None)


def _catalogue(
    entries: list[dict[str, Any]], items: list[Item], id_field: str, scheme: str
) -> list[dict[str, Any]]:
    """Make the first entries of a generated *arr catalogue describe the Plex items (same titles and ids)."""
    for entry, item in zip(entries, items, strict=False):
        entry["title"] = item.title
        entry[id_field] = _guid(item, scheme) or entry[id_field]
    return entries


def build_world(*, seed: int = 0, movies: int = 120, shows: int = 6, plays: int = 300) -> DemoWorld:
    library = PlexLibrary.generate(seed=seed, movies=movies, shows=shows, friendly_name="SmartPlex Demo")
    history = tautulli.TautulliHistory.generate(playable(library), plays=plays, days=30, seed=seed)
    plex_shows = [i for i in library.items.values() if i.type == SHOW]
    plex_movies = [i for i in library.items.values() if i.type == MOVIE]
    series = _catalogue(sonarr.generate_series(len(plex_shows) + 3, seed), plex_shows, "tvdbId", "tvdb")
    radarr_movies = _catalogue(
        radarr.generate_movies(len(plex_movies) + 5, seed), plex_movies, "tmdbId", "tmdb"
    )
    return DemoWorld(library, history, series, radarr_movies, random.Random(seed))


def create_demo_app(world: DemoWorld) -> FastAPI:
    """All five services under one app: /plex, /tautulli, /sonarr, /radarr, /overseerr."""
    app = FastAPI(title="SmartPlex demo services")
    app.mount("/plex", plex.create_plex_app(world.library, token=PLEX_TOKEN))
    app.mount(
        "/tautulli",
        tautulli.create_tautulli_app(
            world.history,
            api_key=TAUTULLI_KEY,
            pms_identifier=world.library.machine_identifier,
            pms_name=world.library.friendly_name,
        ),
    )
    app.mount("/sonarr", sonarr.create_sonarr_app(world.series, api_key=SONARR_KEY))
    app.mount("/radarr", radarr.create_radarr_app(world.movies, api_key=RADARR_KEY))
    app.mount("/overseerr", overseerr.create_overseerr_app(api_key=OVERSEERR_KEY))
    return app


def service_env(base_url: str) -> dict[str, str]:
    """The SMARTPLEX_* settings that point the flows at the demo services served at `base_url`."""
    return {
        "SMARTPLEX_PLEX_URL": f"{base_url}/plex",
        "SMARTPLEX_PLEX_TOKEN": PLEX_TOKEN,
        "SMARTPLEX_TAUTULLI_URL": f"{base_url}/tautulli",
        "SMARTPLEX_TAUTULLI_API_KEY": TAUTULLI_KEY,
        "SMARTPLEX_SONARR_URL": f"{base_url}/sonarr",
        "SMARTPLEX_SONARR_API_KEY": SONARR_KEY,
        "SMARTPLEX_RADARR_URL": f"{base_url}/radarr",
        "SMARTPLEX_RADARR_API_KEY": RADARR_KEY,
        "SMARTPLEX_OVERSEERR_URL": f"{base_url}/overseerr",
        "SMARTPLEX_OVERSEERR_API_KEY": OVERSEERR_KEY,
    }


class Driver:
    """Makes the demo world change and tells the gateway, as the real services would."""

    def __init__(
        self, world: DemoWorld, gateway_url: str, plex_token: str | None, tautulli_token: str | None
    ) -> None:
        self.world = world
        self.gateway_url = gateway_url.rstrip("/")
        self.plex_token = plex_token
        self.tautulli_token = tautulli_token

    def add_to_library(self) -> Item:
        library = self.world.library
        with self.world.lock:
            if self.world.rng.random() < 0.6:
                section = next(s for s in library.sections.values() if s.type == MOVIE)
                item = library.add_movie(section.key, at=int(time.time()))
            else:
                shows = [i for i in library.items.values() if i.type == SHOW]
                season = library.add_season(
                    self.world.rng.choice(shows).rating_key, episodes=3, at=int(time.time())
                )
                item = library.children(season.rating_key)[0]
        response = plex.send_library_new(
            f"{self.gateway_url}/api/webhooks/plex", item, self.plex_token, library=library
        )
        log.info("library.new %r → gateway %s", item.title, response.status_code)
        return item

    def play_something(self) -> None:
        world = self.world
        with world.lock:
            item = world.rng.choice(playable(world.library))
            started = int(datetime.now(UTC).timestamp()) - item.duration_seconds
            play = world.history.add_play(item, started=started, percent_complete=world.rng.randint(40, 100))
        headers = {"Authorization": f"Bearer {self.tautulli_token}"} if self.tautulli_token else None
        response = tautulli.send_webhook(
            f"{self.gateway_url}/api/webhooks/tautulli",
            play,
            server_machine_id=world.library.machine_identifier,
            headers=headers,
        )
        log.info("Tautulli stop %r → gateway %s", play.item.full_title, response.status_code)

    def run(self, stop: threading.Event, every: float = 30.0) -> None:
        actions = [self.add_to_library, self.play_something]
        turn = 0
        while not stop.wait(every if turn else 5.0):
            try:
                actions[turn % len(actions)]()
            except Exception as exc:  # the gateway may be restarting; the demo just goes on
                log.warning("demo driver: %s", exc)
            turn += 1


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    # httpx logs every URL it posts to, and the driver posts Plex's webhooks with `?token=` like Plex does.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m simulators.demo")
    parser.add_argument("--port", type=int, help="loopback port to serve on (default: one the OS picks)")
    port = parser.parse_args(argv).port
    settings = get_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    world = build_world()
    with serve_in_thread(create_demo_app(world), port) as base_url:
        env: dict[str, Any] = service_env(base_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "demo.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        log.info("DEMO MODE: simulated Plex, Tautulli, Sonarr, Radarr and Overseerr at %s", base_url)
        plex_token, tautulli_token = (settings.source_token(source) for source in ("plex", "tautulli"))
        Driver(
            world,
            f"http://{settings.gateway_host}:{settings.gateway_port}",
            plex_token.get_secret_value() if plex_token else None,
            tautulli_token.get_secret_value() if tautulli_token else None,
        ).run(stop)


if __name__ == "__main__":
    main(sys.argv[1:])
