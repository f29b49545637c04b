"""webhook_log: record a delivery (and queue its sync requests), summarise, clean up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, delete, func, select

from smartplex_sync.requests import SyncRequest
from smartplex_sync.store import queue
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import webhook_log


def _storable(value: Any) -> Any:
    """PostgreSQL's text and jsonb cannot hold NUL characters: store them as U+FFFD instead."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def record(
    engine: Engine,
    *,
    source: str,
    event_type: str,
    payload: Any,
    action: str,
    requests: Sequence[SyncRequest] = (),
    http_status: int = 202,
    error_message: str | None = None,
    received_at: datetime | None = None,
    scan_grace: timedelta = timedelta(),
) -> int:
    """Insert one delivery and queue its sync requests, in one transaction; return its id. Deliveries
    without sync requests are done at once. `scan_grace` holds back requests that wait for Plex's scan."""
    now = utcnow()
    received_at = received_at or now
    done = not requests
    with engine.begin() as conn:
        row_id = conn.execute(
            webhook_log.insert()
            .values(
                source=source,
                event_type=_storable(event_type),
                payload=_storable(payload),
                received_at=received_at,
                processed=done,
                processed_at=now if done else None,
                error_message=_storable(error_message),
                action=action,
                http_status=http_status,
                sync_requests=_storable([r.to_json() for r in requests]),
            )
            .returning(webhook_log.c.id)
        ).scalar_one()
        queue.enqueue(conn, row_id, received_at, requests, scan_grace)
    return row_id


def get(engine: Engine, delivery_id: int) -> dict[str, Any] | None:
    """One delivery, payload included (for replay), or None."""
    with engine.connect() as conn:
        row = conn.execute(select(webhook_log).where(webhook_log.c.id == delivery_id)).one_or_none()
    return row._asdict() if row else None


_LISTED = (
    webhook_log.c.id,
    webhook_log.c.source,
    webhook_log.c.event_type,
    webhook_log.c.received_at,
    webhook_log.c.processed,
    webhook_log.c.processed_at,
    webhook_log.c.action,
    webhook_log.c.http_status,
    webhook_log.c.flow_run_id,
    webhook_log.c.error_message,
)


def summary(engine: Engine, *, recent: int = 20) -> dict[str, Any]:
    """Counts per source and the most recent deliveries, for the status endpoint. Never the payloads."""
    with engine.connect() as conn:
        per_source = conn.execute(
            select(
                webhook_log.c.source,
                func.count(),
                func.sum(case((webhook_log.c.processed.is_(False), 1), else_=0)),
            ).group_by(webhook_log.c.source)
        ).all()
        rows = conn.execute(select(*_LISTED).order_by(webhook_log.c.id.desc()).limit(recent)).all()
        runs = queue.runs_of(conn, [row.id for row in rows])
    return {
        "total_webhooks": sum(count for _, count, _ in per_source),
        "pending_dispatch": sum(int(pending or 0) for _, _, pending in per_source),
        "by_source": {source: count for source, count, _ in per_source},
        "recent_webhooks": [{**row._asdict(), "flow_run_ids": runs.get(row.id, [])} for row in rows],
    }


def find(
    engine: Engine,
    *,
    source: str | None = None,
    failed: bool = False,
    since: datetime | None = None,
    limit: int | None = 50,
    oldest_first: bool = False,
) -> list[dict[str, Any]]:
    """Deliveries without their payloads, newest first (or oldest first), each with its `flow_run_ids`.

    `failed`: rejected (a 4xx answer) or carrying an error (dispatch retrying, or a flow run failed).
    """
    query = select(*_LISTED)
    if source is not None:
        query = query.where(webhook_log.c.source == source)
    if failed:
        query = query.where((webhook_log.c.http_status >= 400) | webhook_log.c.error_message.is_not(None))
    if since is not None:
        query = query.where(webhook_log.c.received_at >= since)
    query = query.order_by(webhook_log.c.id if oldest_first else webhook_log.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        runs = queue.runs_of(conn, [row.id for row in rows])
    return [{**row._asdict(), "flow_run_ids": runs.get(row.id, [])} for row in rows]


def flow_runs_of(engine: Engine, delivery_id: int) -> list[str]:
    """Every flow run that served one delivery, oldest first."""
    with engine.connect() as conn:
        return queue.runs_of(conn, [delivery_id]).get(delivery_id, [])


def last_per_source(engine: Engine) -> dict[str, dict[str, Any]]:
    """The newest delivery of each source (for `doctor`)."""
    newest = select(webhook_log.c.source, func.max(webhook_log.c.id).label("id")).group_by(
        webhook_log.c.source
    )
    newest_sq = newest.subquery()
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                webhook_log.c.source,
                webhook_log.c.event_type,
                webhook_log.c.received_at,
                webhook_log.c.processed,
                webhook_log.c.action,
                webhook_log.c.error_message,
            ).join(newest_sq, webhook_log.c.id == newest_sq.c.id)
        ).all()
    return {row.source: row._asdict() for row in rows}


def delete_processed_before(engine: Engine, cutoff: datetime) -> int:
    """Retention: delete processed rows received before `cutoff` (never pending ones); return how many."""
    statement = delete(webhook_log).where(
        webhook_log.c.processed.is_(True), webhook_log.c.received_at < cutoff
    )
    with engine.begin() as conn:
        return conn.execute(statement).rowcount
