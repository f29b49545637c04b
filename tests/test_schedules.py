"""The sync_schedule ↔ Prefect rule as pure logic (smartplex_sync/schedule_mirror.py), and the store side
of the mirror (smartplex_sync/store/schedules.py): the default rows, the compare-and-set write with our
schedule_mirror table, and the run history read from sync_events. Against a real Prefect server:
test_schedules_prefect.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from sqlalchemy import Engine, func, select, text, update

from deployments.processes import free_port
from smartplex_sync.models import SERVICES
from smartplex_sync.requests import TautulliSync
from smartplex_sync.schedule_mirror import (
    Decision,
    FieldDecision,
    describe,
    hours_from_seconds,
    merge_field,
    next_occurrence,
    reconcile,
    run_mirror_loop,
    schedule_parameters,
)
from smartplex_sync.store.events import Counts, finish_event, start_event
from smartplex_sync.store.schedules import (
    RunHistory,
    ScheduleRow,
    per_user,
    read_schedules,
    run_history,
    seed_defaults,
    write_mirror,
)
from smartplex_sync.store.tables import schedule_mirror, sync_schedule
from tests.conftest import both_backends
from tests.support.factories import add_server, add_user, owner_and_server

DEFAULTS = {"plex": (True, 12), "tautulli": (True, 6), "sonarr": (False, 24), "radarr": (False, 24),
            "overseerr": (False, 6)}  # fmt: skip
"""SmartPlex's seed rows (its migrations 005/006)."""


def row(enabled: bool, hours: int, synced: tuple[bool, int] | None) -> ScheduleRow:
    return ScheduleRow(
        id=uuid.UUID(int=1),
        user_id=uuid.UUID(int=2),
        service="tautulli",
        enabled=enabled,
        interval_hours=hours,
        synced_enabled=synced[0] if synced else None,
        synced_interval_hours=synced[1] if synced else None,
        next_run_at=None,
        last_run_at=None,
        last_status=None,
        last_error=None,
        run_count=0,
        mirrored_at=None,
    )


def test_the_default_schedules_are_smartplex_s_seed_rows() -> None:
    defaults = {s.source.value: (s.scheduled_by_default, s.default_interval_hours) for s in SERVICES.values()}
    assert defaults == DEFAULTS


def test_a_row_s_slug_names_it_for_its_life() -> None:
    assert row(True, 6, None).slug == f"sync-schedule-{uuid.UUID(int=1)}"


def test_hours_stay_inside_the_table_check() -> None:
    assert hours_from_seconds(10) == 1
    assert hours_from_seconds(4 * 3600) == 4
    assert hours_from_seconds(5400) == 2
    assert hours_from_seconds(365 * 86400) == 168


def test_only_prefect_changed_table_follows() -> None:
    decision = merge_field(6, 6, 4, prefer_table=False)
    assert (decision.value, decision.push, decision.conflict) == (4, False, False)


def test_only_table_changed_prefect_is_updated() -> None:
    decision = merge_field(4, 6, 6, prefer_table=False)
    assert (decision.value, decision.push, decision.conflict) == (4, True, False)


def test_conflict_prefect_wins_in_the_loop_and_the_table_wins_on_apply() -> None:
    loop = merge_field(4, 6, 8, prefer_table=False)
    apply = merge_field(4, 6, 8, prefer_table=True)
    assert (loop.value, loop.push, loop.conflict) == (8, False, True)
    assert (apply.value, apply.push, apply.conflict) == (4, True, True)


def test_both_changed_to_the_same_value_is_no_conflict() -> None:
    decision = merge_field(4, 6, 4, prefer_table=False)
    assert (decision.value, decision.push, decision.conflict) == (4, False, False)


def test_never_mirrored_prefect_wins_in_the_loop_and_apply_pushes_the_table() -> None:
    assert merge_field(True, None, False, prefer_table=False).value is False
    assert not merge_field(True, None, False, prefer_table=False).push
    assert merge_field(True, None, False, prefer_table=True).push


def test_cron_schedule_keeps_the_table_interval_unless_the_table_was_edited() -> None:
    assert merge_field(6, 6, None, prefer_table=False) == merge_field(6, 6, 6, prefer_table=False)
    edited = merge_field(4, 6, None, prefer_table=False)
    assert (edited.value, edited.push) == (4, True)


def test_fields_are_decided_independently() -> None:
    # The admin changed the interval in SQL while someone paused the schedule in the UI: both survive.
    decision = reconcile(row(True, 4, (True, 6)), prefect_enabled=False, prefect_hours=6, prefer_table=False)
    assert (decision.enabled.value, decision.enabled.push) == (False, False)
    assert (decision.interval_hours.value, decision.interval_hours.push) == (4, True)
    assert not decision.enabled.conflict and not decision.interval_hours.conflict


