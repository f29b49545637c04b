"""What each run did, in SmartPlex's words: a `sync_events` row per server and run (SmartPlex's health
route shows the latest), and for Tautulli a `sync_history` row (SmartPlex's Tautulli admin page reads the
latest `tautulli_aggregated_stats` one).

A `sync_events` row is written `running` when the server's part starts and closed `completed` or
`failed` when it ends, so a run that dies leaves a visible `running` row. `trigger_type` is SmartPlex's
vocabulary: webhook, scheduled or manual.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, update

from smartplex_sync.store.tables import sync_events, sync_history

TAUTULLI_SYNC_TYPE = "tautulli_aggregated_stats"
"""The `sync_history.sync_type` SmartPlex's Tautulli admin page looks for."""


@dataclass(frozen=True)
class Counts:
    discovered: int = 0
    new: int = 0
    updated: int = 0
    removed: int = 0
    failed: int = 0


def start_event(
    conn: Connection,
    *,
    sync_type: str,
    user_id: uuid.UUID,
    server_id: uuid.UUID,
    integration_id: uuid.UUID | None,
    trigger: str,
    started_at: datetime,
    metadata: dict[str, Any],
) -> uuid.UUID:
    event_id = uuid.uuid4()
    conn.execute(
        insert(sync_events).values(
            id=event_id,
            sync_type=sync_type,
            user_id=user_id,
            server_id=server_id,
            integration_id=integration_id,
            trigger_type=trigger,
            status="running",
            started_at=started_at,
            sync_metadata=metadata,
        )
    )
    return event_id


def finish_event(
    conn: Connection,
    event_id: uuid.UUID,
    *,
    counts: Counts,
    completed_at: datetime,
    duration_ms: int,
    error: str | None = None,
    details: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": "failed" if error else "completed",
        "items_discovered": counts.discovered,
        "items_new": counts.new,
        "items_updated": counts.updated,
        "items_removed": counts.removed,
        "items_failed": counts.failed,
        "completed_at": completed_at,
        "duration_ms": duration_ms,
        "error_message": error[:2000] if error else None,
        "error_details": details,
    }
    if metadata is not None:
        values["sync_metadata"] = metadata
    conn.execute(update(sync_events).where(sync_events.c.id == event_id).values(values))


def record_tautulli_history(
    conn: Connection,
    *,
    user_id: uuid.UUID,
    server_id: uuid.UUID,
    plays: int,
    new_plays: int,
    items_updated: int,
    started_at: datetime,
    completed_at: datetime,
    error: str | None,
    metadata: dict[str, Any],
) -> None:
    """The row SmartPlex's own Tautulli sync writes: plays read (`items_processed`), new plays
    (`items_added`) and media items whose totals were recomputed (`items_updated`)."""
    conn.execute(
        insert(sync_history).values(
            id=uuid.uuid4(),
            user_id=user_id,
            server_id=server_id,
            sync_type=TAUTULLI_SYNC_TYPE,
            status="failed" if error else "completed",
            items_processed=plays,
            items_added=new_plays,
            items_updated=items_updated,
            items_removed=0,
            started_at=started_at,
            completed_at=completed_at,
            error_message=error[:2000] if error else None,
            metadata=metadata,
        )
    )
