"""sonarr-sync and radarr-sync against their simulators over real HTTP: per server, the arr that serves it
(SmartPlex's `integrations`) fills its `arr_items` and links its `media_items`; webhook-fed runs need no
integration. The flow bodies run in-process (`tests.support.pipeline`); the tests of retries run with a
real Prefect server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOGGING_TO_API_ENABLED,
    PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
    temporary_settings,
)
from sqlalchemy import Connection, Engine, select, update

import flows.radarr_sync as radarr_flow
import flows.sonarr_sync as sonarr_flow
from deployments.processes import free_port
from simulators.radarr import create_radarr_app
from simulators.serving import serve_in_thread
from simulators.sonarr import create_sonarr_app, download_payload
from smartplex_sync.errors import SyncFailedError
from smartplex_sync.models import ArrItem, Source
from smartplex_sync.requests import RadarrSync, SonarrScope, SonarrSync, Trigger
from smartplex_sync.settings import get_settings
from smartplex_sync.store.arr import link_arr_ids
from smartplex_sync.store.tables import arr_items, integrations, media_items, sync_events
from tests.support.factories import add_integration, add_movie, add_server, add_user
from tests.support.pipeline import flows_in_process
from webhook_gateway import sources


@dataclass
class Env:
    """The database with one owner and their server (`server_id`), simulators served on `stack`."""

    engine: Engine
    stack: ExitStack
    owner: uuid.UUID
    server_id: uuid.UUID
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def serve(self, app: FastAPI) -> str:
        return self.stack.enter_context(serve_in_thread(app))

    def integration(
        self,
        service: str,
        url: str,
        api_key: str | None,
        *,
        server_id: uuid.UUID | None = None,
        **values: Any,
    ) -> uuid.UUID:
        """An active integration of the owner serving `server_id` (None: every server of theirs)."""
        with self.engine.begin() as conn:
            integration_id = add_integration(
                conn, self.owner, service, url=url, server_id=server_id, **values
            )
            conn.execute(
                update(integrations).where(integrations.c.id == integration_id).values(api_key=api_key)
            )
        return integration_id

    def server(self, name: str, machine_id: str, owner: uuid.UUID | None = None) -> uuid.UUID:
        with self.engine.begin() as conn:
            return add_server(conn, owner or self.owner, name=name, machine_id=machine_id)


def _env(stack: ExitStack, engine: Engine) -> Env:
    with engine.begin() as conn:
        owner = add_user(conn, "owner@example.com")
        server_id = add_server(conn, owner, name="Living room", machine_id="machine-1")
    return Env(engine, stack, owner, server_id)


@pytest.fixture
def env(database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """In-process flows (tasks are plain functions, artifacts collected); no service configured until a
    test adds an integration."""
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
    get_settings.cache_clear()
    artifacts = flows_in_process(monkeypatch)
    with ExitStack() as stack:
        found = _env(stack, engine)
        found.artifacts = artifacts
        yield found
    get_settings.cache_clear()


@pytest.fixture
def prefect_env(
    prefect_api_url: str, database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Env]:
    """The flows with their real tasks (retries) and the session's Prefect server, without the warning
    Prefect gives for task logs outside a flow run (`.fn()` calls)."""
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
    get_settings.cache_clear()
    with (
        temporary_settings(
            updates={
                PREFECT_API_URL: prefect_api_url,
                PREFECT_LOGGING_TO_API_ENABLED: False,
                PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore",
            }
        ),
        ExitStack() as stack,
    ):
        yield _env(stack, engine)
    get_settings.cache_clear()


def no_retry_delay(monkeypatch: pytest.MonkeyPatch, module: Any, task_name: str) -> None:
    task = getattr(module, task_name)
    monkeypatch.setattr(module, task_name, task.with_options(retry_delay_seconds=0, retry_jitter_factor=None))


def add_show(conn: Connection, server_id: uuid.UUID, key: str, tvdb_id: int | None) -> None:
    """A show and its episode as the Plex sync writes them: the episode carries its show's ids."""
    for plex_id, type_, title, metadata in (
        (key, "show", key, {}),
        (f"{key}-e1", "episode", "Pilot", {"plex_grandparent_rating_key": key}),
    ):
        conn.execute(
            media_items.insert().values(
                id=uuid.uuid4(), server_id=server_id, plex_id=plex_id, type=type_, title=title,
                tvdb_id=tvdb_id, metadata=metadata, genres=[],
            )
        )  # fmt: skip


