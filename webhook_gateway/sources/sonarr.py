"""Sonarr v4 webhooks (`eventType` in PascalCase, native JSON types, null fields left out).

`Download` comes in three shapes, all asking for an incremental sync of Plex's show sections and a
Sonarr sync of the one series:
- a new import (`isUpgrade: false`) and an upgrade (`isUpgrade: true`), both with `episodeFile`;
- "On Import Complete" (Sonarr 4.0.6+): `episodeFiles[]` and no `isUpgrade`.
All three keep event type "Download"; the note tells them apart ("new file", "upgrade", "import
complete"). The seed guide's `Upgrade` event type is handled as a Download upgrade (event type "Upgrade").

`Test` is a test. Every other event is ignored, Rename, EpisodeFileDelete and SeriesDelete included:
the incremental library sync reads what Plex added or updated, and Plex only sees a rename or a
deletion after its own scan, which we do not trigger; deletions reach us through the scheduled full
sync and its deletion guard.

See `_common` for the status codes of bad input; a Download without a `series` object is a 422.
"""

from __future__ import annotations

from typing import Any

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, ArrItem
from smartplex_sync.requests import ParsedDelivery, PlexLibrarySync, SonarrSync, SyncRequest

from ._common import (
    event_name,
    nonzero,
    optional_bool,
    optional_int,
    optional_object,
    optional_str,
    require_object,
    required_int,
)

DOWNLOAD_EVENTS = frozenset({"Download", "Upgrade"})


def parse(payload: Any) -> ParsedDelivery:
    delivery = require_object(payload)
    event = event_name(delivery, "eventType")
    if event == "Test":
        return ParsedDelivery(event, action=Action.TEST)
    if event not in DOWNLOAD_EVENTS:
        return ParsedDelivery(event, action=Action.IGNORED)
    series = _read_series(delivery, event)
    requests = (
        # The file is imported; Plex has yet to scan it.
        SyncRequest(PlexLibrarySync(section_types=["show"]), wait_for_plex_scan=True),
        SyncRequest(SonarrSync(series=[series])),
    )
    return ParsedDelivery(event, requests, note=_download_kind(delivery, event))


def _read_series(delivery: dict[str, Any], event: str) -> ArrItem:
    series = optional_object(delivery, "series", event)
    if series is None:
        raise PayloadError(f"{event} without a series object", status_code=422, event_type=event)
    series_id = required_int(series, "id", event, where="series.")
    return ArrItem(
        service="sonarr",
        arr_id=series_id,
        title=optional_str(series, "title", event, where="series.") or f"series {series_id}",
        tvdb_id=nonzero(optional_int(series, "tvdbId", event, where="series.")),
        tmdb_id=nonzero(optional_int(series, "tmdbId", event, where="series.")),
        imdb_id=optional_str(series, "imdbId", event, where="series."),
        path=optional_str(series, "path", event, where="series."),
    )


def _download_kind(delivery: dict[str, Any], event: str) -> str:
    if event == "Upgrade" or optional_bool(delivery, "isUpgrade", event):
        return "upgrade"
    if "episodeFiles" in delivery and "episodeFile" not in delivery:
        return "import complete"
    return "new file"
