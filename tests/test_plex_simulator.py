"""The Plex simulator and the Plex client, talking over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Form, UploadFile

from flows.clients.plex import CLIENT_IDENTIFIER, PlexClient
from simulators.plex import TINY_JPEG, Fault, SimulatorState, create_plex_app, send_library_new
from simulators.plex_library import PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.errors import ConfigurationError, PermanentServiceError, TransientServiceError
from smartplex_sync.settings import Settings

TOKEN = "plex-token-123"


@pytest.fixture(scope="module")
def library() -> PlexLibrary:
    return PlexLibrary.generate(seed=7, movies=23, shows=3, seasons_per_show=2, episodes_per_season=4)


@pytest.fixture(scope="module")
def served(library: PlexLibrary) -> Iterator[tuple[str, SimulatorState]]:
    app = create_plex_app(library, token=TOKEN)
    with serve_in_thread(app) as url:
        yield url, app.state.plex


@pytest.fixture
def plex(served: tuple[str, SimulatorState]) -> Iterator[PlexClient]:
    url, state = served
    state.faults.clear()
    state.reset_counter()
    with PlexClient(url, TOKEN, page_size=5, timeout=2.0) as client:
        yield client


def test_no_token_is_401_except_identity(served: tuple[str, SimulatorState], library: PlexLibrary) -> None:
    url, _ = served
    headers = {"Accept": "application/json"}
    assert httpx.get(f"{url}/library/sections", headers=headers).status_code == 401
    assert httpx.get(f"{url}/", headers={**headers, "X-Plex-Token": "wrong"}).status_code == 401
    identity = httpx.get(f"{url}/identity", headers=headers).json()["MediaContainer"]
    assert identity["machineIdentifier"] == library.machine_identifier
    root = httpx.get(f"{url}/", params={"X-Plex-Token": TOKEN}, headers=headers).json()["MediaContainer"]
    assert root["version"] == library.version


def test_xml_unless_json_is_asked_for(served: tuple[str, SimulatorState]) -> None:
    url, _ = served
    answer = httpx.get(f"{url}/library/sections", headers={"X-Plex-Token": TOKEN})
    assert answer.headers["content-type"].startswith("application/xml")
    assert b"<MediaContainer" in answer.content and b'<Directory allowSync="1" key="1"' in answer.content


def test_sections_have_the_pms_fields(plex: PlexClient) -> None:
    movies, shows = plex.sections()
    assert (movies["key"], movies["type"], shows["key"], shows["type"]) == ("1", "movie", "2", "show")
    assert {"agent", "scanner", "Location", "updatedAt", "scannedAt", "uuid"} <= movies.keys()


def test_paging_reads_every_item_once_and_sends_the_token_only_as_a_header(
    plex: PlexClient, served: tuple[str, SimulatorState]
) -> None:
    items = list(plex.iter_items(1, "movie"))
    assert len(items) == 23 and len({i["ratingKey"] for i in items}) == 23
    assert plex.requests_made == 5  # ceil(23 / 5) pages, no extra empty page
    _, state = served
    assert all(TOKEN not in url for url in state.urls)
    assert all("includeGuids=1" in url for url in state.urls)
    assert [i["addedAt"] for i in items] == sorted(i["addedAt"] for i in items)


def test_page_container_and_guids_only_when_asked(served: tuple[str, SimulatorState]) -> None:
    url, _ = served
    headers = {"Accept": "application/json", "X-Plex-Token": TOKEN}
    paged = {**headers, "X-Plex-Container-Start": "20", "X-Plex-Container-Size": "5"}
    page = httpx.get(f"{url}/library/sections/1/all", params={"type": 1}, headers=paged).json()
    container = page["MediaContainer"]
    assert (container["size"], container["totalSize"], container["offset"]) == (3, 23, 20)
    assert all("Guid" not in item for item in container["Metadata"])
    assert all("librarySectionID" not in item for item in container["Metadata"])  # on the container
    by_query = httpx.get(
        f"{url}/library/sections/1/all",
        params={"type": 1, "includeGuids": 1, "X-Plex-Container-Start": 0, "X-Plex-Container-Size": 30},
        headers=headers,
    ).json()["MediaContainer"]
    assert by_query["size"] == 23 and any("Guid" in item for item in by_query["Metadata"])


def test_updated_filter_is_strictly_after(plex: PlexClient, library: PlexLibrary) -> None:
    movies = sorted(library.section_items(1, "movie"), key=lambda i: i.updated_at)
    pivot = movies[10].updated_at
    got = {i["ratingKey"] for i in plex.iter_items(1, "movie", updated_since=pivot)}
    assert got == {str(m.rating_key) for m in movies if m.updated_at > pivot}
    assert str(movies[10].rating_key) not in got


def test_show_section_lists_shows_seasons_and_episodes_with_their_parents(
    plex: PlexClient, library: PlexLibrary
) -> None:
    shows = list(plex.iter_items(2, "show"))
    seasons = list(plex.iter_items(2, "season"))
    episodes = list(plex.iter_items(2, "episode"))
    assert (len(shows), len(seasons), len(episodes)) == (3, 6, 24)
    episode = episodes[0]
    truth = library.items[int(episode["ratingKey"])]
    assert episode["parentRatingKey"] == str(truth.parent_key)
    assert episode["grandparentTitle"] == library.items[truth.grandparent_key or 0].title
    assert episode["parentIndex"] >= 1 and episode["index"] >= 1
    assert episode["Media"][0]["Part"][0]["file"].endswith((".mkv", ".mp4", ".avi"))


def test_metadata_children_and_unknown_keys(plex: PlexClient, library: PlexLibrary) -> None:
    show = next(i for i in library.items.values() if i.type == "show")
    [item] = plex.metadata([str(show.rating_key)])
    assert item["librarySectionID"] == 2 and item["title"] == show.title
    assert [c["index"] for c in plex.children(str(show.rating_key))] == [1, 2]
    assert plex.metadata(["999999"]) == []


def test_several_items_in_one_request_leave_out_unknown_keys(plex: PlexClient, library: PlexLibrary) -> None:
    movies = [str(i.rating_key) for i in library.items.values() if i.type == "movie"][:3]
    before = plex.requests_made
    items = plex.metadata([movies[0], "999999", *movies[1:]])
    assert sorted(i["ratingKey"] for i in items) == sorted(movies)
    assert plex.requests_made - before == 1


def test_status_codes_become_transient_or_permanent_errors(
    plex: PlexClient, served: tuple[str, SimulatorState]
) -> None:
    _, state = served
    state.inject(Fault(503))
    with pytest.raises(TransientServiceError):
        plex.sections()
    state.inject(Fault(None, delay=0.5))
    with PlexClient(plex.base_url, TOKEN, timeout=0.2) as impatient, pytest.raises(TransientServiceError):
        impatient.sections()
    with PlexClient(plex.base_url, "nope") as refused, pytest.raises(PermanentServiceError) as caught:
        refused.sections()
    assert caught.value.status_code == 401


def test_check_describes_the_server_and_proves_the_token(plex: PlexClient, library: PlexLibrary) -> None:
    line = plex.check()
    assert library.machine_identifier in line and "Movies (movie)" in line and "TV Shows (show)" in line
    with PlexClient(plex.base_url, "nope") as refused, pytest.raises(PermanentServiceError):
        refused.check()


def test_client_from_settings_names_the_missing_setting() -> None:
    with pytest.raises(ConfigurationError, match="SMARTPLEX_PLEX_URL"):
        PlexClient.from_settings(Settings(plex_url=None, plex_token="x"))
    with pytest.raises(ConfigurationError, match="SMARTPLEX_PLEX_TOKEN"):
        PlexClient.from_settings(Settings(plex_url="http://plex:32400", plex_token=None))
    client = PlexClient.from_settings(
        Settings(plex_url="http://plex:32400", plex_token="t", plex_page_size=7)
    )
    assert client.page_size == 7
    assert client._http.headers["X-Plex-Client-Identifier"] == CLIENT_IDENTIFIER
    client.close()


def test_mutations_change_what_the_api_answers(plex: PlexClient) -> None:
    library = PlexLibrary.generate(seed=3, movies=2, shows=1, seasons_per_show=1, episodes_per_season=2)
    show = next(i for i in library.items.values() if i.type == "show")
    season = library.add_season(show.rating_key, episodes=3)
    assert (season.index, len(library.children(season.rating_key))) == (2, 3)
    movie = next(i for i in library.items.values() if i.type == "movie")
    size_before, stamp_before = movie.media[0].parts[0].size, movie.updated_at
    library.upgrade(movie.rating_key)
    assert movie.media[0].parts[0].size > size_before and movie.updated_at > stamp_before
    assert len(library.delete(show.rating_key)) == 1 + 2 + 5
    library.unmount(1)
    assert library.section_items(1, "movie") == []


def _jpeg_segments(data: bytes) -> list[int]:
    """The markers of a baseline JPEG, checking every segment length on the way."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    markers, position = [], 2
    while data[position] == 0xFF and data[position + 1] != 0xDA:
        markers.append(data[position + 1])
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    assert data[position + 1] == 0xDA
    return [*markers, 0xDA]


