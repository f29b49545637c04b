"""Which waiting requests become a flow run now: the coalescing rules. Pure: no I/O, no clock.

`plan_merged` (the default): per deployment, one batch takes every request that is *ready* (its
`ready_at` has passed: the Plex scan grace of a Sonarr/Radarr download holds it back until then), once
the deployment is idle (no open batch: at most one run of ours at a time, so a burst that arrives during
a run becomes one follow-up run) and the burst has gone quiet: `quiet` seconds since the newest ready
request, or `max_wait` seconds since the oldest, whichever comes first. Its parameters are the merge of
every request (`smartplex_sync.requests.merge_requests`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from smartplex_sync.models import WEBHOOK_TAG, Deployment
from smartplex_sync.requests import PARAMETERS, SyncParameters, merge_requests
from smartplex_sync.store.queue import QueuedRequest

MAX_BATCH = 500
"""Requests per batch at most (a queue that grew while Prefect was down drains in several runs)."""


@dataclass(frozen=True)
class Window:
    """A deployment's trailing coalescing window."""

    quiet: float
    max_wait: float


@dataclass(frozen=True)
class NewBatch:
    deployment: Deployment
    lane: str
    requests: tuple[QueuedRequest, ...]
    parameters: SyncParameters[Any]
    name: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    batches: tuple[NewBatch, ...] = ()
    wake_at: datetime | None = None  # when this deployment's plan can change without a new delivery


def _parameters(request: QueuedRequest) -> SyncParameters[Any]:
    return PARAMETERS[request.deployment].model_validate(request.parameters)


def new_batch(
    deployment: Deployment,
    requests: Sequence[QueuedRequest],
    lane: str = "",
    server_names: Mapping[UUID, str] | None = None,
) -> NewBatch:
    """The batch of `requests`: merged parameters, a readable run name, every source:/event: tag and a
    server:<name> tag per server it syncs (`server_names`)."""
    ordered = sorted(requests, key=lambda r: r.stamp)
    first = ordered[0]
    name = f"{first.source}-{first.event_type}-{str(first.webhook_id)[:8]}".lower().replace(" ", "-")
    if len({r.webhook_id for r in ordered}) > 1:
        name += f"-and-{len({r.webhook_id for r in ordered}) - 1}-more"
    merged = merge_requests((r.stamp, _parameters(r)) for r in ordered)
    names = server_names or {}
    tags = sorted(
        {f"source:{r.source}" for r in ordered}
        | {f"event:{r.event_type}" for r in ordered}
        | {f"server:{names[server]}" for server in merged.servers or () if server in names}
    )
    return NewBatch(deployment, lane, tuple(ordered), merged, name, (*tags, WEBHOOK_TAG))


def _earliest(*times: datetime | None) -> datetime | None:
    return min((t for t in times if t is not None), default=None)


def plan_merged(
    deployment: Deployment,
    waiting: Sequence[QueuedRequest],
    now: datetime,
    window: Window,
    busy: bool,
    server_names: Mapping[UUID, str] | None = None,
) -> Plan:
    """At most one batch of `deployment`'s waiting requests (see the module docstring)."""
    ready = sorted((r for r in waiting if r.ready_at <= now), key=lambda r: r.ready_at)[:MAX_BATCH]
    held = _earliest(*(r.ready_at for r in waiting if r.ready_at > now))
    if busy or not ready:
        return Plan(wake_at=held)  # an open batch ends on its own; the dispatcher looks at it every pass
    due_at = min(
        ready[-1].ready_at + timedelta(seconds=window.quiet),
        ready[0].ready_at + timedelta(seconds=window.max_wait),
    )
    if now < due_at:
        return Plan(wake_at=_earliest(due_at, held))
    return Plan((new_batch(deployment, ready, server_names=server_names),), wake_at=held)
