"""`sync_schedule` ↔ Prefect deployment schedules.

Prefect's deployment schedules are the truth: they are what makes runs happen. `sync_schedule` mirrors
them (enabled = the schedule is active, interval_hours, next_run_at) plus each deployment's run history
(last_run_at, last_status, last_error, run_count), and an admin's SQL edit of `enabled` or
`interval_hours` (the seed guide's `UPDATE sync_schedule ...`) is carried over to Prefect.

Which side changed is told by `synced_enabled` / `synced_interval_hours`: what both sides held after the
last mirror. Each field is decided on its own, so an SQL interval change and a pause in the UI both survive:

- neither side changed: nothing to do;
- only Prefect changed (UI, `prefect deployment schedule pause|resume|create`, a new `prefect deploy`):
  the table follows;
- only the table changed: Prefect is updated, then the table records the value as synced;
- both changed, to different values (a conflict): **Prefect wins** in the mirror loop. It is the truth, its
  value is the one already scheduling runs, and an unattended loop must never undo what someone did in
  Prefect's UI; the overridden SQL edit is reported. `smartplex-sync schedules apply` is an admin asking
  for the table's values explicitly, so there **the table wins**;
- never mirrored (`synced_*` NULL): the table cannot tell an edit from the seed, so Prefect wins in the
  loop; `schedules apply` pushes the table;
- right after `prefect deploy --all` (every `make run`), which resets every schedule to prefect.yaml's
  defaults: that reset is nobody's edit, so the table is pushed as it is (`mirror_once(restore=True)`),
  and a stack restarted on the same data keeps its schedules.

The row is written compare-and-set (`store.schedules.write_mirror`), so an UPDATE made while a mirror runs
is not lost: it is picked up on the next one.

The mirrored schedule of a deployment is the one with the slug `prefect.yaml` gives it; when that is gone
(`prefect deployment schedule create --replace`), the newest interval schedule. Cron and rrule schedules
have no interval: the table keeps its own. A deployment without any schedule counts as disabled; enabling
it (or changing its interval) from the table creates the schedule again under its slug.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

import yaml
from sqlalchemy import Engine

from smartplex_sync.models import Deployment
from smartplex_sync.store.schedules import RunHistory, ScheduleRow, read_schedules, write_mirror

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import DeploymentSchedule

logger = logging.getLogger(__name__)

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"
MIN_HOURS, MAX_HOURS = 1, 168  # the CHECK on sync_schedule.interval_hours

T = TypeVar("T", bool, int)
V = TypeVar("V")


# ---------------------------------------------------------------------------------------------- pure logic


@dataclass(frozen=True)
class DefaultSchedule:
    """A deployment's schedule as `prefect.yaml` declares it."""

    slug: str | None
    interval_seconds: float
    active: bool


def load_defaults(text: str) -> dict[str, DefaultSchedule]:
    """Deployment name → its first schedule, from the text of `prefect.yaml`."""
    defaults = {}
    for deployment in yaml.safe_load(text).get("deployments") or []:
        schedules = deployment.get("schedules") or []
        if schedules and "interval" in schedules[0]:
            first = schedules[0]
            defaults[deployment["name"]] = DefaultSchedule(
                first.get("slug"), float(first["interval"]), bool(first.get("active", True))
            )
    return defaults


def hours_from_seconds(seconds: float) -> int:
    """Prefect's interval as the table's whole hours, within the table's CHECK range."""
    return max(MIN_HOURS, min(MAX_HOURS, round(seconds / 3600)))


@dataclass(frozen=True)
class FieldDecision(Generic[V]):
    value: V  # what both sides should hold afterwards
    push: bool = False  # Prefect must be changed to `value`
    conflict: bool = False  # both sides had changed


