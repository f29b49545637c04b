"""`plex-library-sync` against simulated Plex servers over real HTTP, into a real database, with a real
Prefect server: after any sequence of library changes and syncs the table says what Plex says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from sqlalchemy import Engine, delete, select

import flows.library_sync as library_sync
from flows.library_sync import plex_library_sync
from simulators import radarr
from simulators.plex import Fault, SimulatorState, create_plex_app
from simulators.plex_library import PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.errors import (
    ConfigurationError,
    DeletionGuardError,
    PermanentServiceError,
    TransientServiceError,
)
from smartplex_sync.models import Source
from smartplex_sync.requests import PlexLibrarySync
from smartplex_sync.settings import get_settings
from smartplex_sync.store.tables import media_items, sync_state
from webhook_gateway import sources

TOKEN = "sim-token"


@dataclass
class Plex:
    state: SimulatorState
    url: str

    @property
    def library(self) -> PlexLibrary:
        return self.state.library

    def use(self, library: PlexLibrary) -> None:
        self.state.library = library
        self.state.faults.clear()
        self.state.reset_counter()


def small_library(seed: int = 1, **sizes: int) -> PlexLibrary:
    shape = {"movies": 12, "shows": 3, "seasons_per_show": 2, "episodes_per_season": 3} | sizes
    return PlexLibrary.generate(seed=seed, **shape)


@pytest.fixture
def plex(prefect_api_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plex]:
    """A simulator configured as the Plex server, overlap 0 (watermarks are tested sharply)."""
    app = create_plex_app(small_library(), token=TOKEN)
    with serve_in_thread(app) as url:
        monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
        monkeypatch.setenv("SMARTPLEX_PLEX_URL", url)
        monkeypatch.setenv("SMARTPLEX_PLEX_TOKEN", TOKEN)
        monkeypatch.setenv("SMARTPLEX_PLEX_PAGE_SIZE", "5")
        monkeypatch.setenv("SMARTPLEX_INCREMENTAL_OVERLAP_SECONDS", "0")
        monkeypatch.setenv("SMARTPLEX_HTTP_TIMEOUT_SECONDS", "2")
        get_settings.cache_clear()
        yield Plex(app.state.plex, url)
    get_settings.cache_clear()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow's network tasks with the production retry count but no waiting between tries."""
    for name in ("fetch_identity", "fetch_sections", "fetch_page", "fetch_items", "fetch_children"):
        task = getattr(library_sync, name)
        monkeypatch.setattr(
            library_sync, name, task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
        )


def _ids(item: Any) -> tuple[int | None, int | None, str | None]:
    """tmdb, tvdb, imdb as the truth knows them: Guid[] ids, or the id of a legacy agent's own guid."""
    ids: dict[str, Any] = {}
    for guid in item.guids:
        kind, _, value = guid.partition("://")
        ids[kind] = value
    legacy = item.guid.split("?")[0]
    for agent, kind in (("imdb", "imdb"), ("thetvdb", "tvdb")):
        prefix = f"com.plexapp.agents.{agent}://"
        if legacy.startswith(prefix) and "/" not in legacy[len(prefix) :]:
            ids[kind] = legacy[len(prefix) :]
    as_int = lambda v: int(v) if v is not None else None  # noqa: E731
    return as_int(ids.get("tmdb")), as_int(ids.get("tvdb")), ids.get("imdb")


def truth(library: PlexLibrary) -> dict[str, tuple[Any, ...]]:
    rows = {}
    for item in library.visible_items():
        parent = library.items.get(item.parent_key or 0)
        season_number = (
            item.index
            if item.type == "season"
            else parent.index
            if item.type == "episode" and parent
            else None
        )
        size = sum(p.size for m in item.media for p in m.parts) or None
        rows[str(item.rating_key)] = (
            item.type, item.title, item.section_id, size, item.updated_at, *_ids(item), season_number,
            item.index if item.type == "episode" else None,
            str(item.parent_key) if item.parent_key else None,
        )  # fmt: skip
    return rows


