"""overseerr_requests upserts and the library link, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from smartplex_sync.store import utcnow
from smartplex_sync.store.overseerr import OverseerrRequest, requests_in_library, upsert_requests
from smartplex_sync.store.tables import media_items, overseerr_requests
from tests.conftest import both_backends

CREATED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@both_backends
def test_upsert_keeps_what_a_webhook_does_not_tell(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_requests(
            conn,
            [OverseerrRequest(7, "movie", "APPROVED", tmdb_id=603, is_4k=True, requested_at=CREATED)],
            utcnow(),
        )
        upsert_requests(conn, [OverseerrRequest(7, "movie", "AVAILABLE", media_status="AVAILABLE")], utcnow())
        upsert_requests(conn, [OverseerrRequest(8, "tv", "PENDING", tvdb_id=81189)], utcnow())
        rows = {
            r.request_id: (r.status, r.media_status, r.tmdb_id, r.is_4k, r.requested_at)
            for r in conn.execute(select(overseerr_requests))
        }
    assert rows == {
        7: ("AVAILABLE", "AVAILABLE", 603, True, CREATED),
        8: ("PENDING", None, None, False, None),
    }


@both_backends
def test_requests_link_to_movies_by_tmdb_and_shows_by_tvdb_or_tmdb(engine: Engine) -> None:
    with engine.begin() as conn:
        for key, type_, ids in (
            ("1", "movie", {"tmdb_id": 603}),
            ("2", "show", {"tvdb_id": 81189}),
            ("3", "show", {"tmdb_id": 60059}),
            ("4", "episode", {"tmdb_id": 604}),  # an episode never stands for a request
        ):
            conn.execute(
                media_items.insert().values(server_id="s", rating_key=key, type=type_, title=key, **ids)
            )
        upsert_requests(
            conn,
            [
                OverseerrRequest(1, "movie", "APPROVED", tmdb_id=603),
                OverseerrRequest(2, "tv", "APPROVED", tmdb_id=1396, tvdb_id=81189),
                OverseerrRequest(3, "tv", "APPROVED", tmdb_id=60059, tvdb_id=273181),
                OverseerrRequest(4, "movie", "PENDING", tmdb_id=604),
                OverseerrRequest(5, "movie", "PENDING", tmdb_id=81189),  # a tvdb number, but a movie request
            ],
            utcnow(),
        )
        linked = {r.request_id: r.title for r in requests_in_library(conn)}
    assert linked == {1: "1", 2: "2", 3: "3", 4: None, 5: None}
