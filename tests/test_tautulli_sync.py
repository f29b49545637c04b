"""`tautulli-sync` against the simulator over real HTTP, into a real database: each server's Tautulli (the
`integrations` row that serves it) fills its `watch_history`, its play totals equal those computed from
the plays, neither a short window nor a repeated run ever lowers them, and SmartPlex users get their
`user_stats`. The flow body runs in-process (`tests.support.pipeline`); retries and the artifact read
back from Prefect run with a real Prefect server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import mean
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from sqlalchemy import Engine, delete, select, update

from deployments.processes import free_port
from flows._runs import Opaque
from flows.clients.tautulli import HistoryPaging, TautulliClient, history_after
from flows.tautulli_sync import (
    fetch_history_page,
    fetch_server,
    store_plays,
    tautulli_sync,
    to_plays,
    touched_keys,
    watch_row,
)
from simulators.serving import serve_in_thread
from simulators.tautulli import HistoryItem, Play, SimulatorState, TautulliHistory, create_tautulli_app
from smartplex_sync.errors import PermanentServiceError, SyncFailedError, TransientServiceError
from smartplex_sync.requests import TautulliScope, TautulliSync, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store.events import TAUTULLI_SYNC_TYPE
from smartplex_sync.store.history import refresh_play_totals
from smartplex_sync.store.tables import (
    integrations,
    media_items,
    sync_events,
    user_stats,
    watch_history,
)
from smartplex_sync.store.tables import sync_history as sync_history_table
from tests.conftest import both_backends
from tests.support.factories import add_integration, add_movie, add_server, add_user
from tests.support.pipeline import flows_in_process

KEY = "0123456789abcdef0123456789abcdef"
PMS = "pms-under-test"
ITEMS = [HistoryItem(rating_key=500 + n, title=f"Movie {n}", duration_seconds=3600) for n in range(5)]
IN_LIBRARY = [item.rating_key for item in ITEMS[:3]]  # the other two arrive later (or never)


@dataclass
class Setup:
    """A Tautulli simulator watching Plex machine PMS, the server row of that machine and the Tautulli
    integration serving it."""

    state: SimulatorState
    url: str
    engine: Engine
    owner: uuid.UUID
    server_id: uuid.UUID
    integration_id: uuid.UUID
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def history(self) -> TautulliHistory:
        return self.state.history

    def reset(self, timezone: str = "America/New_York") -> None:
        self.state.history = TautulliHistory()
        self.state.timezone = ZoneInfo(timezone)
        self.state.requests = 0
        with self.engine.begin() as conn:
            conn.execute(delete(watch_history))
            conn.execute(delete(media_items))
            for rating_key in IN_LIBRARY:
                add_movie(conn, self.server_id, str(rating_key))


def _serve(stack: ExitStack, pms: str = PMS, key: str = KEY) -> tuple[SimulatorState, str]:
    app = create_tautulli_app(TautulliHistory(), api_key=key, pms_identifier=pms)
    return app.state.tautulli, stack.enter_context(serve_in_thread(app))


def _setup(stack: ExitStack, engine: Engine) -> Setup:
    state, url = _serve(stack)
    with engine.begin() as conn:
        owner = add_user(conn, "owner@example.com")
        server_id = add_server(conn, owner, name="Living room", machine_id=PMS)
        integration_id = add_integration(conn, owner, "tautulli", url=url, api_key=KEY, server_id=server_id)
    fixture = Setup(state, url, engine, owner, server_id, integration_id)
    fixture.reset()
    return fixture


@pytest.fixture
def setup(database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """In-process: the tasks are plain functions (no retries) and the artifacts are collected."""
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
    get_settings.cache_clear()
    artifacts = flows_in_process(monkeypatch)
    with ExitStack() as stack:
        fixture = _setup(stack, engine)
        fixture.artifacts = artifacts
        yield fixture
    get_settings.cache_clear()


@pytest.fixture
def prefect_setup(
    prefect_api_url: str, database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    """With Prefect: real tasks (with their retries) and the session's Prefect server."""
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
    get_settings.cache_clear()
    with (
        temporary_settings({PREFECT_API_URL: prefect_api_url, PREFECT_LOGGING_TO_API_ENABLED: False}),
        ExitStack() as stack,
    ):
        yield _setup(stack, engine)
    get_settings.cache_clear()


