"""Tautulli's API v2: `GET {url}/api/v2?apikey=...&cmd=...`, answered in a `{"response": {...}}` envelope.

Tautulli reports failures inside the envelope, also on error statuses (plexpy/api2.py): a wrong or missing
key is 401 with "Invalid apikey", an unknown command 400, a failing command 500 with "Check the logs for
errors", and a command may answer 200 with `"result": "error"`. The client turns each into a
ServiceError carrying Tautulli's own message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from flows.clients._arr import integration_credentials
from flows.clients._http import TRANSIENT_STATUS, ServiceClient
from smartplex_sync.errors import PermanentServiceError, TransientServiceError
from smartplex_sync.settings import Settings
from smartplex_sync.store.accounts import Integration

HISTORY_PAGE_SIZE = 2000
"""Rows per get_history page. Tautulli runs the whole filtered query for every page and slices it, so
small pages over a big window cost O(n²) on the server; large pages keep a 7-day sync to a few requests."""


@dataclass(frozen=True)
class HistoryPage:
    rows: list[dict[str, Any]]  # plays not seen on an earlier page
    fetched: int  # plays so far, this page included
    total: int  # Tautulli's recordsFiltered


@dataclass
class HistoryPaging:
    """Where the next get_history page starts, which of a page's rows are new, and when the last page is
    in. A play finishing meanwhile shifts rows to later pages: they are read twice and passed on once,
    and none is skipped (the new play itself may have to wait for the next sync). No I/O."""

    page_size: int = HISTORY_PAGE_SIZE
    start: int = 0
    done: bool = False
    seen: set[int] = field(default_factory=set)

    def take(self, rows: list[dict[str, Any]], total: int) -> HistoryPage:
        """The page `rows` (read at `start`) make: the rows not seen before (a row without an id is a
        session still in progress, and left out); moves `start` past them."""
        fresh = []
        for row in rows:
            row_id = row.get("row_id", row.get("id"))
            if row_id is not None and int(row_id) not in self.seen:
                self.seen.add(int(row_id))
                fresh.append(row)
        self.start += len(rows)
        self.done = len(rows) < self.page_size or self.start >= total
        return HistoryPage(fresh, len(self.seen), total)


@dataclass(frozen=True)
class TautulliServer:
    """The Plex Media Server a Tautulli watches. `identifier` is Plex's machineIdentifier."""

    identifier: str
    name: str
    version: str


def history_after(now: datetime, days: int) -> date:
    """The `after=` date that makes get_history return every play started in the last `days` days.

    Tautulli compares `after` with the local date of `started` in *its* time zone, which the API does not
    report. Every time zone is within a day of UTC, so one day before the UTC date of the window start is
    early enough everywhere; the extra plays are real plays and the upsert makes the overlap harmless.
    """
    window_start = now.astimezone(UTC) - timedelta(days=days)
    return window_start.date() - timedelta(days=1)


class TautulliClient(ServiceClient):
    service = "tautulli"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, params={"apikey": api_key}, timeout=timeout, transport=transport)
        # Read Tautulli's message out of error answers before the base class sorts them by status alone.
        self._http.event_hooks["response"].append(self._raise_envelope_error)

    @classmethod
    def for_integration(cls, integration: Integration, settings: Settings) -> TautulliClient:
        """A client for a SmartPlex Tautulli integration; ConfigurationError when it lacks a URL or key."""
        url, key = integration_credentials(integration)
        return cls(url, key, timeout=settings.http_timeout_seconds)

    def _raise_envelope_error(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        response.read()
        message = _envelope(response).get("message")
        if not message:
            return  # not Tautulli's envelope (a proxy's page ...): the base class reports the status
        status = response.status_code
        if status in TRANSIENT_STATUS or status >= 500:
            raise TransientServiceError(self.service, f"answered {status}: {message}", status)
        if status in (401, 403):
            message = (
                f"{message} (check the API key of the Tautulli integration, or SMARTPLEX_TAUTULLI_API_KEY)"
            )
        raise PermanentServiceError(self.service, f"answered {status}: {message}", status)

    def command(self, cmd: str, **params: Any) -> Any:
        """Run one API command and return its `data`."""
        envelope = _envelope_of(self.get_json("/api/v2", params={"cmd": cmd, **params}))
        if envelope is None:
            raise PermanentServiceError(
                self.service,
                f"{cmd}: the answer is not Tautulli's response envelope (does the Tautulli integration's URL, "
                "or SMARTPLEX_TAUTULLI_URL, point at Tautulli?)",
            )
        if envelope.get("result") != "success":
            raise PermanentServiceError(
                self.service, f"{cmd} failed: {envelope.get('message') or 'no message'}"
            )
        return envelope.get("data")

    def server_info(self) -> TautulliServer:
        data = self.command("get_server_info")
        identifier = str(data.get("pms_identifier") or "") if isinstance(data, dict) else ""
        if not identifier:
            raise PermanentServiceError(
                self.service, "get_server_info has no pms_identifier: is Tautulli connected to a Plex server?"
            )
        return TautulliServer(identifier, str(data.get("pms_name") or ""), str(data.get("pms_version") or ""))

    def check(self) -> str:
        """One line for `doctor`: the key works and Tautulli knows its Plex server. Raises ServiceError."""
        server = self.server_info()
        return (
            f"Tautulli at {self.base_url}: API key accepted, watching Plex server {server.name!r} "
            f"({server.identifier}, version {server.version})"
        )

    def history_page(
        self,
        start: int,
        *,
        after: date | None = None,
        rating_key: str | None = None,
        page_size: int = HISTORY_PAGE_SIZE,
    ) -> tuple[list[dict[str, Any]], int]:
        """One get_history page of the finished plays matching the filters, oldest first, and Tautulli's
        count of them all (`HistoryPaging` reads pages into plays).

        `grouping=0` keeps resumed sessions as separate plays; `include_activity=0` leaves out sessions
        still in progress.
        """
        params: dict[str, Any] = {
            "grouping": 0,
            "include_activity": 0,
            "order_column": "date",
            "order_dir": "asc",
            "length": page_size,
            "start": start,
        }
        if after is not None:
            params["after"] = after.isoformat()
        if rating_key is not None:
            params["rating_key"] = rating_key
        return self._history_page(self.command("get_history", **params))

    def history_pages(
        self,
        *,
        after: date | None = None,
        rating_key: str | None = None,
        page_size: int = HISTORY_PAGE_SIZE,
    ) -> Iterator[HistoryPage]:
        """The finished plays matching the filters, page by page, each row id once (`HistoryPaging`)."""
        paging = HistoryPaging(page_size)
        while not paging.done:
            rows, total = self.history_page(
                paging.start, after=after, rating_key=rating_key, page_size=page_size
            )
            yield paging.take(rows, total)

    def _history_page(self, data: Any) -> tuple[list[dict[str, Any]], int]:
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise PermanentServiceError(self.service, "get_history answered without a data[] list")
        try:
            total = int(data.get("recordsFiltered", len(rows)))
        except (TypeError, ValueError) as exc:
            raise PermanentServiceError(
                self.service, "get_history answered a non-numeric recordsFiltered"
            ) from exc
        return [row for row in rows if isinstance(row, dict)], total


def _envelope_of(body: Any) -> dict[str, Any] | None:
    response = body.get("response") if isinstance(body, dict) else None
    return response if isinstance(response, dict) and "result" in response else None


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        return _envelope_of(response.json()) or {}
    except ValueError:
        return {}
