"""The gateway over real HTTP: every delivery is recorded before the answer, bad input gets a 4xx."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from simulators.serving import serve_in_thread
from smartplex_sync.settings import Settings
from smartplex_sync.store.tables import webhook_log
from tests.conftest import both_backends
from webhook_gateway.app import create_app

FIXTURES = Path(__file__).parent / "fixtures"
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


def gateway_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, _env_file=None, **overrides)


@pytest.fixture
def gateway(database_url: str) -> Iterator[str]:
    with serve_in_thread(create_app(gateway_settings(database_url), background=False)) as url:
        yield url


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [r._asdict() for r in conn.execute(select(webhook_log).order_by(webhook_log.c.id))]


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
    gateway: str, engine: Engine
) -> None:
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
        row = next(r for r in rows(engine) if r["id"] == body["id"])
        assert row["source"] == source
        if "error" in outcome:
            assert response.status_code == outcome["error"]["status_code"], relative
            assert (row["event_type"], row["action"]) == (outcome["error"]["event_type"], "rejected")
            continue
        assert response.status_code == 202, (relative, response.text)
        assert row["event_type"] == outcome["event_type"] == body["event_type"]
        assert row["payload"] == payload
        assert row["action"] == body["action"]
        assert [r["deployment"] for r in row["sync_requests"]] == [
            r["deployment"] for r in outcome["requests"]
        ], relative
        # Nothing to dispatch means done at once; sync requests wait for the dispatcher.
        assert row["processed"] is (not outcome["requests"])
        assert (row["processed_at"] is not None) is row["processed"]
    assert row_count(engine) == sent


def test_seed_guide_curl_examples_are_accepted(gateway: str, engine: Engine) -> None:
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
            "parameters": {"days": None, "rating_keys": ["12345"]},
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
    assert row["id"] == body["id"]
    assert row["action"] == "rejected"
    assert row["http_status"] == status
    assert row["event_type"]
    assert error.lower() in row["error_message"].lower()
    assert row["processed"] is True


def test_undecodable_body_is_kept_raw_for_troubleshooting(gateway: str, engine: Engine) -> None:
    httpx.post(
        f"{gateway}/api/webhooks/sonarr",
        content=b'{"eventType": "Download",',
        headers={"Content-Type": "application/json"},
    )
    assert rows(engine)[0]["payload"] == {"raw": '{"eventType": "Download",'}


def test_body_over_the_limit_is_refused_with_413(database_url: str, engine: Engine) -> None:
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
        "error_message",
    } <= set(newest)
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
    assert response.json()["id"] == rows(engine)[-1]["id"]


def test_sync_status_shows_each_services_schedule(gateway: str) -> None:
    services = httpx.get(f"{gateway}/api/sync/status").json()["services"]
    assert {name: (s["interval_hours"], s["enabled"]) for name, s in services.items()} == {
        "plex": (12, True),
        "tautulli": (6, True),
        "sonarr": (24, False),
        "radarr": (24, False),
        "overseerr": (6, False),
    }
    assert services["plex"]["deployment"] == "plex-library-sync"


def test_replay_records_a_new_delivery_from_the_stored_payload(gateway: str, engine: Engine) -> None:
    original = httpx.post(f"{gateway}/api/webhooks/radarr", json=fixture("radarr", "download"))
    replayed = httpx.post(f"{gateway}/api/webhooks/{original.json()['id']}/replay")
    assert replayed.status_code == 202, replayed.text
    body = replayed.json()
    assert body["id"] != original.json()["id"]
    assert body["sync_requests"] == original.json()["sync_requests"]
    assert body["note"].startswith(f"replay of webhook {original.json()['id']}")
    first, second = rows(engine)
    assert second["payload"] == first["payload"] and second["processed"] is False


def test_replay_refuses_what_cannot_be_replayed(gateway: str) -> None:
    broken = httpx.post(
        f"{gateway}/api/webhooks/sonarr", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert httpx.post(f"{gateway}/api/webhooks/{broken.json()['id']}/replay").status_code == 409
    assert httpx.post(f"{gateway}/api/webhooks/999/replay").status_code == 404


def test_tautulli_form_fields_and_arr_put_are_accepted(gateway: str, engine: Engine) -> None:
    """Tautulli sends form fields when the user's JSON headers change the Content-Type; Sonarr can PUT."""
    form = httpx.post(f"{gateway}/api/webhooks/tautulli", data={"event": "stop", "rating_key": "91544"})
    put = httpx.put(f"{gateway}/api/webhooks/sonarr", json=fixture("sonarr", "test"))
    assert form.status_code == 202 and put.status_code == 202
    assert form.json()["sync_requests"][0]["parameters"] == {"days": None, "rating_keys": ["91544"]}
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


def test_replay_of_an_id_out_of_range_is_a_4xx(gateway: str) -> None:
    assert httpx.post(f"{gateway}/api/webhooks/99999999999999999999/replay").status_code == 422