def run(request: TautulliSync, trigger: Trigger = "manual") -> dict[str, Any]:
    return tautulli_sync.fn(request, trigger)


def sync(setup: Setup, trigger: Trigger = "manual", **scope: Any) -> dict[str, Any]:
    """The server's part of a run of `scope` (the default window when it names nothing)."""
    result = run(TautulliSync(servers={setup.server_id: TautulliScope(**scope)}), trigger)
    return result["servers"][str(setup.server_id)]


def stored_plays(engine: Engine, server_id: uuid.UUID | None = None) -> dict[int, tuple[Any, ...]]:
    columns = (
        watch_history.c.tautulli_row_id,
        watch_history.c.server_id,
        watch_history.c.rating_key,
        watch_history.c.plex_user_id,
        watch_history.c.started_at,
        watch_history.c.stopped_at,
        watch_history.c.duration_seconds,
        watch_history.c.percent_complete,
    )
    statement = select(*columns)
    if server_id is not None:
        statement = statement.where(watch_history.c.server_id == server_id)
    with engine.connect() as conn:
        return {row[0]: tuple(row) for row in conn.execute(statement)}


def expected_play(play: Play, server_id: uuid.UUID) -> tuple[Any, ...]:
    return (
        play.row_id,
        server_id,
        str(play.item.rating_key),
        str(play.user.user_id),
        datetime.fromtimestamp(play.started, UTC),
        datetime.fromtimestamp(play.stopped, UTC),
        play.play_duration,
        play.percent_complete,
    )


def stored_totals(engine: Engine, server_id: uuid.UUID) -> dict[str, tuple[Any, ...]]:
    columns = (
        media_items.c.plex_id,
        media_items.c.total_play_count,
        media_items.c.complete_play_count,
        media_items.c.partial_play_count,
        media_items.c.total_watch_time_seconds,
        media_items.c.avg_percent_complete,
        media_items.c.last_watched_at,
    )
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).where(media_items.c.server_id == server_id))
        return {row[0]: tuple(row[1:]) for row in rows}


def expected_totals(plays: Sequence[Play]) -> tuple[Any, ...]:
    """The totals of one item, computed in Python from the plays synced so far."""
    if not plays:
        return (0, 0, 0, 0, None, None)
    complete = sum(p.percent_complete >= 90 for p in plays)
    return (
        len(plays),
        complete,
        len(plays) - complete,
        sum(p.play_duration for p in plays),
        pytest.approx(mean(p.percent_complete for p in plays), abs=0.0051),
        datetime.fromtimestamp(max(p.stopped for p in plays), UTC),
    )


def check_against_truth(setup: Setup, synced: dict[int, Play]) -> None:
    expected = {row_id: expected_play(p, setup.server_id) for row_id, p in synced.items()}
    assert stored_plays(setup.engine) == expected
    for rating_key, stored in stored_totals(setup.engine, setup.server_id).items():
        plays = [p for p in synced.values() if str(p.item.rating_key) == rating_key]
        assert stored == expected_totals(plays), rating_key


def returned_by_window(history: TautulliHistory, tz: ZoneInfo, days: int) -> dict[int, Play]:
    """What Tautulli answers to our window query: plays whose local start date is on/after `after`."""
    after = history_after(datetime.now(UTC), days)
    return {p.row_id: p for p in history.plays if datetime.fromtimestamp(p.started, tz).date() >= after}


def history_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(sync_history_table).order_by(sync_history_table.c.started_at)).all()


def event_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(sync_events).order_by(sync_events.c.started_at)).all()


def secrets_absent(secrets: list[str], *texts: Any) -> None:
    for text in texts:
        dumped = json.dumps(text, default=str)
        assert not [secret for secret in secrets if secret in dumped], dumped


Step = tuple[
    str, int, float, int
]  # ("play", item, days ago, percent) | ("window", days, 0, 0) | ("item", item, 0, 0)

