"""Issue 9's topology on one machine, every process real, each started from deploy/compose.yaml's command and
environment (tests/support/topology.py): PostgreSQL set up as compose's `postgres` service, Prefect's server
on it, `migrate` and `prefect-deploy`, two workers and two gateways, our tables behind PgBouncer in
transaction mode with TLS (the Supabase-like fixture). The simulated Plex, Tautulli, Sonarr and Radarr answer
the flows.

A mixed burst (Plex multipart `library.new`, Sonarr and Radarr `Download`, Tautulli playback stops, each with
its token in the form its sender uses) is spread over both gateways. In its middle one gateway and then one
worker are SIGKILLed; the deliveries after the gateway's death go to the survivor, as a load balancer would
send them. Then: every delivery answered 2xx is recorded once and served by exactly one completed run, none
answered otherwise counts as accepted, no batch is left open, every run completed (a crashed one only if a
later run did its work), runs were spread over both workers, and the data landed.

Killing a worker: a process worker runs each flow run in a child process. SIGKILL of the worker's pid alone
leaves that child running to completion, so this test kills the worker pid only (the run in progress
finishes and reports itself). A run whose own process dies is left to zombie-run detection, not tested
here. The worker is frozen (SIGSTOP) before the kill and killed only when every run it has taken is Running
in its own live process: a worker killed while a run it took is still Pending can leave that run Pending
for good (seen: its process had started but died before the flow engine could report anything), which is
that same zombie case.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from deployments.processes import descendants, free_port, stop_pids
from simulators import radarr, sonarr, tautulli
from simulators.demo import DemoWorld, history_item, service_env
from simulators.plex import TINY_JPEG, library_new_payload
from simulators.plex_library import MOVIE, SHOW
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine, queue
from smartplex_sync.store.tables import (
    batch_requests,
    dispatch_batches,
    media_items,
    watch_history,
    webhook_log,
    webhook_requests,
)
from tests.support.postgres import postgres_cluster
from tests.support.supabase import SERVICE_OWNER, SupabaseLike
from tests.support.topology import Topology, init_compose_postgres
from tests.test_deploy import COMPOSE_PASSWORDS

TOKEN = "topology-token"
DEADLINE = 240.0  # seconds, for anything the stack must finish (2 shared cores)
PACE = 0.2  # seconds between two deliveries of the burst
BEFORE_GATEWAY_KILL = 20  # deliveries of the burst sent before the gateway dies
AFTER_WORKER_KILL = 12  # ... and after the worker dies
MAX_DELIVERIES = 300  # the burst's bound, whatever happens
WORKER_NAME = re.compile(r"Worker '([^']+)' (?:started|submitting)")
WORKER_LABEL = "prefect.worker.name"
BATCH_KEY = "smartplex-batch:"  # the dispatcher's idempotency keys (webhook_gateway/dispatch.py)


@pytest.fixture
def compose_postgres() -> Iterator[str]:
    """A fresh cluster, initialised as compose's `postgres` service is (deploy/postgres/init-databases.sh)."""
    with postgres_cluster() as admin_url:
        init_compose_postgres(admin_url, COMPOSE_PASSWORDS)
        yield admin_url


# --------------------------------------------------------------------------------- what the senders send


Send = Callable[[str], httpx.Response]  # a delivery, given the gateway's base URL


@dataclass
class Delivery:
    marker: str  # also in the payload: finds its webhook_log row, whatever the answer was
    source: str
    send: Send
    gateway: int | None = None
    status: int | None = None  # None: no answer (the gateway died, or the sender gave up)
    row_id: str | None = None


