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
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._retry import NETWORK_RETRIES
from flows._runs import Part, SyncRun, run_logger
from flows.clients.tautulli import TautulliClient, TautulliServer, history_after
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


def _blank_to_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: Any, default: int | None = 0) -> int | None:
    if value is None or value == "":
        return default
    return round(float(value))


def _epoch(value: Any) -> datetime | None:
    seconds = _int(value, None)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def watch_row(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A `watch_history` row from one get_history row (ids as text, epoch seconds as UTC datetimes);
    None for a row without a row id or rating key, which cannot be stored."""
    row_id = _int(row.get("row_id", row.get("id")), None)
    rating_key = _blank_to_none(row.get("rating_key"))
    if row_id is None or rating_key is None:
        return None
    watched_status = row.get("watched_status")
    return {
        "tautulli_row_id": row_id,
        "rating_key": rating_key.strip(),
        "parent_rating_key": _blank_to_none(row.get("parent_rating_key")),
        "grandparent_rating_key": _blank_to_none(row.get("grandparent_rating_key")),
        "plex_user_id": _blank_to_none(row.get("user_id")),
        "user_name": _blank_to_none(row.get("username") or row.get("user")),
        "media_type": _blank_to_none(row.get("media_type")),
        "title": _blank_to_none(row.get("title")),
        "full_title": _blank_to_none(row.get("full_title")),
        "started_at": _epoch(row.get("started")),
        "stopped_at": _epoch(row.get("stopped")),
        "duration_seconds": _int(row.get("play_duration", row.get("duration"))),
        "paused_seconds": _int(row.get("paused_counter")),
        "percent_complete": _int(row.get("percent_complete")),
        "watched_status": None if watched_status in (None, "") else float(watched_status),
        "platform": _blank_to_none(row.get("platform")),
        "player": _blank_to_none(row.get("player")),
    }


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_server(client: TautulliClient) -> TautulliServer:
    """The Plex server Tautulli watches."""
    return client.server_info()


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def sync_history(
    client: TautulliClient, database_url: str, server_id: Any, after: date | None, rating_keys: list[str]
) -> FetchResult:
    """Fetch the plays page by page and upsert each page as it comes (memory stays at one page).

    Safe to retry: the upsert is idempotent. Plays written by a failed attempt count as unchanged
    in the retry's counts.
    """
    from smartplex_sync.store import get_engine

    logger = run_logger()
    engine = get_engine(database_url)
    counts = UpsertCounts()
    touched: set[str] = set()
    fetched = skipped = 0
    keys = ",".join(rating_keys) if rating_keys else None
    for page in client.history_pages(after=after, rating_key=keys):
        converted = [watch_row(row) for row in page.rows]
        plays = [play for play in converted if play is not None]
        if len(plays) < len(converted):
            skipped += len(converted) - len(plays)
            logger.warning("Skipped %d rows without a row id or rating key", len(converted) - len(plays))
        with engine.begin() as conn:
            counts += upsert_plays(conn, server_id, plays)
        for play in plays:
            touched.update(
                filter(None, (play["rating_key"], play["parent_rating_key"], play["grandparent_rating_key"]))
            )
        fetched = page.fetched
        logger.info("Fetched and stored %d of %d plays", page.fetched, page.total)
    return FetchResult(fetched - skipped, counts, frozenset(touched))


def _queries(scope: TautulliScope) -> list[tuple[date | None, list[str]]]:
    """One query per part: the window, then the items (all history holds the items' plays already)."""
    queries: list[tuple[date | None, list[str]]] = []
    if scope.days is not None:
        queries.append((history_after(datetime.now(UTC), scope.days) if scope.days else None, []))
    if scope.days != 0:
        keys = scope.rating_keys
        queries += [
            (None, keys[i : i + RATING_KEYS_PER_QUERY]) for i in range(0, len(keys), RATING_KEYS_PER_QUERY)
        ]
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
        fetched = [
            sync_history(client, run.settings.sqlalchemy_url, server.id, after, keys)
            for after, keys in queries
        ]
        touched = frozenset().union(*(f.rating_keys for f in fetched))
        with run.engine.begin() as conn:
            refreshed = refresh_play_totals(conn, server.id, touched)
            stats = refresh_user_stats(conn, server.id, touched)
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
