"""`overseerr-sync`: Overseerr requests → `overseerr_requests`, upserted by request id.

Fed by a webhook, `requests` holds the requests it named, with statuses as the webhook gave them
(PENDING, APPROVED, DECLINED, FAILED, AVAILABLE) and Overseerr is not called. Scheduled (`requests`
None), every page of `/api/v1/request` is read, statuses mapped from the API's numbers to names. Which
requests the library holds is answered when read (`store.requests.requests_in_library`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import RunReport, publish_report, run_logger
from flows._hooks import STATE_HOOKS
from flows._retry import NETWORK_RETRIES
from flows.clients._arr import positive_int, text_or_none
from flows.clients.overseerr import OverseerrClient, RequestPage
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine, utcnow
from smartplex_sync.store.requests import OverseerrRequest, requests_in_library, upsert_requests

DEFAULT_PAGE_SIZE = 100


def requests_from_parameters(requests: Sequence[Mapping[str, Any]]) -> list[OverseerrRequest]:
    """The webhook-fed parameters as OverseerrRequests (None for what a webhook does not tell)."""
    parsed = []
    for item in requests:
        request_id = positive_int(item.get("request_id"))
        if request_id is None:
            raise ValueError(f"overseerr-sync: a request without a request_id: {dict(item)!r}")
        parsed.append(
            OverseerrRequest(
                request_id=request_id,
                media_type=text_or_none(item.get("media_type")),
                status=str(item.get("status") or "PENDING").upper(),
                tmdb_id=positive_int(item.get("tmdb_id")),
                tvdb_id=positive_int(item.get("tvdb_id")),
                media_status=text_or_none(item.get("media_status")),
                requested_by=text_or_none(item.get("requested_by")),
                requested_by_email=text_or_none(item.get("requested_by_email")),
            )
        )
    return parsed


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_page(client: OverseerrClient, skip: int, take: int) -> RequestPage:
    page = client.request_page(skip, take)
    run_logger().info("Overseerr page %d of %d: %d requests", page.page, page.pages, len(page.requests))
    return page


def fetch_all(client: OverseerrClient, page_size: int) -> list[OverseerrRequest]:
    """Every request, page by page; a request seen on two pages (the list moved) is kept once."""
    by_id: dict[int, OverseerrRequest] = {}
    skip = 0
    while True:
        page = fetch_page(client, skip, page_size)
        by_id.update((r.request_id, r) for r in page.requests)
        if page.is_last:
            return list(by_id.values())
        skip += page_size


@task(cache_policy=NO_CACHE)
def store_requests(database_url: str, requests: list[OverseerrRequest]) -> tuple[int, list[int]]:
    """Upsert; return `(rows written, ids of this run's requests the library holds)`."""
    ids = {r.request_id for r in requests}
    with get_engine(database_url).begin() as conn:
        written = upsert_requests(conn, requests, utcnow())
        in_library = [r.request_id for r in requests_in_library(conn) if r.request_id in ids and r.in_library]
    run_logger().info("stored %d requests, %d of them in the library", written, len(in_library))
    return written, in_library


@flow(name="overseerr-sync", **STATE_HOOKS)
def overseerr_sync(
    requests: list[dict[str, Any]] | None = None, page_size: int = DEFAULT_PAGE_SIZE
) -> RunReport:
    """Record Overseerr requests: the webhook's `requests`, or (None) every request Overseerr has."""
    started = time.monotonic()
    settings = get_settings()
    if requests is not None:
        items, requests_made, source = requests_from_parameters(requests), 0, "webhook"
        run_logger().info("%d requests from a webhook; Overseerr is not called", len(items))
    else:
        run_logger().info("full sync: reading every request from Overseerr, %d a page", page_size)
        with OverseerrClient.from_settings(settings) as client:
            items = fetch_all(client, page_size)
            requests_made, source = client.requests_made, "/api/v1/request"
    written, in_library = store_requests(settings.sqlalchemy_url, items)
    report = RunReport(
        flow="overseerr-sync",
        source=source,
        received=len(items),
        matched=len(in_library),
        unmatched=len(items) - len(in_library),
        updated=written,
        requests_made=requests_made,
        seconds=time.monotonic() - started,
        updated_label="requests written",
    )
    publish_report(report)
    return report
