"""`sonarr-sync`: Sonarr series → `arr_items`, then their ids onto `media_items` (`link_arr_ids`).

It takes a `SonarrSync`. Fed by Download webhooks, `series` holds the series they named and Sonarr is not
called (no URL or key needed). Scheduled, `series` is None: the whole `/api/v3/series` list is read, and
series Sonarr no longer has are dropped (their media_items lose the stale id).
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import RunReport, run_logger, sync_arr
from flows._retry import NETWORK_RETRIES
from flows.clients.sonarr import SonarrClient
from smartplex_sync.models import ArrItem
from smartplex_sync.requests import SonarrSync

SCHEDULED = SonarrSync()
"""What a scheduled run asks for: everything the service has."""


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_series(client: SonarrClient) -> list[ArrItem]:
    series = client.series()
    run_logger().info("Sonarr returned %d series", len(series))
    return series


@flow(name="sonarr-sync")
def sonarr_sync(request: SonarrSync = SCHEDULED) -> RunReport:
    """Record Sonarr's series ids on media_items: the webhooks' `series`, or (None) all of Sonarr."""
    return sync_arr(
        "sonarr", "series", request.series, SonarrClient.from_settings, fetch_series, "/api/v3/series"
    )
