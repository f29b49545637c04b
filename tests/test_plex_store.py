"""media_items upserts, watermarks and scoped, guarded deletion, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from smartplex_sync.errors import DeletionGuardError
from smartplex_sync.store.history import upsert_plays
from smartplex_sync.store.media import (
    PLEX_COLUMNS,
    UpsertResult,
    delete_missing,
    find_by_ids,
    find_children,
    find_episodes,
    get_watermark,
    remove_items,
    set_watermark,
    upsert_media_items,
)
from smartplex_sync.store.tables import media_items, watch_history
from tests.conftest import both_backends

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def row(
    rating_key: str, *, server: str = "srv-a", section: int = 1, size: int = 100, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = dict.fromkeys(PLEX_COLUMNS)
    data.update(
        server_id=server, rating_key=rating_key, type="movie", title=f"Movie {rating_key}", section_id=section,
        section_title="Movies", section_type="movie", file_size_bytes=size, added_at=T0, updated_at=T0,
    )  # fmt: skip
    data.update(extra)
    return data


def stored(engine: Engine) -> dict[tuple[str, str], Any]:
    with engine.connect() as conn:
        return {(r.server_id, r.rating_key): r for r in conn.execute(select(media_items))}


@both_backends
def test_upsert_counts_added_updated_unchanged_and_keeps_other_syncs_columns(engine: Engine) -> None:
    with engine.begin() as conn:
        assert upsert_media_items(conn, [row("1"), row("2"), row("3")]) == UpsertResult(3, 0, 0)
        conn.execute(
            update(media_items)
            .where(media_items.c.rating_key == "1")
            .values(total_play_count=4, radarr_movie_id=77, tmdb_id=550)
        )
    newer = T0 + timedelta(hours=1)
    with engine.begin() as conn:
        result = upsert_media_items(
            conn,
            [row("1", size=999, updated_at=newer), row("2"), row("3", title="Renamed"), row("4")],
            batch_size=2,
        )
    assert result == UpsertResult(added=1, updated=2, unchanged=1)
    rows = stored(engine)
    first = rows[("srv-a", "1")]
    assert (first.file_size_bytes, first.updated_at) == (999, newer)
    # play totals, arr ids and ids Plex did not know survive the update
    assert (first.total_play_count, first.radarr_movie_id, first.tmdb_id) == (4, 77, 550)
    assert rows[("srv-a", "3")].title == "Renamed"
    with engine.begin() as conn:  # the same rows again: nothing to write
        again = upsert_media_items(conn, [row("1", size=999, updated_at=newer), row("3", title="Renamed")])
    assert again == UpsertResult(0, 0, 2)


@both_backends
def test_same_rating_key_on_two_servers_is_two_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        assert upsert_media_items(conn, [row("1"), row("1", server="srv-b", size=5)]) == UpsertResult(2, 0, 0)
    rows = stored(engine)
    assert (rows[("srv-a", "1")].file_size_bytes, rows[("srv-b", "1")].file_size_bytes) == (100, 5)


@both_backends
def test_plays_stored_before_the_item_are_linked_when_it_arrives(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(watch_history).values(
                tautulli_row_id=1,
                server_id="srv-a",
                rating_key="9",
                duration_seconds=600,
                paused_seconds=0,
                percent_complete=95,
                stopped_at=T0,
                synced_at=T0,
            )
        )
        upsert_media_items(conn, [row("9")])
    item = stored(engine)[("srv-a", "9")]
    assert (item.total_play_count, item.complete_play_count, item.total_watch_time_seconds) == (1, 1, 600)


@both_backends
def test_watermark_is_per_server_and_section_and_only_moves_forward(engine: Engine) -> None:
    with engine.begin() as conn:
        assert get_watermark(conn, "srv-a", 1) is None
        set_watermark(conn, "srv-a", 1, T0)
        set_watermark(conn, "srv-a", 2, T0 + timedelta(days=9))
        assert set_watermark(conn, "srv-a", 1, T0 - timedelta(days=1)) == T0
        set_watermark(conn, "srv-a", 1, T0 + timedelta(seconds=1))
    with engine.connect() as conn:
        assert get_watermark(conn, "srv-a", 1) == T0 + timedelta(seconds=1)
        assert get_watermark(conn, "srv-a", 2) == T0 + timedelta(days=9)
        assert get_watermark(conn, "srv-b", 1) is None


@both_backends
def test_delete_missing_touches_only_its_section_of_its_server(engine: Engine) -> None:
    rows = [row(str(n)) for n in range(10)]
    rows += [row(f"s{n}", section=2) for n in range(3)] + [row(str(n), server="srv-b") for n in range(10)]
    with engine.begin() as conn:
        upsert_media_items(conn, rows)
        assert delete_missing(conn, "srv-a", 1, {str(n) for n in range(2, 10)}, guard_fraction=0.2) == 2
    keys = set(stored(engine))
    assert ("srv-a", "0") not in keys and ("srv-a", "1") not in keys
    assert ("srv-b", "0") in keys and ("srv-a", "s0") in keys and len(keys) == 8 + 3 + 10


@both_backends
def test_guard_refuses_and_deletes_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_media_items(conn, [row(str(n)) for n in range(10)])
    with pytest.raises(DeletionGuardError, match="10 of 10 rows of section 1"), engine.begin() as conn:
        delete_missing(conn, "srv-a", 1, set(), guard_fraction=0.2)
    with pytest.raises(DeletionGuardError), engine.begin() as conn:
        delete_missing(conn, "srv-a", 1, {str(n) for n in range(7)}, guard_fraction=0.2)
    assert len(stored(engine)) == 10


def _show(server: str, key: int, seasons: int = 2, episodes: int = 2, **ids: Any) -> list[dict[str, Any]]:
    """A show row with its seasons and episodes (keys key+10*s, key+10*s+e)."""
    shows = dict(type="show", section=2, section_title="TV", section_type="show")
    rows = [row(str(key), server=server, title=f"Show {key}", **shows, **ids)]
    for s in range(1, seasons + 1):
        season = str(key + 10 * s)
        rows.append(row(season, server=server, **{**shows, "type": "season"}, parent_rating_key=str(key),
                        season_number=s))  # fmt: skip
        rows += [
            row(
                str(key + 10 * s + e),
                server=server,
                **{**shows, "type": "episode"},
                parent_rating_key=season,
                grandparent_rating_key=str(key),
                season_number=s,
                episode_number=e,
                tvdb_id=key,
            )
            for e in range(1, episodes + 1)
        ]
    return rows


@both_backends
def test_rows_are_found_by_the_ids_an_arr_event_carries_on_one_server_and_type(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_media_items(
            conn,
            [
                row("1", tmdb_id=603, imdb_id="tt0133093"),
                row("2", tmdb_id=604),
                row("1", server="srv-b", tmdb_id=603),
                *_show("srv-a", 100, tvdb_id=81189, tmdb_id=603),
                *_show("srv-b", 100, tvdb_id=81189),
            ],
        )
        conn.execute(update(media_items).where(media_items.c.rating_key == "2").values(radarr_movie_id=9))
        conn.execute(update(media_items).where(media_items.c.rating_key == "100").values(sonarr_series_id=5))
    with engine.connect() as conn:
        keys = lambda found: [i.rating_key for i in found]  # noqa: E731
        assert keys(find_by_ids(conn, "srv-a", "movie", tmdb_id=603)) == ["1"]  # not the show's tmdb 603
        assert keys(find_by_ids(conn, "srv-a", "movie", imdb_id="tt0133093", radarr_movie_id=9)) == ["1", "2"]
        assert keys(find_by_ids(conn, "srv-b", "movie", tmdb_id=603)) == ["1"]
        assert (
            find_by_ids(conn, "srv-a", "movie") == [] and find_by_ids(conn, "srv-a", "movie", tmdb_id=0) == []
        )
        assert keys(find_by_ids(conn, "srv-a", "show", tvdb_id=81189)) == ["100"]  # episodes carry tvdb 100
        assert keys(find_by_ids(conn, "srv-a", "show", sonarr_series_id=5)) == ["100"]
        assert keys(find_by_ids(conn, "srv-a", "show", tvdb_id=100)) == []
        assert keys(find_episodes(conn, "srv-a", {"100"}, [(2, 1), (1, 2), (3, 1)])) == ["112", "121"]
        assert find_episodes(conn, "srv-a", set(), [(1, 1)]) == []
        assert {i.rating_key for i in find_children(conn, "srv-b", ["100"])} == {
            "110",
            "111",
            "112",
            "120",
            "121",
            "122",
        }
        episode = find_episodes(conn, "srv-b", ["100"], [(1, 1)])[0]
        assert (episode.parent_rating_key, episode.grandparent_rating_key, episode.season_number) == (
            "110",
            "100",
            1,
        )


@both_backends
def test_remove_items_removes_exactly_those_rows_of_one_server_and_keeps_plays(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_media_items(conn, [row("1"), row("2"), row("3"), row("1", server="srv-b")])
        upsert_plays(
            conn,
            [
                {"tautulli_row_id": 1, "server_id": "srv-a", "rating_key": "1", "duration_seconds": 60,
                 "paused_seconds": 0, "percent_complete": 100},
            ],
        )  # fmt: skip
    with engine.begin() as conn:
        removed = remove_items(conn, "srv-a", ["1", "3", "404"])
    assert [(r.rating_key, r.type, r.title, r.section_id) for r in removed] == [
        ("1", "movie", "Movie 1", 1),
        ("3", "movie", "Movie 3", 1),
    ]
    assert set(stored(engine)) == {("srv-a", "2"), ("srv-b", "1")}
    with engine.connect() as conn:
        assert conn.scalar(select(watch_history.c.rating_key)) == "1"
    with engine.begin() as conn:
        assert remove_items(conn, "srv-a", ["1"]) == [] and remove_items(conn, "srv-a", []) == []
        upsert_media_items(conn, [row("1")])  # the item comes back: its plays count again
    assert stored(engine)[("srv-a", "1")].total_play_count == 1
