"""A mixed burst, end to end: 150 deliveries of all five services in about 20 s, against the whole stack as
`make run` starts it (Prefect server, deployments, worker, gateway), with the services simulated in a
process of their own. Reports the runs created per deployment, the requests made to each service, and the
seconds from the last delivery until all their data is readable in the database.

Three stacks, one after another, in the same run:
- today's rule, the baseline: one run per parameter set per fixed 10 s bucket, with Prefect's defaults
  (workers poll every 10 s; a run that finds its deployment busy asks again 30 s later);
- merged per deployment, with Prefect's defaults (what holds on Prefect Cloud, whose server settings are
  not ours);
- merged per deployment, with the Prefect settings `make run` uses.

`python -m bench.burst` prints the section; `make bench` writes it into docs/benchmarks.md.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench._stack import Services, Stack, running_stack, services
from smartplex_sync.store.tables import (
    arr_items,
    dispatch_batches,
    media_items,
    overseerr_requests,
    watch_history,
    webhook_requests,
)

SECONDS = 20.0
SCAN_GRACE = 30
DRAIN_LIMIT = 900.0  # the baseline may not finish; say so rather than wait for ever
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "30",
    "PREFECT_WORKER_QUERY_SECONDS": "10",
    "PREFECT_WORKER_PREFETCH_SECONDS": "10",
}
STACKS = {
    "today: buckets, Prefect defaults": {
        "SMARTPLEX_COALESCE_STRATEGY": "bucket",
        "SMARTPLEX_COALESCE_SECONDS": "10",
        **PREFECT_DEFAULTS,
    },
    "merged, Prefect defaults": {"SMARTPLEX_COALESCE_STRATEGY": "merge", **PREFECT_DEFAULTS},
    "merged, make run's Prefect": {"SMARTPLEX_COALESCE_STRATEGY": "merge"},
}
SERVICES = ("plex", "tautulli", "sonarr", "radarr", "overseerr")


def readable(stack: Stack, expected: dict[str, Any]) -> bool:
    """Every item, id, play and request the burst told about is in the database."""
    with stack.engine.connect() as conn:
        keys = set(conn.execute(select(media_items.c.rating_key)).scalars())
        arr = set(conn.execute(select(arr_items.c.service, arr_items.c.arr_id)).all())
        plays = set(conn.execute(select(watch_history.c.tautulli_row_id)).scalars())
        statuses = dict(
            conn.execute(select(overseerr_requests.c.request_id, overseerr_requests.c.status)).all()
        )
    return (
        set(expected["rating_keys"]) <= keys
        and {("sonarr", i) for i in expected["sonarr_ids"]} <= arr
        and {("radarr", i) for i in expected["radarr_ids"]} <= arr
        and set(expected["play_ids"]) <= plays
        and all(statuses.get(i) == "AVAILABLE" for i in expected["request_ids"])
    )


def settled(stack: Stack) -> bool:
    """Nothing waits: every request is in a batch, and every batch's run has finished."""
    with stack.engine.connect() as conn:
        waiting = conn.execute(
            select(func.count()).select_from(webhook_requests).where(webhook_requests.c.batch_id.is_(None))
        ).scalar_one()
        open_ = conn.execute(
            select(func.count()).select_from(dispatch_batches).where(dispatch_batches.c.finished_at.is_(None))
        ).scalar_one()
    return waiting == 0 and open_ == 0


def runs_per_deployment(stack: Stack) -> Counter[str]:
    with stack.engine.connect() as conn:
        return Counter(
            dict(
                conn.execute(
                    select(dispatch_batches.c.deployment, func.count()).group_by(
                        dispatch_batches.c.deployment
                    )
                ).all()
            )
        )


def _until(condition: Any, since: float) -> float | None:
    while time.time() - since < DRAIN_LIMIT:
        if condition():
            return time.time() - since
        time.sleep(0.5)
    return None


def measure(root: Path, world: Services, extra_env: dict[str, str]) -> dict[str, Any]:
    env = {**extra_env, "SMARTPLEX_PLEX_SCAN_GRACE_SECONDS": str(SCAN_GRACE)}
    with running_stack(root, world.env, env) as stack:
        time.sleep(5)  # let start-up work (schedules, the mirror) settle
        world.ask("reset")
        sent = world.ask("mixed_burst", stack.gateway, SECONDS)
        assert sent["accepted"] == sent["deliveries"], sent["statuses"]
        last = sent["last_sent"]
        data = _until(lambda: readable(stack, sent), last)
        done = _until(lambda: settled(stack), last)
        return {
            "sent": sent,
            "readable": data,
            "settled": done,
            "runs": runs_per_deployment(stack),
            "requests": world.ask("requests"),
        }


def _seconds(value: float | None) -> str:
    return f"{value:.0f} s" if value is not None else f"> {DRAIN_LIMIT:.0f} s"


def main() -> str:
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="smartplex-bench-burst-") as tmp:
        for n, (name, env) in enumerate(STACKS.items()):
            with services() as world:  # a fresh world per stack: the same burst against the same library
                results[name] = measure(Path(tmp) / f"stack-{n}", world, env)
    names = list(results)
    baseline, best = results[names[0]], results[names[-1]]
    sent = best["sent"]
    deployments = sorted({d for r in results.values() for d in r["runs"]})
    lines = [
        "## End to end: a mixed burst",
        "",
        f"{sent['deliveries']} deliveries in {sent['last_sent'] - sent['first_sent']:.0f} s "
        f"({', '.join(f'{n} {s}' for s, n in sent['by_source'].items())}): 40 Plex `library.new` of new movies "
        "(half with their section, half by rating key only), Sonarr downloads of 10 episodes each of 4 series, "
        "Radarr downloads of 20 movies, Tautulli stops of 15 items (two each), Overseerr approvals then "
        "availability of 10 requests. The whole stack as `make run` starts it (Prefect server, worker, gateway "
        f"as processes), services simulated in another process, Plex scan grace {SCAN_GRACE} s. "
        "*Readable*: every new item, Sonarr/Radarr id, play and request status is in the database. "
        "*Settled*: every run that serves the burst has finished (the scan-grace follow-up included).",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for deployment in deployments:
        lines.append(
            f"| runs: {deployment} | "
            + " | ".join(str(results[n]["runs"].get(deployment, 0)) for n in names)
            + " |"
        )
    lines.append("| runs in all | " + " | ".join(str(sum(results[n]["runs"].values())) for n in names) + " |")
    for service in SERVICES:
        lines.append(
            f"| requests to {service} | "
            + " | ".join(str(results[n]["requests"].get(service, 0)) for n in names)
            + " |"
        )
    lines += [
        "| last delivery → all data readable | "
        + " | ".join(_seconds(results[n]["readable"]) for n in names)
        + " |",
        "| last delivery → every run finished | "
        + " | ".join(_seconds(results[n]["settled"]) for n in names)
        + " |",
        "",
    ]
    if baseline["readable"] and best["readable"]:
        lines.append(
            f"- Drained **{baseline['readable'] / best['readable']:.1f}× faster** than the baseline "
            f"(all data readable {best['readable']:.0f} s after the last delivery, against {baseline['readable']:.0f} s)."
        )
    elif best["readable"]:
        lines.append(
            f"- The baseline had not drained after {DRAIN_LIMIT:.0f} s; merged: {best['readable']:.0f} s."
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
