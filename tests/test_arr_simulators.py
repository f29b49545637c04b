"""The Sonarr/Radarr/Overseerr clients against their simulators, the pure parsers, and the webhook
senders (checked on the wire by a capturing app)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import Engine

from flows._arr import SHOWN_UNMATCHED, report_part, store_arr_items
from flows._runs import Opaque, Part
from flows.clients.overseerr import OverseerrClient, parse_request
from flows.clients.radarr import RadarrClient, parse_movie
from flows.clients.sonarr import SonarrClient, parse_series
from simulators import overseerr as overseerr_sim
from simulators import radarr as radarr_sim
from simulators import sonarr as sonarr_sim
from simulators._arr import without_nulls
from simulators.serving import serve_in_thread
from smartplex_sync.errors import ConfigurationError, PermanentServiceError, TransientServiceError
from smartplex_sync.models import ArrItem
from smartplex_sync.settings import Settings
from smartplex_sync.store.accounts import Integration, plex_servers
from tests.support.factories import add_movie, owner_and_server
from webhook_gateway.sources import parse


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


def test_request_parser_reads_the_requester_id_and_the_seasons_of_a_tv_request() -> None:
    movie, _, show = overseerr_sim.generate_requests(3)
    parsed_movie, parsed_show = parse_request(movie), parse_request(show)
    assert (parsed_movie.requested_by_id, parsed_movie.seasons) == (movie["requestedBy"]["id"], None)
    assert parsed_show.seasons == tuple(s["seasonNumber"] for s in show["seasons"]) and parsed_show.seasons
    assert parsed_show.requested_by_id == show["requestedBy"]["id"]
    assert parsed_movie.title is None  # the API tells no title: never overwrites a webhook's subject
    show["seasons"] = [
        {"seasonNumber": 2},
        {"seasonNumber": 0},
        {"seasonNumber": "x"},
        "3",
        {"seasonNumber": 2},
    ]
    assert parse_request(show).seasons == (0, 2)  # 0 is the specials season
    show["requestedBy"] = None
    assert parse_request(show).requested_by_id is None


def integration(service: str, url: str | None, api_key: str | None) -> Integration:
    return Integration(uuid.uuid4(), uuid.uuid4(), None, service, service.capitalize(), url, api_key)


def test_clients_for_an_integration_name_what_the_row_lacks() -> None:
    settings = Settings(_env_file=None, http_timeout_seconds=5)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="overseerr integration 'Overseerr' has no url or api_key"):
        OverseerrClient.for_integration(integration("overseerr", None, None), settings)
    with pytest.raises(ConfigurationError, match="sonarr integration 'Sonarr' has no api_key"):
        SonarrClient.for_integration(integration("sonarr", "http://127.0.0.1:1", None), settings)
    with RadarrClient.for_integration(
        integration("radarr", "http://radarr:7878/", "k3y"), settings
    ) as client:
        assert client.base_url == "http://radarr:7878" and client._http.timeout.read == 5


def test_sonarr_and_radarr_clients_read_the_simulators() -> None:
    sonarr = sonarr_sim.create_sonarr_app(count=12, seed=2)
    radarr = radarr_sim.create_radarr_app(count=9, seed=2)
    with serve_in_thread(sonarr) as sonarr_url, serve_in_thread(radarr) as radarr_url:
        with SonarrClient(sonarr_url, "sonarr-api-key") as client:
            series = [parse_series(raw) for raw in client.series()]
            assert client.check().startswith(f"Sonarr {sonarr_sim.SONARR_VERSION} at {sonarr_url}")
        with RadarrClient(radarr_url, "radarr-api-key") as client:
            movies = [parse_movie(raw) for raw in client.movies()]
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
    assert [(p.page, p.pages, p.total, len(p.results)) for p in pages] == [
        (1, 3, 23, 10),
        (2, 3, 23, 10),
        (3, 3, 23, 3),
    ]
    assert [p.is_last for p in pages] == [False, False, True]
    ids = [parse_request(raw).request_id for p in pages for raw in p.results]
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


def test_a_parts_artifact_row_lists_a_bounded_number_of_unmatched_titles(engine: Engine) -> None:
    """What radarr-sync reports of one server: counts, and at most SHOWN_UNMATCHED titles not in Plex."""
    _, server_id = owner_and_server(engine)
    with engine.begin() as conn:
        for tmdb_id in range(1, 6):
            add_movie(conn, server_id, str(1000 + tmdb_id), tmdb_id=tmdb_id)
        add_movie(conn, server_id, "2000")  # no tmdb id: Radarr cannot be matched to it
        [server] = plex_servers(conn, [server_id])
    movies = [ArrItem("radarr", i, f"t{i - 6}" if i > 5 else f"in plex {i}", tmdb_id=i) for i in range(1, 31)]
    part = Part(server)
    report_part(part, movies, store_arr_items.fn(engine, server.id, "radarr", Opaque(movies), full=False))
    assert {
        k: part.details[k] for k in ("received", "matched", "unmatched", "removed", "library_unlinked")
    } == {
        "received": 30,
        "matched": 5,
        "unmatched": 25,
        "removed": 0,
        "library_unlinked": 1,
    }
    assert part.details["media_items_updated"] == 5
    (row,) = part.rows
    shown = row["not in library"]
    assert shown.startswith("t0, t1, ") and shown.endswith("t19 … +5")
    assert shown.count(", ") == SHOWN_UNMATCHED - 1
    assert (part.counts.discovered, part.counts.updated, part.counts.removed) == (30, 5, 0)


FIXTURES = Path(__file__).parent / "fixtures"


def _same_shape(sent: Any, captured: Any, where: str = "") -> None:
    """Every key we send exists, with the same JSON type, in the captured payload of that event."""
    if isinstance(captured, dict):
        assert isinstance(sent, dict), where
        for key, value in sent.items():
            assert key in captured, f"{where}.{key} is not in the captured payload"
            _same_shape(value, captured[key], f"{where}.{key}")
    elif isinstance(captured, list) and captured and isinstance(sent, list):
        for n, value in enumerate(sent):
            _same_shape(value, captured[0], f"{where}[{n}]")
    else:
        numbers = (int, float)
        assert isinstance(sent, type(captured)) or (
            isinstance(sent, numbers) and isinstance(captured, numbers)
        ), f"{where}: {sent!r} vs {captured!r}"


@pytest.mark.parametrize(
    ("built", "fixture"),
    [
        (lambda: sonarr_sim.series_delete_payload(sonarr_sim.generate_series(3)[0]), "sonarr/series_delete"),
        (
            lambda: sonarr_sim.episode_file_delete_payload(sonarr_sim.generate_series(3)[1], 2, 5),
            "sonarr/episode_file_delete",
        ),
        (
            lambda: sonarr_sim.download_payload(sonarr_sim.generate_series(2)[0], is_upgrade=True),
            "sonarr/download_upgrade",
        ),
        (lambda: radarr_sim.movie_delete_payload(radarr_sim.generate_movies(2)[0]), "radarr/movie_delete"),
        (
            lambda: radarr_sim.movie_file_delete_payload(radarr_sim.generate_movies(2)[1]),
            "radarr/movie_file_delete",
        ),
        (
            lambda: radarr_sim.download_payload(radarr_sim.generate_movies(2)[0], is_upgrade=True),
            "radarr/download_upgrade",
        ),
    ],
)
def test_delete_and_upgrade_payloads_have_the_captured_shapes(built: Any, fixture: str) -> None:
    payload = without_nulls(built())
    captured = json.loads((FIXTURES / f"{fixture}.json").read_text())
    _same_shape(payload, captured)
    assert payload["eventType"] == captured["eventType"]
    assert parse(fixture.split("/")[0], payload).event_type == captured["eventType"]


def test_upgrade_payloads_name_the_replaced_file() -> None:
    series, movie = sonarr_sim.generate_series(1)[0], radarr_sim.generate_movies(1)[0]
    episode = sonarr_sim.download_payload(series, 1, 2, is_upgrade=True)
    (old,) = episode["deletedFiles"]
    assert episode["isUpgrade"] and old["id"] != episode["episodeFile"]["id"] and old["recycleBinPath"]
    assert old["id"] == sonarr_sim.episode_file_delete_payload(series, 1, 2)["episodeFile"]["id"]
    film = radarr_sim.download_payload(movie, is_upgrade=True)
    assert film["isUpgrade"] and film["deletedFiles"][0]["id"] == movie["movieFile"]["id"]
    assert film["movieFile"]["quality"] != film["deletedFiles"][0]["quality"]
    assert "deletedFiles" not in sonarr_sim.download_payload(series) and "deletedFiles" not in (
        radarr_sim.download_payload(movie)
    )
    reason = radarr_sim.movie_file_delete_payload(movie, reason="missingFromDisk")["deleteReason"]
    assert reason == "missingFromDisk"
    for_upgrade = json.loads((FIXTURES / "sonarr/episode_file_delete_for_upgrade.json").read_text())
    sent = sonarr_sim.episode_file_delete_payload(series, 1, 2, reason="upgrade")
    assert sent["deleteReason"] == for_upgrade["deleteReason"] == "upgrade"


def test_radarr_deletes_through_its_api_and_sends_its_webhooks(
    capture: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = capture
    app = radarr_sim.create_radarr_app(count=3)
    app.state.controls.webhook_url = url
    first, second, _ = app.state.movies
    key = {"X-Api-Key": "radarr-api-key"}
    with serve_in_thread(app) as base:
        file_id = second["movieFile"]["id"]
        assert httpx.delete(f"{base}/api/v3/moviefile/{file_id}", headers=key).status_code == 200
        assert httpx.delete(f"{base}/api/v3/moviefile/{file_id}", headers=key).status_code == 404
        answer = httpx.delete(
            f"{base}/api/v3/movie/{first['id']}", params={"deleteFiles": "true"}, headers=key
        )
        assert answer.status_code == 200
        assert httpx.get(f"{base}/api/v3/movie/{first['id']}", headers=key).status_code == 404
        with RadarrClient(base, "radarr-api-key") as client:
            movies = {m.arr_id: m for m in map(parse_movie, client.movies())}
        assert httpx.delete(f"{base}/api/v3/movie/{first['id']}", headers=key).status_code == 404
    assert set(movies) == {second["id"], 3}
    assert second["hasFile"] is False and "movieFile" not in second
    file_delete, movie_delete = (json.loads(r["body"]) for r in received)
    assert received[0]["headers"]["user-agent"].startswith(f"Radarr/{radarr_sim.RADARR_VERSION}")
    assert (file_delete["eventType"], file_delete["deleteReason"], file_delete["movieFile"]["id"]) == (
        "MovieFileDelete",
        "manual",
        file_id,
    )
    assert (movie_delete["eventType"], movie_delete["deletedFiles"], movie_delete["movie"]["tmdbId"]) == (
        "MovieDelete",
        True,
        first["tmdbId"],
    )
    assert movie_delete["movieFolderSize"] == first["sizeOnDisk"]
    assert app.state.controls.webhooks_sent == [file_delete, movie_delete]


def test_sonarr_deletes_through_its_api_and_sends_its_webhooks(
    capture: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = capture
    app = sonarr_sim.create_sonarr_app(count=4, seed=3)
    app.state.controls.webhook_url = url
    one = next(s for s in app.state.series if s["statistics"]["episodeFileCount"] >= 2)
    key = {"X-Api-Key": "sonarr-api-key"}
    with serve_in_thread(app) as base:
        files = httpx.get(f"{base}/api/v3/episodefile", params={"seriesId": one["id"]}, headers=key).json()
        assert len(files) == one["statistics"]["episodeFileCount"]
        assert all(f["seriesId"] == one["id"] and f["path"].startswith(one["path"]) for f in files)
        count = len(files)
        assert httpx.delete(f"{base}/api/v3/episodefile/{files[1]['id']}", headers=key).status_code == 200
        left = httpx.get(f"{base}/api/v3/episodefile", params={"seriesId": one["id"]}, headers=key).json()
        assert len(left) == count - 1 == one["statistics"]["episodeFileCount"]
        assert httpx.delete(f"{base}/api/v3/series/{one['id']}", headers=key).status_code == 200
        assert (
            httpx.get(f"{base}/api/v3/episodefile", params={"seriesId": one["id"]}, headers=key).json() == []
        )
        assert httpx.delete(f"{base}/api/v3/episodefile/{files[0]['id']}", headers=key).status_code == 404
    file_delete, series_delete = (json.loads(r["body"]) for r in received)
    (episode,) = file_delete["episodes"]
    assert (file_delete["eventType"], file_delete["deleteReason"], file_delete["episodeFile"]["id"]) == (
        "EpisodeFileDelete",
        "manual",
        files[1]["id"],
    )
    assert (episode["seasonNumber"], episode["episodeNumber"]) == (files[1]["seasonNumber"], 2)
    assert (series_delete["eventType"], series_delete["deletedFiles"], series_delete["series"]["tvdbId"]) == (
        "SeriesDelete",
        False,
        one["tvdbId"],
    )
    assert one not in app.state.series
