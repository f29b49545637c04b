"""Overseerr / Jellyseerr requests (`overseerr_requests`) and which of them the library holds.

The link to `media_items` is computed when read (`requests_in_library`), not stored: a request is often
synced before Plex has the item, and a stored link would go stale both ways. A movie request matches a
`movie` row by tmdb id; a tv request matches a `show` row by tvdb id or tmdb id (Plex knows shows by
either, depending on its agent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.sql import ColumnElement

from smartplex_sync.models import OverseerrRequest
from smartplex_sync.store.tables import media_items, overseerr_requests


@dataclass(frozen=True)
class RequestInLibrary:
    request_id: int
    media_type: str
    status: str
    media_status: str | None
    tmdb_id: int | None
    tvdb_id: int | None
    media_item_id: int | None
    title: str | None

    @property
    def in_library(self) -> bool:
        return self.media_item_id is not None


def upsert_requests(conn: Connection, requests: Iterable[OverseerrRequest], synced_at: datetime) -> int:
    """Insert or update by request_id; return how many rows were written."""
    count = 0
    for request in requests:
        known = {
            f.name: getattr(request, f.name)
            for f in fields(request)
            if getattr(request, f.name) is not None and f.name != "request_id"
        }
        key = overseerr_requests.c.request_id == request.request_id
        result = conn.execute(update(overseerr_requests).where(key).values(synced_at=synced_at, **known))
        if result.rowcount == 0:
            known.setdefault("is_4k", False)
            known.setdefault("media_type", "unknown")
            conn.execute(
                overseerr_requests.insert().values(
                    request_id=request.request_id, synced_at=synced_at, **known
                )
            )
        count += 1
    return count


def _library_match() -> ColumnElement[bool]:
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
    return or_(movie, show)


def requests_in_library(conn: Connection) -> list[RequestInLibrary]:
    """Every stored request with the media_items row (movie or show) it names, if the library has it."""
    matched_id = (
        select(func.min(media_items.c.id)).where(_library_match()).scalar_subquery().label("media_item_id")
    )
    rows = conn.execute(
        select(
            overseerr_requests.c.request_id,
            overseerr_requests.c.media_type,
            overseerr_requests.c.status,
            overseerr_requests.c.media_status,
            overseerr_requests.c.tmdb_id,
            overseerr_requests.c.tvdb_id,
            matched_id,
        ).order_by(overseerr_requests.c.request_id)
    ).all()
    ids = [row.media_item_id for row in rows if row.media_item_id is not None]
    titles = {
        row.id: row.title
        for row in conn.execute(
            select(media_items.c.id, media_items.c.title).where(media_items.c.id.in_(ids))
        )
    }
    return [
        RequestInLibrary(
            request_id=row.request_id,
            media_type=row.media_type,
            status=row.status,
            media_status=row.media_status,
            tmdb_id=row.tmdb_id,
            tvdb_id=row.tvdb_id,
            media_item_id=row.media_item_id,
            title=titles.get(row.media_item_id),
        )
        for row in rows
    ]
