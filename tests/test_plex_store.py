"""media_items upserts, watermarks, scoped guarded deletion, lookups and exact removals (store/media.py), on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from smartplex_sync.errors import DeletionGuardError
from smartplex_sync.store.history import upsert_plays
from smartplex_sync.store.media import (
    GRANDPARENT_KEY,
    PARENT_KEY,
    PLEX_COLUMNS,
    SECTION_ID,
    UpsertResult,
    delete_missing,
    find_by_ids,
    find_children,
    find_episodes,
    get_watermark,
    mark_unavailable,
    remove_items,
    set_watermark,
    upsert_media_items,
)
from smartplex_sync.store.tables import media_items, user_stats, watch_history
from tests.conftest import both_backends
from tests.support.factories import add_server, add_user

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def servers(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """Two Plex servers of one user."""
    with engine.begin() as conn:
        owner = add_user(conn)
        return add_server(conn, owner, name="A", machine_id="a"), add_server(
            conn, owner, name="B", machine_id="b"
        )


def row(
    server_id: uuid.UUID,
    plex_id: str,
    *,
    section: int = 1,
    size: int = 100,
    parent: str | None = None,
    grandparent: str | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """A row as flows/_plex_items.to_row writes it (a movie unless `type` says otherwise)."""
    data: dict[str, Any] = dict.fromkeys(PLEX_COLUMNS)
    data.update(
        server_id=server_id, plex_id=plex_id, type="movie", title=f"Movie {plex_id}", library_section="Movies",
        file_size_bytes=size, added_at=T0, genres=[], accessible=True,
        metadata={"plex_added_at": T0.isoformat(), SECTION_ID: section, PARENT_KEY: parent,
                  GRANDPARENT_KEY: grandparent, "plex_guid": f"plex://{plex_id}"},
    )  # fmt: skip
    data.update(columns)
    return data


def stored(engine: Engine) -> dict[tuple[uuid.UUID, str], Any]:
    with engine.connect() as conn:
        return {(r.server_id, r.plex_id): r for r in conn.execute(select(media_items))}


@both_backends
def test_upsert_counts_added_updated_unchanged_and_keeps_other_syncs_columns(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        assert upsert_media_items(
            conn, [row(a, "1"), row(a, "2"), row(a, "3")], synced_at=T0
        ) == UpsertResult(3, 0, 0)
        conn.execute(
            update(media_items)
            .where(media_items.c.plex_id == "1")
            .values(total_play_count=4, radarr_movie_id=77, tmdb_id=550)
        )
    newer = T0 + timedelta(hours=1)
    with engine.begin() as conn:
        result = upsert_media_items(
            conn,
            [row(a, "1", size=999), row(a, "2"), row(a, "3", title="Renamed"), row(a, "4")],
            synced_at=newer,
            batch_size=2,
        )
    assert result == UpsertResult(added=1, updated=2, unchanged=1)
    rows = stored(engine)
    first = rows[(a, "1")]
    assert (first.file_size_bytes, first.updated_at) == (999, newer)
    # play totals, arr ids and ids Plex did not know survive the update
    assert (first.total_play_count, first.radarr_movie_id, first.tmdb_id) == (4, 77, 550)
    assert rows[(a, "3")].title == "Renamed"
    assert rows[(a, "2")].updated_at == T0  # an unchanged row is not rewritten
    with engine.begin() as conn:  # the same rows again: nothing to write
        again = upsert_media_items(conn, [row(a, "1", size=999), row(a, "3", title="Renamed")])
    assert again == UpsertResult(0, 0, 2)


@both_backends
def test_upsert_keeps_metadata_keys_others_wrote_and_never_clears_ids_plex_does_not_know(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        upsert_media_items(conn, [row(a, "1", tmdb_id=603, imdb_id="tt0133093", tvdb_id=None)])
        conn.execute(  # SmartPlex (or anyone) keeps its own keys in metadata, and an arr link filled tvdb
            update(media_items)
            .where(media_items.c.plex_id == "1")
            .values(metadata={**row(a, "1")["metadata"], "smartplex_note": "keep me", "deletion": {"rule": 3}},
                    tvdb_id=12345)
        )  # fmt: skip
    # Plex now knows no ids at all, and its updatedAt moved: only our keys change
    with engine.begin() as conn:
        changed = row(a, "1", tmdb_id=None, imdb_id=None, tvdb_id=None, section=7)
        changed["metadata"]["plex_updated_at"] = (T0 + timedelta(days=1)).isoformat()
        assert upsert_media_items(conn, [changed]) == UpsertResult(0, 1, 0)
        # ids Plex does not know are no change: nothing to rewrite
        assert upsert_media_items(conn, [changed]) == UpsertResult(0, 0, 1)
    item = stored(engine)[(a, "1")]
    assert (item.tmdb_id, item.imdb_id, item.tvdb_id) == (603, "tt0133093", 12345)
    assert item.metadata["smartplex_note"] == "keep me" and item.metadata["deletion"] == {"rule": 3}
    assert item.metadata[SECTION_ID] == 7
    assert item.metadata["plex_updated_at"] == (T0 + timedelta(days=1)).isoformat()
    assert item.metadata["plex_added_at"] == T0.isoformat()
    with engine.begin() as conn:  # an id Plex does know replaces the stored one
        upsert_media_items(conn, [row(a, "1", tmdb_id=604, section=7)])
    assert stored(engine)[(a, "1")].tmdb_id == 604


@both_backends
def test_same_rating_key_on_two_servers_is_two_rows(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        assert upsert_media_items(conn, [row(a, "1"), row(b, "1", size=5)]) == UpsertResult(2, 0, 0)
    rows = stored(engine)
    assert (rows[(a, "1")].file_size_bytes, rows[(b, "1")].file_size_bytes) == (100, 5)


@both_backends
def test_an_item_in_plex_trash_is_stored_not_accessible_and_comes_back(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        assert upsert_media_items(conn, [row(a, "1", accessible=False)]) == UpsertResult(1, 0, 0)
    assert stored(engine)[(a, "1")].accessible is False
    with engine.begin() as conn:
        assert upsert_media_items(conn, [row(a, "1")]) == UpsertResult(0, 1, 0)
    assert stored(engine)[(a, "1")].accessible is True


def _play(
    row_id: int, key: str, percent: int, *, parent: str | None = None, grandparent: str | None = None
) -> dict[str, Any]:
    return {"tautulli_row_id": row_id, "rating_key": key, "parent_rating_key": parent, "plex_user_id": "7",
            "grandparent_rating_key": grandparent, "duration_seconds": 600, "paused_seconds": 0,
            "percent_complete": percent, "stopped_at": T0}  # fmt: skip


@both_backends
def test_plays_stored_before_the_item_are_linked_when_it_arrives(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        player = add_user(conn, plex_user_id="7")
        upsert_plays(conn, a, [_play(1, "9", 95)])
        upsert_plays(conn, b, [_play(1, "9", 95), _play(2, "9", 10)])  # another server's plays of its "9"
        upsert_plays(conn, a, [_play(3, "111", 95, parent="110", grandparent="100"),
                               _play(4, "112", 50, parent="110", grandparent="100")])  # fmt: skip
        upsert_media_items(conn, [row(a, "9"), *_show(a, 100, seasons=1)])
    items = stored(engine)
    movie = items[(a, "9")]
    assert (movie.total_play_count, movie.complete_play_count, movie.total_watch_time_seconds) == (1, 1, 600)
    # a new season or show counts its episodes' plays
    for key in ("100", "110"):
        assert (items[(a, key)].total_play_count, items[(a, key)].complete_play_count) == (2, 1)
    assert items[(a, "111")].total_play_count == 1 and items[(a, "112")].partial_play_count == 1
    # and in the user_stats of the SmartPlex user who played them (movies and episodes)
    with engine.connect() as conn:
        played = {
            r.media_item_id: r.play_count
            for r in conn.execute(select(user_stats).where(user_stats.c.user_id == player))
        }
    assert played == {movie.id: 1, items[(a, "111")].id: 1, items[(a, "112")].id: 1}


@both_backends
def test_watermark_is_per_server_and_section_and_only_moves_forward(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        assert get_watermark(conn, a, 1) is None
        set_watermark(conn, a, 1, T0)
        set_watermark(conn, a, 2, T0 + timedelta(days=9))
        assert set_watermark(conn, a, 1, T0 - timedelta(days=1)) == T0
        set_watermark(conn, a, 1, T0 + timedelta(seconds=1))
    with engine.connect() as conn:
        assert get_watermark(conn, a, 1) == T0 + timedelta(seconds=1)
        assert get_watermark(conn, a, 2) == T0 + timedelta(days=9)
        assert get_watermark(conn, b, 1) is None


@both_backends
def test_delete_missing_touches_only_its_section_of_its_server(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    rows = [row(a, str(n)) for n in range(10)]
    rows += [row(a, f"s{n}", section=2) for n in range(3)] + [row(b, str(n)) for n in range(10)]
    with engine.begin() as conn:
        upsert_media_items(conn, rows)
        assert delete_missing(conn, a, 1, {str(n) for n in range(2, 10)}, guard_fraction=0.2) == 2
    keys = set(stored(engine))
    assert (a, "0") not in keys and (a, "1") not in keys
    assert (b, "0") in keys and (a, "s0") in keys and len(keys) == 8 + 3 + 10


@both_backends
def test_guard_refuses_and_deletes_nothing(engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]) -> None:
    a, _ = servers
    with engine.begin() as conn:
        upsert_media_items(conn, [row(a, str(n)) for n in range(10)])
    with (
        pytest.raises(DeletionGuardError, match="10 of 10 rows of section 1 on Plex server A"),
        engine.begin() as conn,
    ):
        delete_missing(conn, a, 1, set(), guard_fraction=0.2, server_name="A")
    with pytest.raises(DeletionGuardError), engine.begin() as conn:
        delete_missing(conn, a, 1, {str(n) for n in range(7)}, guard_fraction=0.2)
    assert len(stored(engine)) == 10


def _show(
    server_id: uuid.UUID, key: int, seasons: int = 2, episodes: int = 2, **ids: Any
) -> list[dict[str, Any]]:
    """A show row with its seasons and episodes (keys key+10*s, key+10*s+e), which carry the show's ids, as
    the library sync writes them."""
    title = f"Show {key}"
    tv = dict(section=2, library_section="TV", **ids)
    rows = [row(server_id, str(key), type="show", title=title, **tv)]
    for s in range(1, seasons + 1):
        season = str(key + 10 * s)
        rows.append(row(server_id, season, type="season", title=f"Season {s}", parent=str(key), parent_title=title,
                        season_number=s, **tv))  # fmt: skip
        rows += [
            row(
                server_id,
                str(key + 10 * s + e),
                type="episode",
                title=f"Episode {e}",
                parent=season,
                grandparent=str(key),
                parent_title=title,
                grandparent_title=title,
                season_number=s,
                episode_number=e,
                **tv,
            )
            for e in range(1, episodes + 1)
        ]
    return rows


@both_backends
def test_rows_are_found_by_the_ids_an_arr_event_carries_on_one_server_and_type(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        upsert_media_items(
            conn,
            [
                row(a, "1", tmdb_id=603, imdb_id="tt0133093"),
                row(a, "2", tmdb_id=604),
                row(b, "1", tmdb_id=603),
                *_show(a, 100, tvdb_id=81189, tmdb_id=603),
                *_show(b, 100, tvdb_id=81189),
            ],
        )
        on_a = media_items.c.server_id == a
        conn.execute(update(media_items).where(on_a, media_items.c.plex_id == "2").values(radarr_movie_id=9))
        conn.execute(
            update(media_items).where(on_a, media_items.c.plex_id == "100").values(sonarr_series_id=5)
        )
    with engine.connect() as conn:
        keys = lambda found: [i.rating_key for i in found]  # noqa: E731
        assert keys(find_by_ids(conn, a, "movie", tmdb_id=603)) == ["1"]  # not the show's tmdb 603
        assert keys(find_by_ids(conn, a, "movie", imdb_id="tt0133093", radarr_movie_id=9)) == ["1", "2"]
        assert keys(find_by_ids(conn, b, "movie", tmdb_id=603)) == ["1"]
        assert find_by_ids(conn, a, "movie") == [] and find_by_ids(conn, a, "movie", tmdb_id=0) == []
        # seasons and episodes carry the show's tvdb id too: only the show is a "show"
        assert keys(find_by_ids(conn, a, "show", tvdb_id=81189)) == ["100"]
        assert keys(find_by_ids(conn, a, "show", sonarr_series_id=5)) == ["100"]
        assert keys(find_by_ids(conn, b, "show", sonarr_series_id=5)) == []
        assert keys(find_by_ids(conn, a, "show", tvdb_id=100)) == []
        assert keys(find_episodes(conn, a, {"100"}, [(2, 1), (1, 2), (3, 1)])) == ["112", "121"]
        assert find_episodes(conn, a, set(), [(1, 1)]) == []
        assert {i.rating_key for i in find_children(conn, b, ["100"])} == {
            "110",
            "111",
            "112",
            "120",
            "121",
            "122",
        }
        assert {i.rating_key for i in find_children(conn, b, ["110"])} == {"111", "112"}
        episode = find_episodes(conn, b, ["100"], [(1, 1)])[0]
        assert (
            episode.type,
            episode.section_id,
            episode.parent_rating_key,
            episode.grandparent_rating_key,
        ) == (
            "episode",
            2,
            "110",
            "100",
        )
        assert (episode.season_number, episode.episode_number) == (1, 1)


@both_backends
def test_remove_items_removes_exactly_those_rows_of_one_server_and_keeps_plays(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        add_user(conn, plex_user_id="7")
        upsert_plays(conn, a, [_play(1, "1", 100)])
        upsert_media_items(conn, [row(a, "1"), row(a, "2"), row(a, "3"), row(b, "1")])
        assert conn.scalar(select(func.count()).select_from(user_stats)) == 1
    with engine.begin() as conn:
        removed = remove_items(conn, a, ["1", "3", "404"])
    assert [(r.rating_key, r.type, r.title, r.section_id) for r in removed] == [
        ("1", "movie", "Movie 1", 1),
        ("3", "movie", "Movie 3", 1),
    ]
    assert set(stored(engine)) == {(a, "2"), (b, "1")}
    with engine.connect() as conn:
        assert conn.execute(select(watch_history.c.server_id, watch_history.c.rating_key)).all() == [(a, "1")]
        assert conn.scalar(select(func.count()).select_from(user_stats)) == 0  # gone with its row
    with engine.begin() as conn:
        assert remove_items(conn, a, ["1"]) == [] and remove_items(conn, a, []) == []
        upsert_media_items(conn, [row(a, "1")])  # the item comes back: its plays count again
    items = stored(engine)
    assert (items[(a, "1")].total_play_count, items[(b, "1")].total_play_count) == (1, 0)
    with engine.connect() as conn:
        assert conn.execute(select(user_stats.c.media_item_id, user_stats.c.play_count)).all() == [
            (items[(a, "1")].id, 1)
        ]


@both_backends
def test_mark_unavailable_touches_only_those_rows_of_one_server(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        upsert_media_items(conn, [row(a, "1"), row(a, "2"), row(b, "1")], synced_at=T0)
        assert mark_unavailable(conn, a, ["1", "404"]) == 1
        assert mark_unavailable(conn, a, ["1"]) == 0  # already marked
        assert mark_unavailable(conn, a, []) == 0
    items = stored(engine)
    assert [items[k].accessible for k in ((a, "1"), (a, "2"), (b, "1"))] == [False, True, True]
    assert items[(a, "1")].updated_at > T0 and items[(a, "2")].updated_at == T0
