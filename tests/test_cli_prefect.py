"""`smartplex-sync schedules | schedules apply | sync | doctor`, run as the operator runs them, against a
real Prefect server with the deployments of prefect.yaml and a worker."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient
from sqlalchemy import Engine, text

from deployments.processes import VENV_BIN
from smartplex_sync.models import Deployment
from smartplex_sync.schedule_mirror import PREFECT_YAML, load_defaults, read_prefect_side
from tests.support import prefect_stack
from tests.support.prefect_stack import REPO_ROOT, PrefectStack, restore_default_schedules


@pytest.fixture
def stack(prefect_worker: PrefectStack) -> Iterator[PrefectStack]:
    yield prefect_worker
    asyncio.run(_restore(prefect_worker.api_url))


async def _restore(api_url: str) -> None:
    async with PrefectClient(api_url) as client:
        await restore_default_schedules(client)


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


def tautulli_interval(api_url: str) -> float | None:
    async def read() -> float | None:
        async with PrefectClient(api_url) as client:
            slug = load_defaults(PREFECT_YAML.read_text())["tautulli-sync"].slug
            return (await read_prefect_side(client, Deployment.TAUTULLI_SYNC, slug)).interval_seconds

    return asyncio.run(read())


def test_schedules_then_apply(stack: PrefectStack, engine: Engine, database_url: str) -> None:
    shown = cli(stack, database_url, "schedules")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 1 + len(Deployment)
    plex = next(line for line in lines if line.startswith("plex "))
    assert re.search(r"plex-library-sync\s+12h on\s+12h active", plex), plex

    with engine.begin() as conn:
        conn.execute(text("UPDATE sync_schedule SET interval_hours = 4 WHERE service = 'tautulli'"))
    applied = cli(stack, database_url, "schedules", "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "tautulli (tautulli-sync): prefect ← table: interval_hours = 4" in applied.stdout
    assert tautulli_interval(stack.api_url) == 4 * 3600


def test_sync_starts_a_run_without_touching_the_schedule(stack: PrefectStack, database_url: str) -> None:
    started = cli(stack, database_url, "sync", "tautulli", "--full")
    assert started.returncode == 0, started.stderr
    run_id = UUID(re.search(r"flow run ([0-9a-f-]{36})", started.stdout).group(1))  # type: ignore[union-attr]
    assert f"/runs/flow-run/{run_id}" in started.stdout

    async def read() -> tuple[str, dict]:
        async with PrefectClient(stack.api_url) as client:
            run = await client.read_flow_run(run_id)
            deployment = await client.read_deployment(run.deployment_id)  # type: ignore[arg-type]
            return deployment.name, run.parameters

    assert asyncio.run(read()) == ("tautulli-sync", {"request": {"days": 0, "rating_keys": []}})
    assert tautulli_interval(stack.api_url) == 6 * 3600


def test_doctor_passes_on_a_healthy_stack(stack: PrefectStack, database_url: str) -> None:
    result = cli(stack, database_url, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("✓ database reachable and migrated")
    assert lines[1].startswith("✓ Prefect reachable")
    assert sum(line.startswith("✓ deployment ") for line in lines) == len(Deployment)
    assert any(re.match(r"✓ \d+ worker\(s\) polling pool smartplex", line) for line in lines)
    assert "· webhooks from plex: none received yet" in lines


def test_apply_restore_puts_the_table_back_after_a_deploy(
    stack: PrefectStack, engine: Engine, database_url: str
) -> None:
    """What deploy/entrypoint.sh `deploy` does on an upgrade: `prefect deploy` resets every schedule to
    prefect.yaml's, then `schedules apply --restore` puts back what the table holds."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE sync_schedule SET interval_hours = 3 WHERE service = 'tautulli'"))
    assert cli(stack, database_url, "schedules", "apply").returncode == 0
    prefect_stack.deploy(stack.env, ["tautulli-sync"])
    assert tautulli_interval(stack.api_url) == 6 * 3600
    restored = cli(stack, database_url, "schedules", "apply", "--restore")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert tautulli_interval(stack.api_url) == 3 * 3600
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT interval_hours FROM sync_schedule WHERE service = 'tautulli'")).scalar()
            == 3
        )
