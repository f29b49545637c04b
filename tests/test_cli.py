"""The operator commands' pure parts (formats, parameters, check verdicts) and `doctor` without Prefect."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine
from typer.testing import CliRunner

from deployments.cli import app
from deployments.operations import (
    Check,
    LastWebhook,
    ScheduleView,
    check_database,
    check_service,
    deployment_check,
    format_interval,
    format_schedules,
    last_webhooks,
    sync_parameters,
    webhook_check,
    worker_check,
)
from deployments.processes import free_port
from flows.clients.sonarr import SonarrClient
from smartplex_sync.models import Deployment, Source
from smartplex_sync.requests import PlexLibrarySync
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import get_engine, make_engine
from smartplex_sync.store.tables import webhook_log
from tests.conftest import both_backends

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_intervals_read_naturally() -> None:
    assert [format_interval(s) for s in (43200, 86400, 5, 90, 1800, None)] == [
        "12h",
        "1d",
        "5s",
        "90s",
        "30m",
        "-",
    ]


def test_schedules_table_is_aligned_and_shows_both_sides() -> None:
    views = [
        ScheduleView("tautulli-sync", "tautulli", 4, True, True, 21600, True, NOW, None, None),
        ScheduleView("webhook-retention", None, None, None, True, 86400, False, None, NOW, "Completed"),
        ScheduleView("sonarr-sync", "sonarr", 24, False, False, None, None, None, None, None),
    ]
    lines = format_schedules(views)
    assert lines[0].split() == [
        "service",
        "deployment",
        "table",
        "prefect",
        "next",
        "run",
        "last",
        "run",
        "status",
    ]
    assert lines[1].split()[:6] == ["tautulli", "tautulli-sync", "4h", "on", "6h", "active"]
    assert "2025-06-01 12:00 UTC" in lines[1]
    assert lines[2].split()[:5] == ["-", "webhook-retention", "-", "1d", "paused"]
    assert lines[2].endswith("Completed")
    assert "not deployed" in lines[3]
    column = lines[0].index("prefect")
    assert all(line[column - 2 : column] == "  " for line in lines)  # one column start for every row


def test_sync_parameters() -> None:
    def asked(service: Source, full: bool) -> dict[str, Any]:
        return sync_parameters(service, full)["request"]

    assert asked(Source.PLEX, full=False) == PlexLibrarySync(mode="incremental").to_json()
    assert asked(Source.PLEX, full=True)["mode"] == "full" and asked(Source.PLEX, True)["all_sections"]
    assert asked(Source.TAUTULLI, full=False) == {"days": 7, "rating_keys": []}
    assert asked(Source.TAUTULLI, full=True) == {"days": 0, "rating_keys": []}  # all history
    assert asked(Source.OVERSEERR, full=True) == {"requests": None}  # everything Overseerr has


def test_check_lines_carry_the_fix_only_on_failure() -> None:
    assert Check(True, "fine", "never shown").line() == "✓ fine"
    assert Check(False, "broken", "do this").line() == "✗ broken — fix: do this"
    assert Check(None, "skipped").line() == "· skipped"


def test_deployment_checks() -> None:
    assert deployment_check(Deployment.SONARR_SYNC, True, 86400, False).ok
    missing = deployment_check(Deployment.PLEX_LIBRARY_SYNC, False, None, None)
    assert not missing.ok and "prefect --no-prompt deploy --all" in (missing.fix or "")
    assert deployment_check(Deployment.PLEX_LIBRARY_SYNC, True, None, None).ok is False


def test_worker_needs_a_recent_heartbeat() -> None:
    assert worker_check("smartplex", [NOW - timedelta(seconds=20)], NOW).ok
    stale = worker_check("smartplex", [NOW - timedelta(minutes=10), None], NOW)
    assert not stale.ok and "prefect worker start --pool smartplex" in (stale.fix or "")
    assert "work-pool create" in (worker_check("smartplex", None, NOW).fix or "")


def test_webhook_verdicts() -> None:
    def last(**overrides: object) -> LastWebhook:
        values: dict = dict(
            source="plex", event_type="library.new", received_at=NOW, processed=True, error_message=None
        )
        return LastWebhook(**{**values, **overrides})

    assert webhook_check(Source.PLEX, None, NOW).ok is None
    assert webhook_check(Source.PLEX, last(), NOW).ok
    assert webhook_check(Source.PLEX, last(processed=False), NOW + timedelta(seconds=30)).ok
    assert not webhook_check(Source.PLEX, last(processed=False), NOW + timedelta(hours=1)).ok
    failed = webhook_check(Source.PLEX, last(error_message="flow run failed: boom"), NOW)
    assert not failed.ok and "boom" in failed.label


def test_service_check_reports_an_unreachable_service_with_a_fix() -> None:
    settings = Settings(
        sonarr_url=f"http://127.0.0.1:{free_port()}", sonarr_api_key="k", http_timeout_seconds=2
    )
    check = check_service(Source.SONARR, settings, SonarrClient.from_settings)
    assert check.ok is False
    assert "SMARTPLEX_SONARR_URL" in (check.fix or "")
    missing_key = check_service(
        Source.SONARR, Settings(sonarr_url="http://127.0.0.1:1"), SonarrClient.from_settings
    )
    assert missing_key.ok is False and "SMARTPLEX_SONARR_API_KEY" in missing_key.label


def test_database_check(engine: Engine, tmp_path: Path) -> None:
    assert check_database(engine).ok
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    verdict = check_database(empty)
    assert verdict.ok is False and verdict.fix == "run `smartplex-sync migrate`"


@both_backends
def test_last_webhook_of_each_source(engine: Engine) -> None:
    for source, event, processed in (
        ("plex", "media.play", True),
        ("plex", "library.new", False),
        ("sonarr", "Test", True),
    ):
        with engine.begin() as conn:
            conn.execute(
                webhook_log.insert().values(
                    source=source,
                    event_type=event,
                    payload={},
                    received_at=NOW,
                    processed=processed,
                    action="ignored",
                    http_status=202,
                    sync_requests=[],
                )
            )
    found = last_webhooks(engine)
    assert {s: (w.event_type, w.processed) for s, w in found.items()} == {
        "plex": ("library.new", False),
        "sonarr": ("Test", True),
    }


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("PLEX", "TAUTULLI", "SONARR", "RADARR", "OVERSEERR"):
        monkeypatch.delenv(f"SMARTPLEX_{name}_URL", raising=False)
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    get_engine.cache_clear()


@pytest.mark.usefixtures("cli_env")
def test_doctor_fails_with_fixes_when_nothing_is_set_up() -> None:
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("✗ database reachable, migrations pending")
    assert lines[1].startswith("✗ Prefect not reachable")
    assert "· plex: not configured (SMARTPLEX_PLEX_URL unset), skipped" in lines
