"""sync_schedule ↔ Prefect against a real Prefect server, row by row: each row a schedule of its service's
deployment scoped to its user's servers, round trips both ways, the conflict rule, rows and servers that
come and go, on our SQLite and on a database built from SmartPlex's own SQL; then a scheduled run that
really runs, and the deployment concurrency limits."""

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
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, DeploymentSchedule, FlowRun, StateType
from prefect.client.schemas.schedules import IntervalSchedule
from sqlalchemy import Engine, delete, select, text, update

from deployments.processes import VENV_BIN
from smartplex_sync.migrate import migrate
from smartplex_sync.models import Deployment
from smartplex_sync.schedule_mirror import SLUG_PREFIX, mirror_once
from smartplex_sync.store import make_engine, utcnow, webhooks
from smartplex_sync.store.schedules import ScheduleRow, read_schedules
from smartplex_sync.store.tables import servers, sync_schedule, webhook_log
from tests.conftest import _fresh_postgres_database
from tests.support.factories import add_server, add_user
from tests.support.prefect_stack import PrefectStack, clear_sync_schedules, deploy
from tests.support.smartplex_schema import apply_smartplex_schema

R = TypeVar("R")
SYNCS = {
    "plex": Deployment.PLEX_LIBRARY_SYNC,
    "tautulli": Deployment.TAUTULLI_SYNC,
    "sonarr": Deployment.SONARR_SYNC,
    "radarr": Deployment.RADARR_SYNC,
    "overseerr": Deployment.OVERSEERR_SYNC,
}
DEFAULTS = {"plex": (True, 12), "tautulli": (True, 6), "sonarr": (False, 24), "radarr": (False, 24),
            "overseerr": (False, 6)}  # fmt: skip


def with_client(api_url: str, work: Callable[[PrefectClient], Awaitable[R]]) -> R:
    async def main() -> R:
        async with PrefectClient(api_url) as client:
            return await work(client)

    return asyncio.run(main())


def schedules_of(api_url: str, deployment: Deployment) -> dict[str, DeploymentSchedule]:
    """The deployment's schedules by slug."""

    async def read(client: PrefectClient) -> dict[str, DeploymentSchedule]:
        found = await client.read_deployment_by_name(deployment.full_name)
        return {s.slug or str(s.id): s for s in found.schedules}

    return with_client(api_url, read)


def state_of(schedule: DeploymentSchedule) -> tuple[bool, float]:
    """(active, interval hours)"""
    return schedule.active, schedule.schedule.interval.total_seconds() / 3600  # type: ignore[union-attr]


def servers_in(schedule: DeploymentSchedule) -> set[UUID]:
    assert schedule.parameters["trigger"] == "scheduled"
    return {UUID(key) for key in schedule.parameters["request"]["servers"]}


async def _edit(
    client: PrefectClient,
    deployment: Deployment,
    slug: str,
    *,
    active: bool | None = None,
    hours: float | None = None,
) -> None:
    found = await client.read_deployment_by_name(deployment.full_name)
    [schedule] = [s for s in found.schedules if s.slug == slug]
    interval = IntervalSchedule(interval=timedelta(hours=hours)) if hours is not None else None
    await client.update_deployment_schedule(found.id, schedule.id, active=active, schedule=interval)


class Users:
    """Two SmartPlex users: Alice with one Plex server, Bob with two; Carol with none."""

    def __init__(self, engine: Engine) -> None:
        with engine.begin() as conn:
            self.alice = add_user(conn, "alice@example.com")
            self.bob = add_user(conn, "bob@example.com")
            self.carol = add_user(conn, "carol@example.com")
            self.alice_servers = {add_server(conn, self.alice, name="Alice's Plex", machine_id="alice-1")}
            self.bob_servers = {
                add_server(conn, self.bob, name="Bob's Plex", machine_id="bob-1"),
                add_server(conn, self.bob, name="Bob's cabin", machine_id="bob-2"),
            }


class Mirror:
    def __init__(self, api_url: str, engine: Engine) -> None:
        self.api_url, self.engine = api_url, engine

    def __call__(self, *, prefer_table: bool = False) -> list[str]:
        report = with_client(self.api_url, lambda c: mirror_once(self.engine, c, prefer_table=prefer_table))
        assert report.ok, report.lines()
        return report.lines(quiet=True)

    def rows(self) -> dict[tuple[UUID | None, str], ScheduleRow]:
        return {(r.user_id, r.service): r for r in read_schedules(self.engine)}

    def schedule(self, user_id: UUID | None, service: str) -> DeploymentSchedule:
        row = self.rows()[(user_id, service)]
        return schedules_of(self.api_url, SYNCS[service])[row.slug]

    def edit(self, user_id: UUID, service: str, **change: Any) -> None:
        slug = self.rows()[(user_id, service)].slug
        with_client(self.api_url, lambda c: _edit(c, SYNCS[service], slug, **change))


