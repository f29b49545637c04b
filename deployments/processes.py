"""Starting, waiting for and stopping the processes of the stack (used by `make run` and the tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Prefect tuned for webhooks, measured on a 2-core machine (docs/benchmarks.md, docs/operations.md).
# Values already in the environment win. The server's only applies to the server `make run` starts.
SERVER_TUNING = {
    # A run that finds its deployment busy asks again after this (Prefect's default: 30 s).
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
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
    log = log_path.open("ab")
    return subprocess.Popen(
        list(args), env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_until_healthy(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 2xx; fail early if `process` dies."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process {process.args!r} exited with {process.returncode} before {url} was up"
            )
        try:
            if httpx.get(url, timeout=2).is_success:
                return
        except httpx.HTTPError as exc:
            last_error = str(exc)
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s: {last_error}")


def start_prefect_server(home: Path, port: int, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Prefect server on loopback with its own SQLite database under `home`. Returns it and its API URL."""
    api_url = f"http://127.0.0.1:{port}/api"
    env = tuned(prefect_env(api_url, home), SERVER_TUNING)
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(port)
    process = spawn(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        log_path,
    )
    wait_until_healthy(f"{api_url}/health", timeout=240, process=process)
    return process, api_url


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
