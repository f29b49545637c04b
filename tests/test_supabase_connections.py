"""Both connection strings a Supabase project gives work as pasted: the direct / session pooler one on 5432
and the transaction pooler on 6543, TLS required. Against a real PostgreSQL that refuses TCP without TLS,
and a real PgBouncer in `pool_mode = transaction` before it (tests/support/supabase.py)."""

from __future__ import annotations

import threading
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
from smartplex_sync.models import Deployment, SyncRequest
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine, webhooks
from smartplex_sync.store.history import upsert_plays
from smartplex_sync.store.media import PLEX_COLUMNS, UpsertResult, upsert_media_items
from smartplex_sync.store.tables import media_items, watch_history, webhook_log
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


def request_for(index: int) -> SyncRequest:
    return SyncRequest(Deployment.TAUTULLI_SYNC, {"rating_key": str(index)})


def record_deliveries(engine: Engine, count: int) -> list[int]:
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


def test_deliveries_are_recorded_claimed_and_marked_as_pasted(pasted_url: str) -> None:
    engine = make_engine(Settings(database_url=pasted_url, _env_file=None).sqlalchemy_url)
    ids = record_deliveries(engine, 12)  # more than psycopg's default prepare threshold (5)
    claimed = webhooks.claim_pending(engine, limit=100)
    assert [d.id for d in claimed] == ids
    for delivery in claimed:
        webhooks.mark_dispatched(engine, delivery.id, [{**delivery.requests[0], "flow_run_id": "run-x"}])
    summary = webhooks.summary(engine)
    assert (summary["total_webhooks"], summary["pending_dispatch"]) == (12, 0)
    assert webhooks.claim_pending(engine) == []
    engine.dispose()


def test_claims_from_two_engines_at_once_never_take_a_row_twice(supabase: SupabaseLike) -> None:
    """Two gateway replicas on the transaction pooler, claiming the same backlog at the same moment."""
    url = pasted(supabase, supabase.create_database(owner=SERVICE_OWNER), "pooler")
    database_url = Settings(database_url=url, _env_file=None).sqlalchemy_url
    setup = make_engine(database_url)
    migrate(setup)
    ids = record_deliveries(setup, 300)
    setup.dispose()
    engines = [make_engine(database_url), make_engine(database_url)]
    start = threading.Barrier(len(engines))
    taken: list[list[int]] = [[] for _ in engines]
    errors: list[BaseException] = []

    def claim_all(index: int) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(300):  # bounded: at most one row a round would still finish
                batch = webhooks.claim_pending(engines[index], limit=7)
                if not batch:
                    return
                taken[index].extend(d.id for d in batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for engine in engines:
        engine.dispose()
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(taken[0] + taken[1]) == ids  # every row once, none twice
    assert taken[0] and taken[1], "both engines got rows"


def test_claim_skips_rows_another_transaction_holds(pooled_engine: Engine) -> None:
    """FOR UPDATE SKIP LOCKED through the pooler: a claim does not wait for rows a replica has locked."""
    ids = record_deliveries(pooled_engine, 8)
    holder = make_engine(pooled_engine.url.render_as_string(hide_password=False))
    claimed: list[int] = []
    with holder.begin() as conn:
        conn.execute(select(webhook_log.c.id).where(webhook_log.c.id.in_(ids[:3])).with_for_update())
        claimer = threading.Thread(
            target=lambda: claimed.extend(d.id for d in webhooks.claim_pending(pooled_engine, limit=100))
        )
        claimer.start()
        claimer.join(timeout=60)
        assert not claimer.is_alive(), "claim_pending waited for the locked rows"
    holder.dispose()
    assert claimed == ids[3:]


def plex_row(rating_key: str, title: str) -> dict[str, object]:
    data: dict[str, object] = dict.fromkeys(PLEX_COLUMNS)
    data.update(server_id="srv", rating_key=rating_key, type="movie", title=title, section_id=1, added_at=T0)
    return data


def test_media_items_and_watch_history_upserts(pasted_url: str) -> None:
    engine = make_engine(Settings(database_url=pasted_url, _env_file=None).sqlalchemy_url)
    rows = [plex_row(str(k), f"Movie {k}") for k in range(20)]
    results = []
    for round_rows in (rows, rows, [*rows[:15], *(plex_row(r["rating_key"], "Renamed") for r in rows[15:])]):
        with engine.begin() as conn:
            results.append(upsert_media_items(conn, round_rows, batch_size=4))  # many small statements
    assert results == [UpsertResult(20, 0, 0), UpsertResult(0, 0, 20), UpsertResult(0, 5, 15)]
    plays = [
        {"tautulli_row_id": n, "server_id": "srv", "rating_key": str(n % 20), "percent_complete": 95,
         "duration_seconds": 60, "stopped_at": T0 + timedelta(minutes=n)}
        for n in range(40)
    ]  # fmt: skip
    for _ in range(2):
        with engine.begin() as conn:
            upsert_plays(conn, plays, batch_size=6)
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
    supabase: SupabaseLike, prefect_deployments: PrefectStack, tmp_path: Path
) -> None:
    """Deliveries over HTTP to two gateway processes whose SMARTPLEX_DATABASE_URL is the transaction
    pooler URL as pasted: every one recorded once, and each dispatched to Prefect by exactly one replica."""
    url = pasted(supabase, supabase.create_database(owner=SERVICE_OWNER), "pooler")
    engine = make_engine(Settings(database_url=url, _env_file=None).sqlalchemy_url)
    migrate(engine)
    env = prefect_env(prefect_deployments.api_url)
    env.update(
        SMARTPLEX_DATABASE_URL=url,
        SMARTPLEX_DATA_DIR=str(tmp_path),
        SMARTPLEX_DISPATCH_POLL_SECONDS="1",
        SMARTPLEX_COALESCE_SECONDS="30",
    )
    gateways = []
    try:
        for index in range(2):
            gateways.append(start_gateway(env, tmp_path / f"gateway-{index}.log"))
        sent = []
        for n in range(30):
            _, base = gateways[n % 2]
            answer = httpx.post(
                f"{base}/api/webhooks/tautulli",
                json={"event": "playback.stop", "rating_key": str(1000 + n % 3), "user": "testuser"},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
            sent.append(answer.json()["id"])
        deadline = datetime.now(UTC) + timedelta(seconds=120)
        while datetime.now(UTC) < deadline:
            with engine.connect() as conn:
                pending = conn.execute(
                    select(func.count()).select_from(webhook_log).where(webhook_log.c.processed.is_(False))
                ).scalar()
            if pending == 0:
                break
            threading.Event().wait(0.5)
        with engine.connect() as conn:
            rows = conn.execute(
                select(webhook_log.c.id, webhook_log.c.processed, webhook_log.c.flow_run_id,
                       webhook_log.c.dispatch_attempts)
            ).all()  # fmt: skip
        status = httpx.get(f"{gateways[0][1]}/api/webhooks/status", timeout=30).json()
    finally:
        for process, _ in gateways:
            stop(process)  # type: ignore[arg-type]
        engine.dispose()
    assert sorted(r.id for r in rows) == sorted(sent)
    assert all(r.processed and r.flow_run_id for r in rows), rows
    assert {r.dispatch_attempts for r in rows} == {1}  # no row was claimed by both replicas
    # One run per rating key and coalescing window (a burst straddling a window boundary costs two).
    assert 3 <= len({r.flow_run_id for r in rows}) <= 6
    assert status["total_webhooks"] == 30
