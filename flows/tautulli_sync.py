"""`tautulli-sync`: Tautulli watch history → `watch_history`, then the play totals of every touched item.

It takes a `TautulliSync`: a window (`days`, 7 by default; 0 = all history, for a first backfill) for the
schedule, and single items (`rating_keys`, every play of each) for Tautulli's Playback Stop / Watched
webhooks, fetched together: Tautulli's `get_history` takes a comma-separated `rating_key` list, so a burst
of plays of 15 items costs one query, not 15. Plays are upserted by Tautulli's row id and totals
recomputed from all stored plays, so a short window never lowers lifetime totals and running a sync twice
changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from flows._retry import NETWORK_RETRIES
from flows.clients.tautulli import TautulliClient, TautulliServer, history_after
from smartplex_sync.requests import DEFAULT_HISTORY_DAYS, TautulliSync
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine
from smartplex_sync.store.history import UpsertCounts, refresh_play_totals, upsert_plays

RATING_KEYS_PER_QUERY = 100  # a comma-separated list in the URL; keep it short
SCHEDULED = TautulliSync(days=DEFAULT_HISTORY_DAYS)


@dataclass(frozen=True)
class FetchResult:
    plays: int
    counts: UpsertCounts
    rating_keys: frozenset[str]


def _blank_to_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: Any, default: int | None = 0) -> int | None:
    if value is None or value == "":
        return default
    return round(float(value))


def _epoch(value: Any) -> datetime | None:
    seconds = _int(value, None)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def watch_row(row: Mapping[str, Any], server_id: str | None) -> dict[str, Any] | None:
    """A `watch_history` row from one get_history row (ids as text, epoch seconds as UTC datetimes);
    None for a row without a row id or rating key, which cannot be stored."""
    row_id = _int(row.get("row_id", row.get("id")), None)
    rating_key = _blank_to_none(row.get("rating_key"))
    if row_id is None or rating_key is None:
        return None
    watched_status = row.get("watched_status")
    return {
        "tautulli_row_id": row_id,
        "server_id": server_id,
        "rating_key": rating_key.strip(),
        "parent_rating_key": _blank_to_none(row.get("parent_rating_key")),
        "grandparent_rating_key": _blank_to_none(row.get("grandparent_rating_key")),
        "user_id": _int(row.get("user_id"), None),
        "user_name": _blank_to_none(row.get("user")),
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


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger inside a flow or task run; a module logger when the flow body is called directly."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def fetch_server(client: TautulliClient) -> TautulliServer:
    """The Plex server Tautulli watches: its machine identifier is watch_history.server_id."""
    return client.server_info()


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE)
def sync_history(
    client: TautulliClient, database_url: str, server_id: str, after: date | None, rating_keys: list[str]
) -> FetchResult:
    """Fetch the plays page by page and upsert each page as it comes (memory stays at one page).

    Safe to retry: the upsert is idempotent. Plays written by a failed attempt count as unchanged
    in the retry's counts.
    """
    logger = _logger()
    engine = get_engine(database_url)
    counts = UpsertCounts()
    touched: set[str] = set()
    fetched = 0
    skipped = 0
    keys = ",".join(rating_keys) if rating_keys else None
    for page in client.history_pages(after=after, rating_key=keys):
        converted = [watch_row(row, server_id) for row in page.rows]
        plays = [play for play in converted if play is not None]
        if len(plays) < len(converted):
            skipped += len(converted) - len(plays)
            logger.warning("Skipped %d rows without a row id or rating key", len(converted) - len(plays))
        with engine.begin() as conn:
            counts += upsert_plays(conn, plays)
        touched.update(play["rating_key"] for play in plays)
        fetched = page.fetched
        logger.info("Fetched and stored %d of %d plays", page.fetched, page.total)
    return FetchResult(fetched - skipped, counts, frozenset(touched))


@task(cache_policy=NO_CACHE)
def refresh_totals(database_url: str, server_id: str, rating_keys: frozenset[str]) -> int:
    """Recompute the play totals of the touched items from all their stored plays."""
    with get_engine(database_url).begin() as conn:
        refreshed = refresh_play_totals(conn, server_id, rating_keys)
    _logger().info("Refreshed the play totals of %d media items", refreshed)
    return refreshed


def _describe(request: TautulliSync) -> str:
    parts = []
    if request.days is not None:
        parts.append(f"last {request.days} days" if request.days else "all history")
    if request.rating_keys:
        shown = ", ".join(request.rating_keys[:5]) + (" …" if len(request.rating_keys) > 5 else "")
        parts.append(f"{len(request.rating_keys)} items ({shown})")
    return " and ".join(parts)


@flow(name="tautulli-sync")
def tautulli_sync(request: TautulliSync = SCHEDULED) -> dict[str, Any]:
    """Sync the plays of the last `days` days (0: all history) and every play of the `rating_keys`."""
    settings = get_settings()
    client = TautulliClient.from_settings(settings)  # ConfigurationError at once when not configured
    logger = _logger()
    began = time.monotonic()
    mode = _describe(request)
    # One query per part: the window, then the items (all history holds the items' plays already).
    queries: list[tuple[date | None, list[str]]] = []
    if request.days is not None:
        after = history_after(datetime.now(UTC), request.days) if request.days else None
        queries.append((after, []))
    if request.days != 0:
        keys = request.rating_keys
        queries += [
            (None, keys[i : i + RATING_KEYS_PER_QUERY]) for i in range(0, len(keys), RATING_KEYS_PER_QUERY)
        ]
    with client:
        server = fetch_server(client)
        logger.info("Syncing %s from Tautulli (Plex server %s)", mode, server.identifier)
        fetched = [
            sync_history(client, settings.sqlalchemy_url, server.identifier, after, keys)
            for after, keys in queries
        ]
        requests = client.requests_made
    touched = frozenset().union(*(f.rating_keys for f in fetched))
    refreshed = refresh_totals(settings.sqlalchemy_url, server.identifier, touched)
    counts = sum((f.counts for f in fetched), UpsertCounts())
    window_start = queries[0][0] if request.days else None
    summary = {
        "mode": mode,
        "after": window_start.isoformat() if window_start else None,
        "server_id": server.identifier,
        "plays_fetched": sum(f.plays for f in fetched),
        "new": counts.new,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "items_refreshed": refreshed,
        "requests": requests,
        "seconds": round(time.monotonic() - began, 2),
    }
    create_table_artifact(
        key="tautulli-sync",
        table=[{key.replace("_", " "): value for key, value in summary.items()}],
        description=f"Tautulli sync ({mode}): plays fetched, written and the media items refreshed.",
    )
    logger.info("Tautulli sync done: %s", summary)
    return summary
