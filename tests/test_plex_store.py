"""media_items upserts, watermarks and scoped, guarded deletion, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from smartplex_sync.errors import DeletionGuardError
from smartplex_sync.store.media import (
    PLEX_COLUMNS,
    UpsertResult,
    delete_missing,
    get_watermark,
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
