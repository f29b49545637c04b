"""Plex Media Server client: JSON, token in a header (never in a URL that gets logged), paged listings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from flows.clients._http import ServiceClient
from smartplex_sync.errors import ConfigurationError, PermanentServiceError
from smartplex_sync.settings import Settings

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
    def from_settings(cls, settings: Settings) -> PlexClient:
        """A client for the configured server; ConfigurationError naming the missing setting otherwise."""
        if not settings.plex_url:
            raise ConfigurationError(
                "Plex is not configured: set SMARTPLEX_PLEX_URL (e.g. http://plex:32400)"
            )
        if settings.plex_token is None:
            raise ConfigurationError("Plex is not configured: set SMARTPLEX_PLEX_TOKEN (your X-Plex-Token)")
        return cls(
            settings.plex_url,
            settings.plex_token.get_secret_value(),
            page_size=settings.plex_page_size,
            timeout=settings.http_timeout_seconds,
        )

    def _container(self, path: str, **kwargs: Any) -> dict[str, Any]:
        data = self.get_json(path, **kwargs)
        container = data.get("MediaContainer") if isinstance(data, dict) else None
        if not isinstance(container, dict):
            raise PermanentServiceError(self.service, f"GET {path} answered no MediaContainer")
        return container

    def identity(self) -> dict[str, Any]:
        """`machineIdentifier` (our server_id) and `version`."""
        container = self._container("/identity")
        if not container.get("machineIdentifier"):
            raise PermanentServiceError(self.service, "/identity answered no machineIdentifier")
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

    def iter_items(
        self,
        section_id: int,
        type_: str,
        since: int | None = None,
        updated_since: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of one type in a section, a page at a time (no sleeps between pages)."""
        start = 0
        while True:
            page = self.items_page(section_id, type_, start, added_since=since, updated_since=updated_since)
            yield from page.items
            start += len(page.items)
            if not page.items or start >= page.total_size:
                return

    def metadata(self, rating_keys: Sequence[str]) -> list[dict[str, Any]]:
        """The items the server knows of `rating_keys`, `METADATA_BATCH` keys a request
        (`/library/metadata/{k1},{k2},...`). Plex leaves out the keys it does not know, and answers 404
        when it knows none of them."""
        items: list[dict[str, Any]] = []
        keys = list(dict.fromkeys(rating_keys))
        for start in range(0, len(keys), METADATA_BATCH):
            chunk = ",".join(keys[start : start + METADATA_BATCH])
            try:
                items += self._container(f"/library/metadata/{chunk}").get("Metadata", [])
            except PermanentServiceError as exc:
                if exc.status_code != 404:
                    raise
        return items

    def children(self, rating_key: str) -> list[dict[str, Any]]:
        return list(self._container(f"/library/metadata/{rating_key}/children").get("Metadata", []))

    def check(self) -> str:
        """One line about the server for `doctor`; raises ServiceError when it is unreachable or refuses
        the token."""
        identity = self.identity()
        sections = self.sections()  # /identity needs no token: this call proves the token works
        kinds = ", ".join(f"{s.get('title')} ({s.get('type')})" for s in sections) or "no sections"
        return f"Plex {identity.get('version', '?')} at {self.base_url}, server {identity['machineIdentifier']}: {kinds}"
