"""`overseerr-sync`: Overseerr requests → `overseerr_requests`, upserted by request id.

It takes an `OverseerrSync`. Fed by webhooks, `requests` holds the requests they named (the later
delivery's status winning where two name one request), with statuses as the webhooks gave them
(PENDING, APPROVED, DECLINED, FAILED, AVAILABLE) and Overseerr is not called. Scheduled (`requests`
None), every page of `/api/v1/request` is read, statuses mapped from the API's numbers to names. Which
requests the library holds is answered when read (`store.overseerr.requests_in_library`).
"""

from __future__ import annotations

import time

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._arr import RunReport, publish_report, run_logger
from flows._retry import NETWORK_RETRIES
from flows.clients.overseerr import OverseerrClient, RequestPage
from smartplex_sync.requests import OverseerrSync
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine, utcnow
from smartplex_sync.store.overseerr import OverseerrRequest, requests_in_library, upsert_requests

DEFAULT_PAGE_SIZE = 100

SCHEDULED = OverseerrSync()
"""What a scheduled run asks for: everything the service has."""


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


@flow(name="overseerr-sync")
def overseerr_sync(request: OverseerrSync = SCHEDULED, page_size: int = DEFAULT_PAGE_SIZE) -> RunReport:
    """Record Overseerr requests: the webhooks' `requests`, or (None) every request Overseerr has."""
    started = time.monotonic()
    settings = get_settings()
    if request.requests is not None:
        items, requests_made, source = request.requests, 0, "webhook"
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
