"""Secrets that open one door each: a token per source, in the forms its sender can send; a SmartPlex user's
webhook secret, in the same forms, that makes the delivery that user's; an admin token that no webhook
token replaces; local-only when a token is missing, and a proxy is never local."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, delete, select, update
from starlette.requests import Request

from simulators.serving import serve_in_thread
from smartplex_sync.settings import Settings
from smartplex_sync.store.tables import users, webhook_log
from tests.support.factories import add_server, add_user
from webhook_gateway import senders
from webhook_gateway.app import create_app
from webhook_gateway.attribution import Sender
from webhook_gateway.auth import is_local, token_matches
from webhook_gateway.senders import Senders
from webhook_gateway.sources import SOURCES as WEBHOOK_SOURCES
from webhook_gateway.sources import Form

SOURCES = ("plex", "tautulli", "sonarr", "radarr", "overseerr")
ACCEPTED_FORMS = {source.value: webhook.token_forms for source, webhook in WEBHOOK_SOURCES.items()}
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
        found = conn.execute(
            select(webhook_log).order_by(webhook_log.c.received_at, webhook_log.c.created_at)
        )
        return [r._asdict() for r in found]


def row_of(engine: Engine, response: httpx.Response) -> dict[str, Any]:
    with engine.connect() as conn:
        return (
            conn.execute(select(webhook_log).where(webhook_log.c.id == uuid.UUID(response.json()["id"])))
            .one()
            ._asdict()
        )


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


def identify(
    settings: Settings, engine: Engine, request: Request, source: str, who: Senders | None = None
) -> Sender | str:
    return asyncio.run((who or Senders(settings, engine)).identify(request, source))


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
    assert response.json()["id"] == str(row["id"])


def test_a_wrong_token_is_refused_and_recorded_without_body_or_user(doors: str, engine: Engine) -> None:
    with engine.begin() as conn:
        add_user(conn, "alice@example.com", secret="alice-secret-Pq19z")
    response = httpx.post(
        f"{doors}/api/webhooks/radarr",
        json={"eventType": "Download", "movie": {"id": 87, "title": "Private"}},
        headers={"Authorization": "Bearer guessed-Yt66r"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    row = row_of(engine, response)
    assert (row["payload"], row["http_status"], row["action"], row["user_id"]) == (
        None,
        401,
        "rejected",
        None,
    )
    assert "neither the gateway's nor a SmartPlex user's webhook secret" in row["error_message"]
    assert "guessed-Yt66r" not in repr(row) and "guessed-Yt66r" not in response.text


def test_tokens_compare_by_digest() -> None:
    assert token_matches(["a", "s3cret"], "s3cret")
    assert not token_matches(["s3cre", "s3cret!", "", "S3CRET"], "s3cret")
    assert token_matches(["tøken-ü"], "tøken-ü")
    assert not token_matches([], "s3cret")


# --- SmartPlex users' webhook secrets ---------------------------------------------------------------------

ALICE_SECRET, BOB_SECRET = "alice-secret-Pq19z", "bob-secret-Xc73m"


@pytest.mark.parametrize("source", SOURCES)
def test_a_users_webhook_secret_makes_the_delivery_theirs_in_the_accepted_forms_only(
    doors: str, engine: Engine, source: str
) -> None:
    with engine.begin() as conn:
        alice = add_user(conn, "alice@example.com", secret=ALICE_SECRET)
        add_user(conn, "bob@example.com", secret=BOB_SECRET)
    for form in ACCEPTED_FORMS[source]:
        response = post(doors, source, **carry(form, ALICE_SECRET))
        assert response.status_code == 202, (form, response.text)
        assert row_of(engine, response)["user_id"] == alice, form
    for form in set(Form) - set(ACCEPTED_FORMS[source]):
        response = post(doors, source, **carry(form, ALICE_SECRET))
        assert response.status_code == 401, form
        refused = row_of(engine, response)
        assert (refused["user_id"], refused["payload"]) == (None, None)
    assert ALICE_SECRET not in repr(all_rows(engine))


def test_a_users_webhook_secret_opens_no_admin_endpoint(doors: str, engine: Engine) -> None:
    with engine.begin() as conn:
        add_user(conn, "alice@example.com", secret=ALICE_SECRET, role="admin")
    for method, path in ADMIN_CALLS:
        for form in Form:
            assert admin_call(doors, method, path, **carry(form, ALICE_SECRET)).status_code == 401


def test_the_gateway_token_and_a_local_client_are_the_owner_emails_user(
    database_url: str, engine: Engine
) -> None:
    """SMARTPLEX_WEBHOOK_TOKEN (or a source's own) sends as the user SMARTPLEX_OWNER_EMAIL names: their
    server is synced, not another user's, and the row is theirs."""
    with engine.begin() as conn:
        owner = add_user(conn, "me@example.com", role="admin")
        owners_server = add_server(conn, owner, machine_id="m-mine")
        other = add_user(conn, "other@example.com", secret=BOB_SECRET)
        add_server(conn, other, machine_id="m-other")
    library_new = {"payload": (None, '{"event": "library.new", "Metadata": {"librarySectionID": 1}}')}
    settings = Settings(
        database_url=database_url,
        owner_email="Me@Example.com",
        webhook_token="shared-door-Hh55c",
        _env_file=None,
    )
    with serve_in_thread(create_app(settings, background=False)) as url:
        response = httpx.post(
            f"{url}/api/webhooks/plex", files=library_new, params={"token": "shared-door-Hh55c"}
        )
        assert response.status_code == 202, response.text
        assert [list(r["parameters"]["servers"]) for r in response.json()["sync_requests"]] == [
            [str(owners_server)]
        ]
        row = row_of(engine, response)
        assert (row["user_id"], row["server_id"]) == (owner, owners_server)
        # Bob's secret at the same gateway: his server.
        bobs = httpx.post(f"{url}/api/webhooks/plex", files=library_new, params={"token": BOB_SECRET})
        assert bobs.status_code == 202 and row_of(engine, bobs)["user_id"] == other
    local = Settings(database_url=database_url, owner_email="me@example.com", _env_file=None)
    with serve_in_thread(create_app(local, background=False)) as url:
        response = httpx.post(f"{url}/api/webhooks/plex", files=library_new)
        assert response.status_code == 202, response.text
        assert (row_of(engine, response)["user_id"], row_of(engine, response)["server_id"]) == (
            owner,
            owners_server,
        )


def test_a_secret_added_a_moment_ago_is_accepted_at_its_first_delivery(
    database_url: str, engine: Engine
) -> None:
    with engine.begin() as conn:
        add_user(conn, "alice@example.com", secret=ALICE_SECRET)
    settings = Settings(database_url=database_url, webhook_token="shared-door-Hh55c", _env_file=None)
    with serve_in_thread(create_app(settings, background=False)) as url:
        assert (
            post(url, "sonarr", headers={"X-Webhook-Token": ALICE_SECRET}).status_code == 202
        )  # secrets read
        with engine.begin() as conn:
            bob = add_user(conn, "bob@example.com", secret=BOB_SECRET)
        # The gateway read the secrets an instant ago and reads them again at most once a second.
        time.sleep(senders.RELOAD_AT_MOST_EVERY + 0.1)
        response = post(url, "sonarr", headers={"X-Webhook-Token": BOB_SECRET})
        assert response.status_code == 202, response.text
        assert row_of(engine, response)["user_id"] == bob


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_secrets_are_read_again_on_a_miss_at_most_once_a_second_and_forgotten_after_a_minute(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(senders, "time", SimpleNamespace(monotonic=clock))
    settings = Settings(database_url="sqlite://", _env_file=None)
    who = Senders(settings, engine)

    def sender(secret: str) -> Sender | str:
        return identify(settings, engine, request_from("203.0.113.9", query=f"token={secret}"), "plex", who)

    with engine.begin() as conn:
        alice = add_user(conn, "alice@example.com", secret=ALICE_SECRET)
    assert sender(ALICE_SECRET) == Sender(alice, "webhook secret")
    clock.now += 5
    with engine.begin() as conn:
        bob = add_user(conn, "bob@example.com", secret=BOB_SECRET)
    assert sender(BOB_SECRET) == Sender(bob, "webhook secret")  # a miss: read again, at once
    with engine.begin() as conn:
        carol = add_user(conn, "carol@example.com", secret="carol-secret-Lo08d")
    clock.now += 0.5  # half a second after the last read: a stranger's guesses cannot make it read again
    refused = sender("carol-secret-Lo08d")
    assert isinstance(refused, str) and "wrong plex webhook token" in refused
    clock.now += 0.6
    assert sender("carol-secret-Lo08d") == Sender(carol, "webhook secret")
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == alice).values(webhook_secret="alice-rotated-Ee31s"))
        conn.execute(delete(users).where(users.c.id == bob))
    clock.now += 30  # what is known still works for a while ...
    assert sender(ALICE_SECRET) == Sender(alice, "webhook secret")
    assert sender(BOB_SECRET) == Sender(bob, "webhook secret")
    clock.now += 31  # ... and stops working within a minute
    assert isinstance(sender(ALICE_SECRET), str) and isinstance(sender(BOB_SECRET), str)
    assert sender("alice-rotated-Ee31s") == Sender(alice, "webhook secret")


