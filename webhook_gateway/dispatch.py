"""Queued sync requests → Prefect flow runs, after the answer.

The dispatcher runs in the gateway's event loop. Each pass:
1. asks Prefect (one call) about the runs of open batches, and closes those whose run is final. A failed,
   crashed or cancelled run leaves its error on every delivery it served; a crashed run (its process
   died) gives its requests back to the queue, so the next run does the work;
2. creates the run of every open batch that has none yet (Prefect was down, or the gateway stopped between
   claiming and creating). The batch id is the run's idempotency key, so Prefect never makes two;
3. plans new batches from the waiting requests (`batching`) and claims them (`store.queue.claim`).
It wakes when a delivery is recorded, when a coalescing window closes, every SMARTPLEX_RUN_POLL_SECONDS
while runs are open, and every SMARTPLEX_DISPATCH_POLL_SECONDS anyway (work left by another replica).
Prefect being slow or down never touches the request path. Every call to Prefect is bounded
(SMARTPLEX_PREFECT_CALL_SECONDS), and its errors are mapped into `smartplex_sync.errors` here
(`prefect_error`):
- transient (no answer, unreachable, 5xx/408/429, a deployment not found: not deployed yet or deleted):
  the batch waits with an exponential backoff and its deliveries stay `processed = false`, with the
  reason, until the run exists;
- permanent (Prefect refused the run: its parameters, 4xx) or not Prefect's error at all (a bug of ours):
  the batch closes as failed, which frees its deployment, and its deliveries carry the reason
  (`webhooks ls --failed`; `webhooks replay` sends one again).
A pass that fails as a whole (Prefect or the database unreachable) is tried again after a backoff too,
during which deliveries do not wake the loop. Both backoffs are jittered, so replicas that lost Prefect
at the same moment do not come back in step, and capped at MAX_BACKOFF_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

import httpx
from anyio import to_thread
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from smartplex_sync.errors import PermanentServiceError, ServiceError, TransientServiceError
from smartplex_sync.models import Deployment
from smartplex_sync.settings import Settings
from smartplex_sync.store import queue
from smartplex_sync.store.accounts import server_names
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.queue import Batch, QueuedRequest
from webhook_gateway.batching import NewBatch, Plan, Window, plan_merged

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF_SECONDS = 8  # also how late, at worst, dispatch catches up once Prefect answers again
MIN_PASS_SECONDS = 0.2  # a burst of deliveries wakes the loop once per this, not once per delivery
FINAL_STATES = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


def backoff(attempts: int, jitter: float | None = None) -> timedelta:
    """1, 2, 4 ... seconds up to MAX_BACKOFF_SECONDS, each cut by a random `jitter` of up to half."""
    full = min(2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)
    return timedelta(seconds=full * (1 - (random.random() if jitter is None else jitter) / 2))


def idempotency_key(batch_id: str) -> str:
    return f"smartplex-batch:{batch_id}"


@dataclass(frozen=True)
class PassReport:
    """What one pass did, and when the next one is needed."""

    created: int = 0
    finished: int = 0
    wake_at: datetime | None = None


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        client_factory: Callable[[], PrefectClient] = get_client,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.scan_grace = timedelta(seconds=settings.plex_scan_grace_seconds)
        self._client_factory = client_factory
        self._wake = asyncio.Event()
        self._deployment_ids: dict[Deployment, UUID] = {}

    def notify(self) -> None:
        """A delivery was recorded: plan again now rather than at the next poll."""
        self._wake.set()

    async def run_forever(self) -> None:
        failures = 0
        while True:
            started = utcnow()
            wake_at = None
            try:
                wake_at = (await self.dispatch_due()).wake_at
            except Exception as exc:  # the loop outlives any one failure (database locked, Prefect down)
                failures += 1
                delay = backoff(failures).total_seconds()
                expected = isinstance(prefect_error(exc), TransientServiceError) or isinstance(
                    exc, DBAPIError
                )
                log.log(
                    logging.WARNING if expected else logging.ERROR,
                    "dispatch pass failed (%s); trying again in %.1fs",
                    _describe(exc),
                    delay,
                    exc_info=not expected,  # a bug of ours: its traceback
                )
                await asyncio.sleep(delay)  # deliveries recorded meanwhile are picked up then
                self._wake.clear()
                continue
            if failures:
                log.info("dispatch passes work again after %d failed", failures)
                failures = 0
            await asyncio.sleep(max(0.0, MIN_PASS_SECONDS - (utcnow() - started).total_seconds()))
            timeout = self.settings.dispatch_poll_seconds
            if wake_at is not None:
                timeout = min(timeout, max((wake_at - utcnow()).total_seconds(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            self._wake.clear()

    async def dispatch_due(self) -> PassReport:
        """One pass (see the module docstring)."""
        batches = await to_thread.run_sync(queue.open_batches, self.engine)
        waiting = await to_thread.run_sync(queue.pending_requests, self.engine)
        if not batches and not waiting:
            return PassReport()
        async with self._client_factory() as client:
            finished = await self._close_finished(client, [b for b in batches if b.flow_run_id])
            still_open = [b for b in batches if b.id not in finished]
            now = utcnow()
            created = 0
            for batch in still_open:
                if batch.flow_run_id is None and (
                    batch.next_attempt_at is None or batch.next_attempt_at <= now
                ):
                    created += await self._create_run(client, batch)
            names = await to_thread.run_sync(self._server_names, waiting)
            plans = self._plan(waiting, still_open, now, names)
            for plan in plans:
                for new in plan.batches:
                    batch = _as_batch(new, now)
                    if await to_thread.run_sync(
                        queue.claim, self.engine, batch, [r.id for r in new.requests]
                    ):
                        created += await self._create_run(client, batch, new.requests)
        wake_at = min((p.wake_at for p in plans if p.wake_at), default=None)
        if still_open or created:
            poll = now + timedelta(seconds=self.settings.run_poll_seconds)
            wake_at = min(wake_at, poll) if wake_at else poll
        return PassReport(created, len(finished), wake_at)

    def _server_names(self, waiting: list[QueuedRequest]) -> dict[UUID, str]:
        """The names of the servers the waiting requests sync, for their runs' server:<name> tags."""
        ids = {UUID(server) for r in waiting for server in r.parameters.get("servers") or ()}
        with self.engine.connect() as conn:
            return server_names(conn, ids)

    def _plan(
        self, waiting: list[QueuedRequest], open_batches: list[Batch], now: datetime, names: dict[UUID, str]
    ) -> list[Plan]:
        by_deployment: dict[Deployment, list[QueuedRequest]] = defaultdict(list)
        for request in waiting:
            by_deployment[request.deployment].append(request)
        return [
            self.plan_deployment(
                deployment, requests, now, {b.lane for b in open_batches if b.deployment is deployment}, names
            )
            for deployment, requests in by_deployment.items()
        ]

    def plan_deployment(
        self,
        deployment: Deployment,
        waiting: list[QueuedRequest],
        now: datetime,
        busy_lanes: set[str],
        names: dict[UUID, str],
    ) -> Plan:
        """The coalescing rule (`batching.plan_merged`, with the deployment's window from the settings);
        `busy_lanes` are the lanes of its open batches."""
        window = Window(*self.settings.coalescing_window(deployment))
        return plan_merged(deployment, waiting, now, window, bool(busy_lanes), names)

    async def _close_finished(self, client: PrefectClient, batches: list[Batch]) -> set[str]:
        """Close the batches whose run is final (or gone); return their ids."""
        if not batches:
            return set()
        ids = [UUID(b.flow_run_id) for b in batches if b.flow_run_id]
        runs = {
            str(run.id): run
            for run in await self._bounded(
                client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            )
        }
        finished = set()
        for batch in batches:
            run = runs.get(batch.flow_run_id or "")
            if run is None:  # deleted in the UI: nothing did the work
                await to_thread.run_sync(self._finish, batch, "DELETED", "the flow run was deleted", True)
            elif run.state_type in FINAL_STATES:
                await to_thread.run_sync(self._finish, batch, *_outcome(run))
            else:
                if run.state_type and run.state_type.value != batch.state:
                    await to_thread.run_sync(queue.set_state, self.engine, batch.id, run.state_type.value)
                continue
            finished.add(batch.id)
        return finished

    def _finish(self, batch: Batch, state: str, message: str | None, requeue: bool) -> None:
        again = queue.finish(self.engine, batch, state, message, requeue=requeue)
        log.log(
            logging.INFO if state == "COMPLETED" else logging.WARNING,
            "flow run %s (%s) %s%s",
            batch.flow_run_id,
            batch.name,
            state.lower(),
            f"; {again} requests queued again" if again else "",
        )

    async def _create_run(
        self, client: PrefectClient, batch: Batch, requests: tuple[QueuedRequest, ...] = ()
    ) -> int:
        """Ask Prefect for the batch's run; 1 if it now exists, 0 if it must be tried again later or
        Prefect refused it for good (the batch is then closed as failed)."""
        try:
            run = await self._bounded(
                client.create_flow_run_from_deployment(
                    await self._deployment_id(client, batch.deployment),
                    parameters={"request": batch.parameters, "trigger": "webhook"},
                    name=batch.name,
                    tags=batch.tags,
                    idempotency_key=idempotency_key(batch.id),
                )
            )
        except Exception as exc:
            error = prefect_error(exc)
            if isinstance(error, TransientServiceError):
                await self._creation_failed(batch, str(error))
            else:
                await self._refused(batch, exc, error)
            return 0
        await to_thread.run_sync(queue.run_created, self.engine, batch.id, str(run.id))
        log.info("%s → flow run %s (%s)", batch.name, run.id, batch.deployment.value)
        if requests:  # a batch created on an earlier pass already has its artifact, or never will
            await self._publish_deliveries(client, run.id, batch, requests)
        return 1

    async def _creation_failed(self, batch: Batch, message: str) -> None:
        self._deployment_ids.clear()  # a redeployed deployment has a new id
        retry_at = utcnow() + backoff(batch.attempts + 1)
        attempts = await to_thread.run_sync(queue.creation_failed, self.engine, batch.id, message, retry_at)
        log.warning(
            "batch %s (%s): run not created (attempt %d: %s); retrying at %s",
            batch.id,
            batch.name,
            attempts,
            message,
            retry_at.isoformat(timespec="seconds"),
        )

    async def _refused(self, batch: Batch, exc: Exception, error: ServiceError | None) -> None:
        message = str(error) if error is not None else f"internal error: {_describe(exc)}"
        await to_thread.run_sync(queue.refused, self.engine, batch.id, message)
        log.error(
            "batch %s (%s): run refused, batch closed as failed: %s",
            batch.id,
            batch.name,
            message,
            exc_info=error is None,  # a bug of ours: its traceback
        )

    async def _bounded(self, call: Awaitable[T]) -> T:
        """One call to Prefect, Prefect's own retries included, cut off after SMARTPLEX_PREFECT_CALL_SECONDS."""
        return await asyncio.wait_for(call, self.settings.prefect_call_seconds)

    async def _publish_deliveries(
        self, client: PrefectClient, run_id: UUID, batch: Batch, requests: tuple[QueuedRequest, ...]
    ) -> None:
        """The run's table artifact of the deliveries it serves (best effort: the run matters more)."""
        rows = [
            {
                "webhook": str(r.webhook_id),
                "source": r.source,
                "event": r.event_type,
                "received": r.received_at.isoformat(timespec="seconds"),
            }
            for r in sorted({r.webhook_id: r for r in requests}.values(), key=lambda r: r.stamp)
        ]
        artifact = ArtifactCreate(
            key="webhook-deliveries",
            type="table",
            data=json.dumps(rows),
            description=f"The {len(rows)} webhook deliveries this run serves (`webhook_log` ids).",
            flow_run_id=run_id,
        )
        try:
            await self._bounded(client.create_artifact(artifact))
        except Exception as exc:
            log.warning("batch %s: deliveries artifact not created: %s", batch.id, _describe(exc))

    async def _deployment_id(self, client: PrefectClient, deployment: Deployment) -> UUID:
        if deployment not in self._deployment_ids:
            try:
                found = await self._bounded(client.read_deployment_by_name(deployment.full_name))
            except ObjectNotFound as exc:
                raise TransientServiceError(
                    "prefect", f"deployment {deployment.full_name} not found: run `prefect deploy --all`", 404
                ) from exc
            self._deployment_ids[deployment] = found.id
        return self._deployment_ids[deployment]


