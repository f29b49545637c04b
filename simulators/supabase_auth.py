"""A Supabase Auth simulator, for what the gateway needs of it: the project's public signing keys at
`GET /auth/v1/.well-known/jwks.json`, and session tokens (access tokens) shaped as Supabase Auth issues
them, signed with keys of our own.

As in Supabase: keys are asymmetric (ES256 on P-256 by default, RS256 possible), each JWK carries `kid`,
`alg`, `use: sig` and `key_ops: ["verify"]`; a rotated-in key is published before it signs; an access token
has `iss = <url>/auth/v1`, `aud = "authenticated"`, `role = "authenticated"`, `sub` (the user's uuid),
`exp`/`iat`, `email`, `app_metadata`, `user_metadata`, `aal`, `session_id`, `is_anonymous`.
`app.state.auth` is the `SupabaseAuth`; `available = False` makes the endpoint answer 503.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse


@dataclass
class SigningKey:
    algorithm: str  # ES256 or RS256
    private_key: Any
    kid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def generate(cls, algorithm: str = "ES256") -> SigningKey:
        if algorithm == "ES256":
            return cls(algorithm, ec.generate_private_key(ec.SECP256R1()))
        if algorithm == "RS256":
            return cls(algorithm, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        raise ValueError(f"Supabase signing keys are ES256 or RS256, not {algorithm}")

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {
            **jwk,
            "kid": self.kid,
            "alg": self.algorithm,
            "use": "sig",
            "key_ops": ["verify"],
            "ext": True,
        }


@dataclass
class SupabaseAuth:
    """The project's signing keys (the first one signs) and what the endpoint has served."""

    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.generate()])
    available: bool = True
    jwks_requests: int = 0

    def session_token(
        self,
        url: str,
        user_id: str,
        *,
        key: SigningKey | None = None,
        expires_in: int = 3600,
        audience: str = "authenticated",
        issuer: str | None = None,
        app_metadata: dict[str, Any] | None = None,
        email: str = "someone@example.com",
    ) -> str:
        """An access token as Supabase Auth issues it to `user_id` of the project at `url`."""
        now = int(time.time())
        signer = key or self.keys[0]
        claims = {
            "iss": issuer if issuer is not None else f"{url}/auth/v1",
            "sub": user_id,
            "aud": audience,
            "exp": now + expires_in,
            "iat": now - 5,
            "email": email,
            "phone": "",
            "app_metadata": {"provider": "email", "providers": ["email"], **(app_metadata or {})},
            "user_metadata": {"email_verified": True},
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now - 5}],
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
        }
        return jwt.encode(claims, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid})


def create_supabase_auth_app(auth: SupabaseAuth) -> FastAPI:
    app = FastAPI(title="Supabase Auth (simulated)")
    app.state.auth = auth

    @app.get("/auth/v1/.well-known/jwks.json")
    def jwks() -> JSONResponse:
        auth.jwks_requests += 1
        if not auth.available:
            raise HTTPException(503, "upstream unavailable")
        body = {"keys": [key.public_jwk() for key in auth.keys]}
        return JSONResponse(body, headers={"Cache-Control": "public, max-age=600"})

    return app
