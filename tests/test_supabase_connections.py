"""Both connection strings a Supabase project gives work as pasted: the direct / session pooler one on 5432
and the transaction pooler on 6543, TLS required. Against a real PostgreSQL that refuses TCP without TLS,
and a real PgBouncer in `pool_mode = transaction` before it (tests/support/supabase.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from deployments.processes import VENV_BIN, free_port, prefect_env, spawn, stop, wait_until_healthy
from smartplex_sync.migrate import discover, migrate
from smartplex_sync.models import Deployment
from smartplex_sync.requests import ScopedRequest, SyncRequest, TautulliScope
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine, queue, utcnow, webhooks
from smartplex_sync.store.history import upsert_plays
from smartplex_sync.store.media import PLEX_COLUMNS, SECTION_ID, UpsertResult, upsert_media_items
from smartplex_sync.store.queue import Batch
from smartplex_sync.store.tables import (
    dispatch_batches,
    media_items,
    watch_history,
    webhook_log,
    webhook_requests,
)
from tests.support.factories import add_integration, add_server, add_user, owner_and_server
from tests.support.prefect_stack import PrefectStack
from tests.support.supabase import SERVICE_OWNER, SupabaseLike

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CONNECTIONS = ("direct", "pooler")


def pasted(supabase: SupabaseLike, database: str, connection: str) -> str:
    """The URL as Supabase shows it: `postgresql://user@host:port/db?sslmode=require`, no driver."""
    url = (
        supabase.direct(database, SERVICE_OWNER)
        if connection == "direct"
        else supabase.pooled(database, SERVICE_OWNER)
    )
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def libpq(url: str) -> str:
    """The same URL for psycopg itself."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(params=CONNECTIONS)
def pasted_url(request: pytest.FixtureRequest, supabase: SupabaseLike) -> str:
    """A fresh database owned by a non-superuser (as Supabase's `postgres`), migrated through the URL."""
    url = pasted(supabase, supabase.create_database(owner=SERVICE_OWNER), request.param)
    engine = make_engine(Settings(database_url=url, _env_file=None).sqlalchemy_url)
    assert migrate(engine) == [m.version for m in discover()]
    engine.dispose()
    return url


@pytest.fixture
def pooled_engine(supabase: SupabaseLike) -> Iterator[Engine]:
    url = pasted(supabase, supabase.create_database(owner=SERVICE_OWNER), "pooler")
    engine = make_engine(Settings(database_url=url, _env_file=None).sqlalchemy_url)
    migrate(engine)
    yield engine
    engine.dispose()


SERVER = uuid.UUID("00000000-0000-4000-8000-000000000001")  # queued requests name a server; none is read here


def request_for(index: int) -> ScopedRequest:
    return SyncRequest(TautulliScope(rating_keys=[str(index)])).on([SERVER])


def batch_for(deployment: Deployment = Deployment.TAUTULLI_SYNC, lane: str = "") -> Batch:
    return Batch(uuid.uuid4().hex, deployment, lane, {}, "a batch", ["trigger:webhook"], utcnow())


def record_deliveries(engine: Engine, count: int) -> list[uuid.UUID]:
    return [
        webhooks.record(
            engine, source="tautulli", event_type="playback.stop", payload={"n": i}, action="tautulli-sync",
            requests=[request_for(i)],
        )
        for i in range(count)
    ]  # fmt: skip


# ------------------------------------------------------------------------------------- the pooler itself


def test_transaction_pooler_moves_a_client_between_server_connections(supabase: SupabaseLike) -> None:
    """Why the engine never prepares statements or keeps session state: through PgBouncer in transaction
    mode, one client's next transaction runs on another server connection when its last one is busy."""
    database = supabase.create_database()
    url = libpq(supabase.pooled(database))
    with (
        psycopg.connect(url, prepare_threshold=None) as client,
        psycopg.connect(url, prepare_threshold=0) as preparer,  # prepares every statement at once
        psycopg.connect(url) as other,
    ):
        with client.transaction():
            first_pid = client.execute("SELECT pg_backend_pid()").fetchone()
            client.execute("SET statement_timeout = '1234ms'")  # session state, on this server only
        with preparer.transaction():
            preparer.execute("SELECT %s::int", [1])  # prepared on the same, idle, server connection
        with other.transaction():
            other.execute("SELECT 1")  # now holds that server connection
            with client.transaction():
                assert client.execute("SELECT pg_backend_pid()").fetchone() != first_pid
                assert client.execute("SHOW statement_timeout").fetchone() == ("0",)
            with pytest.raises(psycopg.errors.InvalidSqlStatementName), preparer.transaction():
                preparer.execute("SELECT %s::int", [2])
            # The engine's setting: no prepared statement, so the same moves cost nothing.
            for value in range(10):
                with client.transaction():
                    assert client.execute("SELECT %s::int", [value]).fetchone() == (value,)


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_tls_is_required_and_used(supabase: SupabaseLike, connection: str) -> None:
    database = supabase.create_database()
    url = pasted(supabase, database, connection)
    with psycopg.connect(libpq(url)) as conn:
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match=r"SSL required|no encryption"):
        psycopg.connect(libpq(url.replace("sslmode=require", "sslmode=disable"))).close()


