"""The data path in-process, without Prefect: deliveries through the real gateway app, the dispatcher's
merge of queued requests (`batching.new_batch`, `queue.claim`), and the flow bodies run with `.fn`, their
tasks as plain functions and their artifacts kept in memory. Prefect's own part (runs, retries,
artifacts) is tested with a real server elsewhere (test_end_to_end.py, test_dispatch.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine

import flows._arr as arr
import flows._plex_removals as plex_removals
import flows._runs as runs
import flows.library_sync as library_sync
import flows.overseerr_sync as overseerr_flow
import flows.radarr_sync as radarr_flow
import flows.sonarr_sync as sonarr_flow
import flows.tautulli_sync as tautulli_flow
from flows.library_sync import plex_library_sync
from flows.overseerr_sync import overseerr_sync
from flows.radarr_sync import radarr_sync
from flows.sonarr_sync import sonarr_sync
from flows.tautulli_sync import tautulli_sync
from smartplex_sync.models import Deployment
from smartplex_sync.requests import PARAMETERS
from smartplex_sync.store import queue
from smartplex_sync.store.engine import utcnow
from webhook_gateway.batching import new_batch

FLOWS: dict[Deployment, Callable[..., Any]] = {
    Deployment.PLEX_LIBRARY_SYNC: plex_library_sync.fn,
    Deployment.TAUTULLI_SYNC: tautulli_sync.fn,
    Deployment.SONARR_SYNC: sonarr_sync.fn,
    Deployment.RADARR_SYNC: radarr_sync.fn,
    Deployment.OVERSEERR_SYNC: overseerr_sync.fn,
}
_TASKS = {
    library_sync: (
        "fetch_server_info",
        "fetch_sections",
        "fetch_page",
        "fetch_items",
        "fetch_children",
        "store_page",
        "store_progress",
        "store_deletions",
        "store_server_seen",
    ),
    plex_removals: ("fetch_batch", "store_decision"),
    tautulli_flow: ("fetch_server", "fetch_history_page", "store_plays", "store_totals"),
    arr: ("store_arr_items",),
    sonarr_flow: ("fetch_series",),
    radarr_flow: ("fetch_movies",),
    overseerr_flow: ("fetch_page", "store_requests"),
}


def flows_in_process(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Make the flows' tasks plain functions (no Prefect, no retries) and collect their artifacts."""
    artifacts: list[dict[str, Any]] = []
    for module, names in _TASKS.items():
        for name in names:
            monkeypatch.setattr(module, name, getattr(module, name).fn)
    monkeypatch.setattr(runs, "create_table_artifact", lambda **artifact: artifacts.append(artifact))
    return artifacts


@contextmanager
def claimed(engine: Engine, deployment: Deployment) -> Iterator[queue.Batch | None]:
    """What the dispatcher does for a deployment: every waiting request, merged, in one claimed batch
    whose run is created; the batch is finished afterwards (failed when the body raised)."""
    waiting = [r for r in queue.pending_requests(engine) if r.deployment is deployment]
    if not waiting:
        yield None
        return
    planned = new_batch(deployment, waiting)
    batch = queue.Batch(uuid.uuid4().hex, deployment, "", planned.parameters.to_json(), planned.name,
                        list(planned.tags), utcnow())  # fmt: skip
    assert queue.claim(engine, batch, [r.id for r in waiting])
    run_id = str(uuid.uuid4())
    queue.run_created(engine, batch.id, run_id)
    batch = queue.Batch(**{**batch.__dict__, "flow_run_id": run_id})
    try:
        yield batch
    except Exception as exc:
        queue.finish(engine, batch, "FAILED", str(exc), requeue=False)
        raise
    queue.finish(engine, batch, "COMPLETED", None, requeue=False)


def dispatch(engine: Engine, deployment: Deployment) -> Any:
    """Run the deployment's waiting requests as one merged run; its result (None when nothing waited)."""
    with claimed(engine, deployment) as batch:
        if batch is None:
            return None
        return FLOWS[deployment](PARAMETERS[deployment].model_validate(batch.parameters), "webhook")
