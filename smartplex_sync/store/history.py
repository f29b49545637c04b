"""Watch history: Tautulli's plays in `watch_history`, and what SmartPlex reads of them: the play totals on
`media_items` (every Plex user, as SmartPlex's 004/020 define them) and `user_stats` (per SmartPlex user).

Totals are always recomputed from *all* stored plays of an item, never from the plays of one sync: a
7-day sync can only add plays, so it can never lower a lifetime total (the original SmartPlex overwrote
lifetime totals with the last 7 days). Plays are matched to items by server and rating key, never across
servers; a season's totals are its episodes' plays, a show's every episode's. Plays of items not (yet)
in `media_items` are kept; whoever inserts media items calls `refresh_play_totals` for them.

`user_stats` holds the plays of SmartPlex users: a play is theirs when Tautulli's user id is their
`users.plex_user_id` (the Plex account id) or Tautulli's user name their `users.plex_username`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Numeric, and_, case, cast, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from smartplex_sync.convert import chunked
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import media_items, user_stats, users, watch_history

COMPLETE_PERCENT = 90
"""A play counts as complete at this percent_complete or above, else as partial (SmartPlex's 020)."""

BATCH_SIZE = 500

# Every column a play carries besides the surrogate id and the time we wrote it.
PLAY_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in watch_history.columns if c.name not in ("id", "synced_at")
)


@dataclass(frozen=True)
class UpsertCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.new + other.new, self.updated + other.updated, self.unchanged + other.unchanged
        )


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def upsert_plays(
    conn: Connection,
    server_id: uuid.UUID,
    plays: Iterable[Mapping[str, Any]],
    *,
    synced_at: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> UpsertCounts:
    """Insert or update one server's plays keyed on Tautulli's row id; rows equal to what is stored are not
    rewritten. Each play maps the columns of `PLAY_COLUMNS` but `server_id` (missing ones take their
    defaults). A row id given twice keeps its last version."""
    synced_at = synced_at or utcnow()
    by_id = {int(play["tautulli_row_id"]): {**play, "server_id": server_id} for play in plays}
    counts = UpsertCounts()
    for batch in chunked(list(by_id.values()), batch_size):
        counts += _upsert_batch(conn, server_id, batch, synced_at)
    return counts


def _upsert_batch(
    conn: Connection, server_id: uuid.UUID, batch: Sequence[dict[str, Any]], synced_at: datetime
) -> UpsertCounts:
    columns = [watch_history.c[name] for name in PLAY_COLUMNS]
    ids = [play["tautulli_row_id"] for play in batch]
    stored = {
        row.tautulli_row_id: row._mapping
        for row in conn.execute(
            select(*columns).where(
                watch_history.c.server_id == server_id, watch_history.c.tautulli_row_id.in_(ids)
            )
        )
    }
    to_write = []
    updated = 0
    for play in batch:
        previous = stored.get(play["tautulli_row_id"])
        if previous is not None and all(previous[k] == play.get(k, previous[k]) for k in PLAY_COLUMNS):
            continue
        updated += previous is not None
        to_write.append({**play, "synced_at": synced_at})
    if to_write:
        statement = _insert(conn)(watch_history)
        written = {key for row in to_write for key in row} - {"server_id", "tautulli_row_id"}
        statement = statement.on_conflict_do_update(
            index_elements=[watch_history.c.server_id, watch_history.c.tautulli_row_id],
            set_={key: statement.excluded[key] for key in sorted(written)},
        )
        conn.execute(statement, to_write)
    new = len(to_write) - updated
    return UpsertCounts(new=new, updated=updated, unchanged=len(batch) - len(to_write))


# The plays of a media_items row, by its type: its own (movie, episode), its episodes' (season, show).
_PLAYS_OF_TYPE = {
    ("movie", "episode"): watch_history.c.rating_key,
    ("season",): watch_history.c.parent_rating_key,
    ("show",): watch_history.c.grandparent_rating_key,
}


def keys_with_plays(conn: Connection, server_id: uuid.UUID, rating_keys: Iterable[str]) -> set[str]:
    """The rating keys among these that have stored plays on this server, as an item, season or show."""
    keys = sorted({str(key) for key in rating_keys})
    played: set[str] = set()
    for batch in chunked(keys, BATCH_SIZE):
        for key_column in _PLAYS_OF_TYPE.values():
            played.update(
                conn.execute(
                    select(key_column)
                    .where(watch_history.c.server_id == server_id, key_column.in_(batch))
                    .distinct()
                ).scalars()
            )
    return played


def refresh_play_totals(
    conn: Connection,
    server_id: uuid.UUID,
    rating_keys: Iterable[str],
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Recompute the play totals of this server's media items with these rating keys (movies, episodes,
    and the seasons and shows among them) from all their stored plays. Returns the rows updated; keys
    without a media item are skipped (their plays wait in watch_history)."""
    now = now or utcnow()
    keys = sorted({str(key) for key in rating_keys})
    updated = 0
    for types, key_column in _PLAYS_OF_TYPE.items():
        plays_of_item = and_(
            watch_history.c.server_id == media_items.c.server_id, key_column == media_items.c.plex_id
        )

        def aggregate(expression: Any, plays: Any = plays_of_item) -> Any:
            return select(expression).where(plays).scalar_subquery()

        complete = case((watch_history.c.percent_complete >= COMPLETE_PERCENT, 1), else_=0)
        values = {
            "total_play_count": aggregate(func.count()),
            "complete_play_count": aggregate(func.coalesce(func.sum(complete), 0)),
            "partial_play_count": aggregate(func.count() - func.coalesce(func.sum(complete), 0)),
            "total_watch_time_seconds": aggregate(
                func.coalesce(func.sum(watch_history.c.duration_seconds), 0)
            ),
            "avg_percent_complete": aggregate(
                func.round(func.avg(cast(watch_history.c.percent_complete, Numeric)), 2)
            ),
            "last_watched_at": aggregate(
                func.max(func.coalesce(watch_history.c.stopped_at, watch_history.c.started_at))
            ),
            "tautulli_synced_at": now,
        }
        for batch in chunked(keys, batch_size):
            statement = (
                update(media_items)
                .where(
                    media_items.c.server_id == server_id,
                    media_items.c.type.in_(types),
                    media_items.c.plex_id.in_(batch),
                )
                .values(values)
            )
            updated += conn.execute(statement).rowcount
    return updated


def _player_is(user: Any) -> Any:
    """The play is this SmartPlex user's: their Plex account id, else their Plex username."""
    return or_(
        and_(users.c.plex_user_id.is_not(None), users.c.plex_user_id == watch_history.c.plex_user_id),
        and_(
            users.c.plex_username.is_not(None),
            func.lower(users.c.plex_username) == func.lower(watch_history.c.user_name),
        ),
    )


def refresh_user_stats(
    conn: Connection, server_id: uuid.UUID, rating_keys: Iterable[str], *, now: datetime | None = None
) -> int:
    """Recompute `user_stats` of the SmartPlex users who played these items (movies and episodes) of this
    server, from all their stored plays. `rating` and rows of users without plays are left alone.
    Returns the rows written."""
    now = now or utcnow()
    plays = _plays_of_users(conn, server_id, sorted({str(key) for key in rating_keys}))
    if not plays:
        return 0
    stats = [_user_stats_row(user_id, item_id, found, now) for (user_id, item_id), found in plays.items()]
    statement = _insert(conn)(user_stats)
    kept = {"id", "user_id", "media_item_id", "created_at"}
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[user_stats.c.user_id, user_stats.c.media_item_id],
            set_={key: statement.excluded[key] for key in stats[0] if key not in kept},
        ),
        stats,
    )
    return len(stats)