def arr_columns(engine: Engine, server_id: uuid.UUID) -> dict[str, tuple[int | None, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                media_items.c.plex_id, media_items.c.sonarr_series_id, media_items.c.radarr_movie_id
            ).where(media_items.c.server_id == server_id)
        )
        return {r.plex_id: (r.sonarr_series_id, r.radarr_movie_id) for r in rows}


def stored_arr(engine: Engine, server_id: uuid.UUID) -> set[tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(arr_items.c.service, arr_items.c.arr_id).where(arr_items.c.server_id == server_id)
        )
        return {(r.service, r.arr_id) for r in rows}


def events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(sync_events).order_by(sync_events.c.started_at)).all()


def part(result: dict[str, Any], server_id: uuid.UUID) -> dict[str, Any]:
    return result["servers"][str(server_id)]


def sonarr(request: SonarrSync | None = None, trigger: Trigger = "manual") -> dict[str, Any]:
    return sonarr_flow.sonarr_sync.fn(request or SonarrSync(), trigger)


def radarr(request: RadarrSync | None = None, trigger: Trigger = "manual") -> dict[str, Any]:
    return radarr_flow.radarr_sync.fn(request or RadarrSync(), trigger)


def secrets_absent(secrets: list[str], *texts: Any) -> None:
    for text in texts:
        dumped = json.dumps(text, default=str)
        assert not [secret for secret in secrets if secret in dumped], dumped


def test_full_sonarr_sync_links_what_both_sides_have(env: Env) -> None:
    app = create_sonarr_app(count=6, seed=3, api_key="sonarr-key-of-the-owner")
    series = app.state.series
    with env.engine.begin() as conn:
        for item in series[:4]:
            add_show(conn, env.server_id, f"show{item['id']}", item["tvdbId"])
        add_show(conn, env.server_id, "plex-only", 1)
    integration = env.integration(
        "sonarr", env.serve(app), "sonarr-key-of-the-owner", server_id=env.server_id
    )
    report = part(sonarr(trigger="scheduled"), env.server_id)

    ids = arr_columns(env.engine, env.server_id)
    for item in series[:4]:
        assert ids[f"show{item['id']}"] == ids[f"show{item['id']}-e1"] == (item["id"], None)
    assert ids["plex-only"] == ids["plex-only-e1"] == (None, None)
    assert (report["received"], report["matched"], report["unmatched"], report["media_items_updated"]) == (
        6,
        4,
        2,
        8,
    )
    assert report["library_unlinked"] == 1 and report["source"] == "/api/v3/series"
    assert report["requests"] == app.state.controls.requests_made == 1
    assert stored_arr(env.engine, env.server_id) == {("sonarr", s["id"]) for s in series}
    (artifact,) = env.artifacts
    assert artifact["key"] == "sonarr-sync" and "Living room: completed" in artifact["description"]
    (row,) = artifact["table"]
    assert (row["server"], row["matched"]) == ("Living room", 4)
    assert sorted(row["not in library"].split(", ")) == sorted(s["title"] for s in series[4:])
    (event,) = events(env.engine)
    assert (event.sync_type, event.trigger_type, event.status, event.integration_id) == (
        "sonarr", "scheduled", "completed", integration,
    )  # fmt: skip
    assert (event.items_discovered, event.items_updated, event.items_removed) == (6, 8, 0)

    # Sonarr drops a series: the next full run unlinks it.
    app.state.series = series[1:]
    report = part(sonarr(), env.server_id)
    assert arr_columns(env.engine, env.server_id)[f"show{series[0]['id']}-e1"] == (None, None)
    assert (report["removed"], report["media_items_updated"]) == (1, 2)
    secrets_absent(["sonarr-key-of-the-owner"], env.artifacts, [e.sync_metadata for e in events(env.engine)])


