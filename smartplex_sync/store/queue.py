"""The dispatch queue: each delivery's sync requests (`webhook_requests`), the batches that merge them
into flow runs (`dispatch_batches`), and which batch took which request (`batch_requests`).

A request is written with its delivery, in the same transaction. It waits (`batch_id` NULL) until the
dispatcher claims it for a batch: one insert of the batch and one conditional update of the requests, in
one transaction. The partial unique index on open batches allows one open batch per deployment (and
lane), so two gateway replicas can never claim for one deployment at once; the loser's transaction rolls
back and it tries again on its next pass. Once Prefect has the batch's run, the deliveries whose every
request is in a run are `processed`. A batch is open until its run reaches a final state; a crashed run
gives its requests back to the queue (at most MAX_DISPATCHES times).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, delete, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from smartplex_sync.models import Deployment
from smartplex_sync.requests import ScopedRequest, Stamp
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import batch_requests, dispatch_batches, webhook_log, webhook_requests

MAX_DISPATCHES = 3
"""A request whose run crashed this many times stays with its last batch (its delivery shows the error)."""

_DISPATCH_ERROR = "dispatch attempt"  # the prefix of error_message while a run cannot be created
_REFUSED = "run not created:"  # the prefix of error_message when Prefect refused the run for good


@dataclass(frozen=True)
class QueuedRequest:
    """One request waiting for a batch, with what its delivery tells about it."""

    id: int
    webhook_id: uuid.UUID
    ordinal: int
    deployment: Deployment
    parameters: dict[str, Any]
    source: str
    event_type: str
    received_at: datetime
    ready_at: datetime

    @property
    def stamp(self) -> Stamp:
        return (self.received_at, str(self.webhook_id), self.ordinal)


@dataclass(frozen=True)
class Batch:
    """One flow run the dispatcher asked for (or is about to ask for)."""

    id: str
    deployment: Deployment
    lane: str
    parameters: dict[str, Any]
    name: str
    tags: list[str]
    created_at: datetime
    flow_run_id: str | None = None
    state: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None


def enqueue(
    conn: Connection,
    webhook_id: uuid.UUID,
    received_at: datetime,
    requests: Sequence[ScopedRequest],
    scan_grace: timedelta,
) -> None:
    """Queue a delivery's requests (inside the transaction that records the delivery)."""
    if requests:
        rows = [
            {
                "webhook_id": webhook_id,
                "ordinal": ordinal,
                "deployment": request.deployment.value,
                "parameters": request.parameters.to_json(),
                "ready_at": received_at + (scan_grace if request.wait_for_plex_scan else timedelta()),
                "batch_id": None,
                "dispatches": 0,
            }
            for ordinal, request in enumerate(requests)
        ]
        conn.execute(insert(webhook_requests), rows)


def requests_of(conn: Connection, webhook_id: uuid.UUID) -> list[dict[str, Any]]:
    """A delivery's queued requests: deployment and parameters, in the order it asked for them."""
    rows = conn.execute(
        select(webhook_requests.c.deployment, webhook_requests.c.parameters)
        .where(webhook_requests.c.webhook_id == webhook_id)
        .order_by(webhook_requests.c.ordinal)
    )
    return [{"deployment": row.deployment, "parameters": row.parameters} for row in rows]