def _as_batch(new: NewBatch, now: datetime) -> Batch:
    return Batch(
        id=uuid.uuid4().hex,
        deployment=new.deployment,
        lane=new.lane,
        parameters=new.parameters.to_json(),
        name=new.name,
        tags=list(new.tags),
        created_at=now,
    )


def _outcome(run: FlowRun) -> tuple[str, str | None, bool]:
    """(state, error message or None, whether to queue the requests again) of a final run."""
    state_type = run.state_type or StateType.CRASHED
    if state_type is StateType.COMPLETED:
        return state_type.value, None, False
    message = (run.state.message if run.state else None) or state_type.value.lower()
    return state_type.value, message, state_type is StateType.CRASHED


def prefect_error(exc: BaseException) -> ServiceError | None:
    """A failed call to Prefect in our error tree: transient (try again later) or permanent (Prefect refused
    it for good). None when it is not Prefect's error but ours."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, TimeoutError):
        return TransientServiceError("prefect", "no answer in time (SMARTPLEX_PREFECT_CALL_SECONDS)")
    if isinstance(exc, httpx.TransportError):
        return TransientServiceError("prefect", f"cannot reach it: {_describe(exc)}")
    if isinstance(exc, ObjectNotFound):  # the deployment id we hold is gone: redeployed, or deleted
        return TransientServiceError("prefect", "deployment not found: run `prefect deploy --all`", 404)
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        message = f"HTTP {code}: {_detail(exc.response)}"
        if code in (404, 408, 429) or code >= 500:
            return TransientServiceError("prefect", message, code)
        return PermanentServiceError("prefect", message, code)
    return None


def _detail(response: httpx.Response) -> str:
    """What Prefect said: its JSON `detail`, else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail or response.text or response.reason_phrase)[:400]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
