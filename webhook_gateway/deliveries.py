"""Interpreting and recording a delivery, and replaying a recorded one: the one code path the routes and the
command line (`smartplex-sync webhooks replay`) share. Synchronous; the routes run it in a thread."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, Source
from smartplex_sync.requests import ParsedDelivery
from smartplex_sync.store import webhooks
from webhook_gateway import sources

log = logging.getLogger(__name__)


def interpret(source: Source, payload: Any) -> tuple[ParsedDelivery | None, PayloadError | None]:
    """The source's parser, guarded: a parser bug is a 422 (the row is kept; fix, then replay), not a 5xx."""
    try:
        return sources.parse(source, payload), None
    except PayloadError as exc:
        return None, exc
    except Exception:
        log.exception("%s parser failed", source.value)
        return None, PayloadError("the payload could not be interpreted", 422)


def record(
    engine: Engine,
    source: Source,
    payload: Any,
    parsed: ParsedDelivery | None,
    error: PayloadError | None,
    scan_grace: timedelta,
) -> int:
    """Commit the delivery's webhook_log row (accepted with its sync requests queued, or rejected) and
    return its id. `scan_grace`: SMARTPLEX_PLEX_SCAN_GRACE_SECONDS, for requests that wait for Plex's scan."""
    if parsed is not None:
        fields: dict[str, Any] = {
            "event_type": parsed.event_type,
            "action": parsed.action_label,
            "requests": parsed.requests,
            "scan_grace": scan_grace,
        }
    else:
        assert error is not None
        fields = {
            "event_type": error.event_type,
            "action": Action.REJECTED.value,
            "http_status": error.status_code,
            "error_message": error.message,
        }
    return webhooks.record(engine, source=source.value, payload=payload, **fields)


@dataclass(frozen=True)
class Replayed:
    original_id: int
    row_id: int  # the new delivery
    source: Source
    parsed: ParsedDelivery

    @property
    def note(self) -> str:
        return f"replay of webhook {self.original_id}" + (f"; {self.parsed.note}" if self.parsed.note else "")


def replay(engine: Engine, webhook_id: int, scan_grace: timedelta) -> Replayed:
    """Parse a stored delivery again with today's parsers and record the result as a new delivery, which a
    gateway's dispatcher then turns into flow runs (within SMARTPLEX_DISPATCH_POLL_SECONDS, or at once
    when the gateway itself replays it).

    Raises PayloadError: 404 no such row, 409 nothing readable was kept (a 401 row keeps no body, an
    unparseable one only `{"raw": …}`), or today's parser's 4xx (and then no row is recorded).
    """
    original = webhooks.get(engine, webhook_id)
    if original is None:
        raise PayloadError(f"no webhook {webhook_id}", 404)
    payload = original["payload"]
    if payload is None or (isinstance(payload, dict) and set(payload) == {"raw"}):
        raise PayloadError(f"webhook {webhook_id} has no readable payload to replay", 409)
    source = Source(original["source"])
    parsed, error = interpret(source, payload)
    if error is not None:
        raise error
    assert parsed is not None
    return Replayed(webhook_id, record(engine, source, payload, parsed, None, scan_grace), source, parsed)
