"""`smartplex-sync run` (what `make run` calls): the whole stack on one machine, supervised.

1. apply migrations to the configured database (SQLite under SMARTPLEX_DATA_DIR by default);
2. start a Prefect server (its own SQLite under the data dir) unless PREFECT_API_URL names one;
3. create the `smartplex` process work pool and register every deployment of prefect.yaml, then put back
   the schedules that sync_schedule recorded (a deploy resets them to the file's defaults);
4. without SMARTPLEX_PLEX_URL: start the simulated Plex and Tautulli (demo mode, clearly labelled);
5. start a Prefect worker and the webhook gateway.
Ctrl-C or SIGTERM stops every process it started (SIGKILL after a grace period); if one dies, all stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from prefect.client.orchestration import PrefectClient

from deployments.processes import (
    VENV_BIN,
    WORKER_TUNING,
    prefect_env,
    spawn,
    start_prefect_server,
    stop,
    tuned,
    wait_until_healthy,
)
from smartplex_sync.migrate import migrate
from smartplex_sync.models import WORK_POOL
from smartplex_sync.schedule_mirror import mirror_once
from smartplex_sync.settings import Settings
from smartplex_sync.store import get_engine

REPO_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("smartplex.run")


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def child_env(self, api_url: str) -> dict[str, str]:
        env = prefect_env(api_url)
        env["PWD"] = str(REPO_ROOT)  # prefect.yaml's pull step runs flows from here
        env["SMARTPLEX_DATA_DIR"] = str(self.data_dir)
        env["SMARTPLEX_DATABASE_URL"] = self.settings.sqlalchemy_url
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = spawn(args, env, self.logs / f"{name}.log", cwd=REPO_ROOT)
        self.processes.append((name, process))
        log.info("started %s (pid %s, log %s)", name, process.pid, self.logs / f"{name}.log")
        return process

    def prefect(
        self, env: dict[str, str], *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "prefect"), *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=check,
        )

    def up(self) -> None:
        applied = migrate(get_engine(self.settings.sqlalchemy_url))
        log.info(
            "database %s: %s", self.settings.sqlalchemy_url, f"applied {applied}" if applied else "up to date"
        )

        api_url = self.settings.prefect_api_url
        if api_url:
            log.info("using the Prefect server at %s", api_url)
        else:
            log.info("starting a Prefect server on port %s (about 15 s)", self.settings.prefect_port)
            server, api_url = start_prefect_server(
                self.data_dir / "prefect", self.settings.prefect_port, self.logs / "prefect-server.log"
            )
            self.processes.append(("prefect-server", server))
        env = self.child_env(api_url)

        pool = WORK_POOL
        if self.prefect(env, "work-pool", "inspect", pool, check=False).returncode != 0:
            self.prefect(env, "work-pool", "create", pool, "--type", "process")
        deployed = self.prefect(env, "--no-prompt", "deploy", "--all", check=False)
        if deployed.returncode != 0:
            raise RuntimeError(f"prefect deploy --all failed:\n{deployed.stdout}\n{deployed.stderr}")
        self.restore_schedules(api_url)
        if not self.settings.prefect_api_url:  # our own server: no other worker can be running its runs
            for name in asyncio.run(_retry_interrupted_runs(api_url)):
                log.warning("run %s was cut off by the last stop; it will run again", name)

        if self.settings.plex_url is None:
            demo = self.start("demo-services", [sys.executable, "-m", "simulators.demo"], env)
            demo_env = self.wait_for_demo(demo)
            env.update(demo_env)
            log.warning("DEMO MODE: no SMARTPLEX_PLEX_URL set; syncing against simulated Plex and Tautulli")

        worker_env = tuned(env, WORKER_TUNING)
        self.start("worker", [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool], worker_env)
        host, port = self.settings.gateway_host, str(self.settings.gateway_port)
        gateway = self.start(
            "gateway",
            [sys.executable, "-m", "webhook_gateway"],
            env,
        )
        wait_until_healthy(f"http://{host}:{port}/healthz", timeout=60, process=gateway)
        ui = api_url.removesuffix("/api")
        log.info("ready: webhooks at http://%s:%s/api/webhooks/<service>, Prefect UI at %s", host, port, ui)

    def restore_schedules(self, api_url: str) -> None:
        """Deploying resets schedules to prefect.yaml's; put back what sync_schedule recorded."""
        engine = get_engine(self.settings.sqlalchemy_url)

        async def apply() -> None:
            async with PrefectClient(api_url) as client:
                report = await mirror_once(engine, client, restore=True)
            for line in report.lines():
                log.info("schedule %s", line)

        asyncio.run(apply())

    def wait_for_demo(self, demo: subprocess.Popen[bytes]) -> dict[str, str]:
        """The demo services write the settings that point at them to data/demo.env once they listen."""
        env_file = self.data_dir / "demo.env"
        env_file.unlink(missing_ok=True)
        deadline = time.monotonic() + 60
        while not env_file.exists():
            if demo.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"demo services did not start; see {self.logs / 'demo-services.log'}")
            time.sleep(0.2)
        pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        return {key: value for key, value in pairs}

    def watch(self) -> int:
        """Block until a signal or until a child dies; 0 for a requested stop."""
        while True:
            for name, process in self.processes:
                if process.poll() is not None:
                    log.error(
                        "%s exited with %s; stopping the stack (see %s)", name, process.returncode, self.logs
                    )
                    return 1
            time.sleep(0.5)

    def down(self) -> None:
        for name, process in reversed(self.processes):
            log.info("stopping %s", name)
            stop(process)
        (self.data_dir / "demo.env").unlink(missing_ok=True)


async def _retry_interrupted_runs(api_url: str) -> list[str]:
    """Runs left pending or running by a stop (the worker died mid-run or mid-submission) hold their
    deployment's concurrency slot and would never finish. Mark them crashed (which frees the slot) and
    then awaiting retry, so the new worker runs them again; syncs are idempotent. Runs someone was
    cancelling are marked cancelled. Returns the names of the runs retried."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import AwaitingRetry, Cancelled, Crashed

    interrupted = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING])
        )
    )
    retried = []
    async with PrefectClient(api_url) as client:
        for run in await client.read_flow_runs(flow_run_filter=interrupted):
            if run.state_type is StateType.CANCELLING:
                await client.set_flow_run_state(
                    run.id, Cancelled(message="cancelled while the stack stopped")
                )
                continue
            await client.set_flow_run_state(run.id, Crashed(message="interrupted when the stack stopped"))
            await client.set_flow_run_state(run.id, AwaitingRetry(message="run again after a restart"))
            retried.append(run.name)
    return retried


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def run_stack(settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stack = Stack(settings)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        stack.up()
        return stack.watch()
    except _Stop as stop_signal:
        log.info("%s received", stop_signal)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.down()
