"""Shared vocabulary: sources, deployments and the normalized sync request. No I/O, no internal imports."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Source(StrEnum):
    PLEX = "plex"
    TAUTULLI = "tautulli"
    SONARR = "sonarr"
    RADARR = "radarr"
    OVERSEERR = "overseerr"


WORK_POOL = "smartplex"
"""The process work pool every deployment of `prefect.yaml` runs on."""

WEBHOOK_TAG = "trigger:webhook"
"""The tag of every flow run the gateway's dispatcher creates (they are the runs that serve deliveries)."""


class Deployment(StrEnum):
    """Deployments of `prefect.yaml`. The value is the deployment name; `flow_name` the flow behind it."""

    PLEX_LIBRARY_SYNC = "plex-library-sync"
    TAUTULLI_SYNC = "tautulli-sync"
    SONARR_SYNC = "sonarr-sync"
    RADARR_SYNC = "radarr-sync"
    OVERSEERR_SYNC = "overseerr-sync"
    WEBHOOK_RETENTION = "webhook-retention"

    @property
    def flow_name(self) -> str:
        return _FLOW_NAMES[self]

    @property
    def full_name(self) -> str:
        """`flow/deployment`, the name Prefect's API and CLI know a deployment by."""
        return f"{self.flow_name}/{self.value}"


_FLOW_NAMES = {
    Deployment.PLEX_LIBRARY_SYNC: "plex-library-sync",
    Deployment.TAUTULLI_SYNC: "tautulli-sync",
    Deployment.SONARR_SYNC: "sonarr-sync",
    Deployment.RADARR_SYNC: "radarr-sync",
    Deployment.OVERSEERR_SYNC: "overseerr-sync",
    Deployment.WEBHOOK_RETENTION: "webhook-retention",
}

# The service whose `sync_schedule` row a deployment's schedule mirrors.
SCHEDULED_SERVICES: dict[Source, Deployment] = {
    Source.PLEX: Deployment.PLEX_LIBRARY_SYNC,
    Source.TAUTULLI: Deployment.TAUTULLI_SYNC,
    Source.SONARR: Deployment.SONARR_SYNC,
    Source.RADARR: Deployment.RADARR_SYNC,
    Source.OVERSEERR: Deployment.OVERSEERR_SYNC,
}


class Action(StrEnum):
    """What the gateway did with a delivery, besides the deployments it asked for."""

    IGNORED = "ignored"  # a valid event we have nothing to do for
    RECORDED = "recorded"  # kept for the record (requests approved, declined ...), no sync
    TEST = "test"  # the service's "Test" button
    REJECTED = "rejected"  # bad input: answered 4xx


@dataclass(frozen=True)
class SyncRequest:
    """One flow run to ask for: a deployment and its parameters.

    Deliveries asking for the same deployment with the same parameters inside `coalesce` seconds of
    each other share one flow run (see `coalescing_key`); `coalesce=False` gives every delivery its own.
    `wait_for_plex_scan` starts the run SMARTPLEX_PLEX_SCAN_GRACE_SECONDS later: Sonarr and Radarr post
    `Download` as soon as a file is imported, and Plex lists it only after its own scan.
    """

    deployment: Deployment
    parameters: dict[str, Any] = field(default_factory=dict)
    coalesce: bool = True
    wait_for_plex_scan: bool = False

    @property
    def coalescing_key(self) -> str:
        canonical = json.dumps(self.parameters, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return f"{self.deployment.value}:{digest}"

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment.value,
            "parameters": self.parameters,
            "coalesce": self.coalesce,
            "wait_for_plex_scan": self.wait_for_plex_scan,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncRequest:
        return cls(
            Deployment(data["deployment"]),
            dict(data.get("parameters") or {}),
            data.get("coalesce", True),
            bool(data.get("wait_for_plex_scan", False)),
        )


@dataclass(frozen=True)
class ParsedDelivery:
    """What a source made of one delivery: its event name and the syncs it asks for.

    `action` is set when it asks for none (ignored, recorded only, a test event).
    """

    event_type: str
    requests: tuple[SyncRequest, ...] = ()
    action: Action | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if not self.requests and self.action is None:
            raise ValueError("a delivery without sync requests needs an action")

    @property
    def action_label(self) -> str:
        if self.requests:
            return ",".join(dict.fromkeys(r.deployment.value for r in self.requests))
        assert self.action is not None
        return self.action.value
