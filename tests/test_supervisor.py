"""`make run` keeps itself up: the real `smartplex-sync run`, its children SIGKILLed one by one by pid, each
started again and the stack serving again (a delivery answered 202, dispatched, its flow run completed),
restarts counted in `doctor`, and Ctrl-C leaving no process behind. Every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from deployments.operations import stack_checks
from deployments.processes import (
    RESTART_CAP,
    STABLE_AFTER,
    VENV_BIN,
    Child,
    StateFile,
    describe_exit,
    free_port,
    restart_delay,
)
from deployments.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER = "SMARTPLEX_TEST_STACK"  # in the environment of every process the stack under test starts
T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError, KeyError):
            if value := condition():
                return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


# ---------------------------------------------------------------------------------- restart policy


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [restart_delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert RESTART_CAP == 60


def _exited_child(tmp_path: Path, code: int) -> Child:
    child = Child(
        "x", [sys.executable, "-c", f"raise SystemExit({code})"], dict(os.environ), tmp_path / "x.log"
    )
    child.start()
    assert child.process is not None
    child.process.wait(30)
    return child


def test_a_child_dying_young_waits_longer_each_time_and_a_stable_one_starts_over(tmp_path: Path) -> None:
    child = _exited_child(tmp_path, 3)
    started = child.started_monotonic
    assert child.died(started + 0.1) == 1
    assert child.last_exit == "exit code 3"
    child.start()
    child.process.wait(30)  # type: ignore[union-attr]
    assert child.died(child.started_monotonic + 0.1) == 2
    child.start()
    child.process.wait(30)  # type: ignore[union-attr]
    assert child.died(child.started_monotonic + STABLE_AFTER) == 1  # it had stayed up: backoff reset


def test_exits_read_plainly() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"


def test_the_watch_restarts_a_dying_child_with_backoff_and_records_it(tmp_path: Path) -> None:
    stack = Stack()
    stack.data_dir = tmp_path
    stack.state = StateFile(tmp_path / "stack.json")
    child = stack.add("flaky", [sys.executable, "-c", "raise SystemExit(5)"], dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while child.restarts < 2 and time.monotonic() < deadline:
            stack.check_children(time.monotonic())
            time.sleep(0.1)
        stack.state.write(stack.children, "running")
        state = json.loads((tmp_path / "stack.json").read_text())["processes"]["flaky"]
        assert state["restarts"] >= 2
        assert state["last_exit"] == "exit code 5"
        assert child.failures >= 2  # never stable: each wait doubled
    finally:
        stack.down()
    assert json.loads((tmp_path / "stack.json").read_text())["status"] == "stopped"


def test_doctor_lines_for_the_stack() -> None:
    assert stack_checks(None, False)[0].ok is None
    stopped = {"status": "stopped", "updated_at": "T", "processes": {}}
    assert stack_checks(stopped, False)[0].label == "make run: not running (last update T)"
    state = {
        "status": "running",
        "processes": {
            "gateway": {
                "pid": 7,
                "running": True,
                "started_at": "S",
                "restarts": 1,
                "last_exit": "killed by SIGKILL",
                "last_exit_at": "E",
            },
            "worker": {
                "pid": 8,
                "running": False,
                "restarts": 3,
                "last_exit": "exit code 1",
                "last_exit_at": "F",
                "log": "w.log",
            },
        },
    }
    gateway, worker = stack_checks(state, True)
    assert gateway.ok is True
    assert gateway.label == "gateway: running (pid 7) since S, 1 restart, last exit: killed by SIGKILL at E"
    assert worker.ok is False
    assert (
        worker.line()
        == "✗ worker: down, waiting to be started again (3 restarts, last exit: exit code 1 at F) — fix: read w.log"
    )


# ------------------------------------------------------------------------------- the real stack


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    marker: str
    data_dir: Path
    gateway_url: str
    api_url: str
    output: Path

    def state(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "stack.json").read_text())

    def child(self, name: str) -> dict[str, Any]:
        return self.state()["processes"][name]

    def log(self) -> str:
        return self.output.read_text(errors="replace")


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries `MARKER=marker`: everything the stack under test started."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(entry.path, "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("make-run")
    marker = uuid.uuid4().hex
    gateway_port, prefect_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SMARTPLEX_"))}
    env.update(
        {
            MARKER: marker,
            "SMARTPLEX_DATA_DIR": str(root / "data"),
            "SMARTPLEX_GATEWAY_PORT": str(gateway_port),
            "SMARTPLEX_PREFECT_PORT": str(prefect_port),
            "PREFECT_HOME": str(root / "prefect-home"),
        }
    )
    output = root / "run.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "smartplex-sync"), "run"],
            env=env,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningStack(
        process,
        marker,
        root / "data",
        f"http://127.0.0.1:{gateway_port}",
        f"http://127.0.0.1:{prefect_port}/api",
        output,
    )
    try:
        wait_for(lambda: _ready(running), 300, "make run ready", every=1)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(120)
        for pid in marked_pids(marker):  # only if a test failed half-way: ours, killed by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _ready(stack: RunningStack) -> bool:
    if stack.process.poll() is not None:
        raise RuntimeError(f"make run exited with {stack.process.returncode}:\n{stack.log()}")
    return stack.state()["status"] == "running"


def kill_and_wait_for_restart(stack: RunningStack, name: str, timeout: float = 120) -> dict[str, Any]:
    before = stack.child(name)
    os.kill(before["pid"], signal.SIGKILL)
    return wait_for(
        lambda: (c := stack.child(name))["running"] and c["pid"] != before["pid"] and c,
        timeout,
        f"{name} restarted",
    )


def deliver(stack: RunningStack, rating_key: str) -> int:
    """A Tautulli Playback Stop, retried while the gateway is still coming up; its webhook_log id."""

    def post() -> int | None:
        answer = httpx.post(
            f"{stack.gateway_url}/api/webhooks/tautulli",
            json={"event": "playback.stop", "rating_key": rating_key, "user": "supervisor-test"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    return wait_for(post, 90, "delivery answered 202")


def dispatched_run(stack: RunningStack, webhook_id: int, timeout: float = 180) -> str:
    def run_id() -> str | None:
        status = httpx.get(f"{stack.gateway_url}/api/webhooks/status?limit=100", timeout=10).json()
        row = next(r for r in status["recent_webhooks"] if r["id"] == webhook_id)
        return row["flow_run_id"] if row["processed"] else None

    return wait_for(run_id, timeout, f"webhook {webhook_id} dispatched")


def run_state(stack: RunningStack, flow_run_id: str) -> str:
    return httpx.get(f"{stack.api_url}/flow_runs/{flow_run_id}", timeout=10).json()["state"]["type"]


def completed(stack: RunningStack, flow_run_id: str, timeout: float = 240) -> None:
    def done() -> bool:
        state = run_state(stack, flow_run_id)
        assert state not in ("FAILED", "CRASHED"), state
        return state == "COMPLETED"

    wait_for(done, timeout, f"flow run {flow_run_id} completed", every=1)


@pytest.mark.timeout(900)
def test_a_killed_gateway_is_restarted_and_serves_again(stack: RunningStack) -> None:
    restarted = kill_and_wait_for_restart(stack, "gateway")
    assert restarted["restarts"] == 1
    assert restarted["last_exit"] == "killed by SIGKILL"
    run = dispatched_run(stack, deliver(stack, "101"))
    completed(stack, run)
    assert "gateway (pid" in stack.log() and "restarted gateway" in stack.log()


def runs_of(stack: RunningStack, webhook_id: int) -> list[str]:
    summary = httpx.get(f"{stack.gateway_url}/api/webhooks/status?limit=100", timeout=10).json()
    return next(r for r in summary["recent_webhooks"] if r["id"] == webhook_id)["flow_run_ids"]


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_run_is_restarted_and_the_work_is_done_again(stack: RunningStack) -> None:
    for attempt in range(3):  # a run caught pending or running; one that finishes first is tried again
        webhook_id = deliver(stack, f"20{attempt}")
        run = dispatched_run(stack, webhook_id)
        caught = wait_for(
            lambda run=run: (
                run_state(stack, run) in ("PENDING", "RUNNING", "COMPLETED") and run_state(stack, run)
            ),
            180,
            "run picked up",
            every=0.2,
        )
        if caught != "COMPLETED":
            break
    assert caught in ("PENDING", "RUNNING")
    assert kill_and_wait_for_restart(stack, "worker")["restarts"] == 1
    # Its process died with the worker; it is not left pending or running (holding its concurrency slot).
    wait_for(lambda: run_state(stack, run) in ("CRASHED", "COMPLETED"), 120, "cut-off run final")
    if run_state(stack, run) == "CRASHED":  # not when it finished in the instant before the kill
        assert "was cut off when its worker died" in stack.log()
    # The delivery's work is done by a run of the new worker (the dispatcher queues a crashed run's work).
    wait_for(
        lambda: any(run_state(stack, r) == "COMPLETED" for r in runs_of(stack, webhook_id)),
        300,
        f"webhook {webhook_id} served by a completed run",
        every=2,
    )
    completed(stack, dispatched_run(stack, deliver(stack, "102")))  # and new deliveries go through


@pytest.mark.timeout(900)
def test_a_killed_prefect_server_comes_back_with_its_data_and_everyone_reconnects(
    stack: RunningStack,
) -> None:
    earlier = httpx.post(f"{stack.api_url}/flow_runs/filter", json={"limit": 1}, timeout=10).json()[0]["id"]
    before = stack.child("prefect-server")
    os.kill(before["pid"], signal.SIGKILL)
    webhook_id = deliver(stack, "103")  # the gateway keeps acknowledging while Prefect is down
    wait_for(
        lambda: (c := stack.child("prefect-server"))["pid"] != before["pid"] and c["running"],
        120,
        "prefect-server restarted",
    )
    wait_for(lambda: httpx.get(f"{stack.api_url}/health", timeout=5).is_success, 180, "Prefect healthy")
    assert httpx.get(f"{stack.api_url}/flow_runs/{earlier}", timeout=10).is_success  # SQLite data kept
    assert (stack.data_dir / "prefect" / "concurrency_leases").is_dir()  # leases on disk, not in memory
    completed(stack, dispatched_run(stack, webhook_id, timeout=300))  # gateway and worker reconnected


@pytest.mark.timeout(900)
def test_killed_demo_services_come_back_on_the_same_port(stack: RunningStack) -> None:
    demo_env = (stack.data_dir / "demo.env").read_text()
    kill_and_wait_for_restart(stack, "demo-services")
    plex_url = dict(line.split("=", 1) for line in demo_env.splitlines())["SMARTPLEX_PLEX_URL"]
    wait_for(
        lambda: httpx.get(f"{plex_url}/identity", timeout=5).status_code < 500, 60, "demo Plex answering"
    )
    assert (stack.data_dir / "demo.env").read_text() == demo_env


@pytest.mark.timeout(300)
def test_doctor_shows_each_process_with_its_restarts(stack: RunningStack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SMARTPLEX_"))}
    env.update(SMARTPLEX_DATA_DIR=str(stack.data_dir), PREFECT_API_URL=stack.api_url)
    doctor = subprocess.run(
        [str(VENV_BIN / "smartplex-sync"), "doctor"],
        env=env,
        cwd=stack.data_dir,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in doctor.stdout.splitlines() if "running (pid" in line]
    processes = stack.state()["processes"]
    assert [line.split(":")[0] for line in lines] == [f"✓ {name}" for name in processes], doctor.stdout
    for line, process in zip(lines, processes.values(), strict=True):
        restarts = process["restarts"]
        assert f"(pid {process['pid']})" in line
        assert f", {restarts} restart{'' if restarts == 1 else 's'}" in line
    assert sum(process["restarts"] for process in processes.values()) >= 1, "run the kill tests first"


@pytest.mark.timeout(300)
def test_ctrl_c_stops_everything_and_leaves_no_process(stack: RunningStack) -> None:
    assert len(marked_pids(stack.marker)) >= 5  # the supervisor and its four children at least
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(180) == 0, stack.log()
    wait_for(lambda: not marked_pids(stack.marker), 30, "no process left", every=1)
    assert stack.state()["status"] == "stopped"
    assert "SIGINT received" in stack.log()
