"""The sync_schedule ↔ Prefect rule as pure logic, and the compare-and-set write of the mirror."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from sqlalchemy import Engine, text

from deployments.processes import free_port
from smartplex_sync.schedule_mirror import (
    PREFECT_YAML,
    hours_from_seconds,
    load_defaults,
    merge_field,
    reconcile,
    run_mirror_loop,
)
from smartplex_sync.store.schedules import RunHistory, ScheduleRow, read_schedules, write_mirror
from tests.conftest import both_backends


def row(enabled: bool, hours: int, synced: tuple[bool, int] | None) -> ScheduleRow:
    return ScheduleRow(
        service="tautulli",
        deployment="tautulli-sync",
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


def test_prefect_yaml_defaults_are_the_seed_schedule() -> None:
    defaults = load_defaults(PREFECT_YAML.read_text())
    hours = {name: (d.active, hours_from_seconds(d.interval_seconds)) for name, d in defaults.items()}
    assert hours == {
        "plex-library-sync": (True, 12),
        "tautulli-sync": (True, 6),
        "sonarr-sync": (False, 24),
        "radarr-sync": (False, 24),
        "overseerr-sync": (False, 6),
        "webhook-retention": (True, 24),
    }


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


def test_after_a_redeploy_the_table_is_pushed_as_it_is() -> None:
    restored = merge_field(4, 4, 6, prefer_table=False, restore=True)
    assert (restored.value, restored.push, restored.conflict) == (4, True, False)
    assert not merge_field(6, 6, 6, prefer_table=False, restore=True).push


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


@both_backends
def test_mirror_write_records_values_as_synced(engine: Engine) -> None:
    tautulli = next(r for r in read_schedules(engine) if r.service == "tautulli")
    assert (tautulli.synced_enabled, tautulli.synced_interval_hours) == (None, None)
    ran = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    history = RunHistory(last_run_at=ran, last_status="Failed", last_error="boom", run_count=3)
    assert write_mirror(engine, tautulli, enabled=True, interval_hours=4, history=history)
    after = next(r for r in read_schedules(engine) if r.service == "tautulli")
    assert (after.enabled, after.interval_hours) == (True, 4)
    assert (after.synced_enabled, after.synced_interval_hours) == (True, 4)
    assert (after.last_run_at, after.last_status, after.last_error, after.run_count) == (
        ran,
        "Failed",
        "boom",
        3,
    )
    assert after.mirrored_at is not None


@both_backends
def test_mirror_write_keeps_an_admin_edit_made_meanwhile(engine: Engine) -> None:
    plex = next(r for r in read_schedules(engine) if r.service == "plex")
    with engine.begin() as conn:
        conn.execute(text("UPDATE sync_schedule SET enabled = false WHERE service = 'plex'"))
    assert not write_mirror(engine, plex, enabled=True, interval_hours=12, history=RunHistory())
    after = next(r for r in read_schedules(engine) if r.service == "plex")
    # The admin's value stays; what Prefect holds is recorded as synced, so the next pass pushes the edit.
    assert (after.enabled, after.synced_enabled, after.synced_interval_hours) == (False, True, 12)
    decision = reconcile(after, prefect_enabled=True, prefect_hours=12, prefer_table=False)
    assert (decision.enabled.value, decision.enabled.push, decision.enabled.conflict) == (False, True, False)


def test_mirror_loop_survives_prefect_being_down(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
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
    assert all(r.synced_enabled is None for r in read_schedules(engine))  # nothing written
