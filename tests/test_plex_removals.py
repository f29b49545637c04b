"""Targeted deletion checks against the Plex simulator over real HTTP, into real databases (SQLite and
PostgreSQL): exactly the rows Plex no longer has go, and nothing goes on an error, an empty answer or an
upgrade."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select, update

import flows._plex_removals as plex_removals
from flows._plex_items import SectionInfo, ShowInfo, show_key, to_row
from flows._plex_removals import (
    Candidates,
    Decision,
    check_removals,
    decide,
    plex_verdict,
)
from flows.clients.plex import PlexClient
from simulators.plex import Fault, SimulatorState, create_plex_app
from simulators.plex_library import EPISODE, MOVIE, SEASON, SHOW, Item, PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.requests import RemovalCheck
from smartplex_sync.store.accounts import PlexServer, plex_servers
from smartplex_sync.store.history import upsert_plays
from smartplex_sync.store.media import StoredItem, upsert_media_items
from smartplex_sync.store.tables import media_items, watch_history
from tests.conftest import both_backends
from tests.support.factories import add_server, add_user

TOKEN = "removal-token"


@pytest.fixture(autouse=True)
def _tasks_as_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks' fetch and store tasks as plain functions: no Prefect, and no retries (an error is the
    answer these tests read); the retries themselves are Prefect's, and `flows._retry`'s."""
    for name in ("fetch_batch", "store_decision"):
        monkeypatch.setattr(plex_removals, name, getattr(plex_removals, name).fn)


def one_item(client: PlexClient, rating_key: str) -> dict[str, Any] | None:
    """The item as /library/metadata answers it, or None when Plex does not have it."""
    return client.metadata([rating_key]).get(rating_key)


@dataclass
class World:
    library: PlexLibrary
    state: SimulatorState
    client: PlexClient
    engine: Engine
    server: PlexServer  # the simulator's servers row
    other: PlexServer  # another server of the same owner, holding a copy of every row

    def stored(self, server: PlexServer | None = None) -> set[str]:
        with self.engine.connect() as conn:
            where = media_items.c.server_id == (server or self.server).id
            return set(conn.scalars(select(media_items.c.plex_id).where(where)))

    def unavailable(self, server: PlexServer | None = None) -> set[str]:
        with self.engine.connect() as conn:
            where = (
                media_items.c.server_id == (server or self.server).id,
                media_items.c.accessible.is_(False),
            )
            return set(conn.scalars(select(media_items.c.plex_id).where(*where)))

    def check(self, *checks: RemovalCheck) -> Any:
        return check_removals(self.client, self.engine, self.server, checks)

    def first(self, type_: str) -> Item:
        return next(i for i in self.library.items.values() if i.type == type_)


def _ids(item: Item) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    for guid in item.guids:
        kind, _, value = guid.partition("://")
        ids[f"{kind}_id"] = value if kind == "imdb" else int(value)
    return ids


def library_rows(library: PlexLibrary, server_id: uuid.UUID) -> list[dict[str, Any]]:
    """The library as the library sync writes it: seasons and episodes with their show's ids."""
    items = [library.to_json(i, include_guids=True, include_section=True) for i in library.items.values()]
    shows = {item["ratingKey"]: ShowInfo.of(item) for item in items if item["type"] == SHOW}
    return [
        to_row(item, server_id, SectionInfo.of_item(item), shows.get(show_key(item) or "")) for item in items
    ]


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    """A library synced into the database (its rows, plus a copy of every row under another server of the
    same owner, and Radarr/Sonarr ids on the movies and shows), served by the simulator."""
    library = PlexLibrary.generate(seed=21, movies=6, shows=2, seasons_per_show=2, episodes_per_season=2)
    for item in library.items.values():  # every item with Guid[] ids, so each can be found by them
        if not item.guids and item.type in (MOVIE, SHOW):
            item.guids = [f"imdb://tt{item.rating_key:07d}", f"tmdb://{item.rating_key + 500_000}"]
    app = create_plex_app(library, token=TOKEN)
    with engine.begin() as conn:
        owner = add_user(conn)
        server_id = add_server(conn, owner, name="Plex", machine_id=library.machine_identifier)
        other_id = add_server(conn, owner, name="Other", machine_id="another-plex-server")
        server, other = (next(s for s in plex_servers(conn) if s.id == i) for i in (server_id, other_id))
    with serve_in_thread(app) as url, PlexClient(url, TOKEN, timeout=2.0) as client:
        with engine.begin() as conn:
            upsert_media_items(conn, library_rows(library, server.id) + library_rows(library, other.id))
            for item in library.items.values():
                column = {MOVIE: "radarr_movie_id", SHOW: "sonarr_series_id"}.get(item.type)
                if column:
                    key = media_items.c.plex_id == str(item.rating_key)
                    conn.execute(update(media_items).where(key).values({column: item.rating_key % 1000}))
        yield World(library, app.state.plex, client, engine, server, other)


