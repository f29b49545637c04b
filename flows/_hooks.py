"""Flow-run state hooks: a failing run shows its error on the webhook_log rows it served, so the status
endpoint and `webhook_log.error_message` tell what happened; a later successful retry clears it."""

from __future__ import annotations

from typing import Any

from smartplex_sync.models import WEBHOOK_TAG
from smartplex_sync.store import get_engine, webhooks


def record_failure(_flow: Any, flow_run: Any, state: Any) -> None:
    if WEBHOOK_TAG in flow_run.tags:
        webhooks.record_run_failure(get_engine(), str(flow_run.id), state.message or state.name or "failed")


def clear_failure(_flow: Any, flow_run: Any, _state: Any) -> None:
    if WEBHOOK_TAG in flow_run.tags:
        webhooks.clear_run_failure(get_engine(), str(flow_run.id))


STATE_HOOKS: dict[str, Any] = {
    "on_failure": [record_failure],
    "on_crashed": [record_failure],
    "on_completion": [clear_failure],
}
"""Keyword arguments for `@flow(**STATE_HOOKS)` on every flow a webhook can start."""
