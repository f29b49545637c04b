"""`plex-library-sync` against simulated Plex servers over real HTTP, into a real database: after any
sequence of library changes and syncs, each server's `media_items` rows say what its Plex says, and no
server's sync touches another server's rows. The flow body runs in-process (`tests.support.pipeline`);
the tests of retries and of the artifact read back from Prefect run with a real Prefect server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from sqlalchemy import Engine, select, update

import flows.library_sync as library_sync
from deployments.processes import free_port
from flows.library_sync import REMOVAL_CHECKS, plex_library_sync
from simulators import radarr
from simulators.plex import Fault, SimulatorState, create_plex_app
from simulators.plex_library import EPISODE, SEASON, Item, PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.errors import SyncFailedError
from smartplex_sync.models import Source
from smartplex_sync.requests import PlexLibrarySync, PlexScope, Trigger
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store.accounts import configure
from smartplex_sync.store.tables import media_items, servers, sync_events
from tests.support.factories import add_server, add_user
from tests.support.pipeline import flows_in_process
from webhook_gateway import sources

TOKEN = "sim-token-0f3c9a"


@dataclass
class Plex:
    """A simulated Plex server and its SmartPlex `servers` row."""

    state: SimulatorState
    url: str
    server_id: uuid.UUID
    name: str
    token: str

    @property
    def library(self) -> PlexLibrary:
        return self.state.library


@dataclass
class World:
    """The database, the simulators, and the artifacts the in-process runs published."""

    engine: Engine
    stack: ExitStack
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    owner: uuid.UUID | None = None

    def server_row(self, url: str, library: PlexLibrary, *, name: str, token: str = TOKEN,
                   machine_id: str | None = "") -> uuid.UUID:  # fmt: skip
        """A `servers` row for the Plex at `url` (its machine id that of `library` unless given)."""
        with self.engine.begin() as conn:
            if self.owner is None:
                self.owner = add_user(conn, "owner@example.com")
            return add_server(
                conn, self.owner, name=name, url=url, token=token,
                machine_id=library.machine_identifier if machine_id == "" else machine_id,
            )  # fmt: skip

    def plex(self, library: PlexLibrary, *, name: str = "Plex", token: str = TOKEN) -> Plex:
        """Serve `library` and give it a servers row."""
        app = create_plex_app(library, token=token)
        url = self.stack.enter_context(serve_in_thread(app))
        return Plex(app.state.plex, url, self.server_row(url, library, name=name, token=token), name, token)


def small_library(seed: int = 1, **sizes: Any) -> PlexLibrary:
    shape = {"movies": 12, "shows": 3, "seasons_per_show": 2, "episodes_per_season": 3} | sizes
    return PlexLibrary.generate(seed=seed, **shape)


def _environment(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """Page size 5 (paging is exercised), overlap 0 (watermarks are tested sharply)."""
    monkeypatch.setenv("SMARTPLEX_DATABASE_URL", database_url)
    monkeypatch.setenv("SMARTPLEX_PLEX_PAGE_SIZE", "5")
    monkeypatch.setenv("SMARTPLEX_INCREMENTAL_OVERLAP_SECONDS", "0")
    monkeypatch.setenv("SMARTPLEX_HTTP_TIMEOUT_SECONDS", "2")
    for name in ("SMARTPLEX_PLEX_URL", "SMARTPLEX_PLEX_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()


@pytest.fixture
def world(database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The flows in-process: tasks are plain functions (no retries), artifacts are collected."""
    _environment(monkeypatch, database_url)
    with ExitStack() as stack:
        yield World(engine, stack, flows_in_process(monkeypatch))
    get_settings.cache_clear()


@pytest.fixture
def plex(world: World) -> Plex:
    return world.plex(small_library())


