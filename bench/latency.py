"""One delivery on an idle stack, end to end: a Plex `library.new` → its row readable in `media_items`.

The whole stack as `make run` starts it, the services simulated in a process of their own (see
`bench._stack`). Each delivery waits until the stack is idle again. The time is split where it goes:
- window: receipt → the dispatcher's batch (the coalescing window);
- dispatch: batch → Prefect has the run;
- pick-up: the run exists → a worker takes it (Pending);
- process start: Pending → Running (a new Python process imports Prefect and the flow);
- sync: Running → Completed (the flow itself);
- readable: receipt → the row is in the database (what the user sees).
Baseline in the same run: today's rule (10 s buckets) with Prefect's defaults.

`python -m bench.latency` prints the section; `make bench` writes it into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from sqlalchemy import select

from bench._buckets import baseline_env
from bench._stack import Services, Stack, running_stack, services
from bench.burst import PREFECT_DEFAULTS
from smartplex_sync.store.tables import batch_requests, dispatch_batches, media_items, webhook_requests

DELIVERIES = 12
STACKS = {
    "today: buckets, Prefect defaults": {**baseline_env(bucket_seconds=10), **PREFECT_DEFAULTS},
    "merged, make run's Prefect": {},
}
PARTS = ("window", "dispatch", "pick-up", "process start", "sync", "readable")


def _wait(condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise TimeoutError("not within the benchmark's limit")


async def _states(api_url: str, run_id: str) -> tuple[datetime, dict[StateType, datetime]]:
    async with PrefectClient(api_url) as client:
        run = await client.read_flow_run(run_id)
        states = await client.read_flow_run_states(run_id)
    first: dict[StateType, datetime] = {}
    for state in sorted(states, key=lambda s: s.timestamp):
        first.setdefault(state.type, state.timestamp)
    assert run.created is not None
    return run.created, first


def one(stack: Stack, world: Services) -> dict[str, float]:
    sent = world.ask("single_delivery", stack.gateway)
    key = sent["rating_key"]

    def row_time() -> float | None:
        with stack.engine.connect() as conn:
            found = conn.execute(select(media_items.c.id).where(media_items.c.plex_id == key)).first()
        return time.time() if found else None

    readable_at = _wait(row_time, 600)

    def batch() -> Any:
        with stack.engine.connect() as conn:
            return conn.execute(
                select(dispatch_batches.c.created_at, dispatch_batches.c.flow_run_id)
                .join(batch_requests, batch_requests.c.batch_id == dispatch_batches.c.id)
                .join(webhook_requests, webhook_requests.c.id == batch_requests.c.request_id)
                .where(
                    webhook_requests.c.webhook_id == uuid.UUID(sent["id"]),
                    dispatch_batches.c.finished_at.is_not(None),
                )
            ).first()

    created_at, run_id = _wait(batch, 120)
    run_created, first = asyncio.run(_states(stack.api_url, run_id))
    pending, running, completed = (
        first[t].timestamp() for t in (StateType.PENDING, StateType.RUNNING, StateType.COMPLETED)
    )
    time.sleep(2)  # idle again before the next one
    return {
        "window": created_at.timestamp() - sent["sent_at"],
        "dispatch": run_created.timestamp() - created_at.timestamp(),
        "pick-up": pending - run_created.timestamp(),
        "process start": running - pending,
        "sync": completed - running,
        "readable": readable_at - sent["sent_at"],
    }


def measure(root: Path, extra_env: dict[str, str]) -> list[dict[str, float]]:
    with services() as world, running_stack(root, world.env, extra_env) as stack:
        time.sleep(5)
        one(stack, world)  # warm-up: the first run also pays for cold caches
        return [one(stack, world) for _ in range(DELIVERIES)]


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[int(q * 20) - 1]


def main() -> str:
    with tempfile.TemporaryDirectory(prefix="smartplex-bench-latency-") as tmp:
        results = {
            name: measure(Path(tmp) / f"stack-{n}", env) for n, (name, env) in enumerate(STACKS.items())
        }
    names = list(results)
    lines = [
        "## End to end: one delivery on an idle stack",
        "",
        f"A Plex `library.new` of a new movie, {DELIVERIES} times (after one warm-up), each on an idle stack: "
        "the whole stack as `make run` starts it, services simulated in another process. Seconds, p50 / p95; "
        "the parts are medians and need not add up to the total.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for part in PARTS:
        cells = [
            f"{statistics.median(r[part] for r in results[n]):.1f}"
            + (f" / {_p([r[part] for r in results[n]], 0.95):.1f}" if part == "readable" else "")
            for n in names
        ]
        label = "**receipt → readable** (p50 / p95)" if part == "readable" else part
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    base = statistics.median(r["readable"] for r in results[names[0]])
    new = statistics.median(r["readable"] for r in results[names[-1]])
    lines += [
        "",
        f"- p50 receipt → readable: {new:.1f} s against {base:.1f} s today ({base / new:.2f}×).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