values = st.integers(1, 168)


@given(table=values, synced=values | st.none(), prefect=values | st.none(), prefer_table=st.booleans())
def test_after_a_mirror_both_sides_agree(
    table: int, synced: int | None, prefect: int | None, prefer_table: bool
) -> None:
    decision = merge_field(table, synced, prefect, prefer_table=prefer_table)
    prefect_after = decision.value if decision.push else prefect
    assert prefect_after in (decision.value, None)
    # A second mirror with nothing edited in between changes nothing.
    again = merge_field(decision.value, decision.value, prefect_after, prefer_table=prefer_table)
    assert (again.value, again.push, again.conflict) == (decision.value, False, False)


@given(table=values, synced=values, prefect=values)
def test_the_loop_never_undoes_a_change_made_in_prefect(table: int, synced: int, prefect: int) -> None:
    decision = merge_field(table, synced, prefect, prefer_table=False)
    if prefect != synced:
        assert decision.value == prefect and not decision.push


def test_describe_says_what_moves_where_and_which_conflicts_were_settled() -> None:
    edited = row(True, 4, (True, 6))
    loop = reconcile(edited, prefect_enabled=False, prefect_hours=8, prefer_table=False)
    assert describe(edited, loop) == (
        ["table ← prefect: enabled True → False", "table ← prefect: interval_hours 4 → 8"],
        ["interval_hours changed on both sides; prefect wins (8)"],
    )
    apply = reconcile(edited, prefect_enabled=True, prefect_hours=8, prefer_table=True)
    assert describe(edited, apply) == (
        ["prefect ← table: interval_hours = 4"],
        ["interval_hours changed on both sides; table wins (4)"],
    )
    in_sync = reconcile(row(True, 6, (True, 6)), prefect_enabled=True, prefect_hours=6, prefer_table=False)
    assert describe(row(True, 6, (True, 6)), in_sync) == ([], []) and not in_sync.push
    assert Decision(FieldDecision(True, push=True), FieldDecision(6)).push


def test_next_occurrence_is_the_first_tick_of_the_interval_after_now() -> None:
    anchor = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
    six = timedelta(hours=6)
    assert next_occurrence(anchor, six, anchor - timedelta(days=1)) == anchor  # not started yet
    assert next_occurrence(anchor, six, anchor) == anchor + six  # strictly after now
    assert next_occurrence(anchor, six, anchor + timedelta(hours=13)) == anchor + timedelta(hours=18)
    assert next_occurrence(anchor, six, anchor + timedelta(days=365, minutes=1)) == anchor + timedelta(
        days=365, hours=6
    )


@given(minutes=st.integers(0, 10_000_000), hours=st.integers(1, 168), behind=st.integers(-10_000, 10_000_000))
def test_next_occurrence_is_on_the_grid_and_within_one_interval(
    minutes: int, hours: int, behind: int
) -> None:
    anchor = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    interval = timedelta(hours=hours)
    now = anchor + timedelta(minutes=behind)
    found = next_occurrence(anchor, interval, now)
    assert (found - anchor) % interval == timedelta() and found >= anchor
    assert found > now or (now < anchor and found == anchor)
    assert found - now <= interval or now < anchor


def test_schedule_parameters_are_a_scheduled_run_of_the_row_s_servers() -> None:
    servers = [uuid.UUID(int=3), uuid.UUID(int=2)]
    parameters = schedule_parameters("tautulli", servers)
    assert parameters["trigger"] == "scheduled"
    request = TautulliSync.model_validate(parameters["request"])
    assert request == TautulliSync.scheduled(servers)
    assert list(request.servers or {}) == sorted(servers)  # in a stable order: no needless update
    assert schedule_parameters("tautulli", list(reversed(servers))) == parameters
    assert schedule_parameters("plex", servers)["request"]["servers"][str(servers[0])]["mode"] == "full"


# ------------------------------------------------------------------------------------------- the store


def _mirror_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(schedule_mirror)) or 0


@both_backends
def test_seed_defaults_adds_the_rows_of_every_user_who_owns_a_server(engine: Engine) -> None:
    assert per_user(engine)
    assert seed_defaults(engine) == 0  # nobody owns a server yet: no row
    with engine.begin() as conn:
        alice = add_user(conn, "alice@example.com")
        bob = add_user(conn, "bob@example.com")
        add_user(conn, "viewer@example.com")  # no server of their own: no schedule
        add_server(conn, alice, name="A1", machine_id="a1")
        add_server(conn, alice, name="A2", machine_id="a2")  # one row per user, not per server
        add_server(conn, bob, name="B", machine_id="b")
    assert seed_defaults(engine) == 10
    rows = read_schedules(engine)
    assert {(r.user_id, r.service): (r.enabled, r.interval_hours) for r in rows} == {
        (user, service): value for user in (alice, bob) for service, value in DEFAULTS.items()
    }
    assert all((r.run_count, r.synced_enabled, r.mirrored_at) == (0, None, None) for r in rows)
    assert seed_defaults(engine) == 0