def pending_requests(engine: Engine) -> list[QueuedRequest]:
    """Every request no batch has taken, oldest first."""
    statement = (
        select(
            webhook_requests.c.id,
            webhook_requests.c.webhook_id,
            webhook_requests.c.ordinal,
            webhook_requests.c.deployment,
            webhook_requests.c.parameters,
            webhook_requests.c.ready_at,
            webhook_log.c.source,
            webhook_log.c.event_type,
            webhook_log.c.received_at,
        )
        .join(webhook_log, webhook_log.c.id == webhook_requests.c.webhook_id)
        .where(webhook_requests.c.batch_id.is_(None))
        .order_by(webhook_requests.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    return [
        QueuedRequest(
            id=row.id,
            webhook_id=row.webhook_id,
            ordinal=row.ordinal,
            deployment=Deployment(row.deployment),
            parameters=row.parameters,
            source=row.source,
            event_type=row.event_type,
            received_at=row.received_at,
            ready_at=row.ready_at,
        )
        for row in rows
    ]


def _batch(row: Any) -> Batch:
    return Batch(
        id=row.id,
        deployment=Deployment(row.deployment),
        lane=row.lane,
        parameters=row.parameters,
        name=row.name,
        tags=list(row.tags),
        created_at=row.created_at,
        flow_run_id=row.flow_run_id,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
    )


def open_batches(engine: Engine) -> list[Batch]:
    """Batches whose run has not reached a final state (or does not exist yet)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(dispatch_batches)
            .where(dispatch_batches.c.finished_at.is_(None))
            .order_by(dispatch_batches.c.created_at)
        ).all()
    return [_batch(row) for row in rows]


def claim(engine: Engine, batch: Batch, request_ids: Sequence[int]) -> bool:
    """Open `batch` with these waiting requests. False when another dispatcher got there first: it has an
    open batch for the same deployment and lane, or took one of the requests."""

    class _Lost(Exception):
        pass

    try:
        with engine.begin() as conn:
            conn.execute(
                insert(dispatch_batches).values(
                    id=batch.id,
                    deployment=batch.deployment.value,
                    lane=batch.lane,
                    parameters=batch.parameters,
                    name=batch.name,
                    tags=batch.tags,
                    created_at=batch.created_at,
                    attempts=0,
                )
            )
            taken = conn.execute(
                update(webhook_requests)
                .where(webhook_requests.c.id.in_(list(request_ids)), webhook_requests.c.batch_id.is_(None))
                .values(batch_id=batch.id, dispatches=webhook_requests.c.dispatches + 1)
            ).rowcount
            if taken != len(request_ids):
                raise _Lost
            conn.execute(
                insert(batch_requests), [{"batch_id": batch.id, "request_id": rid} for rid in request_ids]
            )
    except (IntegrityError, _Lost):
        return False
    return True


def _webhooks_of(batch_id: str) -> Any:
    return select(webhook_requests.c.webhook_id).where(webhook_requests.c.batch_id == batch_id)


def _mark_processed(conn: Connection, batch_id: str, now: datetime) -> None:
    """Mark the batch's deliveries whose every request is done: in a batch that has its run, or that was
    closed without one (`refused`). A dispatch attempt's error goes; any other stays."""
    undone = (
        select(webhook_requests.c.id)
        .outerjoin(dispatch_batches, dispatch_batches.c.id == webhook_requests.c.batch_id)
        .where(
            webhook_requests.c.webhook_id == webhook_log.c.id,
            or_(
                webhook_requests.c.batch_id.is_(None),
                and_(dispatch_batches.c.flow_run_id.is_(None), dispatch_batches.c.finished_at.is_(None)),
            ),
        )
        .exists()
    )
    conn.execute(
        update(webhook_log)
        .where(webhook_log.c.id.in_(_webhooks_of(batch_id)), webhook_log.c.processed.is_(False), ~undone)
        .values(
            processed=True,
            processed_at=now,
            error_message=case(
                (webhook_log.c.error_message.like(f"{_DISPATCH_ERROR}%"), None),
                else_=webhook_log.c.error_message,
            ),
        )
    )


def run_created(engine: Engine, batch_id: str, flow_run_id: str) -> None:
    """Prefect has the batch's run: link it, and mark the deliveries whose every request is done."""
    with engine.begin() as conn:
        conn.execute(
            update(dispatch_batches)
            .where(dispatch_batches.c.id == batch_id)
            .values(flow_run_id=flow_run_id, error_message=None, next_attempt_at=None)
        )
        _mark_processed(conn, batch_id, utcnow())


def refused(engine: Engine, batch_id: str, message: str) -> None:
    """Prefect will never create the batch's run (it refused the parameters, or our call is broken): close
    the batch as failed, which frees its deployment, and say why on its deliveries (`webhooks ls --failed`;
    `webhooks replay` sends one again). They count as processed once every request of theirs is done."""
    now = utcnow()
    text = f"{_REFUSED} {message}".replace("\x00", "\ufffd")[:2000]
    with engine.begin() as conn:
        conn.execute(
            update(dispatch_batches)
            .where(dispatch_batches.c.id == batch_id)
            .values(state="FAILED", finished_at=now, error_message=message, next_attempt_at=None)
        )
        conn.execute(
            update(webhook_log).where(webhook_log.c.id.in_(_webhooks_of(batch_id))).values(error_message=text)
        )
        _mark_processed(conn, batch_id, now)


def creation_failed(engine: Engine, batch_id: str, message: str, retry_at: datetime) -> int:
    """Prefect could not create the run: try again at `retry_at`, and say why on the deliveries. Returns
    the attempts so far."""
    with engine.begin() as conn:
        attempts = conn.execute(
            update(dispatch_batches)
            .where(dispatch_batches.c.id == batch_id)
            .values(attempts=dispatch_batches.c.attempts + 1, error_message=message, next_attempt_at=retry_at)
            .returning(dispatch_batches.c.attempts)
        ).scalar_one()
        conn.execute(
            update(webhook_log)
            .where(webhook_log.c.id.in_(_webhooks_of(batch_id)), webhook_log.c.processed.is_(False))
            .values(error_message=f"{_DISPATCH_ERROR} {attempts} failed: {message}"[:2000])
        )
    return attempts


def finish(engine: Engine, batch: Batch, state: str, message: str | None, *, requeue: bool) -> int:
    """The batch's run reached a final state. A failed or crashed run leaves its error on every delivery
    it served; `requeue` (a crash) also gives its requests back to the queue, up to MAX_DISPATCHES times.
    Returns how many requests went back."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            update(dispatch_batches)
            .where(dispatch_batches.c.id == batch.id)
            .values(state=state, finished_at=now, error_message=message)
        )
        if state == "COMPLETED" and batch.flow_run_id:
            _clear_run_failure(conn, batch.flow_run_id)
        elif message is not None and batch.flow_run_id:
            _record_run_failure(conn, batch.flow_run_id, message)
        if not requeue:
            return 0
        again = and_(webhook_requests.c.batch_id == batch.id, webhook_requests.c.dispatches < MAX_DISPATCHES)
        conn.execute(
            update(webhook_log)
            .where(
                webhook_log.c.id.in_(select(webhook_requests.c.webhook_id).where(again)),
            )
            .values(processed=False, processed_at=None)
        )
        return conn.execute(update(webhook_requests).where(again).values(batch_id=None)).rowcount


def set_state(engine: Engine, batch_id: str, state: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(dispatch_batches).where(dispatch_batches.c.id == batch_id).values(state=state))


def _served_by(flow_run_id: str) -> Any:
    """The deliveries a run served: through the batches that took their requests."""
    return (
        select(webhook_requests.c.webhook_id)
        .join(batch_requests, batch_requests.c.request_id == webhook_requests.c.id)
        .join(dispatch_batches, dispatch_batches.c.id == batch_requests.c.batch_id)
        .where(dispatch_batches.c.flow_run_id == flow_run_id)
    )


def _failure_text(flow_run_id: str) -> str:
    return f"flow run {flow_run_id} failed:"


def _record_run_failure(conn: Connection, flow_run_id: str, message: str) -> int:
    text = f"{_failure_text(flow_run_id)} {message}".replace("\x00", "\ufffd")[:2000]
    return conn.execute(
        update(webhook_log).where(webhook_log.c.id.in_(_served_by(flow_run_id))).values(error_message=text)
    ).rowcount


def _clear_run_failure(conn: Connection, flow_run_id: str) -> int:
    """A completed run clears the failure an earlier run of the same requests (a crashed run, requeued) left
    on its deliveries; another deployment's failure on the same delivery stays."""
    this_run = dispatch_batches.c.flow_run_id == flow_run_id
    its_requests = (
        select(batch_requests.c.request_id)
        .join(dispatch_batches, dispatch_batches.c.id == batch_requests.c.batch_id)
        .where(this_run)
    )
    earlier_runs = conn.scalars(
        select(dispatch_batches.c.flow_run_id)
        .join(batch_requests, batch_requests.c.batch_id == dispatch_batches.c.id)
        .where(
            batch_requests.c.request_id.in_(its_requests),
            ~this_run,
            dispatch_batches.c.flow_run_id.is_not(None),
        )
        .distinct()
    ).all()
    if not earlier_runs:
        return 0
    return conn.execute(
        update(webhook_log)
        .where(
            webhook_log.c.id.in_(_served_by(flow_run_id)),
            or_(*(webhook_log.c.error_message.like(f"{_failure_text(run)}%") for run in earlier_runs)),
        )
        .values(error_message=None)
    ).rowcount


def runs_of(conn: Connection, webhook_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """Every flow run that served each delivery, in the order they were created."""
    statement = (
        select(webhook_requests.c.webhook_id, dispatch_batches.c.flow_run_id)
        .join(batch_requests, batch_requests.c.request_id == webhook_requests.c.id)
        .join(dispatch_batches, dispatch_batches.c.id == batch_requests.c.batch_id)
        .where(
            webhook_requests.c.webhook_id.in_(list(webhook_ids)), dispatch_batches.c.flow_run_id.is_not(None)
        )
        .order_by(dispatch_batches.c.created_at)
    )
    runs: dict[uuid.UUID, list[str]] = {}
    for webhook_id, flow_run_id in conn.execute(statement):
        if flow_run_id not in runs.setdefault(webhook_id, []):
            runs[webhook_id].append(flow_run_id)
    return runs


def delete_finished_before(engine: Engine, cutoff: datetime) -> int:
    """Retention: finished batches created before `cutoff` that no remaining request points at.

    The requests of deliveries retention deleted go first. PostgreSQL's foreign key cascades them with
    their delivery; SQLite's tables have no such key (SQLAlchemy leaves out a foreign key between two
    schemas, and webhook_requests is in ours), so there they would stay, and keep their batches."""
    orphaned = ~exists().where(webhook_log.c.id == webhook_requests.c.webhook_id)
    referenced = exists().where(batch_requests.c.batch_id == dispatch_batches.c.id)
    statement = delete(dispatch_batches).where(
        dispatch_batches.c.finished_at.is_not(None), dispatch_batches.c.created_at < cutoff, ~referenced
    )
    with engine.begin() as conn:
        conn.execute(delete(webhook_requests).where(orphaned))
        return conn.execute(statement).rowcount
