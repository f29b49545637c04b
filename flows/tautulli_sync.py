"""`tautulli-sync`: each server's Tautulli history → `watch_history`, then SmartPlex's play totals on
`media_items` and its `user_stats` for every item the plays touched.

It takes a `TautulliSync`: per server, a window (`days`, 7 by default; 0 = all history, for a first
backfill) for the schedule, and single items (`rating_keys`, every play of each) for Tautulli's Playback
Stop / Watched webhooks, fetched together: Tautulli's `get_history` takes a comma-separated `rating_key`
list, so a burst of plays of 15 items costs one query, not 15. A server's Tautulli is the integration that
serves it (SmartPlex's `integrations`); one that watches another Plex server (its `pms_identifier` is not
the server's machine id) is left alone for this server. Plays are upserted by (server, Tautulli row id) and
totals recomputed from all stored plays, so a short window never lowers lifetime totals and running a
sync twice changes nothing. Each server's run also leaves the `sync_history` row SmartPlex's Tautulli
admin page reads.

The shape of every flow, per query and page: a retried fetch task (`fetch_history_page`), a pure
transform (`to_plays`), a store task (`store_plays`, one transaction); then one store task for the
totals (`store_totals`), and the part's row in the run's one report.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from flows._retry import NETWORK_RETRIES
from flows._runs import Opaque, Part, SyncRun, run_logger
from flows.clients.tautulli import HistoryPaging, TautulliClient, TautulliServer, history_after
from smartplex_sync.convert import blank_to_none, chunked, from_epoch
from smartplex_sync.requests import TautulliScope, TautulliSync, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store import utcnow
from smartplex_sync.store.accounts import integration_for
from smartplex_sync.store.events import Counts, record_tautulli_history
from smartplex_sync.store.history import UpsertCounts, refresh_play_totals, refresh_user_stats, upsert_plays

FLOW = "tautulli-sync"
RATING_KEYS_PER_QUERY = 100  # a comma-separated list in the URL; keep it short


@dataclass(frozen=True)
class FetchResult:
    plays: int
    counts: UpsertCounts
    rating_keys: frozenset[str]  # the items the plays touched, with their seasons and shows


def _int(value: Any, default: int | None = 0) -> int | None:
    if value is None or value == "":
        return default
    return round(float(value))


def _epoch(value: Any) -> datetime | None:
    seconds = _int(value, None)
    return from_epoch(seconds) if seconds else None


def watch_row(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A `watch_history` row from one get_history row (ids as text, epoch seconds as UTC datetimes);
    None for a row without a row id or rating key, which cannot be stored."""
    row_id = _int(row.get("row_id", row.get("id")), None)
    rating_key = blank_to_none(row.get("rating_key"))
    if row_id is None or rating_key is None:
        return None
    watched_status = row.get("watched_status")
    return {
        "tautulli_row_id": row_id,
        "rating_key": rating_key.strip(),
        "parent_rating_key": blank_to_none(row.get("parent_rating_key")),
        "grandparent_rating_key": blank_to_none(row.get("grandparent_rating_key")),
        "plex_user_id": blank_to_none(row.get("user_id")),
        "user_name": blank_to_none(row.get("username") or row.get("user")),
        "media_type": blank_to_none(row.get("media_type")),
        "title": blank_to_none(row.get("title")),
        "full_title": blank_to_none(row.get("full_title")),
        "started_at": _epoch(row.get("started")),
        "stopped_at": _epoch(row.get("stopped")),
        "duration_seconds": _int(row.get("play_duration", row.get("duration"))),
        "paused_seconds": _int(row.get("paused_counter")),
        "percent_complete": _int(row.get("percent_complete")),
        "watched_status": None if watched_status in (None, "") else float(watched_status),
        "platform": blank_to_none(row.get("platform")),
        "player": blank_to_none(row.get("player")),
    }


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_server(client: TautulliClient) -> TautulliServer:
    """The Plex server Tautulli watches."""
    return client.server_info()


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE, task_run_name="history @{start}")
def fetch_history_page(
    client: TautulliClient, start: int, after: date | None, rating_keys: str | None
) -> tuple[list[dict[str, Any]], int]:
    """One get_history page at `start`, and Tautulli's count of every matching play."""
    return client.history_page(start, after=after, rating_key=rating_keys)


