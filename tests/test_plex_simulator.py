"""The Plex simulator and the Plex client, talking over real HTTP on loopback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Form, UploadFile

from flows._plex_items import SectionInfo, ShowInfo, show_key, to_row
from flows.clients.plex import CLIENT_IDENTIFIER, PlexClient
from simulators.plex import TINY_JPEG, Fault, SimulatorState, create_plex_app, send_library_new
from simulators.plex_library import PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.errors import ConfigurationError, PermanentServiceError, TransientServiceError
from smartplex_sync.settings import Settings
from smartplex_sync.store.accounts import PlexServer
from tests.support.clients import iter_items

TOKEN = "plex-token-123"


def one_item(client: PlexClient, rating_key: str) -> dict[str, Any] | None:
    """The item as /library/metadata answers it, or None when Plex does not have it."""
    return client.metadata([rating_key]).get(rating_key)


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
    items = list(iter_items(plex, 1, "movie"))
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
    got = {i["ratingKey"] for i in iter_items(plex, 1, "movie", updated_since=pivot)}
    assert got == {str(m.rating_key) for m in movies if m.updated_at > pivot}
    assert str(movies[10].rating_key) not in got


def test_show_section_lists_shows_seasons_and_episodes_with_their_parents(
    plex: PlexClient, library: PlexLibrary
) -> None:
    shows = list(iter_items(plex, 2, "show"))
    seasons = list(iter_items(plex, 2, "season"))
    episodes = list(iter_items(plex, 2, "episode"))
    assert (len(shows), len(seasons), len(episodes)) == (3, 6, 24)
    episode = episodes[0]
    truth = library.items[int(episode["ratingKey"])]
    assert episode["parentRatingKey"] == str(truth.parent_key)
    assert episode["grandparentTitle"] == library.items[truth.grandparent_key or 0].title
    assert episode["parentIndex"] >= 1 and episode["index"] >= 1
    assert episode["Media"][0]["Part"][0]["file"].endswith((".mkv", ".mp4", ".avi"))


def test_metadata_children_and_unknown_keys(plex: PlexClient, library: PlexLibrary) -> None:
    show = next(i for i in library.items.values() if i.type == "show")
    [item] = plex.metadata([str(show.rating_key)]).values()
    assert item["librarySectionID"] == 2 and item["title"] == show.title
    assert [c["index"] for c in plex.children(str(show.rating_key))] == [1, 2]
    assert plex.metadata(["999999"]) == {}


def test_several_items_in_one_request_leave_out_unknown_keys(plex: PlexClient, library: PlexLibrary) -> None:
    movies = [str(i.rating_key) for i in library.items.values() if i.type == "movie"][:3]
    before = plex.requests_made
    items = plex.metadata([movies[0], "999999", *movies[1:]])
    assert sorted(items) == sorted(movies)
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


def server_row(token: str | None, url: str = "http://plex:32400/") -> PlexServer:
    return PlexServer(uuid.uuid4(), uuid.uuid4(), "Living Room", url, "machine-1", token)


def test_a_client_for_a_servers_row_uses_its_url_and_token_and_names_a_row_without_token() -> None:
    settings = Settings(_env_file=None, plex_page_size=7, http_timeout_seconds=4)  # type: ignore[call-arg]
    for token in (None, ""):
        with pytest.raises(ConfigurationError, match="'Living Room' has no plex_token"):
            PlexClient.for_server(server_row(token), settings)
    with PlexClient.for_server(server_row("t0ken"), settings) as client:
        assert (client.base_url, client.page_size) == ("http://plex:32400", 7)
        assert client._http.headers["X-Plex-Token"] == "t0ken"
        assert client._http.headers["X-Plex-Client-Identifier"] == CLIENT_IDENTIFIER
        assert client._http.timeout.read == 4
    assert "t0ken" not in repr(server_row("t0ken"))  # a server row never prints its token


def test_server_info_needs_the_token_and_names_the_machine(plex: PlexClient, library: PlexLibrary) -> None:
    info = plex.server_info()
    assert (info["machineIdentifier"], info["version"]) == (library.machine_identifier, library.version)
    with PlexClient(plex.base_url, "nope") as refused, pytest.raises(PermanentServiceError) as caught:
        refused.server_info()
    assert caught.value.status_code == 401


def test_movies_and_shows_carry_genre_tags_seasons_and_episodes_take_their_shows(
    plex: PlexClient, library: PlexLibrary
) -> None:
    movies = list(iter_items(plex, 1, "movie"))
    assert all(m["Genre"] and all(set(g) == {"tag"} for g in m["Genre"]) for m in movies)
    assert len({tuple(g["tag"] for g in m["Genre"]) for m in movies}) > 1  # not one genre for everything
    truth = library.items[int(movies[0]["ratingKey"])]
    assert [g["tag"] for g in movies[0]["Genre"]] == list(truth.genres)
    [metadata] = plex.metadata([movies[0]["ratingKey"]]).values()
    assert metadata["Genre"] == movies[0]["Genre"]
    same_seed = PlexLibrary.generate(seed=7, movies=23, shows=3, seasons_per_show=2, episodes_per_season=4)
    assert {k: i.genres for k, i in same_seed.items.items()} == {
        k: i.genres for k, i in library.items.items()
    }

    shows = {s["ratingKey"]: ShowInfo.of(s) for s in iter_items(plex, 2, "show")}
    assert all(info.genres for info in shows.values())
    section = SectionInfo(2, "TV Shows", "show")
    server = uuid.uuid4()
    for type_ in ("season", "episode"):
        for item in iter_items(plex, 2, type_):
            assert "Genre" not in item  # Plex tags the show, not its seasons and episodes
            show = shows[show_key(item) or ""]
            row = to_row(item, server, section, show)
            assert row["genres"] == list(show.genres) and row["parent_title"] == show.title


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


@pytest.fixture
def fresh() -> Iterator[tuple[PlexClient, PlexLibrary]]:
    """A small library of its own (the tests below change it), served over HTTP, and a client."""
    library = PlexLibrary.generate(seed=11, movies=4, shows=2, seasons_per_show=2, episodes_per_season=2)
    with serve_in_thread(create_plex_app(library, token=TOKEN)) as url, PlexClient(url, TOKEN) as client:
        yield client, library


def _listed(client: PlexClient, section_id: int, type_: str) -> set[str]:
    return {i["ratingKey"] for i in iter_items(client, section_id, type_)}


def test_a_file_deleted_on_disk_stays_listed_until_plex_scans(fresh: tuple[PlexClient, PlexLibrary]) -> None:
    client, library = fresh
    movie = library.section_items(1, "movie")[0]
    key = str(movie.rating_key)
    assert library.delete_files(movie.rating_key) == [movie.rating_key]
    item = one_item(client, key)
    assert item is not None and "deletedAt" not in item and key in _listed(client, 1, "movie")
    assert all("exists" not in p for m in item["Media"] for p in m["Part"])
    checked = client.get_json(f"/library/metadata/{key}", params={"checkFiles": 1})
    parts = [p for m in checked["MediaContainer"]["Metadata"][0]["Media"] for p in m["Part"]]
    assert {(p["exists"], p["accessible"]) for p in parts} == {(False, False)}  # checkFiles looks at the disk

    assert library.scan(1) == [movie.rating_key]  # empty trash after every scan: on by default
    assert one_item(client, key) is None and key not in _listed(client, 1, "movie")
    with pytest.raises(PermanentServiceError) as missing:
        client.get_json(f"/library/metadata/{key}")
    assert missing.value.status_code == 404


def test_without_automatic_empty_trash_a_scan_leaves_the_item_unavailable(
    fresh: tuple[PlexClient, PlexLibrary],
) -> None:
    client, library = fresh
    library.empty_trash_after_scan = False
    movie, other = library.section_items(1, "movie")[:2]
    library.delete_files(movie.rating_key)
    library.scan(1)
    item = one_item(client, str(movie.rating_key))
    assert item is not None and item["deletedAt"] == movie.deleted_at
    assert {(p["exists"], p["accessible"]) for m in item["Media"] for p in m["Part"]} == {(False, False)}
    assert str(movie.rating_key) in _listed(client, 1, "movie")
    healthy = one_item(client, str(other.rating_key))
    assert healthy is not None and "deletedAt" not in healthy
    assert all("exists" not in p for m in healthy["Media"] for p in m["Part"])  # only asked with checkFiles

    client.request("PUT", "/library/sections/1/emptyTrash")
    assert one_item(client, str(movie.rating_key)) is None
    assert one_item(client, str(other.rating_key)) is not None
    with pytest.raises(PermanentServiceError) as unknown:
        client.request("PUT", "/library/sections/9/emptyTrash")
    assert unknown.value.status_code == 404


def test_a_partial_scan_only_sees_its_folder_and_empty_parents_go_with_their_last_child(
    fresh: tuple[PlexClient, PlexLibrary],
) -> None:
    client, library = fresh
    show = library.section_items(2, "show")[0]
    season_one, season_two = library.children(show.rating_key)
    first, second = library.children(season_one.rating_key)
    library.delete_files(first.rating_key)
    movie = library.section_items(1, "movie")[0]
    library.delete_files(movie.rating_key)
    folder = first.media[0].parts[0].file.rsplit("/", 1)[0]

    client.request("GET", "/library/sections/2/refresh", params={"path": folder})  # Sonarr's "update library"
    assert one_item(client, str(first.rating_key)) is None
    assert one_item(client, str(season_one.rating_key)) is not None  # it still has an episode
    assert one_item(client, str(movie.rating_key)) is not None  # another section: not scanned

    library.delete_files(second.rating_key)
    library.scan(2, folder)
    assert one_item(client, str(season_one.rating_key)) is None  # the season went with its last episode
    assert one_item(client, str(show.rating_key)) is not None  # season two is still there
    assert [c.rating_key for c in library.children(show.rating_key)] == [season_two.rating_key]

    library.delete_files(show.rating_key)
    client.request("GET", "/library/sections/2/refresh")
    assert show.rating_key not in library.items and _listed(client, 2, "show") == {
        str(s.rating_key) for s in library.section_items(2, "show")
    }


def test_an_unmounted_section_is_not_scanned(fresh: tuple[PlexClient, PlexLibrary]) -> None:
    client, library = fresh
    movies = [m.rating_key for m in library.section_items(1, "movie")]
    library.unmount(1)
    for key in movies:
        library.delete_files(key)
    assert library.scan(1) == []
    library.mount(1)
    assert _listed(client, 1, "movie") == {str(m.rating_key) for m in library.section_items(1, "movie")}


def test_several_items_in_one_request(fresh: tuple[PlexClient, PlexLibrary]) -> None:
    client, fresh_library = fresh
    movies = [str(m.rating_key) for m in fresh_library.section_items(1, "movie")]
    episode = next(str(i.rating_key) for i in fresh_library.items.values() if i.type == "episode")
    asked = [movies[2], "999999", episode, movies[0], movies[2]]
    requests_before = client.requests_made
    found = client.metadata(asked)
    assert client.requests_made == requests_before + 1
    assert list(found) == [movies[2], episode, movies[0]]  # what exists, in the order asked, once
    assert found[episode]["librarySectionID"] == 2 and found[movies[0]]["librarySectionID"] == 1
    raw = client.get_json(f"/library/metadata/{','.join(asked)}")["MediaContainer"]
    assert raw["size"] == 3
    assert client.metadata(["999998", "999999"]) == {}  # Plex answers 404: it has none of them
    with pytest.raises(PermanentServiceError) as none:
        client.get_json("/library/metadata/999998,999999")
    assert none.value.status_code == 404
    fresh_library.unmount(1)
    assert list(client.metadata([*movies, episode])) == [episode]
