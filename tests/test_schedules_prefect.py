"""sync_schedule ↔ Prefect against a real Prefect server: defaults, round trips, the conflict rule, a
scheduled run that really runs, and the deployment concurrency limits."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import IntervalSchedule
from sqlalchemy import Engine, select, text

from deployments.processes import VENV_BIN
from smartplex_sync.models import Deployment
from smartplex_sync.schedule_mirror import (
    PREFECT_YAML,
    PrefectSide,
    load_defaults,
    mirror_once,
    read_prefect_side,
)
from smartplex_sync.store import make_engine, utcnow
from smartplex_sync.store.schedules import ScheduleRow, read_schedules
from smartplex_sync.store.tables import webhook_log
from smartplex_sync.store.webhooks import delete_processed_before
from tests.support.prefect_stack import PrefectStack, deploy, restore_default_schedules

DEFAULTS = load_defaults(PREFECT_YAML.read_text())
R = TypeVar("R")


def with_client(api_url: str, work: Callable[[PrefectClient], Awaitable[R]]) -> R:
    async def main() -> R:
        async with PrefectClient(api_url) as client:
            return await work(client)

    return asyncio.run(main())


async def side_of(client: PrefectClient, deployment: Deployment) -> PrefectSide:
    return await read_prefect_side(client, deployment, DEFAULTS[deployment.value].slug)


async def set_schedule(
    client: PrefectClient, deployment: Deployment, *, active: bool | None = None, hours: float | None = None
) -> None:
    side = await side_of(client, deployment)
    assert side.schedule is not None
    schedule = IntervalSchedule(interval=timedelta(hours=hours)) if hours is not None else None
    await client.update_deployment_schedule(
        side.deployment_id, side.schedule.id, active=active, schedule=schedule
    )


@pytest.fixture
def api_url(prefect_deployments: PrefectStack) -> Iterator[str]:
    yield prefect_deployments.api_url
    with_client(prefect_deployments.api_url, restore_default_schedules)


def mirror(api_url: str, engine: Engine, *, prefer_table: bool = False) -> list[str]:
    report = with_client(api_url, lambda c: mirror_once(engine, c, prefer_table=prefer_table))
    assert report.ok, report.lines()
    return report.lines(quiet=True)


def rows(engine: Engine) -> dict[str, ScheduleRow]:
    return {r.service: r for r in read_schedules(engine)}


def prefect_state(api_url: str, deployment: Deployment) -> tuple[bool, float | None]:
    side = with_client(api_url, lambda c: side_of(c, deployment))
    return side.active, side.interval_seconds


def test_defaults_are_registered_as_the_seed_says(api_url: str, engine: Engine) -> None:
    hours = {d: prefect_state(api_url, d) for d in Deployment}
    assert hours == {
        Deployment.PLEX_LIBRARY_SYNC: (True, 12 * 3600),
        Deployment.TAUTULLI_SYNC: (True, 6 * 3600),
        Deployment.SONARR_SYNC: (False, 24 * 3600),
        Deployment.RADARR_SYNC: (False, 24 * 3600),
        Deployment.OVERSEERR_SYNC: (False, 6 * 3600),
        Deployment.WEBHOOK_RETENTION: (True, 24 * 3600),
    }
    assert mirror(api_url, engine) == []  # the seeded table already agrees
    table = {
        s: (r.enabled, r.interval_hours, r.synced_enabled, r.synced_interval_hours)
        for s, r in rows(engine).items()
    }
    assert table == {
        "plex": (True, 12, True, 12),
        "tautulli": (True, 6, True, 6),
        "sonarr": (False, 24, False, 24),
        "radarr": (False, 24, False, 24),
        "overseerr": (False, 6, False, 6),
    }


def test_prefect_edits_reach_the_table(api_url: str, engine: Engine) -> None:
    mirror(api_url, engine)
    plex = with_client(api_url, lambda c: side_of(c, Deployment.PLEX_LIBRARY_SYNC))
    assert plex.schedule is not None
    # The admin's way: Prefect's own CLI.
    subprocess.run(
        [
            str(VENV_BIN / "prefect"),
            "deployment",
            "schedule",
            "pause",
            Deployment.PLEX_LIBRARY_SYNC.full_name,
            str(plex.schedule.id),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with_client(api_url, lambda c: set_schedule(c, Deployment.TAUTULLI_SYNC, hours=4))
    with_client(api_url, lambda c: set_schedule(c, Deployment.SONARR_SYNC, active=True))

    changes = mirror(api_url, engine)

    assert sorted(changes) == [
        "plex (plex-library-sync): table ← prefect: enabled True → False",
        "sonarr (sonarr-sync): table ← prefect: enabled False → True",
        "tautulli (tautulli-sync): table ← prefect: interval_hours 6 → 4",
    ]
    after = rows(engine)
    assert (after["plex"].enabled, after["tautulli"].interval_hours, after["sonarr"].enabled) == (
        False,
        4,
        True,
    )

    with_client(api_url, lambda c: set_schedule(c, Deployment.PLEX_LIBRARY_SYNC, active=True))
    mirror(api_url, engine)
    assert rows(engine)["plex"].enabled is True


def test_sql_edits_reach_prefect(api_url: str, engine: Engine) -> None:
    mirror(api_url, engine)
    with engine.begin() as conn:  # the seed guide's SQL, as it is
        conn.execute(text("UPDATE sync_schedule SET interval_hours = 4 WHERE service = 'tautulli'"))
        conn.execute(text("UPDATE sync_schedule SET enabled = false WHERE service = 'plex'"))

    changes = mirror(api_url, engine)

    assert sorted(changes) == [
        "plex (plex-library-sync): prefect ← table: enabled = False",
        "tautulli (tautulli-sync): prefect ← table: interval_hours = 4",
    ]
    assert prefect_state(api_url, Deployment.TAUTULLI_SYNC) == (True, 4 * 3600)
    assert prefect_state(api_url, Deployment.PLEX_LIBRARY_SYNC) == (False, 12 * 3600)
    assert mirror(api_url, engine) == []  # settled

    with engine.begin() as conn:
        conn.execute(text("UPDATE sync_schedule SET enabled = true WHERE service = 'plex'"))
    mirror(api_url, engine)
    assert prefect_state(api_url, Deployment.PLEX_LIBRARY_SYNC) == (True, 12 * 3600)


def test_a_redeploy_keeps_the_schedules_the_table_agreed_on(
    api_url: str, engine: Engine, prefect_deployments: PrefectStack
) -> None:
    """`make run` deploys again on every start, which resets schedules; the restore puts them back."""
    mirror(api_url, engine)
    with_client(api_url, lambda c: set_schedule(c, Deployment.TAUTULLI_SYNC, active=False, hours=4))
    mirror(api_url, engine)
    deploy(prefect_deployments.env, [Deployment.TAUTULLI_SYNC.value])
    assert prefect_state(api_url, Deployment.TAUTULLI_SYNC) == (True, 6 * 3600)  # the reset

    report = with_client(api_url, lambda c: mirror_once(engine, c, restore=True))

    assert report.ok, report.lines()
    assert prefect_state(api_url, Deployment.TAUTULLI_SYNC) == (False, 4 * 3600)
    assert (rows(engine)["tautulli"].enabled, rows(engine)["tautulli"].interval_hours) == (False, 4)


def test_conflict_prefect_wins_in_the_loop_table_wins_on_apply(api_url: str, engine: Engine) -> None:
    mirror(api_url, engine)

    def both_sides_edit(table_hours: int, prefect_hours: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                text(f"UPDATE sync_schedule SET interval_hours = {table_hours} WHERE service = 'tautulli'")
            )
        with_client(api_url, lambda c: set_schedule(c, Deployment.TAUTULLI_SYNC, hours=prefect_hours))

    both_sides_edit(table_hours=4, prefect_hours=8)
    loop = mirror(api_url, engine)
    assert (
        "tautulli (tautulli-sync): conflict: interval_hours changed on both sides; prefect wins (8)" in loop
    )
    assert prefect_state(api_url, Deployment.TAUTULLI_SYNC)[1] == 8 * 3600
    assert rows(engine)["tautulli"].interval_hours == 8

    both_sides_edit(table_hours=3, prefect_hours=9)
    apply = mirror(api_url, engine, prefer_table=True)
    assert "tautulli (tautulli-sync): conflict: interval_hours changed on both sides; table wins (3)" in apply
    assert prefect_state(api_url, Deployment.TAUTULLI_SYNC)[1] == 3 * 3600
    assert rows(engine)["tautulli"].interval_hours == 3


def test_deleted_schedule_is_created_again_from_the_table(api_url: str, engine: Engine) -> None:
    mirror(api_url, engine)

    async def delete_radarr_schedule(client: PrefectClient) -> None:
        side = await side_of(client, Deployment.RADARR_SYNC)
        assert side.schedule is not None
        await client.delete_deployment_schedule(side.deployment_id, side.schedule.id)

    with_client(api_url, delete_radarr_schedule)
    mirror(api_url, engine)
    assert rows(engine)["radarr"].enabled is False  # no schedule: disabled

    with engine.begin() as conn:
        conn.execute(
            text("UPDATE sync_schedule SET enabled = true, interval_hours = 2 WHERE service = 'radarr'")
        )
    mirror(api_url, engine)
    radarr = with_client(api_url, lambda c: side_of(c, Deployment.RADARR_SYNC))
    assert radarr.schedule is not None and radarr.schedule.slug == DEFAULTS["radarr-sync"].slug
    assert (radarr.active, radarr.interval_seconds) == (True, 2 * 3600)


# ------------------------------------------------------------------------------------------- with a worker


FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


def wait_for_runs(api_url: str, run_ids: list[UUID], timeout: float = 90) -> list[FlowRun]:
    deadline = time.monotonic() + timeout
    while True:
        runs = with_client(api_url, lambda c: asyncio.gather(*(c.read_flow_run(i) for i in run_ids)))
        if all(r.state is not None and r.state.type in FINAL for r in runs):
            return list(runs)
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs not finished: {[(r.id, r.state_name) for r in runs]}")
        time.sleep(1)


def running_intervals(api_url: str, run_id: UUID) -> list[tuple[Any, Any]]:
    """(entered RUNNING, left RUNNING) from the run's state history."""
    states = sorted(with_client(api_url, lambda c: c.read_flow_run_states(run_id)), key=lambda s: s.timestamp)
    intervals = []
    for state, following in zip(states, [*states[1:], None], strict=True):
        if state.type is StateType.RUNNING:
            assert following is not None, "run still RUNNING"
            intervals.append((state.timestamp, following.timestamp))
    return intervals