def to_plays(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The `watch_history` rows of a page, and how many of its rows could not be stored."""
    converted = [watch_row(row) for row in rows]
    plays = [play for play in converted if play is not None]
    return plays, len(converted) - len(plays)


def touched_keys(plays: list[dict[str, Any]]) -> set[str]:
    """The items the plays touched, with their seasons and shows: their totals need refreshing."""
    return {
        key
        for play in plays
        for key in (play["rating_key"], play["parent_rating_key"], play["grandparent_rating_key"])
        if key
    }


@task(cache_policy=NO_CACHE, task_run_name="store plays")
def store_plays(engine: Engine, server_id: uuid.UUID, plays: Opaque[list[dict[str, Any]]]) -> UpsertCounts:
    """A page of plays, in one transaction (idempotent: upserted by Tautulli's row id)."""
    with engine.begin() as conn:
        return upsert_plays(conn, server_id, plays.value)


@task(cache_policy=NO_CACHE)
def store_totals(engine: Engine, server_id: uuid.UUID, touched: Opaque[frozenset[str]]) -> tuple[int, int]:
    """Recompute, from every stored play, the play totals of the touched items and the user_stats of
    their players, in one transaction; how many of each were refreshed."""
    with engine.begin() as conn:
        keys = touched.value
        return refresh_play_totals(conn, server_id, keys), refresh_user_stats(conn, server_id, keys)


def sync_query(
    client: TautulliClient, engine: Engine, server_id: uuid.UUID, after: date | None, rating_keys: list[str]
) -> FetchResult:
    """One query's plays, a page at a time: fetch (retried) → `to_plays` → store, so memory stays at one
    page and a retry fetches one page again, not the query."""
    logger = run_logger()
    paging = HistoryPaging()
    counts = UpsertCounts()
    touched: set[str] = set()
    fetched = skipped = 0
    keys = ",".join(rating_keys) if rating_keys else None
    while not paging.done:
        page = paging.take(*fetch_history_page(client, paging.start, after, keys))
        plays, unusable = to_plays(page.rows)
        if unusable:
            skipped += unusable
            logger.warning("Skipped %d rows without a row id or rating key", unusable)
        counts += store_plays(engine, server_id, Opaque(plays))
        touched |= touched_keys(plays)
        fetched = page.fetched
        logger.info("Fetched and stored %d of %d plays", page.fetched, page.total)
    return FetchResult(fetched - skipped, counts, frozenset(touched))


def _queries(scope: TautulliScope) -> list[tuple[date | None, list[str]]]:
    """One query per part: the window, then the items (all history holds the items' plays already)."""
    queries: list[tuple[date | None, list[str]]] = []
    if scope.days is not None:
        queries.append((history_after(datetime.now(UTC), scope.days) if scope.days else None, []))
    if scope.days != 0:
        queries += [(None, keys) for keys in chunked(scope.rating_keys, RATING_KEYS_PER_QUERY)]
    return queries


def sync_server(client: TautulliClient, run: SyncRun, part: Part, scope: TautulliScope) -> None:
    """One server's part: the plays, then the totals and user_stats of what they touched."""
    server = part.server
    started, began = utcnow(), time.monotonic()
    error: str | None = None
    summary: dict[str, Any] = {"mode": scope.label}
    try:
        watched = fetch_server(client)
        if server.machine_id and watched.identifier != server.machine_id:
            part.skipped = f"this Tautulli watches Plex machine {watched.identifier}, not {server.machine_id}"
            summary["skipped"] = part.skipped
            part.details.update(summary)  # the sync_events row says why nothing was synced
            return
        queries = _queries(scope)
        fetched = [sync_query(client, run.engine, server.id, after, keys) for after, keys in queries]
        touched = frozenset().union(*(f.rating_keys for f in fetched))
        refreshed, stats = store_totals(run.engine, server.id, Opaque(touched))
        counts = sum((f.counts for f in fetched), UpsertCounts())
        plays = sum(f.plays for f in fetched)
        summary.update(
            after=queries[0][0].isoformat() if scope.days and queries[0][0] else None,
            plays_fetched=plays, new=counts.new, updated=counts.updated, unchanged=counts.unchanged,
            items_refreshed=refreshed, user_stats=stats, requests=client.requests_made,
        )  # fmt: skip
        part.counts = Counts(discovered=plays, new=counts.new, updated=refreshed)
        part.rows = [summary]
        part.details.update(summary)
    except Exception as exc:
        error = str(exc) or type(exc).__name__
        raise
    finally:
        if part.skipped is None:
            with run.engine.begin() as conn:
                record_tautulli_history(
                    conn,
                    user_id=server.user_id,
                    server_id=server.id,
                    plays=summary.get("plays_fetched", 0),
                    new_plays=summary.get("new", 0),
                    items_updated=summary.get("items_refreshed", 0),
                    started_at=started,
                    completed_at=utcnow(),
                    error=error,
                    metadata={
                        **summary,
                        "days_back": scope.days,
                        "seconds": round(time.monotonic() - began, 2),
                    },
                )


@flow(name=FLOW)
def tautulli_sync(request: TautulliSync = TautulliSync(), trigger: Trigger = "manual") -> dict[str, Any]:
    """Sync each server's plays of the last `days` days (0: all history) and every play of its
    `rating_keys`; every server when `request` names none."""
    settings = get_settings()
    run = SyncRun(FLOW, "tautulli", trigger, settings)
    for server in run.servers(request):
        with run.engine.connect() as conn:
            integration = integration_for(conn, "tautulli", server)
        if integration is None:
            run.skip(server, "no active Tautulli integration serves this server")
            continue
        scope = request.scope_for(server.id)
        with (
            run.part(server, integration, mode=scope.label) as part,
            TautulliClient.for_integration(integration, settings) as client,
        ):
            run_logger().info(
                "Syncing %s from Tautulli %s for %s", scope.label, integration.name, server.name
            )
            sync_server(client, run, part, scope)
    return run.finish()
