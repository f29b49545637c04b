"""Who may post webhooks.

With SMARTPLEX_WEBHOOK_TOKEN set, every delivery must carry it, in whichever way its service can send it:
- `Authorization: Bearer <token>` (Overseerr's "Authorization Header", Tautulli's JSON headers),
- `X-Webhook-Token: <token>` (any service with custom headers),
- HTTP Basic auth with the token as password (Sonarr/Radarr "Username"/"Password"),
- `?token=<token>` in the URL (Plex, which can send nothing else).
Without a token only loopback clients are accepted (settings refuse a non-loopback bind without one).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress

from starlette.requests import Request


def presented_tokens(request: Request) -> list[str]:
    tokens = []
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value:
        tokens.append(value.strip())
    elif scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("latin-1")
        except (binascii.Error, ValueError):
            decoded = ""
        tokens.append(decoded.partition(":")[2])
    if header := request.headers.get("x-webhook-token"):
        tokens.append(header.strip())
    if query := request.query_params.get("token"):
        tokens.append(query)
    return tokens


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return is_loopback(request.client.host if request.client else None)
    expected = token.encode()
    return any(hmac.compare_digest(candidate.encode(), expected) for candidate in presented_tokens(request))