steps = st.one_of(
    st.tuples(st.just("play"), st.integers(0, 4), st.floats(0.01, 40), st.integers(1, 100)),
    st.tuples(st.just("window"), st.sampled_from([1, 7, 30]), st.just(0.0), st.just(0)),
    st.tuples(st.just("item"), st.integers(0, 4), st.just(0.0), st.just(0)),
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    zone=st.sampled_from(["America/New_York", "Pacific/Kiritimati", "Etc/GMT+12"]),
    script=st.lists(steps, min_size=2, max_size=6),
)
def test_random_plays_and_syncs_match_the_truth(setup: Setup, zone: str, script: list[Step]) -> None:
    setup.reset(zone)
    tz = ZoneInfo(zone)
    now = datetime.now(UTC)
    synced: dict[int, Play] = {}
    for kind, number, days_ago, percent in script:
        if kind == "play":
            started = now - timedelta(days=days_ago)
            setup.history.add_play(ITEMS[number], started=started, percent_complete=percent)
            continue
        if kind == "window":
            returned = returned_by_window(setup.history, tz, number)
            sync(setup, days=number)
            in_window = {
                p.row_id
                for p in setup.history.plays
                if p.started >= (now - timedelta(days=number)).timestamp()
            }
            assert in_window <= returned.keys()
        else:
            rating_key = ITEMS[number].rating_key
            returned = {p.row_id: p for p in setup.history.plays if p.item.rating_key == rating_key}
            sync(setup, rating_keys=[str(rating_key)])
        synced.update(returned)
        check_against_truth(setup, synced)
    before = (stored_plays(setup.engine), stored_totals(setup.engine, setup.server_id))
    again = sync(setup, days=30)
    synced.update(returned_by_window(setup.history, tz, 30))
    check_against_truth(setup, synced)
    if all(p.started >= (now - timedelta(days=29)).timestamp() for p in setup.history.plays):
        repeat = sync(setup, days=30)
        assert (repeat["new"], repeat["updated"]) == (0, 0)
        assert repeat["unchanged"] == again["plays_fetched"]
    assert before[0].items() <= stored_plays(setup.engine).items()


@both_backends
def test_a_short_window_after_a_long_history_never_lowers_lifetime_totals(setup: Setup) -> None:
    now = datetime.now(UTC)
    for n in range(60):  # two plays a week for 30 weeks, then a few this week
        setup.history.add_play(
            ITEMS[n % 3], started=now - timedelta(days=3.5 * n + 1), percent_complete=60 + n % 41
        )
    backfill = sync(setup, days=0)
    lifetime = stored_totals(setup.engine, setup.server_id)
    assert backfill["plays_fetched"] == 60 and sum(t[0] for t in lifetime.values()) == 60
    weekly = sync(setup, days=7)
    assert 0 < weekly["plays_fetched"] < 10 and (weekly["new"], weekly["updated"]) == (0, 0)
    assert stored_totals(setup.engine, setup.server_id) == lifetime
    newest = setup.history.add_play(ITEMS[0], started=now - timedelta(hours=3), percent_complete=100)
    sync(setup, days=7)
    after = stored_totals(setup.engine, setup.server_id)
    assert after["500"][0] == lifetime["500"][0] + 1
    assert after["500"][5] == datetime.fromtimestamp(newest.stopped, UTC)
    assert {k: v for k, v in after.items() if k != "500"} == {k: v for k, v in lifetime.items() if k != "500"}