@both_backends
def test_seed_defaults_leaves_existing_rows_alone_and_adds_only_the_missing(engine: Engine) -> None:
    owner, _ = owner_and_server(engine)
    seed_defaults(engine)
    with engine.begin() as conn:  # an admin's edits, and a row they deleted
        conn.execute(
            update(sync_schedule)
            .where(sync_schedule.c.user_id == owner, sync_schedule.c.service == "plex")
            .values(enabled=False, interval_hours=48)
        )
        conn.execute(text("DELETE FROM sync_schedule WHERE service = 'radarr'"))
    before = {r.service: r for r in read_schedules(engine)}
    assert seed_defaults(engine) == 1
    after = {r.service: r for r in read_schedules(engine)}
    assert (after["plex"].enabled, after["plex"].interval_hours) == (False, 48)
    assert all(after[s] == before[s] for s in before)
    assert (after["radarr"].enabled, after["radarr"].interval_hours) == (False, 24)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_seed_defaults_on_smartplex_s_global_table(database_url: str) -> None:
    """005's shape: one row per service (no user_id), for every server."""
    from smartplex_sync.store import make_engine

    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE sync_schedule")
        conn.exec_driver_sql(
            "CREATE TABLE sync_schedule (id CHAR(36) PRIMARY KEY, service TEXT NOT NULL UNIQUE, enabled BOOLEAN "
            "DEFAULT 1, interval_hours INTEGER NOT NULL DEFAULT 6, last_run_at DATETIME, next_run_at DATETIME, "
            "run_count INTEGER DEFAULT 0, last_status TEXT, last_error TEXT, created_at DATETIME, "
            "updated_at DATETIME)"
        )
    try:
        assert not per_user(engine)
        assert seed_defaults(engine) == 5  # servers or not: the table is everyone's
        rows = read_schedules(engine)
        assert {r.service: (r.user_id, r.enabled, r.interval_hours) for r in rows} == {
            service: (None, *value) for service, value in DEFAULTS.items()
        }
        assert seed_defaults(engine) == 0
        assert write_mirror(engine, rows[0], enabled=True, interval_hours=3, history=RunHistory())
        assert read_schedules(engine)[0].synced_interval_hours == 3
    finally:
        engine.dispose()


@both_backends
def test_mirror_write_records_values_as_synced(engine: Engine) -> None:
    owner, _ = owner_and_server(engine)
    seed_defaults(engine)
    tautulli = next(r for r in read_schedules(engine) if r.service == "tautulli")
    assert (tautulli.synced_enabled, tautulli.synced_interval_hours, tautulli.mirrored_at) == (
        None,
        None,
        None,
    )
    ran = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    following = ran + timedelta(hours=4)
    history = RunHistory(
        next_run_at=following, last_run_at=ran, last_status="failed", last_error="boom", run_count=3
    )
    assert write_mirror(engine, tautulli, enabled=True, interval_hours=4, history=history)
    after = next(r for r in read_schedules(engine) if r.service == "tautulli")
    assert (after.id, after.user_id, after.enabled, after.interval_hours) == (tautulli.id, owner, True, 4)
    assert (after.synced_enabled, after.synced_interval_hours) == (True, 4)
    assert (after.next_run_at, after.last_run_at, after.last_status, after.last_error, after.run_count) == (
        following,
        ran,
        "failed",
        "boom",
        3,
    )
    assert after.mirrored_at is not None and _mirror_rows(engine) == 1
    # our bookkeeping is in our table: SmartPlex's row has only its own columns
    with engine.connect() as conn:
        mirrored = conn.execute(select(schedule_mirror)).one()
    assert (mirrored.schedule_id, mirrored.synced_enabled, mirrored.synced_interval_hours) == (
        tautulli.id,
        True,
        4,
    )
    # a second mirror updates the same bookkeeping row
    assert write_mirror(engine, after, enabled=False, interval_hours=4, history=RunHistory())
    again = next(r for r in read_schedules(engine) if r.service == "tautulli")
    assert (again.enabled, again.synced_enabled, again.last_status, again.run_count) == (
        False,
        False,
        None,
        0,
    )
    assert _mirror_rows(engine) == 1


