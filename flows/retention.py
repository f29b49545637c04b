"""`webhook-retention`: trims webhook_log of processed deliveries older than the retention window.

Unprocessed rows are never deleted, however old: they are deliveries still waiting for their flow run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine, utcnow
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
    deleted = delete_processed_before(get_engine(settings.sqlalchemy_url), cutoff)
    get_run_logger().info("deleted %d processed webhook_log rows received before %s", deleted, cutoff)
    create_markdown_artifact(
        key="webhook-retention",
        markdown=f"Deleted **{deleted}** processed webhook_log rows received before {cutoff:%Y-%m-%d %H:%M} UTC "
        f"({days} days).",
        description="webhook_log retention",
    )
    return deleted
