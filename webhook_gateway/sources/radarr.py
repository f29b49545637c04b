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

from dataclasses import asdict, dataclass
from typing import Any

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, Deployment, ParsedDelivery, SyncRequest

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


@dataclass(frozen=True)
class _Movie:
    id: int
    title: str
    tmdb_id: int | None
    imdb_id: str | None


def parse(payload: Any) -> ParsedDelivery:
    delivery = require_object(payload)
    event = event_name(delivery, "eventType")
    if event == "Test":
        return ParsedDelivery(event, action=Action.TEST)
    if event not in DOWNLOAD_EVENTS:
        return ParsedDelivery(event, action=Action.IGNORED)
    movie = _read_movie(delivery, event)
    requests = (
        SyncRequest(
            Deployment.PLEX_LIBRARY_SYNC,
            {"section_type": "movie", "mode": "incremental"},
            wait_for_plex_scan=True,  # the file is imported; Plex has yet to scan it
        ),
        SyncRequest(Deployment.RADARR_SYNC, {"movies": [asdict(movie)]}),
    )
    upgrade = event == "Upgrade" or optional_bool(delivery, "isUpgrade", event)
    return ParsedDelivery(event, requests, note="upgrade" if upgrade else "new file")


def _read_movie(delivery: dict[str, Any], event: str) -> _Movie:
    movie = optional_object(delivery, "movie", event)
    if movie is None:
        raise PayloadError(f"{event} without a movie object", status_code=422, event_type=event)
    return _Movie(
        id=required_int(movie, "id", event, where="movie."),
        title=optional_str(movie, "title", event, where="movie.") or "",
        tmdb_id=nonzero(optional_int(movie, "tmdbId", event, where="movie.")),
        imdb_id=optional_str(movie, "imdbId", event, where="movie."),
    )
