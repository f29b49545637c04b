"""The gateway over real HTTP: every delivery is recorded before the answer, bad input gets a 4xx, and an
accepted one is attributed to its sender's Plex servers (webhook_log.user_id / server_id, and its queued
requests scoped to those servers)."""

from __future__ import annotations

import asyncio
import json
import string
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from deployments.processes import free_port
from simulators.serving import serve_in_thread
from smartplex_sync.settings import Settings
from smartplex_sync.store import queue
from smartplex_sync.store.schedules import seed_defaults
from smartplex_sync.store.tables import webhook_log, webhook_requests
from tests.conftest import both_backends
from tests.support.factories import add_integration, add_server, add_user
from webhook_gateway.app import create_app

FIXTURES = Path(__file__).parent / "fixtures"
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")
PLEX_MACHINE = "8c5f2d8a41e7b93f0e6a2d9c7b1f40a3e5d6c7b8"  # Server.uuid of the Plex fixtures


def gateway_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, _env_file=None, **overrides)


@pytest.fixture
def owner(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """The environment's user (SMARTPLEX_OWNER_EMAIL), whose deliveries without a token from this machine
    are, with the Plex server of the fixtures: (user id, server id)."""
    with engine.begin() as conn:
        user_id = add_user(conn, gateway_settings("sqlite://").owner_email, role="admin")
        return user_id, add_server(conn, user_id, machine_id=PLEX_MACHINE)


@pytest.fixture
def gateway(database_url: str, owner: tuple[uuid.UUID, uuid.UUID]) -> Iterator[str]:
    with serve_in_thread(create_app(gateway_settings(database_url), background=False)) as url:
        yield url


def rows(engine: Engine) -> list[dict[str, Any]]:
    """Every delivery, oldest first, with its queued requests (`sync_requests`)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(webhook_log).order_by(webhook_log.c.received_at, webhook_log.c.created_at)
        )
        return [{**r._asdict(), "sync_requests": queue.requests_of(conn, r.id)} for r in found]


def on(server_id: uuid.UUID, scope: dict[str, Any]) -> dict[str, Any]:
    """A deployment's parameters: `scope` on one server."""
    return {"servers": {str(server_id): scope}}


def expected_scope(request: dict[str, Any]) -> dict[str, Any]:
    """The scope an expected.json request names (server-less, as the parser makes it)."""
    return request["scope"] if "scope" in request else request["parameters"]


def row_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(webhook_log)).scalar_one()


def post_plex(url: str, payload: dict[str, Any] | str, thumb: bool = True, **kwargs: Any) -> httpx.Response:
    files: dict[str, Any] = {"payload": (None, payload if isinstance(payload, str) else json.dumps(payload))}
    if thumb:
        files["thumb"] = ("thumb.jpg", JPEG, "image/jpeg")
    return httpx.post(f"{url}/api/webhooks/plex", files=files, **kwargs)


def fixture(source: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / source / f"{name}.json").read_text())


