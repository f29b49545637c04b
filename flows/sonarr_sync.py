"""`sonarr-sync`: Sonarr series → `arr_items`, then their ids onto `media_items` (`link_arr_ids`).

Fed by a Download webhook, `series` holds the series the webhook named and Sonarr is not called (no URL or
key needed). Scheduled, `series` is None: the whole `/api/v3/series` list is read, and series Sonarr no
longer has are dropped (their media_items lose the stale id).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import RunReport, run_logger, sync_arr
from flows._hooks import STATE_HOOKS
from flows._retry import NETWORK_RETRIES
from flows.clients.sonarr import SonarrClient
from smartplex_sync.store.arr import ArrItem


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_series(client: SonarrClient) -> list[ArrItem]:
    series = client.series()
    run_logger().info("Sonarr returned %d series", len(series))
    return series


@flow(name="sonarr-sync", **STATE_HOOKS)
def sonarr_sync(series: list[dict[str, Any]] | None = None) -> RunReport:
    """Record Sonarr's series ids on media_items: the webhook's `series`, or (None) all of Sonarr."""
    return sync_arr("sonarr", "series", series, SonarrClient.from_settings, fetch_series, "/api/v3/series")
