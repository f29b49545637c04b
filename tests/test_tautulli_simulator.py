"""The Tautulli simulator answers like Tautulli where our sync depends on it, and sends what its Webhook
agent sends (checked against the gateway's own parser)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from simulators.serving import serve_in_thread
from simulators.tautulli import (
    DOCUMENTED_TEMPLATE,
    HistoryItem,
    SimulatorState,
    TautulliHistory,
    create_tautulli_app,
    demo_items,
    local_midnight,
    notification_parameters,
    render_template,
    send_webhook,
)
from smartplex_sync.requests import TautulliScope
from webhook_gateway.sources.tautulli import parse

KEY = "0123456789abcdef0123456789abcdef"
EPISODE = HistoryItem(
    rating_key=91544,
    title="The Long Night",
    media_type="episode",
    parent_rating_key=91530,
    grandparent_rating_key=91522,
    parent_title="Season 2",
    grandparent_title="Harbor Lights",
    media_index=3,
    parent_media_index=2,
    duration_seconds=3000,
)


@pytest.fixture
def history() -> TautulliHistory:
    return TautulliHistory()


@pytest.fixture
def served(history: TautulliHistory) -> Iterator[tuple[httpx.Client, SimulatorState]]:
    app = create_tautulli_app(history, api_key=KEY, timezone="America/New_York")
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        yield client, app.state.tautulli


def api(client: httpx.Client, **params: Any) -> tuple[int, dict[str, Any]]:
    response = client.get("/api/v2", params={"apikey": KEY, **params})
    return response.status_code, response.json()["response"]


def test_errors_come_in_the_envelope_with_tautullis_status_codes(
    served: tuple[httpx.Client, SimulatorState],
) -> None:
    client, state = served
    missing = client.get("/api/v2", params={"cmd": "get_history"})
    wrong = client.get("/api/v2", params={"cmd": "get_history", "apikey": "x" * 32})
    assert (missing.status_code, missing.json()["response"]["message"]) == (
        401,
        "Parameter apikey is required",
    )
    assert (wrong.status_code, wrong.json()["response"]) == (
        401,
        {"result": "error", "message": "Invalid apikey", "data": {}},
    )
    status, body = api(client, cmd="get_everything")
    assert status == 400 and body["message"].startswith("Unknown command: get_everything.")
    state.inject(503)
    assert api(client, cmd="server_status") == (
        503,
        {"result": "error", "message": "Check the logs for errors", "data": {}},
    )
    assert api(client, cmd="server_status") == (
        200,
        {"result": "success", "message": None, "data": {"connected": True}},
    )
    assert state.requests == 5


def test_after_and_before_compare_the_local_date_of_started(
    served: tuple[httpx.Client, SimulatorState], history: TautulliHistory
) -> None:
    client, _ = served
    midnight = local_midnight(date(2024, 3, 10), "America/New_York")  # 05:00 UTC
    before_midnight = history.add_play(EPISODE, started=midnight - timedelta(minutes=1), percent_complete=100)
    after_midnight = history.add_play(EPISODE, started=midnight + timedelta(minutes=1), percent_complete=100)
    _, on_day = api(client, cmd="get_history", after="2024-03-10", grouping=0)
    _, up_to_day_before = api(client, cmd="get_history", before="2024-03-09", grouping=0)
    assert [row["row_id"] for row in on_day["data"]["data"]] == [after_midnight.row_id]
    assert [row["row_id"] for row in up_to_day_before["data"]["data"]] == [before_midnight.row_id]


def test_rows_have_tautullis_field_names_and_types(
    served: tuple[httpx.Client, SimulatorState], history: TautulliHistory
) -> None:
    client, _ = served
    played = history.add_play(EPISODE, started=datetime(2024, 3, 10, 12, tzinfo=UTC), percent_complete=97)
    _, body = api(client, cmd="get_history")
    data = body["data"]
    assert {"recordsTotal", "recordsFiltered", "draw", "data"} <= data.keys()
    row = data["data"][0]
    assert row["row_id"] == row["id"] == row["reference_id"] == played.row_id
    assert (row["rating_key"], row["parent_rating_key"], row["grandparent_rating_key"]) == (
        91544,
        91530,
        91522,
    )
    assert row["full_title"] == "Harbor Lights - The Long Night"
    assert (row["media_index"], row["parent_media_index"]) == (3, 2)
    assert (row["started"], row["stopped"]) == (played.started, played.started + 3000 * 97 // 100)
    assert (row["percent_complete"], row["watched_status"], row["group_count"]) == (97, 1.0, 1)
    assert isinstance(row["user_id"], int) and isinstance(row["user"], str)


def test_defaults_group_resumed_sessions_and_list_sessions_in_progress(
    served: tuple[httpx.Client, SimulatorState], history: TautulliHistory
) -> None:
    client, _ = served
    first = history.add_play(EPISODE, started=datetime(2024, 3, 10, 12, tzinfo=UTC), percent_complete=40)
    history.add_play(
        EPISODE, started=first.stopped + 600, percent_complete=100, user=first.user, resumes=first
    )
    history.start_session(EPISODE, first.user, first.stopped + 9000)
    _, grouped = api(client, cmd="get_history")
    _, plain = api(client, cmd="get_history", grouping=0, include_activity=0)
    assert [(r["row_id"], r["group_count"]) for r in grouped["data"]["data"]] == [(None, 1), (2, 2)]
    assert [r["row_id"] for r in plain["data"]["data"]] == [2, 1]


def test_pages_slice_one_ordered_query(served: tuple[httpx.Client, SimulatorState]) -> None:
    client, state = served
    state.history = TautulliHistory.generate(demo_items(5), plays=30, seed=3)
    pages = [
        api(client, cmd="get_history", grouping=0, order_column="date", order_dir="asc", start=s, length=7)[
            1
        ]["data"]
        for s in range(0, 35, 7)
    ]
    rows = [row for page in pages for row in page["data"]]
    assert [len(page["data"]) for page in pages] == [7, 7, 7, 7, 2]
    assert {page["recordsFiltered"] for page in pages} == {30}
    assert [row["date"] for row in rows] == sorted(row["date"] for row in rows)
    assert len({row["row_id"] for row in rows}) == 30


def test_template_renders_every_value_as_a_string_and_keeps_unknown_parameters() -> None:
    history = TautulliHistory()
    played = history.add_play(EPISODE, started=1717260000, percent_complete=97)
    params = notification_parameters(played, action="stop", server_machine_id="pms-1", now=datetime.now(UTC))
    template = (
        '{"event": "{action}", "rating_key": "{rating_key}", "n": 5, "x": "{nope}", "{user_id}": ["{title}"]}'
    )
    rendered = render_template(template, params)
    assert rendered == {
        "event": "stop",
        "rating_key": "91544",
        "n": 5,
        "x": "{nope}",
        str(played.user.user_id): ["Harbor Lights - The Long Night"],
    }
    assert render_template('{"event": "{action}",}', params) == ""  # invalid JSON: Tautulli sends no body
    documented = render_template(DOCUMENTED_TEMPLATE, params)
    assert all(isinstance(value, str) for value in documented.values())


@pytest.mark.parametrize(("action", "event"), [("stop", "stop"), ("watched", "watched")])
def test_webhook_with_the_documented_template_asks_the_gateway_for_that_item(action: str, event: str) -> None:
    received: list[tuple[str, Any]] = []
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        received.append((request.headers["content-type"], json.loads(await request.body())))
        return {"ok": "yes"}

    played = TautulliHistory().add_play(EPISODE, started=1717260000, percent_complete=97)
    with serve_in_thread(receiver) as url:
        assert send_webhook(f"{url}/hook", played, action=action).status_code == 200
        sent = send_webhook(f"{url}/hook", played, action=action, server_machine_id="8c5f2d8a41e7b93f")
        assert sent.status_code == 200
    content_type, body = received[0]
    assert content_type == "application/json"
    parsed = parse(body)
    assert parsed.event_type == event
    assert [r.scope for r in parsed.requests] == [TautulliScope(rating_keys=["91544"])]
    assert parsed.server_hint == "simulated-pms-0001"  # the Plex server the simulated Tautulli watches
    assert parse(received[1][1]).server_hint == "8c5f2d8a41e7b93f"


def test_the_template_in_the_docs_is_the_one_the_simulator_sends() -> None:
    guide = (Path(__file__).resolve().parent.parent / "docs" / "webhooks.md").read_text()
    after_heading = guide.split("**JSON Data**", 1)[1]
    block = after_heading.split("```json", 1)[1].split("```", 1)[0]
    assert json.loads(block) == json.loads(DOCUMENTED_TEMPLATE)