def database(engine: Engine, server_id: str) -> dict[str, tuple[Any, ...]]:
    c = media_items.c
    columns = (c.rating_key, c.type, c.title, c.section_id, c.file_size_bytes, c.updated_at, c.tmdb_id,
               c.tvdb_id, c.imdb_id, c.season_number, c.episode_number, c.parent_rating_key)  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).where(c.server_id == server_id))
        return {r[0]: (*r[1:5], int(r[5].timestamp()), *r[6:]) for r in rows}


def sync(**parameters: Any) -> dict[str, Any]:
    """The flow body with a request; a full sync of everything unless the parameters say otherwise."""
    return plex_library_sync.fn(PlexLibrarySync.model_validate({"mode": "full", **parameters}))


def test_full_sync_equals_the_truth_and_a_second_run_changes_nothing(plex: Plex, engine: Engine) -> None:
    first = sync()
    expected = truth(plex.library)
    assert database(engine, plex.library.machine_identifier) == expected
    assert (first["added"], first["updated"], first["removed"], first["unchanged"]) == (
        len(expected),
        0,
        0,
        0,
    )
    # identity + sections + ceil(12/5) movie pages + shows, seasons, episodes (3, 6, 18 items) pages
    assert first["requests"] == plex.state.requests == 2 + 3 + 1 + 2 + 4
    second = sync()
    assert (second["added"], second["updated"], second["removed"], second["unchanged"]) == (
        0,
        0,
        0,
        len(expected),
    )


def test_incremental_catches_additions_upgrades_and_new_seasons_with_few_requests(
    plex: Plex, engine: Engine
) -> None:
    sync(mode="incremental")  # no watermark yet: a full sync
    library = plex.library
    show = next(i for i in library.items.values() if i.type == "show")
    movie = next(i for i in library.items.values() if i.type == "movie")
    library.add_movie(1)
    season = library.add_season(show.rating_key, episodes=4)
    library.upgrade(movie.rating_key)
    plex.state.reset_counter()
    result = sync(mode="incremental")
    assert database(engine, library.machine_identifier) == truth(library)
    assert (result["added"], result["updated"], result["unchanged"]) == (1 + 1 + 4, 1, 0)
    assert result["requests"] == plex.state.requests == 2 + 1 + 3  # one page per type
    assert database(engine, library.machine_identifier)[str(season.rating_key)][-3] == 3
    assert sync(mode="incremental")["added"] == 0


def test_rating_key_mode_fetches_a_show_with_its_seasons_and_episodes(plex: Plex, engine: Engine) -> None:
    show = next(i for i in plex.library.items.values() if i.type == "show")
    result = sync(rating_key=str(show.rating_key))
    expected = {k: v for k, v in truth(plex.library).items() if k == str(show.rating_key) or
                v[-1] == str(show.rating_key) or plex.library.items[int(k)].grandparent_key == show.rating_key}  # fmt: skip
    assert database(engine, plex.library.machine_identifier) == expected
    assert result["added"] == 1 + 2 + 6 and result["requests"] == 1 + 1 + 1 + 2
    assert sync(rating_key="424242")["added"] == 0  # unknown key: nothing, no error


def test_many_items_cost_one_metadata_request(plex: Plex, engine: Engine) -> None:
    """A merged run of several library.new deliveries asks for all their items at once."""
    movies = [str(i.rating_key) for i in plex.library.items.values() if i.type == "movie"][:8]
    result = sync(rating_keys=[*movies, "424242"])
    assert result["added"] == 8 and result["mode"] == "item"
    assert (
        result["requests"] == plex.state.requests == 1 + 1
    )  # identity, then one /library/metadata/k1,k2,...
    assert set(database(engine, plex.library.machine_identifier)) == set(movies)


def test_full_sync_of_one_section_never_deletes_another_section_or_server(plex: Plex, engine: Engine) -> None:
    first = plex.library
    sync()
    other = small_library(seed=2)  # another server (another machineIdentifier), same section ids
    plex.use(other)
    sync()
    plex.use(first)
    for movie in [i for i in first.items.values() if i.type == "movie"][:2]:
        first.delete(movie.rating_key)
    show = next(i for i in first.items.values() if i.type == "show")
    first.delete(next(iter(first.children(show.rating_key))).rating_key)  # a season and its episodes
    result = sync(section_ids=[1])
    assert result["removed"] == 2
    stored = database(engine, first.machine_identifier)
    assert {k for k, v in stored.items() if v[2] == 1} == {k for k, v in truth(first).items() if v[2] == 1}
    assert len([k for k, v in stored.items() if v[2] == 2]) == 3 + 6 + 18  # section 2 not touched yet
    assert database(engine, other.machine_identifier) == truth(other)  # the other server untouched
    assert sync(section_type="show")["removed"] == 1 + 3
    assert database(engine, first.machine_identifier) == truth(first)


