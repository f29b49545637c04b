"""overseerr-sync against the simulator over real HTTP into SmartPlex's `overseerr_requests` (paging,
SmartPlex's status words, requesters matched to SmartPlex users, library links per server), and fed by
webhooks without asking Overseerr."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

import flows.overseerr_sync as overseerr_flow
from deployments.processes import free_port
from simulators.overseerr import create_overseerr_app
from smartplex_sync.errors import SyncFailedError
from smartplex_sync.models import OverseerrRequest
from smartplex_sync.requests import OverseerrScope, OverseerrSync, Trigger
from smartplex_sync.store.tables import integrations, overseerr_requests, sync_events, users
from tests import test_arr_flows
from tests.support.factories import add_integration, add_movie, add_user
from tests.test_arr_flows import Env, add_show, no_retry_delay, secrets_absent

KEY = "overseerr-key-of-the-owner"
env = test_arr_flows.env  # the fixtures: the owner, their server, in-process flows (or with Prefect)
prefect_env = test_arr_flows.prefect_env


def stored(engine: Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(overseerr_requests).order_by(overseerr_requests.c.overseerr_request_id)
        ).all()
    found = {row.overseerr_request_id: row for row in rows}
    assert len(found) == len(rows), "one row per request"
    return found


def expected_status(raw: dict[str, Any]) -> str:
    """SmartPlex's word for an API request: its own status, `available` once the media is."""
    media = raw["media"]["status4k" if raw["is4k"] else "status"]
    if raw["status"] in (1, 3, 4):
        return {1: "pending", 3: "declined", 4: "failed"}[raw["status"]]
    return "available" if raw["status"] == 5 or media == 5 else "approved"


def run(request: OverseerrSync | None = None, trigger: Trigger = "manual", **options: Any) -> dict[str, Any]:
    return overseerr_flow.overseerr_sync.fn(request or OverseerrSync(), trigger, **options)


def people(env: Env) -> dict[str, uuid.UUID]:
    """The owner is Overseerr's user 1 (by `users.overseerr_user_id`), Bob a SmartPlex user by email."""
    with env.engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == env.owner).values(overseerr_user_id=1))
        bob = add_user(conn, "bob@example.com")
    return {"admin@example.com": env.owner, "bob@example.com": bob}


