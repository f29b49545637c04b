"""`smartplex-sync schedules | schedules apply | sync | doctor`, run as the operator runs them, against a
real Prefect server with the deployments of prefect.yaml and a worker."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient
from sqlalchemy import Engine, text

from deployments.processes import VENV_BIN
from smartplex_sync.migrate import migrate
from smartplex_sync.models import Deployment
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine
from smartplex_sync.store.accounts import configure
from smartplex_sync.store.schedules import read_schedules
from tests.conftest import settings_of
from tests.support.factories import owner_and_server
from tests.support.prefect_stack import REPO_ROOT, PrefectStack, clear_sync_schedules


@pytest.fixture
def stack(prefect_worker: PrefectStack) -> Iterator[PrefectStack]:
    asyncio.run(_clear(prefect_worker.api_url))
    yield prefect_worker
    asyncio.run(_clear(prefect_worker.api_url))


@pytest.fixture
def demo_database(stack: PrefectStack, tmp_path: Path) -> str:
    """A database of its own holding the demo's server and services only (the stack's is shared with
    other modules, which add users of their own)."""
    url = f"sqlite:///{tmp_path / 'smartplex.db'}"
    engine = make_engine(url)
    migrate(engine)
    configure(engine, Settings(**{**settings_of(stack.env), "database_url": url}))
    engine.dispose()
    return url


async def _clear(api_url: str) -> None:
    async with PrefectClient(api_url) as client:
        await clear_sync_schedules(client)


def cli(stack: PrefectStack, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "SMARTPLEX_DATABASE_URL": database_url}
    for name in ("PLEX", "TAUTULLI", "SONARR", "RADARR", "OVERSEERR"):
        env.pop(f"SMARTPLEX_{name}_URL", None)
    return subprocess.run(
        [str(VENV_BIN / "smartplex-sync"), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def prefect_schedule(api_url: str, deployment: Deployment, slug: str) -> tuple[bool, float] | None:
    """(active, interval seconds) of the deployment's schedule `slug`; None when there is none."""

    async def read() -> Any:
        async with PrefectClient(api_url) as client:
            found = await client.read_deployment_by_name(deployment.full_name)
            return next((s for s in found.schedules if s.slug == slug), None)

    schedule = asyncio.run(read())
    return None if schedule is None else (schedule.active, schedule.schedule.interval.total_seconds())


def test_schedules_then_apply(stack: PrefectStack, engine: Engine, database_url: str) -> None:
    owner_and_server(engine)
    applied = cli(stack, database_url, "schedules", "apply")  # the first pass: default rows, then schedules
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "5 default sync_schedule rows added" in applied.stdout
    shown = cli(stack, database_url, "schedules")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 1 + 5  # the header, one row per service of the one user
    plex = next(line for line in lines if line.startswith("plex "))
    assert re.search(r"plex-library-sync\s+12h on\s+12h active", plex), plex

    with engine.begin() as conn:  # the guide's SQL
        conn.execute(text("UPDATE sync_schedule SET interval_hours = 4 WHERE service = 'tautulli'"))
    applied = cli(stack, database_url, "schedules", "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "prefect ← table: interval_hours = 4" in applied.stdout
    [tautulli] = [row for row in read_schedules(engine) if row.service == "tautulli"]
    assert prefect_schedule(stack.api_url, Deployment.TAUTULLI_SYNC, tautulli.slug) == (True, 4 * 3600)


def test_sync_starts_a_run_without_touching_the_schedule(stack: PrefectStack, demo_database: str) -> None:
    started = cli(stack, demo_database, "sync", "tautulli", "--full")
    assert started.returncode == 0, started.stderr
    run_id = UUID(re.search(r"flow run ([0-9a-f-]{36})", started.stdout).group(1))  # type: ignore[union-attr]
    assert f"/runs/flow-run/{run_id}" in started.stdout

    async def read() -> tuple[str, dict[str, Any], list[str]]:
        async with PrefectClient(stack.api_url) as client:
            run = await client.read_flow_run(run_id)
            deployment = await client.read_deployment(run.deployment_id)  # type: ignore[arg-type]
            return deployment.name, run.parameters, run.tags

    name, parameters, tags = asyncio.run(read())
    assert name == "tautulli-sync"
    [(server, scope)] = parameters["request"]["servers"].items()
    assert (scope, parameters["trigger"]) == ({"days": 0, "rating_keys": []}, "manual")
    assert UUID(server) and "manual" in tags
    assert prefect_schedule(stack.api_url, Deployment.TAUTULLI_SYNC, "anything") is None  # none made


def test_doctor_passes_on_a_healthy_stack(stack: PrefectStack, demo_database: str) -> None:
    result = cli(stack, demo_database, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("✓ database reachable and migrated")
    assert lines[1].startswith("✓ Prefect reachable")
    assert sum(line.startswith("✓ deployment ") for line in lines) == len(Deployment)
    assert any(re.match(r"✓ \d+ worker\(s\) polling pool smartplex", line) for line in lines)
