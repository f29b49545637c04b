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
    """Deployments of `prefect.yaml`. The value is the deployment's name and its flow's."""

    PLEX_LIBRARY_SYNC = "plex-library-sync"
    TAUTULLI_SYNC = "tautulli-sync"
    SONARR_SYNC = "sonarr-sync"
    RADARR_SYNC = "radarr-sync"
    OVERSEERR_SYNC = "overseerr-sync"
    WEBHOOK_RETENTION = "webhook-retention"

    @property
    def flow_name(self) -> str:
        return self.value

    @property
    def full_name(self) -> str:
        """`flow/deployment`, the name Prefect's API and CLI know a deployment by."""
        return f"{self.flow_name}/{self.value}"


@dataclass(frozen=True)
class Service:
    """What every layer knows of one service: its sync deployment and its `sync_schedule` row's defaults.

    Registered once, in `SERVICES`. The gateway's half of a source (parser, token forms, content types)
    is `webhook_gateway.sources.SOURCES`; its HTTP client is `flows.clients.CLIENTS`. docs/architecture.md
    ("Adding a source") lists every file a new one touches.
    """

    source: Source
    deployment: Deployment
    """The sync its `sync_schedule` row schedules, and its settings' prefix (`SMARTPLEX_<SOURCE>_*`)."""
    scheduled_by_default: bool
    default_interval_hours: int


SERVICES: dict[Source, Service] = {
    service.source: service
    for service in (
        Service(Source.PLEX, Deployment.PLEX_LIBRARY_SYNC, True, 12),
        Service(Source.TAUTULLI, Deployment.TAUTULLI_SYNC, True, 6),
        Service(Source.SONARR, Deployment.SONARR_SYNC, False, 24),
        Service(Source.RADARR, Deployment.RADARR_SYNC, False, 24),
        Service(Source.OVERSEERR, Deployment.OVERSEERR_SYNC, False, 6),
    )
}
"""Every service. The defaults are SmartPlex's seed rows (migrations 005/006): Plex every 12 h, Tautulli
every 6 h, Sonarr, Radarr (24 h) and Overseerr (6 h) present but paused."""

SERVICE_OF: dict[Deployment, Source] = {service.deployment: source for source, service in SERVICES.items()}
"""The service whose sync each deployment is (every deployment but webhook-retention)."""

if set(SERVICES) != set(Source) or len(SERVICE_OF) != len(SERVICES):
    raise RuntimeError("SERVICES must name every Source once, each with a deployment of its own")


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
