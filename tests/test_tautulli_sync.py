"""`tautulli-sync` against the simulator over real HTTP, into a real database, with a real Prefect server:
watch_history equals the simulator's truth, totals equal those computed from the plays, and neither a
short window nor a repeated run ever lowers them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
from sqlalchemy import Engine, delete, select

from flows.clients.tautulli import TautulliClient, history_after
from flows.tautulli_sync import fetch_server, sync_history, tautulli_sync, watch_row
from simulators.serving import serve_in_thread
from simulators.tautulli import HistoryItem, Play, SimulatorState, TautulliHistory, create_tautulli_app
from smartplex_sync.errors import ConfigurationError, PermanentServiceError, TransientServiceError
from smartplex_sync.requests import TautulliSync
from smartplex_sync.settings import get_settings
from smartplex_sync.store.history import refresh_play_totals
from smartplex_sync.store.tables import media_items, watch_history
from tests.conftest import both_backends
from tests.support.factories import add_movie

# Most tests call the flow body (`tautulli_sync.fn`), outside a flow run, where Prefect warns about artifacts.
pytestmark = pytest.mark.filterwarnings("ignore:Artifact creation outside:FutureWarning")

KEY = "0123456789abcdef0123456789abcdef"
PMS = "pms-under-test"
ITEMS = [HistoryItem(rating_key=500 + n, title=f"Movie {n}", duration_seconds=3600) for n in range(5)]
IN_LIBRARY = [item.rating_key for item in ITEMS[:3]]  # the other two arrive later (or never)


@dataclass
class Setup:
    state: SimulatorState
    engine: Engine

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
                add_movie(conn, str(rating_key), PMS)


@pytest.fixture
def setup(
    prefect_api_url: str, database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    app = create_tautulli_app(TautulliHistory(), api_key=KEY, pms_identifier=PMS)
    # Prefect read its settings at import; point this process at the session's server explicitly.
    with (
        temporary_settings({PREFECT_API_URL: prefect_api_url, PREFECT_LOGGING_TO_API_ENABLED: False}),
        serve_in_thread(app) as url,
    ):
        monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
        monkeypatch.setenv("SMARTPLEX_TAUTULLI_URL", url)
        monkeypatch.setenv("SMARTPLEX_TAUTULLI_API_KEY", KEY)
        get_settings.cache_clear()
        fixture = Setup(app.state.tautulli, engine)
        fixture.reset()
        yield fixture
    get_settings.cache_clear()


def stored_plays(engine: Engine) -> dict[int, tuple[Any, ...]]:
    columns = (
        watch_history.c.tautulli_row_id,
        watch_history.c.server_id,
        watch_history.c.rating_key,
        watch_history.c.user_id,
        watch_history.c.started_at,
        watch_history.c.stopped_at,
        watch_history.c.duration_seconds,
        watch_history.c.percent_complete,
    )
    with engine.connect() as conn:
        return {row[0]: tuple(row) for row in conn.execute(select(*columns))}


def expected_play(play: Play) -> tuple[Any, ...]:
    return (
        play.row_id,
        PMS,
        str(play.item.rating_key),
        play.user.user_id,
        datetime.fromtimestamp(play.started, UTC),
        datetime.fromtimestamp(play.stopped, UTC),
        play.play_duration,
        play.percent_complete,
    )


def stored_totals(engine: Engine) -> dict[str, tuple[Any, ...]]:
    columns = (
        media_items.c.rating_key,
        media_items.c.total_play_count,
        media_items.c.complete_play_count,
        media_items.c.partial_play_count,
        media_items.c.total_watch_time_seconds,
        media_items.c.avg_percent_complete,
        media_items.c.last_watched_at,
    )
    with engine.connect() as conn:
        return {row[0]: tuple(row[1:]) for row in conn.execute(select(*columns))}


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
    assert stored_plays(setup.engine) == {row_id: expected_play(p) for row_id, p in synced.items()}
    totals = stored_totals(setup.engine)
    for rating_key, stored in totals.items():
        plays = [p for p in synced.values() if str(p.item.rating_key) == rating_key]
        assert stored == expected_totals(plays), rating_key


def returned_by_window(history: TautulliHistory, tz: ZoneInfo, days: int) -> dict[int, Play]:
    """What Tautulli answers to our window query: plays whose local start date is on/after `after`."""
    after = history_after(datetime.now(UTC), days)
    return {p.row_id: p for p in history.plays if datetime.fromtimestamp(p.started, tz).date() >= after}


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
            tautulli_sync.fn(TautulliSync(days=number))
            in_window = {
                p.row_id
                for p in setup.history.plays
                if p.started >= (now - timedelta(days=number)).timestamp()
            }
            assert in_window <= returned.keys()
        else:
            rating_key = ITEMS[number].rating_key
            returned = {p.row_id: p for p in setup.history.plays if p.item.rating_key == rating_key}
            tautulli_sync.fn(TautulliSync(rating_keys=[str(rating_key)]))
        synced.update(returned)
        check_against_truth(setup, synced)
    before = (stored_plays(setup.engine), stored_totals(setup.engine))
    again = tautulli_sync.fn(TautulliSync(days=30))
    synced.update(returned_by_window(setup.history, tz, 30))
    check_against_truth(setup, synced)
    if all(p.started >= (now - timedelta(days=29)).timestamp() for p in setup.history.plays):
        repeat = tautulli_sync.fn(TautulliSync(days=30))
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
    backfill = tautulli_sync.fn(TautulliSync(days=0))
    lifetime = stored_totals(setup.engine)
    assert backfill["plays_fetched"] == 60 and sum(t[0] for t in lifetime.values()) == 60
    weekly = tautulli_sync.fn(TautulliSync(days=7))
    assert 0 < weekly["plays_fetched"] < 10 and (weekly["new"], weekly["updated"]) == (0, 0)
    assert stored_totals(setup.engine) == lifetime
    newest = setup.history.add_play(ITEMS[0], started=now - timedelta(hours=3), percent_complete=100)
    tautulli_sync.fn(TautulliSync(days=7))
    after = stored_totals(setup.engine)
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
    tautulli_sync.fn(TautulliSync(days=7))
    stored = stored_plays(setup.engine)
    assert {just_after_midnight.row_id, just_inside.row_id} <= stored.keys()
    assert too_old.row_id not in stored


def test_plays_of_items_not_in_the_library_are_kept_and_linked_when_the_item_arrives(setup: Setup) -> None:
    late = ITEMS[4]
    plays = [
        setup.history.add_play(late, started=datetime.now(UTC) - timedelta(days=d), percent_complete=95)
        for d in (1, 2)
    ]
    result = tautulli_sync.fn(TautulliSync(rating_keys=[str(late.rating_key)]))
    assert (result["plays_fetched"], result["new"], result["items_refreshed"]) == (2, 2, 0)
    assert set(stored_plays(setup.engine)) == {p.row_id for p in plays}
    with setup.engine.begin() as conn:  # what the Plex sync does after inserting new media items
        add_movie(conn, str(late.rating_key), PMS)
        assert refresh_play_totals(conn, PMS, [str(late.rating_key)]) == 1
    assert stored_totals(setup.engine)[str(late.rating_key)] == expected_totals(plays)


def test_plays_of_many_items_cost_one_query(setup: Setup) -> None:
    """A merged run of a burst of Playback Stop deliveries fetches all their items' plays together."""
    now = datetime.now(UTC)
    plays = [
        setup.history.add_play(item, started=now - timedelta(hours=n + 1), percent_complete=90)
        for n, item in enumerate(ITEMS * 2)
    ]
    setup.history.add_play(ITEMS[0], started=now - timedelta(days=40), percent_complete=100)  # older
    before = setup.state.requests
    result = tautulli_sync.fn(TautulliSync(rating_keys=[str(i.rating_key) for i in ITEMS[:3]]))
    assert result["requests"] == setup.state.requests - before == 2  # server info, one get_history
    every_play_of_the_three = {p.row_id for p in setup.history.plays if p.item in ITEMS[:3]}
    assert set(stored_plays(setup.engine)) == every_play_of_the_three  # the old one too, and only theirs
    assert {p.row_id for p in plays if p.item in ITEMS[:3]} < every_play_of_the_three
    assert result["mode"] == "3 items (500, 501, 502)"


