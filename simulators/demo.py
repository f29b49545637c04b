"""Demo mode: two SmartPlex users, each with a Plex server of their own, and the services around them,
simulated on one loopback port; plus a driver that makes things happen (new movies and seasons, plays)
and sends the webhooks real servers would send.

- Alice is the user the environment settings make (SMARTPLEX_OWNER_EMAIL): her Plex, Tautulli, Sonarr,
  Radarr and Overseerr are named by the SMARTPLEX_* settings written to `$SMARTPLEX_DATA_DIR/demo.env`,
  as a SmartPlex Sync user without SmartPlex would name them.
- Bob is a SmartPlex user as SmartPlex's own tables hold one: a `users` row with a webhook secret, his
  Plex server in `servers` (URL, token, machine id) and his Tautulli and Radarr in `integrations`,
  written here the way SmartPlex's sign-in and settings pages write them.
His library is another: his deliveries carry his secret and sync his server only.

`make run` starts this when no SMARTPLEX_PLEX_URL is configured; the tests use `build_world` and
`create_demo_app` to give flow runs real services to talk to. `python -m simulators.demo [--port N]` serves
it, writes demo.env and Bob's rows, and drives it until stopped. `make run` passes the same port on every
restart, so the worker's settings stay true.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from simulators import overseerr, plex, radarr, sonarr, tautulli
from simulators.plex_library import EPISODE, MOVIE, SHOW, Item, PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine
from smartplex_sync.store.tables import integrations, servers, users

log = logging.getLogger("smartplex.demo")

PLEX_TOKEN = "demo-plex-token"
TAUTULLI_KEY = "demo-tautulli-key"
SONARR_KEY = "demo-sonarr-key"
RADARR_KEY = "demo-radarr-key"
OVERSEERR_KEY = "demo-overseerr-key"
ALICE = "alice@demo.smartplex.local"
BOB = "bob@demo.smartplex.local"
_DEMO = uuid.UUID("9b1f3c2e-0d4a-4f6b-8e7c-5a2d1b0c3e4f")
ALICE_SECRET = "demo-alice-webhook-secret"
BOB_SECRET = "demo-bob-webhook-secret"
BOB_PREFIX = "/bob"  # Bob's Plex, Tautulli and Radarr are served under it


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


def build_world(
    *,
    seed: int = 0,
    movies: int = 120,
    shows: int = 6,
    plays: int = 300,
    friendly_name: str = "SmartPlex Demo",
) -> DemoWorld:
    library = PlexLibrary.generate(seed=seed, movies=movies, shows=shows, friendly_name=friendly_name)
    history = tautulli.TautulliHistory.generate(playable(library), plays=plays, days=30, seed=seed)
    plex_shows = [i for i in library.items.values() if i.type == SHOW]
    plex_movies = [i for i in library.items.values() if i.type == MOVIE]
    series = _catalogue(sonarr.generate_series(len(plex_shows) + 3, seed), plex_shows, "tvdbId", "tvdb")
    radarr_movies = _catalogue(
        radarr.generate_movies(len(plex_movies) + 5, seed), plex_movies, "tmdbId", "tmdb"
    )
    return DemoWorld(library, history, series, radarr_movies, random.Random(seed))


def _services(world: DemoWorld) -> FastAPI:
    """One user's Plex, Tautulli, Sonarr and Radarr under one app: /plex, /tautulli, /sonarr, /radarr."""
    app = FastAPI()
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
    return app


def create_demo_app(world: DemoWorld, bob: DemoWorld | None = None) -> FastAPI:
    """The first user's services at /plex, /tautulli, /sonarr, /radarr and /overseerr; the second's (if
    any) under /bob."""
    app = FastAPI(title="SmartPlex demo services")
    if bob is not None:
        app.mount(BOB_PREFIX, _services(bob))
    app.mount("/overseerr", overseerr.create_overseerr_app(api_key=OVERSEERR_KEY))
    app.mount("/", _services(world))
    return app


def service_env(base_url: str) -> dict[str, str]:
    """The SMARTPLEX_* settings that point the first user's server and services at `base_url`."""
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


