"""The dispatch queue in the database (smartplex_sync/store/queue.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select

from smartplex_sync.models import ArrItem, Deployment
from smartplex_sync.requests import PlexLibrarySync, SonarrSync, SyncRequest
from smartplex_sync.store import queue, utcnow, webhooks
from smartplex_sync.store.queue import Batch
from smartplex_sync.store.tables import webhook_log
from tests.conftest import both_backends

LIBRARY = SyncRequest(PlexLibrarySync(section_types=["show"]), wait_for_plex_scan=True)
SONARR = SyncRequest(SonarrSync(series=[ArrItem("sonarr", 1, "A")]))


def download(engine: Engine, *requests: SyncRequest) -> int:
    return webhooks.record(
        engine,
        source="sonarr",
        event_type="Download",
        payload={},
        action="x",
        requests=requests or (LIBRARY, SONARR),
        scan_grace=timedelta(seconds=120),
    )


def batch_for(deployment: Deployment, lane: str = "") -> Batch:
    return Batch(uuid.uuid4().hex, deployment, lane, {}, "a batch", ["trigger:webhook"], utcnow())


def log_rows(engine: Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        return {row.id: row for row in conn.execute(select(webhook_log))}


def claim_all(engine: Engine, deployment: Deployment) -> Batch:
    batch = batch_for(deployment)
    waiting = [r.id for r in queue.pending_requests(engine) if r.deployment is deployment]
    assert queue.claim(engine, batch, waiting)
    return batch


@both_backends
def test_a_delivery_queues_its_requests_in_the_same_transaction(engine: Engine) -> None:
    webhook_id = download(engine)
    library, sonarr = sorted(queue.pending_requests(engine), key=lambda r: r.ordinal)
    received = log_rows(engine)[webhook_id].received_at
    assert library.webhook_id == sonarr.webhook_id == webhook_id
    assert library.ready_at == received + timedelta(seconds=120)  # it waits for Plex's scan
    assert sonarr.ready_at == received
    assert PlexLibrarySync.model_validate(library.parameters) == LIBRARY.parameters


@both_backends
def test_a_delivery_is_processed_once_every_request_has_a_run(engine: Engine) -> None:
    webhook_id = download(engine)
    sonarr_batch = claim_all(engine, Deployment.SONARR_SYNC)
    queue.run_created(engine, sonarr_batch.id, "run-sonarr")
    row = log_rows(engine)[webhook_id]
    assert (row.processed, row.flow_run_id) == (False, "run-sonarr")  # the library request still waits
    library_batch = claim_all(engine, Deployment.PLEX_LIBRARY_SYNC)
    queue.run_created(engine, library_batch.id, "run-library")
    row = log_rows(engine)[webhook_id]
    assert row.processed and row.processed_at is not None and row.flow_run_id == "run-sonarr"
    with engine.connect() as conn:
        assert queue.runs_of(conn, [webhook_id]) == {webhook_id: ["run-sonarr", "run-library"]}


@both_backends
def test_one_open_batch_per_deployment_whoever_asks(engine: Engine) -> None:
    download(engine)
    download(engine)
    first = batch_for(Deployment.SONARR_SYNC)
    [one, two] = [r.id for r in queue.pending_requests(engine) if r.deployment is Deployment.SONARR_SYNC]
    assert queue.claim(engine, first, [one])
    assert not queue.claim(engine, batch_for(Deployment.SONARR_SYNC), [two])  # the deployment is busy
    assert queue.claim(engine, batch_for(Deployment.SONARR_SYNC, lane="bucket"), [two])  # another lane
    assert not queue.claim(engine, batch_for(Deployment.PLEX_LIBRARY_SYNC, lane="x"), [one])  # taken


@both_backends
def test_racing_dispatchers_never_take_a_request_twice(engine: Engine) -> None:
    for _ in range(20):
        download(engine, SONARR)
    waiting = [r.id for r in queue.pending_requests(engine)]
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def race(lane: str) -> None:
        barrier.wait()
        results.append(queue.claim(engine, batch_for(Deployment.SONARR_SYNC, lane), waiting))

    threads = [threading.Thread(target=race, args=(f"lane-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False, False, False, True]
    assert queue.pending_requests(engine) == []


@both_backends
def test_a_failed_run_shows_on_every_delivery_it_served_until_one_completes(engine: Engine) -> None:
    """Also when it is not a delivery's first run (a Sonarr Download asks for two)."""
    served = [download(engine), download(engine)]
    other = download(engine, LIBRARY)
    sonarr = claim_all(engine, Deployment.SONARR_SYNC)
    library = claim_all(engine, Deployment.PLEX_LIBRARY_SYNC)
    queue.run_created(engine, library.id, "run-lib")
    queue.run_created(engine, sonarr.id, "run-son")
    sonarr = Batch(**{**sonarr.__dict__, "flow_run_id": "run-son"})

    queue.finish(engine, sonarr, "FAILED", "sonarr: GET /api/v3/series answered 401", requeue=False)
    errors = {i: r.error_message for i, r in log_rows(engine).items()}
    failure = "flow run run-son failed: sonarr: GET /api/v3/series answered 401"
    assert errors == {served[0]: failure, served[1]: failure, other: None}
    assert queue.clear_run_failure(engine, "run-lib") == 0  # another run's success clears nothing
    assert queue.clear_run_failure(engine, "run-son") == 2
    assert {r.error_message for r in log_rows(engine).values()} == {None}


