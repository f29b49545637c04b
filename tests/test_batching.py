"""The coalescing rules (webhook_gateway/batching.py): table-driven cases and properties. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartplex_sync.models import Deployment
from smartplex_sync.requests import PlexLibrarySync, TautulliSync
from smartplex_sync.store.queue import QueuedRequest
from webhook_gateway.batching import MAX_BATCH, Window, new_batch, plan_buckets, plan_merged

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
WINDOW = Window(quiet=2, max_wait=20)
LIBRARY = Deployment.PLEX_LIBRARY_SYNC


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
        webhook_id=webhook_id,
        ordinal=0,
        deployment=LIBRARY,
        parameters=parameters or PlexLibrarySync(rating_keys=[str(webhook_id)]).to_json(),
        source=source,
        event_type=event,
        received_at=at(received),
        ready_at=at(received + grace),
    )


def batch_ids(plan: Any) -> list[list[int]]:
    return [[r.webhook_id for r in b.requests] for b in plan.batches]


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
    assert [r.webhook_id for r in follow_up.requests] == list(range(1, 30))
    assert follow_up.parameters == PlexLibrarySync(rating_keys=[str(i) for i in range(1, 30)])


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
    assert batch.name == "plex-library.new-2-and-2-more"


def test_a_backlog_drains_in_batches_of_at_most_max_batch() -> None:
    waiting = [request(i, 0) for i in range(1, MAX_BATCH + 11)]
    [batch] = plan_merged(LIBRARY, waiting, at(30), WINDOW, busy=False).batches
    assert len(batch.requests) == MAX_BATCH


def test_buckets_split_by_parameters_and_bucket_and_ignore_a_run_in_progress() -> None:
    movies = PlexLibrarySync(section_types=["movie"]).to_json()
    shows = PlexLibrarySync(section_types=["show"]).to_json()
    waiting = [
        request(1, 1, parameters=movies),
        request(2, 3, parameters=movies),
        request(3, 4, parameters=shows),
        request(4, 12, parameters=movies),
    ]
    plan = plan_buckets(LIBRARY, waiting, at(11), 10, busy_lanes=set())
    assert sorted(batch_ids(plan)) == [[1, 2], [3]]
    assert plan.wake_at == at(20)


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
        assert set(merged.rating_keys) == {str(r.webhook_id) for r in taken}


def test_the_tautulli_burst_of_the_issue_is_one_query_of_fifteen_items() -> None:
    plays = [
        QueuedRequest(
            id=i,
            webhook_id=i,
            ordinal=0,
            deployment=Deployment.TAUTULLI_SYNC,
            parameters=TautulliSync(rating_keys=[str(100 + i % 15)]).to_json(),
            source="tautulli",
            event_type="stop",
            received_at=at(i * 0.5),
            ready_at=at(i * 0.5),
        )
        for i in range(30)
    ]
    [batch] = plan_merged(Deployment.TAUTULLI_SYNC, plays, at(40), WINDOW, busy=False).batches
    assert batch.parameters == TautulliSync(rating_keys=[str(100 + i) for i in range(15)])