def merge_field(
    table: T, synced: T | None, prefect: T | None, *, prefer_table: bool, restore: bool = False
) -> FieldDecision[T]:
    """The rule of the module docstring for one field. `prefect` None: Prefect has no such value (cron).

    `restore`: Prefect's value is `prefect.yaml`'s default, put back by a `prefect deploy`, not anybody's
    edit, so the table (the last agreed value, or an admin's newer SQL edit) is pushed as it is."""
    if table == prefect:
        return FieldDecision(table)
    if restore:
        return FieldDecision(table, push=True)
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
    row: ScheduleRow,
    prefect_enabled: bool,
    prefect_hours: int | None,
    *,
    prefer_table: bool,
    restore: bool = False,
) -> Decision:
    options = {"prefer_table": prefer_table, "restore": restore}
    return Decision(
        merge_field(row.enabled, row.synced_enabled, prefect_enabled, **options),
        merge_field(row.interval_hours, row.synced_interval_hours, prefect_hours, **options),
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


# ------------------------------------------------------------------------------------------- Prefect side


@dataclass(frozen=True)
class PrefectSide:
    """A deployment as Prefect has it: its id, its mirrored schedule (None: no schedule) and how many more."""

    deployment_id: UUID
    schedule: DeploymentSchedule | None
    other_schedules: int

    @property
    def active(self) -> bool:
        return self.schedule is not None and self.schedule.active

    @property
    def interval_seconds(self) -> float | None:
        interval = getattr(self.schedule.schedule, "interval", None) if self.schedule else None
        return interval.total_seconds() if interval is not None else None

    @property
    def interval_hours(self) -> int | None:
        seconds = self.interval_seconds
        return None if seconds is None else hours_from_seconds(seconds)


def pick_schedule(schedules: list[DeploymentSchedule], slug: str | None) -> DeploymentSchedule | None:
    """The schedule `sync_schedule` mirrors: ours by slug, else the newest interval one, else the newest."""
    for schedule in schedules:
        if slug is not None and schedule.slug == slug:
            return schedule
    newest = sorted(schedules, key=lambda s: s.created or 0, reverse=True)
    with_interval = [s for s in newest if hasattr(s.schedule, "interval")]
    return (with_interval or newest or [None])[0]


async def read_prefect_side(client: PrefectClient, deployment: Deployment, slug: str | None) -> PrefectSide:
    """Raises prefect.exceptions.ObjectNotFound when the deployment does not exist."""
    found = await client.read_deployment_by_name(deployment.full_name)
    picked = pick_schedule(list(found.schedules), slug)
    return PrefectSide(found.id, picked, len(found.schedules) - (picked is not None))


async def read_history(client: PrefectClient, deployment_id: UUID) -> RunHistory:
    """Next scheduled run, the last run that started (its state and, when it failed, why) and the count."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    of_deployment = FlowRunFilterDeploymentId(any_=[deployment_id])
    started = FlowRunFilter(deployment_id=of_deployment, start_time=FlowRunFilterStartTime(is_null_=False))
    scheduled = FlowRunFilter(
        deployment_id=of_deployment,
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
    )
    last_runs = await client.read_flow_runs(
        flow_run_filter=started, sort=FlowRunSort.START_TIME_DESC, limit=1
    )
    upcoming = await client.read_flow_runs(
        flow_run_filter=scheduled, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1
    )
    history = RunHistory(
        next_run_at=upcoming[0].expected_start_time if upcoming else None,
        run_count=await client.count_flow_runs(flow_run_filter=started),
    )
    if not last_runs:
        return history
    last = last_runs[0]
    state = last.state
    failed = state is not None and state.type in (StateType.FAILED, StateType.CRASHED)
    return RunHistory(
        next_run_at=history.next_run_at,
        run_count=history.run_count,
        last_run_at=last.start_time,
        last_status=state.name if state else None,
        last_error=(state.message or state.name) if failed and state else None,
    )


async def push_schedule(
    client: PrefectClient, side: PrefectSide, decision: Decision, default: DefaultSchedule | None
) -> None:
    """Make Prefect hold the decided values: update the mirrored schedule, or create it again."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule

    interval = timedelta(hours=decision.interval_hours.value)
    if side.schedule is None:
        new = DeploymentScheduleCreate(
            schedule=IntervalSchedule(interval=interval),
            active=decision.enabled.value,
            slug=default.slug if default else None,
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
    )


# ------------------------------------------------------------------------------------------------- mirror


@dataclass(frozen=True)
class ServiceOutcome:
    service: str
    deployment: str
    changes: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class MirrorReport:
    outcomes: list[ServiceOutcome]

    @property
    def ok(self) -> bool:
        return all(o.error is None for o in self.outcomes)

    def lines(self, *, quiet: bool = False) -> list[str]:
        """One line per change, conflict, note or error; with `quiet`, nothing for rows left as they were."""
        lines = []
        for outcome in self.outcomes:
            items = [
                *outcome.changes,
                *(f"conflict: {c}" for c in outcome.conflicts),
                *outcome.notes,
                *([f"error: {outcome.error}"] if outcome.error else []),
            ]
            if not items and not quiet:
                items = ["in sync"]
            lines.extend(f"{outcome.service} ({outcome.deployment}): {item}" for item in items)
        return lines


async def _mirror_row(
    engine: Engine,
    client: PrefectClient,
    row: ScheduleRow,
    defaults: dict[str, DefaultSchedule],
    prefer_table: bool,
    restore: bool,
) -> ServiceOutcome:
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = Deployment(row.deployment)
    except ValueError:
        return ServiceOutcome(row.service, row.deployment, error="not a deployment of prefect.yaml")
    default = defaults.get(deployment.value)
    try:
        side = await read_prefect_side(client, deployment, default.slug if default else None)
    except ObjectNotFound:
        return ServiceOutcome(
            row.service,
            row.deployment,
            error=f"{deployment.full_name} is not deployed: run `prefect --no-prompt deploy --all`",
        )
    decision = reconcile(row, side.active, side.interval_hours, prefer_table=prefer_table, restore=restore)
    changes, conflicts = describe(row, decision)
    notes = []
    if side.other_schedules:
        notes.append(f"{side.other_schedules} more schedule(s) in Prefect that sync_schedule does not mirror")
    if side.schedule is not None and side.interval_hours is None:
        notes.append("Prefect schedule is not an interval: interval_hours left as it is")
    if decision.push:
        await push_schedule(client, side, decision, default)
    history = await read_history(client, side.deployment_id)
    written = await asyncio.to_thread(
        write_mirror,
        engine,
        row,
        enabled=decision.enabled.value,
        interval_hours=decision.interval_hours.value,
        history=history,
    )
    if not written:
        notes.append("row edited while mirroring: taken up next time")
    return ServiceOutcome(row.service, row.deployment, changes, conflicts, notes)


async def mirror_once(
    engine: Engine, client: PrefectClient, *, prefer_table: bool = False, restore: bool = False
) -> MirrorReport:
    """One pass over every `sync_schedule` row (see the module docstring for the rule).

    `prefer_table=True` is `smartplex-sync schedules apply`: the table wins conflicts. `restore=True` is
    for right after `prefect deploy`, which resets every schedule to prefect.yaml's: the table wins outright.
    """
    rows = await asyncio.to_thread(read_schedules, engine)
    defaults = load_defaults(PREFECT_YAML.read_text())
    return MirrorReport(
        [await _mirror_row(engine, client, row, defaults, prefer_table, restore) for row in rows]
    )


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
