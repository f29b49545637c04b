"""`plex-library-sync`: each Plex server → SmartPlex's `media_items`, one row per movie, show, season and
episode (`flows._plex_items` has the row's shape).

It takes a `PlexLibrarySync`: per server (SmartPlex's `servers` row, its URL and token), sections (by
id, by type, or all) in a mode, single items by rating key (all of them in one request, with their
seasons and episodes), and removal checks (Sonarr/Radarr deleted these items: `flows._plex_removals`).
Each server is a part of its own (`flows._runs`): its Plex answers `/` first, and a server whose Plex
answers with another machine identifier than its row holds is refused rather than written into. Modes,
per section:
- `full`: list every item (types 1, or 2/3/4 for a show section), then delete the rows of *that section
  of that server* that Plex no longer lists, unless that is more than the deletion guard allows. Items
  Plex keeps in its trash are listed, and stored not `accessible`.
- `incremental`: list only items whose `updatedAt` is after the section's watermark minus the overlap.
  PMS sets `updatedAt` when an item is added and on every change, so this one filter catches additions
  and upgrades; listing seasons and episodes too catches new seasons of known shows (Overseerr #3276).
  A section without a watermark gets a full sync.
The watermark is the newest addedAt/updatedAt seen, in the Plex server's own clock (no clock skew).

Every page has the shape of every flow: a retried fetch task (`fetch_page`), a pure transform
(`flows._plex_items.to_rows`), a store task (`store_page`, one transaction), so memory stays bounded by
the page size; a full sync keeps only the rating keys it saw, for the deletion. After a section's pages,
store tasks set its watermark and link arr ids (`store_progress`) and delete what Plex no longer lists
(`store_deletions`). Seasons and episodes take their show's ids and genres: a show section lists its
shows first, and a show not listed in this run (an incremental run) is fetched (`fetch_items`, 50 rating
keys a request). The run publishes one report (`flows._runs.RunReport`): a row per section, and the
removal checks' rows.

Removal checks run last, after the section and item syncs of the same run: Plex's answer to them is the
newest thing the run learns, and nothing later in the run can write back a row they removed (the race the
original SmartPlex had: a webhook sync listing an item just before Plex dropped it, and re-adding it).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from flows._plex_items import SectionInfo, ShowInfo, choose_sections, latest_change, show_key, to_rows
from flows._plex_removals import check_removals
from flows._retry import NETWORK_RETRIES
from flows._runs import Opaque, Part, SyncRun, run_logger
from flows.clients.plex import ItemsPage, PlexClient
from smartplex_sync.convert import from_epoch
from smartplex_sync.errors import DeletionGuardError, PermanentServiceError, TransientServiceError
from smartplex_sync.requests import Mode, PlexLibrarySync, PlexScope, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store.accounts import PlexServer, record_server_seen
from smartplex_sync.store.arr import link_arr_ids
from smartplex_sync.store.events import Counts
from smartplex_sync.store.media import (
    UpsertResult,
    delete_missing,
    get_watermark,
    set_watermark,
    upsert_media_items,
)

FLOW = "plex-library-sync"
PROGRESS_EVERY_SECONDS = 5.0
REMOVAL_CHECKS = "removal checks"
"""The `section` of a removal check's rows in the run's report."""
_TASK_OPTIONS: dict[str, Any] = {**NETWORK_RETRIES, "cache_policy": NO_CACHE}


@task(**_TASK_OPTIONS)
def fetch_server_info(client: PlexClient) -> dict[str, Any]:
    """`/`: the server's machineIdentifier, version and platform (and proof that the token works)."""
    return client.server_info()


@task(**_TASK_OPTIONS)
def fetch_sections(client: PlexClient) -> list[dict[str, Any]]:
    return client.sections()


@task(**_TASK_OPTIONS, task_run_name="page s{section_id} {type_} @{start}")
def fetch_page(
    client: PlexClient, section_id: int, type_: str, start: int, updated_since: int | None
) -> ItemsPage:
    return client.items_page(section_id, type_, start, updated_since=updated_since)


@task(**_TASK_OPTIONS, task_run_name="items")
def fetch_items(client: PlexClient, rating_keys: list[str]) -> dict[str, dict[str, Any]]:
    return client.metadata(rating_keys)


@task(**_TASK_OPTIONS, task_run_name="children of {rating_key}")
def fetch_children(client: PlexClient, rating_key: str) -> list[dict[str, Any]]:
    return client.children(rating_key)


@dataclass
class SectionReport:
    section: str
    mode: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    requests: int = 0
    seconds: float = 0.0
    error: str = ""

    def count(self, result: UpsertResult) -> None:
        self.added += result.added
        self.updated += result.updated
        self.unchanged += result.unchanged


