"""overseerr-sync against the simulator over real HTTP (paging, status names, library links) and fed by
webhooks without Overseerr configured."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import Engine, select

import flows.overseerr_sync as overseerr_flow
from simulators.overseerr import create_overseerr_app
from simulators.serving import serve_in_thread
from smartplex_sync.models import OverseerrRequest
from smartplex_sync.requests import OverseerrSync
from smartplex_sync.store.overseerr import requests_in_library
from smartplex_sync.store.tables import media_items, overseerr_requests
from tests.test_arr_flows import configure, no_retry_delay, settings  # noqa: F401 - `settings` is a fixture


def stored(engine: Engine) -> dict[int, tuple[str, str | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                overseerr_requests.c.request_id,
                overseerr_requests.c.status,
                overseerr_requests.c.media_status,
                overseerr_requests.c.requested_by,
            )
        )
        return {r.request_id: (r.status, r.media_status, r.requested_by) for r in rows}


def test_full_sync_reads_every_page_and_names_statuses(
    monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> None:
    no_retry_delay(monkeypatch, overseerr_flow, "fetch_page")
    app = create_overseerr_app(count=23, seed=5)
    requests = app.state.requests
    movie = next(r for r in requests if r["media"]["mediaType"] == "movie")
    show = next(r for r in requests if r["media"]["mediaType"] == "tv")
    with engine.begin() as conn:
        conn.execute(
            media_items.insert().values(
                server_id="s", rating_key="1", type="movie", title="In Plex", tmdb_id=movie["media"]["tmdbId"]
            )
        )
        conn.execute(
            media_items.insert().values(
                server_id="s", rating_key="2", type="show", title="Show", tvdb_id=show["media"]["tvdbId"]
            )
        )
    app.state.controls.fail_next = [500]  # the first page fails once and is retried
    with serve_in_thread(app) as url:
        configure(monkeypatch, "OVERSEERR", url, "overseerr-api-key")
        report = overseerr_flow.overseerr_sync.fn(page_size=10)

    assert app.state.controls.paths.count("/api/v1/request") == report.requests_made == 4  # 3 pages + 1 retry
    rows = stored(engine)
    assert sorted(rows) == list(range(1, 24))
    names = {1: "PENDING", 2: "APPROVED", 3: "DECLINED", 4: "FAILED", 5: "COMPLETED"}
    for request in requests:
        status, _media_status, requested_by = rows[request["id"]]
        assert status == names[request["status"]]
        assert requested_by == request["requestedBy"]["displayName"]
    assert (report.received, report.matched, report.unmatched) == (23, 2, 21)
    with engine.connect() as conn:
        linked = {r.request_id: r.title for r in requests_in_library(conn) if r.in_library}
    assert linked == {movie["id"]: "In Plex", show["id"]: "Show"}


def test_webhook_updates_a_request_without_overseerr_configured(
    monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> None:
    app = create_overseerr_app(count=3, seed=1)
    with serve_in_thread(app) as url:
        configure(monkeypatch, "OVERSEERR", url, "overseerr-api-key")
        overseerr_flow.overseerr_sync.fn()
    monkeypatch.delenv("SMARTPLEX_OVERSEERR_URL")
    from smartplex_sync.settings import get_settings

    get_settings.cache_clear()
    first = app.state.requests[0]
    with engine.connect() as conn:
        requested_at = conn.execute(
            select(overseerr_requests.c.requested_at).where(overseerr_requests.c.request_id == first["id"])
        ).scalar_one()
    webhook = OverseerrRequest(
        request_id=first["id"],
        media_type=first["media"]["mediaType"],
        status="AVAILABLE",
        tmdb_id=first["media"]["tmdbId"],
        media_status="AVAILABLE",
        requested_by="bob",
        requested_by_email="bob@example.com",
    )
    new = replace(webhook, request_id=99, status="PENDING", media_status="PENDING")
    report = overseerr_flow.overseerr_sync.fn(OverseerrSync(requests=[webhook, new]))

    assert (report.source, report.received, report.updated, report.requests_made) == ("webhook", 2, 2, 0)
    rows = stored(engine)
    assert rows[first["id"]] == ("AVAILABLE", "AVAILABLE", "bob")
    assert rows[99] == ("PENDING", "PENDING", "bob")
    with engine.connect() as conn:
        kept = conn.execute(
            select(overseerr_requests.c.requested_at).where(overseerr_requests.c.request_id == first["id"])
        ).scalar_one()
    assert kept == requested_at is not None

    # A custom template without media_type: a stored tv request stays tv (it is not guessed as "movie").
    show = next(r for r in app.state.requests if r["media"]["mediaType"] == "tv")
    overseerr_flow.overseerr_sync.fn(
        OverseerrSync(requests=[replace(webhook, request_id=show["id"], media_type=None)])
    )
    with engine.connect() as conn:
        media_type = conn.execute(
            select(overseerr_requests.c.media_type).where(overseerr_requests.c.request_id == show["id"])
        ).scalar_one()
    assert media_type == "tv"
