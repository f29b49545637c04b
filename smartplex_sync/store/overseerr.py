"""Overseerr / Jellyseerr requests in SmartPlex's `overseerr_requests`, and which of them the library holds.

SmartPlex writes a row when a user requests through SmartPlex (its `/overseerr/request` route: `user_id`
the requester, `overseerr_status` "pending") and reads a user's rows by `user_id`. The sync keeps those
rows in step and adds the requests made in Overseerr itself:
- a request is one row per Overseerr instance (`integration_id`, ours: Overseerr numbers requests per
  instance). A row SmartPlex wrote has no integration yet; it is the request's row when its
  `overseerr_request_id` and `tmdb_id` are the request's, and from then on carries the integration;
- `overseerr_status` in SmartPlex's words: pending, approved, declined, failed, available;
- `user_id` is the SmartPlex user whose email is the requester's (else, for the integration's owner,
  whose `users.overseerr_user_id` is the requester's Overseerr id); never cleared once known;
- `media_title` is what a webhook's `subject` says ("Inception (2010)"); the API does not tell it, so a
  request first seen there is titled as SmartPlex titles one it cannot name ("movie 603");
- a request without a TMDB id cannot be stored (SmartPlex's column is NOT NULL) and is skipped.

The link to `media_items` is computed when read (`requests_in_library`), not stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, update

from smartplex_sync.models import OverseerrRequest
from smartplex_sync.store.tables import integrations, media_items, overseerr_requests, users


def smartplex_status(request: OverseerrRequest) -> str | None:
    """SmartPlex's `overseerr_status` for what Overseerr says; None when it says nothing."""
    if request.status in ("DECLINED", "FAILED", "PENDING"):
        return request.status.lower()
    if "AVAILABLE" in (request.status, request.media_status) or request.status == "COMPLETED":
        return "available"
    if request.status == "APPROVED":
        return "approved"
    return None


@dataclass(frozen=True)
class Stored:
    written: int
    skipped: list[int]  # request ids that could not be stored (no TMDB id, or no media type)


def _requester(conn: Connection, request: OverseerrRequest, owner_id: uuid.UUID | None) -> uuid.UUID | None:
    if request.requested_by_email:
        found = conn.scalar(
            select(users.c.id).where(func.lower(users.c.email) == request.requested_by_email.lower())
        )
        if found is not None:
            return found
    if request.requested_by_id is not None and owner_id is not None:
        return conn.scalar(
            select(users.c.id).where(
                users.c.id == owner_id, users.c.overseerr_user_id == request.requested_by_id
            )
        )
    return None


def _row_of(
    conn: Connection, request: OverseerrRequest, integration_id: uuid.UUID | None, owner_id: uuid.UUID | None
) -> Any:
    """The stored row of `request`: the integration's own, else one SmartPlex wrote (no integration yet).

    A delivery that names no integration (the owner has none configured) also finds the row an
    integration of the same owner stored, so the request is not stored twice."""
    ours = overseerr_requests.c.overseerr_request_id == request.request_id
    adoptable: ColumnElement[bool] = overseerr_requests.c.integration_id.is_(None)
    if request.tmdb_id is not None:
        adoptable = and_(adoptable, overseerr_requests.c.tmdb_id == request.tmdb_id)
    if integration_id is not None:
        belongs = or_(overseerr_requests.c.integration_id == integration_id, adoptable)
    elif owner_id is not None and request.tmdb_id is not None:
        owners = select(integrations.c.id).where(integrations.c.user_id == owner_id)
        belongs = or_(
            adoptable,
            and_(
                overseerr_requests.c.integration_id.in_(owners),
                overseerr_requests.c.tmdb_id == request.tmdb_id,
            ),
        )
    else:
        belongs = adoptable
    return conn.execute(
        select(overseerr_requests.c.id, overseerr_requests.c.user_id, overseerr_requests.c.completed_at)
        .where(ours, belongs)
        .order_by(overseerr_requests.c.integration_id.is_(None))
        .limit(1)
    ).first()


def upsert_requests(
    conn: Connection,
    requests: Iterable[OverseerrRequest],
    synced_at: datetime,
    *,
    integration_id: uuid.UUID | None,
    owner_id: uuid.UUID | None,
) -> Stored:
    """Insert or update each request (see the module docstring)."""
    written, skipped = 0, []
    for request in requests:
        existing = _row_of(conn, request, integration_id, owner_id)
        status = smartplex_status(request)
        known: dict[str, Any] = {
            "overseerr_status": status,
            "status_updated_at": request.updated_at or synced_at,
            "tmdb_id": request.tmdb_id,
            "tvdb_id": request.tvdb_id,
            "media_type": request.media_type if request.media_type in ("movie", "tv") else None,
            "media_title": request.title,
            "overseerr_user_id": request.requested_by_id,
            "seasons": [str(s) for s in request.seasons] if request.seasons is not None else None,
            "requested_at": request.requested_at,
            "user_id": _requester(conn, request, owner_id),
            "integration_id": integration_id,
        }
        values = {key: value for key, value in known.items() if value is not None}
        if existing is not None:
            if status == "available" and existing.completed_at is None:
                values["completed_at"] = request.updated_at or synced_at
            conn.execute(
                update(overseerr_requests).where(overseerr_requests.c.id == existing.id).values(values)
            )
            written += 1
            continue
        if request.tmdb_id is None or values.get("media_type") is None:
            skipped.append(request.request_id)
            continue
        values.setdefault("media_title", f"{values['media_type']} {request.tmdb_id}")
        values.setdefault("requested_at", synced_at)
        if status == "available":
            values["completed_at"] = request.updated_at or synced_at
        conn.execute(
            overseerr_requests.insert().values(
                id=uuid.uuid4(), overseerr_request_id=request.request_id, **values
            )
        )
        written += 1
    return Stored(written, skipped)


def _library_match(server_ids: Collection[uuid.UUID]) -> Any:
    on_servers = media_items.c.server_id.in_(list(server_ids))
    movie = and_(
        overseerr_requests.c.media_type == "movie",
        media_items.c.type == "movie",
        media_items.c.tmdb_id == overseerr_requests.c.tmdb_id,
    )
    show = and_(
        overseerr_requests.c.media_type == "tv",
        media_items.c.type == "show",
        or_(
            media_items.c.tvdb_id == overseerr_requests.c.tvdb_id,
            media_items.c.tmdb_id == overseerr_requests.c.tmdb_id,
        ),
    )
    return and_(on_servers, or_(movie, show))


def requests_in_library(
    conn: Connection,
    request_ids: Collection[int],
    integration_id: uuid.UUID | None,
    server_ids: Collection[uuid.UUID],
) -> set[int]:
    """Which of these requests (of this integration) the library of these servers holds."""
    if not request_ids or not server_ids:
        return set()
    held = select(media_items.c.id).where(_library_match(server_ids)).exists()
    of_integration = (
        overseerr_requests.c.integration_id == integration_id
        if integration_id is not None
        else overseerr_requests.c.integration_id.is_(None)
    )
    return set(
        conn.scalars(
            select(overseerr_requests.c.overseerr_request_id).where(
                overseerr_requests.c.overseerr_request_id.in_(list(request_ids)), of_integration, held
            )
        )
    )
