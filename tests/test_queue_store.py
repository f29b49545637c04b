"""The dispatch queue in the database (smartplex_sync/store/queue.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from smartplex_sync.models import ArrItem, Deployment
from smartplex_sync.requests import (
    PlexLibrarySync,
    PlexScope,
    ScopedRequest,
    SonarrScope,
    SonarrSync,
    SyncRequest,
)
from smartplex_sync.store import queue, utcnow, webhooks
from smartplex_sync.store.queue import Batch
from smartplex_sync.store.tables import dispatch_batches, webhook_log
from tests.conftest import both_backends
from tests.support.factories import owner_and_server

SERVER = uuid.UUID("00000000-0000-4000-8000-000000000001")
LIBRARY = SyncRequest(PlexScope(section_types=["show"]), wait_for_plex_scan=True).on([SERVER])
SONARR = SyncRequest(SonarrScope(series=[ArrItem("sonarr", 1, "A")])).on([SERVER])


def download(engine: Engine, *requests: ScopedRequest) -> uuid.UUID:
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


def log_rows(engine: Engine) -> dict[uuid.UUID, Any]:
    with engine.connect() as conn:
        return {row.id: row for row in conn.execute(select(webhook_log))}


def claim_all(engine: Engine, deployment: Deployment) -> Batch:
    batch = batch_for(deployment)
    waiting = [r.id for r in queue.pending_requests(engine) if r.deployment is deployment]
    assert queue.claim(engine, batch, waiting)
    return batch


def runs(engine: Engine, webhook_id: uuid.UUID) -> list[str]:
    with engine.connect() as conn:
        return queue.runs_of(conn, [webhook_id]).get(webhook_id, [])


@both_backends
def test_a_delivery_queues_its_requests_in_the_same_transaction(engine: Engine) -> None:
    user_id, server_id = owner_and_server(engine)
    webhook_id = webhooks.record(
        engine, source="sonarr", event_type="Download", payload={"eventType": "Download"}, action="x",
        requests=(LIBRARY, SONARR), scan_grace=timedelta(seconds=120), user_id=user_id, server_id=server_id,
    )  # fmt: skip
    assert isinstance(webhook_id, uuid.UUID)
    library, sonarr = sorted(queue.pending_requests(engine), key=lambda r: r.ordinal)
    row = log_rows(engine)[webhook_id]
    assert (row.user_id, row.server_id, row.processed, row.processed_at) == (user_id, server_id, False, None)
    assert library.webhook_id == sonarr.webhook_id == webhook_id
    assert (library.source, library.event_type, library.received_at) == (
        "sonarr",
        "Download",
        row.received_at,
    )
    assert library.ready_at == row.received_at + timedelta(seconds=120)  # it waits for Plex's scan
    assert sonarr.ready_at == row.received_at
    assert library.stamp == (row.received_at, str(webhook_id), 0) and sonarr.stamp[2] == 1
    assert PlexLibrarySync.model_validate(library.parameters) == LIBRARY.parameters
    assert SonarrSync.model_validate(sonarr.parameters) == SONARR.parameters
    with engine.connect() as conn:
        assert queue.requests_of(conn, webhook_id) == [
            {"deployment": "plex-library-sync", "parameters": LIBRARY.parameters.to_json()},
            {"deployment": "sonarr-sync", "parameters": SONARR.parameters.to_json()},
        ]
        assert queue.requests_of(conn, uuid.uuid4()) == []


@both_backends
def test_a_delivery_without_requests_is_done_at_once(engine: Engine) -> None:
    webhook_id = webhooks.record(engine, source="plex", event_type="media.play", payload={}, action="ignored")
    row = log_rows(engine)[webhook_id]
    assert row.processed and row.processed_at is not None
    assert queue.pending_requests(engine) == []


class _Unqueueable:
    """A request whose parameters cannot be written (they fail while the delivery's transaction runs)."""

    deployment = Deployment.RADARR_SYNC
    wait_for_plex_scan = False

    class parameters:
        @staticmethod
        def to_json() -> dict[str, Any]:
            raise RuntimeError("cannot write these parameters")


@both_backends
def test_a_delivery_and_its_requests_are_written_together_or_not_at_all(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="cannot write"):
        webhooks.record(engine, source="sonarr", event_type="Download", payload={}, action="x",
                        requests=(SONARR, _Unqueueable()))  # type: ignore[arg-type]  # fmt: skip
    assert log_rows(engine) == {} and queue.pending_requests(engine) == []


@both_backends
def test_a_delivery_is_processed_once_every_request_has_a_run(engine: Engine) -> None:
    webhook_id = download(engine)
    sonarr_batch = claim_all(engine, Deployment.SONARR_SYNC)
    queue.run_created(engine, sonarr_batch.id, "run-sonarr")
    assert log_rows(engine)[webhook_id].processed is False  # the library request still waits
    assert runs(engine, webhook_id) == ["run-sonarr"]
    library_batch = claim_all(engine, Deployment.PLEX_LIBRARY_SYNC)
    assert log_rows(engine)[webhook_id].processed is False  # claimed, but its run is not created yet
    queue.run_created(engine, library_batch.id, "run-library")
    row = log_rows(engine)[webhook_id]
    assert row.processed and row.processed_at is not None
    assert runs(engine, webhook_id) == ["run-sonarr", "run-library"]
    assert webhooks.flow_runs_of(engine, webhook_id) == ["run-sonarr", "run-library"]


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
    assert {(b.deployment, b.lane) for b in queue.open_batches(engine)} == {
        (Deployment.SONARR_SYNC, ""),
        (Deployment.SONARR_SYNC, "bucket"),
    }
    queue.finish(engine, first, "COMPLETED", None, requeue=False)
    assert queue.claim(
        engine, batch_for(Deployment.SONARR_SYNC), [r.id for r in queue.pending_requests(engine)]
    )


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
def test_a_failed_run_shows_on_every_delivery_it_served_and_no_other(engine: Engine) -> None:
    """Also when it is not a delivery's first run (a Sonarr Download asks for two)."""
    served = [download(engine), download(engine)]
    other = download(engine, LIBRARY)
    sonarr = claim_all(engine, Deployment.SONARR_SYNC)
    library = claim_all(engine, Deployment.PLEX_LIBRARY_SYNC)
    queue.run_created(engine, library.id, "run-lib")
    queue.run_created(engine, sonarr.id, "run-son")
    sonarr = Batch(**{**sonarr.__dict__, "flow_run_id": "run-son"})
    library = Batch(**{**library.__dict__, "flow_run_id": "run-lib"})

    assert (
        queue.finish(engine, sonarr, "FAILED", "sonarr: GET /api/v3/series answered 401", requeue=False) == 0
    )
    errors = {i: r.error_message for i, r in log_rows(engine).items()}
    failure = "flow run run-son failed: sonarr: GET /api/v3/series answered 401"
    assert errors == {served[0]: failure, served[1]: failure, other: None}
    assert all(r.processed for r in log_rows(engine).values())  # a failed run is not done again
    # another run's success (the library run served all three) clears nothing of it
    queue.finish(engine, library, "COMPLETED", None, requeue=False)
    assert {i: r.error_message for i, r in log_rows(engine).items()} == errors
    assert queue.open_batches(engine) == [] and queue.pending_requests(engine) == []
    with engine.connect() as conn:
        states = dict(conn.execute(select(dispatch_batches.c.flow_run_id, dispatch_batches.c.state)).all())
    assert states == {"run-son": "FAILED", "run-lib": "COMPLETED"}


@both_backends
def test_a_failure_to_create_the_run_shows_until_the_run_exists(engine: Engine) -> None:
    webhook_id = download(engine, SONARR)
    batch = claim_all(engine, Deployment.SONARR_SYNC)
    retry_at = utcnow() + timedelta(seconds=4)
    assert queue.creation_failed(engine, batch.id, "connection refused", retry_at) == 1
    assert queue.creation_failed(engine, batch.id, "connection refused", retry_at) == 2
    assert log_rows(engine)[webhook_id].error_message == "dispatch attempt 2 failed: connection refused"
    [waiting] = queue.open_batches(engine)
    assert (waiting.attempts, waiting.next_attempt_at, waiting.flow_run_id) == (2, retry_at, None)
    queue.run_created(engine, batch.id, "run-1")
    row = log_rows(engine)[webhook_id]
    assert (row.processed, row.error_message) == (True, None)
    [created] = queue.open_batches(engine)
    assert (created.flow_run_id, created.next_attempt_at) == ("run-1", None)


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
    assert runs(engine, webhook_id) == [f"run-{i}" for i in range(1, 4)]
    assert log_rows(engine)[webhook_id].error_message == "flow run run-3 failed: worker died"


@both_backends
def test_a_run_that_completes_what_a_crashed_run_left_clears_its_failure(engine: Engine) -> None:
    webhook_id = download(engine, SONARR)
    crashed = claim_all(engine, Deployment.SONARR_SYNC)
    queue.run_created(engine, crashed.id, "run-1")
    crashed = Batch(**{**crashed.__dict__, "flow_run_id": "run-1"})
    assert queue.finish(engine, crashed, "CRASHED", "worker died", requeue=True) == 1
    assert log_rows(engine)[webhook_id].error_message == "flow run run-1 failed: worker died"
    again = claim_all(engine, Deployment.SONARR_SYNC)
    queue.run_created(engine, again.id, "run-2")
    queue.finish(
        engine, Batch(**{**again.__dict__, "flow_run_id": "run-2"}), "COMPLETED", None, requeue=False
    )
    row = log_rows(engine)[webhook_id]
    assert (row.processed, row.error_message) == (True, None)


@both_backends
def test_retention_deletes_finished_batches_no_request_points_at(engine: Engine) -> None:
    old = download(engine, SONARR)
    download(engine, LIBRARY)
    done = claim_all(engine, Deployment.SONARR_SYNC)
    queue.run_created(engine, done.id, "run-done")
    queue.finish(
        engine, Batch(**{**done.__dict__, "flow_run_id": "run-done"}), "COMPLETED", None, requeue=False
    )
    still_open = claim_all(engine, Deployment.PLEX_LIBRARY_SYNC)
    later = utcnow() + timedelta(days=1)
    assert queue.delete_finished_before(engine, later) == 0  # the delivery still points at it
    assert webhooks.delete_processed_before(engine, later) == 1  # the sonarr delivery (the other waits)
    assert queue.delete_finished_before(engine, utcnow() - timedelta(days=1)) == 0  # too recent
    assert queue.delete_finished_before(engine, later) == 1
    with engine.connect() as conn:
        assert conn.scalars(select(dispatch_batches.c.id)).all() == [still_open.id]  # open: kept
        assert queue.requests_of(conn, old) == []  # its requests went with the delivery
