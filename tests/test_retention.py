"""webhook-retention deletes old processed deliveries and never an unprocessed one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from flows.retention import retention_cutoff
from smartplex_sync.store.tables import webhook_log
from smartplex_sync.store.webhooks import delete_processed_before
from tests.conftest import both_backends

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def insert(engine: Engine, event_type: str, age_days: float, processed: bool) -> None:
    with engine.begin() as conn:
        conn.execute(
            webhook_log.insert().values(
                source="plex",
                event_type=event_type,
                payload={},
                received_at=NOW - timedelta(days=age_days),
                processed=processed,
                action="ignored",
                http_status=202,
                sync_requests=[],
            )
        )


def test_cutoff_is_days_before_now() -> None:
    assert retention_cutoff(NOW, 30) == datetime(2025, 5, 2, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        retention_cutoff(NOW, 0)


@both_backends
def test_deletes_old_processed_rows_only(engine: Engine) -> None:
    insert(engine, "old-done", 31, processed=True)
    insert(engine, "old-pending", 90, processed=False)
    insert(engine, "recent-done", 29, processed=True)
    insert(engine, "recent-pending", 1, processed=False)

    assert delete_processed_before(engine, retention_cutoff(NOW, 30)) == 1

    with engine.connect() as conn:
        left = set(conn.execute(select(webhook_log.c.event_type)).scalars())
    assert left == {"old-pending", "recent-done", "recent-pending"}
    assert delete_processed_before(engine, retention_cutoff(NOW, 30)) == 0