def test_full_sync_reads_every_page_and_writes_smartplex_rows(
    prefect_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = prefect_env
    no_retry_delay(monkeypatch, overseerr_flow, "fetch_page")
    app = create_overseerr_app(count=23, seed=5, api_key=KEY)
    requests = app.state.requests
    movie = next(r for r in requests if r["media"]["mediaType"] == "movie")
    show = next(r for r in requests if r["media"]["mediaType"] == "tv")
    with env.engine.begin() as conn:
        add_movie(conn, env.server_id, "1", title="In Plex", tmdb_id=movie["media"]["tmdbId"])
        add_show(conn, env.server_id, "2", show["media"]["tvdbId"])
    who = people(env)
    integration = env.integration("overseerr", env.serve(app), KEY, server_id=env.server_id)
    app.state.controls.fail_next = [500]  # the first page fails once and is retried
    report = run(page_size=10)["servers"][str(env.server_id)]

    assert app.state.controls.paths.count("/api/v1/request") == report["requests"] == 4  # 3 pages + 1 retry
    rows = stored(env.engine)
    assert sorted(rows) == list(range(1, 24))
    for request in requests:
        row, media = rows[request["id"]], request["media"]
        assert row.overseerr_status == expected_status(request), request["id"]
        assert (row.media_type, row.tmdb_id, row.tvdb_id) == (
            media["mediaType"],
            media["tmdbId"],
            media["tvdbId"],
        )
        assert row.media_title == f"{media['mediaType']} {media['tmdbId']}"  # the API does not tell the title
        assert row.seasons == (["1"] if media["mediaType"] == "tv" else None)
        assert (row.overseerr_user_id, row.integration_id) == (request["requestedBy"]["id"], integration)
        assert row.user_id == who.get(request["requestedBy"]["email"])  # Carol is no SmartPlex user
        assert (row.completed_at is not None) == (row.overseerr_status == "available")
    assert (report["received"], report["written"], report["in_library"]) == (23, 23, 2)
    assert report["skipped_without_tmdb_id"] == []


def test_a_webhook_updates_a_request_without_asking_overseerr(env: Env) -> None:
    app = create_overseerr_app(count=3, seed=1, api_key=KEY)
    integration = env.integration("overseerr", env.serve(app), KEY, server_id=env.server_id)
    who = people(env)
    run()
    first = app.state.requests[0]
    requested_at = stored(env.engine)[first["id"]].requested_at
    with env.engine.begin() as conn:  # Overseerr is unreachable now: a webhook-fed run never calls it
        conn.execute(update(integrations).values(url=f"http://127.0.0.1:{free_port()}"))
    webhook = OverseerrRequest(
        request_id=first["id"],
        media_type=first["media"]["mediaType"],
        status="AVAILABLE",
        tmdb_id=first["media"]["tmdbId"],
        media_status="AVAILABLE",
        requested_by="bob",
        requested_by_email="bob@example.com",
        title="Inception (2010)",
    )
    new = replace(webhook, request_id=99, status="PENDING", media_status="PENDING", title=None)
    result = run(OverseerrSync.on([env.server_id], OverseerrScope(requests=[webhook, new])), "webhook")
    report = result["servers"][str(env.server_id)]
    assert (report["source"], report["received"], report["written"], report["requests"]) == (
        "webhook",
        2,
        2,
        0,
    )
    rows = stored(env.engine)
    updated = rows[first["id"]]
    assert (updated.overseerr_status, updated.user_id, updated.media_title) == (
        "available", who["bob@example.com"], "Inception (2010)",
    )  # fmt: skip
    assert updated.requested_at == requested_at is not None and updated.completed_at is not None
    assert (rows[99].overseerr_status, rows[99].user_id, rows[99].integration_id) == (
        "pending", who["bob@example.com"], integration,
    )  # fmt: skip

    # A custom template without media_type: a stored tv request stays tv (it is not guessed as "movie").
    show = next(r for r in app.state.requests if r["media"]["mediaType"] == "tv")
    run(
        OverseerrSync.on(
            [env.server_id],
            OverseerrScope(requests=[replace(webhook, request_id=show["id"], media_type=None, tmdb_id=None)]),
        )
    )
    assert stored(env.engine)[show["id"]].media_type == "tv"
    (_, fed, _) = [(e.trigger_type, e.status) for e in _events(env.engine)]
    assert fed == ("webhook", "completed")


def test_smartplex_s_own_request_row_is_adopted_not_duplicated(env: Env) -> None:
    """A webhook run with no Overseerr integration writes rows of no integration; SmartPlex's own row of a
    request (its /overseerr/request route) becomes the integration's row on the first full sync."""
    app = create_overseerr_app(count=2, seed=4, api_key=KEY)
    first = app.state.requests[0]
    early = OverseerrRequest(request_id=first["id"], media_type=first["media"]["mediaType"], status="PENDING",
                             tmdb_id=first["media"]["tmdbId"], title="Requested in SmartPlex")  # fmt: skip
    report = run(OverseerrSync.on([env.server_id], OverseerrScope(requests=[early])), "webhook")["servers"][
        str(env.server_id)
    ]
    assert report["outcome"] == "completed" and report["requests"] == 0
    assert stored(env.engine)[first["id"]].integration_id is None
    integration = env.integration("overseerr", env.serve(app), KEY, server_id=env.server_id)
    run()
    rows = stored(env.engine)
    assert sorted(rows) == [1, 2] and {row.integration_id for row in rows.values()} == {integration}
    assert rows[first["id"]].media_title == "Requested in SmartPlex"


def test_one_integration_serving_two_servers_is_read_once_and_a_down_one_fails_its_part_only(
    env: Env,
) -> None:
    app = create_overseerr_app(count=12, seed=6, api_key=KEY)
    movies = [r for r in app.state.requests if r["media"]["mediaType"] == "movie"]
    cabin = env.server("Cabin", "machine-2")
    with env.engine.begin() as conn:  # the same rating key on both servers, other movies
        add_movie(conn, env.server_id, "1001", tmdb_id=movies[0]["media"]["tmdbId"])
        add_movie(conn, cabin, "1001", tmdb_id=movies[1]["media"]["tmdbId"])
        add_movie(conn, cabin, "1002", tmdb_id=movies[2]["media"]["tmdbId"])
        carol = add_user(conn, "carol@example.com")  # another user, whose Overseerr is down
    attic = env.server("Attic", "machine-3", owner=carol)
    with env.engine.begin() as conn:
        add_integration(
            conn, carol, "overseerr", url=f"http://127.0.0.1:{free_port()}", api_key="key-of-the-attic"
        )
    env.integration("overseerr", env.serve(app), KEY)  # the owner's, for both their servers
    with pytest.raises(SyncFailedError) as failed:
        run(trigger="scheduled", page_size=5)
    assert list(failed.value.failures) == [f"Attic ({attic})"]
    assert app.state.controls.paths.count("/api/v1/request") == 3  # one read of 12 requests, 5 a page
    assert len(stored(env.engine)) == 12
    result = run(OverseerrSync.on([env.server_id, cabin], OverseerrScope()), page_size=5)["servers"]
    assert (result[str(env.server_id)]["in_library"], result[str(cabin)]["in_library"]) == (1, 2)
    assert {e.server_id: e.status for e in _events(env.engine)[:3]} == {
        env.server_id: "completed", cabin: "completed", attic: "failed",
    }  # fmt: skip
    assert {row["server"]: row["outcome"] for row in env.artifacts[0]["table"]} == {
        "Living room": "completed", "Cabin": "completed", "Attic": "failed",
    }  # fmt: skip
    secrets_absent(
        [KEY, "key-of-the-attic"], env.artifacts, [tuple(e) for e in _events(env.engine)], str(failed.value)
    )


def _events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(sync_events).order_by(sync_events.c.started_at)).all()
