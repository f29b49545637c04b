"""The deployments of `prefect.yaml` on a test Prefect server, and a worker that runs them.

Used through the session fixtures `prefect_deployments` and `prefect_worker` of tests/conftest.py. Flow
runs execute from this checkout (the pull step's `{{ $PWD }}`), with the environment the worker started
with: `stack_env` sets PREFECT_API_URL, PWD and the SMARTPLEX_* variables the flows read.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from prefect.client.orchestration import PrefectClient

from deployments.processes import VENV_BIN, prefect_env, spawn
from smartplex_sync.models import SERVICE_OF, WORK_POOL

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PrefectStack:
    """What the fixtures hand out: the server, the environment flow runs get, and their database."""

    api_url: str
    env: dict[str, str]
    database_url: str


def stack_env(api_url: str, smartplex: Mapping[str, str]) -> dict[str, str]:
    """Environment for `prefect deploy` and the worker: the test server, the repo root, our settings."""
    env = prefect_env(api_url)
    env.update(
        PWD=str(REPO_ROOT),
        PREFECT_WORKER_QUERY_SECONDS="2",  # pick runs up within ~2 s instead of ~10 s
        PREFECT_LOGGING_LEVEL="WARNING",
        **smartplex,
    )
    return env


def _prefect(args: Sequence[str], env: Mapping[str, str], timeout: float = 180) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "prefect"), "--no-prompt", *args],
        env=dict(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def create_work_pool(env: Mapping[str, str]) -> None:
    _prefect(["work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"], env)


def deploy(env: Mapping[str, str], names: Sequence[str] = ()) -> None:
    """`prefect deploy --all` from the repo root (or only `names`): schedules reset to prefect.yaml's."""
    selection = [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    _prefect(["deploy", *selection], env)


def wait_for_worker(api_url: str, worker: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Until a worker of the pool has sent a heartbeat."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"prefect worker exited with {worker.returncode}")
        answer = httpx.post(f"{api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=5)
        if answer.is_success and answer.json():
            return
        time.sleep(0.5)
    raise TimeoutError(f"no worker polled pool {WORK_POOL} within {timeout:.0f}s")


def start_worker(stack: PrefectStack, log_path: Path) -> subprocess.Popen[bytes]:
    """`prefect worker start --pool smartplex` in its own process group; stop it with processes.stop."""
    worker = spawn(
        [str(VENV_BIN / "prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process"],
        stack.env,
        log_path,
        cwd=REPO_ROOT,
    )
    wait_for_worker(stack.api_url, worker)
    return worker


async def clear_sync_schedules(client: PrefectClient) -> None:
    """No schedule on any sync deployment, as `prefect deploy --all` leaves them before the mirror runs."""
    for deployment in SERVICE_OF:
        found = await client.read_deployment_by_name(deployment.full_name)
        for schedule in found.schedules:
            await client.delete_deployment_schedule(found.id, schedule.id)
