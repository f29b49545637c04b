"""`radarr-sync`: Radarr movies → `arr_items`, then their ids onto `media_items` (`link_arr_ids`).

Fed by a Download webhook, `movies` holds the movies it named and Radarr is not called. Scheduled
(`movies` None), the whole `/api/v3/movie` list is read and movies Radarr no longer has are dropped.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import RunReport, finish, items_from_parameters, run_logger, store_and_link
from flows._hooks import STATE_HOOKS
from flows._retry import NETWORK_RETRIES
from flows.clients.radarr import RadarrClient
from smartplex_sync.settings import get_settings
from smartplex_sync.store.arr import ArrItem


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_movies(client: RadarrClient) -> list[ArrItem]:
    movies = client.movies()
    run_logger().info("Radarr returned %d movies", len(movies))
    return movies


@flow(name="radarr-sync", **STATE_HOOKS)
def radarr_sync(movies: list[dict[str, Any]] | None = None) -> RunReport:
    """Record Radarr's movie ids on media_items: the webhook's `movies`, or (None) all of Radarr."""
    started = time.monotonic()
    settings = get_settings()
    if movies is not None:
        items, requests_made, source = items_from_parameters("radarr", movies), 0, "webhook"
        run_logger().info("%d movies from a webhook; Radarr is not called", len(items))
    else:
        run_logger().info("full sync: reading every movie from Radarr")
        with RadarrClient.from_settings(settings) as client:
            items = fetch_movies(client)
            requests_made, source = client.requests_made, "/api/v3/movie"
    stored = store_and_link(settings.sqlalchemy_url, "radarr", items, full=movies is None)
    return finish("radarr-sync", source, items, stored, requests_made, started)
