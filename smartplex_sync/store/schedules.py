"""SmartPlex's sync_schedule: read the rows, seed the defaults, and write what the Prefect mirror decided
without losing an admin's edit.

SmartPlex has two shapes of the table: per user (its migration 006, what a live SmartPlex has: `user_id`,
`UNIQUE (user_id, service)`) and global (005, what the guide shows: `UNIQUE (service)`). Both work; a
row of the global shape schedules every server. The mirror's bookkeeping (what both sides held after the
last mirror) lives in our own `schedule_mirror`, never in SmartPlex's columns.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import Engine, and_, distinct, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite

from smartplex_sync.models import SERVICES
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import schedule_mirror, servers, sync_events, sync_schedule


@dataclass(frozen=True)
class ScheduleRow:
    id: uuid.UUID
    user_id: uuid.UUID | None  # None: 005's global shape, every server
    service: str
    enabled: bool
    interval_hours: int
    synced_enabled: bool | None  # None: never mirrored
    synced_interval_hours: int | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: str | None
    last_error: str | None
    run_count: int
    mirrored_at: datetime | None

    @property
    def slug(self) -> str:
        """The Prefect schedule's slug: names this row, stays the same for the row's life."""
        return f"sync-schedule-{self.id}"


@dataclass(frozen=True)
class RunHistory:
    """What the runs of a row's service and servers did (from `sync_events`), and the next one (Prefect)."""

    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    run_count: int = 0


@cache
def _per_user(engine: Engine) -> bool:
    return "user_id" in {column["name"] for column in inspect(engine).get_columns("sync_schedule")}


def per_user(engine: Engine) -> bool:
    """The table has SmartPlex's per-user shape (006), not the global one (005)."""
    return _per_user(engine)


def read_schedules(engine: Engine) -> list[ScheduleRow]:
    """Every row, by user and service."""
    user = sync_schedule.c.user_id if per_user(engine) else None
    columns = [
        sync_schedule.c.id,
        sync_schedule.c.service,
        sync_schedule.c.enabled,
        sync_schedule.c.interval_hours,
        sync_schedule.c.next_run_at,
        sync_schedule.c.last_run_at,
        sync_schedule.c.last_status,
        sync_schedule.c.last_error,
        sync_schedule.c.run_count,
        schedule_mirror.c.synced_enabled,
        schedule_mirror.c.synced_interval_hours,
        schedule_mirror.c.mirrored_at,
    ]
    statement = select(*columns, *([user] if user is not None else [])).outerjoin(
        schedule_mirror, schedule_mirror.c.schedule_id == sync_schedule.c.id
    )
    order = [user, sync_schedule.c.service] if user is not None else [sync_schedule.c.service]
    with engine.connect() as conn:
        rows = conn.execute(statement.order_by(*order)).all()
    return [
        ScheduleRow(
            id=row.id,
            user_id=row.user_id if user is not None else None,
            service=row.service,
            enabled=bool(row.enabled),
            interval_hours=row.interval_hours,
            synced_enabled=row.synced_enabled,
            synced_interval_hours=row.synced_interval_hours,
            next_run_at=row.next_run_at,
            last_run_at=row.last_run_at,
            last_status=row.last_status,
            last_error=row.last_error,
            run_count=row.run_count or 0,
            mirrored_at=row.mirrored_at,
        )
        for row in rows
    ]


def seed_defaults(engine: Engine) -> int:
    """The default rows (`SERVICES`' defaults) that are missing: per user, for every user who owns a Plex
    server (SmartPlex seeds rows only for the users it had when 006 ran); globally, per service. Rows that
    exist are never changed. Returns how many were added."""
    now = utcnow()
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as conn:
        if per_user(engine):
            owners = list(conn.scalars(select(servers.c.user_id).distinct()))
            have = {
                (r.user_id, r.service)
                for r in conn.execute(select(sync_schedule.c.user_id, sync_schedule.c.service))
            }
            wanted = [(owner, service) for owner in owners for service in SERVICES.values()]
            keys = ["user_id", "service"]
        else:
            have = {(None, service) for service in conn.scalars(select(sync_schedule.c.service))}
            wanted = [(None, service) for service in SERVICES.values()]
            keys = ["service"]
        rows = []
        for owner, service in wanted:
            if (owner, service.source.value) in have:
                continue
            row = {"id": uuid.uuid4(), "service": service.source.value, "enabled": service.scheduled_by_default,
                   "interval_hours": service.default_interval_hours, "run_count": 0, "created_at": now,
                   "updated_at": now}  # fmt: skip
            rows.append({**row, "user_id": owner} if owner is not None else row)
        for row in rows:
            conn.execute(insert(sync_schedule).values(row).on_conflict_do_nothing(index_elements=keys))
    return len(rows)


def run_history(engine: Engine, service: str, user_id: uuid.UUID | None) -> RunHistory:
    """The last run of `service` that finished for this user's servers (every server's with None), and how
    many runs completed, from the `sync_events` rows the flows write."""
    of_service = [sync_events.c.sync_type == service, sync_events.c.completed_at.is_not(None)]
    if user_id is not None:
        of_service.append(sync_events.c.user_id == user_id)
    run = sync_events.c.sync_metadata["flow_run_id"].as_string()
    with engine.connect() as conn:
        last = conn.execute(
            select(sync_events.c.completed_at, sync_events.c.status, sync_events.c.error_message)
            .where(*of_service)
            .order_by(sync_events.c.completed_at.desc())
            .limit(1)
        ).first()
        completed = conn.scalar(
            select(func.count(distinct(run))).where(*of_service, sync_events.c.status == "completed")
        )
    if last is None:
        return RunHistory()
    return RunHistory(
        last_run_at=last.completed_at,
        last_status=last.status,
        last_error=last.error_message if last.status == "failed" else None,
        run_count=completed or 0,
    )


def write_mirror(
    engine: Engine,
    row: ScheduleRow,
    *,
    enabled: bool,
    interval_hours: int,
    history: RunHistory,
) -> bool:
    """Store the agreed schedule (as the row's value and as the synced value) and the run history.

    Compare-and-set: only when the row still holds the `enabled` / `interval_hours` it was read with, so an
    admin's UPDATE made in between is kept for the next mirror. Even then the synced values (what Prefect
    now holds) and the history are recorded, so that next mirror sees the admin's value as the table's
    edit and pushes it, instead of taking it for a conflict. Returns whether the values were written.
    """
    now = utcnow()
    history_values: dict[str, object] = {
        "next_run_at": history.next_run_at,
        "last_run_at": history.last_run_at,
        "last_status": history.last_status,
        "last_error": history.last_error,
        "run_count": history.run_count,
    }
    values = {**history_values, "enabled": enabled, "interval_hours": interval_hours}
    if (enabled, interval_hours) != (row.enabled, row.interval_hours):
        values["updated_at"] = now
    same_row = sync_schedule.c.id == row.id
    unchanged = and_(
        same_row,
        func.coalesce(sync_schedule.c.enabled, False).is_(row.enabled),  # a NULL flag was read as off
        sync_schedule.c.interval_hours == row.interval_hours,
    )
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    mirrored = {"synced_enabled": enabled, "synced_interval_hours": interval_hours, "mirrored_at": now}
    with engine.begin() as conn:
        written = conn.execute(update(sync_schedule).where(unchanged).values(values)).rowcount == 1
        if not written:
            conn.execute(update(sync_schedule).where(same_row).values(history_values))
        statement = insert(schedule_mirror).values(schedule_id=row.id, **mirrored)
        conn.execute(statement.on_conflict_do_update(index_elements=["schedule_id"], set_=mirrored))
    return written
