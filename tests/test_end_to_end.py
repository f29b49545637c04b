"""Each service's delivery → webhook_log row → flow run of the right deployment → run to completion by a
real worker against the simulated services → the database in step. Real HTTP, real Prefect, no mocks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prefect.client.orchestration import get_client
from sqlalchemy import Engine, select
from starlette.routing import Mount

from simulators import overseerr, plex, radarr, sonarr, tautulli
from simulators.demo import DemoWorld, history_item
from simulators.plex_library import MOVIE, SHOW
from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine, queue
from smartplex_sync.store.accounts import configure
from smartplex_sync.store.tables import (
    media_items,
    overseerr_requests,
    servers,
    sync_events,
    watch_history,
    webhook_log,
)
from tests.conftest import settings_of
from tests.support.prefect_stack import PrefectStack
from webhook_gateway.app import create_app


@pytest.fixture(scope="module")
def stack(prefect_worker: PrefectStack) -> PrefectStack:
    return prefect_worker


@pytest.fixture(scope="module")
def engine(stack: PrefectStack) -> Iterator[Engine]:
    engine = make_engine(stack.database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def gateway(stack: PrefectStack) -> Iterator[str]:
    settings = Settings(database_url=stack.database_url, _env_file=None, **FAST)
    with serve_in_thread(create_app(settings)) as url:
        yield url


FAST = {
    **{f"{s}_quiet_seconds": 0.5 for s in ("plex", "tautulli", "sonarr", "radarr", "overseerr")},
    **{f"{s}_max_wait_seconds": 5 for s in ("plex", "tautulli", "sonarr", "radarr", "overseerr")},
    "plex_scan_grace_seconds": 3,
    "dispatch_poll_seconds": 1,
    "run_poll_seconds": 0.5,
}


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} not within {timeout:.0f}s")


def dispatched_row(engine: Engine, row_id: str) -> dict[str, Any]:
    """The delivery once every sync it asked for has a run, with `flow_run_id`: its first run."""
    webhook_id = uuid.UUID(row_id)

    def done() -> dict[str, Any] | None:
        with engine.connect() as conn:
            row = conn.execute(select(webhook_log).where(webhook_log.c.id == webhook_id)).one()._asdict()
        runs = served_by(engine, webhook_id)
        return {**row, "flow_run_id": runs[0]} if row["processed"] and runs else None

    return wait_for(done, 240, f"webhook {row_id} dispatched")


def home_server(engine: Engine) -> uuid.UUID:
    """The server the settings made (the demo's Plex)."""
    with engine.connect() as conn:
        return conn.execute(select(servers.c.id).where(servers.c.name == "Plex")).scalar_one()


def finished_runs(run_ids: list[str], timeout: float = 420) -> dict[str, Any]:
    async def states() -> dict[str, Any]:
        async with get_client() as client:
            runs = [await client.read_flow_run(run_id) for run_id in run_ids]
            names = {r.id: (await client.read_deployment(r.deployment_id)).name for r in runs}
        return {str(r.id): (names[r.id], r) for r in runs if r.state and r.state.is_final()}

    return wait_for(
        lambda: (s := asyncio.run(states())) and len(s) == len(run_ids) and s, timeout, "flow runs"
    )


def test_every_service_delivery_becomes_a_completed_run_that_syncs(
    gateway: str, engine: Engine, demo_services: tuple[DemoWorld, str]
) -> None:
    world, _ = demo_services
    library = world.library
    movies_section = next(s for s in library.sections.values() if s.type == MOVIE)
    with world.lock:
        new_movie = library.add_movie(movies_section.key, at=int(time.time()))
        play = world.history.add_play(
            history_item(library, new_movie), started=int(time.time()) - 7200, percent_complete=95
        )
    a_show = next(i for i in library.items.values() if i.type == SHOW)
    series = next(s for s in world.series if s["title"] == a_show.title)
    radarr_movie = world.movies[0]
    request = overseerr.generate_requests(1, seed=3)[0]

    responses = {
        "plex-library-sync": plex.send_library_new(
            f"{gateway}/api/webhooks/plex", new_movie, library=library
        ),
        "tautulli-sync": tautulli.send_webhook(
            f"{gateway}/api/webhooks/tautulli", play, server_machine_id=library.machine_identifier
        ),
        "sonarr-sync": sonarr.send_download(f"{gateway}/api/webhooks/sonarr", series),
        "radarr-sync": radarr.send_download(f"{gateway}/api/webhooks/radarr", radarr_movie),
        "overseerr-sync": overseerr.send_notification(
            f"{gateway}/api/webhooks/overseerr", "MEDIA_APPROVED", request
        ),
    }
    for deployment, response in responses.items():
        assert response.status_code == 202, (deployment, response.text)
        assert deployment in response.json()["action"]

    rows = [dispatched_row(engine, r.json()["id"]) for r in responses.values()]
    run_ids = sorted({run for row in rows for run in served_by(engine, row["id"])})
    runs = finished_runs(run_ids)
    for deployment, run in runs.values():
        assert run.state.is_completed(), (deployment, run.state.message)
    assert {d for d, _ in runs.values()} >= set(responses)

    home = home_server(engine)
    plex_run = next(r for d, r in runs.values() if "source:plex" in r.tags)
    scope = plex_run.parameters["request"]["servers"][str(home)]
    assert scope["section_ids"] == [movies_section.key] and scope["mode"] == "incremental"
    assert plex_run.parameters["trigger"] == "webhook"
    assert {"source:plex", "event:library.new", "trigger:webhook", "server:Plex"} <= set(plex_run.tags)

    with engine.connect() as conn:
        synced = conn.execute(
            select(media_items).where(media_items.c.plex_id == str(new_movie.rating_key))
        ).one()
        play_row = conn.execute(
            select(watch_history).where(watch_history.c.tautulli_row_id == play.row_id)
        ).one()
        request_row = conn.execute(
            select(overseerr_requests).where(overseerr_requests.c.overseerr_request_id == request["id"])
        ).one()
        events = conn.execute(
            select(sync_events.c.sync_type, sync_events.c.trigger_type, sync_events.c.status)
        ).all()
    assert synced.title == new_movie.title and synced.server_id == home
    assert synced.metadata["plex_added_at"] and synced.library_section == movies_section.title
    assert play_row.rating_key == str(new_movie.rating_key) and play_row.server_id == home
    # Approved; "available" when Overseerr already says the media is there (MediaStatus 5).
    assert request_row.overseerr_status == ("available" if request["media"]["status"] == 5 else "approved")
    assert {(e.sync_type, "webhook", "completed") for e in events} >= {
        (service, "webhook", "completed") for service in ("plex", "tautulli", "sonarr", "radarr", "overseerr")
    }


def test_rows_left_undispatched_are_picked_up_when_the_gateway_starts(
    stack: PrefectStack, tmp_path: Path
) -> None:
    """A gateway that recorded deliveries but died before dispatching them: the next one dispatches them."""
    database_url = f"sqlite:///{tmp_path / 'restart.db'}"
    engine = make_engine(database_url)
    migrate(engine)
    configure(engine, Settings(**settings_of({**stack.env, "SMARTPLEX_DATABASE_URL": database_url})))
    settings = Settings(database_url=database_url, _env_file=None, **FAST)
    with serve_in_thread(create_app(settings, background=False)) as recording_only:
        response = httpx.post(
            f"{recording_only}/api/webhooks/radarr",
            json={"eventType": "Download", "movie": {"id": 9, "title": "X", "tmdbId": 1}},
        )
        assert response.status_code == 202, response.text
        row_id = response.json()["id"]
    with engine.connect() as conn:
        processed = conn.execute(select(webhook_log.c.processed).where(webhook_log.c.id == uuid.UUID(row_id)))
        assert processed.scalar_one() is False
        assert len(queue.requests_of(conn, uuid.UUID(row_id))) == 2
    with serve_in_thread(create_app(settings)):
        dispatched_row(engine, row_id)
    assert len(served_by(engine, uuid.UUID(row_id))) == 2


def test_a_failing_run_shows_its_error_on_the_delivery(gateway: str, engine: Engine) -> None:
    """A library.new for a section Plex does not have: the run fails, and webhook_log says why."""
    payload = {
        "event": "library.new",
        "Metadata": {"librarySectionID": 999, "ratingKey": "1", "type": "movie"},
    }
    response = httpx.post(f"{gateway}/api/webhooks/plex", files={"payload": (None, json.dumps(payload))})
    assert response.status_code == 202, response.text
    row = dispatched_row(engine, response.json()["id"])
    [(_, run)] = finished_runs([row["flow_run_id"]]).values()
    assert run.state.is_failed()

    def error_shown() -> str | None:
        with engine.connect() as conn:
            return conn.execute(
                select(webhook_log.c.error_message).where(webhook_log.c.id == row["id"])
            ).scalar_one()

    message = wait_for(error_shown, 60, "the run's error on its delivery")
    assert message.startswith(f"flow run {row['flow_run_id']} failed:") and "999" in message
    assert "Plex (" in message  # the server whose part failed
    status = httpx.get(f"{gateway}/api/webhooks/status").json()
    assert next(w for w in status["recent_webhooks"] if w["id"] == str(row["id"]))["error_message"] == message


def served_by(engine: Engine, webhook_id: uuid.UUID) -> list[str]:
    """Every flow run that served a delivery, through the link tables."""
    with engine.connect() as conn:
        return queue.runs_of(conn, [webhook_id]).get(webhook_id, [])


def mounted_state(demo_app: tuple[DemoWorld, FastAPI], path: str, name: str) -> Any:
    """The simulator state of one service mounted in the demo app (to inject faults)."""
    _, app = demo_app

    def mounts(routes: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for route in routes:
            if isinstance(route, Mount):
                yield prefix + route.path, route.app
                yield from mounts(route.app.routes, prefix + route.path)  # type: ignore[attr-defined]

    [found] = [mounted for full, mounted in mounts(app.routes, "") if full == path]
    return getattr(found.state, name)


def test_forty_new_items_become_one_or_two_runs_that_sync_all_forty(
    gateway: str, engine: Engine, demo_services: tuple[DemoWorld, str]
) -> None:
    """Half with their section (a section sync), half as the seed guide sends them (by rating key)."""
    world, _ = demo_services
    library = world.library
    section = next(s for s in library.sections.values() if s.type == MOVIE)
    with world.lock:
        new = [library.add_movie(section.key, at=int(time.time())) for _ in range(40)]
    sent = []
    for n, item in enumerate(new):
        if n % 2:
            response = plex.send_library_new(f"{gateway}/api/webhooks/plex", item, library=library)
        else:
            payload = {"event": "library.new", "Metadata": {"ratingKey": str(item.rating_key)}}
            response = httpx.post(
                f"{gateway}/api/webhooks/plex", files={"payload": (None, json.dumps(payload))}
            )
        assert response.status_code == 202, response.text
        sent.append(response.json()["id"])
    rows = [dispatched_row(engine, webhook_id) for webhook_id in sent]
    runs = finished_runs(sorted({run for row in rows for run in served_by(engine, row["id"])}))
    assert 1 <= len(runs) <= 2
    assert all(run.state.is_completed() for _, run in runs.values())
    with engine.connect() as conn:
        stored = set(conn.execute(select(media_items.c.plex_id)).scalars())
    assert {str(item.rating_key) for item in new} <= stored


def test_a_burst_during_a_run_gets_exactly_one_follow_up_run(
    gateway: str,
    engine: Engine,
    demo_services: tuple[DemoWorld, str],
    demo_app: tuple[DemoWorld, FastAPI],
) -> None:
    world, _ = demo_services
    tautulli_state = mounted_state(demo_app, "/tautulli", "tautulli")
    items = [history_item(world.library, i) for i in list(world.library.items.values()) if i.type == MOVIE][
        :11
    ]
    now = int(time.time())
    with world.lock:
        plays = [world.history.add_play(item, started=now - 7200, percent_complete=95) for item in items]

    def stop(play: Any) -> uuid.UUID:
        response = tautulli.send_webhook(
            f"{gateway}/api/webhooks/tautulli", play, server_machine_id=world.library.machine_identifier
        )
        assert response.status_code == 202, response.text
        return uuid.UUID(response.json()["id"])

    tautulli_state.inject(8.0)  # the first run's first request stalls: it is surely running meanwhile
    first = stop(plays[0])
    [first_run] = wait_for(lambda: served_by(engine, first), 240, "the first run")

    def running() -> bool:
        async def state() -> Any:
            async with get_client() as client:
                return (await client.read_flow_run(first_run)).state

        current = asyncio.run(state())
        return current is not None and (current.is_running() or current.is_final())

    wait_for(running, 240, "the first run running")
    burst = [stop(play) for play in plays[1:]]
    for webhook_id in burst:
        dispatched_row(engine, str(webhook_id))
    follow_ups = {run for webhook_id in burst for run in served_by(engine, webhook_id)}
    assert len(follow_ups) == 1 and first_run not in follow_ups
    [(_, follow_up)] = finished_runs(sorted(follow_ups)).values()
    assert follow_up.state.is_completed()
    assert sorted(
        follow_up.parameters["request"]["servers"][str(home_server(engine))]["rating_keys"]
    ) == sorted(str(i.rating_key) for i in items[1:])
    with engine.connect() as conn:
        stored = set(conn.execute(select(watch_history.c.tautulli_row_id)).scalars())
    assert {p.row_id for p in plays} <= stored
