"""SmartPlex admins signed in with Supabase Auth use the admin endpoints with their session token.

Keys of our own, published by the Supabase Auth simulator over real HTTP; roles from SmartPlex's `users`
table on both backends, or from a claim."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import Engine

from simulators.serving import serve_in_thread
from simulators.supabase_auth import SigningKey, SupabaseAuth, create_supabase_auth_app
from smartplex_sync.settings import Settings
from smartplex_sync.store.users import role_of
from tests.conftest import both_backends
from tests.support.factories import add_user
from webhook_gateway.app import create_app
from webhook_gateway.supabase_auth import SignInError, SupabaseAdmins

ADMIN = str(uuid.uuid4())
MODERATOR = str(uuid.uuid4())
STRANGER = str(uuid.uuid4())  # signed in to the project, but no SmartPlex user
ADMIN_TOKEN = "admin-door-Wk27p"


@pytest.fixture
def supabase() -> Iterator[tuple[SupabaseAuth, str]]:
    auth = SupabaseAuth(keys=[SigningKey.generate("ES256"), SigningKey.generate("RS256")])
    with serve_in_thread(create_supabase_auth_app(auth)) as url:
        yield auth, url


def create_users_table(engine: Engine) -> None:
    """An admin and a moderator in SmartPlex's `users` (migrate made the table, in SmartPlex's shape)."""
    with engine.begin() as conn:
        for user_id, role in ((ADMIN, "admin"), (MODERATOR, "moderator")):
            add_user(conn, f"{role}@example.com", role=role, user_id=uuid.UUID(user_id))


def gateway_for(database_url: str, supabase_url: str, **overrides: Any) -> Any:
    settings = Settings(database_url=database_url, supabase_url=supabase_url, _env_file=None, **overrides)
    return serve_in_thread(create_app(settings, background=False))


def status(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/api/webhooks/status", headers={"Authorization": f"Bearer {token}"})


@both_backends
def test_an_admin_in_the_users_table_uses_every_admin_endpoint(
    engine: Engine, database_url: str, supabase: tuple[SupabaseAuth, str]
) -> None:
    auth, supabase_url = supabase
    create_users_table(engine)
    with gateway_for(database_url, supabase_url, admin_token=ADMIN_TOKEN) as url:
        accepted = httpx.post(f"{url}/api/webhooks/radarr", json={"eventType": "Test"})
        assert accepted.status_code == 202  # no webhook token: this machine may post
        for key in auth.keys:  # ES256 and RS256
            session = auth.session_token(supabase_url, ADMIN, key=key)
            headers = {"Authorization": f"Bearer {session}"}
            assert httpx.get(f"{url}/api/webhooks/status", headers=headers).status_code == 200
            assert httpx.get(f"{url}/api/sync/status", headers=headers).status_code == 200
            replay = httpx.post(f"{url}/api/webhooks/{accepted.json()['id']}/replay", headers=headers)
            assert replay.status_code == 202, replay.text
        assert status(url, ADMIN_TOKEN).status_code == 200  # the admin token still works
        assert (
            httpx.get(f"{url}/api/sync/status").status_code == 401
        )  # no local trust for the admin endpoints
        refused = status(url, auth.session_token(supabase_url, MODERATOR))
        assert refused.status_code == 403 and "not an admin (role: moderator)" in refused.json()["detail"]
        stranger = status(url, auth.session_token(supabase_url, STRANGER))
        assert stranger.status_code == 403 and "role: none" in stranger.json()["detail"]
    assert auth.jwks_requests == 1  # fetched once, then cached


def tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, **changes}).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_tokens_that_are_not_an_admins_valid_session_are_refused(
    engine: Engine, database_url: str, supabase: tuple[SupabaseAuth, str]
) -> None:
    auth, supabase_url = supabase
    create_users_table(engine)
    outsider = SigningKey.generate("ES256")
    impostor = SigningKey("ES256", outsider.private_key, kid=auth.keys[0].kid)  # a known kid, the wrong key
    now = int(time.time())
    cases = {
        "expired": auth.session_token(supabase_url, ADMIN, expires_in=-3600),
        "wrong audience": auth.session_token(supabase_url, ADMIN, audience="anon"),
        "wrong issuer": auth.session_token(supabase_url, ADMIN, issuer="https://other.supabase.co/auth/v1"),
        "unknown kid": auth.session_token(supabase_url, ADMIN, key=outsider),
        "signed by another key": auth.session_token(supabase_url, ADMIN, key=impostor),
        "tampered": tampered(auth.session_token(supabase_url, MODERATOR), sub=ADMIN),
        "HS256, legacy secret": jwt.encode(
            {"sub": ADMIN, "aud": "authenticated", "iss": f"{supabase_url}/auth/v1", "exp": now + 600},
            "super-secret-jwt-token-with-at-least-32-characters",
            algorithm="HS256",
        ),
        "alg none": jwt.encode(
            {"sub": ADMIN, "aud": "authenticated", "iss": f"{supabase_url}/auth/v1", "exp": now + 600},
            None,
            algorithm="none",
            headers={"kid": auth.keys[0].kid},
        ),
        "not a jwt": "a.b.c",
    }
    with gateway_for(database_url, supabase_url, admin_token=ADMIN_TOKEN) as url:
        answers = {case: status(url, token) for case, token in cases.items()}
    for case, answer in answers.items():
        assert answer.status_code == 401, (case, answer.text)
    assert "expired" in answers["expired"].json()["detail"]
    assert "audience" in answers["wrong audience"].json()["detail"].lower()
    assert "issuer" in answers["wrong issuer"].json()["detail"].lower()
    assert "is not one of the project's" in answers["unknown kid"].json()["detail"]
    assert "signature" in answers["tampered"].json()["detail"].lower()
    assert "HS256" in answers["HS256, legacy secret"].json()["detail"]
    assert "'none' is not one of ES256, RS256" in answers["alg none"].json()["detail"]


def test_the_role_can_come_from_a_claim_instead(
    database_url: str, supabase: tuple[SupabaseAuth, str]
) -> None:
    """app_metadata.role (set by a service key or an auth hook) decides, not SmartPlex's users table."""
    auth, supabase_url = supabase
    with gateway_for(database_url, supabase_url, supabase_role_claim="app_metadata.role") as url:
        admin = auth.session_token(supabase_url, STRANGER, app_metadata={"role": "admin"})
        user = auth.session_token(supabase_url, STRANGER, app_metadata={"role": "user"})
        unset = auth.session_token(supabase_url, STRANGER)
        assert status(url, admin).status_code == 200
        assert status(url, user).status_code == 403
        assert status(url, unset).status_code == 403
        assert httpx.get(f"{url}/api/webhooks/status").status_code == 401  # sign-in set up: no local trust


