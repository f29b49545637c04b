"""The one-off steps of `make run`, each in a short-lived process, so that the supervisor that stays up
(`deployments/stack.py`) never imports the settings, SQLAlchemy or Prefect.

- `python -m deployments.bootstrap database`: apply the migrations and write the SmartPlex rows the
  settings describe, then print as JSON what the supervisor needs to know from the settings (data dir,
  database URL, ports, demo mode);
- `python -m deployments.bootstrap prefect [--own-server]` (PREFECT_API_URL set): create the work pool,
  `prefect deploy --all`, make the schedules of sync_schedule's rows, create or update the automations
  that mark runs Crashed whose process vanished, and, on a server of our own, retry the runs the last
  stop cut off; the image's `deploy` verb runs the same step;
- `python -m deployments.bootstrap recover [--own-server] [--flow-run ID]…`: the same retry after the
  worker died, before a new one starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from deployments.processes import VENV_BIN
from smartplex_sync.migrate import migrate
from smartplex_sync.models import PROJECT_TAG, WEBHOOK_TAG, WORK_POOL
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import get_engine
from smartplex_sync.store.accounts import configure

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

log = logging.getLogger("smartplex.run")


def plan(settings: Settings) -> dict[str, Any]:
    """What the supervisor needs from the settings, resolved once (paths absolute)."""
    return {
        "data_dir": str(settings.data_dir.resolve()),
        "database_url": settings.sqlalchemy_url,
        "prefect_api_url": settings.prefect_api_url,
        "prefect_port": settings.prefect_port,
        "gateway_url": f"http://{settings.gateway_host}:{settings.gateway_port}",
        "demo": settings.plex_url is None,
        "work_pool": WORK_POOL,
    }


def prepare_database(settings: Settings) -> None:
    engine = get_engine(settings.sqlalchemy_url)
    applied = migrate(engine)
    log.info("database %s: %s", settings.sqlalchemy_url, f"applied {applied}" if applied else "up to date")
    if configured := configure(engine, settings):
        log.info("settings: user %s, Plex server %s", settings.owner_email, configured.server_id or "none")


def _prefect_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "prefect"), *args], capture_output=True, text=True, check=check)


def prepare_prefect(settings: Settings, own_server: bool) -> None:
    """Work pool, deployments, schedules, and (own server only) the runs a stop cut off."""
    if _prefect_cli("work-pool", "inspect", WORK_POOL, check=False).returncode != 0:
        _prefect_cli("work-pool", "create", WORK_POOL, "--type", "process")
    deployed = _prefect_cli("--no-prompt", "deploy", "--all", check=False)
    if deployed.returncode != 0:
        raise RuntimeError(f"prefect deploy --all failed:\n{deployed.stdout}\n{deployed.stderr}")
    asyncio.run(_mirror_schedules(settings))
    asyncio.run(ensure_lost_run_automations(settings.prefect_api))
    if own_server:  # no other worker can be running its runs
        asyncio.run(_retry_interrupted_runs(settings.prefect_api)).log("by the last stop")


async def _mirror_schedules(settings: Settings) -> None:
    """Each sync_schedule row's schedule, made now rather than at the gateway's first mirror pass."""
    from prefect.client.orchestration import PrefectClient

    from smartplex_sync.schedule_mirror import mirror_once

    async with PrefectClient(settings.prefect_api) as client:
        report = await mirror_once(get_engine(settings.sqlalchemy_url), client)
    for line in report.lines():
        log.info("schedule %s", line)


SILENT_RUN_AUTOMATION = "smartplex: crash runs that stopped reporting"
STUCK_RUN_AUTOMATION = "smartplex: crash runs that never started"
# Four heartbeats: prefect.yaml sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30.
SILENT_AFTER = timedelta(minutes=2)
STUCK_AFTER = timedelta(minutes=5)  # Pending is a process starting: seconds, a minute on a loaded machine
_FINAL_EVENTS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}


async def ensure_lost_run_automations(
    api_url: str, silent_after: timedelta = SILENT_AFTER, stuck_after: timedelta = STUCK_AFTER
) -> list[UUID]:
    """Prefect's documented cure for zombie runs, limited to ours (tag `smartplex`), for the two ways a run
    loses its process unseen (its machine or its worker died, no supervisor left to say so):
    - Running, then silent: no heartbeat and no final state `silent_after` after its last heartbeat;
    - Pending for good: no Running (or final state) `stuck_after` after it became Pending (its process was
      being started), which heartbeats cannot tell, as they begin once the run is Running.
    Either is marked Crashed: that frees its concurrency slot, and the gateway's dispatcher queues the
    crashed run's deliveries for a new run. Created once, updated in place when they exist."""
    from prefect.client.orchestration import PrefectClient

    heartbeat, pending, running = (f"prefect.flow-run.{e}" for e in ("heartbeat", "Pending", "Running"))
    wanted = [
        _crash_when(SILENT_RUN_AUTOMATION, heartbeat, {heartbeat}, silent_after, "no heartbeat"),
        _crash_when(STUCK_RUN_AUTOMATION, pending, {running}, stuck_after, "still pending"),
    ]
    ids = []
    async with PrefectClient(api_url) as client:
        for automation in wanted:
            existing = await client.read_automations_by_name(automation.name)
            if existing:
                await client.update_automation(existing[0].id, automation)
                ids.append(existing[0].id)
            else:
                ids.append(await client.create_automation(automation))
    return ids


