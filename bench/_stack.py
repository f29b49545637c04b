"""What the end-to-end benchmarks run against: the stack as `make run` starts it, and simulated services.

- `Services`: the five simulated services in a process of their own (as real servers would be: in this
  process their JSON work would fight the measurements for the GIL). They also send the webhooks, since
  a webhook describes what just changed in their world; the benchmark asks them over a pipe.
- `running_stack`: `smartplex-sync run` in a temporary data dir on free ports, pointed at those services,
  with extra environment (a coalescing strategy, Prefect settings). It is the real thing: Prefect server,
  deployments, worker and gateway, each a process, supervised as on a user's machine.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from deployments.processes import descendants, environment, free_port, wait_until_healthy
from deployments.stack import CHILD_VARIABLE
from smartplex_sync.models import WORK_POOL
from smartplex_sync.store import make_engine


def restore_environ(saved: Mapping[str, str | None]) -> None:
    """Put the environment variables back as `saved` held them (None: not set)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _count_requests(app: Any, counts: Counter[str]) -> Any:
    """ASGI middleware: requests per service (the first path segment: /plex, /tautulli, ...); the second
    user's (under /bob) as bob/plex, bob/tautulli, ..."""

    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            parts = scope["path"].split("/")
            counts[f"bob/{parts[2]}" if parts[1] == "bob" and len(parts) > 2 else parts[1]] += 1
        await app(scope, receive, send)

    return counted


def _services_main(control: Connection, seed: int, two_users: bool) -> None:
    """The services' process: serve the demo world (Alice's, and Bob's with `two_users`, as `make run`'s demo
    does), then carry out the benchmark's commands."""
    from bench import _scenarios
    from simulators.demo import ALICE, build_world, create_demo_app, service_env, write_smartplex_rows
    from simulators.serving import serve_in_thread
    from smartplex_sync.migrate import migrate
    from smartplex_sync.store import make_engine

    world = build_world(seed=seed, movies=200, shows=6, plays=200, friendly_name="Alice's Plex")
    bob = (
        build_world(seed=seed + 1, movies=120, shows=4, plays=150, friendly_name="Bob's Plex")
        if two_users
        else None
    )
    counts: Counter[str] = Counter()
    with serve_in_thread(_count_requests(create_demo_app(world, bob), counts)) as url:
        env = service_env(url)
        if bob is not None:
            env.update(SMARTPLEX_OWNER_EMAIL=ALICE, SMARTPLEX_PLEX_SERVER_NAME=world.library.friendly_name)
        control.send(env)
        while (command := control.recv())[0] != "stop":
            name, *args = command
            if name == "requests":
                control.send(dict(counts))
            elif name == "reset":
                counts.clear()
                control.send(None)
            elif name == "smartplex_rows":  # Alice's and Bob's users, Bob's server and integrations
                assert bob is not None
                engine = make_engine(args[0])
                migrate(engine)
                write_smartplex_rows(engine, url, world, bob)
                engine.dispose()
                control.send(None)
            elif bob is not None:
                control.send(getattr(_scenarios, name)(world, *args, bob=bob))
            else:
                control.send(getattr(_scenarios, name)(world, *args))


class Services:
    def __init__(self, seed: int = 11, two_users: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self._process = context.Process(target=_services_main, args=(child, seed, two_users), daemon=True)
        self._process.start()
        self.env: dict[str, str] = self._control.recv()

    def ask(self, command: str, *args: Any) -> Any:
        self._control.send((command, *args))
        return self._control.recv()

    def stop(self) -> None:
        self._control.send(("stop",))
        self._process.join(10)


@contextmanager
def services(seed: int = 11, two_users: bool = False) -> Iterator[Services]:
    running = Services(seed, two_users)
    try:
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class Stack:
    gateway: str
    api_url: str
    engine: Engine
    data_dir: Path
    supervisor: int  # the pid of `smartplex-sync run`


def rss_by_child(supervisor: int) -> dict[str, int]:
    """Resident memory (bytes) of each of the stack's children, with everything it started (a worker's flow
    runs count as the worker's): the processes below `supervisor`, grouped by SMARTPLEX_RUN_CHILD."""
    totals: Counter[str] = Counter()
    for pid in descendants(supervisor):
        child = environment(pid).get(CHILD_VARIABLE)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        if child:
            totals[child] += kb * 1024
    return dict(totals)


def _worker_polling(api_url: str) -> bool:
    answer = httpx.post(f"{api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=5)
    return answer.is_success and bool(answer.json())


def database_url(root: Path) -> str:
    """The SQLite database `running_stack(root, ...)` uses (SMARTPLEX_DATA_DIR's default)."""
    return f"sqlite:///{root / 'data' / 'smartplex.db'}"


@contextmanager
def running_stack(
    root: Path, service_env: Mapping[str, str], extra_env: Mapping[str, str]
) -> Iterator[Stack]:
    """`smartplex-sync run` until the block ends (SIGTERM to its process group, as Ctrl-C would). Its start-up
    migrates the database and makes the rows the settings describe (the owner, their server, integrations);
    rows written into `database_url(root)` before are kept, as SmartPlex's are."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    gateway_port, prefect_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SMARTPLEX_", "PREFECT_"))},
        **service_env,
        "SMARTPLEX_DATA_DIR": str(root / "data"),
        "SMARTPLEX_GATEWAY_PORT": str(gateway_port),
        "SMARTPLEX_PREFECT_PORT": str(prefect_port),
        **extra_env,
    }
    log = (root / "stack.log").open("ab")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "smartplex-sync"), "run"],
        env=env,
        cwd=root,  # no .env of the developer's
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    gateway, api_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{prefect_port}/api"
    engine = make_engine(database_url(root))
    try:
        wait_until_healthy(f"{gateway}/healthz", timeout=300, process=process)
        deadline = time.monotonic() + 120
        while not _worker_polling(api_url):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker polling; see {root / 'stack.log'}")
            time.sleep(0.5)
        yield Stack(gateway, api_url, engine, root / "data", process.pid)
    finally:
        engine.dispose()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


def spread(count: int, seconds: float, rng: random.Random) -> list[float]:
    """`count` send times over `seconds`, sorted."""
    return sorted(rng.uniform(0, seconds) for _ in range(count))