class Shows:
    """The shows a run met, for their seasons and episodes: listed shows first, the others asked for."""

    def __init__(self, client: PlexClient) -> None:
        self.client = client
        self.known: dict[str, ShowInfo] = {}

    def remember(self, items: list[dict[str, Any]]) -> None:
        self.known.update((str(i["ratingKey"]), ShowInfo.of(i)) for i in items if i["type"] == "show")

    def of(self, items: list[dict[str, Any]]) -> dict[str, ShowInfo]:
        """The shows of these items (fetching the ones this run has not seen yet)."""
        self.remember(items)
        wanted = {key for item in items if (key := show_key(item))}
        unseen = sorted(wanted - set(self.known))
        if unseen:
            self.remember([i for i in fetch_items(self.client, unseen).values() if i["type"] == "show"])
        return {key: self.known[key] for key in wanted if key in self.known}


@task(cache_policy=NO_CACHE, task_run_name="store {label}")
def store_page(engine: Engine, rows: Opaque[list[dict[str, Any]]], label: str) -> UpsertResult:
    """A page of `media_items` rows, in one transaction (idempotent: upserted on server and rating key)."""
    with engine.begin() as conn:
        return upsert_media_items(conn, rows.value)


@task(cache_policy=NO_CACHE)
def store_progress(
    engine: Engine, server_id: uuid.UUID, section_id: int | None, newest: int | None, link: bool
) -> None:
    """After a section's pages (or single items): its watermark (the newest change seen, unix s) and the
    arr ids of the rows that changed (`link`), in one transaction."""
    with engine.begin() as conn:
        if section_id is not None and newest is not None:
            set_watermark(conn, server_id, section_id, from_epoch(newest))
        if link:
            link_arr_ids(conn, server_id)


@task(cache_policy=NO_CACHE)
def store_deletions(
    engine: Engine, server: PlexServer, section_id: int, seen: Opaque[set[str]], guard_fraction: float
) -> int:
    """Delete the section's rows Plex no longer lists (a full sync), unless the deletion guard refuses."""
    with engine.begin() as conn:
        return delete_missing(conn, server.id, section_id, seen.value, guard_fraction, server.name)


@task(cache_policy=NO_CACHE)
def store_server_seen(engine: Engine, server_id: uuid.UUID, machine: str, info: dict[str, Any]) -> None:
    """The server's machine id, version and platform as its Plex answered `/`."""
    with engine.begin() as conn:
        record_server_seen(
            conn, server_id, machine_id=machine, version=info.get("version"), platform=info.get("platform")
        )


def sync_section(
    client: PlexClient,
    engine: Engine,
    server: PlexServer,
    section: SectionInfo,
    shows: Shows,
    *,
    mode: Mode,
    overlap_seconds: int,
    guard_fraction: float,
) -> SectionReport:
    """Sync one section, a page at a time. A DeletionGuardError is recorded in the report, not raised."""
    logger = run_logger()
    started, requests_before = time.perf_counter(), client.requests_made
    with engine.connect() as conn:
        watermark = get_watermark(conn, server.id, section.id)
    since = None
    if mode == "incremental" and watermark is not None:
        since = int(watermark.timestamp()) - overlap_seconds
    report = SectionReport(f"{section.title} ({section.id})", "incremental" if since is not None else "full")
    seen: set[str] = set()
    newest: int | None = None
    last_log = started
    for type_ in section.item_types:
        start = 0
        while True:
            page = fetch_page(client, section.id, type_, start, since)
            rows = to_rows(page.items, server.id, section, shows.of(page.items))
            report.count(store_page(engine, Opaque(rows), f"s{section.id} {type_} @{start}"))
            seen.update(row["plex_id"] for row in rows)
            newest = max(filter(None, (newest, latest_change(page.items))), default=None)
            start += len(page.items)
            if time.perf_counter() - last_log > PROGRESS_EVERY_SECONDS:
                last_log = time.perf_counter()
                logger.info(
                    "%s %s: %s %d/%d, %d items so far",
                    server.name, report.section, type_, start, page.total_size, len(seen),
                )  # fmt: skip
            if not page.items or start >= page.total_size:
                break
    changed = bool(report.added or report.updated)
    if newest is not None or changed:
        store_progress(engine, server.id, section.id, newest, link=changed)
    if since is None:
        try:
            report.removed = store_deletions(engine, server, section.id, Opaque(seen), guard_fraction)
        except DeletionGuardError as exc:
            report.error = str(exc)
            logger.error("%s", exc)
    report.requests = client.requests_made - requests_before
    report.seconds = round(time.perf_counter() - started, 3)
    logger.info("%s %s: %s", server.name, report.section, asdict(report))
    return report