def write_smartplex_rows(engine: Engine, base_url: str, alice: DemoWorld, bob: DemoWorld) -> None:
    """Alice's and Bob's SmartPlex rows, as SmartPlex's sign-in and settings pages write them: users with
    their webhook secret and Plex account, Bob's Plex server and his Tautulli and Radarr integrations.
    (Alice's server and services come from the settings in demo.env.) Idempotent."""
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    now = datetime.now(UTC)
    with engine.begin() as conn:
        people = (
            (ALICE, "Alice", ALICE_SECRET, alice.history.users[0]),
            (BOB, "Bob", BOB_SECRET, bob.history.users[1]),
        )
        for email, name, secret, player in people:
            values = {
                "webhook_secret": secret,
                "plex_username": player.username,
                "plex_user_id": str(player.user_id),
            }
            statement = insert(users).values(
                id=uuid.uuid5(_DEMO, email), email=email, display_name=name, role="admin", created_at=now,
                updated_at=now, preferences={}, **values,
            )  # fmt: skip
            conn.execute(statement.on_conflict_do_update(index_elements=["email"], set_=values))
        bob_id = conn.scalar(select(users.c.id).where(users.c.email == BOB))
        server_id = uuid.uuid5(_DEMO, "bob-plex")
        server = {
            "name": "Bob's Plex",
            "url": f"{base_url}{BOB_PREFIX}/plex",
            "plex_token": PLEX_TOKEN,
            "machine_id": bob.library.machine_identifier,
            "updated_at": now,
        }
        statement = insert(servers).values(
            id=server_id, user_id=bob_id, status="offline", created_at=now, config={}, **server
        )
        conn.execute(statement.on_conflict_do_update(index_elements=["id"], set_=server))
        for service, key in (("tautulli", TAUTULLI_KEY), ("radarr", RADARR_KEY)):
            values = {
                "url": f"{base_url}{BOB_PREFIX}/{service}",
                "api_key": key,
                "status": "active",
                "updated_at": now,
            }
            statement = insert(integrations).values(
                id=uuid.uuid5(_DEMO, f"bob-{service}"), user_id=bob_id, server_id=server_id, service=service,
                name=service.capitalize(), created_at=now, config={}, **values,
            )  # fmt: skip
            conn.execute(
                statement.on_conflict_do_update(index_elements=["user_id", "service", "name"], set_=values)
            )


class Driver:
    """Makes a user's world change and tells the gateway, as their real services would: Plex's webhooks
    with `?token=<secret>`, Tautulli's with the secret as a bearer token."""

    def __init__(self, world: DemoWorld, gateway_url: str, secret: str | None) -> None:
        self.world = world
        self.gateway_url = gateway_url.rstrip("/")
        self.secret = secret

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
            f"{self.gateway_url}/api/webhooks/plex", item, self.secret, library=library
        )
        log.info("%s: library.new %r → gateway %s", library.friendly_name, item.title, response.status_code)
        return item

    def play_something(self) -> None:
        world = self.world
        with world.lock:
            item = world.rng.choice(playable(world.library))
            started = int(datetime.now(UTC).timestamp()) - item.duration_seconds
            play = world.history.add_play(item, started=started, percent_complete=world.rng.randint(40, 100))
        headers = {"Authorization": f"Bearer {self.secret}"} if self.secret else None
        response = tautulli.send_webhook(
            f"{self.gateway_url}/api/webhooks/tautulli",
            play,
            server_machine_id=world.library.machine_identifier,
            headers=headers,
        )
        log.info(
            "%s: Tautulli stop %r → gateway %s",
            world.library.friendly_name,
            play.item.full_title,
            response.status_code,
        )

    def run(self, stop: threading.Event, every: float = 30.0, first: float = 5.0) -> None:
        actions = [self.add_to_library, self.play_something]
        turn = 0
        while not stop.wait(every if turn else first):
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
    alice = build_world(friendly_name="Alice's Plex")
    bob = build_world(seed=1, movies=60, shows=4, plays=150, friendly_name="Bob's Plex")
    with serve_in_thread(create_demo_app(alice, bob), port) as base_url:
        write_smartplex_rows(get_engine(settings.sqlalchemy_url), base_url, alice, bob)
        env: dict[str, Any] = {
            **service_env(base_url),
            "SMARTPLEX_OWNER_EMAIL": ALICE,
            "SMARTPLEX_PLEX_SERVER_NAME": alice.library.friendly_name,
        }
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "demo.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        log.info("DEMO MODE: Alice's and Bob's Plex, Tautulli, Sonarr, Radarr and Overseerr at %s", base_url)
        gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
        drivers = [Driver(alice, gateway, ALICE_SECRET), Driver(bob, gateway, BOB_SECRET)]
        threading.Thread(target=drivers[1].run, args=(stop,), kwargs={"first": 20.0}, daemon=True).start()
        drivers[0].run(stop)


if __name__ == "__main__":
    main(sys.argv[1:])