def test_sync_without_tautulli_settings_fails_at_once_naming_them(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMARTPLEX_TAUTULLI_API_KEY")
    get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="SMARTPLEX_TAUTULLI_API_KEY"):
        tautulli_sync.fn()
    assert setup.state.requests == 0


def test_transient_failures_are_retried_and_a_refused_key_is_not(setup: Setup, database_url: str) -> None:
    settings_ = get_settings()
    assert settings_.tautulli_url is not None
    played = setup.history.add_play(
        ITEMS[0], started=datetime.now(UTC) - timedelta(hours=1), percent_complete=100
    )
    fast_sync = sync_history.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
    with TautulliClient(settings_.tautulli_url, KEY, timeout=0.3) as client:
        setup.state.inject(503, 0.6, 502)
        result = fast_sync(client, database_url, PMS, None, [])
        assert (result.plays, result.counts.new, client.requests_made) == (
            1,
            1,
            4,
        )  # 3 failures, then the answer
    assert set(stored_plays(setup.engine)) == {played.row_id}
    with TautulliClient(settings_.tautulli_url, "f" * 32) as refused:
        with pytest.raises(PermanentServiceError, match="Invalid apikey"):
            fetch_server.with_options(retry_delay_seconds=0)(refused)
        assert refused.requests_made == 1
    with TautulliClient(settings_.tautulli_url, KEY) as client:
        setup.state.inject(500, 500, 500, 500, 500)
        with pytest.raises(TransientServiceError):
            fetch_server.with_options(retry_delay_seconds=0)(client)
        assert client.requests_made == 5  # the first attempt and four retries


def test_the_deployed_flow_runs_and_leaves_a_table_artifact(setup: Setup) -> None:
    setup.history.add_play(ITEMS[0], started=datetime.now(UTC) - timedelta(hours=1), percent_complete=100)
    state = tautulli_sync(TautulliSync(days=7), return_state=True)
    result = state.result()
    assert (result["plays_fetched"], result["new"], result["items_refreshed"], result["requests"]) == (
        1,
        1,
        1,
        2,
    )

    async def artifact_rows() -> Any:
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["tautulli-sync"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                )
            )
        return [artifact.data for artifact in artifacts]

    (data,) = asyncio.run(artifact_rows())
    row = (json.loads(data) if isinstance(data, str) else data)[0]
    assert (row["plays fetched"], row["new"], row["requests"]) == (1, 1, 2)


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
    stored = watch_row(row, PMS)
    assert stored is not None
    assert stored["tautulli_row_id"] == 42 and stored["rating_key"] == "91544"
    assert (stored["parent_rating_key"], stored["grandparent_rating_key"]) == (None, "91522")
    assert (stored["user_id"], stored["duration_seconds"], stored["paused_seconds"]) == (1001, 3300, 0)
    assert stored["stopped_at"] == datetime(2024, 6, 1, 17, 36, 40, tzinfo=UTC)
    assert (stored["percent_complete"], stored["watched_status"], stored["platform"]) == (97, 0.75, None)
    assert watch_row({"row_id": 1, "rating_key": ""}, PMS) is None
    assert watch_row({"row_id": None, "rating_key": 5}, PMS) is None