def sync_items(
    client: PlexClient, engine: Engine, server: PlexServer, shows: Shows, rating_keys: list[str]
) -> SectionReport:
    """Sync single items (one request for all of them), and everything below the shows and seasons."""
    started, requests_before = time.perf_counter(), client.requests_made
    report = SectionReport(f"{len(rating_keys)} items", "item")
    found = fetch_items(client, rating_keys)
    unknown = sorted(set(rating_keys) - set(found))
    if unknown:
        run_logger().warning(
            "Plex server %s does not know ratingKey %s; nothing to sync for them",
            server.name,
            ", ".join(unknown),
        )
    rows = []
    for item in found.values():
        items, parents = [item], [item] if item["type"] in ("show", "season") else []
        while parents:
            children = fetch_children(client, str(parents.pop()["ratingKey"]))
            items += children
            parents += [child for child in children if child["type"] == "season"]
        rows += to_rows(items, server.id, SectionInfo.of_item(item), shows.of(items))
    report.count(store_page(engine, Opaque(rows), report.section))
    if report.added or report.updated:
        store_progress(engine, server.id, None, None, link=True)
    report.requests = client.requests_made - requests_before
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _check_identity(client: PlexClient, engine: Engine, server: PlexServer) -> None:
    """The Plex at the row's URL is the row's server: refuse to write another server's items into it."""
    info = fetch_server_info(client)
    machine = str(info["machineIdentifier"])
    if server.machine_id and machine != server.machine_id:
        raise PermanentServiceError(
            "plex",
            f"{server.url} answers as Plex machine {machine}, but server {server.name!r} is machine "
            f"{server.machine_id}: check its URL in SmartPlex (servers.url / preferred_connection_url)",
        )
    store_server_seen(engine, server.id, machine, info)


def sync_server(client: PlexClient, run: SyncRun, part: Part, scope: PlexScope) -> None:
    """One server's part: its sections, items and removal checks."""
    settings, server, engine = run.settings, part.server, run.engine
    _check_identity(client, engine, server)
    shows = Shows(client)
    reports: list[SectionReport] = []
    problems: list[str] = []
    if scope.syncs_sections:
        sections, unknown = choose_sections(fetch_sections(client), scope)
        if unknown:
            problems.append(f"no movie or show section with id {unknown} on this server")
        run_logger().info(
            "Plex server %s: %s sync of %s", server.name, scope.mode, [s.title for s in sections]
        )
        for section in sections:
            reports.append(
                sync_section(
                    client,
                    engine,
                    server,
                    section,
                    shows,
                    mode=scope.mode,
                    overlap_seconds=settings.incremental_overlap_seconds,
                    guard_fraction=settings.delete_guard_fraction,
                )
            )
    if scope.rating_keys:
        reports.append(sync_items(client, engine, server, shows, scope.rating_keys))
    removals = check_removals(client, engine, server, scope.removal_checks) if scope.removal_checks else None
    totals = {
        key: sum(getattr(r, key) for r in reports) for key in ("added", "updated", "removed", "unchanged")
    }
    removed = totals["removed"] + (len(removals.removed) if removals else 0)
    part.counts = Counts(
        discovered=totals["added"] + totals["updated"] + totals["unchanged"],
        new=totals["added"],
        updated=totals["updated"],
        removed=removed,
    )
    part.rows = [asdict(report) for report in reports]
    part.details.update(mode=scope.mode_label, requests=client.requests_made, **totals)
    if removals is not None:
        part.rows += [{"section": REMOVAL_CHECKS, "mode": "removal", **row} for row in removals.table()]
        part.details["removal_checks"] = removals.summary()
    refused = [report.error for report in reports if report.error]
    if refused:
        raise DeletionGuardError("; ".join(refused + problems))
    if removals is not None and removals.errors:
        # Failed, so every delivery it served says why; the rows Plex did not answer for are kept.
        unanswered = f"no answer for {len(removals.unanswered)} rows, kept: {'; '.join(removals.errors)}"
        raise TransientServiceError("plex", "; ".join([unanswered, *problems]))
    if problems:
        raise ValueError("; ".join(problems))


@flow(name=FLOW)
def plex_library_sync(
    request: PlexLibrarySync = PlexLibrarySync(), trigger: Trigger = "manual"
) -> dict[str, Any]:
    """Sync each server's sections (by id, by type, or every movie and show section), items and removal
    checks; every server when `request` names none."""
    settings = get_settings()
    run = SyncRun(FLOW, "plex", trigger, settings)
    for server in run.servers(request):
        scope = request.scope_for(server.id)
        with (
            run.part(server, mode=scope.mode_label) as part,
            PlexClient.for_server(server, settings) as client,
        ):
            sync_server(client, run, part, scope)
    return run.finish(removal_summary([part.details for part in run.parts]))


def removal_summary(details: list[dict[str, Any]]) -> str:
    """The report's line about the run's removal checks (their rows are in its table); empty without."""
    checks = [d["removal_checks"] for d in details if "removal_checks" in d]
    if not checks:
        return ""
    kinds = ("removed", "unavailable", "still_in_plex", "unanswered", "skipped")
    total = {kind: sum(len(check[kind]) for check in checks) for kind in kinds}
    return (
        f"Removal checks: {total['removed'] + total['unavailable']} rows removed or marked unavailable, "
        f"{total['still_in_plex']} still in Plex, {total['unanswered']} unanswered, {total['skipped']} skipped."
    )