@both_backends
def test_every_fixture_is_recorded_with_the_action_its_source_maps_it_to(
    gateway: str, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user_id, server_id = owner
    expected = json.loads((FIXTURES / "expected.json").read_text())
    sent = 0
    for relative, outcome in expected.items():
        source, name = relative.removesuffix(".json").split("/")
        payload = fixture(source, name)
        if source == "plex":
            response = post_plex(gateway, payload)
        else:
            response = httpx.post(f"{gateway}/api/webhooks/{source}", json=payload)
        sent += 1
        body = response.json()
        row = next(r for r in rows(engine) if str(r["id"]) == body["id"])
        assert row["source"] == source
        if "error" in outcome:
            assert response.status_code == outcome["error"]["status_code"], relative
            assert (row["event_type"], row["action"]) == (outcome["error"]["event_type"], "rejected")
            continue
        assert response.status_code == 202, (relative, response.text)
        assert row["event_type"] == outcome["event_type"] == body["event_type"]
        assert row["payload"] == payload
        assert row["action"] == body["action"]
        # The owner's one server: every request is scoped to it, exactly as the source asked.
        assert row["sync_requests"] == [
            {"deployment": r["deployment"], "parameters": on(server_id, expected_scope(r))}
            for r in outcome["requests"]
        ], relative
        assert [r["parameters"] for r in body["sync_requests"]] == [
            r["parameters"] for r in row["sync_requests"]
        ]
        assert row["user_id"] == user_id, relative
        # A delivery is about the server when it asks it for a sync, or names it (Plex's Server.uuid).
        names_it = isinstance(payload.get("Server"), dict) and payload["Server"].get("uuid") == PLEX_MACHINE
        assert row["server_id"] == (server_id if outcome["requests"] or names_it else None), relative
        # Nothing to dispatch means done at once; sync requests wait for the dispatcher.
        assert row["processed"] is (not outcome["requests"])
        assert (row["processed_at"] is not None) is row["processed"]
    assert row_count(engine) == sent


def test_seed_guide_curl_examples_are_accepted(
    gateway: str, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    plex = httpx.post(
        f"{gateway}/api/webhooks/plex",
        files={"payload": (None, '{"event":"library.new","Metadata":{"ratingKey":"12345"}}')},
    )
    tautulli = httpx.post(
        f"{gateway}/api/webhooks/tautulli",
        content='{"event":"playback.stop","rating_key":"12345","user":"testuser"}',
        headers={"Content-Type": "application/json"},
    )
    assert plex.status_code == 202, plex.text
    assert tautulli.status_code == 202, tautulli.text
    assert tautulli.json()["sync_requests"] == [
        {
            "deployment": "tautulli-sync",
            "parameters": on(owner[1], {"days": None, "rating_keys": ["12345"]}),
            "wait_for_plex_scan": False,
        }
    ]
    assert [r["event_type"] for r in rows(engine)] == ["library.new", "playback.stop"]


def test_plex_thumbnail_is_read_but_never_stored(gateway: str, engine: Engine) -> None:
    payload = fixture("plex", "library_new_movie")
    response = post_plex(gateway, payload, thumb=True)
    assert response.status_code == 202
    stored = json.dumps(rows(engine)[0]["payload"])
    assert "thumb.jpg" not in stored and "\\u00ff" not in stored
    assert rows(engine)[0]["payload"] == payload


@pytest.mark.parametrize(
    ("send", "status", "error"),
    [
        (
            lambda u: httpx.post(
                f"{u}/api/webhooks/sonarr", content=b"{not json", headers={"Content-Type": "application/json"}
            ),
            400,
            "not valid JSON",
        ),
        (
            lambda u: httpx.post(
                f"{u}/api/webhooks/radarr",
                content=b"eventType=Download",
                headers={"Content-Type": "text/plain"},
            ),
            415,
            "application/json",
        ),
        (
            lambda u: httpx.post(
                f"{u}/api/webhooks/plex",
                json={"event": "library.new"},
                headers={"Content-Type": "text/plain"},
            ),
            415,
            "multipart",
        ),
        (lambda u: httpx.post(f"{u}/api/webhooks/plex", files={"other": (None, "x")}), 400, "payload"),
        (lambda u: post_plex(u, "{broken"), 400, "not valid JSON"),
        (lambda u: httpx.post(f"{u}/api/webhooks/overseerr", json=[1, 2, 3]), 422, "object"),
        (
            lambda u: httpx.post(
                f"{u}/api/webhooks/tautulli", content=b"", headers={"Content-Type": "application/json"}
            ),
            400,
            "empty",
        ),
        (
            lambda u: post_plex(u, {"event": "library.new", "Metadata": {"librarySectionID": "movies"}}),
            422,
            "librarySectionID",
        ),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_still_gets_its_row(
    gateway: str, engine: Engine, send: Any, status: int, error: str
) -> None:
    response = send(gateway)
    assert response.status_code == status, response.text
    body = response.json()
    assert error.lower() in body["detail"].lower()
    [row] = rows(engine)
    assert str(row["id"]) == body["id"]
    assert row["action"] == "rejected"
    assert row["http_status"] == status
    assert row["event_type"]
    assert error.lower() in row["error_message"].lower()
    assert row["processed"] is True
    assert row["sync_requests"] == [] and row["server_id"] is None


def test_undecodable_body_is_kept_raw_for_troubleshooting(gateway: str, engine: Engine) -> None:
    httpx.post(
        f"{gateway}/api/webhooks/sonarr",
        content=b'{"eventType": "Download",',
        headers={"Content-Type": "application/json"},
    )
    assert rows(engine)[0]["payload"] == {"raw": '{"eventType": "Download",'}


def test_body_over_the_limit_is_refused_with_413(database_url: str, engine: Engine, owner: Any) -> None:
    app = create_app(gateway_settings(database_url, max_body_bytes=1024), background=False)
    with serve_in_thread(app) as url:
        response = httpx.post(f"{url}/api/webhooks/radarr", json={"eventType": "Test", "pad": "x" * 2000})
    assert response.status_code == 413
    assert rows(engine)[0]["http_status"] == 413


def test_event_type_is_never_null(gateway: str, engine: Engine) -> None:
    response = httpx.post(f"{gateway}/api/webhooks/sonarr", json={"series": {"id": 1}})
    assert response.status_code in (202, 422)
    assert rows(engine)[0]["event_type"] == "unknown"


def test_status_has_the_seed_guides_shape_and_no_payloads(gateway: str) -> None:
    post_plex(gateway, fixture("plex", "library_new_movie"))
    httpx.post(f"{gateway}/api/webhooks/radarr", json={"eventType": "Test", "secretish": "do-not-show"})
    httpx.post(f"{gateway}/api/webhooks/radarr", content=b"{", headers={"Content-Type": "application/json"})
    status = httpx.get(f"{gateway}/api/webhooks/status").json()
    assert status["total_webhooks"] == 3
    assert status["by_source"] == {"plex": 1, "radarr": 2}
    assert status["pending_dispatch"] == 1
    newest = status["recent_webhooks"][0]
    assert {
        "source",
        "event_type",
        "received_at",
        "processed",
        "action",
        "flow_run_id",
        "flow_run_ids",
        "error_message",
        "user_id",
        "server_id",
    } <= set(newest)
    uuid.UUID(newest["id"])
    assert [w["event_type"] for w in status["recent_webhooks"]] == ["unknown", "Test", "library.new"]
    assert "do-not-show" not in json.dumps(status)


def test_healthz_and_openapi(gateway: str) -> None:
    assert httpx.get(f"{gateway}/healthz").json()["database"] == "ok"
    paths = httpx.get(f"{gateway}/openapi.json").json()["paths"]
    for source in ("plex", "tautulli", "sonarr", "radarr", "overseerr"):
        assert "post" in paths[f"/api/webhooks/{source}"]
    assert "/api/webhooks/status" in paths


_content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "",
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "image/jpeg",
    ]
)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet=string.printable, max_size=200).map(str.encode),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60).map(str.encode),  # NUL too
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
)


