"""`radarr-sync`: Radarr movies → `arr_items`, then their ids onto `media_items` (`link_arr_ids`).

It takes a `RadarrSync`. Fed by Download webhooks, `movies` holds the movies they named and Radarr is not
called. Scheduled
(`movies` None), the whole `/api/v3/movie` list is read and movies Radarr no longer has are dropped.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import RunReport, run_logger, sync_arr
from flows._retry import NETWORK_RETRIES
from flows.clients.radarr import RadarrClient
from smartplex_sync.models import ArrItem
from smartplex_sync.requests import RadarrSync

SCHEDULED = RadarrSync()
"""What a scheduled run asks for: everything the service has."""


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_movies(client: RadarrClient) -> list[ArrItem]:
    movies = client.movies()
    run_logger().info("Radarr returned %d movies", len(movies))
    return movies


@flow(name="radarr-sync")
def radarr_sync(request: RadarrSync = SCHEDULED) -> RunReport:
    """Record Radarr's movie ids on media_items: the webhooks' `movies`, or (None) all of Radarr."""
    return sync_arr(
        "radarr", "movies", request.movies, RadarrClient.from_settings, fetch_movies, "/api/v3/movie"
    )
