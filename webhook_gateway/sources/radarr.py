"""Radarr v5 webhooks (`eventType` in PascalCase, native JSON types, null fields left out).

`Download` (a new import or, with `isUpgrade: true`, an upgrade) asks for an incremental sync of
Plex's movie sections and a Radarr sync of the one movie. Both keep event type "Download"; the note
says "new file" or "upgrade". The seed guide's `Upgrade` event type is handled as a Download upgrade
(event type "Upgrade"). The library sync names the imported movie (`imported`), so that a delete of
it earlier in the same merged run is dropped (a delete, then a download: an upgrade).

`MovieDelete` (with `deletedFiles`) and `MovieFileDelete` ask for a targeted check of the movie
(`removal_checks`): after Plex's scan, its row goes if Plex no longer has it. A `MovieDelete` that kept
the files and a `MovieFileDelete` with `deleteReason: upgrade` remove nothing and are ignored.

`Test` is a test. Every other event is ignored, Rename included (see `sonarr`'s docstring).

See `_common` for the status codes of bad input; a Download or a delete without a `movie` object is a 422.
"""

from __future__ import annotations

from typing import Any

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, ArrItem, Deployment, Source
from smartplex_sync.requests import (
    ParsedDelivery,
    PlexScope,
    RadarrScope,
    RemovalCheck,
    SyncRequest,
)

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
from ._source import JSON, Form, WebhookSource

DOWNLOAD_EVENTS = frozenset({"Download", "Upgrade"})
DELETE_EVENTS = frozenset({"MovieDelete", "MovieFileDelete"})


def parse(payload: Any) -> ParsedDelivery:
    delivery = require_object(payload)
    event = event_name(delivery, "eventType")
    if event == "Test":
        return ParsedDelivery(event, action=Action.TEST)
    if event in DELETE_EVENTS:
        return _delete(delivery, event)
    if event not in DOWNLOAD_EVENTS:
        return ParsedDelivery(event, action=Action.IGNORED)
    movie = _read_movie(delivery, event)
    requests = (
        # The file is imported; Plex has yet to scan it.
        SyncRequest(PlexScope(section_types=["movie"], imported=[_target(movie)]), wait_for_plex_scan=True),
        SyncRequest(RadarrScope(movies=[movie])),
    )
    upgrade = event == "Upgrade" or optional_bool(delivery, "isUpgrade", event)
    return ParsedDelivery(event, requests, note="upgrade" if upgrade else "new file")


def _delete(delivery: dict[str, Any], event: str) -> ParsedDelivery:
    movie = _read_movie(delivery, event)
    if event == "MovieDelete" and optional_bool(delivery, "deletedFiles", event) is False:
        return ParsedDelivery(event, action=Action.IGNORED, note="files kept: Plex keeps the movie")
    if optional_str(delivery, "deleteReason", event) == "upgrade":
        return ParsedDelivery(event, action=Action.IGNORED, note="upgrade: a new file replaces it")
    # Plex notices a deleted file only when it scans, like an added one.
    request = SyncRequest(PlexScope(removal_checks=[_target(movie)]), wait_for_plex_scan=True)
    return ParsedDelivery(
        event, (request,), note="movie deleted" if event == "MovieDelete" else "file deleted"
    )


def _target(movie: ArrItem) -> RemovalCheck:
    return RemovalCheck(
        service="radarr", kind="movie", arr_id=movie.arr_id, tmdb_id=movie.tmdb_id, imdb_id=movie.imdb_id
    )


def _read_movie(delivery: dict[str, Any], event: str) -> ArrItem:
    movie = optional_object(delivery, "movie", event)
    if movie is None:
        raise PayloadError(f"{event} without a movie object", status_code=422, event_type=event)
    movie_id = required_int(movie, "id", event, where="movie.")
    return ArrItem(
        service="radarr",
        arr_id=movie_id,
        title=optional_str(movie, "title", event, where="movie.") or f"movie {movie_id}",
        tmdb_id=nonzero(optional_int(movie, "tmdbId", event, where="movie.")),
        imdb_id=optional_str(movie, "imdbId", event, where="movie."),
        path=optional_str(movie, "folderPath", event, where="movie."),
    )


SOURCE = WebhookSource(
    service=Source.RADARR,
    parse=parse,
    token_forms=(Form.BASIC, Form.BEARER, Form.HEADER),  # as Sonarr
    content_types=(JSON,),
    feeds=frozenset({Deployment.PLEX_LIBRARY_SYNC, Deployment.RADARR_SYNC}),
    description="Radarr v5 webhook JSON (`eventType`, `movie`, `isUpgrade` ...).",
    example={
        "movie": {"id": 1, "title": "Test Title", "year": 1970, "folderPath": "C:\\testpath", "tmdbId": 0},
        "remoteMovie": {"tmdbId": 1234, "imdbId": "5678", "title": "Test title", "year": 1970},
        "eventType": "Test",
        "instanceName": "Radarr",
        "applicationUrl": "",
    },
)