@pytest.fixture
def api_url(prefect_deployments: PrefectStack) -> Iterator[str]:
    with_client(prefect_deployments.api_url, clear_sync_schedules)
    yield prefect_deployments.api_url
    with_client(prefect_deployments.api_url, clear_sync_schedules)


@pytest.fixture(scope="module")
def smartplex_url(postgres_admin_url: str) -> str:
    """A PostgreSQL built from SmartPlex's own files (its per-user sync_schedule, 006), then migrated."""
    url = _fresh_postgres_database(postgres_admin_url)
    apply_smartplex_schema(url)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "smartplex"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    """Our own SQLite, or SmartPlex's PostgreSQL (emptied of users, as a new module's database would be)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'smartplex.db'}")
        migrate(engine)
    else:
        engine = make_engine(request.getfixturevalue("smartplex_url"))
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE users CASCADE"))
    yield engine
    engine.dispose()


def test_each_row_is_a_schedule_of_its_users_servers_and_edits_flow_both_ways(
    api_url: str, any_engine: Engine
) -> None:
    users = Users(any_engine)
    mirror = Mirror(api_url, any_engine)

    first = mirror()

    rows = mirror.rows()
    assert set(rows) == {(u, s) for u in (users.alice, users.bob) for s in SYNCS}  # Carol has no server
    assert any("10 default sync_schedule rows added" in line for line in first)
    for (user, service), row in rows.items():
        schedule = schedules_of(api_url, SYNCS[service])[row.slug]
        assert row.slug == f"{SLUG_PREFIX}{row.id}"
        assert state_of(schedule) == DEFAULTS[service]
        assert servers_in(schedule) == (users.alice_servers if user == users.alice else users.bob_servers)
        assert (row.enabled, row.interval_hours) == DEFAULTS[service]
        assert (row.synced_enabled, row.synced_interval_hours) == DEFAULTS[service]
        assert (row.next_run_at is not None) is DEFAULTS[service][0]
    assert mirror() == []  # settled

    # Prefect → table: Prefect's own CLI pauses Alice's Plex schedule; Bob's Tautulli every 4 h in the UI.
    alice_plex = mirror.schedule(users.alice, "plex")
    subprocess.run(
        [str(VENV_BIN / "prefect"), "deployment", "schedule", "pause",
         Deployment.PLEX_LIBRARY_SYNC.full_name, str(alice_plex.id)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    mirror.edit(users.bob, "tautulli", hours=4)
    changes = mirror()
    assert len(changes) == 2, changes
    rows = mirror.rows()
    assert rows[(users.alice, "plex")].enabled is False and rows[(users.bob, "plex")].enabled is True
    assert (rows[(users.bob, "tautulli")].interval_hours, rows[(users.alice, "tautulli")].interval_hours) == (
        4,
        6,
    )

    # table → Prefect: the guide's SQL, as it is, moves every user's Tautulli schedule
    with any_engine.begin() as conn:
        conn.execute(text("UPDATE sync_schedule SET interval_hours = 3 WHERE service = 'tautulli'"))
        conn.execute(text("UPDATE sync_schedule SET enabled = true WHERE service = 'plex'"))
    mirror()
    for user in (users.alice, users.bob):
        assert state_of(mirror.schedule(user, "tautulli")) == (True, 3)
        assert state_of(mirror.schedule(user, "plex")) == (True, 12)
    assert mirror() == []


def test_conflict_prefect_wins_in_the_loop_and_the_table_on_apply(api_url: str, engine: Engine) -> None:
    users = Users(engine)
    mirror = Mirror(api_url, engine)
    mirror()

    def both_sides_edit(table_hours: int, prefect_hours: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                update(sync_schedule)
                .where(sync_schedule.c.service == "tautulli", sync_schedule.c.user_id == users.bob)
                .values(interval_hours=table_hours)
            )
        mirror.edit(users.bob, "tautulli", hours=prefect_hours)

    both_sides_edit(table_hours=4, prefect_hours=8)
    loop = mirror()
    assert any("conflict: interval_hours changed on both sides; prefect wins (8)" in line for line in loop)
    assert state_of(mirror.schedule(users.bob, "tautulli"))[1] == 8
    assert mirror.rows()[(users.bob, "tautulli")].interval_hours == 8

    both_sides_edit(table_hours=3, prefect_hours=9)
    apply = mirror(prefer_table=True)
    assert any("conflict: interval_hours changed on both sides; table wins (3)" in line for line in apply)
    assert state_of(mirror.schedule(users.bob, "tautulli"))[1] == 3
    assert mirror.rows()[(users.bob, "tautulli")].interval_hours == 3
    assert state_of(mirror.schedule(users.alice, "tautulli")) == (True, 6)  # another user's row: untouched


def test_rows_and_servers_that_come_and_go(api_url: str, engine: Engine) -> None:
    users = Users(engine)
    mirror = Mirror(api_url, engine)
    mirror()

    # a schedule deleted in Prefect comes back from its row
    radarr = mirror.schedule(users.alice, "radarr")
    with_client(api_url, lambda c: c.delete_deployment_schedule(radarr.deployment_id, radarr.id))
    mirror()
    assert state_of(mirror.schedule(users.alice, "radarr")) == (False, 24)

    # a new server joins its user's schedules; a deleted row's schedule goes
    with engine.begin() as conn:
        third = add_server(conn, users.alice, name="Alice's second", machine_id="alice-2")
        gone = mirror.rows()[(users.bob, "overseerr")]
        conn.execute(delete(sync_schedule).where(sync_schedule.c.id == gone.id))
    notes = mirror()
    assert servers_in(mirror.schedule(users.alice, "plex")) == {*users.alice_servers, third}
    assert gone.slug not in schedules_of(api_url, Deployment.OVERSEERR_SYNC)
    assert any(f"schedule {gone.slug} deleted" in line for line in notes)

    # a user whose servers are all gone keeps the rows, without schedules
    with engine.begin() as conn:
        conn.execute(delete(servers).where(servers.c.user_id == users.bob))
    mirror()
    bob_slugs = {r.slug for (user, _), r in mirror.rows().items() if user == users.bob}
    held = {slug for d in SYNCS.values() for slug in schedules_of(api_url, d)}
    assert bob_slugs and not bob_slugs & held


def test_a_redeploy_keeps_what_the_table_agreed_on(
    api_url: str, engine: Engine, prefect_deployments: PrefectStack
) -> None:
    """`make run` deploys on every start; the sync deployments declare no schedule of their own, and the
    mirror's next pass leaves Prefect holding the table's values."""
    users = Users(engine)
    mirror = Mirror(api_url, engine)
    mirror()
    mirror.edit(users.alice, "tautulli", active=False, hours=4)
    mirror()

    deploy(prefect_deployments.env, [Deployment.TAUTULLI_SYNC.value])
    mirror()

    assert state_of(mirror.schedule(users.alice, "tautulli")) == (False, 4)
    row = mirror.rows()[(users.alice, "tautulli")]
    assert (row.enabled, row.interval_hours) == (False, 4)
    assert state_of(mirror.schedule(users.bob, "tautulli")) == (True, 6)


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
    ancient = webhooks.record(
        stack_db, source="plex", event_type="ancient", payload={}, action="ignored", requests=(),
        received_at=utcnow() - timedelta(days=400),
    )  # fmt: skip

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

    async def remove_short_schedule(client: PrefectClient) -> None:
        found = await client.read_deployment_by_name(Deployment.WEBHOOK_RETENTION.full_name)
        for schedule in found.schedules:
            if schedule.slug == "test-5s":
                await client.delete_deployment_schedule(found.id, schedule.id)

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
            left = conn.execute(select(webhook_log.c.id).where(webhook_log.c.id == ancient)).all()
        assert left == []  # the scheduled retention run really did its work
    finally:
        with_client(api_url, remove_short_schedule)
        stack_db.dispose()


def overlaps(a: list[tuple[Any, Any]], b: list[tuple[Any, Any]]) -> bool:
    return any(start_a < end_b and start_b < end_a for start_a, end_a in a for start_b, end_b in b)


def start_two_at_once(api_url: str, deployment: Deployment) -> tuple[list[UUID], Any]:
    """Two runs of the deployment created together; also the deployment's concurrency options."""

    async def start(client: PrefectClient) -> tuple[list[UUID], Any]:
        found = await client.read_deployment_by_name(deployment.full_name)
        runs = await asyncio.gather(*(client.create_flow_run_from_deployment(found.id) for _ in range(2)))
        return [r.id for r in runs], (found.global_concurrency_limit, found.concurrency_options)

    return with_client(api_url, start)