@both_backends
def test_mirror_write_keeps_an_admin_edit_made_meanwhile(engine: Engine) -> None:
    owner_and_server(engine)
    seed_defaults(engine)
    plex = next(r for r in read_schedules(engine) if r.service == "plex")
    with engine.begin() as conn:
        conn.execute(text("UPDATE sync_schedule SET enabled = false WHERE service = 'plex'"))
    ran = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    history = RunHistory(last_run_at=ran, last_status="completed", run_count=1)
    assert not write_mirror(engine, plex, enabled=True, interval_hours=12, history=history)
    after = next(r for r in read_schedules(engine) if r.service == "plex")
    # The admin's value stays; what Prefect holds is recorded as synced, so the next pass pushes the edit.
    assert (after.enabled, after.synced_enabled, after.synced_interval_hours) == (False, True, 12)
    assert (after.last_run_at, after.last_status, after.run_count) == (
        ran,
        "completed",
        1,
    )  # history is written
    decision = reconcile(after, prefect_enabled=True, prefect_hours=12, prefer_table=False)
    assert (decision.enabled.value, decision.enabled.push, decision.enabled.conflict) == (False, True, False)


@both_backends
def test_a_deleted_row_takes_its_mirror_bookkeeping_with_it(engine: Engine) -> None:
    owner_and_server(engine)
    seed_defaults(engine)
    for schedule in read_schedules(engine):
        write_mirror(engine, schedule, enabled=schedule.enabled, interval_hours=schedule.interval_hours,
                     history=RunHistory())  # fmt: skip
    assert _mirror_rows(engine) == 5
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM sync_schedule WHERE service = 'sonarr'"))
    assert _mirror_rows(engine) == 4


@both_backends
def test_run_history_is_read_from_the_sync_events_of_the_user_s_servers(engine: Engine) -> None:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    with engine.begin() as conn:
        alice, bob = add_user(conn), add_user(conn)
        a1, a2 = add_server(conn, alice, name="A1"), add_server(conn, alice, name="A2")
        b = add_server(conn, bob, name="B")

        def event(user: uuid.UUID, server: uuid.UUID, service: str, run: str, minutes: int, error: str | None = None,
                  finished: bool = True) -> None:  # fmt: skip
            started = t0 + timedelta(minutes=minutes)
            event_id = start_event(conn, sync_type=service, user_id=user, server_id=server, integration_id=None,
                                   trigger="scheduled", started_at=started, metadata={"flow_run_id": run})  # fmt: skip
            if finished:
                finish_event(conn, event_id, counts=Counts(), completed_at=started + timedelta(minutes=1),
                             duration_ms=60_000, error=error)  # fmt: skip

        event(alice, a1, "tautulli", "run-1", 0)
        event(alice, a2, "tautulli", "run-1", 0)  # one run, two servers: one run
        event(alice, a1, "tautulli", "run-2", 60, error="Tautulli answered 401")
        event(alice, a1, "tautulli", "run-3", 120, finished=False)  # still running: not the last run
        event(alice, a1, "plex", "run-4", 180)  # another service
        event(bob, b, "tautulli", "run-5", 240)
        event(bob, b, "tautulli", "run-6", 300)
    alice_history = run_history(engine, "tautulli", alice)
    assert (alice_history.last_run_at, alice_history.last_status, alice_history.last_error) == (
        t0 + timedelta(minutes=61),
        "failed",
        "Tautulli answered 401",
    )
    assert alice_history.run_count == 1  # run-1 completed; run-2 failed
    assert run_history(engine, "tautulli", bob) == RunHistory(
        last_run_at=t0 + timedelta(minutes=301), last_status="completed", run_count=2
    )
    assert run_history(engine, "tautulli", None).run_count == 3  # the global table: every server
    assert run_history(engine, "sonarr", alice) == RunHistory()


def test_mirror_loop_survives_prefect_being_down(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    owner_and_server(engine)

    async def scenario() -> bool:
        task = asyncio.create_task(run_mirror_loop(engine, interval_seconds=0.2))
        deadline = asyncio.get_running_loop().time() + 60
        # Two failed ticks: the first failure did not end the loop.
        while (
            caplog.text.count("sync_schedule mirror failed") < 2
            and asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.1)
        alive = not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return alive

    caplog.set_level(logging.WARNING, logger="smartplex_sync.schedule_mirror")
    with temporary_settings(
        {PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api", PREFECT_CLIENT_MAX_RETRIES: 0}
    ):
        assert asyncio.run(scenario())
    assert caplog.text.count("sync_schedule mirror failed") >= 2
    rows = read_schedules(engine)
    assert len(rows) == 5  # each pass seeds the defaults first
    assert all(r.synced_enabled is None for r in rows) and _mirror_rows(engine) == 0  # nothing mirrored
