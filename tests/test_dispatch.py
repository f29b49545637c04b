"""Queued requests become Prefect flow runs: the dispatcher against a real Prefect server.

The deployments' work pool is paused while these tests run, so no worker starts the runs: each test moves
a run through its states itself, as a worker would, and watches what the dispatcher makes of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import DeploymentUpdate, WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectAlreadyExists
from prefect.states import Completed, Crashed, Failed, Running
from sqlalchemy import Engine, select, update

from bench._buckets import BucketDispatcher
from deployments.processes import free_port
from smartplex_sync.errors import PermanentServiceError, TransientServiceError
from smartplex_sync.models import ArrItem, Deployment
from smartplex_sync.requests import (
    PlexLibrarySync,
    PlexScope,
    RadarrScope,
    SonarrScope,
    SyncRequest,
    TautulliScope,
    TautulliSync,
)
from smartplex_sync.settings import Settings
from smartplex_sync.store import queue, webhooks
from smartplex_sync.store.tables import dispatch_batches, webhook_log
from tests.support.factories import owner_and_server
from webhook_gateway.dispatch import Dispatcher, backoff, idempotency_key, prefect_error

NO_WAIT = {
    f"{service}_{knob}": 0
    for service in ("plex", "tautulli", "sonarr", "radarr", "overseerr")
    for knob in ("quiet_seconds", "max_wait_seconds")
}


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **{**NO_WAIT, "plex_scan_grace_seconds": 0, **overrides})


def test_backoff_grows_is_capped_and_jittered_by_up_to_half() -> None:
    assert [backoff(n, jitter=0).total_seconds() for n in (1, 2, 3, 4, 10, 30)] == [1, 2, 4, 8, 8, 8]
    assert [backoff(n, jitter=1).total_seconds() for n in (1, 2, 3, 10)] == [0.5, 1, 2, 4]
    drawn = {backoff(4).total_seconds() for _ in range(50)}
    assert len(drawn) > 1 and all(4 <= d <= 8 for d in drawn)


def answer(status: int, body: Any) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://prefect/api/deployments/x/create_flow_run")
    response = httpx.Response(status, json=body, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


def test_prefect_errors_are_transient_permanent_or_ours() -> None:
    refused = prefect_error(
        answer(409, {"detail": "Error creating flow run: 'request' is a required property"})
    )
    assert isinstance(refused, PermanentServiceError)
    assert str(refused) == "prefect: HTTP 409: Error creating flow run: 'request' is a required property"
    assert isinstance(prefect_error(answer(422, {"detail": []})), PermanentServiceError)
    for status in (404, 408, 429, 500, 503):
        assert isinstance(prefect_error(answer(status, {})), TransientServiceError), status
    assert isinstance(prefect_error(httpx.ConnectError("refused")), TransientServiceError)
    assert isinstance(prefect_error(httpx.ReadTimeout("slow")), TransientServiceError)
    assert isinstance(prefect_error(TimeoutError()), TransientServiceError)  # our bound on a call
    assert prefect_error(TypeError("a bug of ours")) is None


@pytest.fixture(scope="module")
def paused_pools(prefect_api_url: str) -> Iterator[None]:
    """Every deployment registered under its real name, and its work pool paused for these tests."""

    async def register() -> list[str]:
        async with get_client() as client:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_pool(WorkPoolCreate(name="no-worker-here", type="process"))
            pools = set()
            for deployment in Deployment:
                try:
                    found = await client.read_deployment_by_name(deployment.full_name)
                except Exception:
                    flow_id = await client.create_flow_from_name(deployment.flow_name)
                    await client.create_deployment(
                        flow_id, deployment.value, entrypoint="flows/x.py:x", work_pool_name="no-worker-here"
                    )
                    found = await client.read_deployment_by_name(deployment.full_name)
                pools.add(found.work_pool_name)
            for pool in pools:
                await client.update_work_pool(pool, WorkPoolUpdate(is_paused=True))
            return sorted(pools)

    async def resume(pools: list[str]) -> None:
        async with get_client() as client:
            for pool in pools:
                await client.update_work_pool(pool, WorkPoolUpdate(is_paused=False))

    pools = asyncio.run(register())
    yield
    asyncio.run(resume(pools))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def prefect(paused_pools: None, engine: Engine) -> AsyncIterator[PrefectClient]:
    """A client; the runs a test made are deleted after it (no worker may ever run them)."""
    async with get_client() as client:
        yield client
        for run_id in await runs_of(client, engine):
            await client.delete_flow_run(run_id)


def rows(engine: Engine) -> list[dict[str, Any]]:
    """Every delivery, oldest first, with `flow_run_id`: the first run that served it."""
    with engine.connect() as conn:
        found = [r._asdict() for r in conn.execute(select(webhook_log).order_by(webhook_log.c.received_at))]
        runs = queue.runs_of(conn, [r["id"] for r in found])
    return [{**r, "flow_run_id": (runs.get(r["id"]) or [None])[0]} for r in found]


SERVERS: dict[str, Any] = {}


def server(engine: Engine) -> Any:
    """The one Plex server of this test's database (made on first use), named "Home"."""
    key = str(engine.url)
    if key not in SERVERS:
        SERVERS[key] = owner_and_server(engine, name="Home")[1]
    return SERVERS[key]


