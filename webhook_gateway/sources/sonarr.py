"""Sonarr v4 webhooks (`eventType` in PascalCase, native JSON types, null fields left out).

`Download` comes in three shapes, all asking for an incremental sync of Plex's show sections and a
Sonarr sync of the one series:
- a new import (`isUpgrade: false`) and an upgrade (`isUpgrade: true`), both with `episodeFile`;
- "On Import Complete" (Sonarr 4.0.6+): `episodeFiles[]` and no `isUpgrade`.
All three keep event type "Download"; the note tells them apart ("new file", "upgrade", "import
complete"). The seed guide's `Upgrade` event type is handled as a Download upgrade (event type "Upgrade").
The library sync names what was imported (`imported`: the series and its episodes' numbers), so that a
delete of the same episodes earlier in the same merged run is dropped (a delete, then a download: an
upgrade, nothing to remove).

`SeriesDelete` (with `deletedFiles`) and `EpisodeFileDelete` ask for a targeted check of the series or of
the episodes of the file (`removal_checks`): after Plex's scan, the rows Plex no longer has are removed.
A `SeriesDelete` that kept the files and an `EpisodeFileDelete` with `deleteReason: upgrade` ("On Episode
File Delete For Upgrade": a better file replaces it) remove nothing and are ignored, as is an
`EpisodeFileDelete` that names no episode (the next full sync decides).

`Test` is a test. Every other event is ignored, Rename included: Plex sees a rename only after its own
scan, and the incremental sync picks up the item then.

See `_common` for the status codes of bad input; a Download or a delete without a `series` object is a 422.
"""

from __future__ import annotations

from typing import Any

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, ArrItem, Deployment, Source
from smartplex_sync.requests import (
    ParsedDelivery,
    PlexScope,
    RemovalCheck,
    SonarrScope,
    SyncRequest,
)

from ._common import (
    event_name,
    nonzero,
    optional_bool,
    optional_int,
    optional_object,
    optional_objects,
    optional_str,
    require_object,
    required_int,
)
from ._source import JSON, Form, WebhookSource

DOWNLOAD_EVENTS = frozenset({"Download", "Upgrade"})


def parse(payload: Any) -> ParsedDelivery:
    delivery = require_object(payload)
    event = event_name(delivery, "eventType")
    if event == "Test":
        return ParsedDelivery(event, action=Action.TEST)
    if event == "SeriesDelete":
        return _series_delete(delivery, event)
    if event == "EpisodeFileDelete":
        return _episode_file_delete(delivery, event)
    if event not in DOWNLOAD_EVENTS:
        return ParsedDelivery(event, action=Action.IGNORED)
    series = _read_series(delivery, event)
    imported = _target(series, _read_episodes(delivery, event))
    requests = (
        # The file is imported; Plex has yet to scan it.
        SyncRequest(PlexScope(section_types=["show"], imported=[imported]), wait_for_plex_scan=True),
        SyncRequest(SonarrScope(series=[series])),
    )
    return ParsedDelivery(event, requests, note=_download_kind(delivery, event))


def _series_delete(delivery: dict[str, Any], event: str) -> ParsedDelivery:
    series = _read_series(delivery, event)
    if optional_bool(delivery, "deletedFiles", event) is False:
        return ParsedDelivery(event, action=Action.IGNORED, note="files kept: Plex keeps the series")
    return _check(event, _target(series, ()), "series deleted")


def _episode_file_delete(delivery: dict[str, Any], event: str) -> ParsedDelivery:
    series = _read_series(delivery, event)
    if optional_str(delivery, "deleteReason", event) == "upgrade":
        return ParsedDelivery(event, action=Action.IGNORED, note="upgrade: a new file replaces it")
    episodes = _read_episodes(delivery, event)
    if not episodes:
        return ParsedDelivery(
            event, action=Action.IGNORED, note="no episodes named: the next full sync decides"
        )
    return _check(event, _target(series, episodes), "episode file deleted")


def _check(event: str, check: RemovalCheck, note: str) -> ParsedDelivery:
    # Plex notices a deleted file only when it scans, like an added one.
    request = SyncRequest(PlexScope(removal_checks=[check]), wait_for_plex_scan=True)
    return ParsedDelivery(event, (request,), note=note)


def _target(series: ArrItem, episodes: tuple[tuple[int, int], ...]) -> RemovalCheck:
    """The series, or these episodes of it, as a removal check names them."""
    return RemovalCheck(
        service="sonarr",
        kind="episode_file" if episodes else "series",
        arr_id=series.arr_id,
        tmdb_id=series.tmdb_id,
        tvdb_id=series.tvdb_id,
        imdb_id=series.imdb_id,
        episodes=episodes,
    )


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


def _read_episodes(delivery: dict[str, Any], event: str) -> tuple[tuple[int, int], ...]:
    """(season, episode) numbers of `episodes[]`, sorted, each once."""
    numbers = {
        (
            required_int(episode, "seasonNumber", event, where="episodes[]."),
            required_int(episode, "episodeNumber", event, where="episodes[]."),
        )
        for episode in optional_objects(delivery, "episodes", event)
    }
    return tuple(sorted(numbers))


def _download_kind(delivery: dict[str, Any], event: str) -> str:
    if event == "Upgrade" or optional_bool(delivery, "isUpgrade", event):
        return "upgrade"
    if "episodeFiles" in delivery and "episodeFile" not in delivery:
        return "import complete"
    return "new file"


SOURCE = WebhookSource(
    service=Source.SONARR,
    parse=parse,
    token_forms=(Form.BASIC, Form.BEARER, Form.HEADER),  # its Username/Password, or its Headers
    content_types=(JSON,),
    feeds=frozenset({Deployment.PLEX_LIBRARY_SYNC, Deployment.SONARR_SYNC}),
    description="Sonarr v4 webhook JSON (`eventType`, `series`, `episodes`, `isUpgrade` ...).",
    example={
        "series": {
            "id": 1,
            "title": "Test Title",
            "path": "C:\\testpath",
            "tvdbId": 1234,
            "type": "standard",
        },
        "episodes": [{"id": 123, "episodeNumber": 1, "seasonNumber": 1, "title": "Test title"}],
        "eventType": "Test",
        "instanceName": "Sonarr",
        "applicationUrl": "",
    },
)
