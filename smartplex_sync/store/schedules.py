"""sync_schedule: read the rows, and write what the Prefect mirror decided without losing an admin's edit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update

from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import sync_schedule


@dataclass(frozen=True)
class ScheduleRow:
    service: str
    deployment: str
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


@dataclass(frozen=True)
class RunHistory:
    """What Prefect knows about a deployment's runs."""

    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    run_count: int = 0


def read_schedules(engine: Engine) -> list[ScheduleRow]:
    """Every row, in service order."""
    columns = [sync_schedule.c[name] for name in ScheduleRow.__dataclass_fields__]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(sync_schedule.c.id)).all()
    return [ScheduleRow(**row._mapping) for row in rows]


def write_mirror(
    engine: Engine,
    row: ScheduleRow,
    *,
    enabled: bool,
    interval_hours: int,
    history: RunHistory,
) -> bool:
    """Store the agreed schedule (as both the value and the synced value) and the run history.

    Compare-and-set: only when the row still holds the `enabled` / `interval_hours` it was read with, so an
    admin's UPDATE made in between is kept for the next mirror. Even then the synced values (what Prefect
    now holds) and the history are recorded, so that next mirror sees the admin's value as the table's
    edit and pushes it, instead of taking it for a conflict. Returns whether the values were written.
    """
    now = utcnow()
    values: dict[str, object] = {
        "enabled": enabled,
        "interval_hours": interval_hours,
        "synced_enabled": enabled,
        "synced_interval_hours": interval_hours,
        "next_run_at": history.next_run_at,
        "last_run_at": history.last_run_at,
        "last_status": history.last_status,
        "last_error": history.last_error,
        "run_count": history.run_count,
        "mirrored_at": now,
    }
    if (enabled, interval_hours) != (row.enabled, row.interval_hours):
        values["updated_at"] = now
    statement = (
        update(sync_schedule)
        .where(
            sync_schedule.c.service == row.service,
            sync_schedule.c.enabled == row.enabled,
            sync_schedule.c.interval_hours == row.interval_hours,
        )
        .values(**values)
    )
    with engine.begin() as conn:
        if conn.execute(statement).rowcount == 1:
            return True
        agreed = {k: v for k, v in values.items() if k not in ("enabled", "interval_hours", "updated_at")}
        conn.execute(update(sync_schedule).where(sync_schedule.c.service == row.service).values(**agreed))
        return False
