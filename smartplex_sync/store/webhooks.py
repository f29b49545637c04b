"""SmartPlex's webhook_log: record a delivery (and queue its sync requests), summarise, clean up.

The guide's own query (`SELECT source, event_type, received_at, processed, error_message FROM
webhook_log ...`) reads our rows as it reads SmartPlex's: `processed` turns true once every sync the
delivery asked for has its flow run; `user_id` / `server_id` say whose delivery it was. What the gateway
did with it (`action`) and answered (`http_status`) are our columns beside SmartPlex's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Text, case, cast, delete, func, select

from smartplex_sync.requests import ScopedRequest
from smartplex_sync.store import queue
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import batch_requests, dispatch_batches, webhook_log, webhook_requests


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
    requests: Sequence[ScopedRequest] = (),
    http_status: int = 202,
    error_message: str | None = None,
    received_at: datetime | None = None,
    scan_grace: timedelta = timedelta(),
    user_id: uuid.UUID | None = None,
    server_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert one delivery and queue its sync requests, in one transaction; return its id. Deliveries
    without sync requests are done at once. `scan_grace` holds back requests that wait for Plex's scan."""
    now = utcnow()
    received_at = received_at or now
    done = not requests
    row_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            webhook_log.insert().values(
                id=row_id,
                source=source,
                event_type=_storable(event_type),
                payload=_storable(payload),
                received_at=received_at,
                created_at=received_at,
                processed=done,
                processed_at=now if done else None,
                error_message=_storable(error_message),
                user_id=user_id,
                server_id=server_id,
                action=action,
                http_status=http_status,
            )
        )
        queue.enqueue(conn, row_id, received_at, requests, scan_grace)
    return row_id


_SHOWN = (
    webhook_log.c.id,
    webhook_log.c.source,
    webhook_log.c.event_type,
    webhook_log.c.received_at,
    webhook_log.c.processed,
    webhook_log.c.processed_at,
    webhook_log.c.action,
    webhook_log.c.http_status,
    webhook_log.c.user_id,
    webhook_log.c.server_id,
    webhook_log.c.error_message,
)


def get(engine: Engine, delivery_id: uuid.UUID) -> dict[str, Any] | None:
    """One delivery, payload and queued requests included (for replay and `webhooks show`), or None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(*_SHOWN, webhook_log.c.payload).where(webhook_log.c.id == delivery_id)
        ).one_or_none()
        if row is None:
            return None
        return {**row._asdict(), "sync_requests": queue.requests_of(conn, delivery_id)}


def resolve_id(engine: Engine, text: str) -> uuid.UUID | None:
    """A delivery's id from its full text or a prefix that names one delivery (as `webhooks ls` shows)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    prefix = text.strip().lower()
    if len(prefix) < 4 or any(c not in "0123456789abcdef-" for c in prefix):
        return None
    with engine.connect() as conn:
        as_text = cast(webhook_log.c.id, Text)
        found = conn.scalars(select(webhook_log.c.id).where(as_text.like(f"{prefix}%")).limit(2)).all()
    return found[0] if len(found) == 1 else None


_LISTED = _SHOWN
_NEWEST_FIRST = (webhook_log.c.received_at.desc(), webhook_log.c.id.desc())
_OLDEST_FIRST = (webhook_log.c.received_at, webhook_log.c.id)


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
        rows = conn.execute(select(*_LISTED).order_by(*_NEWEST_FIRST).limit(recent)).all()
        runs = queue.runs_of(conn, [row.id for row in rows])
    return {
        "total_webhooks": sum(count for _, count, _ in per_source),
        "pending_dispatch": sum(int(pending or 0) for _, _, pending in per_source),
        "by_source": {source: count for source, count, _ in per_source},
        "recent_webhooks": [_listed(row, runs.get(row.id, [])) for row in rows],
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
    """Deliveries without their payloads, newest first (or oldest first), each with its `flow_run_id` (its first run) and `flow_run_ids`.

    `failed`: rejected (a 4xx answer) or carrying an error (dispatch retrying, or a flow run failed).
    """
    query = select(*_LISTED)
    if source is not None:
        query = query.where(webhook_log.c.source == source)
    if failed:
        query = query.where((webhook_log.c.http_status >= 400) | webhook_log.c.error_message.is_not(None))
    if since is not None:
        query = query.where(webhook_log.c.received_at >= since)
    query = query.order_by(*(_OLDEST_FIRST if oldest_first else _NEWEST_FIRST)).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        runs = queue.runs_of(conn, [row.id for row in rows])
    return [_listed(row, runs.get(row.id, [])) for row in rows]


def _listed(row: Any, runs: list[str]) -> dict[str, Any]:
    """A delivery as listed: its columns, its first run (`flow_run_id`) and every run that served it."""
    return {**row._asdict(), "flow_run_id": runs[0] if runs else None, "flow_run_ids": runs}


def flow_runs_of(engine: Engine, delivery_id: uuid.UUID) -> list[str]:
    """Every flow run that served one delivery, oldest first."""
    with engine.connect() as conn:
        return queue.runs_of(conn, [delivery_id]).get(delivery_id, [])


def last_per_source(engine: Engine) -> dict[str, dict[str, Any]]:
    """The newest delivery of each source (for `doctor`)."""
    columns = (
        webhook_log.c.source,
        webhook_log.c.event_type,
        webhook_log.c.received_at,
        webhook_log.c.processed,
        webhook_log.c.action,
        webhook_log.c.error_message,
    )
    found = {}
    with engine.connect() as conn:
        for source in conn.scalars(select(webhook_log.c.source).distinct()):
            row = conn.execute(
                select(*columns).where(webhook_log.c.source == source).order_by(*_NEWEST_FIRST).limit(1)
            ).one()
            found[source] = row._asdict()
    return found


def delete_processed_before(engine: Engine, cutoff: datetime) -> int:
    """Retention: delete processed rows received before `cutoff`, never pending ones nor ones a batch still
    open (its run not finished) holds; return how many."""
    in_open_batch = (
        select(webhook_requests.c.id)
        .join(batch_requests, batch_requests.c.request_id == webhook_requests.c.id)
        .join(dispatch_batches, dispatch_batches.c.id == batch_requests.c.batch_id)
        .where(webhook_requests.c.webhook_id == webhook_log.c.id, dispatch_batches.c.finished_at.is_(None))
        .exists()
    )
    statement = delete(webhook_log).where(
        webhook_log.c.processed.is_(True), webhook_log.c.received_at < cutoff, ~in_open_batch
    )
    with engine.begin() as conn:
        return conn.execute(statement).rowcount
