"""How tokens travel, and who may use the admin endpoints (who sent a webhook: `senders`).

A webhook token (the source's own `SMARTPLEX_<SOURCE>_WEBHOOK_TOKEN`, else the shared
`SMARTPLEX_WEBHOOK_TOKEN`, or a SmartPlex user's webhook secret) is accepted only in the forms its sender
can send (each source's `token_forms`, in `webhook_gateway.sources`; docs/webhooks.md has the table), so
that a token leaked from one sender's settings opens that sender's endpoint and nothing else.

The admin endpoints take `Authorization: Bearer <SMARTPLEX_ADMIN_TOKEN>` (or a Supabase session token,
see `supabase_auth`), never a webhook token and never a URL.

Without a token a source (or the admin endpoints) accepts only *local* clients: a loopback peer whose
request carries no proxy header (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`, `Via`). A reverse proxy on the
same host is a loopback peer, and those headers are how it says it speaks for someone else.

Every comparison hashes both sides to SHA-256 digests first, so `hmac.compare_digest` compares equal
lengths and reveals neither the token nor its length.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress

from starlette.requests import Request

from webhook_gateway.sources import Form

FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "via")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def token_matches(candidates: list[str], expected: str) -> bool:
    """True if any candidate is `expected`; every candidate is compared, each in constant time."""
    wanted = _digest(expected)
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(_digest(candidate), wanted)
    return found


def bearer_token(request: Request) -> str | None:
    """The value of `Authorization: Bearer <value>`, if that is what the request carries."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def _basic_password(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("latin-1")  # as Sonarr encodes it
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[2]


def presented_tokens(request: Request, forms: tuple[Form, ...]) -> list[str]:
    """What the request carries in the forms accepted for its source."""
    tokens: list[str] = []
    if Form.QUERY in forms and (query := request.query_params.get("token")):
        tokens.append(query)
    if Form.BEARER in forms:
        authorization = request.headers.get("authorization", "").strip()
        if bearer := bearer_token(request):
            tokens.append(bearer)
        elif authorization and " " not in authorization:  # Overseerr sends its field verbatim
            tokens.append(authorization)
    if Form.HEADER in forms and (header := request.headers.get("x-webhook-token")):
        tokens.append(header.strip())
    if Form.BASIC in forms and (password := _basic_password(request)) is not None:
        tokens.append(password)
    return tokens


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def forwarding_headers(request: Request) -> list[str]:
    return [name for name in FORWARDING_HEADERS if name in request.headers]


def is_local(request: Request) -> bool:
    """A client on this machine talking to us directly: loopback, and not relayed by a proxy."""
    return is_loopback(request.client.host if request.client else None) and not forwarding_headers(request)


def not_local_reason(request: Request, settings_names: str) -> str:
    """Why a request is refused where no token is set (`settings_names`) and only local clients may come."""
    unset = f"no token is set ({settings_names})"
    if relayed := forwarding_headers(request):
        return f"{unset}, and a request relayed by a proxy ({', '.join(relayed)}) is not a local client"
    return f"{unset}, so only clients on this machine are accepted"