def movie_check(movie: Item, **extra: Any) -> RemovalCheck:
    return RemovalCheck(service="radarr", kind="movie", arr_id=movie.rating_key % 1000, **extra)


def episode_check(world: World, episode: Item, **extra: Any) -> RemovalCheck:
    show = world.library.items[episode.grandparent_key or 0]
    season = world.library.items[episode.parent_key or 0]
    return RemovalCheck(
        service="sonarr",
        kind="episode_file",
        **_ids(show),
        episodes=((season.index, episode.index),),
        **extra,
    )


@both_backends
def test_a_movie_radarr_deleted_goes_once_plex_has_scanned_and_only_that_row(world: World) -> None:
    movie = world.first(MOVIE)
    before = world.stored()
    world.library.delete_files(movie.rating_key)
    not_yet = world.check(movie_check(movie))
    assert not_yet.removed == [] and not_yet.still_in_plex == [str(movie.rating_key)]  # Plex has not scanned

    world.library.scan(movie.section_id)
    report = world.check(movie_check(movie))
    assert [(r["rating_key"], r["type"], r["action"], r["reason"]) for r in report.removed] == [
        (str(movie.rating_key), "movie", "removed", "Plex: gone")
    ]
    assert report.summary()["removed"] == [str(movie.rating_key)]
    assert world.stored() == before - {str(movie.rating_key)}
    assert str(movie.rating_key) in world.stored(world.other)  # another server's row stays
    assert report.requests == 1 and report.errors == report.unanswered == []


@both_backends
def test_an_item_plex_keeps_in_its_trash_is_marked_unavailable_then_removed_once_the_trash_is_emptied(
    world: World,
) -> None:
    world.library.empty_trash_after_scan = False
    movie = world.first(MOVIE)
    key = str(movie.rating_key)
    before = world.stored()
    world.library.delete_files(movie.rating_key)
    world.library.scan(movie.section_id)
    assert one_item(world.client, key) is not None  # still listed, marked deleted
    report = world.check(movie_check(movie))
    assert [(r["rating_key"], r["action"], r["reason"]) for r in report.removed] == [
        (key, "unavailable", "Plex: in its trash")
    ]
    assert (report.summary()["removed"], report.summary()["unavailable"]) == ([], [key])
    # the row stays, not accessible (SmartPlex's inaccessible_files); the other server's copy is untouched
    assert world.stored() == before and world.unavailable() == {key}
    assert world.unavailable(world.other) == set()
    assert world.check(movie_check(movie)).summary()["unavailable"] == [key]  # asked again: the same

    world.library.empty_trash(movie.section_id)
    report = world.check(movie_check(movie))
    assert [(r["rating_key"], r["action"], r["reason"]) for r in report.removed] == [
        (key, "removed", "Plex: gone")
    ]
    assert world.stored() == before - {key} and world.unavailable() == set()


@both_backends
@pytest.mark.parametrize("status", [503, 500, 401])
def test_an_error_from_plex_removes_nothing(world: World, status: int) -> None:
    movie = world.first(MOVIE)
    world.library.delete(movie.rating_key)
    before = world.stored()
    world.state.inject(Fault(status))
    report = world.check(movie_check(movie))
    assert report.removed == [] and world.stored() == before
    assert report.unanswered == [str(movie.rating_key)] and str(status) in report.errors[0]
    assert world.check(movie_check(movie)).removed != []  # Plex answers again: now it goes


