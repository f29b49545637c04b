"""Overseerr / Jellyseerr API v1: the paged request list, the status and the key's user."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flows.clients._arr import ApiKeyClient, positive_int
from smartplex_sync.convert import blank_to_none
from smartplex_sync.errors import PermanentServiceError
from smartplex_sync.models import OverseerrRequest

# MediaRequestStatus (server/constants/media.ts); 4 and 5 arrived in later Overseerr and Jellyseerr.
REQUEST_STATUS = {1: "PENDING", 2: "APPROVED", 3: "DECLINED", 4: "FAILED", 5: "COMPLETED"}
# MediaStatus. Past 5 the forks disagree (DELETED vs BLACKLISTED), so those stay numbered.
MEDIA_STATUS = {1: "UNKNOWN", 2: "PENDING", 3: "PROCESSING", 4: "PARTIALLY_AVAILABLE", 5: "AVAILABLE"}


def status_name(table: Mapping[int, str], value: Any) -> str | None:
    if value is None:
        return None
    try:
        return table.get(int(value), f"STATUS_{value}")
    except (TypeError, ValueError):
        return str(value).upper()


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def display_name(user: Mapping[str, Any] | None) -> str | None:
    """Overseerr's own rule: displayName, else username, else plexUsername, else email."""
    if not user:
        return None
    for key in ("displayName", "username", "plexUsername", "email"):
        if user.get(key):
            return str(user[key])
    return None


def _seasons(value: Any) -> tuple[int, ...] | None:
    """A tv request's season numbers (`seasons: [{seasonNumber}]`); None for a movie."""
    if not isinstance(value, list) or not value:
        return None
    numbers = (_season_number(s.get("seasonNumber")) if isinstance(s, dict) else None for s in value)
    return tuple(sorted({n for n in numbers if n is not None})) or None


def _season_number(value: Any) -> int | None:
    """A season number: 0 is Plex's and Overseerr's specials season, not "unknown"."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def parse_request(raw: Mapping[str, Any]) -> OverseerrRequest:
    """One `/api/v1/request` result. A 4K request's availability is the media's `status4k`."""
    request_id = positive_int(raw.get("id"))
    if request_id is None:
        raise PermanentServiceError("overseerr", f"a request without an id: {dict(raw)!r:.200}")
    media = raw.get("media") or {}
    is_4k = bool(raw.get("is4k"))
    requested_by = raw.get("requestedBy") or {}
    return OverseerrRequest(
        request_id=request_id,
        media_type=str(media.get("mediaType") or raw.get("type") or "movie"),
        status=status_name(REQUEST_STATUS, raw.get("status")) or "PENDING",
        tmdb_id=positive_int(media.get("tmdbId")),
        tvdb_id=positive_int(media.get("tvdbId")),
        media_status=status_name(MEDIA_STATUS, media.get("status4k" if is_4k else "status")),
        is_4k=is_4k,
        requested_by=display_name(requested_by),
        requested_by_email=blank_to_none(requested_by.get("email")),
        requested_by_id=positive_int(requested_by.get("id")),
        seasons=_seasons(raw.get("seasons")),
        requested_at=_timestamp(raw.get("createdAt")),
        updated_at=_timestamp(raw.get("updatedAt")),
    )


@dataclass(frozen=True)
class RequestPage:
    results: list[dict[str, Any]]  # as Overseerr answers them; `parse_request` reads each
    page: int
    pages: int
    total: int

    @property
    def is_last(self) -> bool:
        return not self.results or self.page >= self.pages


class OverseerrClient(ApiKeyClient):
    service = "overseerr"

    def request_page(self, skip: int, take: int) -> RequestPage:
        """One page of every request, newest first (Overseerr's order): a request made while paging shifts
        the rest down, so one may be read twice (a harmless upsert) but none is skipped."""
        data = self.get_json(
            "/api/v1/request", params={"take": take, "skip": skip, "filter": "all", "sort": "added"}
        )
        try:
            info = data["pageInfo"]
            return RequestPage(
                results=list(data["results"]),
                page=int(info["page"]),
                pages=int(info["pages"]),
                total=int(info["results"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentServiceError(self.service, f"/api/v1/request answered an odd page: {exc}") from exc

    def check(self) -> str:
        """Raise ServiceError unless Overseerr accepts this key; else describe it in one line."""
        status = self.get_json("/api/v1/status")
        me = self.get_json("/api/v1/auth/me")
        return (
            f"Overseerr {status.get('version', '?')} at {self.base_url}: "
            f"API key accepted (acts as {display_name(me) or 'unknown user'})"
        )
