"""Radarr v5 webhooks (`eventType` in PascalCase, native JSON types, null fields left out).

`Download` (a new import or, with `isUpgrade: true`, an upgrade) asks for an incremental sync of
Plex's movie sections and a Radarr sync of the one movie. Both keep event type "Download"; the note
says "new file" or "upgrade". The seed guide's `Upgrade` event type is handled as a Download upgrade
(event type "Upgrade").

`Test` is a test. Every other event is ignored, Rename, MovieFileDelete and MovieDelete included,
for the reason given in `sonarr`'s docstring.

See `_common` for the status codes of bad input; a Download without a `movie` object is a 422.
"""

from __future__ import annotations

from typing import Any

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, ArrItem
from smartplex_sync.requests import ParsedDelivery, PlexLibrarySync, RadarrSync, SyncRequest

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
    movie = _read_movie(delivery, event)
    requests = (
        # The file is imported; Plex has yet to scan it.
        SyncRequest(PlexLibrarySync(section_types=["movie"]), wait_for_plex_scan=True),
        SyncRequest(RadarrSync(movies=[movie])),
    )
    upgrade = event == "Upgrade" or optional_bool(delivery, "isUpgrade", event)
    return ParsedDelivery(event, requests, note="upgrade" if upgrade else "new file")


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