@pytest.fixture
def prefect_world(
    prefect_api_url: str, database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """The flows with Prefect: real tasks (retries, with the production count but no waiting), a real
    Prefect server for the runs and their artifacts."""
    _environment(monkeypatch, database_url)
    for name in ("fetch_server_info", "fetch_sections", "fetch_page", "fetch_items", "fetch_children"):
        task = getattr(library_sync, name)
        monkeypatch.setattr(
            library_sync, name, task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
        )
    with ExitStack() as stack:
        stack.enter_context(temporary_settings({PREFECT_LOGGING_TO_API_ENABLED: False}))
        yield World(engine, stack)
    get_settings.cache_clear()


# ------------------------------------------------------------------------------ the truth and the rows


def _ids(item: Item) -> dict[str, Any]:
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
    return {
        "tmdb_id": as_int(ids.get("tmdb")),
        "tvdb_id": as_int(ids.get("tvdb")),
        "imdb_id": ids.get("imdb"),
    }


def _iso(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat()


def truth(library: PlexLibrary) -> dict[str, dict[str, Any]]:
    """The rows Plex's library means: every listed item (trashed ones not accessible), seasons and
    episodes with their show's ids, genres and title."""
    rows = {}
    for item in library.visible_items():
        show = (
            library.items[item.grandparent_key or item.parent_key or 0]
            if item.type in (SEASON, EPISODE)
            else None
        )
        season = library.items.get(item.parent_key or 0) if item.type == EPISODE else None
        sizes = [p.size for m in item.media for p in m.parts]
        rows[str(item.rating_key)] = {
            "type": item.type,
            "title": item.title,
            "year": item.year if item.year and 1900 <= item.year <= 2100 else None,
            "section": item.section_id,
            "size": sum(sizes) if sizes else None,
            "added": _iso(item.added_at),
            "updated": _iso(item.updated_at),
            **_ids(show or item),
            "genres": list((show or item).genres),
            "season": item.index if item.type == SEASON else season.index if season else None,
            "episode": item.index if item.type == EPISODE else None,
            "parent": str(item.parent_key) if item.parent_key else None,
            "show_titles": (
                show.title if show else None,
                show.title if item.type == EPISODE and show else None,
            ),
            "accessible": item.deleted_at is None,
        }
    return rows


def database(engine: Engine, server_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(media_items).where(media_items.c.server_id == server_id)).all()
    return {
        r.plex_id: {
            "type": r.type,
            "title": r.title,
            "year": r.year,
            "section": r.metadata["plex_section_id"],
            "size": r.file_size_bytes,
            "added": r.metadata["plex_added_at"],
            "updated": r.metadata["plex_updated_at"],
            "tmdb_id": r.tmdb_id,
            "tvdb_id": r.tvdb_id,
            "imdb_id": r.imdb_id,
            "genres": list(r.genres),
            "season": r.season_number,
            "episode": r.episode_number,
            "parent": r.metadata.get("plex_parent_rating_key"),
            "show_titles": (r.parent_title, r.grandparent_title),
            "accessible": r.accessible,
        }
        for r in rows
    }


def snapshot(engine: Engine, server_id: uuid.UUID) -> dict[str, tuple[Any, ...]]:
    """Every column of every row of a server, ids and updated_at included: proof that nothing wrote them."""
    with engine.connect() as conn:
        rows = conn.execute(select(media_items).where(media_items.c.server_id == server_id)).all()
    return {r.plex_id: tuple(r) for r in rows}


def events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(sync_events).order_by(sync_events.c.started_at)).all()


def run(request: PlexLibrarySync, trigger: Trigger = "manual") -> dict[str, Any]:
    return plex_library_sync.fn(request, trigger)


def sync(plex: Plex, trigger: Trigger = "manual", **scope: Any) -> dict[str, Any]:
    """One server's part of a run; a full sync of everything unless `scope` says otherwise."""
    result = run(PlexLibrarySync(servers={plex.server_id: PlexScope(**{"mode": "full", **scope})}), trigger)
    return result["servers"][str(plex.server_id)]


def counts(part: dict[str, Any]) -> tuple[int, int, int, int]:
    return part["added"], part["updated"], part["removed"], part["unchanged"]


def secrets_absent(secrets: list[str], *texts: Any) -> None:
    for text in texts:
        dumped = json.dumps(text, default=str)
        assert not [secret for secret in secrets if secret in dumped], dumped


# ------------------------------------------------------------------------------ one server


def test_full_sync_equals_the_truth_and_a_second_run_changes_nothing(plex: Plex, world: World) -> None:
    first = sync(plex, "scheduled")
    expected = truth(plex.library)
    assert database(world.engine, plex.server_id) == expected
    assert counts(first) == (len(expected), 0, 0, 0)
    # server info (/) + sections + ceil(12/5) movie pages + shows, seasons, episodes (3, 6, 18 items) pages
    assert first["requests"] == plex.state.requests == 2 + 3 + 1 + 2 + 4
    second = sync(plex)
    assert counts(second) == (0, 0, 0, len(expected))
    (one, two) = events(world.engine)
    assert (one.sync_type, one.trigger_type, one.status, one.server_id) == (
        "plex",
        "scheduled",
        "completed",
        plex.server_id,
    )
    assert (one.items_discovered, one.items_new, one.items_updated, one.items_removed) == (
        len(expected),
        len(expected),
        0,
        0,
    )
    assert (two.trigger_type, two.items_discovered, two.items_new) == ("manual", len(expected), 0)
    assert one.sync_metadata["flow"] == "plex-library-sync" and one.sync_metadata["mode"] == "full"
    with world.engine.connect() as conn:
        row = conn.execute(select(servers).where(servers.c.id == plex.server_id)).one()
    assert (row.status, row.version, row.machine_id) == (
        "online",
        plex.library.version,
        plex.library.machine_identifier,
    )


def test_incremental_catches_additions_upgrades_and_new_seasons_with_few_requests(
    plex: Plex, world: World
) -> None:
    sync(plex, mode="incremental")  # no watermark yet: a full sync
    library = plex.library
    show = next(i for i in library.items.values() if i.type == "show")
    movie = next(i for i in library.items.values() if i.type == "movie")
    library.add_movie(1)
    season = library.add_season(show.rating_key, episodes=4)
    library.upgrade(movie.rating_key)
    plex.state.reset_counter()
    result = sync(plex, mode="incremental")
    assert database(world.engine, plex.server_id) == truth(library)
    assert (result["added"], result["updated"], result["unchanged"]) == (1 + 1 + 4, 1, 0)
    # server info, sections, one page per type, and the new season's show (not listed: unchanged)
    assert result["requests"] == plex.state.requests == 2 + 4 + 1
    new_season = database(world.engine, plex.server_id)[str(season.rating_key)]
    assert new_season["season"] == 3 and new_season["tvdb_id"] == _ids(show)["tvdb_id"]
    assert sync(plex, mode="incremental")["added"] == 0


def test_rating_key_mode_fetches_a_show_with_its_seasons_and_episodes(plex: Plex, world: World) -> None:
    show = next(i for i in plex.library.items.values() if i.type == "show")
    result = sync(plex, rating_keys=[str(show.rating_key)])
    below = {str(show.rating_key), *(str(i.rating_key) for i in plex.library.descendants(show.rating_key))}
    expected = {k: v for k, v in truth(plex.library).items() if k in below}
    assert database(world.engine, plex.server_id) == expected
    # server info, the show, its children, each season's children
    assert result["added"] == 1 + 2 + 6 and result["requests"] == 1 + 1 + 1 + 2
    assert result["mode"] == "item"
    assert sync(plex, rating_keys=["424242"])["added"] == 0  # unknown key: nothing, no error


def test_many_items_cost_one_metadata_request(plex: Plex, world: World) -> None:
    """A merged run of several library.new deliveries asks for all their items at once."""
    movies = [str(i.rating_key) for i in plex.library.items.values() if i.type == "movie"][:8]
    result = sync(plex, rating_keys=[*movies, "424242"])
    assert result["added"] == 8 and result["mode"] == "item"
    assert result["requests"] == plex.state.requests == 1 + 1  # server info, one /library/metadata/k1,k2,...
    assert set(database(world.engine, plex.server_id)) == set(movies)


def test_a_full_sync_of_one_section_never_deletes_another_section(plex: Plex, world: World) -> None:
    library = plex.library
    sync(plex)
    for movie in [i for i in library.items.values() if i.type == "movie"][:2]:
        library.delete(movie.rating_key)
    show = next(i for i in library.items.values() if i.type == "show")
    library.delete(library.children(show.rating_key)[0].rating_key)  # a season and its episodes
    assert sync(plex, section_ids=[1])["removed"] == 2
    stored = database(world.engine, plex.server_id)
    assert {k for k, v in stored.items() if v["section"] == 1} == {
        k for k, v in truth(library).items() if v["section"] == 1
    }
    assert len([k for k, v in stored.items() if v["section"] == 2]) == 3 + 6 + 18  # section 2 not touched yet
    assert sync(plex, section_types=["show"])["removed"] == 1 + 3
    assert database(world.engine, plex.server_id) == truth(library)


def test_an_item_plex_keeps_in_its_trash_is_a_row_not_accessible(plex: Plex, world: World) -> None:
    library = plex.library
    library.empty_trash_after_scan = False
    sync(plex)
    movie = next(i for i in library.items.values() if i.type == "movie")
    library.delete_files(movie.rating_key)
    library.scan(1)
    assert movie.deleted_at is not None and movie.rating_key in library.items  # listed, unavailable
    result = sync(plex, section_ids=[1])
    assert (result["removed"], result["updated"]) == (0, 1)
    stored = database(world.engine, plex.server_id)
    assert stored == truth(library) and stored[str(movie.rating_key)]["accessible"] is False
    assert sync(plex, rating_keys=[str(movie.rating_key)])["unchanged"] == 1  # an item sync agrees
    library.empty_trash(1)
    assert sync(plex)["removed"] == 1
    assert database(world.engine, plex.server_id) == truth(library)


def test_unmounted_section_fails_the_part_and_deletes_nothing(plex: Plex, world: World) -> None:
    sync(plex)
    before = database(world.engine, plex.server_id)
    plex.library.unmount(1)
    plex.library.add_show(2, seasons=1, episodes=2)
    with pytest.raises(SyncFailedError, match="12 of 12 rows of section 1") as failed:
        sync(plex)
    assert list(failed.value.failures) == [f"Plex ({plex.server_id})"]
    after = database(world.engine, plex.server_id)
    assert set(before) < set(after) and len(after) == len(before) + 1 + 1 + 2  # the show section still synced
    last = events(world.engine)[-1]
    assert last.status == "failed" and "12 of 12 rows of section 1" in last.error_message


def test_a_server_whose_plex_is_another_machine_is_refused(world: World) -> None:
    library = small_library()
    app = create_plex_app(library, token=TOKEN)
    url = world.stack.enter_context(serve_in_thread(app))
    wrong = world.server_row(url, library, name="Den", machine_id="f" * 40)
    with pytest.raises(
        SyncFailedError, match=f"answers as Plex machine {library.machine_identifier}"
    ) as failed:
        run(PlexLibrarySync(servers={wrong: PlexScope(mode="full")}))
    assert list(failed.value.failures) == [f"Den ({wrong})"]
    assert database(world.engine, wrong) == {} and app.state.plex.requests == 1  # `/` only
    with world.engine.connect() as conn:
        assert conn.scalar(select(servers.c.machine_id).where(servers.c.id == wrong)) == "f" * 40
    (event,) = events(world.engine)
    assert (event.status, event.server_id) == ("failed", wrong)


def test_a_server_row_without_a_token_fails_its_part_before_any_request(world: World) -> None:
    library = small_library()
    app = create_plex_app(library, token=TOKEN)
    url = world.stack.enter_context(serve_in_thread(app))
    tokenless = world.server_row(url, library, name="Attic", token="")
    with pytest.raises(SyncFailedError, match="has no plex_token") as failed:
        run(PlexLibrarySync())
    assert list(failed.value.failures) == [f"Attic ({tokenless})"]
    assert app.state.plex.requests == 0


def test_the_environment_server_is_a_row_and_its_machine_id_is_learnt(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMARTPLEX_PLEX_URL/TOKEN become the owner's server row (`configure`); its first sync records the
    machine id Plex answers, and a row without the token says which setting is missing."""
    library = small_library()
    app = create_plex_app(library, token=TOKEN)
    url = world.stack.enter_context(serve_in_thread(app))
    monkeypatch.setenv("SMARTPLEX_OWNER_EMAIL", "me@example.com")
    monkeypatch.setenv("SMARTPLEX_PLEX_URL", url)
    configured = configure(world.engine, Settings())  # no token yet
    assert configured is not None and configured.server_id is not None
    with pytest.raises(SyncFailedError, match="SMARTPLEX_PLEX_TOKEN"):
        run(PlexLibrarySync())
    assert app.state.plex.requests == 0
    monkeypatch.setenv("SMARTPLEX_PLEX_TOKEN", TOKEN)
    get_settings.cache_clear()
    configure(world.engine, Settings())
    result = run(PlexLibrarySync(), "scheduled")
    assert result["servers"][str(configured.server_id)]["added"] == len(truth(library))
    assert database(world.engine, configured.server_id) == truth(library)
    with world.engine.connect() as conn:
        machine = conn.scalar(select(servers.c.machine_id).where(servers.c.id == configured.server_id))
    assert machine == library.machine_identifier


# ------------------------------------------------------------------------------ two servers


def test_two_servers_with_the_same_rating_keys_never_touch_each_others_rows(world: World) -> None:
    first = world.plex(small_library(seed=1), name="Living room", token="token-of-the-living-room")
    second = world.plex(small_library(seed=2), name="Cabin", token="token-of-the-cabin")
    shared = set(truth(first.library)) & set(truth(second.library))
    assert len(shared) > 20  # the same rating keys, other items
    result = run(PlexLibrarySync(), "scheduled")  # every server
    assert set(result["servers"]) == {str(first.server_id), str(second.server_id)}
    assert database(world.engine, first.server_id) == truth(first.library)
    assert database(world.engine, second.server_id) == truth(second.library)
    untouched = snapshot(world.engine, second.server_id)

    library = first.library
    for movie in [i for i in library.items.values() if i.type == "movie"][:2]:
        library.delete(movie.rating_key)
    show = next(i for i in library.items.values() if i.type == "show")
    library.delete(library.children(show.rating_key)[0].rating_key)
    library.upgrade(next(i for i in library.items.values() if i.type == "movie").rating_key)
    second.library.add_movie(1)  # not synced: only the first server is asked for
    assert counts(sync(first, section_ids=[1])) == (0, 1, 2, 9)
    assert sync(first, section_types=["show"])["removed"] == 1 + 3
    assert database(world.engine, first.server_id) == truth(library)
    assert snapshot(world.engine, second.server_id) == untouched

    # a removal check and an item sync of the first server's rating keys leave the second's rows alone
    movie = next(i for i in library.items.values() if i.type == "movie" and i.guids)
    library.delete(movie.rating_key)
    assert str(movie.rating_key) in shared
    removed = run(on(first)(_movie_delete(movie)))["servers"][str(first.server_id)]["removal_checks"][
        "removed"
    ]
    assert removed == [str(movie.rating_key)]
    assert sync(first, rating_keys=sorted(shared)[:5])["unchanged"] >= 1
    assert snapshot(world.engine, second.server_id) == untouched
    assert sync(second)["added"] == 1
    assert database(world.engine, second.server_id) == truth(second.library)
    secrets_absent(
        [first.token, second.token], world.artifacts, [e.sync_metadata for e in events(world.engine)]
    )


def test_a_server_whose_plex_is_down_fails_its_own_part_only(world: World) -> None:
    library = small_library(seed=2)
    down = world.server_row(
        f"http://127.0.0.1:{free_port()}", library, name="Cabin", token="token-of-the-cabin"
    )
    up = world.plex(small_library(seed=1), name="Living room", token="token-of-the-living-room")
    with pytest.raises(SyncFailedError) as failed:
        run(PlexLibrarySync(), "scheduled")  # the server that is down comes first
    assert list(failed.value.failures) == [f"Cabin ({down})"]
    assert "cannot reach" in failed.value.failures[f"Cabin ({down})"]
    assert database(world.engine, up.server_id) == truth(up.library)
    assert database(world.engine, down) == {}
    found = {e.server_id: e for e in events(world.engine)}
    assert (found[down].status, found[down].trigger_type, found[down].items_new) == ("failed", "scheduled", 0)
    assert found[down].error_message
    ok = found[up.server_id]
    assert (ok.status, ok.trigger_type, ok.items_new) == ("completed", "scheduled", len(truth(up.library)))
    (artifact,) = [a for a in world.artifacts if a["key"] == "plex-library-sync"]
    outcomes = {row["server"]: row["outcome"] for row in artifact["table"]}
    assert outcomes == {"Cabin": "failed", "Living room": "completed"}
    assert "Cabin: failed" in artifact["description"]
    with world.engine.connect() as conn:
        status = dict(conn.execute(select(servers.c.id, servers.c.status)).all())
    assert (status[up.server_id], status[down]) == ("online", "offline")
    secrets_absent(
        [TOKEN, "token-of-the-cabin", "token-of-the-living-room"],
        world.artifacts,
        [tuple(e) for e in events(world.engine)],
        str(failed.value),
    )


def test_a_server_row_pointing_at_another_servers_plex_writes_nothing_there(world: World) -> None:
    """Two rows, one URL (a stale address after a move): the Plex there is the first server, so the
    second server's part is refused and the first server's rows are written once, under the first."""
    first = world.plex(small_library(seed=1), name="Living room")
    moved = world.server_row(first.url, small_library(seed=2), name="Cabin")
    with pytest.raises(SyncFailedError, match="Cabin"):
        run(PlexLibrarySync())
    assert database(world.engine, first.server_id) == truth(first.library)
    assert database(world.engine, moved) == {}


# ------------------------------------------------------------------------------ with Prefect


def test_transient_failures_are_retried_and_401_is_not(prefect_world: World) -> None:
    plex = prefect_world.plex(small_library())
    plex.state.inject(Fault(503), Fault(None, delay=2.5), Fault(502))
    result = sync(plex)
    assert database(prefect_world.engine, plex.server_id) == truth(plex.library)
    assert plex.state.requests == result["requests"] == 12 + 3
    plex.state.reset_counter()
    plex.state.inject(*[Fault(503)] * 5)
    with pytest.raises(SyncFailedError, match="503"):
        sync(plex)
    assert plex.state.requests == 5  # one try and four retries
    with prefect_world.engine.begin() as conn:
        conn.execute(update(servers).where(servers.c.id == plex.server_id).values(plex_token="wrong"))
    plex.state.reset_counter()
    with pytest.raises(SyncFailedError, match="401"):
        sync(plex)
    assert plex.state.requests == 1  # `/` refused the token, not retried


def test_the_flow_runs_in_prefect_tagged_by_server_and_leaves_a_table_artifact(prefect_world: World) -> None:
    plex = prefect_world.plex(small_library(), name="Living room")
    request = PlexLibrarySync(servers={plex.server_id: PlexScope(section_types=["movie"], mode="full")})
    state = plex_library_sync(request, "manual", return_state=True)
    assert state.is_completed() and state.result()["servers"][str(plex.server_id)]["added"] == 12
    run_id = state.state_details.flow_run_id

    async def read() -> tuple[Any, Any]:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["plex-library-sync"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                ),
            )
            return found[0], await client.read_flow_run(run_id)

    artifact, flow_run = asyncio.run(read())
    rows = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    assert rows[0]["server"] == "Living room" and rows[0]["outcome"] == "completed"
    assert rows[0]["added"] == 12 and rows[0]["requests"] == 3 and rows[0]["section"] == "Movies (1)"
    assert "server:Living room" in flow_run.tags
    (event,) = events(prefect_world.engine)
    assert event.sync_metadata["flow_run_id"] == str(run_id)
    secrets_absent([TOKEN], rows, artifact.description, event.sync_metadata, flow_run.parameters)


# ------------------------------------------------------------------------------ random, and removals


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["movie", "show", "season", "upgrade", "delete", "trash", "incremental", "full"]),
        st.integers(0, 1000),
    ),
    min_size=1,
    max_size=7,
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 1000), actions=ACTIONS)
def test_random_changes_and_syncs_match_the_truth(
    world: World, monkeypatch: pytest.MonkeyPatch, seed: int, actions: list[tuple[str, int]]
) -> None:
    monkeypatch.setenv("SMARTPLEX_DELETE_GUARD_FRACTION", "1")
    monkeypatch.setenv("SMARTPLEX_PLEX_PAGE_SIZE", "100")  # paging is tested above
    get_settings.cache_clear()
    library = small_library(
        seed, movies=4, shows=1, seasons_per_show=1, episodes_per_season=2,
        machine_identifier=uuid.uuid4().hex,  # examples share the world: two with one seed are two servers
    )  # fmt: skip
    library.empty_trash_after_scan = False
    plex = world.plex(library, name=f"Plex {seed}")  # a server of its own for each example

    def stored() -> dict[str, dict[str, Any]]:
        return database(world.engine, plex.server_id)

    sync(plex)
    deleted: set[str] = set()
    for action, pick in actions:
        keys = {
            kind: sorted(k for k, i in library.items.items() if i.type == kind and i.deleted_at is None)
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
        elif action == "trash" and keys["movie"]:
            library.delete_files(keys["movie"][pick % len(keys["movie"])])
            library.scan(1)  # listed, not accessible: an incremental sync may not see it yet
        elif action == "incremental":
            sync(plex, mode="incremental")
            expected = truth(library)
            found = stored()
            changed = {k: v for k, v in found.items() if k in expected and v != expected[k]}
            assert all(not expected[k]["accessible"] for k in changed), changed  # only trash waits
            assert set(expected) <= set(found)  # every addition caught
            assert set(found) - set(expected) <= deleted  # only deletions wait for a full sync
        elif action == "full":
            sync(plex)
            assert stored() == truth(library)
            deleted.clear()
    sync(plex)
    assert stored() == truth(library)
    assert sync(plex)["unchanged"] == len(truth(library))


def _movie_delete(movie: Item) -> PlexScope:
    """What the gateway makes of Radarr's MovieDelete for this Plex movie (matched by its tmdb id)."""
    ids = _ids(movie)
    payload = radarr.movie_delete_payload(
        {"id": 5, "title": movie.title, "tmdbId": ids["tmdb_id"], "imdbId": ids["imdb_id"]}
    )
    (request,) = sources.parse(Source.RADARR, payload).requests
    assert isinstance(request.scope, PlexScope) and request.wait_for_plex_scan
    return request.scope


def on(plex: Plex) -> Callable[[PlexScope], PlexLibrarySync]:
    return lambda scope: PlexLibrarySync(servers={plex.server_id: scope})


def test_a_radarr_delete_removes_the_row_once_plex_scanned_and_shows_it_in_the_artifact(
    plex: Plex, world: World
) -> None:
    sync(plex)
    movie = next(i for i in plex.library.items.values() if i.type == "movie" and i.guids)
    request = on(plex)(_movie_delete(movie))
    plex.library.delete_files(movie.rating_key)
    not_yet = run(request, "webhook")["servers"][str(plex.server_id)]  # Plex has not scanned: the row stays
    assert not_yet["mode"] == "removal" and not_yet["removal_checks"]["still_in_plex"] == [
        str(movie.rating_key)
    ]
    assert str(movie.rating_key) in database(world.engine, plex.server_id)
    plex.library.scan(movie.section_id)
    result = run(request, "webhook")["servers"][str(plex.server_id)]
    assert result["removal_checks"]["removed"] == [str(movie.rating_key)]
    assert database(world.engine, plex.server_id) == truth(plex.library)
    assert [a["key"] for a in world.artifacts] == ["plex-library-sync"] * 3  # one report per run
    report = world.artifacts[-1]
    (removal,) = [row for row in report["table"] if row["section"] == REMOVAL_CHECKS]
    assert removal["server"] == "Plex" and removal["rating_key"] == str(movie.rating_key)
    assert "Removal checks: 1 rows removed or marked unavailable" in report["description"]
    assert events(world.engine)[-1].items_removed == 1


def test_removal_checks_run_after_the_syncs_of_the_same_run(plex: Plex, world: World) -> None:
    """A merged run that also lists the section fully must not keep or write back the deleted movie."""
    sync(plex)
    movie = next(i for i in plex.library.items.values() if i.type == "movie" and i.guids)
    plex.library.delete_files(movie.rating_key)
    plex.library.scan(movie.section_id)
    merged = on(plex)(_movie_delete(movie)).merge(
        on(plex)(PlexScope(section_types=["movie"], rating_keys=[str(movie.rating_key)]))
    )
    result = run(merged)["servers"][str(plex.server_id)]
    assert result["mode"] == "incremental"
    assert str(movie.rating_key) not in database(world.engine, plex.server_id)


def test_a_removal_check_plex_does_not_answer_keeps_the_row_and_fails_the_part(
    plex: Plex, world: World
) -> None:
    sync(plex)
    movie = next(i for i in plex.library.items.values() if i.type == "movie" and i.guids)
    plex.library.delete(movie.rating_key)
    plex.state.inject(Fault(None), Fault(503))  # `/` answers, the metadata request does not
    with pytest.raises(SyncFailedError, match="no answer for 1 rows"):
        run(on(plex)(_movie_delete(movie)))
    assert str(movie.rating_key) in database(world.engine, plex.server_id)
