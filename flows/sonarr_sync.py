"""`sonarr-sync`: Sonarr series → `arr_items`, then their ids onto `media_items` (`link_arr_ids`).

Fed by a Download webhook, `series` holds the series the webhook named and Sonarr is not called (no URL or
key needed). Scheduled, `series` is None: the whole `/api/v3/series` list is read, and series Sonarr no
longer has are dropped (their media_items lose the stale id).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import RunReport, finish, items_from_parameters, run_logger, store_and_link
from flows._hooks import STATE_HOOKS
from flows._retry import NETWORK_RETRIES
from flows.clients.sonarr import SonarrClient
from smartplex_sync.settings import get_settings
from smartplex_sync.store.arr import ArrItem


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_series(client: SonarrClient) -> list[ArrItem]:
    series = client.series()
    run_logger().info("Sonarr returned %d series", len(series))
    return series


@flow(name="sonarr-sync", **STATE_HOOKS)
def sonarr_sync(series: list[dict[str, Any]] | None = None) -> RunReport:
    """Record Sonarr's series ids on media_items: the webhook's `series`, or (None) all of Sonarr."""
    started = time.monotonic()
    settings = get_settings()
    if series is not None:
        items, requests_made, source = items_from_parameters("sonarr", series), 0, "webhook"
        run_logger().info("%d series from a webhook; Sonarr is not called", len(items))
    else:
        run_logger().info("full sync: reading every series from Sonarr")
        with SonarrClient.from_settings(settings) as client:
            items = fetch_series(client)
            requests_made, source = client.requests_made, "/api/v3/series"
    stored = store_and_link(settings.sqlalchemy_url, "sonarr", items, full=series is None)
    return finish("sonarr-sync", source, items, stored, requests_made, started)
