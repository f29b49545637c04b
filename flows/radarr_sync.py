"""`radarr-sync`: Radarr movies → `arr_items`, then their ids onto `media_items` (`flows._arr`).

It takes a `RadarrSync`. Fed by Download webhooks, a server's `movies` are the movies they named and
Radarr is not called. Scheduled (`movies` None), the whole `/api/v3/movie` list is read through the Radarr
integration that serves the server, and movies Radarr no longer has are dropped.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import sync_arr
from flows._retry import NETWORK_RETRIES
from flows._runs import run_logger
from flows.clients.radarr import RadarrClient, parse_movie
from smartplex_sync.models import ArrItem
from smartplex_sync.requests import RadarrSync, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store.accounts import Integration


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_movies(client: RadarrClient) -> list[dict[str, Any]]:
    movies = client.movies()
    run_logger().info("Radarr returned %d movies", len(movies))
    return movies


def read_radarr(integration: Integration) -> tuple[list[ArrItem], int]:
    """Every movie of the integration's Radarr (fetched, then parsed), and the requests it took."""
    with RadarrClient.for_integration(integration, get_settings()) as client:
        return [parse_movie(raw) for raw in fetch_movies(client)], client.requests_made


@flow(name="radarr-sync")
def radarr_sync(request: RadarrSync = RadarrSync(), trigger: Trigger = "manual") -> dict[str, Any]:
    """Record Radarr's movie ids on media_items: the webhooks' `movies`, or (None) all of Radarr."""
    return sync_arr("radarr", request, trigger, read_radarr, "/api/v3/movie")