def test_an_item_plex_keeps_in_its_trash_has_no_row(plex: Plex, engine: Engine) -> None:
    library = plex.library
    library.empty_trash_after_scan = False
    sync()
    movie = next(i for i in library.items.values() if i.type == "movie")
    library.delete_files(movie.rating_key)
    library.scan(1)
    assert movie.deleted_at is not None and movie.rating_key in library.items  # listed, unavailable
    assert sync(section_ids=[1])["removed"] == 1
    expected = {k: v for k, v in truth(library).items() if k != str(movie.rating_key)}
    assert database(engine, library.machine_identifier) == expected
    assert sync(rating_key=str(movie.rating_key))["added"] == 0  # nor does an item sync write it
    assert sync()["added"] == 0


def test_unmounted_section_fails_the_run_and_deletes_nothing(plex: Plex, engine: Engine) -> None:
    sync()
    before = database(engine, plex.library.machine_identifier)
    plex.library.unmount(1)
    plex.library.add_show(2, seasons=1, episodes=2)
    with pytest.raises(DeletionGuardError, match="12 of 12 rows of section 1"):
        sync()
    after = database(engine, plex.library.machine_identifier)
    assert set(before) < set(after) and len(after) == len(before) + 1 + 1 + 2  # the show section still synced


def test_transient_failures_are_retried_and_401_is_not(
    plex: Plex, engine: Engine, fast_retries: None
) -> None:
    plex.state.inject(Fault(503), Fault(None, delay=2.5), Fault(502))
    result = sync()
    assert database(engine, plex.library.machine_identifier) == truth(plex.library)
    assert plex.state.requests == result["requests"] == 12 + 3
    plex.state.reset_counter()
    plex.state.inject(*[Fault(503)] * 5)
    with pytest.raises(TransientServiceError, match="503"):
        sync()
    assert plex.state.requests == 5  # one try and four retries


def test_wrong_token_fails_at_once(plex: Plex, monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> None:
    monkeypatch.setenv("SMARTPLEX_PLEX_TOKEN", "wrong")
    get_settings.cache_clear()
    with pytest.raises(PermanentServiceError, match="401"):
        sync()
    assert plex.state.requests == 2  # /identity needs no token; /library/sections refused, not retried


def test_missing_settings_fail_naming_them(plex: Plex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTPLEX_PLEX_TOKEN")
    get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="SMARTPLEX_PLEX_TOKEN"):
        sync()
    assert plex.state.requests == 0


def test_the_flow_runs_in_prefect_and_leaves_a_table_artifact(plex: Plex) -> None:
    state = plex_library_sync(PlexLibrarySync(section_types=["movie"], mode="full"), return_state=True)
    assert state.is_completed() and state.result()["added"] == 12

    async def artifact() -> Any:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["plex-library-sync"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                ),
            )
        return found[0].data

    data = asyncio.run(artifact())
    rows = data if isinstance(data, list) else json.loads(data)
    assert rows[0]["added"] == 12 and rows[0]["requests"] == 3 and rows[0]["section"] == "Movies (1)"


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["movie", "show", "season", "upgrade", "delete", "incremental", "full"]),
        st.integers(0, 1000),
    ),
    min_size=1,
    max_size=7,
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 1000), actions=ACTIONS)
def test_random_changes_and_syncs_match_the_truth(
    plex: Plex, engine: Engine, monkeypatch: pytest.MonkeyPatch, seed: int, actions: list[tuple[str, int]]
) -> None:
    monkeypatch.setenv("SMARTPLEX_DELETE_GUARD_FRACTION", "1")
    monkeypatch.setenv("SMARTPLEX_PLEX_PAGE_SIZE", "100")  # paging is tested above; here, fewer task runs
    get_settings.cache_clear()
    with engine.begin() as conn:
        conn.execute(delete(media_items))
        conn.execute(delete(sync_state))
    library = small_library(seed, movies=4, shows=1, seasons_per_show=1, episodes_per_season=2)
    plex.use(library)
    server = library.machine_identifier
    sync()
    deleted: set[str] = set()
    for action, pick in actions:
        keys = {
            kind: sorted(k for k, i in library.items.items() if i.type == kind)
            for kind in ("movie", "show", "episode")
        }
        if action == "movie":
            library.add_movie(1)
        elif action == "show":
            library.add_show(2, seasons=1, episodes=2)
        elif action == "season" and keys["show"]:
            library.add_season(keys["show"][pick % len(keys["show"])], episodes=2)
        elif action == "upgrade" and keys["movie"] + keys["episode"]:
            files = keys["movie"] + keys["episode"]
            library.upgrade(files[pick % len(files)])
        elif action == "delete" and keys["movie"] + keys["show"]:
            targets = keys["movie"] + keys["show"]
            deleted.update(str(k) for k in library.delete(targets[pick % len(targets)]))
        elif action == "incremental":
            sync(mode="incremental")
            stored, expected = database(engine, server), truth(library)
            assert {k: v for k, v in stored.items() if k in expected} == expected  # every change caught
            assert set(stored) - set(expected) <= deleted  # only deletions wait for a full sync
        elif action == "full":
            sync()
            assert database(engine, server) == truth(library)
            deleted.clear()
    sync()
    assert database(engine, server) == truth(library)
    assert sync()["unchanged"] == len(truth(library))


