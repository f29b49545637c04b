"""Readers shared by the source parsers: each one checks the JSON type of one field and says what is wrong.

Status codes, the same for every source:
- 400 when there is nothing to read (an empty body, which the gateway passes as `None`);
- 422 when the JSON is well formed but not what the service sends: not an object, or a field we need
  with a type we cannot use (a section id that is not a number, a `series` that is not an object ...),
  an integer outside 64 bits (the database's BIGINT), an event name over MAX_EVENT_LENGTH or another
  string over MAX_TEXT_LENGTH characters (they become flow run parameters, shown in Prefect's UI).

A missing or empty event key is not an error: the delivery is kept as event type "unknown" and ignored.
"""

from __future__ import annotations

import re
from typing import Any

from smartplex_sync.errors import PayloadError

UNKNOWN_EVENT = "unknown"

Payload = dict[str, Any]

MAX_EVENT_LENGTH = 100  # the longest real one is Overseerr's MEDIA_AUTO_APPROVED
MAX_TEXT_LENGTH = 1000
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_BIGINT = range(-(2**63), 2**63)
_PLEX_KEY = re.compile(r"[0-9]{1,18}")


def is_plex_key(text: str) -> bool:
    """A Plex ratingKey: decimal digits. Anything else must not reach a URL path of Plex's API."""
    return _PLEX_KEY.fullmatch(text) is not None


def require_object(payload: Any, *, empty_body_hint: str = "") -> Payload:
    """The delivery as a JSON object, or a PayloadError naming what came instead."""
    if payload is None:
        raise PayloadError(f"empty body{empty_body_hint}", status_code=400)
    if not isinstance(payload, dict):
        raise PayloadError(f"expected a JSON object, got {json_type(payload)}", status_code=422)
    return payload


def event_name(payload: Payload, key: str) -> str:
    """The event named under `key`; "unknown" when it is missing, null or empty."""
    value = payload.get(key)
    if value is None or value == "":
        return UNKNOWN_EVENT
    if not isinstance(value, str):
        raise PayloadError(f"{key} must be a string, got {json_type(value)}", status_code=422)
    if len(value) > MAX_EVENT_LENGTH:
        raise PayloadError(f"{key} is {len(value)} characters long, not an event name", status_code=422)
    return value


def optional_object(parent: Payload, key: str, event_type: str, *, where: str = "") -> Payload | None:
    """A nested object that may be missing or null."""
    value = parent.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise _wrong_type(where + key, "an object", value, event_type)


def optional_int(parent: Payload, key: str, event_type: str, *, where: str = "") -> int | None:
    """An integer sent as a JSON number or as a numeric string; missing, null and "" give None."""
    value = parent.get(key)
    if value is None:
        return None
    number = _integer(value)
    if number is None and isinstance(value, str) and not value.strip():
        return None
    if number is None:
        raise _wrong_type(where + key, "an integer", value, event_type)
    if number not in _BIGINT:
        raise PayloadError(
            f"{where}{key} is out of range (a 64-bit integer)", status_code=422, event_type=event_type
        )
    return number


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def required_int(parent: Payload, key: str, event_type: str, *, where: str = "") -> int:
    value = optional_int(parent, key, event_type, where=where)
    if value is None:
        raise PayloadError(f"{where}{key} is missing", status_code=422, event_type=event_type)
    return value


def optional_objects(parent: Payload, key: str, event_type: str) -> list[Payload]:
    """A list of objects that may be missing or null (an empty list then)."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise _wrong_type(key, "a list of objects", value, event_type)
    return value


def optional_str(parent: Payload, key: str, event_type: str, *, where: str = "") -> str | None:
    """A string; missing, null and "" (how Overseerr and Sonarr say "none") give None."""
    value = parent.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _wrong_type(where + key, "a string", value, event_type)
    if len(value) > MAX_TEXT_LENGTH:
        raise PayloadError(
            f"{where}{key} is {len(value)} characters long (at most {MAX_TEXT_LENGTH})",
            status_code=422,
            event_type=event_type,
        )
    return value


def optional_bool(parent: Payload, key: str, event_type: str, *, where: str = "") -> bool | None:
    value = parent.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _wrong_type(where + key, "true or false", value, event_type)


def nonzero(value: int | None) -> int | None:
    """Sonarr and Radarr send 0 for an id they do not know."""
    return value or None


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
    return type(value).__name__


def _wrong_type(path: str, expected: str, value: Any, event_type: str) -> PayloadError:
    shown = f" {value!r:.40}" if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    got = json_type(value) + shown
    return PayloadError(f"{path} must be {expected}, got {got}", status_code=422, event_type=event_type)