def _crash_when(name: str, after: str, expect: set[str], within: timedelta, why: str) -> AutomationCore:
    """An automation that marks one of our runs Crashed when `after` is not followed by one of `expect`
    (or a final state) `within` that time."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=name,
        description=f"Marks a SmartPlex flow run Crashed when {why}.",
        trigger=EventTrigger(
            after={after},
            expect=expect | _FINAL_EVENTS,
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{PROJECT_TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"{why} for {within.total_seconds():.0f} s: its process is gone",
            )
        ],
    )


@dataclass
class CutOffRuns:
    """What `_retry_interrupted_runs` did: runs set to run again, and webhook runs only marked crashed."""

    retried: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)

    def log(self, cause: str) -> None:
        for name in self.retried:
            log.warning("run %s was cut off %s; it will run again", name, cause)
        for name in self.crashed:
            log.warning("run %s was cut off %s; the gateway queues its deliveries again", name, cause)


async def _retry_interrupted_runs(
    api_url: str, sweep: bool = True, cut_off: Sequence[UUID] = ()
) -> CutOffRuns:
    """Runs left pending or running by a worker that died (or by a stop) hold their deployment's
    concurrency slot and would never finish. Mark them crashed, which frees the slot. A run the gateway's
    dispatcher created (tagged `trigger:webhook`) stays crashed: the dispatcher sees that and queues its
    deliveries' requests for a new run. Any other run (scheduled, manual) is set awaiting retry, so a
    worker runs it again; syncs are idempotent. Runs someone was cancelling are marked cancelled.

    `sweep`: every pending, running or cancelling run, which is right only when no other worker can be
    running them (a Prefect server of our own, our worker dead). `cut_off`: runs whose process the stack
    killed, also retried if they managed to report Crashed first."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import AwaitingRetry, Cancelled, Crashed

    interrupted = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING])
        )
    )
    done = CutOffRuns()
    async with PrefectClient(api_url) as client:
        runs = (
            {run.id: run for run in await client.read_flow_runs(flow_run_filter=interrupted)} if sweep else {}
        )
        for run_id in cut_off:
            runs.setdefault(run_id, await client.read_flow_run(run_id))
        for run in runs.values():
            if run.state_type is StateType.CANCELLING:
                await client.set_flow_run_state(
                    run.id, Cancelled(message="cancelled while the stack stopped")
                )
                continue
            if run.state_type not in (StateType.PENDING, StateType.RUNNING, StateType.CRASHED):
                continue  # it finished meanwhile
            if run.state_type is not StateType.CRASHED:
                await client.set_flow_run_state(run.id, Crashed(message="its worker process was stopped"))
            if WEBHOOK_TAG in run.tags:
                done.crashed.append(run.name)
                continue
            await client.set_flow_run_state(run.id, AwaitingRetry(message="run again by a new worker"))
            done.retried.append(run.name)
    return done


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m deployments.bootstrap")
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("database", help="apply migrations; print the resolved settings as JSON")
    prefect = steps.add_parser("prefect", help="work pool, deployments, schedules (PREFECT_API_URL set)")
    prefect.add_argument("--own-server", action="store_true", help="the stack started this Prefect server")
    recover = steps.add_parser("recover", help="retry the runs a dead worker left (PREFECT_API_URL set)")
    recover.add_argument("--own-server", action="store_true", help="also every pending or running run")
    recover.add_argument(
        "--flow-run", type=UUID, action="append", default=[], help="a run whose process died"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.step == "database":
        prepare_database(settings)
        print(json.dumps(plan(settings)))
    elif args.step == "prefect":
        prepare_prefect(settings, args.own_server)
    else:
        cut_off = _retry_interrupted_runs(settings.prefect_api, args.own_server, args.flow_run)
        asyncio.run(cut_off).log("when its worker died")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