@dataclass
class Senders:
    """Deliveries as each real sender makes them, about items the demo world then really has."""

    world: DemoWorld
    markers: Iterator[int] = field(default_factory=itertools.count)
    kinds: Iterator[str] = field(
        default_factory=lambda: itertools.cycle(["plex", "sonarr", "radarr", "tautulli"])
    )
    # marker → library.new's item, Tautulli's play: they must land when their delivery was recorded (one
    # sent to the gateway as it was killed may have been lost, and its data with it).
    rating_keys: dict[str, str] = field(default_factory=dict)
    play_ids: dict[str, int] = field(default_factory=dict)
    made: int = 0

    def next(self) -> Delivery:
        self.made += 1
        marker = f"topology-{next(self.markers)}"
        source = next(self.kinds)
        return Delivery(marker, source, getattr(self, source)(marker))

    def plex(self, marker: str) -> Send:
        """A new movie and its `library.new`: multipart with a thumb, the token in the URL (all Plex has)."""
        library = self.world.library
        with self.world.lock:
            section = next(s for s in library.sections.values() if s.type == MOVIE)
            item = library.add_movie(section.key, at=int(time.time()))
            payload = json.dumps({**library_new_payload(library, item), "marker": marker})
        self.rating_keys[marker] = str(item.rating_key)
        return lambda base: httpx.post(
            f"{base}/api/webhooks/plex",
            params={"token": TOKEN},
            data={"payload": payload},
            files={"thumb": ("thumb.jpg", TINY_JPEG, "image/jpeg")},
            headers={"User-Agent": "PlexMediaServer/1.41.3.9314-a0bfb8370"},
            timeout=30,
        )

    def sonarr(self, marker: str) -> Send:
        """A `Download` of one episode of a show Plex has; the token as the Basic auth password."""
        shows = {i.title for i in self.world.library.items.values() if i.type == SHOW}
        series = [s for s in self.world.series if s["title"] in shows]
        number = int(marker.rsplit("-", 1)[1])
        show = series[number % len(series)]
        payload = {**sonarr.download_payload(show, 1, 1 + number % 10), "marker": marker}
        return lambda base: sonarr.send(
            f"{base}/api/webhooks/sonarr", payload, username="sonarr", password=TOKEN
        )

    def radarr(self, marker: str) -> Send:
        """A `Download` of one of Radarr's movies; the token as the Basic auth password."""
        movie = self.world.movies[int(marker.rsplit("-", 1)[1]) % len(self.world.movies)]
        payload = {**radarr.download_payload(movie), "marker": marker}
        return lambda base: radarr.send(
            f"{base}/api/webhooks/radarr", payload, username="radarr", password=TOKEN
        )

    def tautulli(self, marker: str) -> Send:
        """A playback stop of a new play, with the marker in the JSON Data template a user pastes and the token
        in the JSON Headers box."""
        library = self.world.library
        movies = [i for i in library.items.values() if i.type == MOVIE]
        with self.world.lock:
            item = history_item(library, movies[int(marker.rsplit("-", 1)[1]) % len(movies)])
            play = self.world.history.add_play(item, started=int(time.time()) - 7200, percent_complete=95)
        self.play_ids[marker] = play.row_id
        template = json.dumps({**json.loads(tautulli.DOCUMENTED_TEMPLATE), "marker": marker})
        return lambda base: tautulli.send_webhook(
            f"{base}/api/webhooks/tautulli",
            play,
            template=template,
            server_machine_id=library.machine_identifier,
            headers={"X-Webhook-Token": TOKEN},
            timeout=30,
        )


def deliver(delivery: Delivery, gateway: int, base: str) -> Delivery:
    delivery.gateway = gateway
    try:
        answer = delivery.send(base)
    except httpx.HTTPError:  # refused, reset or timed out: the sender saw no answer
        return delivery
    delivery.status = answer.status_code
    if answer.is_success:
        delivery.row_id = answer.json()["id"]
    return delivery


# ----------------------------------------------------------------------------------- reading the stack


def prefect(api_url: str, read: Callable[[PrefectClient], Any]) -> Any:
    async def call() -> Any:
        async with PrefectClient(api_url) as client:
            return await read(client)

    return asyncio.run(call())


def all_runs(api_url: str) -> list[FlowRun]:
    async def read(client: PrefectClient) -> list[FlowRun]:
        found: list[FlowRun] = []
        while len(page := await client.read_flow_runs(limit=200, offset=len(found))) == 200:
            found += page
        return found + page

    return prefect(api_url, read)


def batch_runs(api_url: str) -> dict[str, FlowRun]:
    """The runs the dispatcher created (not the deployments' scheduled ones), by id."""
    return {str(r.id): r for r in all_runs(api_url) if (r.idempotency_key or "").startswith(BATCH_KEY)}


def worker_name(log: Path) -> str | None:
    found = WORKER_NAME.search(log.read_text(errors="replace")) if log.exists() else None
    return found.group(1) if found else None


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