def test_library_new_webhook_is_multipart_with_payload_and_jpeg_thumb() -> None:
    received: dict[str, Any] = {}
    receiver = FastAPI()

    @receiver.post("/webhooks/plex")
    async def hook(
        payload: str = Form(...), thumb: UploadFile | None = None, token: str = ""
    ) -> dict[str, str]:
        received.update(payload=json.loads(payload), token=token, thumb=await thumb.read() if thumb else b"")
        received["thumb_type"] = thumb.content_type if thumb else None
        return {"ok": "yes"}

    library = PlexLibrary.generate(seed=5, movies=1, shows=1, seasons_per_show=1, episodes_per_season=1)
    episode = next(i for i in library.items.values() if i.type == "episode")
    with serve_in_thread(receiver) as url:
        answer = send_library_new(f"{url}/webhooks/plex", episode, token="s3cret", library=library)
    assert answer.status_code == 200
    payload = received["payload"]
    assert payload["event"] == "library.new" and payload["owner"] is True
    assert payload["Server"]["uuid"] == library.machine_identifier
    metadata = payload["Metadata"]
    assert (metadata["ratingKey"], metadata["librarySectionID"], metadata["type"]) == (
        str(episode.rating_key),
        2,
        "episode",
    )
    assert metadata["librarySectionType"] == "show" and metadata["grandparentTitle"]
    assert received["token"] == "s3cret" and received["thumb_type"] == "image/jpeg"
    assert received["thumb"] == TINY_JPEG
    assert _jpeg_segments(TINY_JPEG) == [0xE0, 0xDB, 0xC0, 0xC4, 0xC4, 0xDA]