@pytest.mark.parametrize("zone", ["Etc/GMT+12", "Pacific/Kiritimati"])
def test_a_play_just_inside_the_window_is_synced_in_any_time_zone(setup: Setup, zone: str) -> None:
    setup.reset(zone)
    window_start = datetime.now(UTC) - timedelta(days=7)
    local_midnight = window_start.astimezone(ZoneInfo(zone)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    just_after_midnight = setup.history.add_play(
        ITEMS[0], started=local_midnight + timedelta(minutes=1), percent_complete=100
    )
    just_inside = setup.history.add_play(
        ITEMS[1], started=window_start + timedelta(minutes=1), percent_complete=100
    )
    # The window is padded to a day before its UTC date: up to two extra local days, never three.
    too_old = setup.history.add_play(
        ITEMS[2], started=local_midnight - timedelta(days=3), percent_complete=100
    )
    sync(setup, days=7)
    stored = stored_plays(setup.engine)
    assert {just_after_midnight.row_id, just_inside.row_id} <= stored.keys()
    assert too_old.row_id not in stored


def test_plays_of_items_not_in_the_library_are_kept_and_linked_when_the_item_arrives(setup: Setup) -> None:
    late = ITEMS[4]
    plays = [
        setup.history.add_play(late, started=datetime.now(UTC) - timedelta(days=d), percent_complete=95)
        for d in (1, 2)
    ]
    result = sync(setup, rating_keys=[str(late.rating_key)])
    assert (result["plays_fetched"], result["new"], result["items_refreshed"]) == (2, 2, 0)
    assert set(stored_plays(setup.engine)) == {p.row_id for p in plays}
    with setup.engine.begin() as conn:  # what the Plex sync does after inserting new media items
        add_movie(conn, setup.server_id, str(late.rating_key))
        assert refresh_play_totals(conn, setup.server_id, [str(late.rating_key)]) == 1
    assert stored_totals(setup.engine, setup.server_id)[str(late.rating_key)] == expected_totals(plays)


def test_plays_of_many_items_cost_one_query(setup: Setup) -> None:
    """A merged run of a burst of Playback Stop deliveries fetches all their items' plays together."""
    now = datetime.now(UTC)
    plays = [
        setup.history.add_play(item, started=now - timedelta(hours=n + 1), percent_complete=90)
        for n, item in enumerate(ITEMS * 2)
    ]
    setup.history.add_play(ITEMS[0], started=now - timedelta(days=40), percent_complete=100)  # older
    before = setup.state.requests
    result = sync(setup, rating_keys=[str(i.rating_key) for i in ITEMS[:3]])
    assert result["requests"] == setup.state.requests - before == 2  # server info, one get_history
    every_play_of_the_three = {p.row_id for p in setup.history.plays if p.item in ITEMS[:3]}
    assert set(stored_plays(setup.engine)) == every_play_of_the_three  # the old one too, and only theirs
    assert {p.row_id for p in plays if p.item in ITEMS[:3]} < every_play_of_the_three
    assert result["mode"] == "3 items (500, 501, 502)"


def test_user_stats_hold_the_plays_of_smartplex_users_only(setup: Setup) -> None:
    """Jamie is a SmartPlex user by Plex account id, Sam by Plex username; the others are not users."""
    with setup.engine.begin() as conn:
        jamie = add_user(conn, "jamie@example.com", plex_user_id="1001")
        sam = add_user(conn, "sam@example.com", plex_username="SAM")
    now = datetime.now(UTC)
    history = TautulliHistory.generate(ITEMS, plays=40, days=5, now=now, seed=3)
    setup.state.history = history
    result = sync(setup, "scheduled", days=7)
    assert result["plays_fetched"] == 40
    with setup.engine.connect() as conn:
        found = {
            (row.user_id, row.plex_id): (row.play_count, row.total_duration_ms, row.watched_status)
            for row in conn.execute(
                select(user_stats, media_items.c.plex_id).join(
                    media_items, media_items.c.id == user_stats.c.media_item_id
                )
            )
        }
    expected: dict[tuple[uuid.UUID, str], list[Play]] = {}
    for play in history.plays:
        user = {"jamie.r": jamie, "sam": sam}.get(play.user.username)
        if user is not None and play.item.rating_key in IN_LIBRARY:
            expected.setdefault((user, str(play.item.rating_key)), []).append(play)
    assert found == {
        key: (
            len(plays),
            sum(p.play_duration for p in plays) * 1000,
            int(any(p.percent_complete >= 90 for p in plays)),
        )
        for key, plays in expected.items()
    }
    assert {user for user, _ in found} == {jamie, sam}
    assert result["user_stats"] == len(found)


def test_each_run_leaves_smartplex_sync_history_and_events(setup: Setup) -> None:
    now = datetime.now(UTC)
    for n in range(4):
        setup.history.add_play(ITEMS[n % 3], started=now - timedelta(days=n + 1), percent_complete=95)
    sync(setup, "scheduled", days=7)
    sync(setup, "webhook", rating_keys=["500"])
    (first, second) = history_rows(setup.engine)
    assert (first.sync_type, first.status, first.server_id, first.user_id) == (
        TAUTULLI_SYNC_TYPE, "completed", setup.server_id, setup.owner,
    )  # fmt: skip
    assert (first.items_processed, first.items_added, first.items_updated) == (4, 4, 3)
    assert (second.items_processed, second.items_added) == (2, 0)
    assert first.metadata["days_back"] == 7 and second.metadata["days_back"] is None
    events = event_rows(setup.engine)
    assert [(e.sync_type, e.trigger_type, e.status) for e in events] == [
        ("tautulli", "scheduled", "completed"),
        ("tautulli", "webhook", "completed"),
    ]
    assert (events[0].items_discovered, events[0].items_new, events[0].integration_id) == (
        4,
        4,
        setup.integration_id,
    )
    secrets_absent(
        [KEY],
        setup.artifacts,
        [e.sync_metadata for e in events],
        [h.metadata for h in history_rows(setup.engine)],
    )


def test_a_server_no_tautulli_serves_is_skipped_and_one_without_a_key_fails(setup: Setup) -> None:
    with setup.engine.begin() as conn:
        conn.execute(update(integrations).values(status="inactive"))
    result = run(TautulliSync())
    assert (
        result["servers"][str(setup.server_id)]["outcome"]
        == "skipped: no active Tautulli integration serves this server"
    )
    assert setup.state.requests == 0 and event_rows(setup.engine) == [] and history_rows(setup.engine) == []
    with setup.engine.begin() as conn:
        conn.execute(update(integrations).values(status="active", api_key=None))
    with pytest.raises(SyncFailedError, match="tautulli integration 'Tautulli' has no api_key"):
        run(TautulliSync())
    assert setup.state.requests == 0
    with setup.engine.begin() as conn:
        conn.execute(update(integrations).values(api_key="f" * 32))
    with pytest.raises(SyncFailedError, match="Invalid apikey"):
        run(TautulliSync())
    assert setup.state.requests == 1
    (failed,) = history_rows(setup.engine)
    assert failed.status == "failed" and "Invalid apikey" in failed.error_message


def test_a_tautulli_watching_another_plex_is_left_alone_for_this_server(setup: Setup) -> None:
    setup.history.add_play(ITEMS[0], started=datetime.now(UTC) - timedelta(hours=1), percent_complete=100)
    with setup.engine.begin() as conn:
        conn.execute(update(integrations).values(server_id=None))  # the owner's Tautulli, for every server
        other = add_server(conn, setup.owner, name="Cabin", machine_id="another-plex")
        add_movie(conn, other, "500")
    result = run(TautulliSync(), "scheduled")
    outcome = result["servers"][str(other)]["outcome"]
    assert outcome == "skipped: this Tautulli watches Plex machine pms-under-test, not another-plex"
    assert result["servers"][str(setup.server_id)]["outcome"] == "completed"
    assert (
        set(stored_plays(setup.engine, other)) == set()
        and len(stored_plays(setup.engine, setup.server_id)) == 1
    )
    assert stored_totals(setup.engine, other)["500"][0] == 0
    assert [h.server_id for h in history_rows(setup.engine)] == [setup.server_id]
    skipped = next(e for e in event_rows(setup.engine) if e.server_id == other)
    assert skipped.items_discovered == 0 and skipped.sync_metadata["skipped"].startswith(
        "this Tautulli watches"
    )


def test_two_servers_with_the_same_rating_keys_keep_their_plays_apart(setup: Setup) -> None:
    """A second server (another owner, its own Tautulli) holds movies with the same rating keys: each
    server's plays count on its own rows only, a run of one server writes nothing of the other's, and a
    Tautulli that is down fails its server's part only."""
    stack = ExitStack()
    other_state, other_url = _serve(stack, pms="pms-of-the-cabin", key="cabin-key-" + "9" * 22)
    with setup.engine.begin() as conn:
        bob = add_user(conn, "bob@example.com")
        cabin = add_server(conn, bob, name="Cabin", machine_id="pms-of-the-cabin")
        add_integration(
            conn, bob, "tautulli", url=other_url, api_key="cabin-key-" + "9" * 22, server_id=cabin
        )
        for rating_key in IN_LIBRARY:
            add_movie(conn, cabin, str(rating_key))
    with stack:
        now = datetime.now(UTC)
        mine = [
            setup.history.add_play(ITEMS[0], started=now - timedelta(days=1), percent_complete=100)
            for _ in range(3)
        ]
        theirs = other_state.history.add_play(ITEMS[0], started=now - timedelta(days=2), percent_complete=40)
        assert mine[0].row_id == theirs.row_id  # Tautulli row ids are per Tautulli too
        result = run(TautulliSync(), "scheduled")
        assert {part["outcome"] for part in result["servers"].values()} == {"completed"}
        assert stored_totals(setup.engine, setup.server_id)["500"] == expected_totals(mine)
        assert stored_totals(setup.engine, cabin)["500"] == expected_totals([theirs])
        assert stored_plays(setup.engine, cabin) == {theirs.row_id: expected_play(theirs, cabin)}

        cabin_rows = (stored_plays(setup.engine, cabin), stored_totals(setup.engine, cabin))
        setup.history.add_play(ITEMS[1], started=now - timedelta(hours=2), percent_complete=100)
        other_state.history.add_play(ITEMS[1], started=now - timedelta(hours=2), percent_complete=100)
        assert sync(setup, days=7)["new"] == 1  # this server only
        assert (stored_plays(setup.engine, cabin), stored_totals(setup.engine, cabin)) == cabin_rows
    # The cabin's Tautulli is down now: its part fails, this server's part is done.
    with setup.engine.begin() as conn:
        conn.execute(
            update(integrations)
            .where(integrations.c.server_id == cabin)
            .values(url=f"http://127.0.0.1:{free_port()}")
        )
    setup.history.add_play(ITEMS[2], started=now - timedelta(hours=1), percent_complete=100)
    with pytest.raises(SyncFailedError) as failed:
        run(TautulliSync(), "scheduled")
    assert list(failed.value.failures) == [f"Cabin ({cabin})"]
    assert "cannot reach" in failed.value.failures[f"Cabin ({cabin})"]
    assert stored_totals(setup.engine, setup.server_id)["502"][0] == 1
    last = {h.server_id: h for h in history_rows(setup.engine)[-2:]}
    assert (last[cabin].status, last[setup.server_id].status) == ("failed", "completed")
    events = {e.server_id: e for e in event_rows(setup.engine)[-2:]}
    assert (events[cabin].status, events[setup.server_id].status) == ("failed", "completed")
    tautulli_artifacts = [a for a in setup.artifacts if a["key"] == "tautulli-sync"]
    assert {row["server"]: row["outcome"] for row in tautulli_artifacts[-1]["table"]} == {
        "Living room": "completed",
        "Cabin": "failed",
    }
    secrets_absent(
        [KEY, "cabin-key-" + "9" * 22],
        setup.artifacts,
        [tuple(e) for e in event_rows(setup.engine)],
        [tuple(h) for h in history_rows(setup.engine)],
        str(failed.value),
    )


def test_transient_failures_are_retried_and_a_refused_key_is_not(prefect_setup: Setup) -> None:
    setup = prefect_setup
    played = setup.history.add_play(
        ITEMS[0], started=datetime.now(UTC) - timedelta(hours=1), percent_complete=100
    )
    fast_fetch = fetch_history_page.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
    with TautulliClient(setup.url, KEY, timeout=0.3) as client:
        setup.state.inject(503, 0.6, 502)
        rows, total = fast_fetch(client, 0, None, None)
        plays, unusable = to_plays(rows)
        counts = store_plays(setup.engine, setup.server_id, Opaque(plays))
        assert (len(plays), unusable, total, counts.new, client.requests_made) == (
            1,
            0,
            1,
            1,
            4,
        )  # 3 failures, then the answer
    assert set(stored_plays(setup.engine)) == {played.row_id}
    with TautulliClient(setup.url, "f" * 32) as refused:
        with pytest.raises(PermanentServiceError, match="Invalid apikey"):
            fetch_server.with_options(retry_delay_seconds=0)(refused)
        assert refused.requests_made == 1
    with TautulliClient(setup.url, KEY) as client:
        setup.state.inject(500, 500, 500, 500, 500)
        with pytest.raises(TransientServiceError):
            fetch_server.with_options(retry_delay_seconds=0)(client)
        assert client.requests_made == 5  # the first attempt and four retries


def test_the_deployed_flow_runs_and_leaves_a_table_artifact(prefect_setup: Setup) -> None:
    setup = prefect_setup
    setup.history.add_play(ITEMS[0], started=datetime.now(UTC) - timedelta(hours=1), percent_complete=100)
    state = tautulli_sync(
        TautulliSync.on([setup.server_id], TautulliScope(days=7)), "scheduled", return_state=True
    )
    part = state.result()["servers"][str(setup.server_id)]
    assert (part["plays_fetched"], part["new"], part["items_refreshed"], part["requests"]) == (1, 1, 1, 2)

    async def artifacts() -> Any:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["tautulli-sync"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                )
            )

    (artifact,) = asyncio.run(artifacts())
    row = (json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data)[0]
    assert (row["server"], row["outcome"], row["plays_fetched"], row["new"], row["requests"]) == (
        "Living room", "completed", 1, 1, 2,
    )  # fmt: skip
    secrets_absent([KEY], artifact.data, artifact.description)


