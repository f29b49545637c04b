"""The coalescing rules (webhook_gateway/batching.py): table-driven cases and properties. Pure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartplex_sync.models import Deployment
from smartplex_sync.requests import PlexLibrarySync, PlexScope, TautulliScope, TautulliSync
from smartplex_sync.store.queue import QueuedRequest
from webhook_gateway.batching import MAX_BATCH, Window, new_batch, plan_merged

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
WINDOW = Window(quiet=2, max_wait=20)
LIBRARY = Deployment.PLEX_LIBRARY_SYNC
SERVER = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
OTHER = uuid.UUID("00000000-0000-4000-8000-0000000000bb")


def webhook_uuid(n: int) -> uuid.UUID:
    """The n-th delivery's webhook_log id: its first 8 hex digits are n (they sort like the numbers)."""
    return uuid.UUID(f"{n:08x}-0000-4000-8000-{n:012x}")


def number(webhook_id: uuid.UUID) -> int:
    """n of `webhook_uuid(n)`."""
    return int(str(webhook_id)[:8], 16)


def plex(scope: PlexScope, *servers: uuid.UUID) -> PlexLibrarySync:
    return PlexLibrarySync.on(servers or (SERVER,), scope)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def request(
    webhook_id: int,
    received: float,
    *,
    grace: float = 0,
    parameters: dict[str, Any] | None = None,
    source: str = "plex",
    event: str = "library.new",
) -> QueuedRequest:
    return QueuedRequest(
        id=webhook_id,
        webhook_id=webhook_uuid(webhook_id),
        ordinal=0,
        deployment=LIBRARY,
        parameters=parameters or plex(PlexScope(rating_keys=[str(webhook_id)])).to_json(),
        source=source,
        event_type=event,
        received_at=at(received),
        ready_at=at(received + grace),
    )


def batch_ids(plan: Any) -> list[list[int]]:
    return [[number(r.webhook_id) for r in b.requests] for b in plan.batches]


@pytest.mark.parametrize(
    ("arrivals", "now", "batches", "wake_at"),
    [
        pytest.param([0], 1, [], 2, id="a lone delivery waits for the quiet window"),
        pytest.param([0], 2, [[1]], None, id="and runs when it ends"),
        pytest.param([0, 1, 2.5], 4, [], 4.5, id="each arrival extends the window"),
        pytest.param([0, 1, 2.5], 4.5, [[1, 2, 3]], None, id="a burst becomes one batch"),
        pytest.param(
            [i * 1.5 for i in range(20)],
            20,
            [list(range(1, 15))],
            None,
            id="a steady trickle runs by max_wait",
        ),
    ],
)
def test_trailing_window(
    arrivals: list[float], now: float, batches: list[list[int]], wake_at: float | None
) -> None:
    waiting = [request(i + 1, t) for i, t in enumerate(arrivals) if t <= now]
    plan = plan_merged(LIBRARY, waiting, at(now), WINDOW, busy=False)
    assert batch_ids(plan) == batches
    assert plan.wake_at == (at(wake_at) if wake_at is not None else None)


def test_requests_arriving_during_a_run_wait_for_it_then_become_one_follow_up() -> None:
    waiting = [request(i, i) for i in range(1, 30)]
    assert plan_merged(LIBRARY, waiting, at(60), WINDOW, busy=True).batches == ()
    [follow_up] = plan_merged(LIBRARY, waiting, at(61), WINDOW, busy=False).batches
    assert [number(r.webhook_id) for r in follow_up.requests] == list(range(1, 30))
    assert follow_up.parameters == plex(PlexScope(rating_keys=[str(i) for i in range(1, 30)]))


def test_a_request_in_its_scan_grace_never_joins_an_earlier_batch() -> None:
    download = request(1, 0, grace=120, source="radarr", event="Download")
    library_new = request(2, 1)
    plan = plan_merged(LIBRARY, [download, library_new], at(10), WINDOW, busy=False)
    assert batch_ids(plan) == [[2]]
    assert plan.wake_at == at(120)
    later = plan_merged(LIBRARY, [download], at(122), WINDOW, busy=False)
    assert batch_ids(later) == [[1]]


