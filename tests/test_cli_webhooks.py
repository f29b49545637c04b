"""`smartplex-sync webhooks ls | show | replay` against a real database (both backends), through Typer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from sqlalchemy import Engine, func, select, update
from typer.testing import CliRunner

from deployments.cli import app, parse_since
from simulators.serving import serve_in_thread
from smartplex_sync.requests import RadarrScope, SyncRequest
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import get_engine, queue, webhooks
from smartplex_sync.store.tables import webhook_log
from tests.conftest import both_backends
from tests.support.factories import add_server, owner_and_server
from webhook_gateway.app import create_app

FIXTURES = Path(__file__).parent / "fixtures"
RADARR_DOWNLOAD = json.loads((FIXTURES / "radarr" / "download.json").read_text())


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    """The CLI pointed at the test database, with secrets configured that must never be printed."""
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
    monkeypatch.setenv("SMARTPLEX_TAUTULLI_API_KEY", "tautulli-key-Lm40q")
    monkeypatch.setenv("SMARTPLEX_WEBHOOK_TOKEN", "shared-door-Hh55c")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()
    get_engine.cache_clear()


@pytest.fixture
def owner(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """A user with one Plex server: (user id, server id)."""
    return owner_and_server(engine)


def record(engine: Engine, source: str, payload: Any, **fields: Any) -> uuid.UUID:
    values: dict[str, Any] = {"event_type": "Download", "action": "radarr-sync", **fields}
    return webhooks.record(engine, source=source, payload=payload, **values)


def row(engine: Engine, row_id: uuid.UUID | str) -> dict[str, Any]:
    """A delivery, with its queued requests (`sync_requests`)."""
    row_id = uuid.UUID(str(row_id))
    with engine.connect() as conn:
        found = conn.execute(select(webhook_log).where(webhook_log.c.id == row_id)).one()._asdict()
        return {**found, "sync_requests": queue.requests_of(conn, row_id)}


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(webhook_log)).scalar_one()


def renumber(engine: Engine, row_id: uuid.UUID, new_id: str) -> uuid.UUID:
    """Give a delivery (without queued requests) an id of our choosing, to make prefixes collide."""
    with engine.begin() as conn:
        conn.execute(update(webhook_log).where(webhook_log.c.id == row_id).values(id=uuid.UUID(new_id)))
    return uuid.UUID(new_id)


def new_webhook(output: str) -> uuid.UUID:
    """The id of the delivery a replay recorded, from `webhook <old> → webhook <new>: ...`."""
    return uuid.UUID(output.split("→ webhook ")[1].split(":")[0].split(",")[0])


def invoke(cli: CliRunner, *args: str) -> Any:
    return cli.invoke(app, ["webhooks", *args], catch_exceptions=False)


def test_since_reads_durations_and_iso_dates() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("2026-12-01T08:00+01:00", now) == datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    with pytest.raises(typer.BadParameter):
        parse_since("yesterday", now)


@both_backends
def test_ls_lists_newest_first_and_filters(
    cli: CliRunner, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=3)
    old = record(
        engine,
        "plex",
        {"event": "media.play"},
        event_type="media.play",
        action="ignored",
        received_at=long_ago,
    )
    ok = record(
        engine,
        "radarr",
        RADARR_DOWNLOAD,
        requests=[SyncRequest(RadarrScope()).on([owner[1]])],
        user_id=owner[0],
    )
    bad = record(
        engine,
        "sonarr",
        {"raw": "{"},
        action="rejected",
        http_status=400,
        error_message="body is not valid JSON",
    )
    listed = invoke(cli, "ls")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:3] == ["id", "received", "(UTC)"]
    # Ids are shown by their first 8 characters, which `show` and `replay` take.
    assert [line.split()[0] for line in lines[1:]] == [str(bad)[:8], str(ok)[:8], str(old)[:8]]
    assert "rejected" in lines[1] and "body is not valid JSON" in lines[1]
    assert "pending" in lines[2]
    assert [line.split()[0] for line in invoke(cli, "ls", "--failed").output.splitlines()[1:]] == [
        str(bad)[:8]
    ]
    assert [line.split()[0] for line in invoke(cli, "ls", "--source", "plex").output.splitlines()[1:]] == [
        str(old)[:8]
    ]
    assert str(old)[:8] not in [
        line.split()[0] for line in invoke(cli, "ls", "--since", "1d").output.splitlines()
    ]
    assert invoke(cli, "ls", "--source", "overseerr").output.strip() == "no deliveries match"


@both_backends
def test_show_prints_the_delivery_and_never_a_secret(cli: CliRunner, engine: Engine) -> None:
    payload = {
        "event": "playback.stop",
        "rating_key": "91544",
        "poster": "http://plex.lan:32400/library/metadata/91544/thumb?X-Plex-Token=plex-token-Qr55w",
        "apikey": "tautulli-key-Lm40q",
        "note": "sent with tautulli-key-Lm40q and shared-door-Hh55c",
    }
    row_id = record(engine, "tautulli", payload, event_type="playback.stop", action="tautulli-sync")
    shown = invoke(cli, "show", str(row_id)[:8])
    assert shown.exit_code == 0, shown.output
    assert invoke(cli, "show", str(row_id)).output == shown.output
    for secret in ("plex-token-Qr55w", "tautulli-key-Lm40q", "shared-door-Hh55c"):
        assert secret not in shown.output
    assert "X-Plex-Token=[redacted]" in shown.output
    assert '"apikey": "[redacted]"' in shown.output
    assert '"rating_key": "91544"' in shown.output
    assert f"id:                {row_id}" in shown.output
    assert "flow_run_ids:" in shown.output
    assert invoke(cli, "show", str(uuid.uuid4())).exit_code == 1


@both_backends
def test_an_id_is_taken_whole_or_by_a_unique_prefix_of_at_least_4_characters(
    cli: CliRunner, engine: Engine
) -> None:
    first = renumber(
        engine, record(engine, "radarr", {"eventType": "Test"}), "abcd1234-0000-4000-8000-000000000001"
    )
    second = renumber(
        engine, record(engine, "radarr", {"eventType": "Test"}), "abcd5678-0000-4000-8000-000000000002"
    )
    for given, found in (("abcd1", first), ("ABCD5", second), ("abcd1234", first), (str(second), second)):
        shown = invoke(cli, "show", given)
        assert shown.exit_code == 0, (given, shown.output)
        assert f"id:                {found}" in shown.output
    for given in ("abcd", "abc", "abcd9", "zzzz1234", "999", str(uuid.uuid4())):  # ambiguous, short, none
        refused = invoke(cli, "show", given)
        assert refused.exit_code == 1, given
        assert f"no webhook {given}" in refused.output
        assert invoke(cli, "replay", given).exit_code == 1
    assert count(engine) == 2  # nothing was replayed


@both_backends
def test_replay_records_a_new_delivery_without_a_gateway(
    cli: CliRunner, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    original = record(
        engine,
        "radarr",
        RADARR_DOWNLOAD,
        action="rejected",
        http_status=422,
        error_message="old bug",
        user_id=owner[0],
    )
    replayed = invoke(cli, "replay", str(original)[:8])
    assert replayed.exit_code == 0, replayed.output
    new = row(engine, new_webhook(replayed.output))
    assert (new["source"], new["payload"], new["processed"], new["http_status"]) == (
        "radarr",
        RADARR_DOWNLOAD,
        False,  # waiting for a gateway's dispatcher
        202,
    )
    # Attributed again, to the user it was attributed to: their one server.
    assert (new["user_id"], new["server_id"]) == owner
    assert {r["deployment"] for r in new["sync_requests"]} == {"plex-library-sync", "radarr-sync"}
    assert all(list(r["parameters"]["servers"]) == [str(owner[1])] for r in new["sync_requests"])
    assert f"replay of webhook {original}" in replayed.output


@both_backends
def test_a_replay_that_still_cannot_be_attributed_is_recorded_rejected(
    cli: CliRunner, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    with engine.begin() as conn:
        add_server(conn, owner[0], name="Second", machine_id="machine-2")
    plex_new = {"event": "library.new", "Metadata": {"librarySectionID": 1}}  # names no server; she has two
    original = record(
        engine,
        "plex",
        plex_new,
        event_type="library.new",
        action="rejected",
        http_status=422,
        user_id=owner[0],
    )
    replayed = invoke(cli, "replay", str(original))
    assert replayed.exit_code == 1
    assert "rejected (422)" in replayed.output and "2 Plex servers" in replayed.output
    new = row(engine, new_webhook(replayed.output))
    assert (new["action"], new["http_status"], new["user_id"], new["sync_requests"]) == (
        "rejected",
        422,
        owner[0],
        [],
    )


def test_the_cli_and_the_endpoint_replay_alike(
    cli: CliRunner, engine: Engine, database_url: str, owner: tuple[uuid.UUID, uuid.UUID]
) -> None:
    original = record(engine, "radarr", RADARR_DOWNLOAD, user_id=owner[0])
    by_cli = new_webhook(invoke(cli, "replay", str(original)).output)
    settings = Settings(database_url=database_url, _env_file=None)
    with serve_in_thread(create_app(settings, background=False)) as url:
        answer = httpx.post(f"{url}/api/webhooks/{original}/replay")
    assert answer.status_code == 202, answer.text
    by_endpoint = answer.json()["id"]
    fields = (
        "source",
        "event_type",
        "payload",
        "action",
        "http_status",
        "processed",
        "sync_requests",
        "user_id",
        "server_id",
    )
    assert {f: row(engine, by_cli)[f] for f in fields} == {f: row(engine, by_endpoint)[f] for f in fields}


@both_backends
def test_replay_failed_since(cli: CliRunner, engine: Engine, owner: tuple[uuid.UUID, uuid.UUID]) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=2)
    too_old = record(
        engine, "radarr", RADARR_DOWNLOAD, action="rejected", http_status=422, received_at=long_ago
    )
    fixed = record(
        engine, "radarr", RADARR_DOWNLOAD, action="rejected", http_status=422, error_message="old bug"
    )
    still_bad = record(engine, "radarr", {"eventType": "Download"}, action="rejected", http_status=422)
    refused = record(engine, "radarr", None, action="rejected", http_status=401, error_message="wrong token")
    unreadable = record(engine, "sonarr", {"raw": "{"}, action="rejected", http_status=400)
    run_failed = record(engine, "radarr", RADARR_DOWNLOAD)
    with engine.begin() as conn:
        conn.execute(
            webhook_log.update()
            .where(webhook_log.c.id == run_failed)
            .values(processed=True, error_message="flow run abc failed: Radarr answered 500")
        )
    dispatching = record(
        engine,
        "radarr",
        RADARR_DOWNLOAD,
        requests=[SyncRequest(RadarrScope()).on([owner[1]])],
        user_id=owner[0],
    )
    with engine.begin() as conn:
        conn.execute(
            webhook_log.update()
            .where(webhook_log.c.id == dispatching)
            .values(error_message="dispatch attempt 1 failed: connection refused")
        )
    done = record(engine, "radarr", RADARR_DOWNLOAD)  # not failed: left alone

    before = count(engine)
    result = invoke(cli, "replay", "--failed", "--since", "1h")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "2 replayed, 1 still rejected, 3 skipped"
    replayed_ids = {uuid.UUID(line.split()[1]) for line in result.output.splitlines() if "→ webhook" in line}
    assert replayed_ids == {fixed, run_failed}
    assert f"webhook {dispatching} skipped: still being dispatched" in result.output
    assert f"webhook {refused} not replayed (409)" in result.output
    assert f"webhook {unreadable} not replayed (409)" in result.output
    assert f"webhook {still_bad} not replayed (422)" in result.output
    assert str(too_old) not in {line.split()[1] for line in result.output.splitlines()[:-1]}
    assert str(done) not in {line.split()[1] for line in result.output.splitlines()[:-1]}
    assert count(engine) == before + 2  # a refused replay records nothing


def test_replay_asks_for_exactly_one_selection(cli: CliRunner) -> None:
    assert invoke(cli, "replay").exit_code == 2
    assert invoke(cli, "replay", "--failed").exit_code == 2  # --since is required: a bounded replay
    assert invoke(cli, "replay", "3", "--failed", "--since", "1h").exit_code == 2
    unknown = str(uuid.uuid4())
    missing = invoke(cli, "replay", unknown)
    assert missing.exit_code == 1 and f"no webhook {unknown}" in missing.output
