"""The body of `sonarr-sync` and `radarr-sync`: per server, the arr's items → `arr_items`, then their ids
onto `media_items` (`link_arr_ids`).

Fed by Download webhooks, a server's scope holds the items they named and the arr is not called (no
integration needed). Scheduled (items None), the whole list is read through the integration that serves
the server (SmartPlex's `integrations`), once per integration however many servers it serves, and the
items the arr no longer has are dropped (their media_items lose the stale id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from flows._runs import Part, SyncRun, run_logger
from smartplex_sync.models import ArrItem, ArrService
from smartplex_sync.requests import RadarrSync, SonarrSync, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store import utcnow
from smartplex_sync.store.accounts import Integration, integration_for
from smartplex_sync.store.arr import coverage, link_arr_ids, remove_arr_items_except, upsert_arr_items
from smartplex_sync.store.events import Counts

SHOWN_UNMATCHED = 20


def store_and_link(engine: Engine, part: Part, service: ArrService, items: list[ArrItem], full: bool) -> None:
    """Upsert `items` on the part's server (on a full run also drop the rest) and link, in one
    transaction; what it did goes on the part."""
    server = part.server
    with engine.begin() as conn:
        upsert_arr_items(conn, server.id, items, utcnow())
        removed = remove_arr_items_except(conn, server.id, service, [i.arr_id for i in items]) if full else 0
        updated = link_arr_ids(conn, server.id)
        found = coverage(conn, server.id, service, items)
    unmatched = [item.title for item in found.unmatched]
    shown = ", ".join(unmatched[:SHOWN_UNMATCHED]) + (
        f" … +{len(unmatched) - SHOWN_UNMATCHED}" if len(unmatched) > SHOWN_UNMATCHED else ""
    )
    part.counts = Counts(discovered=len(items), updated=updated, removed=removed)
    part.details.update(
        received=len(items),
        matched=len(found.matched),
        unmatched=len(found.unmatched),
        media_items_updated=updated,
        removed=removed,
        library_unlinked=found.library_unlinked,
    )
    part.rows = [{**part.details, "not in library": shown}]
    run_logger().info(
        "%s on %s: %d stored, %d removed, %d media_items updated",
        service,
        server.name,
        len(items),
        removed,
        updated,
    )


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
            store_and_link(run.engine, part, service, items, full=scope.items is None)
    return run.finish()
