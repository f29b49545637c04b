"""Plex Media Server client: JSON, token in a header (never in a URL that gets logged), paged listings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from flows.clients._http import ServiceClient
from smartplex_sync.convert import chunked
from smartplex_sync.errors import ConfigurationError, PermanentServiceError
from smartplex_sync.settings import Settings
from smartplex_sync.store.accounts import PlexServer

CLIENT_IDENTIFIER = "smartplex-sync-5b1e0c2a"  # stable: PMS lists us as one device, not one per run
PLEX_TYPES = {"movie": 1, "show": 2, "season": 3, "episode": 4}
METADATA_BATCH = 50  # rating keys per /library/metadata request: keeps the URL short


@dataclass(frozen=True)
class ItemsPage:
    items: list[dict[str, Any]]
    offset: int
    total_size: int


class PlexClient(ServiceClient):
    service = "plex"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        page_size: int = 500,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            headers={
                "X-Plex-Token": token,
                "Accept": "application/json",
                "X-Plex-Client-Identifier": CLIENT_IDENTIFIER,
                "X-Plex-Product": "SmartPlex Sync",
            },
            timeout=timeout,
            transport=transport,
        )
        self.page_size = page_size

    @classmethod
    def for_server(cls, server: PlexServer, settings: Settings) -> PlexClient:
        """A client for a SmartPlex `servers` row; ConfigurationError when the row has no token."""
        if not server.token:
            raise ConfigurationError(
                f"Plex server {server.name!r} has no plex_token: sign in to Plex in SmartPlex, or set "
                "SMARTPLEX_PLEX_TOKEN for the server SMARTPLEX_PLEX_URL names"
            )
        return cls(
            server.url, server.token, page_size=settings.plex_page_size, timeout=settings.http_timeout_seconds
        )

    def _container(self, path: str, **kwargs: Any) -> dict[str, Any]:
        data = self.get_json(path, **kwargs)
        container = data.get("MediaContainer") if isinstance(data, dict) else None
        if not isinstance(container, dict):
            raise PermanentServiceError(self.service, f"GET {path} answered no MediaContainer")
        return container

    def identity(self) -> dict[str, Any]:
        """`machineIdentifier` and `version`; Plex answers it without a token."""
        container = self._container("/identity")
        if not container.get("machineIdentifier"):
            raise PermanentServiceError(self.service, "/identity answered no machineIdentifier")
        return container

    def server_info(self) -> dict[str, Any]:
        """`/`: machineIdentifier, friendlyName, version, platform; the token must be good."""
        container = self._container("/")
        if not container.get("machineIdentifier"):
            raise PermanentServiceError(self.service, "/ answered no machineIdentifier")
        return container

    def sections(self) -> list[dict[str, Any]]:
        return list(self._container("/library/sections").get("Directory", []))

    def items_page(
        self,
        section_id: int,
        type_: str,
        start: int,
        *,
        size: int | None = None,
        updated_since: int | None = None,
        added_since: int | None = None,
    ) -> ItemsPage:
        """One page of `/library/sections/{id}/all`, oldest first; `*_since` are strict (`>>=`) bounds."""
        params: dict[str, Any] = {"type": PLEX_TYPES[type_], "includeGuids": 1, "sort": "addedAt:asc"}
        if updated_since is not None:
            params["updatedAt>>"] = updated_since
        if added_since is not None:
            params["addedAt>>"] = added_since
        headers = {"X-Plex-Container-Start": str(start), "X-Plex-Container-Size": str(size or self.page_size)}
        container = self._container(f"/library/sections/{section_id}/all", params=params, headers=headers)
        items = list(container.get("Metadata", []))
        total = int(container.get("totalSize", start + len(items)))
        return ItemsPage(items, int(container.get("offset", start)), total)

    def metadata(self, rating_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The items of `rating_keys` the server has, by rating key: `/library/metadata/{k1},{k2},...`,
        METADATA_BATCH keys a request. Plex leaves out the keys it does not have, and answers 404 when it
        has none of them. A 200 without items is no answer: PermanentServiceError."""
        found: dict[str, dict[str, Any]] = {}
        keys = list(dict.fromkeys(rating_keys))
        for batch in chunked(keys, METADATA_BATCH):
            path = f"/library/metadata/{','.join(batch)}"
            try:
                items = self._container(path).get("Metadata") or []
            except PermanentServiceError as exc:
                if exc.status_code == 404:
                    continue
                raise
            if not items:
                raise PermanentServiceError(self.service, f"GET {path} answered 200 without items")
            found.update((str(item["ratingKey"]), item) for item in items)
        return found

    def children(self, rating_key: str) -> list[dict[str, Any]]:
        return list(self._container(f"/library/metadata/{rating_key}/children").get("Metadata", []))

    def check(self) -> str:
        """One line about the server for `doctor`; raises ServiceError when it is unreachable or refuses
        the token."""
        identity = self.identity()
        sections = self.sections()  # /identity needs no token: this call proves the token works
        kinds = ", ".join(f"{s.get('title')} ({s.get('type')})" for s in sections) or "no sections"
        return f"Plex {identity.get('version', '?')} at {self.base_url}, server {identity['machineIdentifier']}: {kinds}"
