"""The benchmarks' baseline, the earlier bucket rule (bench/_buckets.py): its plans, and that a baseline
stack's gateway really plans with it while the product's does not."""

from __future__ import annotations

import os
import subprocess
import sys

from bench._buckets import baseline_env, plan_buckets
from smartplex_sync.requests import PlexScope
from tests.test_batching import LIBRARY, OTHER, SERVER, at, batch_ids, plex, request


def test_the_same_scope_on_two_servers_is_two_bucket_lanes() -> None:
    movies = PlexScope(section_types=["movie"])
    waiting = [
        request(1, 1, parameters=plex(movies, SERVER).to_json()),
        request(2, 2, parameters=plex(movies, OTHER).to_json()),
    ]
    plan = plan_buckets(
        LIBRARY, waiting, at(11), 10, busy_lanes=set(), server_names={SERVER: "A", OTHER: "B"}
    )
    assert sorted(batch_ids(plan)) == [[1], [2]]
    assert sorted(t for b in plan.batches for t in b.tags if t.startswith("server:")) == [
        "server:A",
        "server:B",
    ]


def test_buckets_split_by_parameters_and_bucket_and_ignore_a_run_in_progress() -> None:
    movies = plex(PlexScope(section_types=["movie"])).to_json()
    shows = plex(PlexScope(section_types=["show"])).to_json()
    waiting = [
        request(1, 1, parameters=movies),
        request(2, 3, parameters=movies),
        request(3, 4, parameters=shows),
        request(4, 12, parameters=movies),
    ]
    plan = plan_buckets(LIBRARY, waiting, at(11), 10, busy_lanes=set())
    assert sorted(batch_ids(plan)) == [[1, 2], [3]]
    assert plan.wake_at == at(20)


def _planner_in_a_new_gateway_process(env: dict[str, str]) -> str:
    code = "from webhook_gateway.dispatch import Dispatcher; print(Dispatcher.plan_deployment.__module__)"
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


def test_only_a_baseline_stack_s_gateway_plans_with_buckets() -> None:
    plain = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SMARTPLEX_BENCH_BUCKET_SECONDS")}
    assert _planner_in_a_new_gateway_process(plain) == "webhook_gateway.dispatch"
    assert _planner_in_a_new_gateway_process({**plain, **baseline_env(7)}) == "bench._buckets"