def test_pooler_query_parameters_from_guides_are_accepted(supabase: SupabaseLike) -> None:
    """Prisma's `pgbouncer=true` (in Supabase's guides for 6543) is no libpq option: dropped. Real libpq
    options (application_name, connect_timeout, sslmode) reach the server."""
    database = supabase.create_database()
    url = (
        pasted(supabase, database, "direct") + "&pgbouncer=true&application_name=smartplex&connect_timeout=10"
    )
    engine = make_engine(Settings(database_url=url, _env_file=None).sqlalchemy_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_setting('application_name')")).scalar() == "smartplex"
        assert conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar()
    engine.dispose()


# ------------------------------------------------------------------------------------------ the store


def test_deliveries_are_recorded_batched_and_marked_as_pasted(pasted_url: str) -> None:
    engine = make_engine(Settings(database_url=pasted_url, _env_file=None).sqlalchemy_url)
    ids = record_deliveries(engine, 12)  # more than psycopg's default prepare threshold (5)
    waiting = queue.pending_requests(engine)
    assert [r.webhook_id for r in waiting] == ids
    batch = batch_for()
    assert queue.claim(engine, batch, [r.id for r in waiting])
    queue.run_created(engine, batch.id, "run-x")
    summary = webhooks.summary(engine)
    assert (summary["total_webhooks"], summary["pending_dispatch"]) == (12, 0)
    assert queue.pending_requests(engine) == []
    queue.finish(
        engine, Batch(**{**batch.__dict__, "flow_run_id": "run-x"}), "COMPLETED", None, requeue=False
    )
    assert queue.open_batches(engine) == []
    engine.dispose()


def test_racing_claims_from_two_engines_take_each_request_once(supabase: SupabaseLike) -> None:
    """Two gateway replicas on the transaction pooler claim the same waiting requests at the same moment,
    round after round: one wins, the other's transaction rolls back and leaves nothing behind."""
    url = pasted(supabase, supabase.create_database(owner=SERVICE_OWNER), "pooler")
    database_url = Settings(database_url=url, _env_file=None).sqlalchemy_url
    setup = make_engine(database_url)
    migrate(setup)
    engines = [make_engine(database_url), make_engine(database_url)]
    for round_ in range(10):
        record_deliveries(setup, 5)
        waiting = [r.id for r in queue.pending_requests(setup)]
        results = race_claims(engines, waiting)
        assert sorted(results) == [False, True], round_
        for batch in queue.open_batches(setup):  # let the next round's requests have a batch
            queue.finish(setup, batch, "COMPLETED", None, requeue=False)
    with setup.connect() as conn:
        dispatches = conn.execute(select(webhook_requests.c.dispatches)).scalars().all()
        batches = conn.execute(select(func.count()).select_from(dispatch_batches)).scalar()
    for engine in [setup, *engines]:
        engine.dispose()
    assert dispatches == [1] * 50  # every request taken once, none twice
    assert batches == 10  # the losers' batches were rolled back


def race_claims(engines: list[Engine], waiting: list[int]) -> list[bool]:
    """Each engine claims `waiting` (in a lane of its own) from its own thread, all at the same moment."""
    start = threading.Barrier(len(engines))
    results: list[bool] = []

    def race(index: int) -> None:
        start.wait(timeout=30)
        results.append(queue.claim(engines[index], batch_for(lane=f"lane-{index}"), waiting))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_lost_claim_leaves_the_pooled_connection_clean(pooled_engine: Engine) -> None:
    """A claim that loses (unique violation inside its transaction) rolls back; the next statements on the
    same engine, through the same pooler, work: no aborted transaction is handed on."""
    record_deliveries(pooled_engine, 3)
    first, second, third = (r.id for r in queue.pending_requests(pooled_engine))
    assert queue.claim(pooled_engine, batch_for(), [first])
    for _ in range(10):  # more attempts than the engine's pool has connections
        assert not queue.claim(pooled_engine, batch_for(), [second])  # one open batch per deployment
    assert queue.claim(pooled_engine, batch_for(lane="other"), [third])
    assert [r.id for r in queue.pending_requests(pooled_engine)] == [second]
    assert len(queue.open_batches(pooled_engine)) == 2


def plex_row(server_id: uuid.UUID, plex_id: str, title: str) -> dict[str, object]:
    data: dict[str, object] = dict.fromkeys(PLEX_COLUMNS)
    data.update(server_id=server_id, plex_id=plex_id, type="movie", title=title, added_at=T0, genres=[],
                accessible=True, metadata={"plex_added_at": T0.isoformat(), SECTION_ID: 1})  # fmt: skip
    return data


def test_media_items_and_watch_history_upserts(pasted_url: str) -> None:
    engine = make_engine(Settings(database_url=pasted_url, _env_file=None).sqlalchemy_url)
    _, server = owner_and_server(engine)
    rows = [plex_row(server, str(k), f"Movie {k}") for k in range(20)]
    renamed = [*rows[:15], *(plex_row(server, str(r["plex_id"]), "Renamed") for r in rows[15:])]
    results = []
    for round_rows in (rows, rows, renamed):
        with engine.begin() as conn:
            results.append(upsert_media_items(conn, round_rows, batch_size=4))  # many small statements
    assert results == [UpsertResult(20, 0, 0), UpsertResult(0, 0, 20), UpsertResult(0, 5, 15)]
    plays = [
        {"tautulli_row_id": n, "rating_key": str(n % 20), "percent_complete": 95, "duration_seconds": 60,
         "paused_seconds": 0, "stopped_at": T0 + timedelta(minutes=n)}
        for n in range(40)
    ]  # fmt: skip
    for _ in range(2):
        with engine.begin() as conn:
            upsert_plays(conn, server, plays, batch_size=6)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(watch_history)).scalar() == 40
        assert conn.execute(select(func.count()).select_from(media_items)).scalar() == 20
    engine.dispose()


