"""`plex-library-sync`: Plex library → `media_items`, one row per movie, show, season and episode.

It takes a `PlexLibrarySync`: sections (by id, by type, or all) in a mode, single items by rating key
(all of them in one request, with their seasons and episodes), and removal checks (Sonarr/Radarr deleted
these items: `flows._plex_removals`). Modes, per section:
- `full`: list every item (types 1, or 2/3/4 for a show section), then delete the rows of *that section
  of that server* that Plex no longer lists, unless that is more than the deletion guard allows. Items
  Plex keeps in its trash count as no longer listed (`in_trash`).
- `incremental`: list only items whose `updatedAt` is after the section's watermark minus the overlap.
  PMS sets `updatedAt` when an item is added and on every change, so this one filter catches additions
  and upgrades; listing seasons and episodes too catches new seasons of known shows (Overseerr #3276).
  A section without a watermark gets a full sync.
The watermark is the newest addedAt/updatedAt seen, in the Plex server's own clock (no clock skew).

Pages are fetched by retried tasks and written a page (one transaction) at a time, so memory stays
bounded by the page size; a full sync keeps only the rating keys it saw, for the deletion.

Removal checks run last, after the section and item syncs of the same run: Plex's answer to them is the
newest thing the run learns, and nothing later in the run can write back a row they removed (the race the
original SmartPlex had: a webhook sync listing an item just before Plex dropped it, and re-adding it).
Later runs cannot bring it back either: syncs skip what Plex keeps in its trash, and Plex no longer lists
what it removed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from sqlalchemy import Engine

from flows._plex_items import SectionInfo, choose_sections, in_trash, latest_change, to_row
from flows._plex_removals import RemovalReport, check_removals
from flows._retry import NETWORK_RETRIES
from flows.clients.plex import ItemsPage, PlexClient
from smartplex_sync.errors import DeletionGuardError, TransientServiceError
from smartplex_sync.requests import Mode, PlexLibrarySync
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine
from smartplex_sync.store.arr import link_arr_ids
from smartplex_sync.store.media import (
    UpsertResult,
    delete_missing,
    get_watermark,
    set_watermark,
    upsert_media_items,
)

SCHEDULED = PlexLibrarySync(mode="full")
PROGRESS_EVERY_SECONDS = 5.0
_TASK_OPTIONS: dict[str, Any] = {**NETWORK_RETRIES, "cache_policy": NO_CACHE}


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger inside a flow or task run; a module logger when the flow body is called directly."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(**_TASK_OPTIONS)
def fetch_identity(client: PlexClient) -> str:
    """The server's machineIdentifier: the `server_id` of every row."""
    return str(client.identity()["machineIdentifier"])


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


