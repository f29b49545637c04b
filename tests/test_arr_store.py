"""arr_items and link_arr_ids on both backends: matching, ordering, unlinking and id filling."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, select

from smartplex_sync.store import utcnow
from smartplex_sync.store.arr import (
    ArrItem,
    coverage,
    link_arr_ids,
    remove_arr_items_except,
    upsert_arr_items,
)
from smartplex_sync.store.tables import arr_items, media_items
from tests.conftest import both_backends

SERVER = "srv1"


def add_media(conn: Connection, rating_key: str, type_: str, title: str, **values: Any) -> None:
    conn.execute(
        media_items.insert().values(
            server_id=SERVER, rating_key=rating_key, type=type_, title=title, **values
        )
    )


def arr_ids(conn: Connection) -> dict[str, tuple[int | None, int | None]]:
    rows = conn.execute(
        select(media_items.c.rating_key, media_items.c.sonarr_series_id, media_items.c.radarr_movie_id)
    )
    return {r.rating_key: (r.sonarr_series_id, r.radarr_movie_id) for r in rows}


def add_show(conn: Connection, key: str, tvdb_id: int | None, **values: Any) -> None:
    """A show with one season and one episode; the episode carries its own (episode) tvdb id."""
    add_media(conn, key, "show", f"Show {key}", tvdb_id=tvdb_id, **values)
    add_media(conn, f"{key}-s1", "season", "Season 1", parent_rating_key=key)
    add_media(
        conn,
        f"{key}-e1",
        "episode",
        "Pilot",
        parent_rating_key=f"{key}-s1",
        grandparent_rating_key=key,
        tvdb_id=555000 + int(key),
    )


@both_backends
def test_shows_and_their_episodes_link_by_tvdb_and_movies_by_tmdb_then_imdb(engine: Engine) -> None:
    with engine.begin() as conn:
        add_show(conn, "10", tvdb_id=81189)
        add_show(conn, "20", tvdb_id=None, tmdb_id=60059)  # Plex knew it only by tmdb
        add_show(conn, "30", tvdb_id=99999)  # not in Sonarr
        add_media(conn, "40", "movie", "Heat", tmdb_id=949)
        add_media(conn, "41", "movie", "Alien", imdb_id="tt0078748")
        add_media(conn, "42", "movie", "Not in Radarr", tmdb_id=1)
        upsert_arr_items(
            conn,
            [
                ArrItem("sonarr", 1, "Breaking Bad", tvdb_id=81189, tmdb_id=1396, imdb_id="tt0903747"),
                ArrItem("sonarr", 2, "Better Call Saul", tvdb_id=273181, tmdb_id=60059),
                ArrItem("sonarr", 3, "Episode-id clash", tvdb_id=555010),  # equals show 10's episode tvdb id
                ArrItem("radarr", 7, "Heat", tmdb_id=949, imdb_id="tt0113277"),
                ArrItem("radarr", 8, "Alien", imdb_id="tt0078748", tmdb_id=348),
            ],
            utcnow(),
        )
        changed = link_arr_ids(conn)
        ids = arr_ids(conn)

    assert ids["10"] == ids["10-s1"] == ids["10-e1"] == (1, None)
    assert ids["20"] == ids["20-s1"] == ids["20-e1"] == (2, None)
    assert ids["30"] == ids["30-e1"] == (None, None)
    assert ids["40"] == (None, 7)
    assert ids["41"] == (None, 8)
    assert ids["42"] == (None, None)
    assert changed == 8
    with engine.begin() as conn:
        assert link_arr_ids(conn) == 0  # idempotent


@both_backends
def test_arr_side_first_then_plex_rows_arrive_and_get_linked(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_arr_items(conn, [ArrItem("sonarr", 12, "Harbor Lights", tvdb_id=9876543)], utcnow())
        assert link_arr_ids(conn) == 0
    with engine.begin() as conn:  # the Plex library sync lands later and calls link_arr_ids itself
        add_show(conn, "77", tvdb_id=9876543)
        assert link_arr_ids(conn) == 3
        assert arr_ids(conn)["77-e1"] == (12, None)


@both_backends
def test_missing_ids_are_filled_but_plex_ids_are_kept(engine: Engine) -> None:
    with engine.begin() as conn:
        add_media(conn, "1", "movie", "Heat", tmdb_id=949)
        add_media(conn, "2", "show", "Saul", tvdb_id=273181, imdb_id="tt-plex")
        upsert_arr_items(
            conn,
            [
                ArrItem("radarr", 7, "Heat", tmdb_id=949, imdb_id="tt0113277"),
                ArrItem("sonarr", 2, "Saul", tvdb_id=273181, tmdb_id=60059, imdb_id="tt3032476"),
            ],
            utcnow(),
        )
        link_arr_ids(conn)
        rows = {
            r.rating_key: (r.tvdb_id, r.tmdb_id, r.imdb_id)
            for r in conn.execute(
                select(
                    media_items.c.rating_key,
                    media_items.c.tvdb_id,
                    media_items.c.tmdb_id,
                    media_items.c.imdb_id,
                )
            )
        }
    assert rows == {"1": (None, 949, "tt0113277"), "2": (273181, 60059, "tt-plex")}


@both_backends
def test_removed_series_unlinks_and_coverage_reports_both_sides(engine: Engine) -> None:
    series = [ArrItem("sonarr", 1, "A", tvdb_id=100), ArrItem("sonarr", 2, "B", tvdb_id=200)]
    with engine.begin() as conn:
        add_show(conn, "10", tvdb_id=100)
        add_show(conn, "20", tvdb_id=300)  # in Plex, not in Sonarr
        upsert_arr_items(conn, series, utcnow())
        link_arr_ids(conn)
        report = coverage(conn, "sonarr", series)
        assert (report.matched, [i.arr_id for i in report.unmatched], report.library_unlinked) == (
            [1],
            [2],
            1,
        )

        assert remove_arr_items_except(conn, "sonarr", [2]) == 1
        assert link_arr_ids(conn) == 3  # show 10, its season and episode lose the stale id
        assert arr_ids(conn)["10-e1"] == (None, None)
        assert conn.execute(select(arr_items.c.arr_id)).scalars().all() == [2]


@both_backends
def test_webhook_item_without_path_keeps_the_stored_path(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_arr_items(conn, [ArrItem("radarr", 5, "Old", tmdb_id=1, path="/movies/Old")], utcnow())
        upsert_arr_items(conn, [ArrItem("radarr", 5, "New", tmdb_id=2)], utcnow())
        row = conn.execute(select(arr_items)).one()
    assert (row.title, row.tmdb_id, row.path) == ("New", 2, "/movies/Old")
