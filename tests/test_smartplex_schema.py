"""Against SmartPlex's own database, built from SmartPlex's own SQL as an operator pastes it
(`tests/support/smartplex_schema.py`): `migrate` adds only what is missing and changes nothing of
SmartPlex's; then the gateway, every sync and the status route run on it for two users with a Plex server
each, and SmartPlex's own views, functions and deletion-candidate rule, read over our rows, say what the
simulated services' truth says. The schedule mirror on this database is in test_schedules_prefect.py."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url

from simulators import plex as plex_sim
from simulators import tautulli
from simulators.demo import (
    ALICE,
    ALICE_SECRET,
    BOB_SECRET,
    DemoWorld,
    create_demo_app,
    playable,
    service_env,
    write_smartplex_rows,
)
from simulators.plex_library import EPISODE, MOVIE, SEASON, SHOW, Item, PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.models import Deployment
from smartplex_sync.requests import (
    OverseerrSync,
    PlexLibrarySync,
    RadarrSync,
    SonarrSync,
    TautulliScope,
    TautulliSync,
)
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import make_engine
from smartplex_sync.store.accounts import configure
from smartplex_sync.store.engine import OWN_SCHEMA
from smartplex_sync.store.tables import OWN_TABLES, media_items, servers, users
from tests.conftest import _fresh_postgres_database, settings_of
from tests.support.pipeline import dispatch, flows_in_process
from tests.support.smartplex_schema import apply_smartplex_schema
from tests.test_migrations import catalog
from webhook_gateway.app import create_app

OUR_COLUMNS = {
    ("webhook_log", "action"),
    ("webhook_log", "http_status"),
    ("overseerr_requests", "integration_id"),
}
ADMIN_TOKEN = "smartplex-schema-admin-token"
GRACE_DAYS, INACTIVITY_DAYS = 30, 15  # SmartPlex's deletion rule defaults (deletion_rules, 002)


@pytest.fixture(scope="module")
def smartplex_database(postgres_admin_url: str) -> Iterator[tuple[str, Any]]:
    url = _fresh_postgres_database(postgres_admin_url)
    applied = apply_smartplex_schema(url)
    yield url, applied


def test_smartplex_files_apply_as_the_operator_pastes_them(smartplex_database: tuple[str, Any]) -> None:
    """The measured fact: every file applies whole but 002_add_deletion_tables.sql (its trigger exists)."""
    _, applied = smartplex_database
    assert applied.statement_by_statement == ["002_add_deletion_tables.sql"]


def _public(found: dict[str, list[tuple[Any, ...]]]) -> dict[str, set[tuple[Any, ...]]]:
    """The catalog rows of SmartPlex's schema (ours, named `smartplex_sync` or `smartplex_sync.x`, left out)."""

    def ours(row: tuple[Any, ...]) -> bool:
        return str(row[0]) == OWN_SCHEMA or str(row[0]).startswith(f"{OWN_SCHEMA}.")

    return {
        name: {row for row in rows if not ours(row)} for name, rows in found.items() if name != "migrations"
    }


def test_migrate_adds_only_what_is_missing_and_never_touches_smartplex(
    smartplex_database: tuple[str, Any],
) -> None:
    url, _ = smartplex_database
    engine = make_engine(url)
    with engine.connect() as conn:
        before = _public(catalog(conn))
    assert migrate(engine) == ["0001", "0002"]
    assert migrate(engine) == []  # and again: a no-op
    with engine.connect() as conn:
        found = catalog(conn)
    after = _public(found)
    for name in before:  # nothing of SmartPlex's changed, nothing went
        assert before[name] <= after[name], (name, sorted(before[name] - after[name])[:5])
    added = {name: after[name] - before[name] for name in before}
    assert {(row[1], row[2]) for row in added["columns"]} == OUR_COLUMNS
    assert added["relations"] == set() and added["indexes"] == set() and added["policies"] == set()
    assert added["triggers"] == set() and added["functions"] == set() and added["types"] == set()
    assert {row[1] for row in added["constraints"]} == {"overseerr_requests_integration_id_fkey"}
    ours = {row[1] for row in found["relations"] if row[0] == OWN_SCHEMA and row[2] == "r"}
    assert ours == {t.name for t in OWN_TABLES}
    secured = {row[1]: row[3] for row in found["relations"] if row[0] == OWN_SCHEMA and row[2] == "r"}
    assert all(secured.values()), secured
    engine.dispose()


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_the_data_api_roles_cannot_read_our_tables(smartplex_database: tuple[str, Any], role: str) -> None:
    """SmartPlex's rls.sql grants them every table of `public`; ours are in a schema they cannot enter."""
    url, _ = smartplex_database
    migrate(make_engine(url))
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as conn:
        for table in OWN_TABLES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute(f"SELECT count(*) FROM {OWN_SCHEMA}.{table.name}")


