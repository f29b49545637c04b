"""The Sonarr/Radarr/Overseerr clients against their simulators, the pure parsers, and the webhook
senders (checked on the wire by a capturing app)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request

from flows._arr import RunReport
from flows.clients.overseerr import OverseerrClient, parse_request
from flows.clients.radarr import RadarrClient, parse_movie
from flows.clients.sonarr import SonarrClient, parse_series
from simulators import overseerr as overseerr_sim
from simulators import radarr as radarr_sim
from simulators import sonarr as sonarr_sim
from simulators.serving import serve_in_thread
from smartplex_sync.errors import ConfigurationError, PermanentServiceError, TransientServiceError
from smartplex_sync.models import ArrItem
from smartplex_sync.settings import Settings


def test_parsers_turn_the_arrs_unknown_ids_into_none() -> None:
    assert parse_series({"id": 3, "title": "X", "tvdbId": 81189, "tmdbId": 0, "path": "/tv/X"}) == ArrItem(
        "sonarr", 3, "X", tvdb_id=81189, path="/tv/X"
    )
    assert parse_movie({"id": 4, "title": "Y", "tmdbId": 603, "imdbId": "tt0133093"}) == ArrItem(
        "radarr", 4, "Y", tmdb_id=603, imdb_id="tt0133093"
    )
    with pytest.raises(PermanentServiceError):
        parse_series({"title": "no id"})


def test_request_parser_names_statuses_and_reads_4k_availability() -> None:
    raw = overseerr_sim.generate_requests(1)[0]
    raw.update(status=4, is4k=True)
    raw["media"].update(status=5, status4k=3)
    raw["requestedBy"].update(displayName="", username=None, plexUsername="plexbob")
    parsed = parse_request(raw)
    assert (parsed.status, parsed.media_status, parsed.is_4k, parsed.requested_by) == (
        "FAILED",
        "PROCESSING",
        True,
        "plexbob",
    )
    assert parsed.requested_at is not None and parsed.requested_at.utcoffset() is not None


def test_clients_from_settings_name_the_missing_variable() -> None:
    with pytest.raises(ConfigurationError, match="SMARTPLEX_OVERSEERR_URL"):
        OverseerrClient.from_settings(Settings(_env_file=None))
    with pytest.raises(ConfigurationError, match="SMARTPLEX_SONARR_API_KEY"):
        SonarrClient.from_settings(Settings(_env_file=None, sonarr_url="http://127.0.0.1:1"))


def test_sonarr_and_radarr_clients_read_the_simulators() -> None:
    sonarr = sonarr_sim.create_sonarr_app(count=12, seed=2)
    radarr = radarr_sim.create_radarr_app(count=9, seed=2)
    with serve_in_thread(sonarr) as sonarr_url, serve_in_thread(radarr) as radarr_url:
        with SonarrClient(sonarr_url, "sonarr-api-key") as client:
            series = client.series()
            assert client.check().startswith(f"Sonarr {sonarr_sim.SONARR_VERSION} at {sonarr_url}")
        with RadarrClient(radarr_url, "radarr-api-key") as client:
            movies = client.movies()
            assert "Radarr" in client.check()
        with SonarrClient(sonarr_url, "nope") as client, pytest.raises(PermanentServiceError) as failure:
            client.series()
    assert failure.value.status_code == 401
    assert [s.arr_id for s in series] == list(range(1, 13))
    assert len({s.tvdb_id for s in series}) == 12
    assert any(s.tmdb_id is None for s in series) and any(s.imdb_id is None for s in series)
    assert [m.tmdb_id for m in movies] == [m["tmdbId"] for m in radarr.state.movies]


def test_overseerr_pages_with_take_and_skip() -> None:
    app = overseerr_sim.create_overseerr_app(count=23)
    with serve_in_thread(app) as url, OverseerrClient(url, "overseerr-api-key") as client:
        pages = [client.request_page(skip, 10) for skip in (0, 10, 20)]
        assert "acts as admin" in client.check()
    assert [(p.page, p.pages, p.total, len(p.requests)) for p in pages] == [
        (1, 3, 23, 10),
        (2, 3, 23, 10),
        (3, 3, 23, 3),
    ]
    assert [p.is_last for p in pages] == [False, False, True]
    ids = [r.request_id for p in pages for r in p.requests]
    assert ids == list(range(23, 0, -1))  # newest first, none twice


@pytest.fixture
def capture() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A receiver that records each delivery's method, headers and raw body."""
    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        received.append({"headers": dict(request.headers), "body": (await request.body()).decode()})
        return {"status": "ok"}

    with serve_in_thread(app) as url:
        yield f"{url}/hook", received


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def test_sonarr_download_is_sent_like_sonarr(capture: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = capture
    series = sonarr_sim.generate_series(5)[4]  # one without an imdb id
    assert sonarr_sim.send_download(url, series, 2, 3, username="u", password="p").status_code == 200
    (delivery,) = received
    headers, body = delivery["headers"], delivery["body"]
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert headers["user-agent"].startswith("Sonarr/4.")
    assert body.startswith('{\n  "series"')  # indented
    payload = json.loads(body)
    assert None not in list(_leaves(payload)) and "imdbId" not in payload["series"]
    assert (payload["eventType"], payload["series"]["id"], payload["episodes"][0]["seasonNumber"]) == (
        "Download",
        5,
        2,
    )


def test_radarr_download_without_auth_sends_no_authorization(
    capture: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = capture
    movie = radarr_sim.generate_movies(1)[0]
    radarr_sim.send_download(url, movie, headers={"X-Token": "t"})
    headers, payload = received[0]["headers"], json.loads(received[0]["body"])
    assert "authorization" not in headers and headers["x-token"] == "t"
    assert (payload["movie"]["tmdbId"], payload["movieFile"]["indexerFlags"]) == (movie["tmdbId"], "0")


def test_overseerr_notification_uses_the_default_template(capture: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = capture
    movie, _, show = overseerr_sim.generate_requests(3)
    overseerr_sim.send_notification(url, "MEDIA_AVAILABLE", movie, authorization="Bearer s3cret")
    overseerr_sim.send_notification(url, "MEDIA_PENDING", show)
    overseerr_sim.send_notification(url, "TEST_NOTIFICATION")
    first = json.loads(received[0]["body"])
    assert received[0]["headers"]["authorization"] == "Bearer s3cret"
    assert '": ' not in received[0]["body"] and '", "' not in received[0]["body"]  # compact JSON
    assert first["event"] == "Movie Request Now Available"
    assert first["media"]["tvdbId"] == "" and first["request"]["request_id"] == str(movie["id"])
    assert (first["issue"], first["comment"], first["extra"]) == (None, None, [])
    assert all(isinstance(v, str) for v in _leaves({k: first[k] for k in ("media", "request")}))
    second = json.loads(received[1]["body"])
    assert (second["event"], second["media"]["tvdbId"]) == (
        "New Series Request",
        str(show["media"]["tvdbId"]),
    )
    assert second["extra"] == [{"name": "Requested Seasons", "value": "1"}]
    test = json.loads(received[2]["body"])
    assert (test["notification_type"], test["media"], test["request"], test["event"]) == (
        "TEST_NOTIFICATION",
        None,
        None,
        "",
    )


def test_injected_failures_and_latency_are_counted() -> None:
    app = radarr_sim.create_radarr_app(count=1, failure_rate=1.0, latency=0.05)
    app.state.controls.failure_status = 502
    with serve_in_thread(app) as url, RadarrClient(url, "radarr-api-key") as client:
        with pytest.raises(TransientServiceError) as failure:
            client.movies()
        app.state.controls.failure_rate = 0.0
        assert len(client.movies()) == 1
    assert (failure.value.status_code, app.state.controls.requests_made) == (502, 2)


def test_report_rows_list_a_bounded_number_of_unmatched_titles() -> None:
    titles = [f"t{i}" for i in range(25)]
    report = RunReport("radarr-sync", "/api/v3/movie", 30, 5, 25, 5, 1, 0.123, titles, {"removed": 0})
    rows = {row["metric"]: row["value"] for row in report.rows()}
    assert (rows["not in library"], rows["removed"], rows["seconds"]) == (25, 0, 0.12)
    assert rows["not in library (titles)"].endswith("t19 … +5")
