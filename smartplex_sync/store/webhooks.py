"""webhook_log: record a delivery, claim what is left to dispatch, mark the outcome, summarise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Text, case, cast, delete, func, select, update

from smartplex_sync.models import SyncRequest
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import webhook_log


@dataclass(frozen=True)
class PendingDelivery:
    """A recorded delivery whose sync requests still have to become flow runs."""

    id: int
    source: str
    event_type: str
    received_at: datetime
    requests: list[dict[str, Any]]  # SyncRequest.to_json() plus "flow_run_id" once created
    attempts: int

    def sync_request(self, index: int) -> SyncRequest:
        return SyncRequest.from_json(self.requests[index])


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
) -> int:
    """Insert one delivery and commit; return its id. Deliveries without sync requests are done at once."""
    now = utcnow()
    done = not requests
    with engine.begin() as conn:
        return conn.execute(
            webhook_log.insert()
            .values(
                source=source,
                event_type=_storable(event_type),
                payload=_storable(payload),
                received_at=received_at or now,
                processed=done,
                processed_at=now if done else None,
                error_message=_storable(error_message),
                action=action,
                http_status=http_status,
                sync_requests=_storable([r.to_json() for r in requests]),
                dispatch_attempts=0,
            )
            .returning(webhook_log.c.id)
        ).scalar_one()


def get(engine: Engine, delivery_id: int) -> dict[str, Any] | None:
    """One delivery, payload included (for replay), or None."""
    with engine.connect() as conn:
        row = conn.execute(select(webhook_log).where(webhook_log.c.id == delivery_id)).one_or_none()
    return row._asdict() if row else None


def claim_pending(engine: Engine, *, limit: int = 100, lease_seconds: float = 60) -> list[PendingDelivery]:
    """Take up to `limit` undispatched deliveries that are due, oldest first.

    Claiming pushes `next_attempt_at` past the lease, so another gateway replica skips them until the lease
    runs out (PostgreSQL also skips rows another transaction holds). A replica that dies mid-dispatch only
    delays its rows by the lease; the idempotency keys make a second dispatch of the same row harmless.
    """
    now = utcnow()
    due = (
        select(webhook_log.c.id)
        .where(
            webhook_log.c.processed.is_(False),
            (webhook_log.c.next_attempt_at.is_(None)) | (webhook_log.c.next_attempt_at <= now),
        )
        .order_by(webhook_log.c.id)
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    claim = (
        update(webhook_log)
        .where(webhook_log.c.id.in_(due.scalar_subquery()))
        .values(
            next_attempt_at=now + timedelta(seconds=lease_seconds),
            dispatch_attempts=webhook_log.c.dispatch_attempts + 1,
        )
        .returning(
            webhook_log.c.id,
            webhook_log.c.source,
            webhook_log.c.event_type,
            webhook_log.c.received_at,
            webhook_log.c.sync_requests,
            webhook_log.c.dispatch_attempts,
        )
    )
    with engine.begin() as conn:
        rows = conn.execute(claim).all()
    return sorted(
        (
            PendingDelivery(
                r.id, r.source, r.event_type, r.received_at, list(r.sync_requests), r.dispatch_attempts
            )
            for r in rows
        ),
        key=lambda d: d.id,
    )


def mark_dispatched(engine: Engine, delivery_id: int, requests: list[dict[str, Any]]) -> None:
    """Every request of the delivery has its flow run: processed."""
    first_run = next((r["flow_run_id"] for r in requests if r.get("flow_run_id")), None)
    with engine.begin() as conn:
        conn.execute(
            update(webhook_log)
            .where(webhook_log.c.id == delivery_id)
            .values(
                processed=True,
                processed_at=utcnow(),
                sync_requests=requests,
                flow_run_id=first_run,
                error_message=None,
                next_attempt_at=None,
            )
        )


def mark_dispatch_failed(
    engine: Engine, delivery_id: int, requests: list[dict[str, Any]], error: str, retry_at: datetime
) -> None:
    """Dispatch failed (Prefect down, deployment missing): keep what was created and try again later."""
    with engine.begin() as conn:
        conn.execute(
            update(webhook_log)
            .where(webhook_log.c.id == delivery_id)
            .values(sync_requests=requests, error_message=error, next_attempt_at=retry_at)
        )


RUN_LOOKBACK = timedelta(days=7)  # a run serves deliveries received shortly before it was created


def _served_by(flow_run_id: str) -> Any:
    """Deliveries whose sync requests include this run (a delivery can ask for several runs)."""
    recent = webhook_log.c.received_at >= utcnow() - RUN_LOOKBACK
    return recent & cast(webhook_log.c.sync_requests, Text).contains(flow_run_id, autoescape=True)


def record_run_failure(engine: Engine, flow_run_id: str, message: str) -> int:
    """A flow run failed: show its error on every delivery it served. Returns the rows touched."""
    with engine.begin() as conn:
        return conn.execute(
            update(webhook_log)
            .where(_served_by(flow_run_id))
            .values(error_message=_storable(f"flow run {flow_run_id} failed: {message}")[:2000])
        ).rowcount


def clear_run_failure(engine: Engine, flow_run_id: str) -> int:
    """A run (or its retry) completed: drop the failure `record_run_failure` wrote for it."""
    with engine.begin() as conn:
        return conn.execute(
            update(webhook_log)
            .where(
                _served_by(flow_run_id), webhook_log.c.error_message.like(f"flow run {flow_run_id} failed:%")
            )
            .values(error_message=None)
        ).rowcount


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
        rows = conn.execute(
            select(
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
                webhook_log.c.dispatch_attempts,
            )
            .order_by(webhook_log.c.id.desc())
            .limit(recent)
        ).all()
    return {
        "total_webhooks": sum(count for _, count, _ in per_source),
        "pending_dispatch": sum(int(pending or 0) for _, _, pending in per_source),
        "by_source": {source: count for source, count, _ in per_source},
        "recent_webhooks": [row._asdict() for row in rows],
    }


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
