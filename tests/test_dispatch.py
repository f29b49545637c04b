"""Recorded deliveries become Prefect flow runs: the plan (pure) and the dispatcher against a real server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from sqlalchemy import Engine, select

from deployments.processes import free_port
from smartplex_sync.models import Deployment, SyncRequest
from smartplex_sync.store import webhooks
from smartplex_sync.store.tables import webhook_log
from smartplex_sync.store.webhooks import PendingDelivery
from webhook_gateway.dispatch import Dispatcher, backoff, plan_run

T0 = datetime(2026, 11, 28, 12, 0, 3, tzinfo=UTC)
LIBRARY = SyncRequest(Deployment.PLEX_LIBRARY_SYNC, {"section_type": "show", "mode": "incremental"})


def pending(delivery_id: int, received_at: datetime, *requests: SyncRequest) -> PendingDelivery:
    return PendingDelivery(delivery_id, "sonarr", "Download", received_at, [r.to_json() for r in requests], 1)


def test_deliveries_in_one_window_share_a_key_and_start_when_it_closes() -> None:
    first = plan_run(pending(1, T0, LIBRARY), 0, coalesce_seconds=10)
    second = plan_run(pending(2, T0 + timedelta(seconds=6), LIBRARY), 0, coalesce_seconds=10)
    assert first.idempotency_key == second.idempotency_key
    assert first.start_at == second.start_at == datetime(2026, 11, 28, 12, 0, 10, tzinfo=UTC)
    assert first.name != second.name  # the run keeps the first delivery's name


def test_next_window_or_other_parameters_get_another_run() -> None:
    first = plan_run(pending(1, T0, LIBRARY), 0, coalesce_seconds=10)
    later = plan_run(pending(2, T0 + timedelta(seconds=7), LIBRARY), 0, coalesce_seconds=10)
    movies = SyncRequest(Deployment.PLEX_LIBRARY_SYNC, {"section_type": "movie", "mode": "incremental"})
    other = plan_run(pending(3, T0, movies), 0, coalesce_seconds=10)
    assert len({first.idempotency_key, later.idempotency_key, other.idempotency_key}) == 3


def test_without_coalescing_every_delivery_gets_its_own_run_now() -> None:
    single = SyncRequest(Deployment.TAUTULLI_SYNC, {"rating_key": "7"}, coalesce=False)
    plans = [plan_run(pending(i, T0, single), 0, coalesce_seconds=10) for i in (1, 2)]
    assert plans[0].idempotency_key == f"webhook:1:{T0.timestamp():.6f}:0" != plans[1].idempotency_key
    assert plans[0].start_at == T0
    assert (
        plan_run(pending(1, T0, LIBRARY), 0, coalesce_seconds=0).idempotency_key == plans[0].idempotency_key
    )


def test_a_new_database_reusing_row_ids_never_gets_an_old_run() -> None:
    single = SyncRequest(Deployment.TAUTULLI_SYNC, {"rating_key": "7"}, coalesce=False)
    before = plan_run(pending(1, T0, single), 0, coalesce_seconds=10)
    after_reset = plan_run(pending(1, T0 + timedelta(days=3), single), 0, coalesce_seconds=10)
    assert before.idempotency_key != after_reset.idempotency_key


def test_tags_name_source_and_event() -> None:
    plan = plan_run(pending(5, T0, LIBRARY), 0, coalesce_seconds=10)
    assert plan.tags == ("source:sonarr", "event:Download", "trigger:webhook")
    assert plan.name == "sonarr-download-5"


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 10, 30)] == [1, 2, 4, 300, 300]


# --- against a real Prefect server -----------------------------------------------------------------


@pytest.fixture
def registered_deployments(prefect_api_url: str) -> Iterator[None]:
    """Deployments under the real names; left as they are if `prefect deploy` already made them."""

    async def register() -> None:
        async with get_client() as client:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_pool(WorkPoolCreate(name="no-worker-here", type="process"))
            for deployment in Deployment:
                try:
                    await client.read_deployment_by_name(deployment.full_name)
                except Exception:
                    flow_id = await client.create_flow_from_name(deployment.flow_name)
                    await client.create_deployment(
                        flow_id, deployment.value, entrypoint="flows/x.py:x", work_pool_name="no-worker-here"
                    )

    asyncio.run(register())
    yield


async def _cleanup(client: PrefectClient, run_ids: set[str]) -> None:
    for run_id in run_ids:
        await client.delete_flow_run(run_id)


def _rows(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [r._asdict() for r in conn.execute(select(webhook_log).order_by(webhook_log.c.id))]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def prefect(registered_deployments: None) -> AsyncIterator[PrefectClient]:
    async with get_client() as client:
        yield client


@pytest.mark.anyio
async def test_a_burst_becomes_one_run_with_the_parameters_tags_and_window(
    engine: Engine, prefect: PrefectClient
) -> None:
    # A window long enough that the whole burst surely falls in one bucket.
    for _ in range(5):
        webhooks.record(
            engine, source="sonarr", event_type="Download", payload={}, action="x", requests=[LIBRARY]
        )
    webhooks.record(engine, source="radarr", event_type="Test", payload={}, action="test")
    dispatcher = Dispatcher(engine, coalesce_seconds=3600)
    assert await dispatcher.dispatch_due() == 5
    rows = _rows(engine)
    run_ids = {r["flow_run_id"] for r in rows[:5]}
    try:
        assert len(run_ids) == 1 and None not in run_ids
        assert all(r["processed"] and r["processed_at"] for r in rows)
        assert rows[5]["flow_run_id"] is None
        run = await prefect.read_flow_run(run_ids.pop())
        deployment = await prefect.read_deployment_by_name(Deployment.PLEX_LIBRARY_SYNC.full_name)
        assert run.deployment_id == deployment.id
        assert run.parameters["section_type"] == "show" and run.parameters["mode"] == "incremental"
        assert {"source:sonarr", "event:Download"} <= set(run.tags)
        assert run.state.is_scheduled()
        bucket_end = run.state.state_details.scheduled_time
        assert bucket_end.timestamp() % 3600 == 0
        assert rows[0]["sync_requests"][0]["flow_run_id"] == str(run.id)
    finally:
        await _cleanup(prefect, {r["flow_run_id"] for r in rows if r["flow_run_id"]})


@pytest.mark.anyio
async def test_prefect_down_keeps_deliveries_pending_then_dispatches_them(
    engine: Engine, prefect: PrefectClient
) -> None:
    request = SyncRequest(Deployment.TAUTULLI_SYNC, {"rating_key": "91544"}, coalesce=False)
    delivery_id = webhooks.record(
        engine, source="tautulli", event_type="stop", payload={}, action="tautulli-sync", requests=[request]
    )
    dead = f"http://127.0.0.1:{free_port()}/api"
    down = Dispatcher(engine, coalesce_seconds=10, client_factory=lambda: PrefectClient(dead))
    assert await down.dispatch_due() == 0
    [row] = _rows(engine)
    assert row["processed"] is False and row["flow_run_id"] is None
    assert "dispatch attempt 1 failed" in row["error_message"]
    assert row["next_attempt_at"] > datetime.now(UTC)

    up = Dispatcher(engine, coalesce_seconds=10)
    assert await up.dispatch_due() == 0  # not due yet: backoff holds
    with engine.begin() as conn:
        conn.execute(webhook_log.update().values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert await up.dispatch_due() == 1
    [row] = _rows(engine)
    try:
        assert row["processed"] is True and row["error_message"] is None and row["dispatch_attempts"] == 2
        run = await prefect.read_flow_run(row["flow_run_id"])
        assert run.parameters["rating_key"] == "91544"
        assert run.idempotency_key.startswith(f"webhook:{delivery_id}:")
    finally:
        await _cleanup(prefect, {row["flow_run_id"]})


@pytest.mark.anyio
async def test_dispatching_a_row_twice_creates_no_second_run(engine: Engine, prefect: PrefectClient) -> None:
    """A replica that dies after creating the run but before marking the row: the retry gets the same run."""
    webhooks.record(
        engine, source="sonarr", event_type="Download", payload={}, action="x", requests=[LIBRARY]
    )
    dispatcher = Dispatcher(engine, coalesce_seconds=3600)
    await dispatcher.dispatch_due()
    [first] = _rows(engine)
    with engine.begin() as conn:  # pretend the mark never happened
        conn.execute(
            webhook_log.update().values(
                processed=False, flow_run_id=None, next_attempt_at=None, sync_requests=[LIBRARY.to_json()]
            )
        )
    await dispatcher.dispatch_due()
    [second] = _rows(engine)
    try:
        assert second["flow_run_id"] == first["flow_run_id"]
    finally:
        await _cleanup(prefect, {first["flow_run_id"]})


def test_a_delayed_request_starts_after_its_window_plus_the_delay() -> None:
    delayed = SyncRequest(Deployment.PLEX_LIBRARY_SYNC, {"section_type": "show"}, wait_for_plex_scan=True)
    plan = plan_run(pending(1, T0, delayed), 0, coalesce_seconds=10, scan_grace_seconds=120)
    assert plan.start_at == datetime(2026, 11, 28, 12, 2, 10, tzinfo=UTC)
    undelayed = SyncRequest(Deployment.PLEX_LIBRARY_SYNC, {"section_type": "show"})
    assert plan.idempotency_key == plan_run(pending(2, T0, undelayed), 0, coalesce_seconds=10).idempotency_key
    assert plan_run(pending(1, T0, delayed), 0, coalesce_seconds=10).start_at == datetime(
        2026, 11, 28, 12, 0, 10, tzinfo=UTC
    )
