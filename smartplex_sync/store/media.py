"""The Plex side of SmartPlex's `media_items`: batched upserts keyed (server_id, plex_id), per-section
watermarks in `sync_state`, scoped deletion behind a guard, and the lookups and exact removals of a
targeted deletion check (rows found by the ids a Sonarr/Radarr event carries, then removed by rating key,
one server only).

Upserts write only the columns Plex owns (`PLEX_COLUMNS`); play totals (Tautulli) and Sonarr/Radarr ids
belong to other syncs and are never touched. Ids Plex does not know (tmdb/tvdb/imdb NULL) do not erase
ids the arr link filled in, and the keys of `metadata` we do not write (SmartPlex's, anyone's) are kept.
Rows equal to what is stored are not rewritten, so a repeated sync writes nothing and reports every item
unchanged.

What only the sync needs of an item lives in `metadata` beside SmartPlex's `plex_added_at` (`ITEM_KEYS`):
the section id, the parent and grandparent rating keys, Plex's guid and updatedAt.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, cast, delete, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from smartplex_sync.convert import chunked
from smartplex_sync.errors import DeletionGuardError
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.history import keys_with_plays, refresh_play_totals, refresh_user_stats
from smartplex_sync.store.tables import media_items, sync_state

BATCH_SIZE = 500
SERVICE = "plex"

KEY_COLUMNS = ("server_id", "plex_id")
EXTERNAL_ID_COLUMNS = ("tmdb_id", "tvdb_id", "imdb_id")
PLEX_COLUMNS: tuple[str, ...] = (
    *KEY_COLUMNS,
    "type", "title", "year", *EXTERNAL_ID_COLUMNS, "library_section", "file_path", "file_size_bytes",
    "file_size_mb", "duration_ms", "added_at", "metadata", "parent_title", "grandparent_title",
    "season_number", "episode_number", "genres", "video_resolution", "video_codec", "audio_codec",
    "container", "bitrate_kbps", "accessible",
)  # fmt: skip
"""The columns a Plex item sets; every other media_items column belongs to another sync."""

SECTION_ID = "plex_section_id"
PARENT_KEY = "plex_parent_rating_key"
GRANDPARENT_KEY = "plex_grandparent_rating_key"


@dataclass(frozen=True)
class UpsertResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.added + other.added, self.updated + other.updated, self.unchanged + other.unchanged
        )


def _differs(row: dict[str, Any], stored: Any) -> bool:
    for column in PLEX_COLUMNS:
        value, held = row[column], stored[column]
        if column == "metadata":
            held = held or {}
            if any(held.get(key) != item for key, item in value.items()):
                return True
        elif value is None and column in EXTERNAL_ID_COLUMNS:
            continue  # Plex not knowing an id never clears one (see the module docstring)
        elif value != held:
            return True
    return False


def _merged_metadata(conn: Connection, excluded: Any) -> Any:
    """The stored `metadata` with this write's keys laid over it (other keys kept)."""
    stored = media_items.c.metadata
    if conn.dialect.name == "postgresql":
        empty = cast(literal("{}"), postgresql.JSONB)
        return func.coalesce(stored, empty).op("||", return_type=postgresql.JSONB)(excluded.metadata)
    return func.json_patch(func.coalesce(stored, "{}"), excluded.metadata)


def _upsert_statement(conn: Connection) -> Any:
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(media_items)
    excluded = statement.excluded
    updates: dict[str, Any] = {
        c: excluded[c] for c in PLEX_COLUMNS if c not in KEY_COLUMNS and c not in EXTERNAL_ID_COLUMNS
    }
    for column in EXTERNAL_ID_COLUMNS:
        updates[column] = func.coalesce(excluded[column], media_items.c[column])
    updates["metadata"] = _merged_metadata(conn, excluded)
    updates["updated_at"] = excluded.updated_at
    return statement.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=updates)