def _from_unix(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def sync_section(
    client: PlexClient,
    engine: Engine,
    server_id: str,
    section: SectionInfo,
    *,
    mode: Mode,
    overlap_seconds: int,
    guard_fraction: float,
) -> SectionReport:
    """Sync one section, a page at a time. A DeletionGuardError is recorded in the report, not raised."""
    logger = _logger()
    started, requests_before = time.perf_counter(), client.requests_made
    with engine.connect() as conn:
        watermark = get_watermark(conn, server_id, section.id)
    since = None
    if mode == "incremental" and watermark is not None:
        since = int(watermark.timestamp()) - overlap_seconds
    incremental = since is not None
    report = SectionReport(f"{section.title} ({section.id})", "incremental" if incremental else "full")
    seen: set[str] = set()
    newest: int | None = None
    last_log = started
    for type_ in section.item_types:
        start = 0
        while True:
            page = fetch_page(client, section.id, type_, start, since)
            rows = [to_row(item, server_id, section) for item in page.items if not in_trash(item)]
            with engine.begin() as conn:
                report.count(upsert_media_items(conn, rows))
            seen.update(row["rating_key"] for row in rows)
            newest = max(filter(None, (newest, latest_change(page.items))), default=None)
            start += len(page.items)
            if time.perf_counter() - last_log > PROGRESS_EVERY_SECONDS:
                last_log = time.perf_counter()
                logger.info(
                    "%s: %s %d/%d, %d items so far", report.section, type_, start, page.total_size, len(seen)
                )
            if not page.items or start >= page.total_size:
                break
    with engine.begin() as conn:
        if newest is not None:
            set_watermark(conn, server_id, section.id, _from_unix(newest))
        if report.added or report.updated:
            link_arr_ids(conn)
    if not incremental:
        try:
            with engine.begin() as conn:
                report.removed = delete_missing(conn, server_id, section.id, seen, guard_fraction)
        except DeletionGuardError as exc:
            report.error = str(exc)
            logger.error("%s", exc)
    report.requests = client.requests_made - requests_before
    report.seconds = round(time.perf_counter() - started, 3)
    logger.info("%s: %s", report.section, asdict(report))
    return report


def sync_items(client: PlexClient, engine: Engine, server_id: str, rating_keys: list[str]) -> SectionReport:
    """Sync single items (one request for all of them), and everything below the shows and seasons."""
    started, requests_before = time.perf_counter(), client.requests_made
    report = SectionReport(f"{len(rating_keys)} items", "item")
    found = fetch_items(client, rating_keys)
    unknown = sorted(set(rating_keys) - set(found))
    if unknown:
        _logger().warning("Plex does not know ratingKey %s; nothing to sync for them", ", ".join(unknown))
    rows = []
    for item in found.values():
        section = SectionInfo(
            int(item["librarySectionID"]),
            str(item.get("librarySectionTitle", "")),
            "movie" if item["type"] == "movie" else "show",
        )
        items, parents = [item], [item] if item["type"] in ("show", "season") else []
        while parents:
            children = fetch_children(client, str(parents.pop()["ratingKey"]))
            items += children
            parents += [child for child in children if child["type"] == "season"]
        rows += [to_row(i, server_id, section) for i in items if not in_trash(i)]
    with engine.begin() as conn:
        report.count(upsert_media_items(conn, rows))
        if report.added or report.updated:
            link_arr_ids(conn)
    report.requests = client.requests_made - requests_before
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _totals(reports: list[SectionReport]) -> dict[str, Any]:
    keys = ("added", "updated", "removed", "unchanged", "requests")
    totals: dict[str, Any] = {key: sum(getattr(r, key) for r in reports) for key in keys}
    totals["seconds"] = round(sum(r.seconds for r in reports), 3)
    return totals


@flow(name="plex-library-sync")
def plex_library_sync(request: PlexLibrarySync = SCHEDULED) -> dict[str, Any]:
    """Sync sections (by id, by type, or every movie and show section) and single items."""
    settings = get_settings()
    client = PlexClient.from_settings(settings)  # ConfigurationError, naming the setting, before any call
    engine = get_engine(settings.sqlalchemy_url)
    logger = _logger()
    problems: list[str] = []
    with client:
        server_id = fetch_identity(client)
        reports = []
        if request.syncs_sections:
            sections, unknown = choose_sections(fetch_sections(client), request)
            if unknown:
                problems.append(f"no movie or show section with id {unknown} on this server")
            logger.info("Plex server %s: %s sync of %s", server_id, request.mode, [s.title for s in sections])
            reports += [
                sync_section(
                    client,
                    engine,
                    server_id,
                    section,
                    mode=request.mode,
                    overlap_seconds=settings.incremental_overlap_seconds,
                    guard_fraction=settings.delete_guard_fraction,
                )
                for section in sections
            ]
        if request.rating_keys:
            reports.append(sync_items(client, engine, server_id, request.rating_keys))
        removals = None
        if request.removal_checks:  # last: see the module docstring
            removals = check_removals(client, engine, server_id, request.removal_checks)
            logger.info("Plex server %s: removal checks %s", server_id, asdict(removals))
        # identity and section list are requests too; count them on the run, not on a section
        requests = client.requests_made
    mode = request.mode if request.syncs_sections else "item" if request.rating_keys else "removal"
    result = {"server_id": server_id, "mode": mode, **_totals(reports)}
    result["requests"] = requests
    result["sections"] = [asdict(r) for r in reports]
    create_table_artifact(
        key="plex-library-sync",
        table=[asdict(r) for r in reports],
        description=(
            f"Plex server `{server_id}`, {result['mode']} sync: {result['added']} added, "
            f"{result['updated']} updated, {result['removed']} removed, {result['unchanged']} unchanged, "
            f"{requests} Plex requests."
        ),
    )
    if removals is not None:
        result["removal_checks"] = _publish_removals(server_id, request, removals)
    refused = [r.error for r in reports if r.error]
    if refused:
        raise DeletionGuardError("; ".join(refused))
    if problems:
        raise ValueError("; ".join(problems))
    if removals is not None and removals.errors:
        # After the artifact, so the run shows what it did; failed, so every delivery it served says why.
        raise TransientServiceError(
            "plex", f"no answer for {len(removals.unanswered)} rows, kept: {'; '.join(removals.errors)}"
        )
    return result


def _publish_removals(server_id: str, request: PlexLibrarySync, report: RemovalReport) -> dict[str, Any]:
    """The removal checks' artifact (one line per removed row) and their part of the run's result."""
    checks = ", ".join(check.label for check in request.removal_checks)
    description = (
        f"Plex server `{server_id}`, removal checks ({checks}): {len(report.removed)} rows removed; "
        f"still in Plex: {', '.join(report.still_in_plex) or 'none'}; "
        f"unanswered (kept): {', '.join(report.unanswered) or 'none'}; "
        f"skipped: {'; '.join(report.skipped) or 'none'}; {report.requests} Plex requests."
    )
    create_table_artifact(key="plex-removals", table=report.table(), description=description)
    return {
        "removed": [row["rating_key"] for row in report.removed],
        "still_in_plex": report.still_in_plex,
        "unanswered": report.unanswered,
        "skipped": report.skipped,
        "errors": report.errors,
        "requests": report.requests,
    }
