"""Shared vocabulary: sources, deployments, actions and the value types the syncs exchange. No I/O, no
internal imports. What a delivery asks each deployment to do is in `smartplex_sync.requests`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal


class Source(StrEnum):
    PLEX = "plex"
    TAUTULLI = "tautulli"
    SONARR = "sonarr"
    RADARR = "radarr"
    OVERSEERR = "overseerr"


WORK_POOL = "smartplex"
"""The process work pool every deployment of `prefect.yaml` runs on."""

PROJECT_TAG = "smartplex"
"""The tag every deployment of `prefect.yaml` gives its runs."""

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

# The deployment a `sync_schedule` row of each service schedules.
SCHEDULED_SERVICES: dict[Source, Deployment] = {
    Source.PLEX: Deployment.PLEX_LIBRARY_SYNC,
    Source.TAUTULLI: Deployment.TAUTULLI_SYNC,
    Source.SONARR: Deployment.SONARR_SYNC,
    Source.RADARR: Deployment.RADARR_SYNC,
    Source.OVERSEERR: Deployment.OVERSEERR_SYNC,
}


DEFAULT_SCHEDULES: dict[Source, tuple[bool, int]] = {
    Source.PLEX: (True, 12),
    Source.TAUTULLI: (True, 6),
    Source.SONARR: (False, 24),
    Source.RADARR: (False, 24),
    Source.OVERSEERR: (False, 6),
}
"""(enabled, interval_hours) of each service's `sync_schedule` row, as SmartPlex's migrations 005/006 seed
them: Plex every 12 h, Tautulli every 6 h, Sonarr, Radarr (24 h) and Overseerr (6 h) present but paused."""


class Action(StrEnum):
    """What the gateway did with a delivery, besides the deployments it asked for."""

    IGNORED = "ignored"  # a valid event we have nothing to do for
    RECORDED = "recorded"  # kept for the record (requests approved, declined ...), no sync
    TEST = "test"  # the service's "Test" button
    REJECTED = "rejected"  # bad input: answered 4xx


ArrService = Literal["sonarr", "radarr"]


@dataclass(frozen=True)
class ArrItem:
    """One Sonarr series or Radarr movie: what a webhook names, what the API lists, what `arr_items` keeps."""

    service: ArrService
    arr_id: int
    title: str
    tvdb_id: int | None = None
    tmdb_id: int | None = None
    imdb_id: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class OverseerrRequest:
    """One Overseerr / Jellyseerr request. `None` means "not known here" (a webhook tells less than the
    API): it never overwrites a stored value."""

    request_id: int
    media_type: str | None  # movie | tv; a custom webhook template may leave it out
    status: str
    tmdb_id: int | None = None
    tvdb_id: int | None = None
    media_status: str | None = None
    is_4k: bool | None = None
    requested_by: str | None = None
    requested_by_email: str | None = None
    requested_by_id: int | None = None  # the requester's Overseerr user id (the API tells it, webhooks don't)
    title: str | None = None  # a webhook's `subject`, e.g. "Inception (2010)"
    seasons: tuple[int, ...] | None = None
    requested_at: datetime | None = None
    updated_at: datetime | None = None
