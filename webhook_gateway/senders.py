"""Who sent a delivery, from the token it carries (`attribution.Sender`), or why it is refused.

A token is accepted in the forms its sender can send (its source's `token_forms`) and is one of:
- the source's own SMARTPLEX_<SOURCE>_WEBHOOK_TOKEN, else SMARTPLEX_WEBHOOK_TOKEN: the gateway's own,
  whose deliveries belong to the user the environment settings made (SMARTPLEX_OWNER_EMAIL);
- a SmartPlex user's `users.webhook_secret` (SmartPlex's migration 006 gives every user one): that user's.
A delivery carrying none is accepted only from a client on this machine, and only where no gateway token
is set for its source; it belongs to the environment's user. A token that is none of these is refused.

The secrets are read from `users` and kept in memory as SHA-256 digests; an unknown token makes the
gateway read them again (at most once a second, whatever a stranger sends), so a user added a moment ago
is known at their first delivery, and a changed or deleted secret stops working within a minute.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from starlette.requests import Request

from smartplex_sync.models import Source
from smartplex_sync.settings import Settings
from smartplex_sync.store.accounts import user_id_by_email, webhook_secrets
from webhook_gateway import auth
from webhook_gateway.attribution import Sender
from webhook_gateway.sources import SOURCES

RELOAD_AT_MOST_EVERY = 1.0
FORGET_AFTER = 60.0
log = logging.getLogger(__name__)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Senders:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._secrets: dict[bytes, uuid.UUID] = {}
        self._loaded_at = float("-inf")
        self._owner: uuid.UUID | None = None
        self._owner_read_at = float("-inf")

    def _load(self) -> None:
        with self.engine.connect() as conn:
            secrets = webhook_secrets(conn)
            owner = user_id_by_email(conn, self.settings.owner_email)
        self._secrets = {_digest(secret): user for user, secret in secrets}
        self._owner, self._loaded_at = owner, time.monotonic()

    async def owner(self) -> uuid.UUID | None:
        """The user the environment settings made (SMARTPLEX_OWNER_EMAIL), if there is one. Read again, as
        the secrets are, after FORGET_AFTER: a deleted owner's id would break webhook_log's foreign key."""
        age = time.monotonic() - self._loaded_at
        if age > FORGET_AFTER or (self._owner is None and age > RELOAD_AT_MOST_EVERY):
            await run_in_threadpool(self._load)
        return self._owner

    async def _user_of(self, tokens: list[str]) -> uuid.UUID | None:
        age = time.monotonic() - self._loaded_at
        for attempt in range(2):
            if age > FORGET_AFTER or (attempt and age > RELOAD_AT_MOST_EVERY):
                await run_in_threadpool(self._load)
                age = 0.0
            for token in tokens:
                if (user := self._secrets.get(_digest(token))) is not None:
                    return user
        return None

    async def identify(self, request: Request, source: Source) -> Sender | str:
        """The sender of `request` to `source`'s endpoint, or why it is refused (safe to store and answer)."""
        forms = SOURCES[source].token_forms
        tokens = auth.presented_tokens(request, forms)
        gateway_token = self.settings.source_token(source)
        if gateway_token is not None and auth.token_matches(tokens, gateway_token.get_secret_value()):
            return Sender(await self.owner(), "gateway token")
        if tokens and (user := await self._user_of(tokens)) is not None:
            return Sender(user, "webhook secret")
        if tokens:
            return (
                f"wrong {source} webhook token: neither the gateway's nor a SmartPlex user's webhook secret; "
                f"{source} carries it as {' or '.join(form.value for form in forms)} (see docs/webhooks.md)"
            )
        if gateway_token is None:
            names = f"SMARTPLEX_{source.upper()}_WEBHOOK_TOKEN or SMARTPLEX_WEBHOOK_TOKEN"
            if auth.is_local(request):
                return Sender(await self.owner(), "local client")
            return auth.not_local_reason(request, names)
        return (
            f"missing {source} webhook token; {source} carries it as "
            f"{' or '.join(form.value for form in forms)} (see docs/webhooks.md)"
        )