def settled(engine: Engine, api_url: str) -> bool:
    """Nothing waiting, no open batch, every accepted delivery dispatched, every batch's run final."""
    with engine.connect() as conn:
        waiting = conn.execute(
            select(webhook_requests.c.id).where(webhook_requests.c.batch_id.is_(None))
        ).first()
        open_batch = conn.execute(
            select(dispatch_batches.c.id).where(dispatch_batches.c.finished_at.is_(None))
        ).first()
        undispatched = conn.execute(
            select(webhook_log.c.id).where(
                webhook_log.c.processed.is_(False), webhook_log.c.http_status.between(200, 299)
            )
        ).first()
    if waiting or open_batch or undispatched:
        return False
    return all(r.state is not None and r.state.is_final() for r in batch_runs(api_url).values())


# ------------------------------------------------------------------------------------------------ the test


@pytest.mark.timeout(900)  # its waits are bounded one by one (DEADLINE); a loaded machine may need several
def test_two_gateways_and_two_workers_lose_and_double_nothing_when_one_of_each_dies_mid_burst(
    supabase: SupabaseLike,
    demo_services: tuple[DemoWorld, str],
    compose_postgres: str,
    tmp_path: Path,
) -> None:
    world, services_url = demo_services
    ours = supabase.pooled(supabase.create_database(owner=SERVICE_OWNER), SERVICE_OWNER)
    variables = {
        **COMPOSE_PASSWORDS,
        "SMARTPLEX_WEBHOOK_TOKEN": TOKEN,
        # deploy/.env's SMARTPLEX_DATABASE_URL: the Supabase-like transaction pooler (6543's role), TLS
        "SMARTPLEX_DATABASE_URL": ours.replace("postgresql+psycopg://", "postgresql://"),
        **{f"SMARTPLEX_{s}_QUIET_SECONDS": "1" for s in ("PLEX", "TAUTULLI", "SONARR", "RADARR")},
        **{f"SMARTPLEX_{s}_MAX_WAIT_SECONDS": "5" for s in ("PLEX", "TAUTULLI", "SONARR", "RADARR")},
        "SMARTPLEX_PLEX_SCAN_GRACE_SECONDS": "3",
        "SMARTPLEX_DISPATCH_POLL_SECONDS": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        **service_env(services_url),
    }
    prefect_port = free_port()
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    stack = Topology(
        tmp_path,
        variables,
        addresses={
            "postgres:5432": f"127.0.0.1:{make_url(compose_postgres).port}",
            "prefect-server:4200": f"127.0.0.1:{prefect_port}",
        },
    )
    engine = make_engine(
        Settings(database_url=variables["SMARTPLEX_DATABASE_URL"], _env_file=None).sqlalchemy_url
    )
    orphans: list[int] = []  # flow-run processes of the killed worker, stopped at the end
    try:
        stack.start("prefect-server", ports={4200: prefect_port}, timeout=DEADLINE)
        stack.run("migrate")
        stack.run("prefect-deploy")
        workers = [stack.start("worker", n, ports={8080: free_port()}) for n in (0, 1)]
        gateway_ports = [free_port(), free_port()]
        gateways = [stack.start("gateway", n, ports={8000: gateway_ports[n]}) for n in (0, 1)]
        bases = [f"http://127.0.0.1:{port}" for port in gateway_ports]
        logs = [tmp_path / f"worker-{n}.log" for n in (0, 1)]
        senders = Senders(world)
        sent: list[Delivery] = []

        # First waves, until each worker has run something: both are live members of the pool before the kill.
        def runs_by_worker() -> Counter[str]:
            return Counter(r.labels.get(WORKER_LABEL) for r in batch_runs(api_url).values())

        names: list[str | None] = [None, None]
        with ThreadPoolExecutor(8) as pool:
            for _ in range(4):
                wave = [senders.next() for _ in range(12)]
                sent += pool.map(lambda d: deliver(d[1], d[0] % 2, bases[d[0] % 2]), enumerate(wave))
                wait_for(lambda: settled(engine, api_url), DEADLINE, "the first wave served")
                names = [worker_name(log) for log in logs]
                if all(names) and all(runs_by_worker()[name] for name in names):
                    break
        assert all(names), names
        before_kill = runs_by_worker()
        assert all(before_kill[name] for name in names), (names, before_kill)

        # The burst, paced like real senders, which never wait for each other.
        gateway_dead, worker_dead = threading.Event(), threading.Event()
        burst_started = len(sent)
        made_before = senders.made

        def burst() -> None:
            with ThreadPoolExecutor(8) as pool:
                futures = []
                after_kill = 0
                for n in range(MAX_DELIVERIES):
                    if worker_dead.is_set():
                        after_kill += 1
                        if after_kill > AFTER_WORKER_KILL:
                            break
                    target = 0 if gateway_dead.is_set() else n % 2
                    futures.append(pool.submit(deliver, senders.next(), target, bases[target]))
                    time.sleep(PACE)
                sent.extend(f.result() for f in futures)

        sender = threading.Thread(target=burst)
        sender.start()
        try:
            wait_for(lambda: senders.made - made_before >= BEFORE_GATEWAY_KILL, 60, "the burst", 0.05)
            os.kill(gateways[1].pid, signal.SIGKILL)  # only a process this test started, by its pid
            gateway_dead.set()
            killed, in_progress = kill_a_worker_mid_run(workers, names, api_url, orphans)
            worker_dead.set()
        finally:
            worker_dead.set()
            sender.join(MAX_DELIVERIES * PACE + 120)
        assert not sender.is_alive()
        gateways[1].wait(10)
        assert gateways[1].returncode == -signal.SIGKILL
        assert workers[killed].poll() == -signal.SIGKILL

        wait_for(lambda: settled(engine, api_url), DEADLINE, "every delivery served")
        runs = batch_runs(api_url)
        report = check(engine, runs, sent, senders)
        survivor = names[1 - killed]
        by_worker = Counter(r.labels.get(WORKER_LABEL) for r in runs.values())
        assert set(by_worker) == set(names), by_worker  # every run was taken by one of the two workers
        assert by_worker[survivor] > before_kill[survivor]  # the survivor went on taking runs
        print(
            f"\ntopology: {len(sent)} deliveries ({len(sent) - burst_started} in the burst), {report}; "
            f"runs by worker {dict(by_worker)} ({dict(before_kill)} before the kill); "
            f"worker {killed} killed with its runs in states {in_progress}; crashed: "
            f"{[(r.name, r.state.message if r.state else None) for r in runs.values() if r.state_type is StateType.CRASHED]}"
        )
    finally:
        stack.close()
        stop_pids(orphans)
        engine.dispose()