def test_enqueue_limit_runs_two_syncs_one_after_the_other(prefect_worker: PrefectStack) -> None:
    api_url = prefect_worker.api_url
    (first, second), (limit, options) = start_two_at_once(api_url, Deployment.SONARR_SYNC)
    assert limit is not None and limit.limit == 1
    assert options.collision_strategy is ConcurrencyLimitStrategy.ENQUEUE
    runs = wait_for_runs(api_url, [first, second])
    assert all(r.state_type is not StateType.CANCELLED for r in runs)  # ENQUEUE: both ran
    a, b = running_intervals(api_url, first), running_intervals(api_url, second)
    assert a and b and not overlaps(a, b)


def test_cancel_new_limit_never_runs_two_retentions_at_once(prefect_worker: PrefectStack) -> None:
    api_url = prefect_worker.api_url
    (first, second), (limit, options) = start_two_at_once(api_url, Deployment.WEBHOOK_RETENTION)
    assert limit is not None and limit.limit == 1
    assert options.collision_strategy is ConcurrencyLimitStrategy.CANCEL_NEW
    runs = wait_for_runs(api_url, [first, second])
    assert StateType.COMPLETED in {r.state_type for r in runs}
    assert not overlaps(running_intervals(api_url, first), running_intervals(api_url, second))
