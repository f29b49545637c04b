"""`doctor` refuses a transaction pooler in front of Prefect's own database."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from deployments.cli import app
from deployments.operations import prefect_database_check
from deployments.processes import free_port
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine

SUPABASE_TRANSACTION_POOLER = (
    "postgresql+asyncpg://postgres.abcd:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres"
)
SUPABASE_SESSION_POOLER = (
    "postgresql+asyncpg://postgres.abcd:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres"
)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        (SUPABASE_TRANSACTION_POOLER, None, None),
        ("postgresql+asyncpg://prefect:pw@db.internal/prefect?pgbouncer=true", None, None),
        (None, "pgbouncer.internal", 6543),
    ],
)
def test_a_transaction_pooler_fails_with_the_fix(url: str | None, host: str | None, port: int | None) -> None:
    check = prefect_database_check(url, host, port)
    assert check is not None and check.ok is False
    assert "transaction pooler" in check.label and "5432" in (check.fix or "")
    assert "pw" not in check.line()


@pytest.mark.parametrize(
    "url",
    [
        SUPABASE_SESSION_POOLER,
        "postgresql+asyncpg://postgres:pw@db.abcd.supabase.co:5432/postgres",
        "postgresql+asyncpg://prefect:pw@127.0.0.1/prefect",
    ],
)
def test_direct_or_session_connections_pass(url: str) -> None:
    check = prefect_database_check(url)
    assert check is not None and check.ok is True and "pw" not in check.line()


def test_nothing_to_say_without_a_postgresql_url() -> None:
    assert prefect_database_check(None) is None
    assert prefect_database_check("sqlite+aiosqlite:////data/prefect.db") is None


def test_doctor_prints_it_and_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    settings = {
        PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api",
        PREFECT_API_DATABASE_CONNECTION_URL: SUPABASE_TRANSACTION_POOLER,
    }
    try:
        with temporary_settings(settings):
            result = CliRunner().invoke(app, ["doctor"])
    finally:
        get_settings.cache_clear()
        get_engine.cache_clear()
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "Prefect's database" in line]
    assert lines == [
        "✗ Prefect's database is reached through a transaction pooler "
        "(aws-0-eu-west-1.pooler.supabase.com:6543); Prefect's server needs prepared statements and "
        "LISTEN/NOTIFY, which it does not keep — fix: point PREFECT_API_DATABASE_CONNECTION_URL at the "
        "direct connection or the session pooler (5432)"
    ]
