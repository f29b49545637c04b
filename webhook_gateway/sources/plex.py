"""Plex Media Server webhooks: the JSON of the multipart `payload` part.

- `library.new` syncs the library section the item was added to, by `Metadata.librarySectionID`
  (never by section title, which users rename). Without a section but with a `ratingKey` (the seed
  guide's curl example) it syncs that one item. Streaming items from `tv.plex.provider.vod` and payloads
  without `Metadata`, items of music or photo libraries (`librarySectionType` artist / photo), and a
  `ratingKey` that is not decimal digits (it would become part of a Plex API path) are ignored with a note.
- `media.scrobble` (watched past 90%) asks for a Tautulli sync of the last 7 days (the default window): Tautulli, not Plex,
  keeps the watch history.
- Every other event (playback, ratings, on deck, admin.*, device.new, playback.started) is ignored.
  Nothing else is read, so a `rating` sent as a string, a missing `Player` or `Metadata` never fails.
- `Server.uuid` (the machineIdentifier) names the Plex server a delivery belongs to: the gateway syncs
  that server of the user whose secret the delivery carries, and no other.

See `_common` for the status codes of bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from smartplex_sync.models import Action, Deployment, Source
from smartplex_sync.requests import ParsedDelivery, PlexScope, SyncRequest, TautulliScope

from ._common import event_name, is_plex_key, optional_int, optional_object, optional_str, require_object
from ._source import FORM, JSON, MULTIPART, Form, WebhookSource

STREAMING_SERVER = "tv.plex.provider.vod"
SYNCED_SECTION_TYPES = ("movie", "show")


@dataclass(frozen=True)
class _NewItem:
    """What `library.new` needs: the item's section, else its ratingKey, and the server it came from."""

    section_id: int | None
    section_type: str | None
    rating_key: str | None
    server_uuid: str | None


def parse(payload: Any) -> ParsedDelivery:
    delivery = require_object(
        payload, empty_body_hint=": Plex sends its JSON in the multipart 'payload' part"
    )
    event = event_name(delivery, "event")
    server = optional_object(delivery, "Server", event) or {}
    hint = optional_str(server, "uuid", event, where="Server.")
    if event == "library.new":
        return replace(_library_new(_read_new_item(delivery, event), event), server_hint=hint)
    if event == "media.scrobble":
        return ParsedDelivery(event, (SyncRequest(TautulliScope()),), server_hint=hint)
    return ParsedDelivery(event, action=Action.IGNORED, server_hint=hint)


def _read_new_item(delivery: dict[str, Any], event: str) -> _NewItem:
    metadata = optional_object(delivery, "Metadata", event) or {}
    server = optional_object(delivery, "Server", event) or {}
    return _NewItem(
        section_id=optional_int(metadata, "librarySectionID", event, where="Metadata."),
        section_type=optional_str(metadata, "librarySectionType", event, where="Metadata."),
        rating_key=optional_str(metadata, "ratingKey", event, where="Metadata."),
        server_uuid=optional_str(server, "uuid", event, where="Server."),
    )


def _library_new(item: _NewItem, event: str) -> ParsedDelivery:
    if item.section_type and item.section_type not in SYNCED_SECTION_TYPES:
        note = f"librarySectionType {item.section_type}: only movie and show libraries are synced"
        return ParsedDelivery(event, action=Action.IGNORED, note=note)
    if item.section_id is None and item.rating_key and item.server_uuid != STREAMING_SERVER:
        # No section (the seed guide's curl example): sync just that item; the flow finds its section.
        if not is_plex_key(item.rating_key):  # it would become part of a Plex API path
            note = f"Metadata.ratingKey {item.rating_key[:40]!r} is not a library item's key: nothing to sync"
            return ParsedDelivery(event, action=Action.IGNORED, note=note)
        return ParsedDelivery(event, (SyncRequest(PlexScope(rating_keys=[item.rating_key])),))
    if item.section_id is None:
        origin = f" (server {item.server_uuid})" if item.server_uuid else ""
        note = f"no Metadata.librarySectionID{origin}: not a library item, nothing to sync"
        return ParsedDelivery(event, action=Action.IGNORED, note=note)
    return ParsedDelivery(event, (SyncRequest(PlexScope(section_ids=[item.section_id])),))


SOURCE = WebhookSource(
    service=Source.PLEX,
    parse=parse,
    token_forms=(Form.QUERY,),  # Plex's webhook settings take a URL and nothing else
    content_types=(MULTIPART, FORM, JSON),
    payload_field="payload",
    feeds=frozenset({Deployment.PLEX_LIBRARY_SYNC, Deployment.TAUTULLI_SYNC}),
    description="multipart/form-data with a `payload` JSON part (and an optional `thumb` JPEG), as Plex "
    "sends it.",
    example={
        "event": "library.new",
        "Server": {"title": "Basement NAS", "uuid": "8c5f2d8a41e7b93f0e6a2d9c7b1f40a3e5d6c7b8"},
        "Metadata": {
            "librarySectionType": "movie",
            "ratingKey": "48210",
            "type": "movie",
            "title": "The Grand Budapest Hotel",
            "librarySectionID": 1,
        },
    },
)
