"""Starting, watching, restarting and stopping the processes of the stack (`make run`, the tests, bench).

Standard library only: `make run`'s supervisor imports this module and stays small for as long as the stack
runs (see docs/operations.md, "Memory").
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

VENV_BIN = Path(sys.executable).parent

# A child that dies is started again after 1, 2, 4 … seconds, at most RESTART_CAP; one that stayed up for
# STABLE_AFTER seconds before it died starts again after 1 s (its backoff is reset).
RESTART_FIRST, RESTART_CAP, STABLE_AFTER = 1.0, 60.0, 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Prefect tuned for webhooks, measured on a 2-core machine (docs/benchmarks.md, docs/operations.md).
# Values already in the environment win. The server's only applies to the server `make run` starts.
SERVER_TUNING = {
    # A run that finds its deployment busy asks again after this (Prefect's default: 30 s).
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
    # Concurrency slots are held through leases, which Prefect keeps in memory by default: a restarted
    # server would forget the lease of a run that never finishes and never free its slot. On disk, under
    # PREFECT_HOME, they outlive a restart and expire as they should.
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
}
WORKER_TUNING = {
    # How often the worker asks for runs that are due (Prefect's default: 10 s).
    "PREFECT_WORKER_QUERY_SECONDS": "2",
}


def tuned(env: dict[str, str], tuning: dict[str, str]) -> dict[str, str]:
    """`env` with `tuning` for what it does not set itself."""
    return {**tuning, **env}


def prefect_env(api_url: str, home: Path | None = None) -> dict[str, str]:
    """Environment for a process that must talk to *the* Prefect server at `api_url`, offline."""
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        PREFECT_UI_ENABLED=env.get("PREFECT_UI_ENABLED", "true"),
    )
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    return env


def spawn(
    args: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `args` in its own process group, output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(args), env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 200 <= answer.status < 300
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 2xx; fail early if `process` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process {process.args!r} exited with {process.returncode} before {url} was up"
            )
        if is_healthy(url):
            return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s")


def prefect_server_command(home: Path, port: int) -> tuple[list[str], dict[str, str], str]:
    """`prefect server start` on loopback with its own SQLite database under `home`: args, env, API URL."""
    api_url = f"http://127.0.0.1:{port}/api"
    env = tuned(prefect_env(api_url, home), SERVER_TUNING)
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(port)
    args = [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return args, env, api_url


def start_prefect_server(home: Path, port: int, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Prefect server on loopback with its own SQLite database under `home`. Returns it and its API URL."""
    args, env, api_url = prefect_server_command(home, port)
    process = spawn(args, env, log_path)
    wait_until_healthy(f"{api_url}/health", timeout=240, process=process)
    return process, api_url


# ------------------------------------------------------------------------------------- process trees


def _parents() -> dict[int, int]:
    """pid → parent pid of every process we can see (Linux /proc)."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren …), parents first. Empty without /proc."""
    if not Path("/proc/self/stat").exists():
        return []
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, queue = [], list(children.get(pid, []))
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def environment(pid: int) -> dict[str, str]:
    """The environment `pid` started with (empty when unreadable: gone, or someone else's)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def kill_pids(pids: Sequence[int]) -> None:
    """SIGKILL `pids` at once (no chance to report anything) and collect their exit status."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def become_subreaper() -> bool:
    """Linux: orphans of our children (a flow run whose worker was killed) become our children, so they can
    be found and stopped with the stack instead of living on under init. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    pr_set_child_subreaper = 36
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    return False


def reap_adopted(known: Sequence[int]) -> None:
    """Collect the exit status of adopted orphans that ended (never of `known` pids: Popen reaps those)."""
    for pid in descendants(os.getpid()):
        if pid not in known:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def _signal_tree(process: subprocess.Popen[bytes], tree: Sequence[int], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group and every descendant (some, like flow runs, have a session of their own),
    then SIGKILL whatever still lives after `grace` seconds."""
    if process.poll() is not None:
        return
    tree = descendants(process.pid)
    _signal_tree(process, tree, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    _signal_tree(process, [pid for pid in tree if _alive(pid)], signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def stop_pids(pids: Sequence[int], grace: float = 10.0) -> None:
    """SIGTERM `pids` (processes without a Popen: orphans we adopted), SIGKILL the ones left after `grace`,
    and collect their exit status."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an adopted orphan that exited shows as a zombie until we reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return _alive(pid)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# ------------------------------------------------------------------------------------------ restarts


def restart_delay(failures: int) -> float:
    """Seconds to wait before start number `failures` + 1 of a child that keeps dying: 1, 2, 4 … RESTART_CAP."""
    return min(RESTART_FIRST * 2 ** max(failures - 1, 0), RESTART_CAP)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Child:
    """One supervised process: how to start it, and what happened to it so far."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_monotonic: float = 0.0
    started_at: str | None = None
    restarts: int = 0
    failures: int = 0  # deaths in a row without STABLE_AFTER seconds of uptime in between
    last_exit: str | None = None
    last_exit_at: str | None = None
    restart_due: float | None = None  # monotonic time of the next start while the child is down

    def start(self) -> subprocess.Popen[bytes]:
        self.process = spawn(self.args, self.env, self.log_path, cwd=self.cwd)
        self.started_monotonic = time.monotonic()
        self.started_at = _now()
        self.restart_due = None
        return self.process

    def died(self, now: float) -> float:
        """Record the exit of the child; returns the delay before it is started again."""
        assert self.process is not None and self.process.returncode is not None
        if now - self.started_monotonic >= STABLE_AFTER:
            self.failures = 0
        self.failures += 1
        self.last_exit = describe_exit(self.process.returncode)
        self.last_exit_at = _now()
        delay = restart_delay(self.failures)
        self.restart_due = now + delay
        return delay

    def state(self) -> dict[str, object]:
        running = self.process is not None and self.process.returncode is None and self.restart_due is None
        return {
            "pid": self.process.pid if self.process is not None else None,
            "running": running,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_exit_at": self.last_exit_at,
            "log": str(self.log_path),
        }


@dataclass
class StateFile:
    """`<data dir>/stack.json`: the supervisor's pid and each child's pid, start, restarts and last exit, for
    `smartplex-sync doctor` and for people. Replaced atomically on every change."""

    path: Path
    started_at: str = field(default_factory=_now)

    def write(self, children: Sequence[Child], status: str) -> None:
        body = {
            "supervisor_pid": os.getpid(),
            "status": status,
            "started_at": self.started_at,
            "updated_at": _now(),
            "processes": {child.name: child.state() for child in children},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(body, indent=2) + "\n")
        partial.replace(self.path)