def test_watch_row_reads_tautullis_loose_types() -> None:
    row = {
        "row_id": "42",
        "rating_key": "91544",
        "parent_rating_key": "",
        "grandparent_rating_key": 91522,
        "user_id": "1001",
        "user": "jamie.r",
        "started": 1717260000,
        "stopped": "1717263400",
        "play_duration": 3300.0,
        "paused_counter": None,
        "percent_complete": "97",
        "watched_status": 0.75,
        "platform": "",
    }
    stored = watch_row(row)
    assert stored is not None
    assert stored["tautulli_row_id"] == 42 and stored["rating_key"] == "91544"
    assert (stored["parent_rating_key"], stored["grandparent_rating_key"]) == (None, "91522")
    assert (stored["plex_user_id"], stored["user_name"]) == ("1001", "jamie.r")
    assert (stored["duration_seconds"], stored["paused_seconds"]) == (3300, 0)
    assert stored["stopped_at"] == datetime(2024, 6, 1, 17, 36, 40, tzinfo=UTC)
    assert (stored["percent_complete"], stored["watched_status"], stored["platform"]) == (97, 0.75, None)
    assert watch_row({"row_id": 1, "rating_key": ""}) is None
    assert watch_row({"row_id": None, "rating_key": 5}) is None


def test_to_plays_keeps_the_storable_rows_and_counts_the_others() -> None:
    rows = [
        {"row_id": 1, "rating_key": 10, "parent_rating_key": 9, "grandparent_rating_key": 8},
        {"row_id": 2, "rating_key": ""},
        {"rating_key": 11},
        {"id": 3, "rating_key": 12, "parent_rating_key": "", "grandparent_rating_key": None},
    ]
    plays, unusable = to_plays(rows)
    assert [play["tautulli_row_id"] for play in plays] == [1, 3] and unusable == 2
    assert touched_keys(plays) == {"10", "9", "8", "12"}
    assert to_plays([]) == ([], 0) and touched_keys([]) == set()


def test_history_paging_passes_each_row_on_once_and_stops_at_the_last_page() -> None:
    paging = HistoryPaging(page_size=2)
    first = paging.take([{"row_id": 1}, {"row_id": 2}], total=5)
    assert ([r["row_id"] for r in first.rows], first.fetched, paging.start, paging.done) == (
        [1, 2],
        2,
        2,
        False,
    )
    # a play finished meanwhile: row 2 shifted onto this page, and a session in progress has no id
    second = paging.take([{"row_id": 2}, {"row_id": None}], total=6)
    assert ([r["row_id"] for r in second.rows], second.fetched, paging.start, paging.done) == (
        [],
        2,
        4,
        False,
    )
    last = paging.take([{"id": 3}], total=6)
    assert ([r["id"] for r in last.rows], last.fetched, paging.start, paging.done) == ([3], 3, 5, True)
    exact = HistoryPaging(page_size=2)
    exact.take([{"row_id": 1}, {"row_id": 2}], total=2)
    assert exact.done  # a full page that reaches Tautulli's count is the last: no empty page is asked for
