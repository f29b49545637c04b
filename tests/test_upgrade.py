"""A database made by SmartPlex Sync 0.1 (tables of its own design) upgrades with `migrate`, on SQLite and
on PostgreSQL, keeping every webhook_log and media_items row and the work still queued."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select, text

from smartplex_sync.migrate import migrate, missing
from smartplex_sync.models import Deployment
from smartplex_sync.requests import PARAMETERS, OverseerrSync, PlexLibrarySync, SonarrSync, TautulliSync
from smartplex_sync.store import make_engine, queue
from smartplex_sync.store.accounts import configure_from_settings, env_server_id
from smartplex_sync.store.tables import media_items, servers, sync_schedule, users, watch_history, webhook_log
from tests.support import release_0_1
from tests.support.release_0_1 import MACHINE, MEDIA, OTHER_MACHINE, WEBHOOKS
from webhook_gateway.batching import new_batch

OWNER = "owner@example.com"


@pytest.fixture(params=["sqlite", "postgres"])
def release_database(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        from tests.conftest import _fresh_postgres_database

        url = _fresh_postgres_database(request.getfixturevalue("postgres_admin_url"))
    engine = make_engine(url)
    release_0_1.create(engine)
    release_0_1.fill(engine)
    yield engine
    engine.dispose()


def _payload(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _old_rows(engine: Engine) -> tuple[list[tuple[Any, ...]], dict[tuple[str, str], tuple[Any, ...]]]:
    with engine.connect() as conn:
        deliveries = sorted(
            (r.source, r.event_type, json.dumps(_payload(r.payload), sort_keys=True), bool(r.processed),
             r.error_message, r.action, r.http_status)
            for r in conn.execute(text("SELECT * FROM webhook_log"))
        )  # fmt: skip
        items = {
            (r.server_id, r.rating_key): (
                r.type,
                r.title,
                r.file_size_bytes,
                r.total_play_count,
                r.show_title,
            )
            for r in conn.execute(text("SELECT * FROM media_items"))
        }
    return deliveries, items


def test_a_release_0_1_database_upgrades_keeping_every_row(release_database: Engine) -> None:
    engine = release_database
    old_deliveries, old_items = _old_rows(engine)
    assert len(old_deliveries) == len(WEBHOOKS) and len(old_items) == len(MEDIA)

    done = migrate(engine, owner_email=OWNER)
    assert done and done[0].startswith("upgraded SmartPlex Sync 0.1's tables")
    assert migrate(engine, owner_email=OWNER) == []
    assert missing(engine) == []
    assert not any(name.startswith("legacy_") for name in inspect(engine).get_table_names())

    with engine.connect() as conn:
        owner = conn.scalar(select(users.c.id).where(users.c.email == OWNER))
        server_of = dict(conn.execute(select(servers.c.machine_id, servers.c.id)).all())
        deliveries = conn.execute(select(webhook_log)).all()
        items = conn.execute(select(media_items)).all()
        plays = conn.execute(select(watch_history)).all()
        schedule = {r.service: r for r in conn.execute(select(sync_schedule))}
    assert set(server_of) == {MACHINE, OTHER_MACHINE}
    assert server_of[MACHINE] == env_server_id(owner)  # SMARTPLEX_PLEX_URL will fill its URL and token
    assert sorted(
        (r.source, r.event_type, json.dumps(r.payload, sort_keys=True), bool(r.processed), r.error_message,
         r.action, r.http_status) for r in deliveries
    ) == old_deliveries  # fmt: skip
    assert {r.user_id for r in deliveries} == {owner}
    plex = next(r for r in deliveries if r.source == "plex")
    assert plex.server_id == server_of[MACHINE]  # Server.uuid named it
    by_key = {(r.server_id, r.plex_id): r for r in items}
    assert set(by_key) == {(server_of[m], k) for m, k in old_items}
    for (machine, key), (kind, title, size, played, show) in old_items.items():
        row = by_key[(server_of[machine], key)]
        assert (row.type, row.title, row.file_size_bytes, row.total_play_count) == (kind, title, size, played)
        assert row.metadata["plex_added_at"].startswith("2025-")
        if kind == "episode":
            assert row.parent_title == row.grandparent_title == show
    assert len(plays) == 5 and {p.server_id for p in plays} == {server_of[MACHINE]}
    assert schedule["tautulli"].interval_hours == 4 and schedule["tautulli"].user_id == owner

    # The queue: the Tautulli request still waits; the Sonarr delivery recorded before 0.1 had a queue
    # is queued now; both read as today's parameters, on the server; the Overseerr batch kept its link.
    waiting = queue.pending_requests(engine)
    assert sorted(r.deployment.value for r in waiting) == [
        "plex-library-sync",
        "sonarr-sync",
        "tautulli-sync",
    ]
    for deployment in {r.deployment for r in waiting}:
        merged = new_batch(deployment, [r for r in waiting if r.deployment is deployment]).parameters
        assert list(merged.servers or ()) == [server_of[MACHINE]]
    scopes = {r.deployment: PARAMETERS[r.deployment].model_validate(r.parameters) for r in waiting}
    assert isinstance(scopes[Deployment.TAUTULLI_SYNC], TautulliSync)
    assert scopes[Deployment.TAUTULLI_SYNC].scope_for(server_of[MACHINE]).rating_keys == ["102"]
    assert isinstance(scopes[Deployment.PLEX_LIBRARY_SYNC], PlexLibrarySync)
    assert scopes[Deployment.PLEX_LIBRARY_SYNC].scope_for(server_of[MACHINE]).section_types == ["show"]
    assert isinstance(scopes[Deployment.SONARR_SYNC], SonarrSync)
    [batch] = queue.open_batches(engine)
    assert isinstance(OverseerrSync.model_validate(batch.parameters), OverseerrSync)
    with engine.connect() as conn:
        overseerr = next(r for r in deliveries if r.event_type == "MEDIA_APPROVED")
        assert queue.requests_of(conn, overseerr.id)


def test_the_settings_then_fill_in_the_upgraded_server(release_database: Engine) -> None:
    engine = release_database
    migrate(engine, owner_email=OWNER)
    configured = configure_from_settings(
        engine, owner_email=OWNER, plex_url="http://plex.lan:32400", plex_token="token",
        plex_server_name="Home", services={},
    )  # fmt: skip
    assert configured is not None
    with engine.connect() as conn:
        row = conn.execute(select(servers).where(servers.c.id == configured.server_id)).one()
    assert (row.url, row.plex_token, row.name, row.machine_id) == (
        "http://plex.lan:32400",
        "token",
        "Home",
        MACHINE,
    )