# --- the admin endpoints --------------------------------------------------------------------------------

ADMIN_CALLS = (
    ("GET", "/api/webhooks/status"),
    ("GET", "/api/sync/status"),
    ("POST", f"/api/webhooks/{uuid.uuid4()}/replay"),
)


def admin_call(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", **kwargs)


def test_the_admin_token_opens_the_admin_endpoints(doors: str) -> None:
    delivered = post(doors, "radarr", headers={"X-Webhook-Token": TOKENS["radarr"]})
    assert delivered.status_code == 202
    calls = [*ADMIN_CALLS[:2], ("POST", f"/api/webhooks/{delivered.json()['id']}/replay")]
    for method, path in calls:
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


def test_who_may_send_without_a_token_and_with_one(engine: Engine) -> None:
    open_settings = Settings(database_url="sqlite://", _env_file=None)
    remote = identify(open_settings, engine, request_from("192.168.1.20"), "plex")
    assert isinstance(remote, str) and "only clients on this machine" in remote
    assert identify(open_settings, engine, request_from("127.0.0.1"), "plex") == Sender(None, "local client")
    # With a token, where the request comes from does not matter: the token does.
    guarded = Settings(database_url="sqlite://", plex_webhook_token="t0ken-xyz", _env_file=None)
    far = request_from("192.168.1.20", query="token=t0ken-xyz")
    assert identify(guarded, engine, far, "plex") == Sender(None, "gateway token")
    missing = identify(guarded, engine, request_from("127.0.0.1"), "plex")
    assert isinstance(missing, str) and "missing plex webhook token" in missing


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


def test_the_owner_is_read_again_like_the_secrets(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """SMARTPLEX_OWNER_EMAIL's user, once deleted, is not the sender of the gateway token's deliveries for
    ever after (their id would break webhook_log's foreign key: every delivery a 503)."""
    clock = Clock()
    monkeypatch.setattr(senders, "time", SimpleNamespace(monotonic=clock))
    settings = Settings(
        database_url="sqlite://", owner_email="me@example.com", webhook_token="t0ken-xyz", _env_file=None
    )
    who = Senders(settings, engine)
    request = request_from("203.0.113.9", {"Authorization": "Bearer t0ken-xyz"})
    assert identify(settings, engine, request, "sonarr", who) == Sender(None, "gateway token")
    with engine.begin() as conn:
        owner = add_user(conn, "me@example.com")
    clock.now += 0.5
    assert identify(settings, engine, request, "sonarr", who) == Sender(
        None, "gateway token"
    )  # read < 1 s ago
    clock.now += 0.6
    assert identify(settings, engine, request, "sonarr", who) == Sender(owner, "gateway token")
    with engine.begin() as conn:
        conn.execute(delete(users).where(users.c.id == owner))
    clock.now += 61
    assert identify(settings, engine, request, "sonarr", who) == Sender(None, "gateway token")
