"""The earlier coalescing rule, kept as the end-to-end benchmarks' baseline (it is not the product's).

Requests with the same parameters whose deliveries fell in the same fixed bucket of `bucket_seconds`
share a run, due at the bucket's end, and nothing waits for a run in progress (Prefect's concurrency limit
queues them instead). `BucketDispatcher` is the gateway's dispatcher with this rule; a benchmark's
baseline stack gets it through `bench/_baseline/sitecustomize.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from smartplex_sync.models import Deployment
from smartplex_sync.store.queue import QueuedRequest
from webhook_gateway.batching import MAX_BATCH, Plan, new_batch
from webhook_gateway.dispatch import Dispatcher

BUCKET_SECONDS_VARIABLE = "SMARTPLEX_BENCH_BUCKET_SECONDS"
"""Set in a stack's environment to make its gateway plan with buckets of that many seconds."""


def _bucket_lane(request: QueuedRequest, bucket: int) -> tuple[str, datetime]:
    canonical = json.dumps(request.parameters, sort_keys=True, separators=(",", ":"))
    start = int(request.received_at.timestamp() // bucket) * bucket
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return f"{digest}:{start}", datetime.fromtimestamp(start + bucket, UTC)


def plan_buckets(
    deployment: Deployment,
    waiting: Sequence[QueuedRequest],
    now: datetime,
    bucket: int,
    busy_lanes: set[str],
    server_names: Mapping[UUID, str] | None = None,
) -> Plan:
    """One batch per (parameters, bucket) whose bucket has ended and whose requests are all ready."""
    lanes: dict[str, tuple[datetime, list[QueuedRequest]]] = {}
    for request in waiting:
        lane, ends = _bucket_lane(request, max(bucket, 1))
        lanes.setdefault(lane, (ends, []))[1].append(request)
    batches, wake_at = [], None
    for lane, (ends, requests) in sorted(lanes.items()):
        due_at = max([ends, *(r.ready_at for r in requests)])
        if lane in busy_lanes:  # its run ends on its own; the dispatcher looks every pass
            continue
        if now < due_at:
            wake_at = due_at if wake_at is None else min(wake_at, due_at)
            continue
        batches.append(new_batch(deployment, requests[:MAX_BATCH], lane, server_names))
    return Plan(tuple(batches), wake_at)


class BucketDispatcher(Dispatcher):
    """The gateway's dispatcher, planning with buckets of `bucket_seconds` instead of merging."""

    bucket_seconds = 10

    def plan_deployment(
        self,
        deployment: Deployment,
        waiting: list[QueuedRequest],
        now: datetime,
        busy_lanes: set[str],
        names: dict[UUID, str],
    ) -> Plan:
        return plan_buckets(deployment, waiting, now, self.bucket_seconds, busy_lanes, names)


def use_buckets(dispatcher: type[Dispatcher]) -> None:
    """Make every `dispatcher` plan as a BucketDispatcher, with buckets of SMARTPLEX_BENCH_BUCKET_SECONDS
    (the gateway process of a baseline stack; see `bench/_baseline/sitecustomize.py`)."""
    dispatcher.bucket_seconds = int(os.environ[BUCKET_SECONDS_VARIABLE])  # type: ignore[attr-defined]
    dispatcher.plan_deployment = BucketDispatcher.plan_deployment  # type: ignore[method-assign,assignment]


def baseline_env(bucket_seconds: int = 10) -> dict[str, str]:
    """The environment of a stack whose gateway plans with buckets (`running_stack`'s `extra_env`)."""
    here = Path(__file__).parent
    paths = [str(here / "_baseline"), str(here.parent), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(filter(None, paths)), BUCKET_SECONDS_VARIABLE: str(bucket_seconds)}
