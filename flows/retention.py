"""`webhook-retention`: trims webhook_log of processed deliveries older than the retention window, with
their queued requests, and the finished dispatch batches no remaining request points at.

Unprocessed rows are never deleted, however old: they are deliveries still waiting for their flow run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows._runs import run_logger
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine, utcnow
from smartplex_sync.store.queue import delete_finished_before
from smartplex_sync.store.webhooks import delete_processed_before


def retention_cutoff(now: datetime, days: int) -> datetime:
    if days < 1:
        raise ValueError(f"retention of {days} days would delete today's deliveries")
    return now - timedelta(days=days)


@flow(name="webhook-retention", log_prints=False)
def webhook_retention(days: int | None = None) -> int:
    """Delete processed webhook_log rows older than `days` (default SMARTPLEX_WEBHOOK_RETENTION_DAYS)."""
    settings = get_settings()
    days = days if days is not None else settings.webhook_retention_days
    cutoff = retention_cutoff(utcnow(), days)
    engine = get_engine(settings.sqlalchemy_url)
    deleted = delete_processed_before(engine, cutoff)
    batches = delete_finished_before(engine, cutoff)
    run_logger().info(
        "deleted %d processed webhook_log rows and %d finished batches older than %s",
        deleted,
        batches,
        cutoff,
    )
    create_markdown_artifact(
        key="webhook-retention",
        markdown=f"Deleted **{deleted}** processed webhook_log rows received before {cutoff:%Y-%m-%d %H:%M} UTC "
        f"({days} days), and **{batches}** finished dispatch batches.",
        description="webhook_log retention",
    )
    return deleted
