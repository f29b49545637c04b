"""Interpreting, attributing and recording a delivery, and replaying a recorded one: the one code path the
routes and the command line (`smartplex-sync webhooks replay`) share. Synchronous; the routes run it in a
thread."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, Source
from smartplex_sync.requests import ParsedDelivery, ScopedRequest
from smartplex_sync.store import webhooks
from smartplex_sync.store.accounts import server_facts
from webhook_gateway import sources
from webhook_gateway.attribution import Attribution, Sender, attribute

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


@dataclass(frozen=True)
class Recorded:
    """A committed delivery: its id, what it asks for (on which servers), or why it was refused."""

    row_id: uuid.UUID
    requests: tuple[ScopedRequest, ...] = ()
    error: PayloadError | None = None


def _attribute(engine: Engine, source: Source, parsed: ParsedDelivery, sender: Sender) -> Attribution:
    with engine.connect() as conn:
        facts = server_facts(conn, sender.user_id)
    return attribute(source, sender, facts, parsed.server_hint)


def record(
    engine: Engine,
    source: Source,
    payload: Any,
    parsed: ParsedDelivery | None,
    error: PayloadError | None,
    sender: Sender | None,
    scan_grace: timedelta,
) -> Recorded:
    """Attribute the delivery to its sender's servers and commit its webhook_log row (accepted with its
    sync requests queued on those servers, or rejected: bad input, or no server it could be about).
    `scan_grace`: SMARTPLEX_PLEX_SCAN_GRACE_SECONDS, for requests that wait for Plex's scan."""
    user_id = sender.user_id if sender else None
    if parsed is not None and error is None and sender is not None:
        attribution = None
        if parsed.requests or parsed.server_hint:
            attribution = _attribute(engine, source, parsed, sender)
            user_id = attribution.user_id
        if attribution is None or attribution.problem is None or not parsed.requests:
            requests = tuple(r.on(attribution.server_ids) for r in parsed.requests) if attribution else ()
            row_id = webhooks.record(
                engine,
                source=source.value,
                event_type=parsed.event_type,
                payload=payload,
                action=parsed.action_label,
                requests=requests,
                scan_grace=scan_grace,
                user_id=user_id,
                server_id=attribution.server_id if attribution else None,
            )
            return Recorded(row_id, requests)
        error = PayloadError(attribution.problem, 422, parsed.event_type, code="unattributed")
    assert error is not None
    row_id = webhooks.record(
        engine,
        source=source.value,
        event_type=error.event_type,
        payload=payload,
        action=Action.REJECTED.value,
        http_status=error.status_code,
        error_message=error.message,
        user_id=user_id,
    )
    return Recorded(row_id, error=error)


@dataclass(frozen=True)
class Replayed:
    original_id: uuid.UUID
    recorded: Recorded  # the new delivery
    source: Source
    parsed: ParsedDelivery

    @property
    def note(self) -> str:
        return f"replay of webhook {self.original_id}" + (f"; {self.parsed.note}" if self.parsed.note else "")


def replay(engine: Engine, webhook_id: uuid.UUID, scan_grace: timedelta) -> Replayed:
    """Parse a stored delivery again with today's parsers, attribute it again (to the user it was
    attributed to, as their servers are now), and record the result as a new delivery, which a gateway's
    dispatcher then turns into flow runs (within SMARTPLEX_DISPATCH_POLL_SECONDS, or at once when the
    gateway itself replays it).

    Raises PayloadError: 404 no such row, 409 nothing readable was kept (a 401 row keeps no body, an
    unparseable one only `{"raw": …}`), or today's parser's 4xx (and then no row is recorded). A delivery
    that still cannot be attributed is recorded rejected: `recorded.error` says why.
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
    sender = Sender(original["user_id"], "replayed delivery")
    return Replayed(
        webhook_id, record(engine, source, payload, parsed, None, sender, scan_grace), source, parsed
    )