def _plays_of_users(
    conn: Connection, server_id: uuid.UUID, keys: list[str]
) -> dict[tuple[uuid.UUID, uuid.UUID], list[Any]]:
    """The stored plays of these movies and episodes, by (SmartPlex user, media item)."""
    plays: dict[tuple[uuid.UUID, uuid.UUID], list[Any]] = {}
    for batch in chunked(keys, BATCH_SIZE):
        rows = conn.execute(
            select(
                users.c.id.label("user_id"),
                media_items.c.id.label("media_item_id"),
                watch_history.c.tautulli_row_id,
                watch_history.c.duration_seconds,
                watch_history.c.percent_complete,
                watch_history.c.started_at,
                watch_history.c.stopped_at,
            )
            .select_from(watch_history)
            .join(
                media_items,
                and_(
                    media_items.c.server_id == watch_history.c.server_id,
                    media_items.c.plex_id == watch_history.c.rating_key,
                    media_items.c.type.in_(["movie", "episode"]),
                ),
            )
            .join(users, _player_is(users))
            .where(watch_history.c.server_id == server_id, watch_history.c.rating_key.in_(batch))
        ).all()
        for row in rows:
            plays.setdefault((row.user_id, row.media_item_id), []).append(row)
    return plays


def _user_stats_row(
    user_id: uuid.UUID, item_id: uuid.UUID, plays: list[Any], now: datetime
) -> dict[str, Any]:
    """One user's `user_stats` row of one item, from their plays of it (a play matched two ways counts once)."""
    unique = {play.tautulli_row_id: play for play in plays}.values()
    ordered = sorted(unique, key=lambda p: (p.stopped_at or p.started_at or now, p.tautulli_row_id))
    last = ordered[-1]
    return {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "media_item_id": item_id,
        "play_count": len(ordered),
        "total_duration_ms": sum(p.duration_seconds or 0 for p in ordered) * 1000,
        "last_played_at": last.stopped_at or last.started_at,
        "completion_percentage": float(
            min(100, round(sum(p.percent_complete for p in ordered) / len(ordered), 2))
        ),
        "percent_complete": float(min(100, last.percent_complete)),
        "watched_status": int(any(p.percent_complete >= COMPLETE_PERCENT for p in ordered)),
        "created_at": now,
        "updated_at": now,
    }
