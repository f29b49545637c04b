"""`make run` keeps itself up, and loses nothing under faults: the real `smartplex-sync run`, its children
SIGKILLed one by one by pid, each started again and the stack serving again (a delivery answered 202,
dispatched, its flow run completed); a gateway killed in the middle of a burst, a Prefect server frozen for
60 s during one, the database locked; restarts counted in `doctor`, and Ctrl-C leaving no process behind.
Every wait is bounded; only processes this module started are signalled, by pid."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, select

from deployments.operations import stack_checks
from deployments.processes import (
    RESTART_CAP,
    STABLE_AFTER,
    VENV_BIN,
    Child,
    StateFile,
    descendants,
    describe_exit,
    free_port,
    restart_delay,
)
from deployments.stack import Stack
from smartplex_sync.store import make_engine
from smartplex_sync.store.tables import batch_requests, dispatch_batches, webhook_log, webhook_requests

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
    # It had stayed up: backoff reset. (+ 1: `(t + STABLE_AFTER) - t` can round to just below STABLE_AFTER.)
    assert child.died(child.started_monotonic + STABLE_AFTER + 1) == 1


def test_exits_read_plainly() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"


def test_the_watch_restarts_a_dying_child_with_backoff_and_records_it(tmp_path: Path) -> None:
    stack = Stack()
    stack.data_dir = tmp_path
    stack.state = StateFile(tmp_path / "stack.json")
    child = stack.add("flaky", [sys.executable, "-c", "raise SystemExit(5)"], dict(os.environ))
    # Not the stack's: a process this test runner started. `down` must leave it alone (it once stopped
    # every descendant of its process, here the suite's Prefect server and PostgreSQL with them).
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
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
        alive = bystander.poll() is None
        bystander.kill()
        bystander.wait(30)
    assert json.loads((tmp_path / "stack.json").read_text())["status"] == "stopped"
    assert alive, "the stack stopped a process it did not start"


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
            "SMARTPLEX_DATABASE_WAIT_SECONDS": "3",  # a locked database answers 503 within 3 s
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


def deliver(stack: RunningStack, rating_key: str) -> str:
    """A Tautulli Playback Stop, retried while the gateway is still coming up; its webhook_log id."""

    def post() -> str | None:
        answer = httpx.post(
            f"{stack.gateway_url}/api/webhooks/tautulli",
            json={"event": "playback.stop", "rating_key": rating_key, "user": "supervisor-test"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    return wait_for(post, 90, "delivery answered 202")


def dispatched_run(stack: RunningStack, webhook_id: str, timeout: float = 180) -> str:
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


def runs_of(stack: RunningStack, webhook_id: str) -> list[str]:
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


# ------------------------------------------------------------------------- faults under a burst
# Each burst is a fixed list of Tautulli Playback Stops, each carrying a marker of its own, sent by a few
# threads without retries (none of the five services retries). The outcome of every delivery (its status,
# or no answer) is compared with what webhook_log, the dispatch queue and Prefect hold afterwards.

SENDERS = 4


def burst(
    stack: RunningStack,
    markers: list[str],
    pause: float = 0.05,
    kill_after: tuple[int, int] | None = None,
) -> dict[str, tuple[int, str | None]]:
    """POST one delivery per marker from SENDERS threads; marker → (status, webhook id); status 0: no answer.
    `kill_after` (n, pid): SIGKILL pid as soon as n deliveries were answered 2xx, in the middle of the burst."""
    outcomes: dict[str, tuple[int, str | None]] = {}
    lock = threading.Lock()

    def count(status: int) -> None:
        if kill_after is None or not 200 <= status < 300:
            return
        with lock:
            acked = sum(1 for code, _ in outcomes.values() if 200 <= code < 300)
            if acked == kill_after[0]:
                os.kill(kill_after[1], signal.SIGKILL)

    def send(share: list[str]) -> None:
        with httpx.Client(timeout=15) as client:
            for marker in share:
                payload = {
                    "event": "playback.stop",
                    "rating_key": "101",
                    "user": "fault-test",
                    "marker": marker,
                }
                try:
                    answer = client.post(f"{stack.gateway_url}/api/webhooks/tautulli", json=payload)
                    row = answer.json().get("id") if answer.is_success else None
                    with lock:
                        outcomes[marker] = (answer.status_code, row)
                    count(answer.status_code)
                except httpx.HTTPError:
                    outcomes[marker] = (0, None)
                time.sleep(pause)

    threads = [threading.Thread(target=send, args=(markers[i::SENDERS],)) for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(outcomes) == len(markers)
    return outcomes


def stack_engine(stack: RunningStack) -> Engine:
    return make_engine(f"sqlite:///{stack.data_dir / 'smartplex.db'}")


def recorded(engine: Engine, markers: set[str]) -> dict[str, list[tuple[uuid.UUID, str]]]:
    """marker → [(webhook id, action)] of every webhook_log row that carries it."""
    found: dict[str, list[tuple[uuid.UUID, str]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(webhook_log.c.id, webhook_log.c.action, webhook_log.c.payload).where(
                webhook_log.c.source == "tautulli"
            )
        )
        for row_id, action, payload in rows:
            marker = payload.get("marker") if isinstance(payload, dict) else None
            if marker in markers:
                found.setdefault(marker, []).append((row_id, action))
    return found


def served(
    engine: Engine, webhook_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[str, str | None, str | None]]]:
    """webhook id → [(batch id, flow run id, state)] of every batch that took one of its requests."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                webhook_requests.c.webhook_id,
                dispatch_batches.c.id,
                dispatch_batches.c.flow_run_id,
                dispatch_batches.c.state,
            )
            .select_from(
                webhook_requests.join(
                    batch_requests, batch_requests.c.request_id == webhook_requests.c.id
                ).join(dispatch_batches, dispatch_batches.c.id == batch_requests.c.batch_id)
            )
            .where(webhook_requests.c.webhook_id.in_(webhook_ids))
        )
        result: dict[uuid.UUID, list[tuple[str, str | None, str | None]]] = {i: [] for i in webhook_ids}
        for webhook_id, batch_id, run_id, state in rows:
            result[webhook_id].append((batch_id, run_id, state))
    return result


