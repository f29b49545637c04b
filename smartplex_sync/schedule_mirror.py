"""SmartPlex's `sync_schedule` ↔ Prefect deployment schedules, row by row.

Each row becomes a schedule of its service's deployment (`plex-library-sync` for `plex` ...), with the slug
`sync-schedule-<row id>` naming the row for its life, and parameters scoped to the row's servers: its
user's (SmartPlex's per-user table, migration 006) or every server (005's global table). The parameters
follow the servers (a server added to SmartPlex joins its user's schedules within one pass); a row whose
user has no server yet has no schedule. Missing default rows are added first (`seed_defaults`): Plex every
12 h, Tautulli every 6 h, Sonarr, Radarr and Overseerr present but paused.

Prefect's schedules are what makes runs happen; the row mirrors its schedule (enabled = active,
interval_hours) and the runs of its service for its servers (last_run_at, last_status, last_error,
run_count from the `sync_events` rows the flows write; next_run_at from the schedule), and an admin's SQL
edit of `enabled` or `interval_hours` (the guide's `UPDATE sync_schedule ...`) is carried over to Prefect.

Which side changed is told by what both held after the last mirror (our `schedule_mirror` table, never
SmartPlex's columns). Each field is decided on its own, so an SQL interval change and a pause in the UI
both survive:
- neither side changed: nothing to do;
- only Prefect changed (UI, `prefect deployment schedule pause|resume`): the row follows;
- only the row changed: Prefect is updated, then the row records the value as synced;
- both changed, to different values (a conflict): **Prefect wins** in the mirror loop (its value is the
  one already scheduling runs, and an unattended loop must never undo what someone did in Prefect's UI);
  the overridden SQL edit is reported. `smartplex-sync schedules apply` is an admin asking for the table's
  values explicitly, so there **the table wins**;
- never mirrored: a schedule is created from the row (or, when Prefect already has one under its slug,
  Prefect wins in the loop and the table wins in `schedules apply`).
A row's schedule deleted in Prefect is created again from the row: delete the row, or set `enabled =
false`, to stop it. A schedule with our slug prefix whose row is gone is deleted; schedules of other
names are left alone and reported.

The row is written compare-and-set (`store.schedules.write_mirror`), so an UPDATE made while a mirror runs
is not lost: it is picked up on the next one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Engine

from smartplex_sync.models import SERVICE_OF, SERVICES, Deployment, Source
from smartplex_sync.requests import PARAMETERS
from smartplex_sync.store.accounts import servers_of
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.schedules import (
    RunHistory,
    ScheduleRow,
    read_schedules,
    run_history,
    seed_defaults,
    write_mirror,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import DeploymentSchedule

logger = logging.getLogger(__name__)

MIN_HOURS, MAX_HOURS = 1, 168  # SmartPlex's CHECK on sync_schedule.interval_hours
SLUG_PREFIX = "sync-schedule-"

T = TypeVar("T", bool, int)
V = TypeVar("V")


# ---------------------------------------------------------------------------------------------- pure logic


def hours_from_seconds(seconds: float) -> int:
    """Prefect's interval as the table's whole hours, within the table's CHECK range."""
    return max(MIN_HOURS, min(MAX_HOURS, round(seconds / 3600)))


@dataclass(frozen=True)
class FieldDecision(Generic[V]):
    value: V  # what both sides should hold afterwards
    push: bool = False  # Prefect must be changed to `value`
    conflict: bool = False  # both sides had changed


def merge_field(table: T, synced: T | None, prefect: T | None, *, prefer_table: bool) -> FieldDecision[T]:
    """The rule of the module docstring for one field. `prefect` None: Prefect has no such value (cron)."""
    if table == prefect:
        return FieldDecision(table)
    if synced is None:
        if prefer_table:
            return FieldDecision(table, push=True)
        return FieldDecision(table if prefect is None else prefect)
    table_edited = table != synced
    prefect_edited = prefect is not None and prefect != synced
    if table_edited and prefect_edited:
        if prefer_table:
            return FieldDecision(table, push=True, conflict=True)
        assert prefect is not None
        return FieldDecision(prefect, conflict=True)
    if table_edited:
        return FieldDecision(table, push=True)
    if prefect_edited:
        assert prefect is not None
        return FieldDecision(prefect)
    return FieldDecision(table)


@dataclass(frozen=True)
class Decision:
    enabled: FieldDecision[bool]
    interval_hours: FieldDecision[int]

    @property
    def push(self) -> bool:
        return self.enabled.push or self.interval_hours.push


def reconcile(
    row: ScheduleRow, prefect_enabled: bool | None, prefect_hours: int | None, *, prefer_table: bool
) -> Decision:
    return Decision(
        merge_field(row.enabled, row.synced_enabled, prefect_enabled, prefer_table=prefer_table),
        merge_field(row.interval_hours, row.synced_interval_hours, prefect_hours, prefer_table=prefer_table),
    )


