"""PostgreSQL down under a running gateway: every delivery meanwhile gets 503 with Retry-After (never a 2xx
without a row), `/healthz` says so, and the gateway records again as soon as the server is back, without a
restart. A real cluster of its own, stopped and started with pg_ctl; the gateway served by uvicorn.
(The same for a locked SQLite file, under `make run`: tests/test_supervisor.py.)"""

from __future__ import annotations

import subprocess
import time

import httpx
from sqlalchemy import select

from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine
from smartplex_sync.store.tables import webhook_log
from tests.support.factories import owner_and_server
from tests.support.postgres import _as_cluster_owner, pg_tool, postgres_cluster
from webhook_gateway.app import create_app


def pg_ctl(data_dir: str, *args: str) -> None:
    subprocess.run(
        _as_cluster_owner([pg_tool("pg_ctl"), "-D", data_dir, *args]), check=True, capture_output=True
    )


def stop_post(url: str, marker: str) -> httpx.Response:
    payload = {"event": "playback.stop", "rating_key": "7", "user": "outage-test", "marker": marker}
    return httpx.post(f"{url}/api/webhooks/tautulli", json=payload, timeout=60)


def test_postgresql_down_gets_503_with_retry_after_then_recovers_without_a_restart() -> None:
    with postgres_cluster() as url:
        engine = make_engine(url)
        migrate(engine)
        _, server_id = owner_and_server(engine)  # whose plays the deliveries sync
        with engine.connect() as conn:
            data_dir, port, sockets = (
                conn.exec_driver_sql(f"SHOW {name}").scalar()
                for name in ("data_directory", "port", "unix_socket_directories")
            )
        engine.dispose()
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        app = create_app(
            Settings(_env_file=None, database_url=url, database_wait_seconds=2), background=False
        )
        with serve_in_thread(app) as gateway:
            before = stop_post(gateway, "before")
            assert before.status_code == 202, before.text
            assert list(before.json()["sync_requests"][0]["parameters"]["servers"]) == [str(server_id)]
            pg_ctl(data_dir, "-m", "immediate", "stop")
            try:
                health = httpx.get(f"{gateway}/healthz", timeout=60)
                assert health.status_code == 503 and health.json()["status"] == "unavailable", health.text
                answers = [stop_post(gateway, f"down-{i}") for i in range(3)]
                for answer in answers:
                    assert answer.status_code == 503, answer.text
                    assert answer.headers["retry-after"] == "5"
                    assert answer.json()["error"] == "unavailable" and answer.json()["id"] is None
                    assert "the delivery was not kept" in answer.json()["detail"]
                status = httpx.get(f"{gateway}/api/webhooks/status", timeout=60)  # an admin read: 503 too
                assert status.status_code == 503 and status.json()["error"] == "unavailable"
            finally:
                pg_ctl(data_dir, "-o", options, "-l", f"{data_dir}/../pg.log", "-w", "start")
            deadline = time.monotonic() + 60
            while httpx.get(f"{gateway}/healthz", timeout=60).status_code != 200:
                assert time.monotonic() < deadline, "gateway not healthy after the database came back"
                time.sleep(0.5)
            assert stop_post(gateway, "after").status_code == 202
        engine = make_engine(url)
        with engine.connect() as conn:
            payloads = (
                conn.execute(select(webhook_log.c.payload).order_by(webhook_log.c.received_at))
                .scalars()
                .all()
            )
        engine.dispose()
        assert [p["marker"] for p in payloads] == ["before", "after"]  # a 503 leaves no row
