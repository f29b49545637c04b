"""Recorded deliveries → Prefect flow runs, after the answer, from the webhook_log rows.

The dispatcher runs in the gateway's event loop. It wakes when a delivery is recorded (and every few
seconds, for rows left by a crash, a restart or another replica), claims due rows and asks Prefect for
one flow run per sync request. Prefect being slow or down never touches the request path: failed rows get
an exponential backoff and stay `processed = false` until their runs exist.

Coalescing: a request's idempotency key is its coalescing key plus the time bucket its delivery fell in,
and the run is scheduled at the bucket's end. Prefect answers a repeated key with the run it already has,
so every delivery of a burst gets the same run, across restarts and replicas, with no state of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from anyio import to_thread
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled
from sqlalchemy import Engine

from smartplex_sync.models import WEBHOOK_TAG, Deployment, SyncRequest
from smartplex_sync.store import webhooks
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.webhooks import PendingDelivery

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300


@dataclass(frozen=True)
class RunPlan:
    """How one sync request of one delivery becomes a flow run."""

    deployment: Deployment
    parameters: dict[str, Any]
    idempotency_key: str
    start_at: datetime
    name: str
    tags: tuple[str, ...]


def plan_run(
    delivery: PendingDelivery, index: int, coalesce_seconds: int, scan_grace_seconds: int = 0
) -> RunPlan:
    """Pure: the flow run a delivery's `index`-th sync request asks for."""
    request: SyncRequest = delivery.sync_request(index)
    tags = (f"source:{delivery.source}", f"event:{delivery.event_type}", WEBHOOK_TAG)
    if request.coalesce and coalesce_seconds > 0:
        received = delivery.received_at.timestamp()
        bucket_start = int(received // coalesce_seconds) * coalesce_seconds
        key = f"{request.coalescing_key}:{bucket_start}"
        start_at = datetime.fromtimestamp(bucket_start + coalesce_seconds, UTC)
    else:
        # The receipt time too: row ids start again in a new database, Prefect's keys never expire.
        key = f"webhook:{delivery.id}:{delivery.received_at.timestamp():.6f}:{index}"
        start_at = delivery.received_at
    name = f"{delivery.source}-{delivery.event_type}-{delivery.id}".lower().replace(" ", "-")
    if request.wait_for_plex_scan:
        start_at += timedelta(seconds=scan_grace_seconds)
    return RunPlan(request.deployment, request.parameters, key, start_at, name, tags)


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        *,
        coalesce_seconds: int,
        scan_grace_seconds: int = 0,
        poll_seconds: float = 5.0,
        client_factory: Callable[[], PrefectClient] = get_client,
    ) -> None:
        self.engine = engine
        self.coalesce_seconds = coalesce_seconds
        self.scan_grace_seconds = scan_grace_seconds
        self.poll_seconds = poll_seconds
        self._client_factory = client_factory
        self._wake = asyncio.Event()
        self._deployment_ids: dict[Deployment, UUID] = {}

    def notify(self) -> None:
        """A delivery was recorded: dispatch now rather than at the next poll."""
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                await self.dispatch_due()
            except Exception:  # the loop must outlive any one failure (database locked, Prefect down ...)
                log.exception("dispatch pass failed; trying again in %.0fs", self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()

    async def dispatch_due(self) -> int:
        """Dispatch every due row; return how many deliveries were fully dispatched."""
        done = 0
        runs_by_key: dict[str, UUID] = {}  # a burst's deliveries share a key: ask Prefect once per key
        async with self._client_factory() as client:
            while deliveries := await to_thread.run_sync(lambda: webhooks.claim_pending(self.engine)):
                for delivery in deliveries:
                    done += await self._dispatch(client, delivery, runs_by_key)
                if len(deliveries) < 100:
                    break
        return done

    async def _dispatch(
        self, client: PrefectClient, delivery: PendingDelivery, runs_by_key: dict[str, UUID]
    ) -> bool:
        requests = [dict(r) for r in delivery.requests]
        try:
            for index, request in enumerate(requests):
                if not request.get("flow_run_id"):
                    plan = plan_run(delivery, index, self.coalesce_seconds, self.scan_grace_seconds)
                    if plan.idempotency_key not in runs_by_key:
                        runs_by_key[plan.idempotency_key] = await self._create_run(client, plan)
                    request["flow_run_id"] = str(runs_by_key[plan.idempotency_key])
        except Exception as exc:
            self._deployment_ids.clear()  # a redeployed deployment has a new id
            retry_at = utcnow() + backoff(delivery.attempts)
            message = f"dispatch attempt {delivery.attempts} failed: {_describe(exc)}"
            log.warning("webhook %s: %s; retrying at %s", delivery.id, message, retry_at.isoformat())
            await to_thread.run_sync(
                webhooks.mark_dispatch_failed, self.engine, delivery.id, requests, message, retry_at
            )
            return False
        await to_thread.run_sync(webhooks.mark_dispatched, self.engine, delivery.id, requests)
        return True

    async def _create_run(self, client: PrefectClient, plan: RunPlan) -> UUID:
        run = await client.create_flow_run_from_deployment(
            await self._deployment_id(client, plan.deployment),
            parameters=plan.parameters,
            name=plan.name,
            tags=list(plan.tags),
            idempotency_key=plan.idempotency_key,
            state=Scheduled(scheduled_time=plan.start_at),
        )
        return run.id

    async def _deployment_id(self, client: PrefectClient, deployment: Deployment) -> UUID:
        if deployment not in self._deployment_ids:
            try:
                found = await client.read_deployment_by_name(deployment.full_name)
            except ObjectNotFound as exc:
                raise LookupError(
                    f"deployment {deployment.full_name} not found in Prefect: run `prefect deploy --all`"
                ) from exc
            self._deployment_ids[deployment] = found.id
        return self._deployment_ids[deployment]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
