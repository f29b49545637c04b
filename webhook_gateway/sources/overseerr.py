"""Overseerr and Jellyseerr webhooks, as rendered from the default JSON template or a custom one.

Every rendered value is a string ("" when missing) and `media`, `request`, `issue` may be `null`.
Custom templates may leave fields out, so a missing, null or "" field reads as None. Only a field we
read with a type we cannot use is a 422: an id (`request.request_id`, `media.tmdbId`, `media.tvdbId`)
that is not numeric, or a name or status that is not a string.

`notification_type` takes the real names (`MEDIA_PENDING`, `MEDIA_AVAILABLE` ...) and the seed guide's
dotted ones (`media.requested` for pending, `media.approved`, `media.available`, `media.declined`,
`media.failed`).
- Request events (pending, approved, auto-approved, declined, failed, available) with a `request`
  carrying a `request_id` ask for an Overseerr sync of that request; without one they are recorded.
- `MEDIA_AVAILABLE` also asks for an incremental sync of Plex's movie or show sections, picked by
  `media.media_type`; with no usable media type the note says why no library sync was asked for.
- `TEST_NOTIFICATION` is a test; issue events are recorded; anything else is ignored.

See `_common` for the status codes of bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smartplex_sync.models import Action, Deployment, OverseerrRequest, Source
from smartplex_sync.requests import OverseerrScope, ParsedDelivery, PlexScope, SectionType, SyncRequest

from ._common import event_name, nonzero, optional_int, optional_object, optional_str, require_object
from ._source import JSON, Form, WebhookSource

TEST_EVENT = "TEST_NOTIFICATION"
ISSUE_EVENTS = frozenset({"ISSUE_CREATED", "ISSUE_COMMENT", "ISSUE_RESOLVED", "ISSUE_REOPENED"})
REQUEST_STATUS_BY_EVENT = {
    "MEDIA_PENDING": "PENDING",
    "MEDIA_APPROVED": "APPROVED",
    "MEDIA_AUTO_APPROVED": "APPROVED",
    "MEDIA_DECLINED": "DECLINED",
    "MEDIA_FAILED": "FAILED",
    "MEDIA_AVAILABLE": "AVAILABLE",
    "media.requested": "PENDING",
    "media.approved": "APPROVED",
    "media.declined": "DECLINED",
    "media.failed": "FAILED",
    "media.available": "AVAILABLE",
}
SECTION_TYPE_BY_MEDIA_TYPE: dict[str, SectionType] = {"movie": "movie", "tv": "show"}


@dataclass(frozen=True)
class _Media:
    media_type: str | None  # "movie", "tv", or None when missing or something else
    tmdb_id: int | None
    tvdb_id: int | None
    status: str | None


@dataclass(frozen=True)
class _Request:
    request_id: int | None
    requested_by: str | None
    requested_by_email: str | None


def parse(payload: Any) -> ParsedDelivery:
    delivery = require_object(payload)
    event = event_name(delivery, "notification_type")
    if event == TEST_EVENT:
        return ParsedDelivery(event, action=Action.TEST)
    if event in ISSUE_EVENTS:
        return ParsedDelivery(event, action=Action.RECORDED)
    status = REQUEST_STATUS_BY_EVENT.get(event)
    if status is None:
        return ParsedDelivery(event, action=Action.IGNORED)
    title = optional_str(delivery, "subject", event)
    return _request_event(event, status, _read_media(delivery, event), _read_request(delivery, event), title)


def _request_event(
    event: str, status: str, media: _Media, request: _Request, title: str | None
) -> ParsedDelivery:
    requests: list[SyncRequest] = []
    notes: list[str] = []
    if status == "AVAILABLE":
        section_type = SECTION_TYPE_BY_MEDIA_TYPE.get(media.media_type or "")
        if section_type is None:
            notes.append("no media.media_type movie or tv: no library sync")
        else:
            requests.append(SyncRequest(PlexScope(section_types=[section_type])))
    if request.request_id is None:
        notes.append("no request.request_id: no request update")
    else:
        entry = OverseerrRequest(
            request_id=request.request_id,
            media_type=media.media_type,
            status=status,
            tmdb_id=media.tmdb_id,
            tvdb_id=media.tvdb_id,
            media_status=media.status,
            requested_by=request.requested_by,
            requested_by_email=request.requested_by_email,
            title=title,
        )
        requests.append(SyncRequest(OverseerrScope(requests=[entry])))
    note = "; ".join(notes) or None
    if not requests:
        return ParsedDelivery(event, action=Action.RECORDED, note=note)
    return ParsedDelivery(event, tuple(requests), note=note)


def _read_media(delivery: dict[str, Any], event: str) -> _Media:
    media = optional_object(delivery, "media", event) or {}
    media_type = optional_str(media, "media_type", event, where="media.")
    return _Media(
        media_type=media_type if media_type in SECTION_TYPE_BY_MEDIA_TYPE else None,
        tmdb_id=nonzero(optional_int(media, "tmdbId", event, where="media.")),
        tvdb_id=nonzero(optional_int(media, "tvdbId", event, where="media.")),
        status=optional_str(media, "status", event, where="media."),
    )


def _read_request(delivery: dict[str, Any], event: str) -> _Request:
    request = optional_object(delivery, "request", event) or {}
    return _Request(
        request_id=optional_int(request, "request_id", event, where="request."),
        requested_by=optional_str(request, "requestedBy_username", event, where="request."),
        requested_by_email=optional_str(request, "requestedBy_email", event, where="request."),
    )


SOURCE = WebhookSource(
    service=Source.OVERSEERR,
    parse=parse,
    token_forms=(Form.BEARER,),  # its Authorization Header box (the bare token is taken too)
    content_types=(JSON,),
    feeds=frozenset({Deployment.PLEX_LIBRARY_SYNC, Deployment.OVERSEERR_SYNC}),
    description="Overseerr / Jellyseerr webhook JSON (`notification_type`, `media`, `request` ...).",
    example={
        "notification_type": "TEST_NOTIFICATION",
        "event": "",
        "subject": "Test Notification",
        "message": "Check check, 1, 2, 3. Are we coming in clear?",
        "image": "",
        "media": None,
        "request": None,
        "extra": [],
    },
)