def kill_a_worker_mid_run(
    workers: list[Any], names: list[str | None], api_url: str, orphans: list[int]
) -> tuple[int, dict[str | None, int]]:
    """SIGKILL a worker at a moment when each run it has taken is Running in a live process of its own: the
    worker is frozen first (SIGSTOP), so that it takes no run between the look and the kill. A run it took
    that is still Pending (its process not started, or started but not yet in the flow engine) was seen
    left Pending for good when the worker died: zombie-run detection's case, not this test's. A Pending run not labelled yet could be
    anyone's, so it makes us look again too. Returns the worker's index and its unfinished runs by state."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for index in (1, 0):
            pid = workers[index].pid
            if not descendants(pid):
                continue
            os.kill(pid, signal.SIGSTOP)
            time.sleep(1.0)  # what it sent before the freeze has reached the server
            children = descendants(pid)
            unfinished = [r for r in all_runs(api_url) if r.state and not r.state.is_final()]
            its_runs = [  # a Scheduled one (back from AwaitingConcurrencySlot) is any worker's again
                r
                for r in unfinished
                if r.labels.get(WORKER_LABEL) == names[index]
                and r.state_type in (StateType.PENDING, StateType.RUNNING)
            ]
            started = [r for r in its_runs if started_in(r, children)]
            running = [r for r in started if r.state_type is StateType.RUNNING]
            unlabelled = [
                r for r in unfinished if r.state_type is StateType.PENDING and WORKER_LABEL not in r.labels
            ]
            if running and len(running) == len(its_runs) and not unlabelled:
                orphans.extend(children)
                os.kill(pid, signal.SIGKILL)
                workers[index].wait(10)
                return index, dict(Counter(r.state_name for r in its_runs))
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.3)
    raise TimeoutError("no moment when every run a worker had taken was Running in a live process")


def started_in(run: FlowRun, processes: list[int]) -> bool:
    """The run's process (its `infrastructure_pid`, which the worker sets once the process is up) is alive."""
    pid = (run.infrastructure_pid or "").rsplit(":", 1)[-1]
    return pid.isdigit() and int(pid) in processes


