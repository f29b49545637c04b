"""Rows for tests that need a library item without running a Plex sync."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert

from smartplex_sync.store.tables import media_items


def add_movie(conn: Connection, rating_key: str, server_id: str, synced_at: datetime | None = None) -> None:
    """A movie row with no plays yet (play totals take their column defaults)."""
    conn.execute(
        insert(media_items).values(
            server_id=server_id,
            rating_key=rating_key,
            type="movie",
            title=f"Movie {rating_key}",
            synced_at=synced_at or datetime.now(UTC),
        )
    )