# ------------------------------------------------------------------------------ two users, two servers


def _world(seed: int, name: str) -> DemoWorld:
    """A library that keeps its trash (so some items are unavailable), plays over the last 60 days."""
    library = PlexLibrary.generate(
        seed=seed, movies=30, shows=3, seasons_per_show=2, episodes_per_season=4, friendly_name=name,
        empty_trash_after_scan=False,
    )  # fmt: skip
    forgotten = min(i.rating_key for i in library.items.values() if i.type == SHOW)  # nobody watches it
    watched = [i for i in playable(library) if i.grandparent_rating_key != forgotten]
    history = tautulli.TautulliHistory.generate(watched, plays=160, days=60, seed=seed)
    return DemoWorld(library, history, [], [], random.Random(seed))


def _trash_some(library: PlexLibrary, rng: random.Random) -> None:
    movies = [i for i in library.items.values() if i.type == MOVIE]
    for movie in rng.sample(movies, 3):
        library.delete_files(movie.rating_key)
    library.scan(next(s.key for s in library.sections.values() if s.type == MOVIE))


@dataclass
class Pipeline:
    engine: Engine
    alice: DemoWorld
    bob: DemoWorld
    server_of: dict[str, uuid.UUID]  # machine id → servers.id
    gateway: TestClient


@pytest.fixture(scope="module")
def pipeline(smartplex_database: tuple[str, Any]) -> Iterator[Pipeline]:
    url, _ = smartplex_database
    engine = make_engine(url)
    migrate(engine)
    alice, bob = _world(11, "Alice's Plex"), _world(12, "Bob's Plex")
    with serve_in_thread(create_demo_app(alice, bob)) as base, pytest.MonkeyPatch.context() as patch:
        env = {**service_env(base), "SMARTPLEX_DATABASE_URL": url, "SMARTPLEX_OWNER_EMAIL": ALICE}
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setenv("SMARTPLEX_RATE_LIMIT_PER_SECOND", "0")
        patch.setenv("SMARTPLEX_ADMIN_TOKEN", ADMIN_TOKEN)
        get_settings.cache_clear()
        write_smartplex_rows(engine, base, alice, bob)
        configure(engine, Settings(**settings_of(env)))
        flows_in_process(patch)
        with engine.connect() as conn:
            server_of = dict(conn.execute(select(servers.c.machine_id, servers.c.id)).all())
        server_of[alice.library.machine_identifier] = next(v for k, v in server_of.items() if k is None)
        with TestClient(create_app(Settings(), background=False), base_url="http://127.0.0.1") as gateway:
            yield Pipeline(engine, alice, bob, server_of, gateway)
    get_settings.cache_clear()
    engine.dispose()