def test_webhook_fed_run_needs_no_sonarr_and_links_once_plex_catches_up(env: Env) -> None:
    """The Download webhook's sonarr-sync may run before the Plex sync has the episode."""
    series = create_sonarr_app(count=1).state.series[0]
    sent = download_payload(series)["series"]
    [request] = [
        r
        for r in sources.parse(Source.SONARR, download_payload(series)).requests
        if isinstance(r.scope, SonarrScope)
    ]
    assert request.scope == SonarrScope(
        series=[
            ArrItem(
                "sonarr",
                sent["id"],
                sent["title"],
                sent["tvdbId"],
                sent["tmdbId"] or None,
                sent.get("imdbId"),
                sent["path"],
            )
        ]
    )
    other = env.server("Cabin", "machine-2")
    result = sonarr(request.on([env.server_id]).parameters, "webhook")
    report = part(result, env.server_id)
    assert (report["source"], report["received"], report["matched"], report["requests"]) == (
        "webhook",
        1,
        0,
        0,
    )
    assert set(result["servers"]) == {str(env.server_id)}  # the other server is not this delivery's
    assert (
        stored_arr(env.engine, env.server_id) == {("sonarr", sent["id"])}
        and stored_arr(env.engine, other) == set()
    )

    with env.engine.begin() as conn:  # the Plex library sync lands, then calls link_arr_ids
        add_show(conn, env.server_id, "new-show", series["tvdbId"])
        add_show(conn, other, "new-show", series["tvdbId"])  # the same show on the other server
        assert link_arr_ids(conn, env.server_id) == 2
        assert link_arr_ids(conn, other) == 0  # that server's Sonarr never named it
    assert arr_columns(env.engine, env.server_id)["new-show-e1"] == (series["id"], None)
    assert arr_columns(env.engine, other)["new-show-e1"] == (None, None)


def test_a_server_no_arr_serves_is_skipped_and_an_integration_lacking_a_setting_fails(env: Env) -> None:
    result = sonarr()
    assert (
        part(result, env.server_id)["outcome"] == "skipped: no active Sonarr integration serves this server"
    )
    assert events(env.engine) == []
    env.integration("sonarr", "http://127.0.0.1:1", None, server_id=env.server_id)
    with pytest.raises(SyncFailedError, match="sonarr integration 'Sonarr' has no api_key"):
        sonarr()
    env.integration("radarr", "", "radarr-key", server_id=None)
    with pytest.raises(SyncFailedError, match="radarr integration 'Radarr' has no url"):
        radarr()
    assert [(e.sync_type, e.status) for e in events(env.engine)] == [
        ("sonarr", "failed"),
        ("radarr", "failed"),
    ]


def test_a_full_run_reads_each_integration_once_however_many_servers_it_serves(env: Env) -> None:
    """The owner's Radarr serves both their servers (server_id NULL): one read, each server linked."""
    app = create_radarr_app(count=4, seed=2, api_key="radarr-key-of-the-owner")
    movies = app.state.movies
    cabin = env.server("Cabin", "machine-2")
    with env.engine.begin() as conn:
        add_movie(conn, env.server_id, "1001", tmdb_id=movies[0]["tmdbId"])
        add_movie(conn, cabin, "1001", tmdb_id=movies[1]["tmdbId"])  # same rating key, another movie
    env.integration("radarr", env.serve(app), "radarr-key-of-the-owner")
    result = radarr(trigger="scheduled")
    assert app.state.controls.requests_made == 1
    assert {part(result, s)["outcome"] for s in (env.server_id, cabin)} == {"completed"}
    assert arr_columns(env.engine, env.server_id)["1001"] == (None, movies[0]["id"])
    assert arr_columns(env.engine, cabin)["1001"] == (None, movies[1]["id"])
    assert (
        stored_arr(env.engine, env.server_id)
        == stored_arr(env.engine, cabin)
        == {("radarr", m["id"]) for m in movies}
    )
    assert [e.server_id for e in events(env.engine)] == [env.server_id, cabin]