def all_completed_once(
    engine: Engine, webhook_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[str, str | None, str | None]]] | None:
    batches = served(engine, webhook_ids)
    return batches if all(len(b) == 1 and b[0][2] == "COMPLETED" for b in batches.values()) else None


def assert_each_acknowledged_delivery_served_once(
    stack: RunningStack, outcomes: dict[str, tuple[int, str | None]], in_flight: int = 0
) -> dict[str, int]:
    """Every 2xx delivery recorded once, under the id it was answered with, and served by exactly one
    completed run; nothing refused recorded as accepted; at most `in_flight` unanswered ones recorded (a
    gateway killed between its commit and its answer). Returns the counts."""
    engine = stack_engine(stack)
    try:
        acked = {m: row for m, (status, row) in outcomes.items() if 200 <= status < 300}
        found = recorded(engine, set(outcomes))
        for marker, row in acked.items():
            assert found.get(marker) == [(uuid.UUID(row), "tautulli-sync")], (marker, found.get(marker))
        unanswered = [m for m in found if m not in acked]
        assert all(outcomes[m][0] == 0 for m in unanswered), "a refused delivery was recorded as accepted"
        assert len(unanswered) <= in_flight, unanswered
        ids = [uuid.UUID(row) for row in acked.values() if row is not None] + [
            found[m][0][0] for m in unanswered
        ]
        batches = wait_for(
            lambda: all_completed_once(engine, ids),
            420,
            "every delivery served by one completed run",
            every=2,
        )
        runs = {b[0][1] for b in batches.values()}
        assert len(runs) == len({b[0][0] for b in batches.values()})  # one run per batch, none made twice
        for run in runs:
            assert run_state(stack, run) == "COMPLETED"
        return {
            "sent": len(outcomes),
            "acknowledged": len(acked),
            "unanswered_recorded": len(unanswered),
            "runs": len(runs),
        }
    finally:
        engine.dispose()


@pytest.mark.timeout(900)
def test_a_gateway_killed_mid_burst_loses_nothing_it_acknowledged(stack: RunningStack) -> None:
    markers = [f"kill-{uuid.uuid4().hex[:8]}-{i}" for i in range(60)]
    gateway = stack.child("gateway")
    outcomes = burst(stack, markers[:40], pause=0.1, kill_after=(12, gateway["pid"]))
    wait_for(
        lambda: (c := stack.child("gateway"))["running"] and c["pid"] != gateway["pid"],
        120,
        "gateway restarted",
    )
    wait_for(lambda: httpx.get(f"{stack.gateway_url}/healthz", timeout=5).is_success, 120, "gateway healthy")
    outcomes |= burst(stack, markers[40:])  # after the restart, as a sender's next events would come
    lost = [m for m, (status, _) in outcomes.items() if status == 0]
    assert lost, "the kill came after the burst: nothing was tested"
    assert all(outcomes[m][0] == 202 for m in markers[40:])
    counts = assert_each_acknowledged_delivery_served_once(stack, outcomes, in_flight=SENDERS)
    print(f"gateway killed mid-burst: {counts}, {len(lost)} unanswered")


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


