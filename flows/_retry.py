"""The retry policy of every task that talks to a service: exponential backoff with jitter, and
retries only for transient failures (connection errors, timeouts, 429, 5xx), never for 401/403/404."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from smartplex_sync.errors import TransientServiceError


def retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except TransientServiceError:
        return True
    except BaseException:
        return False
    return False


NETWORK_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}
"""Keyword arguments for `@task(**NETWORK_RETRIES)` on tasks that call a service."""