def describe(row: ScheduleRow, decision: Decision) -> tuple[list[str], list[str]]:
    """Human lines for what a decision changes, and for the conflicts it settled."""
    changes, conflicts = [], []
    fields: list[tuple[str, Any, FieldDecision[Any]]] = [
        ("enabled", row.enabled, decision.enabled),
        ("interval_hours", row.interval_hours, decision.interval_hours),
    ]
    for name, table_value, choice in fields:
        if choice.push:
            changes.append(f"prefect ← table: {name} = {choice.value}")
        elif choice.value != table_value:
            changes.append(f"table ← prefect: {name} {table_value} → {choice.value}")
        if choice.conflict:
            winner = "table" if choice.push else "prefect"
            conflicts.append(f"{name} changed on both sides; {winner} wins ({choice.value})")
    return changes, conflicts


def schedule_parameters(service: str, server_ids: list[uuid.UUID]) -> dict[str, Any]:
    """A row's schedule parameters: a scheduled run of these servers."""
    deployment = SERVICES[Source(service)].deployment
    return {"request": PARAMETERS[deployment].scheduled(server_ids).to_json(), "trigger": "scheduled"}


def next_occurrence(anchor: datetime, interval: timedelta, now: datetime) -> datetime:
    """The first `anchor + k * interval` after `now` (how an interval schedule fires, in UTC)."""
    if now < anchor:
        return anchor
    # in seconds: Prefect's anchor is a pendulum DateTime, whose difference does not divide by a timedelta
    steps = math.floor((now - anchor).total_seconds() / interval.total_seconds()) + 1
    return anchor + steps * interval


# ------------------------------------------------------------------------------------------- Prefect side


@dataclass(frozen=True)
class PrefectSide:
    """A row's schedule as Prefect has it (None: no schedule with its slug)."""

    deployment_id: uuid.UUID
    schedule: DeploymentSchedule | None

    @property
    def active(self) -> bool:
        return self.schedule is not None and self.schedule.active

    @property
    def interval(self) -> timedelta | None:
        return getattr(self.schedule.schedule, "interval", None) if self.schedule else None

    @property
    def interval_hours(self) -> int | None:
        interval = self.interval
        return None if interval is None else hours_from_seconds(interval.total_seconds())

    def next_run_at(self, now: datetime) -> datetime | None:
        anchor = getattr(self.schedule.schedule, "anchor_date", None) if self.schedule else None
        if not self.active or anchor is None or self.interval is None:
            return None
        return next_occurrence(anchor, self.interval, now)