def upsert_media_items(
    conn: Connection,
    rows: Sequence[dict[str, Any]],
    *,
    synced_at: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> UpsertResult:
    """Insert new rows, update changed ones, skip equal ones. Rows map every name in `PLEX_COLUMNS`.

    Plays stored before an item arrived are counted on it (`refresh_play_totals` on the new keys that
    have plays), and in the `user_stats` of the SmartPlex users who played it (`refresh_user_stats`).
    """
    synced_at = synced_at or utcnow()
    result = UpsertResult()
    statement = _upsert_statement(conn)
    for batch in chunked(rows, batch_size):
        for server_id in {row["server_id"] for row in batch}:
            result += _upsert_batch(
                conn, statement, server_id, [r for r in batch if r["server_id"] == server_id], synced_at
            )
    return result


def _upsert_batch(
    conn: Connection, statement: Any, server_id: uuid.UUID, batch: list[dict[str, Any]], synced_at: datetime
) -> UpsertResult:
    columns = [media_items.c[name] for name in PLEX_COLUMNS]
    stored = {
        row.plex_id: row._mapping
        for row in conn.execute(
            select(*columns).where(
                media_items.c.server_id == server_id,
                media_items.c.plex_id.in_([r["plex_id"] for r in batch]),
            )
        )
    }
    new = [r for r in batch if r["plex_id"] not in stored]
    changed = [r for r in batch if r["plex_id"] in stored and _differs(r, stored[r["plex_id"]])]
    to_write = [{**r, "id": uuid.uuid4(), "updated_at": synced_at} for r in new] + [
        {**r, "id": uuid.uuid4(), "updated_at": synced_at} for r in changed
    ]
    if to_write:
        conn.execute(statement, to_write)
    played = keys_with_plays(conn, server_id, [r["plex_id"] for r in new]) if new else set()
    if played:
        refresh_play_totals(conn, server_id, played, now=synced_at)
        refresh_user_stats(conn, server_id, played, now=synced_at)
    return UpsertResult(len(new), len(changed), len(batch) - len(new) - len(changed))


def _scope(server_id: uuid.UUID, section_id: int) -> str:
    return f"{server_id}:{section_id}"


def get_watermark(conn: Connection, server_id: uuid.UUID, section_id: int) -> datetime | None:
    """The newest Plex addedAt/updatedAt seen in this section of this server, or None before a first sync."""
    return conn.scalar(
        select(sync_state.c.watermark).where(
            sync_state.c.service == SERVICE, sync_state.c.scope == _scope(server_id, section_id)
        )
    )


def set_watermark(conn: Connection, server_id: uuid.UUID, section_id: int, watermark: datetime) -> datetime:
    """Store the watermark; it only moves forward. Returns the stored value."""
    current = get_watermark(conn, server_id, section_id)
    if current is not None and current >= watermark:
        return current
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(sync_state).values(
        service=SERVICE, scope=_scope(server_id, section_id), watermark=watermark, updated_at=utcnow()
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["service", "scope"],
            set_={"watermark": statement.excluded.watermark, "updated_at": statement.excluded.updated_at},
        )
    )
    return watermark


def _in_section(section_id: int) -> Any:
    return media_items.c.metadata[SECTION_ID].as_integer() == section_id


def section_keys(conn: Connection, server_id: uuid.UUID, section_id: int) -> set[str]:
    return set(
        conn.scalars(
            select(media_items.c.plex_id).where(media_items.c.server_id == server_id, _in_section(section_id))
        )
    )


def delete_missing(
    conn: Connection,
    server_id: uuid.UUID,
    section_id: int,
    seen_keys: Collection[str],
    guard_fraction: float,
    server_name: str = "",
) -> int:
    """Delete the rows of this section of this server whose rating key was not seen; return how many.

    Raises DeletionGuardError, deleting nothing, when that is more than `guard_fraction` of the rows
    stored for the section (an unmounted disk makes Plex answer an empty section).
    """
    stored = section_keys(conn, server_id, section_id)
    missing = sorted(stored.difference(seen_keys))
    if not missing:
        return 0
    if len(missing) > guard_fraction * len(stored):
        raise DeletionGuardError(
            f"refusing to delete {len(missing)} of {len(stored)} rows of section {section_id} on Plex server "
            f"{server_name or server_id} (more than the guard of {guard_fraction:.0%}); nothing was deleted. "
            "If the library really shrank, raise SMARTPLEX_DELETE_GUARD_FRACTION for one run."
        )
    deleted = 0
    for chunk in chunked(missing, BATCH_SIZE):
        deleted += conn.execute(
            delete(media_items).where(
                and_(media_items.c.server_id == server_id, media_items.c.plex_id.in_(chunk))
            )
        ).rowcount
    return deleted


@dataclass(frozen=True)
class StoredItem:
    """What a targeted deletion check needs to know of a row."""

    rating_key: str
    type: str
    title: str
    section_id: int | None
    parent_rating_key: str | None
    grandparent_rating_key: str | None
    season_number: int | None
    episode_number: int | None


