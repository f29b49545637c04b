"""Pieces the sonarr-sync, radarr-sync and overseerr-sync flows share: the run report (a Prefect table
artifact), a logger that also works when a flow is called through `.fn()`, and the arr store step."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import get_engine, utcnow
from smartplex_sync.store.arr import (
    ArrItem,
    ArrService,
    Coverage,
    coverage,
    link_arr_ids,
    remove_arr_items_except,
    upsert_arr_items,
)

SHOWN_UNMATCHED = 20


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow run's logger, or a plain one outside a run (a flow called with `.fn()`)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("smartplex_sync.flows")


@dataclass(frozen=True)
class RunReport:
    """What one run did; `matched`/`unmatched` are about the items this run received."""

    flow: str
    source: str  # "webhook" or the API endpoint read
    received: int
    matched: int
    unmatched: int
    updated: int
    requests_made: int
    seconds: float
    unmatched_titles: list[str] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)
    updated_label: str = "media_items updated"

    def rows(self) -> list[dict[str, Any]]:
        """The artifact table: one metric per row."""
        rows: list[dict[str, Any]] = [
            {"metric": "source", "value": self.source},
            {"metric": "received", "value": self.received},
            {"metric": "matched in library", "value": self.matched},
            {"metric": "not in library", "value": self.unmatched},
            {"metric": self.updated_label, "value": self.updated},
            *({"metric": name, "value": value} for name, value in self.notes.items()),
            {"metric": "requests made", "value": self.requests_made},
            {"metric": "seconds", "value": round(self.seconds, 2)},
        ]
        if self.unmatched_titles:
            shown = ", ".join(self.unmatched_titles[:SHOWN_UNMATCHED])
            more = len(self.unmatched_titles) - SHOWN_UNMATCHED
            rows.append(
                {"metric": "not in library (titles)", "value": shown + (f" … +{more}" if more > 0 else "")}
            )
        return rows

    def summary(self) -> str:
        return (
            f"{self.flow}: {self.received} from {self.source}, {self.matched} matched, "
            f"{self.unmatched} not in library, {self.updated} {self.updated_label}, "
            f"{self.requests_made} requests, {self.seconds:.1f}s"
        )


@task(cache_policy=NO_CACHE)
def publish_report(report: RunReport) -> None:
    create_table_artifact(key=report.flow, table=report.rows(), description=report.summary())
    run_logger().info(report.summary())


@dataclass(frozen=True)
class Stored:
    updated: int  # media_items rows whose arr id changed
    coverage: Coverage
    removed: int  # arr_items dropped because the service no longer has them (full runs only)


@task(cache_policy=NO_CACHE)
def store_and_link(database_url: str, service: ArrService, items: list[ArrItem], full: bool) -> Stored:
    """Upsert `items` (on a full run also drop the rest) and link, in one transaction."""
    with get_engine(database_url).begin() as conn:
        upsert_arr_items(conn, items, utcnow())
        removed = remove_arr_items_except(conn, service, [i.arr_id for i in items]) if full else 0
        updated = link_arr_ids(conn)
        report = coverage(conn, service, items)
    run_logger().info(
        "%s: %d stored, %d removed, %d media_items updated", service, len(items), removed, updated
    )
    return Stored(updated, report, removed)


def finish(
    flow_name: str, source: str, items: list[ArrItem], stored: Stored, requests_made: int, started: float
) -> RunReport:
    """Build, publish and return the run's report."""
    report = RunReport(
        flow=flow_name,
        source=source,
        received=len(items),
        matched=len(stored.coverage.matched),
        unmatched=len(stored.coverage.unmatched),
        updated=stored.updated,
        requests_made=requests_made,
        seconds=time.monotonic() - started,
        unmatched_titles=[i.title for i in stored.coverage.unmatched],
        notes={
            "removed (gone from the service)": stored.removed,
            "library rows unknown to the service": stored.coverage.library_unlinked,
        },
    )
    publish_report(report)
    return report


def sync_arr(
    service: ArrService,
    noun: str,
    from_webhook: list[ArrItem] | None,
    connect: Callable[[Settings], Any],
    fetch: Callable[[Any], list[ArrItem]],
    endpoint: str,
) -> RunReport:
    """The body of sonarr-sync and radarr-sync: the webhooks' items as they are (the service is not
    called), or (None) everything `fetch` reads through the client `connect` makes; then store and link."""
    started = time.monotonic()
    settings = get_settings()
    if from_webhook is not None:
        items, requests_made, source = from_webhook, 0, "webhook"
        run_logger().info("%d %s from a webhook; %s is not called", len(items), noun, service.capitalize())
    else:
        run_logger().info("full sync: reading every %s from %s", noun, service.capitalize())
        with connect(settings) as client:
            items = fetch(client)
            requests_made, source = client.requests_made, endpoint
    stored = store_and_link(settings.sqlalchemy_url, service, items, full=from_webhook is None)
    return finish(f"{service}-sync", source, items, stored, requests_made, started)