def test_a_short_interval_schedule_really_runs(prefect_worker: PrefectStack) -> None:
    api_url = prefect_worker.api_url
    stack_db = make_engine(prefect_worker.database_url)
    with stack_db.begin() as conn:
        conn.execute(
            webhook_log.insert().values(
                source="plex",
                event_type="ancient",
                payload={},
                received_at=utcnow() - timedelta(days=400),
                processed=True,
                action="ignored",
                http_status=202,
                sync_requests=[],
            )
        )

    async def add_short_schedule(client: PrefectClient) -> UUID:
        found = await client.read_deployment_by_name(Deployment.WEBHOOK_RETENTION.full_name)
        short = DeploymentScheduleCreate(
            schedule=IntervalSchedule(interval=timedelta(seconds=5)),
            active=True,
            max_scheduled_runs=2,
            slug="test-5s",
        )
        await client.create_deployment_schedules(found.id, [short])
        # What the scheduler service does every 60 s, asked for now.
        answer = await client.request(
            "POST", "/deployments/{id}/schedule", path_params={"id": found.id}, json={"max_runs": 3}
        )
        answer.raise_for_status()
        return found.id

    deployment_id = with_client(api_url, add_short_schedule)
    completed = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
    )
    try:
        deadline = time.monotonic() + 150
        done: list[FlowRun] = []
        while not done and time.monotonic() < deadline:
            time.sleep(1)
            runs = with_client(api_url, lambda c: c.read_flow_runs(flow_run_filter=completed))
            done = [r for r in runs if r.auto_scheduled]
        assert done, "no scheduled retention run completed"
        with stack_db.connect() as conn:
            left = conn.execute(select(webhook_log.c.id).where(webhook_log.c.event_type == "ancient")).all()
        assert left == []  # the scheduled retention run really did its work
    finally:
        with_client(api_url, restore_default_schedules)
        delete_processed_before(stack_db, utcnow())
        stack_db.dispose()


