"""Radarr v3 API (also served by Radarr v5): the movie list and the system status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows.clients._arr import ApiKeyClient, positive_int
from flows.clients.sonarr import describe_status
from smartplex_sync.convert import blank_to_none
from smartplex_sync.errors import PermanentServiceError
from smartplex_sync.models import ArrItem


def parse_movie(raw: Mapping[str, Any]) -> ArrItem:
    """One `/api/v3/movie` entry (or a webhook's `movie`) as an ArrItem."""
    movie_id = positive_int(raw.get("id"))
    if movie_id is None:
        raise PermanentServiceError("radarr", f"a movie without an id: {dict(raw)!r:.200}")
    return ArrItem(
        service="radarr",
        arr_id=movie_id,
        title=str(raw.get("title") or f"movie {movie_id}"),
        tmdb_id=positive_int(raw.get("tmdbId")),
        imdb_id=blank_to_none(raw.get("imdbId")),
        path=blank_to_none(raw.get("path") or raw.get("folderPath")),
    )


class RadarrClient(ApiKeyClient):
    service = "radarr"

    def movies(self) -> list[dict[str, Any]]:
        """`/api/v3/movie` as Radarr answers it; `parse_movie` reads each entry."""
        data = self.get_json("/api/v3/movie")
        if not isinstance(data, list):
            raise PermanentServiceError(self.service, "/api/v3/movie did not answer a list")
        return data

    def check(self) -> str:
        """Raise ServiceError unless Radarr answers with this key; else describe it in one line."""
        return describe_status({"appName": "Radarr", **self.get_json("/api/v3/system/status")}, self.base_url)