@pytest.mark.timeout(900)
def test_a_prefect_server_frozen_for_60_s_during_a_burst_delays_dispatch_and_loses_nothing(
    stack: RunningStack,
) -> None:
    frozen = tree(stack.child("prefect-server")["pid"])
    markers = [f"freeze-{uuid.uuid4().hex[:8]}-{i}" for i in range(40)]
    log_before = len((stack.data_dir / "logs" / "gateway.log").read_text(errors="replace"))
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        outcomes = burst(stack, markers, pause=0.3)  # spread over the outage
        assert all(status == 202 for status, _ in outcomes.values()), outcomes
        time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    acknowledged = [uuid.UUID(row) for status, row in outcomes.values() if row is not None]
    wait_for(lambda: all_dispatched(stack, acknowledged), 300, "every delivery dispatched", every=0.2)
    dispatched = time.monotonic() - resumed
    counts = assert_each_acknowledged_delivery_served_once(stack, outcomes)
    caught_up = time.monotonic() - resumed
    log = (stack.data_dir / "logs" / "gateway.log").read_text(errors="replace")[log_before:]
    # A frozen server accepts connections and never answers: each call waits out Prefect's request timeout,
    # then the pass backs off. Either way the dispatcher did not retry once per delivery.
    failures = re.findall(r"dispatch pass failed|run not created", log)
    assert len(failures) <= 40, log[-3000:]
    # Calls to Prefect are bounded and the backoff is capped (8 s): dispatch resumes within seconds of
    # Prefect answering again, not after its 60 s request timeout and retries (85 s before). Loose here
    # (a shared machine); the figure is printed.
    assert dispatched < 45, dispatched
    print(
        f"Prefect frozen 60 s: {counts}; {len(failures)} failed passes/creations; every delivery dispatched "
        f"{dispatched:.1f} s after it came back, every run done {caught_up:.0f} s after"
    )


def all_dispatched(stack: RunningStack, webhook_ids: list[uuid.UUID]) -> bool:
    engine = stack_engine(stack)
    try:
        with engine.connect() as conn:
            processed = conn.execute(
                select(webhook_log.c.processed).where(webhook_log.c.id.in_(webhook_ids))
            ).scalars()
            return all(processed)
    finally:
        engine.dispose()


@pytest.mark.timeout(600)
def test_a_locked_database_gets_503_with_retry_after_then_recovers_without_a_restart(
    stack: RunningStack,
) -> None:
    gateway_pid = stack.child("gateway")["pid"]
    marker = f"locked-{uuid.uuid4().hex[:8]}"
    holder = sqlite3.connect(stack.data_dir / "smartplex.db", timeout=60, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        health = httpx.get(f"{stack.gateway_url}/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["status"] == "unavailable", health.text
        assert "locked" in health.json()["database"]
        outcomes = burst(stack, [f"{marker}-{i}" for i in range(4)])
        for status, _ in outcomes.values():
            assert status == 503
        answer = httpx.post(
            f"{stack.gateway_url}/api/webhooks/tautulli",
            json={"event": "playback.stop", "marker": marker},
            timeout=30,
        )
        assert answer.status_code == 503
        assert answer.headers["retry-after"].isdigit()
        assert answer.json()["error"] == "unavailable" and answer.json()["id"] is None
        assert "database is locked" in answer.json()["detail"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert httpx.get(f"{stack.gateway_url}/healthz", timeout=30).status_code == 200
    after = burst(stack, [f"{marker}-after"])
    assert after[f"{marker}-after"][0] == 202
    assert stack.child("gateway")["pid"] == gateway_pid  # recovered by itself
    engine = stack_engine(stack)
    try:
        assert set(recorded(engine, {*outcomes, f"{marker}-after"})) == {f"{marker}-after"}  # no 503 kept
    finally:
        engine.dispose()


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
