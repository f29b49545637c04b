"""One HTTP client per service, each in its own module. Plex is reached per server
(`PlexClient.for_server`, a `servers` row); every other service through an `integrations` row, with the
client `INTEGRATION_CLIENTS` names for it."""

from __future__ import annotations

from smartplex_sync.models import Source

from .overseerr import OverseerrClient
from .plex import PlexClient
from .radarr import RadarrClient
from .sonarr import SonarrClient
from .tautulli import TautulliClient

IntegrationClient = TautulliClient | SonarrClient | RadarrClient | OverseerrClient

INTEGRATION_CLIENTS: dict[Source, type[IntegrationClient]] = {
    Source(client.service): client for client in (TautulliClient, SonarrClient, RadarrClient, OverseerrClient)
}

if {Source(PlexClient.service), *INTEGRATION_CLIENTS} != set(Source):
    raise RuntimeError("every Source needs its client: PlexClient, or one in INTEGRATION_CLIENTS")

__all__ = ["INTEGRATION_CLIENTS", "IntegrationClient", "PlexClient"]