def test_a_batch_carries_every_source_and_event_and_a_readable_name() -> None:
    batch = new_batch(
        LIBRARY,
        [
            request(3, 1, source="sonarr", event="Download"),
            request(2, 0),
            request(4, 2, source="overseerr", event="MEDIA_AVAILABLE"),
        ],
    )
    assert batch.tags == (
        "event:Download",
        "event:MEDIA_AVAILABLE",
        "event:library.new",
        "source:overseerr",
        "source:plex",
        "source:sonarr",
        "trigger:webhook",
    )
    assert batch.name == "plex-library.new-00000002-and-2-more"  # the first delivery's id, shortened


def test_a_batch_merges_each_server_on_its_own_and_tags_the_servers_it_syncs() -> None:
    names = {SERVER: "Living Room", OTHER: "Cabin"}
    waiting = [
        request(1, 0, parameters=plex(PlexScope(rating_keys=["7"]), SERVER).to_json()),
        request(2, 1, parameters=plex(PlexScope(rating_keys=["8"]), OTHER).to_json()),
        request(3, 2, parameters=plex(PlexScope(section_types=["show"]), SERVER, OTHER).to_json()),
    ]
    [batch] = plan_merged(LIBRARY, waiting, at(10), WINDOW, busy=False, server_names=names).batches
    assert batch.parameters == PlexLibrarySync(
        servers={
            SERVER: PlexScope(rating_keys=["7"], section_types=["show"]),
            OTHER: PlexScope(rating_keys=["8"], section_types=["show"]),
        }
    )
    assert [t for t in batch.tags if t.startswith("server:")] == ["server:Cabin", "server:Living Room"]
    unnamed = new_batch(LIBRARY, waiting, server_names={OTHER: "Cabin"})
    assert [t for t in unnamed.tags if t.startswith("server:")] == ["server:Cabin"]  # a server deleted since
    every_server = new_batch(
        LIBRARY, [*waiting, request(4, 3, parameters=PlexLibrarySync().to_json())], server_names=names
    )
    assert every_server.parameters == PlexLibrarySync(servers=None)
    assert not [t for t in every_server.tags if t.startswith("server:")]


def test_a_backlog_drains_in_batches_of_at_most_max_batch() -> None:
    waiting = [request(i, 0) for i in range(1, MAX_BATCH + 11)]
    [batch] = plan_merged(LIBRARY, waiting, at(30), WINDOW, busy=False).batches
    assert len(batch.requests) == MAX_BATCH


# --- properties -------------------------------------------------------------------------------------

arrival = st.tuples(st.floats(min_value=0, max_value=60), st.sampled_from([0, 0, 120]))


@settings(max_examples=300, deadline=None)
@given(st.lists(arrival, min_size=1, max_size=25), st.floats(min_value=0, max_value=200), st.booleans())
def test_a_plan_never_starts_a_request_early_and_never_drops_one(
    arrivals: list[tuple[float, float]], now: float, busy: bool
) -> None:
    waiting = [request(i + 1, t, grace=g) for i, (t, g) in enumerate(arrivals) if t <= now]
    plan = plan_merged(LIBRARY, waiting, at(now), WINDOW, busy)
    taken = [r for b in plan.batches for r in b.requests]
    assert all(r.ready_at <= at(now) for r in taken)  # no grace cut short
    assert len(plan.batches) <= 1 and (not busy or not taken)
    left = [r for r in waiting if r not in taken]
    if left:  # whatever is left is looked at again, unless a run in progress will free the way
        assert busy or plan.wake_at is not None
        assert plan.wake_at is None or plan.wake_at > at(now)
    if plan.batches:
        merged = plan.batches[0].parameters
        assert isinstance(merged, PlexLibrarySync)
        assert set(merged.scope_for(SERVER).rating_keys) == {str(number(r.webhook_id)) for r in taken}


def test_the_tautulli_burst_of_the_issue_is_one_query_of_fifteen_items() -> None:
    plays = [
        QueuedRequest(
            id=i,
            webhook_id=webhook_uuid(i),
            ordinal=0,
            deployment=Deployment.TAUTULLI_SYNC,
            parameters=TautulliSync.on([SERVER], TautulliScope(rating_keys=[str(100 + i % 15)])).to_json(),
            source="tautulli",
            event_type="stop",
            received_at=at(i * 0.5),
            ready_at=at(i * 0.5),
        )
        for i in range(30)
    ]
    [batch] = plan_merged(Deployment.TAUTULLI_SYNC, plays, at(40), WINDOW, busy=False).batches
    assert batch.parameters == TautulliSync.on(
        [SERVER], TautulliScope(rating_keys=[str(100 + i) for i in range(15)])
    )
