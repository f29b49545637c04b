"""What the Sonarr, Radarr and Overseerr clients share: X-Api-Key auth, settings lookup, id cleaning."""

from __future__ import annotations

from typing import Any, Self

import httpx

from flows.clients._http import ServiceClient
from smartplex_sync.errors import ConfigurationError
from smartplex_sync.settings import Settings


def required_settings(settings: Settings, service: str) -> tuple[str, str]:
    """`(url, api_key)` of `service`, or ConfigurationError naming the SMARTPLEX_* variable that is missing."""
    url = getattr(settings, f"{service}_url")
    key = getattr(settings, f"{service}_api_key")
    for value, name in ((url, "URL"), (key, "API_KEY")):
        if value is None or (not isinstance(value, str) and not value.get_secret_value()):
            raise ConfigurationError(
                f"SMARTPLEX_{service.upper()}_{name} is not set: a full {service} sync needs it"
            )
    return url, key.get_secret_value()


def positive_int(value: Any) -> int | None:
    """An external id, or None for the arrs' "unknown" spellings (absent, 0, "", "0")."""
    if value in (None, "", 0, "0"):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def text_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


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
    def from_settings(cls, settings: Settings) -> Self:
        """From SMARTPLEX_<SERVICE>_URL / _API_KEY; ConfigurationError naming the one that is missing."""
        url, key = required_settings(settings, cls.service)
        return cls(url, key, timeout=settings.http_timeout_seconds)