def _movie_delete(plex: Plex, movie: Any) -> PlexLibrarySync:
    """What the gateway makes of Radarr's MovieDelete for this Plex movie (matched by its tmdb id)."""
    tmdb_id, _, imdb_id = _ids(movie)
    payload = radarr.movie_delete_payload(
        {"id": 5, "title": movie.title, "tmdbId": tmdb_id, "imdbId": imdb_id}
    )
    (request,) = sources.parse(Source.RADARR, payload).requests
    assert isinstance(request.parameters, PlexLibrarySync)
    return request.parameters


def test_a_radarr_delete_removes_the_row_once_plex_scanned_and_shows_it_in_the_artifact(
    plex: Plex, engine: Engine
) -> None:
    sync()
    movie = next(i for i in plex.library.items.values() if i.type == "movie" and i.guids)
    request = _movie_delete(plex, movie)
    plex.library.delete_files(movie.rating_key)
    not_yet = plex_library_sync.fn(request)  # Plex has not scanned: the row stays
    assert not_yet["mode"] == "removal" and not_yet["removal_checks"]["still_in_plex"] == [
        str(movie.rating_key)
    ]
    assert str(movie.rating_key) in database(engine, plex.library.machine_identifier)
    plex.library.scan(movie.section_id)
    result = plex_library_sync.fn(request)
    assert result["removal_checks"]["removed"] == [str(movie.rating_key)]
    assert database(engine, plex.library.machine_identifier) == truth(plex.library)


def test_removal_checks_run_after_the_syncs_of_the_same_run(plex: Plex, engine: Engine) -> None:
    """A merged run that also lists the section fully must not keep or write back the deleted movie."""
    sync()
    movie = next(i for i in plex.library.items.values() if i.type == "movie" and i.guids)
    plex.library.delete_files(movie.rating_key)
    plex.library.scan(movie.section_id)
    merged = _movie_delete(plex, movie).merge(
        PlexLibrarySync(section_types=["movie"], rating_keys=[str(movie.rating_key)])
    )
    result = plex_library_sync.fn(merged)
    assert result["mode"] == "incremental" and str(movie.rating_key) not in database(
        engine, plex.library.machine_identifier
    )


def test_a_removal_check_plex_does_not_answer_keeps_the_row_and_fails_the_run(
    plex: Plex, engine: Engine
) -> None:
    sync()
    movie = next(i for i in plex.library.items.values() if i.type == "movie" and i.guids)
    plex.library.delete(movie.rating_key)
    request = _movie_delete(plex, movie)
    plex.state.inject(Fault(None), Fault(503))  # identity answers, the metadata request does not
    with pytest.raises(TransientServiceError, match="no answer for 1 rows"):
        plex_library_sync.fn(request)
    assert str(movie.rating_key) in database(engine, plex.library.machine_identifier)