def test_without_a_users_table_the_answer_says_what_to_set(
    database_url: str, supabase: tuple[SupabaseAuth, str]
) -> None:
    auth, supabase_url = supabase
    with gateway_for(database_url, supabase_url, supabase_users_table="profiles") as url:  # no such table
        answer = status(url, auth.session_token(supabase_url, ADMIN))
    assert answer.status_code == 403 and "SMARTPLEX_SUPABASE_ROLE_CLAIM" in answer.json()["detail"]


@both_backends
def test_role_lookup_by_user_id(engine: Engine) -> None:
    create_users_table(engine)
    assert role_of(engine, ADMIN) == "admin"
    assert role_of(engine, ADMIN.upper()) == "admin"  # the same uuid, written differently
    assert role_of(engine, STRANGER) is None
    assert role_of(engine, "not-a-uuid'; DROP TABLE users; --") is None


# --- the key cache, against the simulator directly ------------------------------------------------------


def verify(admins: SupabaseAdmins, token: str) -> str | SignInError:
    try:
        return asyncio.run(admins.admin(token))
    except SignInError as refused:
        return refused


def claim_admins(engine: Engine, supabase_url: str, **overrides: Any) -> SupabaseAdmins:
    return SupabaseAdmins(supabase_url, engine, role_claim="app_metadata.role", **overrides)


def test_keys_are_cached_and_an_unknown_kid_refetches_at_most_every_so_often(
    engine: Engine, supabase: tuple[SupabaseAuth, str]
) -> None:
    auth, supabase_url = supabase
    admins = claim_admins(engine, supabase_url, refetch_seconds=3600)
    token = auth.session_token(supabase_url, STRANGER, app_metadata={"role": "admin"})
    assert [verify(admins, token) for _ in range(5)] == [STRANGER] * 5
    assert auth.jwks_requests == 1
    for _ in range(5):  # made-up key ids do not make us fetch again and again
        assert isinstance(
            verify(admins, auth.session_token(supabase_url, STRANGER, key=SigningKey.generate())), SignInError
        )
    assert auth.jwks_requests == 1


def test_a_rotated_in_key_is_found_by_fetching_again(
    engine: Engine, supabase: tuple[SupabaseAuth, str]
) -> None:
    auth, supabase_url = supabase
    admins = claim_admins(engine, supabase_url, refetch_seconds=0)
    assert (
        verify(admins, auth.session_token(supabase_url, STRANGER, app_metadata={"role": "admin"})) == STRANGER
    )
    old = auth.keys[0]
    auth.keys.insert(0, SigningKey.generate("ES256"))  # Supabase publishes a standby key, then signs with it
    assert (
        verify(admins, auth.session_token(supabase_url, STRANGER, app_metadata={"role": "admin"})) == STRANGER
    )
    assert auth.jwks_requests == 2
    auth.keys.remove(old)  # the old key revoked: its tokens stop working once the cache expires
    revoked = auth.session_token(supabase_url, STRANGER, key=old, app_metadata={"role": "admin"})
    assert verify(admins, revoked) == STRANGER  # still cached
    expiring = claim_admins(engine, supabase_url, cache_seconds=0)
    assert isinstance(verify(expiring, revoked), SignInError)


def test_signing_keys_out_of_reach(engine: Engine, supabase: tuple[SupabaseAuth, str]) -> None:
    """Never fetched: 503 (not the caller's fault). Fetched before: the cached keys keep working."""
    auth, supabase_url = supabase
    token = auth.session_token(supabase_url, STRANGER, app_metadata={"role": "admin"})
    auth.available = False
    refused = verify(claim_admins(engine, supabase_url), token)
    assert isinstance(refused, SignInError) and refused.status_code == 503
    auth.available = True
    admins = claim_admins(engine, supabase_url, cache_seconds=0)
    assert verify(admins, token) == STRANGER
    auth.available = False
    assert verify(admins, token) == STRANGER
