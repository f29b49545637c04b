"""Secrets that open one door each: a token per source, in the forms its sender can send; an admin token
that no webhook token replaces; local-only when a token is missing, and a proxy is never local."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select
from starlette.requests import Request

from simulators.serving import serve_in_thread
from smartplex_sync.settings import Settings
from smartplex_sync.store.tables import webhook_log
from webhook_gateway.app import create_app
from webhook_gateway.auth import ACCEPTED_FORMS, Form, is_local, token_matches, webhook_refusal

SOURCES = ("plex", "tautulli", "sonarr", "radarr", "overseerr")
TOKENS = {source: f"{source}-door-Zq81x" for source in SOURCES}
ADMIN_TOKEN = "admin-door-Wk27p"
BODIES: dict[str, dict[str, Any]] = {
    "plex": {"files": {"payload": (None, '{"event": "media.play"}')}},
    "tautulli": {"json": {"event": "test"}},
    "sonarr": {"json": {"eventType": "Test"}},
    "radarr": {"json": {"eventType": "Test"}},
    "overseerr": {"json": {"notification_type": "TEST_NOTIFICATION"}},
}


def carry(form: Form, token: str) -> dict[str, Any]:
    """httpx arguments that carry `token` the way a sender does in `form`."""
    if form is Form.QUERY:
        return {"params": {"token": token}}
    if form is Form.BEARER:
        return {"headers": {"Authorization": f"Bearer {token}"}}
    if form is Form.HEADER:
        return {"headers": {"X-Webhook-Token": token}}
    basic = base64.b64encode(f"smartplex:{token}".encode("latin-1")).decode()
    return {"headers": {"Authorization": f"Basic {basic}"}}


def post(url: str, source: str, **auth: Any) -> httpx.Response:
    return httpx.post(f"{url}/api/webhooks/{source}", **BODIES[source], **auth)


def all_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [r._asdict() for r in conn.execute(select(webhook_log).order_by(webhook_log.c.id))]


@pytest.fixture
def doors(database_url: str) -> Iterator[str]:
    """A gateway where every source has its own token, and an admin token is set."""
    settings = Settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        webhook_token="shared-door-Hh55c",
        **{f"{source}_webhook_token": token for source, token in TOKENS.items()},
        _env_file=None,
    )
    with serve_in_thread(create_app(settings, background=False)) as url:
        yield url


@pytest.fixture
def open_gateway(database_url: str) -> Iterator[str]:
    """No token anywhere: local clients only."""
    with serve_in_thread(
        create_app(Settings(database_url=database_url, _env_file=None), background=False)
    ) as url:
        yield url


def request_from(client: str, headers: dict[str, str] | None = None, query: str = "") -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (client, 50000),
    }
    return Request(scope)


# --- per-source tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_takes_its_own_token_in_each_form_its_sender_can_send(doors: str, source: str) -> None:
    for form in ACCEPTED_FORMS[source]:
        response = post(doors, source, **carry(form, TOKENS[source]))
        assert response.status_code == 202, (form, response.text)


@pytest.mark.parametrize("source", SOURCES)
def test_a_token_in_a_form_its_sender_cannot_send_is_refused(doors: str, source: str) -> None:
    for form in set(Form) - set(ACCEPTED_FORMS[source]):
        response = post(doors, source, **carry(form, TOKENS[source]))
        assert response.status_code == 401, form
        assert ACCEPTED_FORMS[source][0].value in response.json()["detail"]


def test_a_source_token_opens_no_other_source(doors: str, engine: Engine) -> None:
    for owner, token in TOKENS.items():
        for source in SOURCES:
            if source == owner:
                continue
            for form in ACCEPTED_FORMS[source]:
                assert post(doors, source, **carry(form, token)).status_code == 401, (owner, source, form)
    refused = all_rows(engine)
    assert refused and {(r["http_status"], r["payload"], r["action"]) for r in refused} == {
        (401, None, "rejected")
    }
    stored = repr(refused)
    assert not any(token in stored for token in TOKENS.values())


def test_the_shared_token_opens_only_sources_without_their_own(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        webhook_token="shared-door-Hh55c",
        plex_webhook_token="plex-door-Zq81x",
        _env_file=None,
    )
    with serve_in_thread(create_app(settings, background=False)) as url:
        assert post(url, "plex", params={"token": "shared-door-Hh55c"}).status_code == 401
        assert post(url, "plex", params={"token": "plex-door-Zq81x"}).status_code == 202
        for source in ("tautulli", "sonarr", "radarr", "overseerr"):
            assert post(url, source, headers={"Authorization": "Bearer shared-door-Hh55c"}).status_code == 202
            assert post(url, source, headers={"Authorization": "Bearer plex-door-Zq81x"}).status_code == 401


def test_overseerr_takes_its_authorization_header_verbatim(doors: str) -> None:
    """Overseerr sends its "Authorization Header" field as it is: with or without the word Bearer."""
    assert post(doors, "overseerr", headers={"Authorization": TOKENS["overseerr"]}).status_code == 202
    assert (
        post(doors, "overseerr", headers={"Authorization": f"Bearer {TOKENS['overseerr']}"}).status_code
        == 202
    )
    assert post(doors, "overseerr", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_a_refused_delivery_is_recorded_without_its_body_and_says_why(doors: str, engine: Engine) -> None:
    response = httpx.post(
        f"{doors}/api/webhooks/sonarr",
        json={"eventType": "Download", "series": {"id": 1, "title": "Private"}},
        params={"token": TOKENS["sonarr"]},  # Sonarr cannot send a URL token; someone copied Plex's habit
    )
    assert response.status_code == 401
    [row] = all_rows(engine)
    assert (row["payload"], row["event_type"], row["http_status"]) == (None, "unknown", 401)
    assert "Basic auth password" in row["error_message"] and TOKENS["sonarr"] not in row["error_message"]
    assert response.json()["id"] == row["id"]


def test_tokens_compare_by_digest() -> None:
    assert token_matches(["a", "s3cret"], "s3cret")
    assert not token_matches(["s3cre", "s3cret!", "", "S3CRET"], "s3cret")
    assert token_matches(["tøken-ü"], "tøken-ü")
    assert not token_matches([], "s3cret")


# --- the admin endpoints --------------------------------------------------------------------------------

ADMIN_CALLS = (
    ("GET", "/api/webhooks/status"),
    ("GET", "/api/sync/status"),
    ("POST", "/api/webhooks/1/replay"),
)


def admin_call(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", **kwargs)


def test_the_admin_token_opens_the_admin_endpoints(doors: str) -> None:
    assert post(doors, "radarr", headers={"X-Webhook-Token": TOKENS["radarr"]}).status_code == 202
    for method, path in ADMIN_CALLS:
        response = admin_call(doors, method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code in (200, 202), (path, response.text)


def test_no_webhook_token_opens_the_admin_endpoints(doors: str) -> None:
    webhook_tokens = [*TOKENS.values(), "shared-door-Hh55c"]
    for method, path in ADMIN_CALLS:
        for token in webhook_tokens:
            for form in Form:
                response = admin_call(doors, method, path, **carry(form, token))
                assert response.status_code == 401, (path, token, form)
                assert response.headers["www-authenticate"] == "Bearer"


def test_the_admin_token_is_taken_only_as_a_bearer_token(doors: str) -> None:
    """Never in a URL (logged by proxies), and never where a webhook token goes."""
    for form in (Form.QUERY, Form.HEADER, Form.BASIC):
        assert admin_call(doors, "GET", "/api/webhooks/status", **carry(form, ADMIN_TOKEN)).status_code == 401


def test_the_admin_token_opens_no_webhook(doors: str) -> None:
    for source in SOURCES:
        for form in ACCEPTED_FORMS[source]:
            assert post(doors, source, **carry(form, ADMIN_TOKEN)).status_code == 401


def test_without_an_admin_token_only_local_clients_use_the_admin_endpoints(database_url: str) -> None:
    """The webhook token is set but no admin token: it still opens no admin endpoint from outside."""
    settings = Settings(database_url=database_url, webhook_token="shared-door-Hh55c", _env_file=None)
    with serve_in_thread(create_app(settings, background=False)) as url:
        assert admin_call(url, "GET", "/api/webhooks/status").status_code == 200  # this machine, direct
        relayed = admin_call(
            url,
            "GET",
            "/api/webhooks/status",
            headers={"X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer shared-door-Hh55c"},
        )
        assert relayed.status_code == 401
        assert "SMARTPLEX_ADMIN_TOKEN" in relayed.json()["detail"]


# --- no token: local clients only, and a proxy is not local ---------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"X-Forwarded-For": "127.0.0.1"},  # a proxy passing on a spoofed or local address
        {"Forwarded": "for=198.51.100.7;proto=https"},
        {"X-Real-IP": "198.51.100.7"},
        {"Via": "1.1 caddy"},
    ],
)
def test_without_a_token_a_request_relayed_by_a_proxy_is_refused(
    open_gateway: str, engine: Engine, header: dict[str, str]
) -> None:
    response = post(open_gateway, "tautulli", headers=header)
    assert response.status_code == 401, response.text
    assert "SMARTPLEX_TAUTULLI_WEBHOOK_TOKEN or SMARTPLEX_WEBHOOK_TOKEN" in response.json()["detail"]
    assert all_rows(engine)[-1]["http_status"] == 401
    assert admin_call(open_gateway, "GET", "/api/sync/status", headers=header).status_code == 401


def test_without_a_token_a_direct_local_client_is_accepted(open_gateway: str) -> None:
    for source in SOURCES:
        assert post(open_gateway, source).status_code == 202
    assert admin_call(open_gateway, "GET", "/api/webhooks/status").status_code == 200


def test_who_counts_as_local() -> None:
    assert is_local(request_from("127.0.0.1"))
    assert is_local(request_from("::1"))
    assert not is_local(request_from("192.168.1.20"))
    assert not is_local(request_from("127.0.0.1", {"X-Real-IP": "10.0.0.5"}))
    remote = webhook_refusal(request_from("192.168.1.20"), "plex", None)
    assert remote is not None and "only clients on this machine" in remote
    # With a token, where the request comes from does not matter: the token does.
    assert webhook_refusal(request_from("192.168.1.20", query="token=t0ken-xyz"), "plex", "t0ken-xyz") is None
    assert webhook_refusal(request_from("127.0.0.1"), "plex", "t0ken-xyz") is not None


# --- settings -------------------------------------------------------------------------------------------


def test_an_outside_facing_gateway_needs_a_token_for_every_source() -> None:
    with pytest.raises(ValidationError, match="SMARTPLEX_SONARR_WEBHOOK_TOKEN"):
        Settings(gateway_host="0.0.0.0", plex_webhook_token="p-token", _env_file=None)
    own_tokens = {f"{source}_webhook_token": token for source, token in TOKENS.items()}
    assert Settings(gateway_host="0.0.0.0", **own_tokens, _env_file=None).source_token("radarr")
    assert Settings(gateway_host="0.0.0.0", webhook_token="shared", _env_file=None)


def test_settings_list_every_secret_and_read_admin_roles_from_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTPLEX_SUPABASE_ADMIN_ROLES", "admin, moderator")
    settings = Settings(
        admin_token=ADMIN_TOKEN,
        tautulli_api_key="tautulli-key-1",
        plex_token="plex-x",
        database_url="postgresql://postgres.abcd:db-pass%2Fword@pooler.supabase.com:6543/postgres",
        _env_file=None,
    )
    assert set(settings.secret_values()) == {ADMIN_TOKEN, "tautulli-key-1", "plex-x", "db-pass/word"}
    assert settings.supabase_admin_roles == ["admin", "moderator"]
    assert ADMIN_TOKEN not in repr(settings)
