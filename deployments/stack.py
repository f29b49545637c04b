"""`smartplex-sync run` (what `make run` calls): the whole stack on one machine, supervised.

1. apply migrations to the configured database (SQLite under SMARTPLEX_DATA_DIR by default);
2. start a Prefect server (its own SQLite under the data dir) unless PREFECT_API_URL names one;
3. create the `smartplex` process work pool and register every deployment of prefect.yaml, then put back
   the schedules that sync_schedule recorded (a deploy resets them to the file's defaults);
4. without SMARTPLEX_PLEX_URL: start the simulated services on a fixed loopback port (demo mode);
5. start a Prefect worker and the webhook gateway;
6. watch them: a child that dies is started again after 1, 2, 4 … 60 s (back to 1 s once it has stayed up
   for a minute), logged, and counted in `<data dir>/stack.json`, which `smartplex-sync doctor` reads.

Ctrl-C or SIGTERM stops every process it started, and the orphans they left (SIGKILL after a grace period).

This process lives as long as the stack, so it imports nothing but the standard library and
`deployments.processes`: steps 1 and 3 run in short-lived `python -m deployments.bootstrap` processes,
which import the settings, SQLAlchemy and Prefect and then exit.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from deployments.processes import (
    VENV_BIN,
    WORKER_TUNING,
    Child,
    StateFile,
    become_subreaper,
    descendants,
    environment,
    free_port,
    kill_pids,
    prefect_env,
    prefect_server_command,
    reap_adopted,
    stop,
    stop_pids,
    tuned,
    wait_until_healthy,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CHILD_VARIABLE = "SMARTPLEX_RUN_CHILD"  # in each child's environment: tells its leftovers apart from others'
WORKER = "worker"
WATCH_SECONDS = 0.5
REAP_EVERY = 20  # watch ticks between two sweeps for exited orphans (10 s)
log = logging.getLogger("smartplex.run")


class Stack:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.state: StateFile | None = None
        self.data_dir: Path | None = None
        self.own_server = False
        self.prefect_env: dict[str, str] = {}  # what the workers and the Prefect steps get
        self.cut_off_runs: set[str] = set()  # flow runs whose process died with the worker

    def bootstrap(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float | None = None,
    ) -> str:
        """Run a one-off step (`deployments/bootstrap.py`); its log goes to our stderr, its answer is stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "deployments.bootstrap", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"`{args[0]}` step failed with exit code {result.returncode} (see above)")
        return result.stdout

    def add(self, name: str, args: list[str], env: dict[str, str], cwd: Path | None = REPO_ROOT) -> Child:
        assert self.data_dir is not None and self.state is not None
        child = Child(name, args, {**env, CHILD_VARIABLE: name}, self.data_dir / "logs" / f"{name}.log", cwd)
        self.children.append(child)
        process = child.start()  # a stop landing before this returns still finds it: down() sweeps orphans
        log.info("started %s (pid %s, log %s)", name, process.pid, child.log_path)
        self.state.write(self.children, "starting")
        return child

    def up(self) -> None:
        plan: dict[str, Any] = json.loads(self.bootstrap("database"))
        self.data_dir = Path(plan["data_dir"])
        self.state = StateFile(self.data_dir / "stack.json")
        ours = {"SMARTPLEX_DATA_DIR": str(self.data_dir), "SMARTPLEX_DATABASE_URL": plan["database_url"]}
        demo_env: dict[str, str] = {}
        if plan["demo"]:
            port = str(free_port())  # fixed for the life of the stack: a restarted demo keeps its URLs
            args = [sys.executable, "-m", "simulators.demo", "--port", port]
            demo = self.add("demo-services", args, {**os.environ, **ours})
            demo_env = self.wait_for_demo(demo)
            self.bootstrap("database", env={**os.environ, **ours, **demo_env})  # Alice's rows, from demo.env
            log.warning(
                "DEMO MODE: no SMARTPLEX_PLEX_URL set; syncing two simulated Plex servers (Alice's, Bob's)"
            )

        api_url = plan["prefect_api_url"]
        self.own_server = own_server = not api_url
        if own_server:
            log.info("starting a Prefect server on port %s (about 15 s)", plan["prefect_port"])
            args, server_env, api_url = prefect_server_command(
                self.data_dir / "prefect", plan["prefect_port"]
            )
            server = self.add("prefect-server", args, server_env, cwd=None)
            wait_until_healthy(f"{api_url}/health", timeout=240, process=server.process)
        else:
            log.info("using the Prefect server at %s", api_url)

        env = prefect_env(api_url)
        env["PWD"] = str(REPO_ROOT)  # prefect.yaml's pull step runs flows from here
        env.update(ours, **demo_env)
        self.prefect_env = env
        self.bootstrap("prefect", *(["--own-server"] if own_server else []), env=env, cwd=REPO_ROOT)

        worker = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", plan["work_pool"]]
        self.add(WORKER, worker, tuned(env, WORKER_TUNING))
        gateway = self.add("gateway", [sys.executable, "-m", "webhook_gateway"], env)
        wait_until_healthy(f"{plan['gateway_url']}/healthz", timeout=60, process=gateway.process)
        self.state.write(self.children, "running")
        ui = api_url.removesuffix("/api")
        log.info("ready: webhooks at %s/api/webhooks/<service>, Prefect UI at %s", plan["gateway_url"], ui)

    def wait_for_demo(self, demo: Child) -> dict[str, str]:
        """The demo services write the settings that point at them to data/demo.env once they listen."""
        assert self.data_dir is not None and demo.process is not None
        env_file = self.data_dir / "demo.env"
        env_file.unlink(missing_ok=True)
        deadline = time.monotonic() + 60
        while not env_file.exists():
            if demo.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"demo services did not start; see {demo.log_path}")
            time.sleep(0.2)
        pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        return {key: value for key, value in pairs}

    def watch(self) -> None:
        """Restart children that die, with backoff, until a signal stops the stack."""
        assert self.state is not None
        for tick in itertools.count():
            if self.check_children(time.monotonic()):
                self.state.write(self.children, "running")
            if tick % REAP_EVERY == 0:
                reap_adopted([child.process.pid for child in self.children if child.process])
            time.sleep(WATCH_SECONDS)

    def check_children(self, now: float) -> bool:
        """One round: note the children that died, start again those whose backoff is over. True on change."""
        changed = False
        for child in self.children:
            assert child.process is not None
            if child.restart_due is None and child.process.poll() is not None:
                delay = child.died(now)
                log.error(
                    "%s (pid %s) ended: %s; starting it again in %.0f s (see %s)",
                    child.name,
                    child.process.pid,
                    child.last_exit,
                    delay,
                    child.log_path,
                )
                self.kill_leftovers(child)
                changed = True
            elif child.restart_due is not None and now >= child.restart_due:
                if child.name == WORKER:
                    self.retry_cut_off_runs()
                child.restarts += 1
                child.start()
                log.warning(
                    "restarted %s (pid %s, restart %d)", child.name, child.process.pid, child.restarts
                )
                changed = True
        return changed

    def kill_leftovers(self, child: Child) -> None:
        """What a dead child started and left behind (a worker's flow runs) goes with it, as a process
        manager stops a whole service; the flow runs among them are noted to be run again."""
        leftovers = [
            pid for pid in descendants(os.getpid()) if environment(pid).get(CHILD_VARIABLE) == child.name
        ]
        if not leftovers:
            return
        runs = {environment(pid).get("PREFECT__FLOW_RUN_ID") for pid in leftovers} - {None}
        self.cut_off_runs.update(run for run in runs if run)
        kill_pids(leftovers)
        log.warning("killed %d process(es) %s left: %s", len(leftovers), child.name, leftovers)

    def retry_cut_off_runs(self) -> None:
        """Before a new worker starts: the runs its predecessor left pending or running are retried (with a
        Prefect server of our own, every such run: no other worker can hold them)."""
        if not self.own_server and not self.cut_off_runs:
            return
        runs = [arg for run in sorted(self.cut_off_runs) for arg in ("--flow-run", run)]
        own = ["--own-server"] if self.own_server else []
        try:
            self.bootstrap("recover", *own, *runs, env=self.prefect_env, cwd=REPO_ROOT, timeout=120)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log.warning(
                "could not retry the runs the worker left (%s); the next start of the stack will", exc
            )
        else:
            self.cut_off_runs.clear()

    def down(self) -> None:
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                log.info("stopping %s", child.name)
                stop(child.process)
        # What earlier children left (a flow run whose worker died and was restarted), and nothing else:
        # the stack may run inside a process that has children of its own (a test runner).
        orphans = [pid for pid in descendants(os.getpid()) if CHILD_VARIABLE in environment(pid)]
        if orphans:
            log.info("stopping %d leftover process(es) of earlier children: %s", len(orphans), orphans)
            stop_pids(orphans)
        if self.state is not None:
            self.state.write(self.children, "stopped")
        if self.data_dir is not None:
            (self.data_dir / "demo.env").unlink(missing_ok=True)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def run_stack() -> int:
    """Start the stack and keep it up until Ctrl-C / SIGTERM (exit 0); 1 when it could not start."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    become_subreaper()
    stack = Stack()
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        stack.up()
        stack.watch()
        return 0
    except _Stop as stop_signal:
        log.info("%s received", stop_signal)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        log.error("the stack could not start: %s", exc)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.down()


if __name__ == "__main__":
    sys.exit(run_stack())