def _deliver_new_movie(p: Pipeline, world: DemoWorld, secret: str) -> dict[str, Any]:
    movie = world.library.add_movie(next(s.key for s in world.library.sections.values() if s.type == MOVIE),
                                    at=int(datetime.now(UTC).timestamp()))  # fmt: skip
    answer = p.gateway.post(
        "/api/webhooks/plex",
        params={"token": secret},
        data={"payload": json.dumps(plex_sim.library_new_payload(world.library, movie))},
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_two_users_deliveries_sync_their_own_servers_only(pipeline: Pipeline) -> None:
    p = pipeline
    for world in (p.alice, p.bob):
        _trash_some(world.library, world.rng)
    first = _deliver_new_movie(p, p.alice, ALICE_SECRET)
    second = _deliver_new_movie(p, p.bob, BOB_SECRET)
    alice_server = p.server_of[p.alice.library.machine_identifier]
    bob_server = p.server_of[p.bob.library.machine_identifier]
    assert list(first["sync_requests"][0]["parameters"]["servers"]) == [str(alice_server)]
    assert list(second["sync_requests"][0]["parameters"]["servers"]) == [str(bob_server)]
    # Bob's secret with a delivery of Alice's server: refused, nothing queued.
    movie = next(i for i in p.alice.library.items.values() if i.type == MOVIE)
    refused = p.gateway.post(
        "/api/webhooks/plex",
        params={"token": BOB_SECRET},
        data={"payload": json.dumps(plex_sim.library_new_payload(p.alice.library, movie))},
    )
    assert refused.status_code == 422 and refused.json()["error"] == "unattributed"
    with p.engine.connect() as conn:
        logged = {
            row.id: row
            for row in conn.execute(text("SELECT id, user_id, server_id, processed, action FROM webhook_log"))
        }
        owners = dict(conn.execute(select(users.c.email, users.c.id)).all())
    assert logged[uuid.UUID(first["id"])].server_id == alice_server
    assert logged[uuid.UUID(second["id"])].user_id == owners["bob@demo.smartplex.local"]
    assert logged[uuid.UUID(refused.json()["id"])].action == "rejected"
    # One merged run serves both deliveries, each on its own server (same rating keys, other items).
    result = dispatch(p.engine, Deployment.PLEX_LIBRARY_SYNC)
    assert set(result["servers"]) == {str(alice_server), str(bob_server)}
    with p.engine.connect() as conn:
        guide = conn.execute(
            text("SELECT source, event_type, received_at, processed, error_message FROM webhook_log "
                 "WHERE http_status = 202 ORDER BY received_at DESC LIMIT 10")
        ).all()  # fmt: skip
    assert guide and all(row.processed and row.error_message is None for row in guide)


def _full_syncs(p: Pipeline) -> None:
    from tests.support.pipeline import FLOWS

    for deployment, request in (
        (Deployment.PLEX_LIBRARY_SYNC, PlexLibrarySync()),
        (Deployment.TAUTULLI_SYNC, TautulliSync.on(p.server_of.values(), TautulliScope(days=0))),
        (Deployment.SONARR_SYNC, SonarrSync()),
        (Deployment.RADARR_SYNC, RadarrSync()),
        (Deployment.OVERSEERR_SYNC, OverseerrSync()),
    ):
        FLOWS[deployment](request, "scheduled")


@dataclass(frozen=True)
class Truth:
    """One row's truth, from the simulators."""

    server: uuid.UUID
    item: Item
    plays: list[tautulli.Play]

    @property
    def complete(self) -> int:
        return sum(1 for play in self.plays if play.percent_complete >= 90)

    @property
    def last_watched(self) -> datetime | None:
        return datetime.fromtimestamp(max(p.stopped for p in self.plays), UTC) if self.plays else None

    @property
    def avg_percent(self) -> float | None:
        return round(sum(p.percent_complete for p in self.plays) / len(self.plays), 2) if self.plays else None


def _plays_of(item: Item, plays: list[tautulli.Play]) -> list[tautulli.Play]:
    if item.type == SHOW:
        return [p for p in plays if p.item.grandparent_rating_key == item.rating_key]
    if item.type == SEASON:
        return [p for p in plays if p.item.parent_rating_key == item.rating_key]
    return [p for p in plays if p.item.rating_key == item.rating_key]


def truths(p: Pipeline) -> dict[tuple[uuid.UUID, str], Truth]:
    found = {}
    for world in (p.alice, p.bob):
        server = p.server_of[world.library.machine_identifier]
        for item in world.library.visible_items():
            found[(server, str(item.rating_key))] = Truth(server, item, _plays_of(item, world.history.plays))
    return found


def _ids(engine: Engine) -> dict[uuid.UUID, tuple[uuid.UUID, str]]:
    with engine.connect() as conn:
        return {row.id: (row.server_id, row.plex_id) for row in conn.execute(
            select(media_items.c.id, media_items.c.server_id, media_items.c.plex_id))}  # fmt: skip


def _view(engine: Engine, query: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text(query)).all()


def test_smartplex_views_and_functions_read_the_truth(pipeline: Pipeline) -> None:
    p = pipeline
    _full_syncs(p)
    truth = truths(p)
    ids = _ids(p.engine)
    assert set(ids.values()) == set(truth)  # every item Plex lists, on its own server, trashed ones too

    # inaccessible_files: what Plex keeps in its trash
    inaccessible = {ids[row.id] for row in _view(p.engine, "SELECT id FROM inaccessible_files")}
    assert inaccessible == {key for key, t in truth.items() if t.item.deleted_at is not None}
    assert len(inaccessible) == 6

    # storage_quality_analysis: files by resolution, codec and container
    expected: dict[tuple[Any, ...], list[int]] = {}
    for t in truth.values():
        sizes = [part.size for media in t.item.media for part in media.parts]
        if sizes:
            media = t.item.media[0]
            group = expected.setdefault((media.video_resolution, media.video_codec, media.container), [0, 0])
            group[0] += 1
            group[1] += sum(sizes)
    analysis = {
        (row.video_resolution, row.video_codec, row.container): [row.item_count, row.total_bytes]
        for row in _view(p.engine, "SELECT * FROM storage_quality_analysis")
    }
    assert analysis == expected

    # abandoned_content and low_completion_content: plays of every user, per row (seasons and shows too)
    def abandoned(t: Truth) -> bool:
        return bool(t.plays) and t.complete == 0 and t.avg_percent is not None and t.avg_percent < 50

    def low(t: Truth) -> bool:
        return len(t.plays) >= 3 and t.complete / len(t.plays) < 0.3

    assert {ids[r.id] for r in _view(p.engine, "SELECT id FROM abandoned_content")} == {
        k for k, t in truth.items() if abandoned(t)
    }
    assert {ids[r.id] for r in _view(p.engine, "SELECT id FROM low_completion_content")} == {
        k for k, t in truth.items() if low(t)
    }
    assert any(abandoned(t) for t in truth.values()) and any(low(t) for t in truth.values())

    # get_unwatched_shows(): episodes grouped by show title (SmartPlex groups across servers)
    now = datetime.now(UTC)
    shows: dict[str, list[Truth]] = {}
    for t in truth.values():
        if t.item.type == EPISODE:
            title = next(s.item.title for s in truth.values() if s.server == t.server
                         and s.item.rating_key == t.item.grandparent_key)  # fmt: skip
            shows.setdefault(title, []).append(t)
    unwatched = {
        title
        for title, episodes in shows.items()
        if min(datetime.fromtimestamp(e.item.added_at, UTC) for e in episodes)
        < now - timedelta(days=GRACE_DAYS)
        and all(
            e.last_watched is None or e.last_watched < now - timedelta(days=INACTIVITY_DAYS) for e in episodes
        )
    }
    found = {row.show_title: row for row in _view(p.engine, "SELECT * FROM get_unwatched_shows()")}
    assert set(found) == unwatched
    assert 0 < len(unwatched) < len(shows), (unwatched, list(shows))  # the rule tells shows apart
    for title in unwatched:
        assert found[title].total_episodes == len(shows[title])


def smartplex_deletion_candidates(rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """SmartPlex's `DeletionService.scan_for_candidates` (apps/api deletion_service.py), checks 1 and 2
    (grace on `metadata.plex_added_at`, else `added_at`; inactivity on `last_watched_at`, else the date
    added), as it reads our rows."""
    grace_cutoff = now - timedelta(days=GRACE_DAYS)
    inactivity_cutoff = now - timedelta(days=INACTIVITY_DAYS)
    candidates = []
    for item in rows:
        metadata = item.get("metadata", {})
        plex_added_at = metadata.get("plex_added_at") if isinstance(metadata, dict) else None
        if plex_added_at:
            if "Z" not in plex_added_at and "+" not in plex_added_at:
                plex_added_at += "+00:00"
            date_added = datetime.fromisoformat(plex_added_at.replace("Z", "+00:00"))
        elif item.get("added_at"):
            date_added = item["added_at"]
        else:
            continue
        if date_added > grace_cutoff:
            continue
        last_viewed = item.get("last_watched_at") or date_added
        if last_viewed > inactivity_cutoff:
            continue
        candidates.append(item)
    return candidates


def test_smartplex_deletion_rule_over_our_rows_picks_what_the_truth_says(pipeline: Pipeline) -> None:
    p = pipeline
    _full_syncs(p)
    now = datetime.now(UTC)
    with p.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(media_items))]
    picked = {(r["server_id"], r["plex_id"]) for r in smartplex_deletion_candidates(rows, now)}
    expected = set()
    for key, t in truths(p).items():
        added = datetime.fromtimestamp(t.item.added_at, UTC)
        last = t.last_watched or added
        if added <= now - timedelta(days=GRACE_DAYS) and last <= now - timedelta(days=INACTIVITY_DAYS):
            expected.add(key)
    assert picked == expected
    assert 0 < len(picked) < len(rows)
    recent = {
        key for key, t in truths(p).items() if t.last_watched and t.last_watched > now - timedelta(days=15)
    }
    assert recent and not recent & picked  # watched lately: never a candidate, shows and seasons included


