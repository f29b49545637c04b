"""arr_items and link_arr_ids per Plex server on both backends: matching, ordering, unlinking, id filling."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
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
from tests.support.factories import add_server, add_user


@pytest.fixture
def servers(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """Two Plex servers of one user."""
    with engine.begin() as conn:
        owner = add_user(conn)
        return add_server(conn, owner, name="A", machine_id="a"), add_server(
            conn, owner, name="B", machine_id="b"
        )


def add_media(
    conn: Connection, server_id: uuid.UUID, plex_id: str, type_: str, title: str, **values: Any
) -> None:
    conn.execute(
        media_items.insert().values(
            id=uuid.uuid4(),
            server_id=server_id,
            plex_id=plex_id,
            type=type_,
            title=title,
            metadata={},
            **values,
        )
    )


def arr_ids(conn: Connection, server_id: uuid.UUID) -> dict[str, tuple[int | None, int | None]]:
    rows = conn.execute(
        select(media_items.c.plex_id, media_items.c.sonarr_series_id, media_items.c.radarr_movie_id).where(
            media_items.c.server_id == server_id
        )
    )
    return {r.plex_id: (r.sonarr_series_id, r.radarr_movie_id) for r in rows}


def add_show(conn: Connection, server_id: uuid.UUID, key: str, **ids: Any) -> None:
    """A show with one season and one episode, which carry the show's ids (as the library sync writes
    them)."""
    add_media(conn, server_id, key, "show", f"Show {key}", **ids)
    add_media(conn, server_id, f"{key}-s1", "season", "Season 1", season_number=1, **ids)
    add_media(conn, server_id, f"{key}-e1", "episode", "Pilot", season_number=1, episode_number=1, **ids)


@both_backends
def test_shows_and_their_episodes_link_by_tvdb_and_movies_by_tmdb_then_imdb(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        add_show(conn, a, "10", tvdb_id=81189)
        add_show(conn, a, "20", tmdb_id=60059)  # Plex knew it only by tmdb
        add_show(conn, a, "30", tvdb_id=99999)  # not in Sonarr
        add_media(conn, a, "40", "movie", "Heat", tmdb_id=949)
        add_media(conn, a, "41", "movie", "Alien", imdb_id="tt0078748")
        add_media(conn, a, "42", "movie", "Not in Radarr", tmdb_id=1)
        add_media(conn, a, "43", "movie", "A show's tmdb number", tmdb_id=60059)  # Sonarr's tmdb: not a movie
        upsert_arr_items(
            conn,
            a,
            [
                ArrItem("sonarr", 1, "Breaking Bad", tvdb_id=81189, tmdb_id=1396, imdb_id="tt0903747"),
                ArrItem("sonarr", 2, "Better Call Saul", tvdb_id=273181, tmdb_id=60059),
                ArrItem("radarr", 7, "Heat", tmdb_id=949, imdb_id="tt0113277"),
                ArrItem("radarr", 8, "Alien", imdb_id="tt0078748", tmdb_id=348),
            ],
            utcnow(),
        )
        changed = link_arr_ids(conn, a)
        ids = arr_ids(conn, a)

    assert ids["10"] == ids["10-s1"] == ids["10-e1"] == (1, None)
    assert ids["20"] == ids["20-s1"] == ids["20-e1"] == (2, None)
    assert ids["30"] == ids["30-s1"] == ids["30-e1"] == (None, None)
    assert ids["40"] == (None, 7)
    assert ids["41"] == (None, 8)
    assert ids["42"] == ids["43"] == (None, None)
    assert changed == 8
    with engine.begin() as conn:
        assert link_arr_ids(conn, a) == 0  # idempotent


@both_backends
def test_arr_items_link_only_on_their_own_server(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        for server in servers:
            add_show(conn, server, "10", tvdb_id=81189)
            add_media(conn, server, "40", "movie", "Heat", tmdb_id=949)
        # the same ids, another Sonarr/Radarr numbering: each server's own instance
        upsert_arr_items(
            conn,
            a,
            [ArrItem("sonarr", 1, "BB", tvdb_id=81189), ArrItem("radarr", 7, "Heat", tmdb_id=949)],
            utcnow(),
        )
        upsert_arr_items(conn, b, [ArrItem("sonarr", 5, "BB", tvdb_id=81189)], utcnow())
        assert link_arr_ids(conn, a) == 4
        assert arr_ids(conn, b) == dict.fromkeys(
            ("10", "10-s1", "10-e1", "40"), (None, None)
        )  # not linked yet
        assert link_arr_ids(conn, b) == 3
        ids_a, ids_b = arr_ids(conn, a), arr_ids(conn, b)
        assert conn.execute(
            select(arr_items.c.server_id, arr_items.c.arr_id).order_by(arr_items.c.arr_id)
        ).all() == [
            (a, 1),
            (b, 5),
            (a, 7),
        ]
    assert (ids_a["10-e1"], ids_a["40"]) == ((1, None), (None, 7))
    assert (ids_b["10-e1"], ids_b["40"]) == ((5, None), (None, None))
    with engine.begin() as conn:  # a full sync of B's Sonarr leaves A's items alone
        assert remove_arr_items_except(conn, b, "sonarr", []) == 1
        assert link_arr_ids(conn, b) == 3 and link_arr_ids(conn, a) == 0
        assert arr_ids(conn, a)["10"] == (1, None)


@both_backends
def test_arr_side_first_then_plex_rows_arrive_and_get_linked(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        upsert_arr_items(conn, a, [ArrItem("sonarr", 12, "Harbor Lights", tvdb_id=9876543)], utcnow())
        assert link_arr_ids(conn, a) == 0
    with engine.begin() as conn:  # the Plex library sync lands later and calls link_arr_ids itself
        add_show(conn, a, "77", tvdb_id=9876543)
        assert link_arr_ids(conn, a) == 3
        assert arr_ids(conn, a)["77-e1"] == (12, None)


@both_backends
def test_missing_ids_are_filled_but_plex_ids_are_kept(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        add_media(conn, a, "1", "movie", "Heat", tmdb_id=949)
        add_show(conn, a, "2", tvdb_id=273181, imdb_id="tt-plex")
        upsert_arr_items(
            conn,
            a,
            [
                ArrItem("radarr", 7, "Heat", tmdb_id=949, imdb_id="tt0113277"),
                ArrItem("sonarr", 2, "Saul", tvdb_id=273181, tmdb_id=60059, imdb_id="tt3032476"),
            ],
            utcnow(),
        )
        link_arr_ids(conn, a)
        rows = {
            r.plex_id: (r.tvdb_id, r.tmdb_id, r.imdb_id)
            for r in conn.execute(
                select(
                    media_items.c.plex_id, media_items.c.tvdb_id, media_items.c.tmdb_id, media_items.c.imdb_id
                )
            )
        }
    assert rows == {
        "1": (None, 949, "tt0113277"),
        "2": (273181, 60059, "tt-plex"),
        "2-s1": (273181, 60059, "tt-plex"),  # seasons and episodes get the show's ids too
        "2-e1": (273181, 60059, "tt-plex"),
    }


@both_backends
def test_removed_series_unlinks_and_coverage_reports_both_sides(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    series = [ArrItem("sonarr", 1, "A", tvdb_id=100), ArrItem("sonarr", 2, "B", tvdb_id=200)]
    with engine.begin() as conn:
        add_show(conn, a, "10", tvdb_id=100)
        add_show(conn, a, "20", tvdb_id=300)  # in Plex, not in Sonarr
        add_show(conn, b, "30", tvdb_id=200)  # another server's show: not this library
        upsert_arr_items(conn, a, series, utcnow())
        link_arr_ids(conn, a)
        report = coverage(conn, a, "sonarr", series)
        assert (report.matched, [i.arr_id for i in report.unmatched], report.library_unlinked) == (
            [1],
            [2],
            1,
        )

        assert remove_arr_items_except(conn, a, "sonarr", [2]) == 1
        assert link_arr_ids(conn, a) == 3  # show 10, its season and episode lose the stale id
        assert arr_ids(conn, a)["10-e1"] == (None, None)
        assert conn.execute(select(arr_items.c.arr_id)).scalars().all() == [2]


@both_backends
def test_webhook_item_without_path_keeps_the_stored_path(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        upsert_arr_items(conn, a, [ArrItem("radarr", 5, "Old", tmdb_id=1, path="/movies/Old")], utcnow())
        upsert_arr_items(conn, a, [ArrItem("radarr", 5, "New", tmdb_id=2)], utcnow())
        row = conn.execute(select(arr_items)).one()
    assert (row.server_id, row.title, row.tmdb_id, row.path) == (a, "New", 2, "/movies/Old")
