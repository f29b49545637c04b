"""watch_history upserts, play totals and user_stats (store/history.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, select, update

from smartplex_sync.store.history import refresh_play_totals, refresh_user_stats, upsert_plays
from smartplex_sync.store.tables import media_items, user_stats, watch_history
from tests.conftest import both_backends
from tests.support.factories import add_movie, add_server, add_user

T0 = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)


@pytest.fixture
def servers(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """Two Plex servers of one user."""
    with engine.begin() as conn:
        owner = add_user(conn)
        return add_server(conn, owner, name="A", machine_id="a"), add_server(
            conn, owner, name="B", machine_id="b"
        )


def add_item(conn: Connection, server_id: uuid.UUID, plex_id: str, type_: str = "movie") -> uuid.UUID:
    if type_ == "movie":
        return add_movie(conn, server_id, plex_id)
    item_id = uuid.uuid4()
    conn.execute(
        insert(media_items).values(
            id=item_id,
            server_id=server_id,
            plex_id=plex_id,
            type=type_,
            title=f"{type_} {plex_id}",
            metadata={},
        )
    )
    return item_id


def play(
    row_id: int,
    rating_key: str,
    percent: int,
    hours: int = 0,
    *,
    user: tuple[str | None, str | None] = ("7", "jamie.r"),
    parent: str | None = None,
    grandparent: str | None = None,
) -> dict[str, Any]:
    started = T0 + timedelta(hours=hours)
    return {
        "tautulli_row_id": row_id,
        "rating_key": rating_key,
        "parent_rating_key": parent,
        "grandparent_rating_key": grandparent,
        "plex_user_id": user[0],
        "user_name": user[1],
        "media_type": "episode" if grandparent else "movie",
        "started_at": started,
        "stopped_at": started + timedelta(minutes=percent),
        "duration_seconds": percent * 60,
        "paused_seconds": 0,
        "percent_complete": percent,
        "watched_status": 1.0 if percent >= 85 else 0.0,
    }


def totals(conn: Connection, server_id: uuid.UUID) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        select(
            media_items.c.plex_id,
            media_items.c.total_play_count,
            media_items.c.complete_play_count,
            media_items.c.partial_play_count,
            media_items.c.total_watch_time_seconds,
            media_items.c.avg_percent_complete,
            media_items.c.last_watched_at,
        ).where(media_items.c.server_id == server_id)
    )
    return {row[0]: tuple(row[1:]) for row in rows}


@both_backends
def test_upsert_counts_new_updated_and_unchanged_and_is_idempotent(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    plays = [play(1, "10", 95), play(2, "10", 40), play(3, "11", 100)]
    with engine.begin() as conn:
        first = upsert_plays(conn, a, plays)
        again = upsert_plays(conn, a, plays)
        changed = upsert_plays(conn, a, [{**plays[1], "percent_complete": 70}, play(4, "11", 20)])
        stored = conn.execute(select(watch_history.c.tautulli_row_id, watch_history.c.percent_complete)).all()
    assert (first.new, first.updated, first.unchanged) == (3, 0, 0)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 3)
    assert (changed.new, changed.updated, changed.unchanged) == (1, 1, 0)
    assert sorted(stored) == [(1, 95), (2, 70), (3, 100), (4, 20)]


@both_backends
def test_row_ids_are_per_server(engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]) -> None:
    """Each Tautulli numbers its own rows: row 1 of two servers is two plays."""
    a, b = servers
    with engine.begin() as conn:
        assert upsert_plays(conn, a, [play(1, "10", 95)]).new == 1
        assert upsert_plays(conn, b, [play(1, "10", 30)]).new == 1
        assert upsert_plays(conn, b, [play(1, "10", 30)]).unchanged == 1
        stored = conn.execute(select(watch_history.c.server_id, watch_history.c.percent_complete)).all()
    assert sorted(stored, key=lambda r: r.percent_complete) == [(b, 30), (a, 95)]


@both_backends
def test_upsert_in_several_batches_keeps_the_last_version_of_a_repeated_row(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    plays = [play(n, str(n % 7), n % 101) for n in range(1, 1201)] + [play(5, "5", 99)]
    with engine.begin() as conn:
        counts = upsert_plays(conn, a, plays, batch_size=250)
        count = len(conn.execute(select(watch_history.c.id)).all())
        five = conn.execute(
            select(watch_history.c.percent_complete).where(watch_history.c.tautulli_row_id == 5)
        ).scalar_one()
    assert (counts.new, count, five) == (1200, 1200, 99)


@both_backends
def test_totals_come_from_all_stored_plays_of_the_item(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        for key in ("10", "11", "12"):
            add_item(conn, a, key)
        upsert_plays(
            conn, a, [play(1, "10", 95, hours=0), play(2, "10", 89, hours=5), play(3, "10", 90, hours=2)]
        )
        updated = refresh_play_totals(conn, a, ["10", "11", "99"], now=T0)
        result = totals(conn, a)
        synced = conn.scalar(select(media_items.c.tautulli_synced_at).where(media_items.c.plex_id == "10"))
    assert updated == 2  # "99" has no media item; "12" was not asked for
    # 90 % is complete, 89 % partial
    assert result["10"] == (3, 2, 1, (95 + 89 + 90) * 60, 91.33, T0 + timedelta(hours=5, minutes=89))
    assert result["11"] == (0, 0, 0, 0, None, None)
    assert result["12"] == (0, 0, 0, 0, None, None)
    assert synced == T0


@both_backends
def test_a_short_window_never_lowers_a_lifetime_total(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        add_item(conn, a, "10")
        upsert_plays(conn, a, [play(n, "10", 100, hours=-24 * 30 * n) for n in range(1, 6)])  # a lifetime
        refresh_play_totals(conn, a, ["10"])
        upsert_plays(conn, a, [play(9, "10", 100)])  # a 7-day sync finds one new play
        refresh_play_totals(conn, a, ["10"])
        assert totals(conn, a)["10"][0] == 6


@both_backends
def test_plays_stored_before_their_item_exists_are_linked_when_it_arrives(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        upsert_plays(conn, a, [play(1, "20", 100), play(2, "20", 10, hours=1)])
        assert refresh_play_totals(conn, a, ["20"]) == 0
        add_item(conn, a, "20")
        assert refresh_play_totals(conn, a, ["20"]) == 1
        assert totals(conn, a)["20"][:3] == (2, 1, 1)


@both_backends
def test_play_totals_are_never_matched_across_servers(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        add_item(conn, a, "30")
        add_item(conn, b, "30")
        upsert_plays(conn, a, [play(1, "30", 100)])
        upsert_plays(conn, b, [play(1, "30", 50), play(2, "30", 50), play(3, "30", 95)])
        assert refresh_play_totals(conn, a, ["30"]) == 1
        assert totals(conn, a)["30"][:3] == (1, 1, 0)
        assert totals(conn, b)["30"][:3] == (0, 0, 0)  # not asked for yet
        assert refresh_play_totals(conn, b, ["30"]) == 1
        assert totals(conn, b)["30"][:3] == (3, 1, 2)
        assert totals(conn, a)["30"][:3] == (1, 1, 0)


@both_backends
def test_seasons_and_shows_total_their_episodes_plays(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        for key, type_ in (("100", "show"), ("110", "season"), ("120", "season"), ("111", "episode"),
                           ("121", "episode"), ("122", "episode")):  # fmt: skip
            add_item(conn, a, key, type_)
        add_item(conn, b, "100", "show")
        episode = {"grandparent": "100"}
        upsert_plays(
            conn,
            a,
            [
                play(1, "111", 100, parent="110", **episode),
                play(2, "121", 40, hours=1, parent="120", **episode),
                play(3, "122", 95, hours=3, parent="120", **episode),
                play(4, "122", 20, hours=2, parent="120", **episode),
            ],
        )
        upsert_plays(conn, b, [play(1, "999", 100, parent="998", grandparent="100")])  # B's show "100"
        # the keys a sync touched: the plays' rating, parent and grandparent keys
        assert refresh_play_totals(conn, a, ["111", "121", "122", "110", "120", "100"]) == 6
        result = totals(conn, a)
    assert result["100"][:5] == (4, 2, 2, (100 + 40 + 95 + 20) * 60, 63.75)
    assert result["100"][5] == T0 + timedelta(hours=3, minutes=95)
    assert result["110"][:3] == (1, 1, 0)
    assert result["120"][:3] == (3, 1, 2)
    assert result["122"][:3] == (2, 1, 1)
    with engine.begin() as conn:
        refresh_play_totals(conn, b, ["100"])
        assert totals(conn, b)["100"][:3] == (1, 1, 0)  # B's show counts B's plays only


@both_backends
def test_average_is_rounded_to_two_decimals_on_both_backends(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        add_item(conn, a, "40")
        upsert_plays(conn, a, [play(1, "40", 33), play(2, "40", 33), play(3, "40", 34)])
        refresh_play_totals(conn, a, ["40"])
        assert totals(conn, a)["40"][4] == 33.33


def stats(conn: Connection) -> dict[tuple[uuid.UUID, uuid.UUID], Any]:
    return {(r.user_id, r.media_item_id): r for r in conn.execute(select(user_stats))}


@both_backends
def test_user_stats_match_smartplex_users_by_plex_account_id_or_username(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        by_id = add_user(conn, "id@example.com", plex_user_id="7")
        by_name = add_user(conn, "name@example.com", plex_username="Sam.K")
        both = add_user(conn, "both@example.com", plex_user_id="9", plex_username="robin")
        nobody = add_user(conn, "nobody@example.com")
        movie, episode, other = (
            add_item(conn, a, "10"),
            add_item(conn, a, "111", "episode"),
            add_item(conn, a, "12"),
        )
        upsert_plays(
            conn,
            a,
            [
                play(1, "10", 95, user=("7", "jamie.r")),
                play(2, "10", 40, hours=4, user=("7", "renamed")),  # the account id decides
                play(3, "10", 60, hours=1, user=("8", "sam.k")),  # the username, case-insensitively
                play(
                    4, "111", 30, user=("9", "ROBIN"), parent="110", grandparent="100"
                ),  # both ways: counted once
                play(5, "10", 100, user=("99", "a stranger")),  # not a SmartPlex user
                play(6, "12", 100, user=("7", "jamie.r")),  # an item not asked for
            ],
        )
        written = refresh_user_stats(conn, a, ["10", "111", "110", "100", "404"], now=T0)
        found = stats(conn)
    assert written == 3 and set(found) == {(by_id, movie), (by_name, movie), (both, episode)}
    assert all(user != nobody and item != other for user, item in found)
    jamie = found[(by_id, movie)]
    assert (jamie.play_count, jamie.total_duration_ms, jamie.last_played_at) == (
        2,
        (95 + 40) * 60_000,
        T0 + timedelta(hours=4, minutes=40),
    )
    # the average of its plays, the last play's percent, watched once any play was complete
    assert (jamie.completion_percentage, jamie.percent_complete, jamie.watched_status) == (67.5, 40, 1)
    assert (found[(by_name, movie)].play_count, found[(by_name, movie)].watched_status) == (1, 0)
    assert (found[(both, episode)].play_count, found[(both, episode)].percent_complete) == (1, 30)


@both_backends
def test_user_stats_keep_the_rating_and_are_never_matched_across_servers(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = servers
    with engine.begin() as conn:
        jamie = add_user(conn, plex_user_id="7")
        movie_a, movie_b = add_item(conn, a, "10"), add_item(conn, b, "10")
        upsert_plays(conn, a, [play(1, "10", 95)])
        upsert_plays(conn, b, [play(1, "10", 20), play(2, "10", 20)])  # the same rating key on B
        assert refresh_user_stats(conn, a, ["10"], now=T0) == 1
        assert set(stats(conn)) == {(jamie, movie_a)}
        conn.execute(update(user_stats).values(rating=4.5))  # the user rated it in SmartPlex
        upsert_plays(conn, a, [play(3, "10", 50, hours=2)])
        assert refresh_user_stats(conn, a, ["10"], now=T0 + timedelta(days=1)) == 1
        assert refresh_user_stats(conn, b, ["10"]) == 1
        found = stats(conn)
    row_a = found[(jamie, movie_a)]
    assert (row_a.play_count, row_a.rating, row_a.updated_at) == (2, 4.5, T0 + timedelta(days=1))
    assert row_a.created_at != row_a.updated_at  # updated in place, not made again
    assert (found[(jamie, movie_b)].play_count, found[(jamie, movie_b)].rating) == (2, None)


@both_backends
def test_user_stats_without_a_matching_user_write_nothing(
    engine: Engine, servers: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = servers
    with engine.begin() as conn:
        add_user(conn, plex_username="someone")
        add_item(conn, a, "10")
        upsert_plays(
            conn, a, [play(1, "10", 95, user=(None, None)), play(2, "10", 95, user=("7", "jamie.r"))]
        )
        assert refresh_user_stats(conn, a, ["10"]) == 0
        assert refresh_user_stats(conn, a, []) == 0
        assert stats(conn) == {}
