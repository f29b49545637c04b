"""The Tautulli client against the simulator over real HTTP, and the window boundary it computes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.clients.tautulli import TautulliClient, history_after
from simulators.serving import serve_in_thread
from simulators.tautulli import SimulatorState, TautulliHistory, create_tautulli_app, demo_items
from smartplex_sync.errors import ConfigurationError, PermanentServiceError, TransientServiceError
from smartplex_sync.settings import Settings
from smartplex_sync.store.accounts import Integration
from tests.support.clients import get_history

KEY = "0123456789abcdef0123456789abcdef"
ZONES = ["UTC", "America/New_York", "Pacific/Kiritimati", "Etc/GMT+12", "Asia/Kolkata", "Pacific/Chatham"]


@pytest.fixture
def tautulli() -> Iterator[tuple[str, SimulatorState]]:
    app = create_tautulli_app(TautulliHistory(), api_key=KEY)
    with serve_in_thread(app) as url:
        yield url, app.state.tautulli


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    now=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
    days=st.integers(1, 90),
    into_window=st.integers(0, 90 * 86400),
)
def test_after_never_leaves_out_a_play_of_the_window(
    zone: str, now: datetime, days: int, into_window: int
) -> None:
    window_start = now - timedelta(days=days)
    started = min(now, window_start + timedelta(seconds=into_window))
    local_day = started.astimezone(ZoneInfo(zone)).date()
    assert local_day >= history_after(now, days)  # Tautulli keeps rows whose local date is >= after


def test_history_is_every_finished_play_since_after_once_oldest_first(
    tautulli: tuple[str, SimulatorState],
) -> None:
    url, state = tautulli
    state.history = TautulliHistory.generate(demo_items(20), plays=700, days=20, seed=5)
    state.history.start_session(demo_items(1)[0], state.history.users[0], int(datetime.now(UTC).timestamp()))
    after = history_after(datetime.now(UTC), 7)
    with TautulliClient(url, KEY) as client:
        rows = get_history(client, after=after, page_size=100)
        requests = client.requests_made
    tz = state.timezone
    expected = {
        p.row_id for p in state.history.plays if datetime.fromtimestamp(p.started, tz).date() >= after
    }
    assert [row["row_id"] for row in rows] == sorted(
        expected, key=lambda i: state.history.plays[i - 1].started
    )
    assert requests == len(expected) // 100 + 1
    assert state.commands == {"get_history": requests}


def test_single_item_history_page_by_page(tautulli: tuple[str, SimulatorState]) -> None:
    url, state = tautulli
    state.history = TautulliHistory.generate(demo_items(10), plays=200, days=400, seed=9)
    with TautulliClient(url, KEY) as client:
        pages = list(client.history_pages(rating_key="1003", page_size=10))
    expected = [p.row_id for p in state.history.plays if p.item.rating_key == 1003]
    assert sorted(row["row_id"] for page in pages for row in page.rows) == expected
    assert [page.fetched for page in pages] == [min(10 * n, len(expected)) for n in range(1, len(pages) + 1)]
    assert {page.total for page in pages} == {len(expected)}


def test_a_play_finishing_while_paging_makes_no_earlier_play_be_skipped_or_repeated(
    tautulli: tuple[str, SimulatorState],
) -> None:
    url, state = tautulli
    state.history = TautulliHistory.generate(demo_items(3), plays=30, days=5, seed=4)
    earliest = min(state.history.plays, key=lambda p: p.started)
    with TautulliClient(url, KEY) as client:
        pages = client.history_pages(page_size=10)
        first = next(pages)
        state.history.add_play(earliest.item, started=earliest.started - 60, percent_complete=50)
        rest = [row for page in pages for row in page.rows]
    row_ids = [row["row_id"] for row in first.rows + rest]
    assert sorted(row_ids) == list(range(1, 31))  # play 31 sorts before the offset: the next sync has it


def test_wrong_key_says_so_in_tautullis_words(tautulli: tuple[str, SimulatorState]) -> None:
    url, _ = tautulli
    with TautulliClient(url, "f" * 32) as client, pytest.raises(PermanentServiceError) as caught:
        client.check()
    assert caught.value.status_code == 401
    message = str(caught.value)
    assert "Invalid apikey" in message and "API key of the Tautulli integration" in message


def test_server_errors_and_timeouts_are_transient(tautulli: tuple[str, SimulatorState]) -> None:
    url, state = tautulli
    state.inject(500, 0.5)
    with TautulliClient(url, KEY, timeout=0.2) as client:
        with pytest.raises(TransientServiceError, match="Check the logs for errors"):
            client.server_info()
        with pytest.raises(TransientServiceError, match="timed out"):
            client.server_info()
        assert client.server_info().identifier == "simulated-pms-0001"


def test_check_is_one_line_naming_the_plex_server(tautulli: tuple[str, SimulatorState]) -> None:
    url, _ = tautulli
    with TautulliClient(url, KEY) as client:
        line = client.check()
    assert "\n" not in line and "'SmartPlex Demo'" in line and "simulated-pms-0001" in line


def test_answers_that_are_not_tautullis_envelope_are_permanent_errors() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"status": "ok"}),
            httpx.Response(200, json={"response": {"result": "error", "message": "No data", "data": {}}}),
            httpx.Response(200, json={"response": {"result": "success", "message": None, "data": {"x": 1}}}),
            httpx.Response(404, text="<html>Not Found</html>"),
        ]
    )
    transport = httpx.MockTransport(lambda request: next(answers))
    with TautulliClient("http://tautulli.test", KEY, transport=transport) as client:
        with pytest.raises(PermanentServiceError, match="not Tautulli's response envelope"):
            client.command("get_server_info")
        with pytest.raises(PermanentServiceError, match="get_history failed: No data"):
            client.command("get_history")
        with pytest.raises(PermanentServiceError, match="without a data"):
            get_history(client)
        with pytest.raises(PermanentServiceError) as caught:
            client.command("get_server_info")
        assert caught.value.status_code == 404


def integration(url: str | None, api_key: str | None) -> Integration:
    return Integration(uuid.uuid4(), uuid.uuid4(), None, "tautulli", "Basement Tautulli", url, api_key)


def test_an_integration_without_url_or_key_is_named() -> None:
    settings = Settings(_env_file=None, http_timeout_seconds=3)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="'Basement Tautulli' has no url or api_key"):
        TautulliClient.for_integration(integration(None, None), settings)
    with pytest.raises(ConfigurationError, match="'Basement Tautulli' has no api_key:"):
        TautulliClient.for_integration(integration("http://t:8181", ""), settings)
    with pytest.raises(ConfigurationError, match="has no url:"):
        TautulliClient.for_integration(integration("", KEY), settings)
    with TautulliClient.for_integration(integration("http://t:8181/tautulli/", KEY), settings) as client:
        assert client.base_url == "http://t:8181/tautulli"
        assert client._http.params["apikey"] == KEY and client._http.timeout.read == 3
    assert KEY not in repr(integration("http://t:8181", KEY))  # a row never prints its key


def test_the_api_key_never_reaches_a_log_line_even_at_info(
    tautulli: tuple[str, SimulatorState], caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logs every request's URL at INFO, and Tautulli takes its key in the query string."""
    url, _ = tautulli
    caplog.set_level(logging.INFO, logger="httpx")
    with TautulliClient(url, KEY) as client:
        client.server_info()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "get_server_info" in logged  # the request was logged
    assert KEY not in logged and "apikey=[redacted]" in logged