def test_user_stats_hold_the_plays_of_smartplex_users(pipeline: Pipeline) -> None:
    p = pipeline
    _full_syncs(p)
    with p.engine.connect() as conn:
        people = {
            row.email: row for row in conn.execute(select(users.c.id, users.c.email, users.c.plex_username))
        }
        stats = conn.execute(
            text("SELECT u.email, m.server_id, m.plex_id, s.play_count FROM user_stats s "
                 "JOIN users u ON u.id = s.user_id JOIN media_items m ON m.id = s.media_item_id")
        ).all()  # fmt: skip
    found = {(r.email, r.server_id, r.plex_id): r.play_count for r in stats}
    expected: dict[tuple[str, uuid.UUID, str], int] = {}
    for world in (p.alice, p.bob):
        server = p.server_of[world.library.machine_identifier]
        for play in world.history.plays:
            for email, person in people.items():
                if person.plex_username == play.user.username and play.item.media_type in (MOVIE, EPISODE):
                    key = (email, server, str(play.item.rating_key))
                    expected[key] = expected.get(key, 0) + 1
    assert found == expected and found


def test_every_run_leaves_smartplex_sync_events_and_tautulli_history(pipeline: Pipeline) -> None:
    p = pipeline
    _full_syncs(p)
    with p.engine.connect() as conn:
        events = conn.execute(
            text("SELECT sync_type, trigger_type, status, server_id, user_id FROM sync_events")
        ).all()
        history = conn.execute(
            text(
                "SELECT server_id, status, items_processed FROM sync_history WHERE sync_type = 'tautulli_aggregated_stats'"
            )
        ).all()
    both = set(p.server_of.values())
    for service in ("plex", "tautulli"):
        assert {
            e.server_id for e in events if e.sync_type == service and e.trigger_type == "scheduled"
        } == both
    assert all(e.status == "completed" for e in events), [e for e in events if e.status != "completed"]
    assert {h.server_id for h in history} == both
    assert {h.items_processed for h in history if h.items_processed} == {
        len(w.history.plays) for w in (p.alice, p.bob)
    }


def test_the_status_route_reads_our_rows_and_smartplex_own(pipeline: Pipeline) -> None:
    p = pipeline
    with p.engine.begin() as conn:  # a row as SmartPlex's own webhook route writes it
        conn.execute(
            text("INSERT INTO webhook_log (source, event_type, payload) VALUES ('plex', 'media.play', '{}')")
        )
    answer = p.gateway.get("/api/webhooks/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total_webhooks"] >= 4
    assert any(row["action"] is None for row in body["recent_webhooks"])