@both_backends
def test_an_empty_answer_removes_nothing(engine: Engine) -> None:
    """A server answering 200 with no items (not PMS's way, but seen behind broken proxies) decides nothing."""
    empty = FastAPI()

    @empty.get("/library/metadata/{keys}")
    def nothing(keys: str) -> dict[str, Any]:
        return {"MediaContainer": {"size": 0}}

    with engine.begin() as conn:
        server_id = add_server(conn, add_user(conn), machine_id="m")
        [server] = plex_servers(conn, [server_id])
        movies = SectionInfo(1, "Movies", "movie")
        upsert_media_items(
            conn, [to_row({"ratingKey": "5", "type": "movie", "title": "M"}, server.id, movies)]
        )
        conn.execute(update(media_items).values(radarr_movie_id=5))
    with serve_in_thread(empty) as url, PlexClient(url, TOKEN) as client:
        report = check_removals(
            client, engine, server, [RemovalCheck(service="radarr", kind="movie", arr_id=5)]
        )
    assert report.removed == [] and report.unanswered == ["5"] and "without items" in report.errors[0]
    with engine.connect() as conn:
        assert conn.execute(select(media_items.c.plex_id, media_items.c.accessible)).all() == [("5", True)]


@both_backends
def test_an_episode_file_removes_the_episode_then_what_plex_dropped_with_it(world: World) -> None:
    show = world.first(SHOW)
    season_one, season_two = world.library.children(show.rating_key)
    first, second = world.library.children(season_one.rating_key)
    world.library.delete_files(first.rating_key)
    world.library.scan(show.section_id, first.media[0].parts[0].file)
    report = world.check(episode_check(world, first))
    assert [r["rating_key"] for r in report.removed] == [str(first.rating_key)]
    assert {str(season_one.rating_key), str(second.rating_key), str(show.rating_key)} <= world.stored()

    check = episode_check(world, second)  # built before the scan: Plex then drops the empty season
    world.library.delete_files(second.rating_key)
    world.library.scan(show.section_id)
    report = world.check(check)
    assert {r["rating_key"]: r["type"] for r in report.removed} == {
        str(second.rating_key): EPISODE,
        str(season_one.rating_key): SEASON,
    }
    last = world.library.children(season_two.rating_key)
    checks = [episode_check(world, e) for e in last]
    for episode in last:
        world.library.delete_files(episode.rating_key)
    world.library.scan(show.section_id)
    assert one_item(world.client, str(show.rating_key)) is None  # Plex dropped the empty show
    report = world.check(*checks)
    assert world.stored() & {str(i.rating_key) for i in (season_two, *last, show)} == set()
    reasons = {r["rating_key"]: r["reason"] for r in report.removed}
    assert reasons[str(show.rating_key)] == "Plex no longer has this show, nothing left below it"
    assert str(show.rating_key) in world.stored(world.other)


@both_backends
def test_a_series_check_marks_the_episodes_plex_keeps_in_its_trash_unavailable(world: World) -> None:
    """With "empty trash after every scan" off, Plex keeps listing the show and its seasons, and marks the
    episodes: every row stays, the episodes' not accessible, as a full sync would leave them."""
    world.library.empty_trash_after_scan = False
    show = world.first(SHOW)
    episodes = {str(i.rating_key) for i in world.library.descendants(show.rating_key) if i.type == EPISODE}
    before = world.stored()
    world.library.delete_files(show.rating_key)
    world.library.scan(show.section_id)
    report = world.check(RemovalCheck(service="sonarr", kind="series", **_ids(show)))
    assert {r["rating_key"]: (r["type"], r["action"]) for r in report.removed} == dict.fromkeys(
        episodes, (EPISODE, "unavailable")
    )
    assert world.stored() == before and world.unavailable() == episodes
    assert set(report.still_in_plex) == {str(show.rating_key)} | {
        str(i.rating_key) for i in world.library.children(show.rating_key)
    }


@both_backends
def test_a_series_sonarr_deleted_takes_its_seasons_and_episodes_and_nothing_else(world: World) -> None:
    show, other_show = [i for i in world.library.items.values() if i.type == SHOW]
    below = {str(i.rating_key) for i in world.library.descendants(show.rating_key)}
    before = world.stored()
    world.library.delete_files(show.rating_key)
    world.library.scan(show.section_id)
    check = RemovalCheck(service="sonarr", kind="series", arr_id=show.rating_key % 1000, **_ids(show))
    report = world.check(check)
    assert {r["rating_key"] for r in report.removed} == below | {str(show.rating_key)}
    assert world.stored() == before - below - {str(show.rating_key)}
    assert str(other_show.rating_key) in world.stored()
    assert world.stored(world.other) == before  # the copy under another server id is untouched


