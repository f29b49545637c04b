"""Tautulli's Webhook agent: whatever JSON the user typed in the trigger's "JSON Data" box.

Tautulli has no fixed schema. We read two fields, both strings after Tautulli's `{param}` substitution:
- the event: `event` (e.g. `"playback.stop"`, or `"{action}"` rendered as `"stop"`), else `action`;
- `rating_key` (`"{rating_key}"`): the Plex item whose watch history changed.

`stop`/`playback.stop` and `watched`/`playback.watched` sync that one item's history. Without a usable
rating key (missing, "", the placeholder left as is, or not decimal digits) they fall back to the last
7 days, with a note.
`server_machine_id` (the documented template has it) names the Plex server the plays belong to: only
that server of the sender's is synced. Without it, every server a Tautulli of the sender's serves is.
`test`, or an event still reading like a `{placeholder}` (Tautulli's Test tab sends the template
without substitution), is a test. Other actions (play, pause, created ...) are ignored.

An empty body (`None`) is what Tautulli sends when the JSON Data box is empty or invalid: 400.
See `_common` for the other status codes.
"""

from __future__ import annotations

import re
from typing import Any

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, Deployment, Source
from smartplex_sync.requests import DEFAULT_HISTORY_DAYS, ParsedDelivery, SyncRequest, TautulliScope

from ._common import UNKNOWN_EVENT, event_name, is_plex_key, json_type, optional_str, require_object
from ._source import FORM, JSON, Form, WebhookSource

HISTORY_EVENTS = frozenset({"stop", "playback.stop", "watched", "playback.watched"})

_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def parse(payload: Any) -> ParsedDelivery:
    delivery = require_object(payload, empty_body_hint=": check the JSON Data template")
    event = _event(delivery)
    if event == "test":
        return ParsedDelivery(event, action=Action.TEST)
    if _PLACEHOLDER.search(event):
        note = f"event {event} was not substituted: Tautulli's Test tab sends the template as typed"
        return ParsedDelivery(event, action=Action.TEST, note=note)
    if event not in HISTORY_EVENTS:
        return ParsedDelivery(event, action=Action.IGNORED)
    rating_key = _rating_key(delivery, event)
    hint = _machine_id(delivery, event)
    if rating_key is None:
        note = f"no usable rating_key: asked for the last {DEFAULT_HISTORY_DAYS} days instead"
        return ParsedDelivery(event, (SyncRequest(TautulliScope()),), note=note, server_hint=hint)
    return ParsedDelivery(event, (SyncRequest(TautulliScope(rating_keys=[rating_key])),), server_hint=hint)


def _machine_id(delivery: dict[str, Any], event: str) -> str | None:
    """`server_machine_id` as sent; None when missing, empty or the placeholder left as is."""
    value = optional_str(delivery, "server_machine_id", event)
    return None if value is None or _PLACEHOLDER.search(value) else value.strip() or None


def _event(delivery: dict[str, Any]) -> str:
    event = event_name(delivery, "event")
    return event_name(delivery, "action") if event == UNKNOWN_EVENT else event


def _rating_key(delivery: dict[str, Any], event: str) -> str | None:
    """The rating key as text; None when it is missing, empty, an unsubstituted `{rating_key}` or not digits."""
    value = delivery.get("rating_key")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(
            f"rating_key must be a string, got {json_type(value)}", status_code=422, event_type=event
        )
    text = str(value).strip()
    if not is_plex_key(text):  # "", an unsubstituted "{rating_key}", or not a Plex key at all
        return None
    return text


SOURCE = WebhookSource(
    service=Source.TAUTULLI,
    parse=parse,
    token_forms=(Form.BEARER, Form.HEADER),  # its JSON Headers box
    content_types=(JSON, FORM),
    feeds=frozenset({Deployment.TAUTULLI_SYNC}),
    description="The JSON of Tautulli's Webhook agent (docs/webhooks.md has the template to paste).",
    example={
        "event": "watched",
        "rating_key": "48210",
        "parent_rating_key": "",
        "grandparent_rating_key": "",
        "media_type": "movie",
        "title": "The Grand Budapest Hotel",
        "user": "morgan",
        "user_id": "1",
        "progress_percent": "96",
        "server_machine_id": "8c5f2d8a41e7b93f0e6a2d9c7b1f40a3e5d6c7b8",
        "unixtime": "1717171800",
    },
)
