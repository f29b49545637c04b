"""Watch history: Tautulli plays in `watch_history`, and the play totals on `media_items` derived from them.

Totals are always recomputed from *all* stored plays of an item, never from the plays of one sync: a
7-day sync can only add plays, so it can never lower a lifetime total (the original SmartPlex overwrote
lifetime totals with the last 7 days). Plays of items not (yet) in `media_items` are kept; whoever
inserts media items calls `refresh_play_totals` for them, which links the plays stored before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Numeric, and_, case, cast, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import media_items, watch_history

COMPLETE_PERCENT = 90
"""A play counts as complete at this percent_complete or above, else as partial."""

BATCH_SIZE = 500

# Every column a play carries besides the surrogate id and the time we wrote it.
PLAY_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in watch_history.columns if c.name not in ("id", "synced_at")
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class UpsertCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.new + other.new, self.updated + other.updated, self.unchanged + other.unchanged
        )


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def upsert_plays(
    conn: Connection,
    plays: Iterable[Mapping[str, Any]],
    *,
    synced_at: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> UpsertCounts:
    """Insert or update plays keyed on `tautulli_row_id`; rows equal to what is stored are not rewritten.

    Each play maps the columns of `PLAY_COLUMNS` (missing ones are NULL/0 by the table defaults).
    A row id given twice keeps its last version.
    """
    synced_at = synced_at or utcnow()
    by_id = {int(play["tautulli_row_id"]): dict(play) for play in plays}
    counts = UpsertCounts()
    for batch in _chunks(list(by_id.values()), batch_size):
        counts += _upsert_batch(conn, batch, synced_at)
    return counts


def _upsert_batch(conn: Connection, batch: Sequence[dict[str, Any]], synced_at: datetime) -> UpsertCounts:
    columns = [watch_history.c[name] for name in PLAY_COLUMNS]
    ids = [play["tautulli_row_id"] for play in batch]
    stored = {
        row.tautulli_row_id: row._mapping
        for row in conn.execute(select(*columns).where(watch_history.c.tautulli_row_id.in_(ids)))
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
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        statement = insert(watch_history)
        written = {key for row in to_write for key in row} - {"tautulli_row_id"}
        statement = statement.on_conflict_do_update(
            index_elements=[watch_history.c.tautulli_row_id],
            set_={key: statement.excluded[key] for key in sorted(written)},
        )
        conn.execute(statement, to_write)
    new = len(to_write) - updated
    return UpsertCounts(new=new, updated=updated, unchanged=len(batch) - len(to_write))


def refresh_play_totals(
    conn: Connection,
    server_id: str | None,
    rating_keys: Iterable[str],
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Recompute the play totals of the media items with these rating keys from all their stored plays.

    Items are matched on rating_key, and on server_id when one is given. A play counts for an item
    when the rating keys match and the play's server_id is the item's or unknown (NULL).
    Returns the number of media_items rows updated; keys without a media item are skipped (their plays
    stay in watch_history and are counted when the item arrives and this is called again).
    """
    now = now or utcnow()
    keys = sorted({str(key) for key in rating_keys})
    plays_of_item = and_(
        watch_history.c.rating_key == media_items.c.rating_key,
        or_(watch_history.c.server_id == media_items.c.server_id, watch_history.c.server_id.is_(None)),
    )

    def aggregate(expression: Any) -> Any:
        return select(expression).where(plays_of_item).scalar_subquery()

    complete = case((watch_history.c.percent_complete >= COMPLETE_PERCENT, 1), else_=0)
    values = {
        "total_play_count": aggregate(func.count()),
        "complete_play_count": aggregate(func.coalesce(func.sum(complete), 0)),
        "partial_play_count": aggregate(func.count() - func.coalesce(func.sum(complete), 0)),
        "total_watch_time_seconds": aggregate(func.coalesce(func.sum(watch_history.c.duration_seconds), 0)),
        "avg_percent_complete": aggregate(
            func.round(func.avg(cast(watch_history.c.percent_complete, Numeric)), 2)
        ),
        "last_watched_at": aggregate(
            func.max(func.coalesce(watch_history.c.stopped_at, watch_history.c.started_at))
        ),
        "tautulli_synced_at": now,
    }
    updated = 0
    for batch in _chunks(keys, batch_size):
        statement = update(media_items).where(media_items.c.rating_key.in_(batch)).values(values)
        if server_id is not None:
            statement = statement.where(media_items.c.server_id == server_id)
        updated += conn.execute(statement).rowcount
    return updated