async def push_schedule(
    client: PrefectClient,
    side: PrefectSide,
    row: ScheduleRow,
    decision: Decision,
    parameters: dict[str, Any],
) -> None:
    """Make Prefect hold the decided values and the row's parameters: create the schedule, or update it."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule

    interval = timedelta(hours=decision.interval_hours.value)
    if side.schedule is None:
        new = DeploymentScheduleCreate(
            schedule=IntervalSchedule(interval=interval),
            active=decision.enabled.value,
            slug=row.slug,
            parameters=parameters,
        )
        await client.create_deployment_schedules(side.deployment_id, [new])
        return
    current = side.schedule.schedule
    schedule = None
    if decision.interval_hours.push:
        anchor = getattr(current, "anchor_date", None)
        timezone = getattr(current, "timezone", None)
        schedule = (
            IntervalSchedule(interval=interval, anchor_date=anchor, timezone=timezone)
            if anchor is not None
            else IntervalSchedule(interval=interval)
        )
    await client.update_deployment_schedule(
        side.deployment_id,
        side.schedule.id,
        active=decision.enabled.value if decision.enabled.push else None,
        schedule=schedule,
        parameters=parameters if side.schedule.parameters != parameters else None,
    )


# ------------------------------------------------------------------------------------------------- mirror


@dataclass(frozen=True)
class RowOutcome:
    row: ScheduleRow
    deployment: str
    changes: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        owner = f"user {self.row.user_id}" if self.row.user_id else "every server"
        return f"{self.row.service} ({self.deployment}, {owner})"


@dataclass(frozen=True)
class MirrorReport:
    outcomes: list[RowOutcome]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.error is None for o in self.outcomes)

    def lines(self, *, quiet: bool = False) -> list[str]:
        """One line per change, conflict, note or error; with `quiet`, nothing for rows left as they were."""
        lines = list(self.notes)
        for outcome in self.outcomes:
            items = [
                *outcome.changes,
                *(f"conflict: {c}" for c in outcome.conflicts),
                *outcome.notes,
                *([f"error: {outcome.error}"] if outcome.error else []),
            ]
            if not items and not quiet:
                items = ["in sync"]
            lines.extend(f"{outcome.label}: {item}" for item in items)
        return lines


def _servers_of_row(engine: Engine, row: ScheduleRow) -> list[uuid.UUID]:
    with engine.connect() as conn:
        return servers_of(conn, None if row.user_id is None else [row.user_id])


async def _mirror_row(
    engine: Engine,
    client: PrefectClient,
    row: ScheduleRow,
    deployment_id: uuid.UUID,
    schedule: Any,
    prefer_table: bool,
) -> RowOutcome:
    deployment = SERVICES[Source(row.service)].deployment
    side = PrefectSide(deployment_id, schedule)
    server_ids = await asyncio.to_thread(_servers_of_row, engine, row)
    notes = []
    if not server_ids:
        if side.schedule is not None:
            await client.delete_deployment_schedule(deployment_id, side.schedule.id)
        notes.append("no Plex server in SmartPlex: no schedule")
        decision = Decision(FieldDecision(row.enabled), FieldDecision(row.interval_hours))
        side = PrefectSide(deployment_id, None)
    else:
        active = side.active if side.schedule is not None else None  # no schedule: Prefect says nothing
        decision = reconcile(row, active, side.interval_hours, prefer_table=prefer_table)
        if side.schedule is None:  # never mirrored, or deleted in Prefect: made from the row again
            decision = Decision(
                FieldDecision(decision.enabled.value, push=True),
                FieldDecision(decision.interval_hours.value, push=True),
            )
        if side.schedule is not None and side.interval is None:
            notes.append("Prefect schedule is not an interval: interval_hours left as it is")
        parameters = schedule_parameters(row.service, server_ids)
        if decision.push or side.schedule is None or side.schedule.parameters != parameters:
            await push_schedule(client, side, row, decision, parameters)
    changes, conflicts = describe(row, decision)
    if side.schedule is None and server_ids:
        changes = [f"schedule {row.slug} created"]
    history = await asyncio.to_thread(run_history, engine, row.service, row.user_id)
    next_run = side.next_run_at(utcnow()) if side.schedule is not None else None
    if side.schedule is None and server_ids and decision.enabled.value:
        next_run = utcnow() + timedelta(hours=decision.interval_hours.value)
    written = await asyncio.to_thread(
        write_mirror,
        engine,
        row,
        enabled=decision.enabled.value,
        interval_hours=decision.interval_hours.value,
        history=RunHistory(
            next_run_at=next_run,
            last_run_at=history.last_run_at,
            last_status=history.last_status,
            last_error=history.last_error,
            run_count=history.run_count,
        ),
    )
    if not written:
        notes.append("row edited while mirroring: taken up next time")
    return RowOutcome(row, deployment.value, changes, conflicts, notes)


async def mirror_once(engine: Engine, client: PrefectClient, *, prefer_table: bool = False) -> MirrorReport:
    """One pass over every `sync_schedule` row (see the module docstring for the rule).

    `prefer_table=True` is `smartplex-sync schedules apply`: the table wins conflicts."""
    from prefect.exceptions import ObjectNotFound

    seeded = await asyncio.to_thread(seed_defaults, engine)
    rows = await asyncio.to_thread(read_schedules, engine)
    notes = [f"{seeded} default sync_schedule rows added"] if seeded else []
    outcomes = []
    for deployment in sorted(SERVICE_OF):
        mine = [row for row in rows if SERVICES[Source(row.service)].deployment is deployment]
        try:
            found = await client.read_deployment_by_name(deployment.full_name)
        except ObjectNotFound:
            error = f"{deployment.full_name} is not deployed: run `prefect --no-prompt deploy --all`"
            outcomes += [RowOutcome(row, deployment.value, error=error) for row in mine]
            continue
        by_slug = {schedule.slug: schedule for schedule in found.schedules if schedule.slug}
        for row in mine:
            try:
                outcomes.append(
                    await _mirror_row(engine, client, row, found.id, by_slug.get(row.slug), prefer_table)
                )
            except Exception as exc:  # one row's trouble (a refused update) is not the others'
                outcomes.append(RowOutcome(row, deployment.value, error=str(exc)))
        notes += await _drop_orphans(
            client, deployment, found.id, found.schedules, {row.slug for row in mine}
        )
    return MirrorReport(outcomes, notes)


async def _drop_orphans(
    client: PrefectClient,
    deployment: Deployment,
    deployment_id: uuid.UUID,
    schedules: list[Any],
    slugs: set[str],
) -> list[str]:
    """Delete the schedules of rows that are gone; report the schedules that are not ours."""
    notes = []
    others = 0
    for schedule in schedules:
        if schedule.slug and schedule.slug.startswith(SLUG_PREFIX):
            if schedule.slug not in slugs:
                await client.delete_deployment_schedule(deployment_id, schedule.id)
                notes.append(
                    f"{deployment.value}: schedule {schedule.slug} deleted (its sync_schedule row is gone)"
                )
        else:
            others += 1
    if others:
        notes.append(
            f"{deployment.value}: {others} more schedule(s) in Prefect that sync_schedule does not mirror"
        )
    return notes


async def run_mirror_loop(engine: Engine, interval_seconds: float = 30) -> None:
    """Mirror every `interval_seconds` until cancelled. Prefect or the database being down is logged, and
    tried again next tick; it never ends the loop."""
    from prefect.client.orchestration import get_client

    while True:
        try:
            async with get_client() as client:
                report = await mirror_once(engine, client)
            for line in report.lines(quiet=True):
                logger.info("sync_schedule mirror: %s", line)
        except Exception as exc:
            logger.warning("sync_schedule mirror failed, retrying in %.0fs: %s", interval_seconds, exc)
        await asyncio.sleep(interval_seconds)
