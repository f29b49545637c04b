"""The operator commands' pure parts (formats, parameters, check verdicts) and `doctor` without Prefect."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from sqlalchemy import Engine
from typer.testing import CliRunner

from deployments.cli import app
from deployments.operations import (
    Check,
    LastWebhook,
    ScheduleView,
    check_database,
    check_services,
    deployment_check,
    format_interval,
    format_schedules,
    last_webhooks,
    sync_parameters,
    webhook_check,
    worker_check,
)
from deployments.processes import free_port
from smartplex_sync.models import Deployment, Source
from smartplex_sync.requests import PlexLibrarySync, PlexScope, SyncRequest
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import get_engine, make_engine, webhooks
from tests.conftest import both_backends
from tests.support.factories import add_integration, owner_and_server

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
        ScheduleView(
            "tautulli", "alice@example.com", "tautulli-sync", 4, True, True, 21600, True, NOW, None, None
        ),
        ScheduleView(
            "plex", "every server", "plex-library-sync", 12, True, True, 86400, False, None, NOW, "completed"
        ),
        ScheduleView(
            "sonarr", "bob@example.com", "sonarr-sync", 24, False, False, None, None, None, None, None
        ),
        ScheduleView(
            "radarr", "bob@example.com", "radarr-sync", 24, False, True, None, None, None, None, None
        ),
    ]
    lines = format_schedules(views)
    assert lines[0].split() == [
        "service",
        "owner",
        "deployment",
        "table",
        "prefect",
        "next",
        "run",
        "last",
        "run",
        "status",
    ]
    assert lines[1].split()[:7] == [
        "tautulli",
        "alice@example.com",
        "tautulli-sync",
        "4h",
        "on",
        "6h",
        "active",
    ]
    assert "2025-06-01 12:00 UTC" in lines[1]
    assert lines[2].split()[:8] == [
        "plex",
        "every",
        "server",
        "plex-library-sync",
        "12h",
        "on",
        "1d",
        "paused",
    ]
    assert lines[2].endswith("completed")
    assert "not deployed" in lines[3]
    assert "no schedule" in lines[4]  # deployed, but Prefect has no schedule under the row's slug
    column = lines[0].index("prefect")
    assert all(line[column - 2 : column] == "  " for line in lines)  # one column start for every row


def test_sync_parameters() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()

    def asked(service: Source, full: bool) -> dict[str, Any]:
        parameters = sync_parameters(service, full, [first, second])
        assert parameters["trigger"] == "manual"
        scopes = parameters["request"]["servers"]
        assert set(scopes) == {str(first), str(second)}
        assert scopes[str(first)] == scopes[str(second)]  # the same scope on every server asked for
        return scopes[str(first)]

    assert (
        sync_parameters(Source.PLEX, False, [first])["request"]
        == PlexLibrarySync.on([first], PlexScope()).to_json()
    )
    assert asked(Source.PLEX, full=True)["mode"] == "full" and asked(Source.PLEX, True)["all_sections"]
    assert asked(Source.PLEX, full=False)["mode"] == "incremental"
    assert asked(Source.TAUTULLI, full=False) == {"days": 7, "rating_keys": []}
    assert asked(Source.TAUTULLI, full=True) == {"days": 0, "rating_keys": []}  # all history
    assert asked(Source.OVERSEERR, full=True) == {"requests": None}  # everything Overseerr has
    assert asked(Source.SONARR, full=False) == {"series": None}  # always full


def test_check_lines_carry_the_fix_only_on_failure() -> None:
    assert Check(True, "fine", "never shown").line() == "✓ fine"
    assert Check(False, "broken", "do this").line() == "✗ broken — fix: do this"
    assert Check(None, "skipped").line() == "· skipped"


def test_deployment_checks() -> None:
    deployed = deployment_check(Deployment.SONARR_SYNC, True, 2)
    assert deployed.ok and "2 schedule(s)" in deployed.label
    # Its schedules come from sync_schedule rows (the mirror adds them): none yet is no failure.
    assert deployment_check(Deployment.PLEX_LIBRARY_SYNC, True, 0).ok
    missing = deployment_check(Deployment.PLEX_LIBRARY_SYNC, False, 0)
    assert not missing.ok and "prefect --no-prompt deploy --all" in (missing.fix or "")


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


def test_service_checks_report_an_unreachable_integration_with_a_fix(engine: Engine) -> None:
    """One check per server and integration row (none of them reachable here), each with what to fix."""
    user_id, _ = owner_and_server(engine, url=f"http://127.0.0.1:{free_port()}", name="Home")
    unreachable = f"http://127.0.0.1:{free_port()}"
    with engine.begin() as conn:
        add_integration(conn, user_id, "sonarr", url=unreachable, name="Sonarr 4K")
        add_integration(conn, user_id, "radarr", url=unreachable, api_key="", name="Radarr")
        add_integration(conn, user_id, "tautulli", url=unreachable, status="inactive")  # not checked
    checks = check_services(Settings(http_timeout_seconds=2, _env_file=None), engine)
    by_label = {check.label.split(":")[0]: check for check in checks}
    assert set(by_label) == {"plex 'Home'", "sonarr 'Sonarr 4K'", "radarr 'Radarr'"}
    assert all(check.ok is False for check in checks)
    assert unreachable in (by_label["sonarr 'Sonarr 4K'"].fix or "")
    missing_key = by_label["radarr 'Radarr'"]
    assert "has no api_key" in missing_key.label and "SmartPlex" in (missing_key.fix or "")


def test_service_checks_without_a_server(engine: Engine) -> None:
    [check] = check_services(Settings(_env_file=None), engine)
    assert check.ok is None and "SMARTPLEX_PLEX_URL" in check.label


def test_database_check(engine: Engine, tmp_path: Path) -> None:
    assert check_database(engine).ok
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    verdict = check_database(empty)
    assert verdict.ok is False and verdict.fix == "run `smartplex-sync migrate`"


@both_backends
def test_last_webhook_of_each_source(engine: Engine) -> None:
    _, server_id = owner_and_server(engine)
    for source, event, seconds, requests in (
        ("plex", "media.play", 0, []),
        ("plex", "library.new", 1, [SyncRequest(PlexScope(section_ids=[1])).on([server_id])]),
        ("sonarr", "Test", 0, []),
    ):
        webhooks.record(
            engine,
            source=source,
            event_type=event,
            payload={},
            action="ignored" if not requests else "plex-library-sync",
            requests=requests,
            received_at=NOW + timedelta(seconds=seconds),
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
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("SMARTPLEX_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    get_engine.cache_clear()


def doctor() -> list[str]:
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output
    return result.output.splitlines()


@pytest.mark.usefixtures("cli_env")
def test_doctor_fails_with_fixes_when_nothing_is_set_up() -> None:
    lines = doctor()
    assert lines[0].startswith("✗ database reachable, migrations pending")
    assert lines[0].endswith("fix: run `smartplex-sync migrate`")
    assert lines[1].startswith("✗ Prefect not reachable")
    assert not any("plex" in line.lower() and "server" in line for line in lines)  # no database to read
    migrated = CliRunner().invoke(app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    assert "settings: user" not in migrated.output  # no SMARTPLEX_PLEX_URL or service: no rows to make
    lines = doctor()
    assert lines[0].startswith("✓ database reachable and migrated (sqlite)")
    assert (
        "· no Plex server in SmartPlex's servers (set SMARTPLEX_PLEX_URL, or add one in SmartPlex)" in lines
    )
    assert "· webhooks from plex: none received yet" in lines


@pytest.mark.usefixtures("cli_env")
def test_a_command_leaves_the_environment_and_prefect_s_settings_as_it_found_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI points Prefect at the stack and reads `make run`'s demo.env for the command only."""
    stack_port = free_port()
    monkeypatch.setenv("SMARTPLEX_PREFECT_PORT", str(stack_port))
    (tmp_path / "demo.env").write_text("SMARTPLEX_PLEX_URL=http://127.0.0.1:9\n")
    environment, api_url = dict(os.environ), get_current_settings().api.url
    result = CliRunner().invoke(app, ["doctor"])
    assert "(demo mode: services from" in result.output
    assert f"Prefect not reachable at http://127.0.0.1:{stack_port}/api" in result.output  # the stack's
    assert dict(os.environ) == environment
    assert get_current_settings().api.url == api_url
