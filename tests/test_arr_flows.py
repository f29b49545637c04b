"""sonarr-sync and radarr-sync against their simulators over real HTTP, called through `.fn()`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.artifacts import Artifact
from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings
from sqlalchemy import Connection, Engine, select

import flows.radarr_sync as radarr_flow
import flows.sonarr_sync as sonarr_flow
from simulators.radarr import create_radarr_app
from simulators.serving import serve_in_thread
from simulators.sonarr import create_sonarr_app, download_payload
from smartplex_sync.errors import ConfigurationError, PermanentServiceError
from smartplex_sync.models import ArrItem, Deployment, Source
from smartplex_sync.requests import SonarrSync
from smartplex_sync.settings import get_settings
from smartplex_sync.store.arr import link_arr_ids
from smartplex_sync.store.tables import media_items
from webhook_gateway import sources

SERVICES = ("SONARR", "RADARR", "OVERSEERR")


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch, database_url: str, prefect_api_url: str) -> Iterator[None]:
    """Point the flows at the test database and the test Prefect server, without the warning Prefect
    gives for task logs outside a flow run (`.fn()` calls); no service configured until a test says so."""
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
    for service in SERVICES:
        monkeypatch.delenv(f"SMARTPLEX_{service}_URL", raising=False)
        monkeypatch.delenv(f"SMARTPLEX_{service}_API_KEY", raising=False)
    get_settings.cache_clear()
    with temporary_settings(
        updates={PREFECT_API_URL: prefect_api_url, PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}
    ):
        yield
    get_settings.cache_clear()


def configure(monkeypatch: pytest.MonkeyPatch, service: str, url: str, api_key: str) -> None:
    monkeypatch.setenv(f"SMARTPLEX_{service}_URL", url)
    monkeypatch.setenv(f"SMARTPLEX_{service}_API_KEY", api_key)
    get_settings.cache_clear()


def no_retry_delay(monkeypatch: pytest.MonkeyPatch, module: Any, task_name: str) -> None:
    task = getattr(module, task_name)
    monkeypatch.setattr(module, task_name, task.with_options(retry_delay_seconds=0, retry_jitter_factor=None))


def add_show(conn: Connection, key: str, tvdb_id: int | None) -> None:
    conn.execute(
        media_items.insert().values(server_id="s", rating_key=key, type="show", title=key, tvdb_id=tvdb_id)
    )
    conn.execute(
        media_items.insert().values(
            server_id="s", rating_key=f"{key}-e1", type="episode", title="Pilot", grandparent_rating_key=key
        )
    )


def arr_columns(engine: Engine) -> dict[str, tuple[int | None, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(media_items.c.rating_key, media_items.c.sonarr_series_id, media_items.c.radarr_movie_id)
        )
        return {r.rating_key: (r.sonarr_series_id, r.radarr_movie_id) for r in rows}


def test_full_sonarr_sync_links_what_both_sides_have(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
    app = create_sonarr_app(count=6, seed=3)
    series = app.state.series
    with engine.begin() as conn:
        for item in series[:4]:
            add_show(conn, f"show{item['id']}", item["tvdbId"])
        add_show(conn, "plex-only", 1)
    with serve_in_thread(app) as url:
        configure(monkeypatch, "SONARR", url, "sonarr-api-key")
        report = sonarr_flow.sonarr_sync.fn()

    ids = arr_columns(engine)
    for item in series[:4]:
        assert ids[f"show{item['id']}"] == ids[f"show{item['id']}-e1"] == (item["id"], None)
    assert ids["plex-only"] == ids["plex-only-e1"] == (None, None)
    assert (report.received, report.matched, report.unmatched, report.updated) == (6, 4, 2, 8)
    assert report.notes["library rows unknown to the service"] == 1
    assert sorted(report.unmatched_titles) == sorted(s["title"] for s in series[4:])
    assert report.requests_made == app.state.controls.requests_made == 1
    artifact = Artifact.get("sonarr-sync")
    assert artifact is not None and artifact.description == report.summary()
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert {"metric": "matched in library", "value": 4} in table

    # Sonarr drops a series: the next full run unlinks it.
    app.state.series = series[1:]
    with serve_in_thread(app) as url:
        configure(monkeypatch, "SONARR", url, "sonarr-api-key")
        report = sonarr_flow.sonarr_sync.fn()
    assert arr_columns(engine)[f"show{series[0]['id']}-e1"] == (None, None)
    assert (report.notes["removed (gone from the service)"], report.updated) == (1, 2)


def test_webhook_fed_run_needs_no_sonarr_and_links_once_plex_catches_up(engine: Engine) -> None:
    """The Download webhook's sonarr-sync may run before the Plex sync has the episode."""
    series = create_sonarr_app(count=1).state.series[0]
    sent = download_payload(series)["series"]
    [request] = [
        r
        for r in sources.parse(Source.SONARR, download_payload(series)).requests
        if r.deployment is Deployment.SONARR_SYNC
    ]
    assert request.parameters == SonarrSync(
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
    report = sonarr_flow.sonarr_sync.fn(request.parameters)
    assert (report.source, report.received, report.matched, report.requests_made) == ("webhook", 1, 0, 0)

    with engine.begin() as conn:  # the Plex library sync lands, then calls link_arr_ids
        add_show(conn, "new-show", series["tvdbId"])
        assert link_arr_ids(conn) == 2
    assert arr_columns(engine)["new-show-e1"] == (series["id"], None)


def test_full_run_without_configuration_names_the_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="SMARTPLEX_SONARR_URL"):
        sonarr_flow.sonarr_sync.fn()
    monkeypatch.setenv("SMARTPLEX_RADARR_URL", "http://127.0.0.1:1")
    get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="SMARTPLEX_RADARR_API_KEY"):
        radarr_flow.radarr_sync.fn()


def test_wrong_api_key_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    no_retry_delay(monkeypatch, sonarr_flow, "fetch_series")
    app = create_sonarr_app(count=2)
    with serve_in_thread(app) as url:
        configure(monkeypatch, "SONARR", url, "wrong-key")
        with pytest.raises(PermanentServiceError, match="401"):
            sonarr_flow.sonarr_sync.fn()
    assert app.state.controls.requests_made == 1


def test_radarr_5xx_is_retried_and_movies_link_by_tmdb_then_imdb(
    monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> None:
    no_retry_delay(monkeypatch, radarr_flow, "fetch_movies")
    app = create_radarr_app(count=5, seed=1)
    movies = app.state.movies
    with_imdb = next(m for m in movies[1:] if "imdbId" in m)
    with engine.begin() as conn:
        conn.execute(
            media_items.insert().values(
                server_id="s", rating_key="m1", type="movie", title="a", tmdb_id=movies[0]["tmdbId"]
            )
        )
        conn.execute(
            media_items.insert().values(
                server_id="s", rating_key="m2", type="movie", title="b", imdb_id=with_imdb["imdbId"]
            )
        )
    app.state.controls.fail_next = [503, 502]
    with serve_in_thread(app) as url:
        configure(monkeypatch, "RADARR", url, "radarr-api-key")
        report = radarr_flow.radarr_sync.fn()

    assert app.state.controls.requests_made == report.requests_made == 3
    ids = arr_columns(engine)
    assert ids["m1"] == (None, movies[0]["id"])
    assert ids["m2"] == (None, with_imdb["id"])
    with engine.connect() as conn:
        filled = conn.execute(
            select(media_items.c.tmdb_id).where(media_items.c.rating_key == "m2")
        ).scalar_one()
    assert filled == with_imdb["tmdbId"]
    assert (report.received, report.matched, report.unmatched) == (5, 2, 3)
