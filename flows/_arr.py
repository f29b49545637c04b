"""The body of `sonarr-sync` and `radarr-sync`: per server, the arr's items → `arr_items`, then their ids
onto `media_items` (`link_arr_ids`).

Fed by Download webhooks, a server's scope holds the items they named and the arr is not called (no
integration needed). Scheduled (items None), the whole list is read through the integration that serves
the server (SmartPlex's `integrations`), once per integration however many servers it serves, and the
items the arr no longer has are dropped (their media_items lose the stale id).

The shape of every flow: the items are fetched by a retried task (`fetch_series`, `fetch_movies`) and
parsed by the client's pure parsers, stored by one task per server (`store_arr_items`, one transaction),
and the part's row goes into the run's one report (`report_part`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from flows._runs import Opaque, Part, SyncRun, run_logger
from smartplex_sync.models import ArrItem, ArrService
from smartplex_sync.requests import RadarrSync, SonarrSync, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store import utcnow
from smartplex_sync.store.accounts import Integration, integration_for
from smartplex_sync.store.arr import (
    Coverage,
    coverage,
    link_arr_ids,
    remove_arr_items_except,
    upsert_arr_items,
)
from smartplex_sync.store.events import Counts

SHOWN_UNMATCHED = 20


@dataclass(frozen=True)
class Stored:
    """What storing one server's arr items did."""

    removed: int
    media_items_updated: int
    coverage: Coverage


@task(cache_policy=NO_CACHE)
def store_arr_items(
    engine: Engine, server_id: uuid.UUID, service: ArrService, received: Opaque[list[ArrItem]], full: bool
) -> Stored:
    """Upsert the items on the server (on a full run also drop the rest) and link, in one transaction."""
    items = received.value
    with engine.begin() as conn:
        upsert_arr_items(conn, server_id, items, utcnow())
        removed = remove_arr_items_except(conn, server_id, service, [i.arr_id for i in items]) if full else 0
        updated = link_arr_ids(conn, server_id)
        found = coverage(conn, server_id, service, items)
    return Stored(removed, updated, found)


def report_part(part: Part, items: list[ArrItem], stored: Stored) -> None:
    """What the store did goes on the part: its counts, details and the report's row (at most
    SHOWN_UNMATCHED titles of items the library does not hold)."""
    unmatched = [item.title for item in stored.coverage.unmatched]
    shown = ", ".join(unmatched[:SHOWN_UNMATCHED]) + (
        f" … +{len(unmatched) - SHOWN_UNMATCHED}" if len(unmatched) > SHOWN_UNMATCHED else ""
    )
    part.counts = Counts(discovered=len(items), updated=stored.media_items_updated, removed=stored.removed)
    part.details.update(
        received=len(items),
        matched=len(stored.coverage.matched),
        unmatched=len(unmatched),
        media_items_updated=stored.media_items_updated,
        removed=stored.removed,
        library_unlinked=stored.coverage.library_unlinked,
    )
    part.rows = [{**part.details, "not in library": shown}]


def sync_arr(
    service: ArrService,
    request: SonarrSync | RadarrSync,
    trigger: Trigger,
    read: Callable[[Integration], tuple[list[ArrItem], int]],
    endpoint: str,
) -> dict[str, Any]:
    """Each server's part (see the module docstring); `read` lists everything an integration's arr has
    and counts the requests it made."""
    settings = get_settings()
    run = SyncRun(f"{service}-sync", service, trigger, settings)
    catalogues: dict[Any, tuple[list[ArrItem], int]] = {}
    for server in run.servers(request):
        scope = request.scope_for(server.id)
        with run.engine.connect() as conn:
            integration = integration_for(conn, service, server)
        if scope.items is None and integration is None:
            run.skip(server, f"no active {service.capitalize()} integration serves this server")
            continue
        source = "webhook" if scope.items is not None else endpoint
        with run.part(server, integration, source=source) as part:
            if scope.items is not None:
                items, requests = scope.items, 0
            else:
                assert integration is not None
                if integration.id not in catalogues:
                    catalogues[integration.id] = read(integration)
                items, requests = catalogues[integration.id]
            part.details["requests"] = requests
            stored = store_arr_items(run.engine, server.id, service, Opaque(items), full=scope.items is None)
            report_part(part, items, stored)
            run_logger().info(
                "%s on %s: %d stored, %d removed, %d media_items updated",
                service, server.name, len(items), stored.removed, stored.media_items_updated,
            )  # fmt: skip
    return run.finish()