def record(engine: Engine, source: str, event: str, *requests: SyncRequest) -> Any:
    return webhooks.record(
        engine,
        source=source,
        event_type=event,
        payload={},
        action="x",
        requests=[r.on([server(engine)]) for r in requests],
        scan_grace=timedelta(),
    )


async def runs_of(prefect: PrefectClient, engine: Engine) -> dict[str, FlowRun]:
    with engine.connect() as conn:
        ids = [r for (r,) in conn.execute(select(dispatch_batches.c.flow_run_id)) if r]
    return {str(run_id): await prefect.read_flow_run(run_id) for run_id in ids}


async def finish(prefect: PrefectClient, run_id: str, state: Any) -> None:
    """What a worker would do: run it, then end it in `state`."""
    await prefect.set_flow_run_state(run_id, Running(), force=True)
    await prefect.set_flow_run_state(run_id, state, force=True)


def movie(arr_id: int) -> SyncRequest:
    return SyncRequest(RadarrScope(movies=[ArrItem("radarr", arr_id, f"Movie {arr_id}")]))


@pytest.mark.anyio
async def test_a_mixed_burst_becomes_one_run_per_deployment_with_everything_it_asked_for(
    engine: Engine, prefect: PrefectClient
) -> None:
    sent = [
        record(engine, "radarr", "Download", SyncRequest(PlexScope(section_types=["movie"])), movie(i))
        for i in range(1, 21)
    ]
    sent += [
        record(engine, "tautulli", "stop", SyncRequest(TautulliScope(rating_keys=[str(100 + i % 15)])))
        for i in range(30)
    ]
    sent += [record(engine, "plex", "library.new", SyncRequest(PlexScope(section_ids=[1]))) for _ in range(5)]
    record(engine, "radarr", "Test")

    report = await Dispatcher(engine, settings()).dispatch_due()

    runs = await runs_of(prefect, engine)
    by_deployment = {(await prefect.read_deployment(r.deployment_id)).name: r for r in runs.values()}
    assert report.created == len(runs) == 3 and set(by_deployment) == {
        "plex-library-sync",
        "radarr-sync",
        "tautulli-sync",
    }
    home = server(engine)
    assert PlexLibrarySync.model_validate(
        by_deployment["plex-library-sync"].parameters["request"]
    ) == PlexLibrarySync.on([home], PlexScope(section_ids=[1], section_types=["movie"]))
    radarr = by_deployment["radarr-sync"].parameters["request"]["servers"][str(home)]
    assert [m["arr_id"] for m in radarr["movies"]] == list(range(1, 21))
    assert TautulliSync.model_validate(
        by_deployment["tautulli-sync"].parameters["request"]
    ) == TautulliSync.on([home], TautulliScope(rating_keys=[str(100 + i) for i in range(15)]))
    library = by_deployment["plex-library-sync"]
    assert library.parameters["trigger"] == "webhook"
    assert {
        "source:plex", "source:radarr", "event:library.new", "event:Download", "trigger:webhook", "server:Home"
    } <= set(library.tags)  # fmt: skip
    assert library.idempotency_key.startswith("smartplex-batch:")
    logged = {r["id"]: r for r in rows(engine)}
    assert all(logged[i]["processed"] and logged[i]["flow_run_id"] for i in sent)
    artifacts = await prefect.read_artifacts()
    [deliveries] = [a for a in artifacts if a.flow_run_id == library.id]
    assert sorted(row["webhook"] for row in json.loads(deliveries.data)) == sorted(
        str(i) for i in sent[:20] + sent[50:]
    )