def check(engine: Engine, runs: dict[str, FlowRun], sent: list[Delivery], senders: Senders) -> str:
    """The promises, on the final state; returns the figures."""
    with engine.connect() as conn:
        rows = conn.execute(select(webhook_log)).mappings().all()
        requests = conn.execute(select(webhook_requests)).mappings().all()
        batches = {b["id"]: b for b in conn.execute(select(dispatch_batches)).mappings()}
        links = conn.execute(select(batch_requests)).mappings().all()
        stored_keys = set(conn.execute(select(media_items.c.plex_id)).scalars())
        stored_plays = set(conn.execute(select(watch_history.c.tautulli_row_id)).scalars())
        served = queue.runs_of(conn, [row["id"] for row in rows])

    by_marker: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if isinstance(row["payload"], dict) and "marker" in row["payload"]:
            by_marker[row["payload"]["marker"]].append(row)
    accepted = [d for d in sent if d.status is not None and 200 <= d.status < 300]
    answered_otherwise = [d for d in sent if d.status is not None and not 200 <= d.status < 300]
    unanswered = [d for d in sent if d.status is None]
    for delivery in accepted:  # recorded once, as what the answer said
        assert [str(r["id"]) for r in by_marker[delivery.marker]] == [delivery.row_id], delivery
        assert by_marker[delivery.marker][0]["http_status"] == delivery.status
    for delivery in answered_otherwise:  # nothing refused counts as accepted
        assert all(not 200 <= r["http_status"] < 300 for r in by_marker[delivery.marker]), delivery
    for delivery in unanswered:  # no answer (the gateway died with it): recorded at most once
        assert len(by_marker[delivery.marker]) <= 1, delivery
        assert delivery.gateway == 1, delivery  # only the killed gateway left senders without an answer
    assert all(d.status == 202 for d in sent if d.gateway == 0), Counter(
        d.status for d in sent if d.gateway == 0
    )
    assert len(accepted) > len(sent) * 0.8, Counter(d.status for d in sent)
    recorded = {r["id"] for rs in by_marker.values() for r in rs if 200 <= r["http_status"] < 300}
    assert all(r["processed"] and served.get(r["id"]) for r in rows if r["id"] in recorded)

    # Every request in exactly one completed batch; any other batch that took it crashed, and came before.
    assert {r["webhook_id"] for r in requests} == recorded
    batches_of: dict[int, list[Any]] = defaultdict(list)
    for link in links:
        batches_of[link["request_id"]].append(batches[link["batch_id"]])
    for request in requests:
        taken = sorted(batches_of[request["id"]], key=lambda b: b["created_at"])
        assert request["dispatches"] == len(taken) >= 1, request
        assert [b["state"] for b in taken].count("COMPLETED") == 1, (request, taken)
        assert taken[-1]["state"] == "COMPLETED", (request, taken)
        assert all(b["state"] == "CRASHED" for b in taken[:-1]), (request, taken)
        assert request["batch_id"] == taken[-1]["id"]

    # Every batch closed, with one run of its own, which Prefect holds in the state the batch says.
    assert all(b["finished_at"] is not None for b in batches.values())
    run_ids = [b["flow_run_id"] for b in batches.values()]
    assert None not in run_ids and len(set(run_ids)) == len(run_ids)
    assert set(run_ids) == set(runs)  # and Prefect has no run the dispatcher did not ask for
    for batch in batches.values():
        run = runs[batch["flow_run_id"]]
        assert run.state_type is not None and run.state_type.value == batch["state"], (batch, run.state)
        assert run.state_type in (StateType.COMPLETED, StateType.CRASHED), (batch, run.state)

    # The data landed: every new movie Plex announced, every play Tautulli stopped.
    movies = {key for marker, key in senders.rating_keys.items() if by_marker[marker]}
    plays = {row_id for marker, row_id in senders.play_ids.items() if by_marker[marker]}
    assert movies <= stored_keys, movies - stored_keys
    assert plays <= stored_plays, plays - stored_plays
    crashed = sum(b["state"] == "CRASHED" for b in batches.values())
    return (
        f"{len(accepted)} answered 2xx and recorded once, {len(answered_otherwise)} answered otherwise, "
        f"{len(unanswered)} unanswered ({sum(bool(by_marker[d.marker]) for d in unanswered)} of them recorded); "
        f"{len(requests)} requests in {len(batches)} batches, {crashed} crashed batch(es) redone, "
        "0 lost, 0 doubled"
    )
