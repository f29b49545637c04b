"""What every service client shares: one httpx.Client, status codes sorted into our error classes,
and a count of the requests made (reported in each run's artifact)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from functools import cache
from typing import Any, Self

import httpx

from smartplex_sync.errors import PermanentServiceError, TransientServiceError
from smartplex_sync.redact import UrlSecretsFilter

# Whatever level a worker's logging is set to, a request's URL never shows an API key.
logging.getLogger("httpx").addFilter(UrlSecretsFilter())

TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


@cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context for every client: loading the CA bundle costs a few hundred milliseconds on
    a busy machine, and each flow run makes new clients."""
    return httpx.create_ssl_context()


class ServiceClient:
    """Base of the per-service clients. Subclasses set `service` and add the endpoints they need."""

    service = "service"

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.requests_made = 0
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=dict(headers or {}),
            params=dict(params or {}),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            verify=_ssl_context(),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """Send one request; raise Transient/PermanentServiceError unless the answer is 2xx."""
        self.requests_made += 1
        try:
            response = self._http.request(method, path, params=params, headers=headers, json=json)
        except httpx.TimeoutException as exc:
            raise TransientServiceError(self.service, f"timed out on {method} {path}: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientServiceError(
                self.service, f"cannot reach {self.base_url} ({method} {path}): {exc}"
            ) from exc
        if response.is_success:
            return response
        message = f"{method} {path} answered {response.status_code}: {response.text[:200]}"
        if response.status_code in TRANSIENT_STATUS or response.status_code >= 500:
            raise TransientServiceError(self.service, message, response.status_code)
        if response.status_code in (401, 403):
            message = f"{method} {path} answered {response.status_code}: check the API key or token"
        raise PermanentServiceError(self.service, message, response.status_code)

    def get_json(
        self, path: str, *, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        response = self.request("GET", path, params=params, headers=headers)
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentServiceError(self.service, f"GET {path} did not answer JSON") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