@pytest.mark.anyio
async def test_requests_during_a_run_wait_for_it_and_become_exactly_one_follow_up(
    engine: Engine, prefect: PrefectClient
) -> None:
    dispatcher = Dispatcher(engine, settings())
    record(engine, "radarr", "Download", movie(1))
    await dispatcher.dispatch_due()
    [first] = (await runs_of(prefect, engine)).values()
    await prefect.set_flow_run_state(first.id, Running(), force=True)

    later = [record(engine, "radarr", "Download", movie(i)) for i in range(2, 12)]
    for _ in range(3):  # passes while the run goes on create nothing
        assert (await dispatcher.dispatch_due()).created == 0
    assert not any(r["processed"] for r in rows(engine) if r["id"] in later)

    await prefect.set_flow_run_state(first.id, Completed(), force=True)
    report = await dispatcher.dispatch_due()
    assert (report.finished, report.created) == (1, 1)
    follow_up = next(r for r in (await runs_of(prefect, engine)).values() if r.id != first.id)
    movies = follow_up.parameters["request"]["servers"][str(server(engine))]["movies"]
    assert [m["arr_id"] for m in movies] == list(range(2, 12))
    assert (await dispatcher.dispatch_due()).created == 0


@pytest.mark.anyio
async def test_a_failed_run_shows_its_error_and_a_crashed_one_is_run_again(
    engine: Engine, prefect: PrefectClient
) -> None:
    dispatcher = Dispatcher(engine, settings())
    delivery = record(
        engine, "sonarr", "Download", SyncRequest(SonarrScope(series=[ArrItem("sonarr", 1, "A")]))
    )
    await dispatcher.dispatch_due()
    [crashed] = (await runs_of(prefect, engine)).values()
    await finish(prefect, str(crashed.id), Crashed(message="the worker died"))
    await dispatcher.dispatch_due()  # closes the batch and queues the request again
    await dispatcher.dispatch_due()
    again = [r for r in (await runs_of(prefect, engine)).values() if r.id != crashed.id]
    assert len(again) == 1 and again[0].parameters == crashed.parameters
    [row] = rows(engine)
    assert row["processed"] and row["flow_run_id"] == str(crashed.id)  # its first run

    await finish(prefect, str(again[0].id), Failed(message="sonarr: GET /api/v3/series answered 401"))
    await dispatcher.dispatch_due()
    [row] = rows(engine)
    assert row["error_message"] == f"flow run {again[0].id} failed: sonarr: GET /api/v3/series answered 401"
    status = webhooks.summary(engine)["recent_webhooks"][0]
    assert status["id"] == delivery and status["flow_run_ids"] == [str(crashed.id), str(again[0].id)]


@pytest.mark.anyio
async def test_prefect_down_keeps_deliveries_pending_then_creates_each_run_once(
    engine: Engine, prefect: PrefectClient
) -> None:
    delivery = record(engine, "tautulli", "stop", SyncRequest(TautulliScope(rating_keys=["91544"])))
    dead = f"http://127.0.0.1:{free_port()}/api"
    down = Dispatcher(engine, settings(), client_factory=lambda: PrefectClient(dead))
    assert (await down.dispatch_due()).created == 0
    [row] = rows(engine)
    assert row["processed"] is False and row["flow_run_id"] is None
    assert row["error_message"].startswith("dispatch attempt 1 failed")

    up = Dispatcher(engine, settings())
    assert (await up.dispatch_due()).created == 0  # the backoff holds
    with engine.begin() as conn:
        conn.execute(
            update(dispatch_batches).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await up.dispatch_due()).created == 1
    [row] = rows(engine)
    assert row["processed"] and row["error_message"] is None and row["id"] == delivery
    with engine.connect() as conn:
        [batch_id] = conn.execute(select(dispatch_batches.c.id)).scalars()
    run = await prefect.read_flow_run(row["flow_run_id"])
    assert run.idempotency_key == idempotency_key(batch_id)

    # A gateway that stopped after Prefect made the run but before it said so asks again: same run.
    with engine.begin() as conn:
        conn.execute(update(dispatch_batches).values(flow_run_id=None))
    await up.dispatch_due()
    assert [r["flow_run_id"] for r in rows(engine)] == [str(run.id)]
    assert len(await runs_of(prefect, engine)) == 1