@both_backends
def test_a_crashed_run_gives_its_requests_back_a_bounded_number_of_times(engine: Engine) -> None:
    webhook_id = download(engine, SONARR)
    for attempt in range(1, queue.MAX_DISPATCHES + 1):
        batch = claim_all(engine, Deployment.SONARR_SYNC)
        queue.run_created(engine, batch.id, f"run-{attempt}")
        assert log_rows(engine)[webhook_id].processed
        batch = Batch(**{**batch.__dict__, "flow_run_id": f"run-{attempt}"})
        again = queue.finish(engine, batch, "CRASHED", "worker died", requeue=True)
        assert again == (1 if attempt < queue.MAX_DISPATCHES else 0)
        assert log_rows(engine)[webhook_id].processed is (attempt == queue.MAX_DISPATCHES)
    assert queue.pending_requests(engine) == []
    with engine.connect() as conn:
        assert queue.runs_of(conn, [webhook_id])[webhook_id] == [f"run-{i}" for i in range(1, 4)]
    assert log_rows(engine)[webhook_id].error_message == "flow run run-3 failed: worker died"


@both_backends
def test_deliveries_recorded_before_the_queue_are_adopted(engine: Engine) -> None:
    """A row an earlier version recorded (its requests only as JSON) is queued on the next pass."""
    with engine.begin() as conn:
        old = conn.execute(
            webhook_log.insert()
            .values(
                source="radarr",
                event_type="Download",
                received_at=utcnow(),
                processed=False,
                action="plex-library-sync,radarr-sync",
                http_status=202,
                sync_requests=[
                    {
                        "deployment": "plex-library-sync",
                        "parameters": {"section_type": "movie", "mode": "incremental"},
                        "coalesce": True,
                        "wait_for_plex_scan": True,
                        "flow_run_id": "made-before-the-upgrade",
                    },
                    {"deployment": "radarr-sync", "parameters": {"movies": [{"id": 4, "title": "M"}]}},
                ],
            )
            .returning(webhook_log.c.id)
        ).scalar_one()
    assert queue.adopt_unqueued(engine, timedelta(seconds=120)) == 1
    [radarr] = queue.pending_requests(engine)
    assert (radarr.webhook_id, radarr.ordinal, radarr.deployment) == (old, 1, Deployment.RADARR_SYNC)
    assert queue.adopt_unqueued(engine, timedelta(seconds=120)) == 0
