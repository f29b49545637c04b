"""`overseerr-sync`: Overseerr requests → SmartPlex's `overseerr_requests` (`store.overseerr` says how
rows are matched, titled and attributed).

It takes an `OverseerrSync`. Fed by webhooks, a server's `requests` are the requests they named (the
later delivery's status winning where two name one request), with statuses as the webhooks gave them and
Overseerr is not called. Scheduled (`requests` None), every page of `/api/v1/request` is read through the
Overseerr integration that serves the server, once per integration however many servers it serves.

The shape of every flow: pages fetched by a retried task (`fetch_page`) and parsed by the client's pure
`parse_request`, stored by one task per server (`store_requests`, one transaction), and the part's row
goes into the run's one report (`report_part`).
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from flows._retry import NETWORK_RETRIES
from flows._runs import Opaque, Part, SyncRun, run_logger
from flows.clients.overseerr import OverseerrClient, RequestPage, parse_request
from smartplex_sync.models import OverseerrRequest
from smartplex_sync.requests import OverseerrSync, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store import utcnow
from smartplex_sync.store.accounts import Integration, integration_for
from smartplex_sync.store.events import Counts
from smartplex_sync.store.overseerr import Stored, requests_in_library, upsert_requests

FLOW = "overseerr-sync"
DEFAULT_PAGE_SIZE = 100


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_page(client: OverseerrClient, skip: int, take: int) -> RequestPage:
    page = client.request_page(skip, take)
    run_logger().info("Overseerr page %d of %d: %d requests", page.page, page.pages, len(page.results))
    return page


def fetch_all(client: OverseerrClient, page_size: int) -> list[OverseerrRequest]:
    """Every request, page by page; a request seen on two pages (the list moved) is kept once."""
    by_id: dict[int, OverseerrRequest] = {}
    skip = 0
    while True:
        page = fetch_page(client, skip, page_size)
        by_id.update((r.request_id, r) for r in map(parse_request, page.results))
        if page.is_last:
            return list(by_id.values())
        skip += page_size


def _read(integration: Integration, page_size: int) -> tuple[list[OverseerrRequest], int]:
    with OverseerrClient.for_integration(integration, get_settings()) as client:
        return fetch_all(client, page_size), client.requests_made


@flow(name=FLOW)
def overseerr_sync(
    request: OverseerrSync = OverseerrSync(),
    trigger: Trigger = "manual",
    page_size: int = DEFAULT_PAGE_SIZE,
) -> dict[str, Any]:
    """Record Overseerr requests: the webhooks' `requests`, or (None) every request Overseerr has."""
    settings = get_settings()
    run = SyncRun(FLOW, "overseerr", trigger, settings)
    read: dict[Any, tuple[list[OverseerrRequest], int]] = {}
    for server in run.servers(request):
        scope = request.scope_for(server.id)
        with run.engine.connect() as conn:
            integration = integration_for(conn, "overseerr", server)
        if scope.requests is None and integration is None:
            run.skip(server, "no active Overseerr integration serves this server")
            continue
        source = "webhook" if scope.requests is not None else "/api/v1/request"
        with run.part(server, integration, source=source) as part:
            if scope.requests is not None:
                items, requests = scope.requests, 0
            else:
                assert integration is not None
                if integration.id not in read:
                    read[integration.id] = _read(integration, page_size)
                items, requests = read[integration.id]
            stored, in_library = store_requests(
                run.engine, Opaque(items), integration.id if integration else None, server.user_id, server.id
            )
            report_part(part, items, stored, in_library, requests)
    return run.finish()


@task(cache_policy=NO_CACHE)
def store_requests(
    engine: Engine,
    received: Opaque[list[OverseerrRequest]],
    integration_id: uuid.UUID | None,
    owner_id: uuid.UUID,
    server_id: uuid.UUID,
) -> tuple[Stored, int]:
    """Upsert the requests, in one transaction, and count those the server's library holds."""
    items = received.value
    with engine.begin() as conn:
        stored = upsert_requests(conn, items, utcnow(), integration_id=integration_id, owner_id=owner_id)
        held = requests_in_library(conn, [r.request_id for r in items], integration_id, [server_id])
    return stored, len(held)


def report_part(
    part: Part, items: list[OverseerrRequest], stored: Stored, in_library: int, requests: int
) -> None:
    """What the store did goes on the part: its counts, details and the report's row."""
    part.counts = Counts(discovered=len(items), updated=stored.written, failed=len(stored.skipped))
    part.details.update(
        received=len(items),
        written=stored.written,
        in_library=in_library,
        skipped_without_tmdb_id=stored.skipped,
        requests=requests,
    )
    part.rows = [dict(part.details)]
