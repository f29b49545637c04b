"""SmartPlex admins signed in with Supabase Auth: their session token (`Authorization: Bearer <jwt>`) opens
the admin endpoints.

A token is accepted when
- it is signed by one of the project's asymmetric signing keys (ES256 or RS256), published at
  `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`; the keys are cached for SMARTPLEX_SUPABASE_JWKS_CACHE_SECONDS
  and fetched again when a token names a key we do not have (at most every REFETCH_SECONDS, so that
  made-up key ids cannot make us hammer Supabase);
- it has not expired, its audience is SMARTPLEX_SUPABASE_JWT_AUDIENCE (`authenticated`) and its issuer is
  `<SUPABASE_URL>/auth/v1`;
- its user is an admin: the role in the claim SMARTPLEX_SUPABASE_ROLE_CLAIM (e.g. `app_metadata.role`),
  or, without that setting, `users.role` of the token's `sub` in SmartPlex's database, is one of
  SMARTPLEX_SUPABASE_ADMIN_ROLES.

HS256 tokens (the legacy shared JWT secret) are refused: verifying them would mean keeping Supabase's
signing secret here, from which anyone can mint a token for any user, and Supabase no longer recommends it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from smartplex_sync.settings import Settings
from smartplex_sync.store import users

log = logging.getLogger(__name__)

ALGORITHMS = ("ES256", "RS256")
REFETCH_SECONDS = 30.0  # fewest seconds between two fetches caused by unknown key ids
LEEWAY_SECONDS = 10  # clock skew allowed on exp / iat / nbf


class SignInError(Exception):
    """A refused token: 401 (not a valid session), 403 (valid, but not an admin), 503 (keys unavailable)."""

    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


@dataclass
class SupabaseAdmins:
    supabase_url: str
    engine: Engine
    audience: str = "authenticated"
    role_claim: str | None = None
    admin_roles: tuple[str, ...] = ("admin",)
    users_table: str = "users"
    cache_seconds: float = 600.0
    refetch_seconds: float = REFETCH_SECONDS
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict, repr=False)
    _fetched_at: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> SupabaseAdmins | None:
        if settings.supabase_url is None:
            return None
        return cls(
            settings.supabase_url,
            engine,
            audience=settings.supabase_jwt_audience,
            role_claim=settings.supabase_role_claim,
            admin_roles=tuple(settings.supabase_admin_roles),
            users_table=settings.supabase_users_table,
            cache_seconds=settings.supabase_jwks_cache_seconds,
        )

    @property
    def issuer(self) -> str:
        return f"{self.supabase_url}/auth/v1"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    async def admin(self, token: str) -> str:
        """The admin's user id (`sub`); SignInError otherwise."""
        claims = self.verify(token, await self._key_for(token))
        subject = str(claims["sub"])
        role = await self._role(claims, subject)
        if role not in self.admin_roles:
            raise SignInError(f"user {subject} is signed in but not an admin (role: {role or 'none'})", 403)
        return subject

    def verify(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise SignInError(f"Supabase session token refused: {exc}") from exc

    async def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise SignInError(f"not a Supabase session token: {exc}") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm == "HS256":
            raise SignInError(
                "HS256 tokens (the legacy JWT secret) are not accepted: switch the Supabase project to "
                "asymmetric JWT signing keys, or use SMARTPLEX_ADMIN_TOKEN"
            )
        if algorithm not in ALGORITHMS:
            raise SignInError(f"token algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if not isinstance(kid, str) or not kid:
            raise SignInError("token names no signing key (kid)")
        key = await self._signing_key(kid)
        if key is None:
            raise SignInError(f"signing key {kid!r} is not one of the project's ({self.jwks_url})")
        if key.algorithm_name != algorithm:
            raise SignInError(f"signing key {kid!r} is {key.algorithm_name}, the token says {algorithm}")
        return key

    async def _signing_key(self, kid: str) -> jwt.PyJWK | None:
        async with self._lock:
            now = time.monotonic()
            age = None if self._fetched_at is None else now - self._fetched_at
            stale = age is None or age >= self.cache_seconds
            unknown = kid not in self._keys and (age is None or age >= self.refetch_seconds)
            if stale or unknown:
                await self._fetch(now)
            return self._keys.get(kid)

    async def _fetch(self, now: float) -> None:
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(self.jwks_url)
                response.raise_for_status()
                keys = response.json()["keys"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            if not self._keys:
                raise SignInError(
                    f"cannot read the project's signing keys at {self.jwks_url}: {exc}", 503
                ) from exc
            log.warning("cannot refresh Supabase signing keys (%s); using the cached ones", exc)
            return
        found: dict[str, jwt.PyJWK] = {}
        for entry in keys if isinstance(keys, list) else []:
            try:
                key = jwt.PyJWK.from_dict(entry)
            except (jwt.PyJWTError, TypeError, ValueError):
                continue  # a key type we do not use (e.g. a legacy symmetric entry): skip it
            if key.key_id and key.algorithm_name in ALGORITHMS:
                found[key.key_id] = key
        self._keys, self._fetched_at = found, now

    async def _role(self, claims: dict[str, Any], subject: str) -> str | None:
        if self.role_claim:
            value: Any = claims
            for part in self.role_claim.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, list):  # a list of roles: the first admin one, if any
                return next((str(v) for v in value if str(v) in self.admin_roles), None)
            return None if value is None else str(value)
        if not await run_in_threadpool(users.users_table_exists, self.engine, self.users_table):
            raise SignInError(
                f"no {self.users_table} table in SmartPlex's database to read roles from: set "
                "SMARTPLEX_SUPABASE_ROLE_CLAIM, or SMARTPLEX_SUPABASE_USERS_TABLE",
                403,
            )
        return await run_in_threadpool(users.role_of, self.engine, subject, self.users_table)