def test_two_servers_arrs_stay_apart_and_one_that_is_down_fails_its_own_part(env: Env) -> None:
    """Each server has its own Sonarr (another owner's for the second): a full run of each server stores
    and links only its own series, and a Sonarr that is down fails its server's part only."""
    mine = create_sonarr_app(count=3, seed=1, api_key="sonarr-key-of-the-owner")
    theirs = create_sonarr_app(count=3, seed=2, api_key="sonarr-key-of-the-cabin")
    with env.engine.begin() as conn:
        bob = add_user(conn, "bob@example.com")
    cabin = env.server("Cabin", "machine-2", owner=bob)
    env.integration("sonarr", env.serve(mine), "sonarr-key-of-the-owner", server_id=env.server_id)
    with env.engine.begin() as conn:
        add_integration(
            conn, bob, "sonarr", url=env.serve(theirs), api_key="sonarr-key-of-the-cabin", server_id=cabin
        )
        # the same rating key on both servers, each the first series of its own Sonarr
        add_show(conn, env.server_id, "2001", mine.state.series[0]["tvdbId"])
        add_show(conn, cabin, "2001", theirs.state.series[0]["tvdbId"])
    result = sonarr(trigger="scheduled")
    assert arr_columns(env.engine, env.server_id)["2001"] == (mine.state.series[0]["id"], None)
    assert arr_columns(env.engine, cabin)["2001"] == (theirs.state.series[0]["id"], None)
    assert stored_arr(env.engine, env.server_id) == {("sonarr", s["id"]) for s in mine.state.series}
    assert stored_arr(env.engine, cabin) == {("sonarr", s["id"]) for s in theirs.state.series}
    assert part(result, cabin)["requests"] == 1

    with env.engine.begin() as conn:  # the cabin's Sonarr is gone
        conn.execute(
            update(integrations)
            .where(integrations.c.user_id == bob)
            .values(url=f"http://127.0.0.1:{free_port()}")
        )
    mine.state.series = mine.state.series[1:]
    with pytest.raises(SyncFailedError) as failed:
        sonarr(trigger="scheduled")
    assert list(failed.value.failures) == [f"Cabin ({cabin})"]
    assert arr_columns(env.engine, env.server_id)["2001"] == (None, None)  # this server's part was done
    assert arr_columns(env.engine, cabin)["2001"] == (theirs.state.series[0]["id"], None)  # kept
    last = {e.server_id: e.status for e in events(env.engine)[-2:]}
    assert last == {env.server_id: "completed", cabin: "failed"}
    outcomes = {row["server"]: row["outcome"] for row in env.artifacts[-1]["table"]}
    assert outcomes == {"Living room": "completed", "Cabin": "failed"}
    secrets_absent(
        ["sonarr-key-of-the-owner", "sonarr-key-of-the-cabin"],
        env.artifacts,
        [tuple(e) for e in events(env.engine)],
        str(failed.value),
    )


def test_wrong_api_key_fails_at_once(prefect_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    no_retry_delay(monkeypatch, sonarr_flow, "fetch_series")
    app = create_sonarr_app(count=2)
    prefect_env.integration("sonarr", prefect_env.serve(app), "wrong-key", server_id=prefect_env.server_id)
    with pytest.raises(SyncFailedError, match="401"):
        sonarr()
    assert app.state.controls.requests_made == 1


def test_radarr_5xx_is_retried_and_movies_link_by_tmdb_then_imdb(
    prefect_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = prefect_env
    no_retry_delay(monkeypatch, radarr_flow, "fetch_movies")
    app = create_radarr_app(count=5, seed=1)
    movies = app.state.movies
    with_imdb = next(m for m in movies[1:] if "imdbId" in m)
    with env.engine.begin() as conn:
        add_movie(conn, env.server_id, "m1", title="a", tmdb_id=movies[0]["tmdbId"])
        add_movie(conn, env.server_id, "m2", title="b", imdb_id=with_imdb["imdbId"])
    app.state.controls.fail_next = [503, 502]
    env.integration("radarr", env.serve(app), "radarr-api-key", server_id=env.server_id)
    report = part(radarr(), env.server_id)

    assert app.state.controls.requests_made == report["requests"] == 3
    ids = arr_columns(env.engine, env.server_id)
    assert ids["m1"] == (None, movies[0]["id"])
    assert ids["m2"] == (None, with_imdb["id"])
    with env.engine.connect() as conn:
        filled = conn.execute(select(media_items.c.tmdb_id).where(media_items.c.plex_id == "m2")).scalar_one()
    assert filled == with_imdb["tmdbId"]
    assert (report["received"], report["matched"], report["unmatched"]) == (5, 2, 3)
