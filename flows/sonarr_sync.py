"""`sonarr-sync`: Sonarr series → `arr_items`, then their ids onto `media_items` (`flows._arr`).

It takes a `SonarrSync`. Fed by Download webhooks, a server's `series` are the series they named and
Sonarr is not called. Scheduled (`series` None), the whole `/api/v3/series` list is read through the
Sonarr integration that serves the server, and series Sonarr no longer has are dropped.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import sync_arr
from flows._retry import NETWORK_RETRIES
from flows._runs import run_logger
from flows.clients.sonarr import SonarrClient, parse_series
from smartplex_sync.models import ArrItem
from smartplex_sync.requests import SonarrSync, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store.accounts import Integration


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_series(client: SonarrClient) -> list[dict[str, Any]]:
    series = client.series()
    run_logger().info("Sonarr returned %d series", len(series))
    return series


def read_sonarr(integration: Integration) -> tuple[list[ArrItem], int]:
    """Every series of the integration's Sonarr (fetched, then parsed), and the requests it took."""
    with SonarrClient.for_integration(integration, get_settings()) as client:
        return [parse_series(raw) for raw in fetch_series(client)], client.requests_made


@flow(name="sonarr-sync")
def sonarr_sync(request: SonarrSync = SonarrSync(), trigger: Trigger = "manual") -> dict[str, Any]:
    """Record Sonarr's series ids on media_items: the webhooks' `series`, or (None) all of Sonarr."""
    return sync_arr("sonarr", request, trigger, read_sonarr, "/api/v3/series")
