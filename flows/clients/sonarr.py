"""Sonarr v3 API (also served by Sonarr v4): the series list and the system status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows.clients._arr import ApiKeyClient, positive_int
from smartplex_sync.convert import blank_to_none
from smartplex_sync.errors import PermanentServiceError
from smartplex_sync.models import ArrItem


def parse_series(raw: Mapping[str, Any]) -> ArrItem:
    """One `/api/v3/series` entry (or a webhook's `series`) as an ArrItem; Sonarr writes 0 for unknown ids."""
    series_id = positive_int(raw.get("id"))
    if series_id is None:
        raise PermanentServiceError("sonarr", f"a series without an id: {dict(raw)!r:.200}")
    return ArrItem(
        service="sonarr",
        arr_id=series_id,
        title=str(raw.get("title") or f"series {series_id}"),
        tvdb_id=positive_int(raw.get("tvdbId")),
        tmdb_id=positive_int(raw.get("tmdbId")),
        imdb_id=blank_to_none(raw.get("imdbId")),
        path=blank_to_none(raw.get("path")),
    )


def describe_status(status: Mapping[str, Any], base_url: str) -> str:
    """One line for `doctor` from `/api/v3/system/status`."""
    app = status.get("appName") or "Sonarr"
    instance = status.get("instanceName")
    name = app if not instance or instance == app else f"{app} '{instance}'"
    return f"{name} {status.get('version', '?')} at {base_url}: API key accepted"


class SonarrClient(ApiKeyClient):
    service = "sonarr"

    def series(self) -> list[dict[str, Any]]:
        """`/api/v3/series` as Sonarr answers it; `parse_series` reads each entry."""
        data = self.get_json("/api/v3/series")
        if not isinstance(data, list):
            raise PermanentServiceError(self.service, "/api/v3/series did not answer a list")
        return data

    def check(self) -> str:
        """Raise ServiceError unless Sonarr answers with this key; else describe it in one line."""
        return describe_status(self.get_json("/api/v3/system/status"), self.base_url)
