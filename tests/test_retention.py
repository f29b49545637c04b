"""webhook-retention deletes old processed deliveries with their queued requests, and the finished dispatch
batches nothing points at any more; never an unprocessed delivery, its requests or an open batch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

import flows.retention as retention
from flows.retention import retention_cutoff, webhook_retention
from smartplex_sync.models import ArrItem, Deployment
from smartplex_sync.requests import (
    PlexScope,
    RadarrScope,
    ScopedRequest,
    SonarrScope,
    SyncRequest,
    TautulliScope,
)
from smartplex_sync.settings import get_settings
from smartplex_sync.store import queue, utcnow, webhooks
from smartplex_sync.store.tables import batch_requests, dispatch_batches, webhook_log, webhook_requests
from tests.conftest import both_backends

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SERVER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def insert(
    engine: Engine, event_type: str, age_days: float, processed: bool, now: datetime = NOW
) -> uuid.UUID:
    """A delivery `age_days` old: processed at once (no request), or still waiting for its sync."""
    requests = () if processed else (SyncRequest(TautulliScope(days=1)).on([SERVER]),)
    return webhooks.record(
        engine,
        source="plex",
        event_type=event_type,
        payload={},
        action="ignored" if processed else "tautulli-sync",
        requests=requests,
        received_at=now - timedelta(days=age_days),
    )


def test_cutoff_is_days_before_now() -> None:
    assert retention_cutoff(NOW, 30) == datetime(2025, 5, 2, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        retention_cutoff(NOW, 0)


@both_backends
def test_deletes_old_processed_rows_only(engine: Engine) -> None:
    insert(engine, "old-done", 31, processed=True)
    insert(engine, "old-pending", 90, processed=False)
    insert(engine, "recent-done", 29, processed=True)
    insert(engine, "recent-pending", 1, processed=False)

    assert webhooks.delete_processed_before(engine, retention_cutoff(NOW, 30)) == 1

    with engine.connect() as conn:
        left = set(conn.execute(select(webhook_log.c.event_type)).scalars())
    assert left == {"old-pending", "recent-done", "recent-pending"}
    assert webhooks.delete_processed_before(engine, retention_cutoff(NOW, 30)) == 0
    assert len(queue.pending_requests(engine)) == 2  # the waiting deliveries keep their requests


# ------------------------------------------------------------------------------------- the whole flow


@pytest.fixture
def run_retention(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Any]:
    """The flow's body on the test database, its artifact kept in memory (it logs to a plain logger:
    `run_logger` outside a run)."""
    artifacts: list[dict[str, Any]] = []
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
    monkeypatch.setattr(retention, "create_markdown_artifact", lambda **artifact: artifacts.append(artifact))
    get_settings.cache_clear()

    def run(days: int) -> tuple[int, list[dict[str, Any]]]:
        return webhook_retention.fn(days=days), artifacts

    yield run
    get_settings.cache_clear()


def _deliver(engine: Engine, name: str, age: timedelta, *requests: ScopedRequest) -> uuid.UUID:
    return webhooks.record(
        engine,
        source="sonarr",
        event_type=name,
        payload={"name": name},
        action=",".join(r.deployment.value for r in requests) or "ignored",
        requests=requests,
        received_at=utcnow() - age,
    )


def _dispatch(
    engine: Engine, webhook_id: uuid.UUID, deployment: Deployment, age: timedelta, run: str
) -> queue.Batch:
    """The dispatcher took the delivery's waiting request of `deployment` into a batch `age` ago, and
    Prefect created its run."""
    [request] = [
        r for r in queue.pending_requests(engine) if r.webhook_id == webhook_id and r.deployment is deployment
    ]
    batch = queue.Batch(uuid.uuid4().hex, deployment, "", {}, run, [], utcnow() - age)
    assert queue.claim(engine, batch, [request.id])
    queue.run_created(engine, batch.id, run)
    return queue.Batch(**{**batch.__dict__, "flow_run_id": run})


@both_backends
def test_after_retention_no_table_holds_rows_older_than_the_window_but_open_work(
    engine: Engine, run_retention: Any
) -> None:
    old, recent = timedelta(days=40), timedelta(days=1)
    sonarr = SyncRequest(SonarrScope(series=[ArrItem("sonarr", 1, "A")])).on([SERVER])
    radarr = SyncRequest(RadarrScope(movies=[ArrItem("radarr", 2, "B")])).on([SERVER])
    library = SyncRequest(PlexScope(section_ids=[1])).on([SERVER])
    tautulli = SyncRequest(TautulliScope(days=1)).on([SERVER])

    _deliver(engine, "old-ignored", old)
    old_done = _deliver(engine, "old-done", old, sonarr)
    done = _dispatch(engine, old_done, Deployment.SONARR_SYNC, old, "run-done")
    queue.finish(engine, done, "COMPLETED", None, requeue=False)
    old_failed = _deliver(engine, "old-failed", old, tautulli)
    failed = _dispatch(engine, old_failed, Deployment.TAUTULLI_SYNC, old, "run-failed")
    queue.finish(engine, failed, "FAILED", "boom", requeue=False)
    # a crashed run gave its request back: the delivery waits again, its old batch is still its history
    old_crashed = _deliver(engine, "old-crashed", old, radarr)
    crashed = _dispatch(engine, old_crashed, Deployment.RADARR_SYNC, old, "run-crashed")
    assert queue.finish(engine, crashed, "CRASHED", "worker died", requeue=True) == 1
    old_pending = _deliver(engine, "old-pending", timedelta(days=90), library)
    # a batch still open after the window (its run waits for a worker): its old delivery is processed (in a
    # run) but kept, so the run's end still has a delivery to report on
    old_open = _deliver(engine, "old-open", old, sonarr)
    still_running = _dispatch(engine, old_open, Deployment.SONARR_SYNC, old, "run-open")
    recent_done = _deliver(engine, "recent-done", recent, tautulli)
    recent_batch = _dispatch(engine, recent_done, Deployment.TAUTULLI_SYNC, recent, "run-recent")
    queue.finish(engine, recent_batch, "COMPLETED", None, requeue=False)

    deleted, artifacts = run_retention(30)

    assert deleted == 3  # old-ignored, old-done, old-failed
    assert "**3** processed webhook_log rows" in artifacts[0]["markdown"]
    assert "**2** finished dispatch batches" in artifacts[0]["markdown"]
    cutoff = utcnow() - timedelta(days=30)
    with engine.connect() as conn:
        deliveries = {r.id: r for r in conn.execute(select(webhook_log))}
        requests = conn.execute(select(webhook_requests)).all()
        batches = {r.id: r for r in conn.execute(select(dispatch_batches))}
        links = conn.execute(select(batch_requests)).all()
    assert set(deliveries) == {old_crashed, old_pending, old_open, recent_done}
    assert {r.id for r in deliveries.values() if r.received_at < cutoff and r.processed} == {old_open}
    assert {r.webhook_id for r in requests} == set(deliveries)  # no request outlives its delivery
    assert set(batches) == {crashed.id, still_running.id, recent_batch.id}
    assert all(
        b.finished_at is None or any(link.batch_id == b.id for link in links)
        for b in batches.values()
        if b.created_at < cutoff
    )
    assert {link.batch_id for link in links} <= set(batches)
    # the waiting work is still there to be dispatched, the open batch still to be closed
    assert {r.webhook_id for r in queue.pending_requests(engine)} == {old_crashed, old_pending}
    assert [b.id for b in queue.open_batches(engine)] == [still_running.id]
    assert webhooks.flow_runs_of(engine, old_crashed) == ["run-crashed"]

    assert run_retention(30)[0] == 0  # nothing more to do
    with engine.connect() as conn:
        assert len(conn.execute(select(dispatch_batches)).all()) == 3