def overlaps(a: list[tuple[Any, Any]], b: list[tuple[Any, Any]]) -> bool:
    return any(start_a < end_b and start_b < end_a for start_a, end_a in a for start_b, end_b in b)


def start_two_at_once(api_url: str, deployment: Deployment) -> list[UUID]:
    async def start(client: PrefectClient) -> list[UUID]:
        found = await client.read_deployment_by_name(deployment.full_name)
        runs = await asyncio.gather(*(client.create_flow_run_from_deployment(found.id) for _ in range(2)))
        return [r.id for r in runs]

    return with_client(api_url, start)


def test_enqueue_limit_runs_two_syncs_one_after_the_other(prefect_worker: PrefectStack) -> None:
    api_url = prefect_worker.api_url
    first, second = start_two_at_once(api_url, Deployment.SONARR_SYNC)  # no Sonarr configured: fails fast
    runs = wait_for_runs(api_url, [first, second])
    assert all(r.state_type is not StateType.CANCELLED for r in runs)  # ENQUEUE: both ran
    a, b = running_intervals(api_url, first), running_intervals(api_url, second)
    assert a and b and not overlaps(a, b)
    names = {
        s.name
        for run_id in (first, second)
        for s in with_client(api_url, lambda c, i=run_id: c.read_flow_run_states(i))
    }
    assert "AwaitingConcurrencySlot" in names  # the limit is what kept them apart


def test_cancel_new_limit_never_runs_two_retentions_at_once(prefect_worker: PrefectStack) -> None:
    api_url = prefect_worker.api_url
    first, second = start_two_at_once(api_url, Deployment.WEBHOOK_RETENTION)
    runs = wait_for_runs(api_url, [first, second])
    assert StateType.COMPLETED in {r.state_type for r in runs}
    assert not overlaps(running_intervals(api_url, first), running_intervals(api_url, second))
