"""What each run did in SmartPlex's words (store/events.py): the `sync_events` row of a server's part, and
the `sync_history` row of a Tautulli sync, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select

from smartplex_sync.store.events import (
    TAUTULLI_SYNC_TYPE,
    Counts,
    finish_event,
    record_tautulli_history,
    start_event,
)
from smartplex_sync.store.tables import integrations, servers, sync_events, sync_history
from tests.conftest import both_backends
from tests.support.factories import add_integration, owner_and_server

T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)


def _start(engine: Engine, user_id: uuid.UUID, server_id: uuid.UUID, **extra: object) -> uuid.UUID:
    values = dict(sync_type="tautulli", user_id=user_id, server_id=server_id, integration_id=None,
                  trigger="webhook", started_at=T0, metadata={"flow": "tautulli-sync", "flow_run_id": "run-1"})  # fmt: skip
    values.update(extra)
    with engine.begin() as conn:
        return start_event(conn, **values)  # type: ignore[arg-type]


@both_backends
def test_an_event_is_running_from_the_start_and_closed_with_its_counts(engine: Engine) -> None:
    user_id, server_id = owner_and_server(engine)
    with engine.begin() as conn:
        integration_id = add_integration(conn, user_id, "tautulli", server_id=server_id)
    event_id = _start(engine, user_id, server_id, integration_id=integration_id)
    with engine.connect() as conn:
        running = conn.execute(select(sync_events)).one()
    assert (running.id, running.status, running.trigger_type, running.started_at) == (
        event_id,
        "running",
        "webhook",
        T0,
    )
    assert (running.user_id, running.server_id, running.integration_id) == (
        user_id,
        server_id,
        integration_id,
    )
    assert (running.completed_at, running.sync_metadata["flow_run_id"]) == (None, "run-1")

    with engine.begin() as conn:
        finish_event(
            conn,
            event_id,
            counts=Counts(discovered=12, new=3, updated=4, removed=1, failed=0),
            completed_at=T0 + timedelta(seconds=5),
            duration_ms=5000,
            metadata={"flow": "tautulli-sync", "flow_run_id": "run-1", "plays_fetched": 12},
        )
    with engine.connect() as conn:
        done = conn.execute(select(sync_events)).one()
    assert (done.status, done.error_message, done.error_details, done.duration_ms) == (
        "completed",
        None,
        None,
        5000,
    )
    assert (
        done.items_discovered,
        done.items_new,
        done.items_updated,
        done.items_removed,
        done.items_failed,
    ) == (
        12,
        3,
        4,
        1,
        0,
    )
    assert (done.completed_at, done.sync_metadata["plays_fetched"]) == (T0 + timedelta(seconds=5), 12)


@both_backends
def test_a_failed_part_keeps_its_error_and_a_dead_run_stays_running(engine: Engine) -> None:
    user_id, server_id = owner_and_server(engine)
    failed = _start(engine, user_id, server_id, sync_type="plex", trigger="scheduled")
    died = _start(engine, user_id, server_id, sync_type="plex", trigger="manual")
    with engine.begin() as conn:
        finish_event(conn, failed, counts=Counts(failed=2), completed_at=T0, duration_ms=10,
                     error="x" * 5000, details={"status": 401})  # fmt: skip
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(sync_events))}
    assert (rows[failed].status, len(rows[failed].error_message), rows[failed].error_details) == (
        "failed",
        2000,
        {"status": 401},
    )
    assert rows[failed].items_failed == 2
    assert rows[failed].sync_metadata == {
        "flow": "tautulli-sync",
        "flow_run_id": "run-1",
    }  # kept when not given
    assert (rows[died].status, rows[died].completed_at, rows[died].trigger_type) == (
        "running",
        None,
        "manual",
    )


@both_backends
def test_an_event_outlives_its_server_and_integration(engine: Engine) -> None:
    """SmartPlex's keys: a deleted server or integration leaves the history, without the link."""
    user_id, server_id = owner_and_server(engine)
    with engine.begin() as conn:
        integration_id = add_integration(conn, user_id, "sonarr", server_id=None)
    _start(engine, user_id, server_id, sync_type="sonarr", integration_id=integration_id)
    with engine.begin() as conn:
        conn.execute(delete(integrations).where(integrations.c.id == integration_id))
        conn.execute(delete(servers).where(servers.c.id == server_id))
        event = conn.execute(select(sync_events)).one()
    assert (event.user_id, event.server_id, event.integration_id) == (user_id, None, None)


@both_backends
def test_a_tautulli_sync_writes_the_sync_history_row_smartplex_reads(engine: Engine) -> None:
    user_id, server_id = owner_and_server(engine)
    with engine.begin() as conn:
        record_tautulli_history(conn, user_id=user_id, server_id=server_id, plays=40, new_plays=7, items_updated=9,
                                started_at=T0, completed_at=T0 + timedelta(seconds=3), error=None,
                                metadata={"mode": "last 7 days"})  # fmt: skip
        record_tautulli_history(conn, user_id=user_id, server_id=server_id, plays=0, new_plays=0, items_updated=0,
                                started_at=T0, completed_at=T0, error="e" * 3000, metadata={})  # fmt: skip
        rows = conn.execute(select(sync_history).order_by(sync_history.c.items_processed)).all()
    failed, done = rows
    assert (done.sync_type, done.status, done.user_id, done.server_id) == (
        TAUTULLI_SYNC_TYPE,
        "completed",
        user_id,
        server_id,
    )
    assert TAUTULLI_SYNC_TYPE == "tautulli_aggregated_stats"
    assert (done.items_processed, done.items_added, done.items_updated, done.items_removed) == (40, 7, 9, 0)
    assert (done.started_at, done.completed_at, done.error_message, done.metadata) == (
        T0,
        T0 + timedelta(seconds=3),
        None,
        {"mode": "last 7 days"},
    )
    assert (failed.status, len(failed.error_message)) == ("failed", 2000)