# ------------------------------------------------------------------------------------------ the gateway


def start_gateway(env: dict[str, str], log: Path) -> tuple[object, str]:
    port = free_port()
    env = {**env, "SMARTPLEX_GATEWAY_PORT": str(port)}
    process = spawn([str(VENV_BIN / "python"), "-m", "webhook_gateway"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/healthz", timeout=90, process=process)
    except BaseException:
        stop(process)
        raise
    return process, url


def test_two_gateways_over_http_with_their_database_behind_the_pooler(
    supabase: SupabaseLike, prefect_worker: PrefectStack, tmp_path: Path
) -> None:
    """Deliveries over HTTP to two gateway processes whose SMARTPLEX_DATABASE_URL is the transaction
    pooler URL as pasted: every one recorded once, each request taken by one batch of one replica, and
    every delivery served by a flow run (runs are executed, so bursts during a run get their follow-up)."""
    url = pasted(supabase, supabase.create_database(owner=SERVICE_OWNER), "pooler")
    engine = make_engine(Settings(database_url=url, _env_file=None).sqlalchemy_url)
    migrate(engine)
    with (
        engine.begin() as conn
    ):  # a SmartPlex user with a server and its Tautulli; deliveries carry the secret
        owner = add_user(conn, "owner@example.com", secret="pooled-secret")
        server = add_server(conn, owner, machine_id="pooled-machine")
        add_integration(conn, owner, "tautulli", server_id=server)
    env = prefect_env(prefect_worker.api_url)
    env.update(
        SMARTPLEX_DATABASE_URL=url,
        SMARTPLEX_DATA_DIR=str(tmp_path),
        SMARTPLEX_DISPATCH_POLL_SECONDS="1",
        SMARTPLEX_TAUTULLI_QUIET_SECONDS="2",
    )
    gateways = []
    try:
        for index in range(2):
            gateways.append(start_gateway(env, tmp_path / f"gateway-{index}.log"))
        sent = []
        for n in range(30):
            _, base = gateways[n % 2]
            answer = httpx.post(
                f"{base}/api/webhooks/tautulli?token=pooled-secret",
                json={"event": "playback.stop", "rating_key": str(1000 + n % 3), "user": "testuser"},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
            sent.append(answer.json()["id"])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and unprocessed(engine):
            time.sleep(1)
        with engine.connect() as conn:
            rows = conn.execute(
                select(webhook_log.c.id, webhook_log.c.processed, webhook_log.c.server_id)
            ).all()
            dispatches = conn.execute(select(webhook_requests.c.dispatches)).scalars().all()
            runs = queue.runs_of(conn, [r.id for r in rows])
        status = httpx.get(f"{gateways[0][1]}/api/webhooks/status", timeout=30).json()
    finally:
        for process, _ in gateways:
            stop(process)  # type: ignore[arg-type]
        engine.dispose()
    assert sorted(str(r.id) for r in rows) == sorted(sent)
    assert all(r.processed and runs.get(r.id) and r.server_id == server for r in rows), rows
    assert dispatches == [1] * 30  # no request was taken by both replicas, or twice
    assert len({run for served in runs.values() for run in served}) < 10  # merged: far fewer runs
    assert status["total_webhooks"] == 30


def unprocessed(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(webhook_log).where(webhook_log.c.processed.is_(False))
        ).scalar_one()