_STORED_COLUMNS = (
    media_items.c.plex_id,
    media_items.c.type,
    media_items.c.title,
    media_items.c.metadata[SECTION_ID].as_integer(),
    media_items.c.metadata[PARENT_KEY].as_string(),
    media_items.c.metadata[GRANDPARENT_KEY].as_string(),
    media_items.c.season_number,
    media_items.c.episode_number,
)


def _stored_items(conn: Connection, *conditions: Any) -> list[StoredItem]:
    statement = select(*_STORED_COLUMNS).where(*conditions).order_by(media_items.c.plex_id)
    return [StoredItem(*row) for row in conn.execute(statement)]


def find_by_ids(
    conn: Connection,
    server_id: uuid.UUID,
    type_: str,
    *,
    tmdb_id: int | None = None,
    tvdb_id: int | None = None,
    imdb_id: str | None = None,
    radarr_movie_id: int | None = None,
    sonarr_series_id: int | None = None,
) -> list[StoredItem]:
    """Rows of one type (`movie` or `show`) on one server matching any of the given ids; none without ids.

    The type keeps id namespaces apart: TMDB numbers movies and TV shows separately.
    """
    given = {
        "tmdb_id": tmdb_id,
        "tvdb_id": tvdb_id,
        "imdb_id": imdb_id,
        "radarr_movie_id": radarr_movie_id,
        "sonarr_series_id": sonarr_series_id,
    }
    matches = [
        media_items.c[column] == value for column, value in given.items() if value not in (None, 0, "")
    ]
    if not matches:
        return []
    return _stored_items(
        conn, media_items.c.server_id == server_id, media_items.c.type == type_, or_(*matches)
    )


def find_episodes(
    conn: Connection, server_id: uuid.UUID, show_keys: Collection[str], episodes: Collection[tuple[int, int]]
) -> list[StoredItem]:
    """Episode rows of these shows (by rating key) with these (season number, episode number) pairs."""
    if not show_keys or not episodes:
        return []
    return _stored_items(
        conn,
        media_items.c.server_id == server_id,
        media_items.c.type == "episode",
        media_items.c.metadata[GRANDPARENT_KEY].as_string().in_(sorted(show_keys)),
        tuple_(media_items.c.season_number, media_items.c.episode_number).in_(sorted(set(episodes))),
    )


def find_children(conn: Connection, server_id: uuid.UUID, rating_keys: Collection[str]) -> list[StoredItem]:
    """The rows below these rows on one server: seasons and episodes of a show, episodes of a season."""
    keys = sorted(rating_keys)
    found: list[StoredItem] = []
    for chunk in chunked(keys, BATCH_SIZE):
        found += _stored_items(
            conn,
            media_items.c.server_id == server_id,
            media_items.c.type.in_(["season", "episode"]),
            or_(
                media_items.c.metadata[PARENT_KEY].as_string().in_(chunk),
                media_items.c.metadata[GRANDPARENT_KEY].as_string().in_(chunk),
            ),
        )
    return found


def remove_items(conn: Connection, server_id: uuid.UUID, rating_keys: Collection[str]) -> list[StoredItem]:
    """Delete exactly the rows of `server_id` with these rating keys and return them.

    No other server's row is touched. Tautulli's plays are kept (the lifetime history of an item Plex
    dropped is still history, and Plex never reuses a rating key), so an item that comes back gets its
    plays again through `refresh_play_totals` and `refresh_user_stats`; its `user_stats` rows go with it
    (SmartPlex's cascade).
    """
    removed: list[StoredItem] = []
    for chunk in chunked(sorted(rating_keys), BATCH_SIZE):
        scope = (media_items.c.server_id == server_id, media_items.c.plex_id.in_(chunk))
        found = _stored_items(conn, *scope)
        if found:
            conn.execute(delete(media_items).where(*scope))
        removed += found
    return removed


def mark_unavailable(conn: Connection, server_id: uuid.UUID, rating_keys: Collection[str]) -> int:
    """Plex keeps these items only in its trash: `accessible` false (SmartPlex's `inaccessible_files`)."""
    changed = 0
    for chunk in chunked(sorted(rating_keys), BATCH_SIZE):
        changed += conn.execute(
            update(media_items)
            .where(
                media_items.c.server_id == server_id,
                media_items.c.plex_id.in_(chunk),
                media_items.c.accessible.is_not(False),
            )
            .values(accessible=False, updated_at=utcnow())
        ).rowcount
    return changed