@pytest.mark.anyio
async def test_a_run_prefect_refuses_closes_its_batch_as_failed_and_frees_the_deployment(
    engine: Engine, prefect: PrefectClient
) -> None:
    deployment = await prefect.read_deployment_by_name(Deployment.TAUTULLI_SYNC.full_name)
    refusing = {"type": "object", "properties": {"request": {"type": "string"}}, "required": ["request"]}
    await prefect.update_deployment(
        deployment.id, DeploymentUpdate(enforce_parameter_schema=True, parameter_openapi_schema=refusing)
    )
    dispatcher = Dispatcher(engine, settings())
    try:
        record(engine, "tautulli", "stop", SyncRequest(TautulliScope(rating_keys=["1"])))
        assert (await dispatcher.dispatch_due()).created == 0
    finally:
        await prefect.update_deployment(
            deployment.id,
            DeploymentUpdate(
                enforce_parameter_schema=deployment.enforce_parameter_schema,
                parameter_openapi_schema=deployment.parameter_openapi_schema,
            ),
        )
    [refused] = rows(engine)
    assert refused["processed"] and refused["flow_run_id"] is None
    assert refused["error_message"].startswith("run not created: prefect: HTTP 409: Error creating flow run")
    assert not queue.open_batches(engine)  # closed as failed: the deployment is free
    with engine.connect() as conn:
        [(state, message)] = conn.execute(select(dispatch_batches.c.state, dispatch_batches.c.error_message))
    assert state == "FAILED" and "HTTP 409" in message
    assert [r["id"] for r in webhooks.find(engine, failed=True)] == [refused["id"]]

    # The next delivery for that deployment gets its run at once.
    record(engine, "tautulli", "stop", SyncRequest(TautulliScope(rating_keys=["2"])))
    assert (await dispatcher.dispatch_due()).created == 1
    later = rows(engine)[-1]
    assert later["processed"] and later["flow_run_id"] and later["error_message"] is None


@pytest.mark.anyio
async def test_a_download_waits_for_plex_to_scan_even_when_a_library_sync_is_asked_for_meanwhile(
    engine: Engine, prefect: PrefectClient
) -> None:
    dispatcher = Dispatcher(engine, settings(plex_scan_grace_seconds=3600))
    webhooks.record(
        engine,
        source="radarr",
        event_type="Download",
        payload={},
        action="x",
        requests=[
            SyncRequest(PlexScope(section_types=["movie"]), wait_for_plex_scan=True).on([server(engine)])
        ],
        scan_grace=timedelta(seconds=3600),
    )
    record(engine, "overseerr", "MEDIA_AVAILABLE", SyncRequest(PlexScope(section_types=["movie"])))
    report = await dispatcher.dispatch_due()
    [run] = (await runs_of(prefect, engine)).values()
    assert report.created == 1 and "source:radarr" not in run.tags and "source:overseerr" in run.tags
    assert report.wake_at is not None
    radarr, overseerr = rows(engine)
    assert not radarr["processed"] and overseerr["processed"]


@pytest.mark.anyio
async def test_the_benchmarks_bucket_baseline_makes_a_run_per_parameter_set(
    engine: Engine, prefect: PrefectClient
) -> None:
    """The earlier rule, kept as the benchmarks' baseline (bench/_buckets.py)."""
    for i in range(1, 4):
        record(engine, "radarr", "Download", movie(i))
    record(engine, "radarr", "Download", movie(1))
    dispatcher = BucketDispatcher(engine, settings())
    dispatcher.bucket_seconds = 1
    await asyncio.sleep(1.1)  # let the one-second bucket end
    assert (await dispatcher.dispatch_due()).created == 3
