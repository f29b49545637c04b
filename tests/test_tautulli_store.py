"""watch_history upserts and play totals, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select

from smartplex_sync.store.history import refresh_play_totals, upsert_plays
from smartplex_sync.store.tables import media_items, watch_history
from tests.conftest import both_backends
from tests.support.factories import add_movie

T0 = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)


def add_item(conn: Connection, rating_key: str, server_id: str = "pms-a") -> None:
    add_movie(conn, rating_key, server_id, synced_at=T0)


def play(
    row_id: int, rating_key: str, percent: int, hours: int = 0, server_id: str | None = "pms-a"
) -> dict[str, Any]:
    started = T0 + timedelta(hours=hours)
    return {
        "tautulli_row_id": row_id,
        "server_id": server_id,
        "rating_key": rating_key,
        "user_id": 7,
        "user_name": "jamie.r",
        "media_type": "movie",
        "started_at": started,
        "stopped_at": started + timedelta(minutes=percent),
        "duration_seconds": percent * 60,
        "paused_seconds": 0,
        "percent_complete": percent,
        "watched_status": 1.0 if percent >= 85 else 0.0,
    }


def totals(conn: Connection, server_id: str = "pms-a") -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        select(
            media_items.c.rating_key,
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
def test_upsert_counts_new_updated_and_unchanged_and_is_idempotent(engine: Engine) -> None:
    plays = [play(1, "10", 95), play(2, "10", 40), play(3, "11", 100)]
    with engine.begin() as conn:
        first = upsert_plays(conn, plays)
        again = upsert_plays(conn, plays)
        changed = upsert_plays(conn, [{**plays[1], "percent_complete": 70}, play(4, "11", 20)])
        stored = conn.execute(select(watch_history.c.tautulli_row_id, watch_history.c.percent_complete)).all()
    assert (first.new, first.updated, first.unchanged) == (3, 0, 0)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 3)
    assert (changed.new, changed.updated, changed.unchanged) == (1, 1, 0)
    assert sorted(stored) == [(1, 95), (2, 70), (3, 100), (4, 20)]


@both_backends
def test_upsert_in_several_batches_keeps_the_last_version_of_a_repeated_row(engine: Engine) -> None:
    plays = [play(n, str(n % 7), n % 101) for n in range(1, 1201)] + [play(5, "5", 99)]
    with engine.begin() as conn:
        counts = upsert_plays(conn, plays, batch_size=250)
        count = len(conn.execute(select(watch_history.c.id)).all())
        five = conn.execute(
            select(watch_history.c.percent_complete).where(watch_history.c.tautulli_row_id == 5)
        ).scalar_one()
    assert (counts.new, count, five) == (1200, 1200, 99)


@both_backends
def test_totals_come_from_all_stored_plays_of_the_item(engine: Engine) -> None:
    with engine.begin() as conn:
        add_item(conn, "10")
        add_item(conn, "11")
        add_item(conn, "12")
        upsert_plays(
            conn, [play(1, "10", 95, hours=0), play(2, "10", 89, hours=5), play(3, "10", 90, hours=2)]
        )
        updated = refresh_play_totals(conn, "pms-a", ["10", "11", "99"])
        result = totals(conn)
    assert updated == 2  # "99" has no media item; "12" was not asked for
    # 90 % is complete, 89 % partial
    assert result["10"] == (3, 2, 1, (95 + 89 + 90) * 60, 91.33, T0 + timedelta(hours=5, minutes=89))
    assert result["11"] == (0, 0, 0, 0, None, None)
    assert result["12"] == (0, 0, 0, 0, None, None)


@both_backends
def test_plays_stored_before_their_item_exists_are_linked_when_it_arrives(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_plays(conn, [play(1, "20", 100), play(2, "20", 10, hours=1)])
        assert refresh_play_totals(conn, "pms-a", ["20"]) == 0
        add_item(conn, "20")
        assert refresh_play_totals(conn, "pms-a", ["20"]) == 1
        assert totals(conn)["20"][:3] == (2, 1, 1)


@both_backends
def test_totals_match_on_server_and_count_plays_of_unknown_server(engine: Engine) -> None:
    with engine.begin() as conn:
        add_item(conn, "30", server_id="pms-a")
        add_item(conn, "30", server_id="pms-b")
        upsert_plays(
            conn,
            [
                play(1, "30", 100, server_id="pms-a"),
                play(2, "30", 100, server_id="pms-b"),
                play(3, "30", 50, server_id=None),
            ],
        )
        assert refresh_play_totals(conn, "pms-a", ["30"]) == 1
        assert totals(conn, "pms-a")["30"][:3] == (2, 1, 1)
        assert totals(conn, "pms-b")["30"][:3] == (0, 0, 0)  # not asked for yet
        assert refresh_play_totals(conn, None, ["30"]) == 2
        assert totals(conn, "pms-b")["30"][:3] == (2, 1, 1)


@both_backends
def test_average_is_rounded_to_two_decimals_on_both_backends(engine: Engine) -> None:
    with engine.begin() as conn:
        add_item(conn, "40")
        upsert_plays(conn, [play(1, "40", 33), play(2, "40", 33), play(3, "40", 34)])
        refresh_play_totals(conn, "pms-a", ["40"])
        assert totals(conn)["40"][4] == 33.33