@both_backends
def test_many_checks_cost_few_requests_and_plays_are_kept(world: World) -> None:
    movies = [i for i in world.library.items.values() if i.type == MOVIE]
    with world.engine.begin() as conn:
        upsert_plays(
            conn,
            world.server.id,
            [{"tautulli_row_id": 1, "rating_key": str(movies[0].rating_key), "duration_seconds": 60,
              "paused_seconds": 0, "percent_complete": 95}],
        )  # fmt: skip
    for movie in movies[:3]:
        world.library.delete(movie.rating_key)
    report = world.check(*(movie_check(m) for m in movies))
    assert {r["rating_key"] for r in report.removed} == {str(m.rating_key) for m in movies[:3]}
    assert report.still_in_plex == [str(m.rating_key) for m in movies[3:]]
    assert report.requests == 2  # one batch, then the three it left out: a 404
    with world.engine.connect() as conn:
        assert conn.scalar(select(watch_history.c.rating_key)) == str(movies[0].rating_key)
        assert (
            conn.scalar(  # the other server's copy still counts nothing of it, and still exists
                select(media_items.c.total_play_count).where(
                    media_items.c.server_id == world.other.id,
                    media_items.c.plex_id == str(movies[0].rating_key),
                )
            )
            == 0
        )
    unknown = RemovalCheck(service="radarr", kind="movie", tmdb_id=1)
    assert world.check(unknown).skipped == ["radarr movie tmdb=1: no row on server Plex"]


def test_the_verdict_reads_plex_trash_marks() -> None:
    part = {"file": "/m/a.mkv", "size": 1}
    assert plex_verdict({"ratingKey": "1", "Media": [{"Part": [part]}]}) == "present"
    assert plex_verdict({"ratingKey": "1", "deletedAt": 1700000000}) == "trashed"
    gone_parts = [{"Part": [{**part, "exists": False, "accessible": False}]}]
    assert plex_verdict({"ratingKey": "1", "Media": gone_parts}) == "trashed"
    mixed = [*gone_parts, {"Part": [{**part, "exists": True, "accessible": True}]}]
    assert plex_verdict({"ratingKey": "1", "Media": mixed}) == "present"  # another version still plays
    assert plex_verdict({"ratingKey": "2", "type": "show"}) == "present"


def test_decide_keeps_a_season_or_show_with_rows_left_below_it() -> None:
    def item(key: str, type_: str, parent: str | None = None, grandparent: str | None = None) -> StoredItem:
        return StoredItem(key, type_, key, 2, parent, grandparent, None, None)

    def removed(planned: list[Candidates], verdicts: dict[str, Any]) -> set[str]:
        decision = decide(planned, verdicts)
        assert decision.unavailable == {}
        return set(decision.remove)

    show, season = item("1", "show"), item("10", "season", "1")
    e1, e2 = item("11", "episode", "10", "1"), item("12", "episode", "10", "1")
    below = [season, e1, e2]
    candidates = Candidates([e1], parents=[season, show], below=below)
    gone: dict[str, Any] = {"11": "gone", "12": "gone", "10": "gone", "1": "gone"}
    assert decide([candidates], gone) == Decision({"11": "Plex: gone"}, {})  # e2 is still stored
    both = [candidates, Candidates([e2], [season, show], below)]
    assert removed(both, gone) == {"11", "12", "10", "1"}  # two checks empty the season, then the show
    assert removed(both, {**gone, "1": "present"}) == {"11", "12", "10"}  # Plex still has the show
    assert removed([candidates], {"11": "unknown", "10": "gone"}) == set()
    series = [Candidates([show, *below])]
    assert decide(series, {"1": "gone"}).remove == {
        "1": "Plex: gone",
        "10": "below an item Plex no longer has",
        "11": "below an item Plex no longer has",
        "12": "below an item Plex no longer has",
    }
    assert decide(series, {"1": "present", "10": "present", "11": "trashed", "12": "present"}) == Decision(
        {}, {"11": "Plex: in its trash"}
    )
    # gone wins over trashed: a row below a show Plex dropped goes, even if Plex had it in its trash
    assert decide(series, {"1": "gone", "11": "trashed"}).unavailable == {}
    assert decide(series, {"1": "present"}) == Decision({}, {})
