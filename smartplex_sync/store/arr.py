"""Sonarr series and Radarr movies (`arr_items`, per Plex server they serve) and their link onto
`media_items` (SmartPlex's `sonarr_series_id` / `radarr_movie_id`, which its cascade deletion reads).

The arr side and the Plex side arrive in any order (a Download webhook asks for both syncs at once), so
each sync stores only its own side and then calls `link_arr_ids`, which makes the server's `media_items`
agree with its `arr_items`. It is idempotent and cheap enough to run after every Sonarr, Radarr and Plex
library sync.

Matching, within one server:
- movies: Radarr's tmdb id, else its imdb id;
- shows, seasons and episodes: Sonarr's tvdb id, else tmdb id, else imdb id. SmartPlex's rows of a
  show's seasons and episodes carry the show's ids (as SmartPlex's own Plex sync writes them).
A row that no longer matches anything (the series was removed from Sonarr) loses its arr id, so cascade
deletion never acts on a stale id. Ids Plex did not know (tvdb/tmdb/imdb) are filled in from the arr on
matched rows; ids Plex has are never overwritten.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, delete, func, select, update
from sqlalchemy.sql import ColumnElement

from smartplex_sync.models import ArrItem, ArrService
from smartplex_sync.store.tables import arr_items, media_items


@dataclass(frozen=True)
class Coverage:
    """How the arr items of one run met the library: matched ids, unmatched items, and library rows the
    service does not know (movies for Radarr, shows for Sonarr, counted)."""

    matched: list[int]
    unmatched: list[ArrItem]
    library_unlinked: int


# Per service: the media_items column it owns, the row types it links, the top type, the ids to match on.
_LINKS: dict[ArrService, tuple[str, tuple[str, ...], str, tuple[str, ...]]] = {
    "sonarr": ("sonarr_series_id", ("show", "season", "episode"), "show", ("tvdb_id", "tmdb_id", "imdb_id")),
    "radarr": ("radarr_movie_id", ("movie",), "movie", ("tmdb_id", "imdb_id")),
}
_FILLED_IDS = ("tvdb_id", "tmdb_id", "imdb_id")


def upsert_arr_items(
    conn: Connection, server_id: uuid.UUID, items: Iterable[ArrItem], synced_at: datetime
) -> int:
    """Insert or update `items` of one server; return how many were written. Ids the arr no longer reports
    become NULL; a path a webhook did not tell is kept."""
    count = 0
    for item in items:
        values = {
            "title": item.title,
            "tvdb_id": item.tvdb_id,
            "tmdb_id": item.tmdb_id,
            "imdb_id": item.imdb_id,
            "synced_at": synced_at,
        }
        key = and_(
            arr_items.c.server_id == server_id,
            arr_items.c.service == item.service,
            arr_items.c.arr_id == item.arr_id,
        )
        existing = conn.execute(select(arr_items.c.path).where(key)).first()
        if existing is None:
            conn.execute(
                arr_items.insert().values(
                    server_id=server_id, service=item.service, arr_id=item.arr_id, path=item.path, **values
                )
            )
        else:
            conn.execute(update(arr_items).where(key).values(path=item.path or existing.path, **values))
        count += 1
    return count


def remove_arr_items_except(
    conn: Connection, server_id: uuid.UUID, service: ArrService, keep_ids: Sequence[int]
) -> int:
    """After a full sync: delete the server's items of `service` that were not in the answer."""
    statement = delete(arr_items).where(arr_items.c.server_id == server_id, arr_items.c.service == service)
    if keep_ids:
        statement = statement.where(arr_items.c.arr_id.not_in(list(keep_ids)))
    return conn.execute(statement).rowcount


def _arr_id_for(service: ArrService, keys: tuple[str, ...]) -> ColumnElement[int | None]:
    """The arr id matching the current media_items row on its server: first key that matches wins."""
    candidates = [
        select(func.min(arr_items.c.arr_id))
        .where(
            arr_items.c.server_id == media_items.c.server_id,
            arr_items.c.service == service,
            arr_items.c[key] == media_items.c[key],
        )
        .scalar_subquery()
        for key in keys
    ]
    return func.coalesce(*candidates)


def _link(conn: Connection, server_id: uuid.UUID, service: ArrService) -> int:
    column, types, _top, keys = _LINKS[service]
    wanted = _arr_id_for(service, keys)
    statement = (
        update(media_items)
        .where(
            media_items.c.server_id == server_id,
            media_items.c.type.in_(types),
            media_items.c[column].is_distinct_from(wanted),
        )
        .values({column: wanted})
    )
    return conn.execute(statement).rowcount


def _fill_ids(conn: Connection, server_id: uuid.UUID, service: ArrService) -> None:
    column, types, _top, _keys = _LINKS[service]
    for key in _FILLED_IDS:
        known = (
            select(arr_items.c[key])
            .where(
                arr_items.c.server_id == media_items.c.server_id,
                arr_items.c.service == service,
                arr_items.c.arr_id == media_items.c[column],
            )
            .scalar_subquery()
        )
        conn.execute(
            update(media_items)
            .where(
                media_items.c.server_id == server_id,
                media_items.c.type.in_(types),
                media_items.c[column].is_not(None),
                media_items.c[key].is_(None),
                known.is_not(None),
            )
            .values({key: known})
        )


def link_arr_ids(conn: Connection, server_id: uuid.UUID) -> int:
    """Make one server's sonarr_series_id / radarr_movie_id agree with its arr_items (see the module
    docstring). Returns how many media_items rows got a different arr id (linked, relinked or unlinked).
    Call it in the same transaction as the upserts it follows."""
    changed = _link(conn, server_id, "radarr") + _link(conn, server_id, "sonarr")
    _fill_ids(conn, server_id, "radarr")
    _fill_ids(conn, server_id, "sonarr")
    return changed


def coverage(
    conn: Connection, server_id: uuid.UUID, service: ArrService, items: Sequence[ArrItem]
) -> Coverage:
    """Which of `items` are in the server's library now, and how many of its rows the service does not
    know."""
    column, _types, top, _keys = _LINKS[service]
    on_server = (media_items.c.server_id == server_id, media_items.c.type == top)
    linked = set(conn.execute(select(media_items.c[column]).where(*on_server).distinct()).scalars())
    unlinked = conn.execute(
        select(func.count()).select_from(media_items).where(*on_server, media_items.c[column].is_(None))
    ).scalar_one()
    return Coverage(
        matched=[item.arr_id for item in items if item.arr_id in linked],
        unmatched=[item for item in items if item.arr_id not in linked],
        library_unlinked=unlinked,
    )