@both_backends  # PostgreSQL refuses NUL characters that SQLite takes
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.sampled_from(["plex", "tautulli", "sonarr", "radarr", "overseerr"]),
    body=_bodies,
    content_type=_content_types,
)
def test_no_input_produces_a_5xx_and_every_delivery_gets_a_row(
    gateway: str, engine: Engine, source: str, body: bytes, content_type: str
) -> None:
    before = row_count(engine)
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{gateway}/api/webhooks/{source}", content=body, headers=headers)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert row_count(engine) == before + 1
    assert response.json()["id"] == str(rows(engine)[-1]["id"])


def test_sync_status_lists_each_sync_schedule_row(
    gateway: str, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    with engine.begin() as conn:
        other = add_user(conn, "other@example.com")
        add_server(conn, other, machine_id="m-other")
    seed_defaults(engine)  # what the schedule mirror does first (not running here)
    status = httpx.get(f"{gateway}/api/sync/status").json()
    schedules = status["schedules"]
    assert len(schedules) == 10  # one row per user with a server and service
    defaults = {
        "plex": (12, True, "plex-library-sync"),
        "tautulli": (6, True, "tautulli-sync"),
        "sonarr": (24, False, "sonarr-sync"),
        "radarr": (24, False, "radarr-sync"),
        "overseerr": (6, False, "overseerr-sync"),
    }
    for user_id in (owner[0], other):
        mine = {s["service"]: s for s in schedules if s["user_id"] == str(user_id)}
        assert {
            name: (s["interval_hours"], s["enabled"], s["deployment"]) for name, s in mine.items()
        } == defaults
        assert all(s["slug"] == f"sync-schedule-{s['id']}" and s["run_count"] == 0 for s in mine.values())
    assert status["mirrored_at"] is None  # the mirror has not run


def test_replay_records_a_new_delivery_from_the_stored_payload(
    gateway: str, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    original = httpx.post(f"{gateway}/api/webhooks/radarr", json=fixture("radarr", "download"))
    assert original.status_code == 202, original.text
    assert {tuple(r["parameters"]["servers"]) for r in original.json()["sync_requests"]} == {(str(owner[1]),)}
    replayed = httpx.post(f"{gateway}/api/webhooks/{original.json()['id']}/replay")
    assert replayed.status_code == 202, replayed.text
    body = replayed.json()
    assert body["id"] != original.json()["id"]
    assert body["sync_requests"] == original.json()["sync_requests"]
    assert body["note"].startswith(f"replay of webhook {original.json()['id']}")
    first, second = rows(engine)
    assert second["payload"] == first["payload"] and second["processed"] is False
    assert (second["user_id"], second["server_id"]) == (first["user_id"], first["server_id"]) == owner
    assert second["sync_requests"] == first["sync_requests"]


def test_replay_refuses_what_cannot_be_replayed(gateway: str) -> None:
    broken = httpx.post(
        f"{gateway}/api/webhooks/sonarr", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert httpx.post(f"{gateway}/api/webhooks/{broken.json()['id']}/replay").status_code == 409
    missing = httpx.post(f"{gateway}/api/webhooks/{uuid.uuid4()}/replay")
    assert missing.status_code == 404 and missing.json()["id"] is None


def test_tautulli_form_fields_and_arr_put_are_accepted(
    gateway: str, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """Tautulli sends form fields when the user's JSON headers change the Content-Type; Sonarr can PUT."""
    form = httpx.post(f"{gateway}/api/webhooks/tautulli", data={"event": "stop", "rating_key": "91544"})
    put = httpx.put(f"{gateway}/api/webhooks/sonarr", json=fixture("sonarr", "test"))
    assert form.status_code == 202 and put.status_code == 202
    assert form.json()["sync_requests"][0]["parameters"] == on(
        owner[1], {"days": None, "rating_keys": ["91544"]}
    )
    assert put.json()["action"] == "test"


@both_backends
def test_nul_characters_are_stored_without_failing_the_delivery(gateway: str, engine: Engine) -> None:
    response = httpx.post(f"{gateway}/api/webhooks/radarr", json={"eventType": "Te\x00st", "x": "a\x00b"})
    assert response.status_code == 202, response.text
    [row] = rows(engine)
    assert (row["event_type"], row["payload"]["x"]) == ("Te\ufffdst", "a\ufffdb")


def test_a_content_type_header_that_is_not_ascii_gets_a_4xx(gateway: str, engine: Engine) -> None:
    for source in ("sonarr", "plex"):
        response = httpx.post(
            f"{gateway}/api/webhooks/{source}",
            content=b"{}",
            headers={"Content-Type": b"application/\xe9json"},
        )
        assert response.status_code == 415, response.text
    assert [r["http_status"] for r in rows(engine)] == [415, 415]


def test_replay_of_an_id_that_is_not_a_uuid_is_a_422(gateway: str) -> None:
    for not_an_id in ("999", "99999999999999999999", "not-a-uuid", "1234abcd"):  # prefixes are the CLI's
        assert httpx.post(f"{gateway}/api/webhooks/{not_an_id}/replay").status_code == 422


# --- two users, two servers each: through the app, with each user's webhook secret ---------------------


def post_plex_with(client: TestClient, secret: str, payload: dict[str, Any]) -> Any:
    return client.post(
        "/api/webhooks/plex", params={"token": secret}, files={"payload": (None, json.dumps(payload))}
    )


def library_new(machine: str | None, section: int = 1) -> dict[str, Any]:
    payload: dict[str, Any] = {"event": "library.new", "Metadata": {"librarySectionID": section}}
    if machine is not None:
        payload["Server"] = {"title": "Plex", "uuid": machine}
    return payload


def queued_servers(engine: Engine, webhook_id: str) -> list[tuple[str, list[str]]]:
    """(deployment, servers) of each request a delivery queued, in order."""
    with engine.connect() as conn:
        found = conn.execute(
            select(webhook_requests.c.deployment, webhook_requests.c.parameters)
            .where(webhook_requests.c.webhook_id == uuid.UUID(webhook_id))
            .order_by(webhook_requests.c.ordinal)
        )
        return [(r.deployment, sorted(r.parameters["servers"])) for r in found]


def logged(engine: Engine, webhook_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return (
            conn.execute(select(webhook_log).where(webhook_log.c.id == uuid.UUID(webhook_id))).one()._asdict()
        )


@both_backends
def test_deliveries_of_two_users_are_recorded_as_theirs_and_sync_only_their_servers(
    database_url: str, engine: Engine
) -> None:
    """Alice and Bob each have two servers, and both have a row for one shared Plex machine. Each delivery
    carries its sender's webhook secret; what it asks for is queued on that sender's servers only."""
    with engine.begin() as conn:
        alice = add_user(conn, "alice@example.com", secret="alice-secret-Pq19z")
        bob = add_user(conn, "bob@example.com", secret="bob-secret-Xc73m")
        alice_shared = add_server(conn, alice, name="Shared", machine_id="m-shared")
        alice_home = add_server(conn, alice, name="Home", machine_id="m-alice")
        bob_shared = add_server(conn, bob, name="Shared", machine_id="m-shared")
        bob_home = add_server(conn, bob, name="Home", machine_id="m-bob")
        add_integration(conn, alice, "sonarr", server_id=alice_home)
        add_integration(conn, bob, "sonarr", server_id=bob_home)
    app = create_app(gateway_settings(database_url), background=False)
    with TestClient(app) as client:  # a client that is not local: only a secret opens the endpoints
        sent = {
            "alice plex shared": post_plex_with(client, "alice-secret-Pq19z", library_new("m-shared")),
            "bob plex shared": post_plex_with(client, "bob-secret-Xc73m", library_new("m-shared")),
            "bob tautulli home": client.post(
                "/api/webhooks/tautulli",
                json={"event": "stop", "rating_key": "91544", "server_machine_id": "m-bob"},
                headers={"Authorization": "Bearer bob-secret-Xc73m"},
            ),
            "alice sonarr": client.post(
                "/api/webhooks/sonarr",
                json=fixture("sonarr", "download"),
                headers={"X-Webhook-Token": "alice-secret-Pq19z"},
            ),
            "bob radarr": client.post(
                "/api/webhooks/radarr",
                json=fixture("radarr", "download"),
                headers={"Authorization": "Bearer bob-secret-Xc73m"},
            ),
        }
        for name, response in sent.items():
            assert response.status_code == 202, (name, response.text)
        ids = {name: response.json()["id"] for name, response in sent.items()}
        expected = {
            "alice plex shared": (alice, alice_shared, [("plex-library-sync", [alice_shared])]),
            "bob plex shared": (bob, bob_shared, [("plex-library-sync", [bob_shared])]),
            "bob tautulli home": (bob, bob_home, [("tautulli-sync", [bob_home])]),
            # Alice's Sonarr serves her Home server: the download's library sync and arr sync go there.
            "alice sonarr": (
                alice,
                alice_home,
                [("plex-library-sync", [alice_home]), ("sonarr-sync", [alice_home])],
            ),
            # No Radarr of Bob's: every server of his (and then no single webhook_log.server_id).
            "bob radarr": (
                bob,
                None,
                [
                    ("plex-library-sync", sorted([bob_shared, bob_home])),
                    ("radarr-sync", sorted([bob_shared, bob_home])),
                ],
            ),
        }
        for name, (user_id, server_id, requests) in expected.items():
            row = logged(engine, ids[name])
            assert (row["user_id"], row["server_id"], row["http_status"]) == (user_id, server_id, 202), name
            wanted = [(deployment, [str(s) for s in servers]) for deployment, servers in requests]
            assert queued_servers(engine, ids[name]) == wanted, name
            assert [
                (r["deployment"], sorted(r["parameters"]["servers"]))
                for r in sent[name].json()["sync_requests"]
            ] == wanted

        # Alice's secret naming Bob's machine, and a Plex delivery of hers that names no server (she has
        # two): recorded with the reason, answered 422, nothing queued.
        reasons = {"m-bob": "no Plex server with machine identifier m-bob", None: "2 Plex servers"}
        for machine, reason in reasons.items():
            payload = library_new(machine)
            refused = post_plex_with(client, "alice-secret-Pq19z", payload)
            assert refused.status_code == 422, refused.text
            body = refused.json()
            assert body["error"] == "unattributed" and reason in body["detail"]
            row = logged(engine, body["id"])
            assert (row["action"], row["http_status"], row["processed"]) == ("rejected", 422, True)
            assert (row["user_id"], row["server_id"]) == (alice, None)
            assert row["error_message"] == body["detail"] and row["payload"] == payload
            assert queued_servers(engine, body["id"]) == []
    with engine.connect() as conn:
        queued = conn.execute(select(func.count()).select_from(webhook_requests)).scalar_one()
    assert queued == sum(len(requests) for _, _, requests in expected.values())


@both_backends
def test_an_unattributed_delivery_replayed_once_its_server_is_in_smartplex_syncs_it(
    database_url: str, engine: Engine
) -> None:
    with engine.begin() as conn:
        alice = add_user(conn, "alice@example.com", secret="alice-secret-Pq19z")
        add_server(conn, alice, machine_id="m-alice")
    app = create_app(gateway_settings(database_url, admin_token="admin-Wk27p"), background=False)
    with TestClient(app) as client:
        early = post_plex_with(client, "alice-secret-Pq19z", library_new("m-new"))
        assert (early.status_code, early.json()["error"]) == (422, "unattributed")
        with engine.begin() as conn:
            new_server = add_server(conn, alice, name="New", machine_id="m-new")
        replayed = client.post(
            f"/api/webhooks/{early.json()['id']}/replay", headers={"Authorization": "Bearer admin-Wk27p"}
        )
        assert replayed.status_code == 202, replayed.text
    row = logged(engine, replayed.json()["id"])
    assert (row["user_id"], row["server_id"]) == (alice, new_server)
    assert queued_servers(engine, replayed.json()["id"]) == [("plex-library-sync", [str(new_server)])]


def test_healthz_reports_each_background_loop_and_a_stopped_one_is_a_503(database_url: str) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/api"  # the loops keep running while Prefect is away
    app = create_app(gateway_settings(database_url, prefect_api_url=unreachable))
    with TestClient(app) as client:
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["loops"] == {"dispatcher": "running", "schedule-mirror": "running"}
        [mirror] = [task for task in app.state.gateway.tasks if task.get_name() == "schedule-mirror"]
        client.portal.call(mirror.cancel)
        for _ in range(50):  # bounded: the cancellation lands on the loop's next await
            health = client.get("/healthz")
            if health.status_code != 200:
                break
            client.portal.call(asyncio.sleep, 0.1)
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        assert health.json()["loops"] == {"dispatcher": "running", "schedule-mirror": "stopped"}
    assert create_app(gateway_settings(database_url), background=False).state.gateway.loops() == {
        "dispatcher": "disabled",
        "schedule-mirror": "disabled",
    }
