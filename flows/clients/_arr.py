"""What the Sonarr, Radarr and Overseerr clients share: X-Api-Key auth, settings lookup, id cleaning."""

from __future__ import annotations

from typing import Any, Self

import httpx

from flows.clients._http import ServiceClient
from smartplex_sync.errors import ConfigurationError
from smartplex_sync.settings import Settings
from smartplex_sync.store.accounts import Integration


def positive_int(value: Any) -> int | None:
    """An external id, or None for the arrs' "unknown" spellings (absent, 0, "", "0")."""
    if value in (None, "", 0, "0"):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


class ApiKeyClient(ServiceClient):
    """A ServiceClient that sends `X-Api-Key` on every request."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            headers={"X-Api-Key": api_key, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def for_integration(cls, integration: Integration, settings: Settings) -> Self:
        """A client for a SmartPlex `integrations` row; ConfigurationError when it lacks a URL or key."""
        url, key = integration_credentials(integration)
        return cls(url, key, timeout=settings.http_timeout_seconds)


def integration_credentials(integration: Integration) -> tuple[str, str]:
    """`(url, api_key)` of an integration, or ConfigurationError naming what the row lacks."""
    missing = [name for name in ("url", "api_key") if not getattr(integration, name)]
    if missing or integration.url is None or integration.api_key is None:
        raise ConfigurationError(
            f"{integration.service} integration {integration.name!r} has no {' or '.join(missing)}: "
            "set it in SmartPlex's integrations"
        )
    return integration.url.rstrip("/"), integration.api_key
