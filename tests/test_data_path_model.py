"""A model-based test of the whole data path: random sequences of library changes (additions, upgrades,
new seasons, deletes through Sonarr/Radarr and in Plex only), plays, webhooks delivered, delivered twice
or lost, Plex failures, and incremental, full and item syncs, against the simulators over real HTTP and a
real database: a migrated SQLite, and a PostgreSQL built from SmartPlex's own SQL files and then migrated.
Two SmartPlex users own a Plex server each (`tests/support/model_world.py`): two simulated Plex servers
with different libraries whose rating keys overlap (the same key is another item on the other server),
and a Tautulli each. The simulated libraries and histories are the ground truth.

The pipeline runs in-process: deliveries go through the real gateway app (parser, attribution by the
user's webhook secret and the payload's server, `webhooks.record`, the queue), queued requests are merged
as the dispatcher merges them (`batching.new_batch` over `queue.pending_requests`, then `queue.claim`),
and the flow bodies run with `.fn(request, trigger)`. No Prefect: the flows' tasks run as their plain
functions (so no retries: one injected fault fails that server's part of a run) and artifacts are
recorded in memory, where the test reads them. Prefect's part (runs, retries, artifacts) is covered by
test_plex_sync.py, test_dispatch.py and test_end_to_end.py.

Invariants, per server:
- after a full sync, `media_items` equals what Plex lists (its trash included, not `accessible`), per
  server and section; the deletion guard refuses exactly the sections it should, and keeps their rows;
- after any incremental sync, every item Plex has is right (an item Plex moved to its trash may stay
  `accessible` until a full sync or a targeted check); rows of items Plex dropped may wait for a full
  sync or a targeted check;
- after a delivered webhook and its run, the items it touched are right, with no full sync: those a
  download or library.new named are stored as Plex has them, of those a delete named the ones Plex
  dropped are gone and the ones in its trash are not `accessible`; the plays a Tautulli webhook named
  are stored;
- play totals (movies and episodes: their plays; seasons and shows: their episodes') equal those
  recomputed from all stored plays of the server, and never go down;
- no run, failed or not, removes the row of an item Plex still has (an error or an empty answer
  removes nothing; an upgrade removes nothing);
- a delivery is queued for its own server only (a delivery of one server carrying the other user's
  secret is refused, queueing nothing); a run changes no row of a server it is not about (media items,
  plays, arr ids, watermarks, the servers row), and a run about some sections of a server changes no
  row of its other sections; one server's failing Plex fails that server's part only.

Examples: SMARTPLEX_MODEL_EXAMPLES (default 12 per backend), steps: SMARTPLEX_MODEL_STEPS (default 30);
`make model-test` runs the long run.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Table, delete, select

from flows.library_sync import REMOVAL_CHECKS
from simulators import plex as plex_sim
from simulators import radarr, sonarr, tautulli
from simulators.demo import history_item
from simulators.plex import Fault
from simulators.plex_library import EPISODE, MOVIE, SEASON, SHOW, Item, PlexLibrary
from smartplex_sync.errors import SyncFailedError
from smartplex_sync.models import Deployment
from smartplex_sync.requests import (
    PlexLibrarySync,
    PlexScope,
    SyncParameters,
    TautulliScope,
    TautulliSync,
    Trigger,
)
from smartplex_sync.store import queue
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.media import PARENT_KEY, SECTION_ID
from smartplex_sync.store.tables import (
    arr_items,
    batch_requests,
    dispatch_batches,
    media_items,
    servers,
    sync_events,
    sync_history,
    sync_state,
    user_stats,
    watch_history,
    webhook_log,
    webhook_requests,
)
from tests.support.model_world import BACKENDS, Owner, Services, model_database, model_world
from tests.support.pipeline import FLOWS
from webhook_gateway.batching import new_batch

GUARD = 0.9
EXAMPLES = int(os.environ.get("SMARTPLEX_MODEL_EXAMPLES", "12"))
STEPS = int(os.environ.get("SMARTPLEX_MODEL_STEPS", "30"))
DEPLOYMENTS = (
    Deployment.PLEX_LIBRARY_SYNC,
    Deployment.TAUTULLI_SYNC,
    Deployment.SONARR_SYNC,
    Deployment.RADARR_SYNC,
)
DELIVERY = st.sampled_from([None, 0, 1, 1, 1, 2])
"""How a webhook goes: left waiting for `deliver` (None), lost (0), delivered once or twice."""
ON = st.sampled_from([0, 1])
"""Which server (and its owner) a step is about."""
WHICH = st.sampled_from([0, 1, None])
"""Which server a sync run is about, or every server (None)."""
PLEX_FAULTS = st.sampled_from([0, 0, 0, 1, 6])
SHAPES = ({"movies": 4, "shows": 2}, {"movies": 3, "shows": 2})
"""The two libraries: other items under the same rating keys (1004 is a movie on one, a show on the other)."""
ACCESSIBLE = 6  # the position of `accessible` in a row as the model compares it
_FAILED_SERVER = re.compile(r"\(([0-9a-f-]{36})\)$")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return model_database(request.param, tmp_path, request)


@pytest.fixture
def services(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    with model_world(database_url, monkeypatch, guard=GUARD) as world:
        yield world


@dataclass
class Event:
    """A webhook a simulator sent for one server, waiting to be delivered (or lost), and the rating keys
    it touches (`play`: the Tautulli row id of the play it reports)."""

    on: int
    source: str
    payload: dict[str, Any]
    touches: frozenset[str]
    play: int | None = None


@dataclass
class Side:
    """One server in one example: its owner, library and history, and what the model remembers of it."""

    owner: Owner
    library: PlexLibrary
    history: tautulli.TautulliHistory
    ever: dict[int, Item] = field(default_factory=dict)
    touched_sync: set[str] = field(default_factory=set)  # items delivered additions, upgrades, seasons named
    touched_delete: set[str] = field(default_factory=set)  # items delivered deletes named
    plays: set[int] = field(default_factory=set)  # Tautulli row ids of delivered plays
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def server(self) -> uuid.UUID:
        return self.owner.server_id

    @property
    def library_ever(self) -> dict[int, Item]:
        """Every item the library ever had (the truth forgets removed ones; the model remembers them)."""
        self.ever.update(self.library.items)
        return self.ever


def _plex_row(item: Item) -> tuple[Any, ...]:
    size = sum(p.size for m in item.media for p in m.parts) or None
    parent = str(item.parent_key) if item.parent_key else None
    return (item.type, item.title, item.section_id, size, item.updated_at, parent, item.deleted_at is None)


def _stored_row(row: Any) -> tuple[Any, ...]:
    metadata = row.metadata or {}
    updated = metadata.get("plex_updated_at")
    stamp = int(datetime.fromisoformat(updated).timestamp()) if updated else None
    return (str(row.type), row.title, metadata.get(SECTION_ID), row.file_size_bytes, stamp,
            metadata.get(PARENT_KEY), row.accessible)  # fmt: skip


def _arr_movie(item: Item) -> dict[str, Any]:
    """Radarr's movie for this Plex movie: same ids (the truth's guids; imdb for the legacy agent too)."""
    tmdb = next((int(g[7:]) for g in item.guids if g.startswith("tmdb://")), 0)
    return {"id": item.rating_key, "title": item.title, "year": item.year, "tmdbId": tmdb,
            "imdbId": f"tt{item.rating_key:07d}", "path": f"/movies/{item.title}", "sizeOnDisk": 1}  # fmt: skip


def _arr_series(show: Item) -> dict[str, Any]:
    return {"id": show.rating_key, "title": show.title, "path": f"/tv/{show.title}",
            "tvdbId": show.rating_key + 70_000, "tmdbId": 0, "year": show.year}  # fmt: skip


def failed_servers(error: Exception | None) -> dict[uuid.UUID, str]:
    """The servers whose part of a run failed, with why; any other exception is a bug of the run itself."""
    if error is None:
        return {}
    if not isinstance(error, SyncFailedError):
        raise error
    failed = {}
    for name, why in error.failures.items():
        found = _FAILED_SERVER.search(name)
        assert found, name
        failed[uuid.UUID(found.group(1))] = why
    return failed


# The rows of a server a run is not about, table by table, by their key (compared whole).
_SERVER_ROWS: tuple[tuple[Table, tuple[str, ...]], ...] = (
    (media_items, ("server_id", "plex_id")),
    (watch_history, ("server_id", "tautulli_row_id")),
    (arr_items, ("server_id", "service", "arr_id")),
    (servers, ("id",)),
)


class DataPath(RuleBasedStateMachine):
    """One example: new libraries and histories, an emptied database, then random steps (see the module
    docstring)."""

    services: Services

    def __init__(self) -> None:
        super().__init__()
        s = self.services
        s.stats["examples"] += 1
        self.engine = s.engine
        with self.engine.begin() as conn:
            for table in (batch_requests, webhook_requests, dispatch_batches, webhook_log, user_stats,
                          watch_history, arr_items, sync_state, sync_events, sync_history,
                          media_items):  # fmt: skip
                conn.execute(delete(table))
        self.events: list[Event] = []
        self.sides = [
            Side(owner, PlexLibrary(machine_identifier=owner.machine), tautulli.TautulliHistory())
            for owner in s.owners
        ]
        for side in self.sides:
            side.owner.plex.library = side.library
            side.owner.tautulli.history = side.history
            side.owner.plex.faults.clear()

    # -- setup ----------------------------------------------------------------------------------------

    @precondition(lambda self: not self.ready())
    @rule(seed=st.integers(0, 10_000), empty_trash=st.tuples(st.booleans(), st.booleans()))
    def build(self, seed: int, empty_trash: tuple[bool, bool]) -> None:
        for side, shape, empties in zip(self.sides, SHAPES, empty_trash, strict=True):
            side.library = PlexLibrary.generate(
                seed=seed + side.owner.index, seasons_per_show=1, episodes_per_season=2,
                machine_identifier=side.owner.machine, empty_trash_after_scan=empties,
                friendly_name=side.owner.name, **shape,
            )  # fmt: skip
            side.owner.plex.library = side.library
        self.full_sync(None)

    def ready(self) -> bool:
        return all(side.library.sections for side in self.sides)

    # -- reading --------------------------------------------------------------------------------------

    def stored(self, side: Side) -> dict[str, tuple[Any, ...]]:
        c = media_items.c
        with self.engine.connect() as conn:
            found = conn.execute(
                select(c.plex_id, c.type, c.title, c.metadata, c.file_size_bytes, c.accessible).where(
                    c.server_id == side.server
                )
            )
            return {row.plex_id: _stored_row(row) for row in found}

    def truth(self, side: Side) -> dict[str, tuple[Any, ...]]:
        """What Plex lists: every item of its mounted sections, those in its trash too."""
        return {str(i.rating_key): _plex_row(i) for i in side.library.visible_items()}

    def available(self, side: Side) -> set[str]:
        """What Plex lists and does not keep in its trash."""
        return {str(i.rating_key) for i in side.library.available_items()}

    def of_type(self, side: Side, *types: str) -> list[Item]:
        return sorted(
            (i for i in side.library.available_items() if i.type in types), key=lambda i: i.rating_key
        )

    def pick(self, items: list[Item], index: int) -> Item | None:
        return items[index % len(items)] if items else None

    def untouched(self, run_servers: set[uuid.UUID], sections: dict[uuid.UUID, set[int]]) -> dict[Any, Any]:
        """The rows a run must leave as they are: every row of the servers it is not about, and the
        media_items of the sections it is not about (`sections`: server → the sections it is about)."""
        others = [side.server for side in self.sides if side.server not in run_servers]
        found: dict[Any, Any] = {}
        with self.engine.connect() as conn:
            for table, key in _SERVER_ROWS:
                column = table.c["server_id" if "server_id" in table.c else "id"]
                for row in conn.execute(select(table).where(column.in_(others))).mappings():
                    found[(table.name, *(str(row[k]) for k in key))] = dict(row)
            for row in conn.execute(select(sync_state)).mappings():
                if any(row["scope"].startswith(str(server)) for server in others):
                    found[("sync_state", row["scope"])] = dict(row)
            for server, about in sections.items():
                rows = conn.execute(select(media_items).where(media_items.c.server_id == server)).mappings()
                for row in rows:
                    if (row["metadata"] or {}).get(SECTION_ID) not in about:
                        found[("section", str(server), row["plex_id"])] = dict(row)
        return found

    def sections_about(self, parameters: SyncParameters[Any]) -> dict[uuid.UUID, set[int]]:
        """Of a library sync: the servers whose scope names only sections, and those sections."""
        if not isinstance(parameters, PlexLibrarySync) or parameters.servers is None:
            return {}
        about = {}
        for side in self.sides:
            scope = parameters.servers.get(side.server)
            if scope is None or scope.all_sections or scope.rating_keys or scope.removal_checks:
                continue
            about[side.server] = set(scope.section_ids) | {
                s.key for s in side.library.sections.values() if s.type in scope.section_types
            }
        return about

    def sides_of(self, which: int | None) -> list[Side]:
        return self.sides if which is None else [self.sides[which]]

    # -- the world changes ----------------------------------------------------------------------------

    @precondition(ready)
    @rule(on=ON, via_radarr=st.booleans(), times=DELIVERY)
    def add_movie(self, on: int, via_radarr: bool, times: int | None) -> None:
        library = self.sides[on].library
        section = next(s for s in library.sections.values() if s.type == MOVIE)
        item = library.add_movie(section.key)
        touched = frozenset({str(item.rating_key)})
        if via_radarr:
            self.emit(times, Event(on, "radarr", radarr.download_payload(_arr_movie(item)), touched))
        else:
            self.emit(times, Event(on, "plex", plex_sim.library_new_payload(library, item), touched))

    @precondition(ready)
    @rule(on=ON, index=st.integers(0, 50), via_sonarr=st.booleans(), times=DELIVERY)
    def add_season(self, on: int, index: int, via_sonarr: bool, times: int | None) -> None:
        side = self.sides[on]
        show = self.pick(self.of_type(side, SHOW), index)
        if show is None:
            return
        season = side.library.add_season(show.rating_key, episodes=2)
        episodes = side.library.children(season.rating_key)
        touched = frozenset(str(i.rating_key) for i in (season, *episodes))
        if via_sonarr:
            payload = sonarr.download_payload(_arr_series(show), season.index or 1, 1)
        else:
            payload = plex_sim.library_new_payload(side.library, episodes[0])
        self.emit(times, Event(on, "sonarr" if via_sonarr else "plex", payload, touched))

    @precondition(ready)
    @rule(on=ON, index=st.integers(0, 50), times=DELIVERY)
    def upgrade(self, on: int, index: int, times: int | None) -> None:
        """A better file replaces the old one: the arr deletes the old file ("for upgrade") and imports."""
        side = self.sides[on]
        item = self.pick(self.of_type(side, MOVIE, EPISODE), index)
        if item is None or not any(p.on_disk for m in item.media for p in m.parts):
            return
        side.library.upgrade(item.rating_key)
        touched = frozenset({str(item.rating_key)})
        if item.type == MOVIE:
            movie = _arr_movie(item)
            self.emit(times, Event(on, "radarr", radarr.movie_file_delete_payload(movie, reason="upgrade"),
                                   touched))  # fmt: skip
            self.emit(times, Event(on, "radarr", radarr.download_payload(movie, is_upgrade=True), touched))
        else:
            show = side.library.items[item.grandparent_key or 0]
            season = side.library.items[item.parent_key or 0]
            series, numbers = _arr_series(show), (season.index or 0, item.index or 0)
            deleted = sonarr.episode_file_delete_payload(series, *numbers, reason="upgrade")
            self.emit(times, Event(on, "sonarr", deleted, touched))
            imported = sonarr.download_payload(series, *numbers, is_upgrade=True)
            self.emit(times, Event(on, "sonarr", imported, touched))

    @precondition(ready)
    @rule(
        on=ON,
        kind=st.sampled_from([MOVIE, SHOW, EPISODE]),
        index=st.integers(0, 50),
        plex_scans=st.booleans(),
        times=DELIVERY,
        dispatched=st.booleans(),
    )
    def delete_through_arr(
        self, on: int, kind: str, index: int, plex_scans: bool, times: int | None, dispatched: bool
    ) -> None:
        """Sonarr/Radarr deletes the files, then (or not yet) Plex scans the folder; the dispatcher may
        run the library sync straight away (the scan grace has passed) or later."""
        side = self.sides[on]
        item = self.pick(self.of_type(side, kind), index)
        if item is None:
            return
        library = side.library
        touched = {str(item.rating_key), *(str(i.rating_key) for i in library.descendants(item.rating_key))}
        library.delete_files(item.rating_key)
        if kind == MOVIE:
            payload = radarr.movie_delete_payload(_arr_movie(item))
        elif kind == SHOW:
            payload = sonarr.series_delete_payload(_arr_series(item))
        else:
            show = library.items[item.grandparent_key or 0]
            season = library.items[item.parent_key or 0]
            touched |= {str(show.rating_key), str(season.rating_key)}
            payload = sonarr.episode_file_delete_payload(
                _arr_series(show), season.index or 0, item.index or 0
            )
        source = "radarr" if kind == MOVIE else "sonarr"
        self.emit(times, Event(on, source, payload, frozenset(touched)))
        if plex_scans:
            library.scan(item.section_id)
        if dispatched:
            self.dispatch(Deployment.PLEX_LIBRARY_SYNC, 0, 0)

    @precondition(ready)
    @rule(on=ON, index=st.integers(0, 50), times=DELIVERY)
    def reimport(self, on: int, index: int, times: int | None) -> None:
        """Files deleted through Radarr come back (a new download) before Plex scanned: Plex never notices."""
        side = self.sides[on]
        item = self.pick([i for i in self.of_type(side, MOVIE) if i.files_gone], index)
        if item is None:
            return
        for part in (p for m in item.media for p in m.parts):
            part.on_disk = True
        side.library.upgrade(item.rating_key)
        touched = frozenset({str(item.rating_key)})
        self.emit(times, Event(on, "radarr", radarr.download_payload(_arr_movie(item)), touched))

    @precondition(ready)
    @rule(on=ON, section=st.sampled_from([1, 2]))
    def plex_scans(self, on: int, section: int) -> None:
        self.sides[on].library.scan(section)

    @precondition(ready)
    @rule(on=ON, kind=st.sampled_from([MOVIE, SHOW, EPISODE]), index=st.integers(0, 50))
    def delete_in_plex_only(self, on: int, kind: str, index: int) -> None:
        side = self.sides[on]
        item = self.pick(self.of_type(side, kind), index)
        if item is not None:
            side.library.delete(item.rating_key)

    @precondition(ready)
    @rule(on=ON, index=st.integers(0, 50), percent=st.sampled_from([3, 45, 80, 95, 100]), times=DELIVERY)
    def play(self, on: int, index: int, percent: int, times: int | None) -> None:
        side = self.sides[on]
        item = self.pick(self.of_type(side, MOVIE, EPISODE), index)
        if item is None:
            return
        started = int(time.time()) - 4 * 3600
        played = side.history.add_play(
            history_item(side.library, item), started=started, percent_complete=percent
        )
        parameters = tautulli.notification_parameters(
            played, action="stop", server_machine_id=side.owner.machine
        )
        payload = tautulli.render_template(tautulli.DOCUMENTED_TEMPLATE, parameters)
        self.emit(times, Event(on, "tautulli", payload, frozenset(), play=played.row_id))

    # -- webhooks -------------------------------------------------------------------------------------

    def emit(self, times: int | None, event: Event) -> None:
        """A webhook the simulators sent: delivered at once (`times`: 0 lost, 1, or 2), or left waiting."""
        self.events.append(event)
        if times is not None:
            self.deliver(len(self.events) - 1, times)

    def post(self, event: Event, secret: str) -> Any:
        if event.source == "plex":  # Plex can only carry a token in the URL
            return self.services.gateway.post(
                "/api/webhooks/plex", params={"token": secret}, data={"payload": json.dumps(event.payload)}
            )
        return self.services.gateway.post(
            f"/api/webhooks/{event.source}", headers={"X-Webhook-Token": secret}, json=event.payload
        )

    @precondition(lambda self: self.events)
    @rule(index=st.integers(0, 50), times=st.sampled_from([0, 1, 1, 1, 2]))
    def deliver_waiting(self, index: int, times: int) -> None:
        self.deliver(index, times)

    def deliver(self, index: int, times: int) -> None:
        """Deliver a waiting webhook once, twice, or lose it (0), with its owner's webhook secret."""
        event = self.events.pop(index % len(self.events))
        side = self.sides[event.on]
        self.services.stats["delivered"] = self.services.stats.get("delivered", 0) + times
        for _ in range(times):
            answer = self.post(event, side.owner.secret)
            assert answer.status_code == 202, answer.text
            for request in answer.json()["sync_requests"]:  # its own server, never the other one
                assert list(request["parameters"]["servers"] or {}) == [str(side.server)], request
            if event.payload.get("deleteReason") == "upgrade":
                # Ignored by design: it asks for nothing, and promises nothing about the item until the
                # upgrade's Download arrives (the long run flagged a stale row where only this one came).
                continue
            deletes = event.payload.get("eventType") in ("MovieDelete", "SeriesDelete", "EpisodeFileDelete")
            (side.touched_delete if deletes else side.touched_sync).update(event.touches)
            if event.play is not None:
                side.plays.add(event.play)

    @precondition(lambda self: any(e.source in ("plex", "tautulli") for e in self.events))
    @rule(index=st.integers(0, 50))
    def deliver_with_the_other_users_secret(self, index: int) -> None:
        """A delivery naming one user's server, carrying the other user's secret: refused, nothing queued
        (it stays waiting for its real delivery)."""
        naming = [e for e in self.events if e.source in ("plex", "tautulli")]
        event = naming[index % len(naming)]
        waiting = len(queue.pending_requests(self.engine))
        answer = self.post(event, self.sides[1 - event.on].owner.secret)
        assert answer.status_code == 422 and answer.json()["error"] == "unattributed", answer.text
        assert len(queue.pending_requests(self.engine)) == waiting

    # -- runs -----------------------------------------------------------------------------------------

    def run(self, parameters: SyncParameters[Any], trigger: Trigger = "manual") -> Exception | None:
        """Run a flow body; whatever it did, check that it removed no row of an item Plex has, and left
        the rows it is not about alone."""
        deployment = parameters.deployment
        self.services.stats["runs"] += 1
        run_servers = (
            {side.server for side in self.sides} if parameters.servers is None else set(parameters.servers)
        )
        sections = self.sections_about(parameters)
        before = {side.server: self.stored(side) for side in self.sides}
        untouched = self.untouched(run_servers, sections)
        error: Exception | None = None
        began = time.monotonic()
        try:
            FLOWS[deployment](parameters, trigger)
        except Exception as exc:  # a failed run is a legal outcome; what it did to the rows is checked
            error = exc
        seconds = self.services.seconds
        seconds[deployment] = seconds.get(deployment, 0.0) + time.monotonic() - began
        for side in self.sides:
            has = {str(k) for k in side.library.items}  # in Plex: listed, in its trash, or unmounted
            removed = set(before[side.server]) - set(self.stored(side))
            assert not removed & has, f"{deployment}: removed rows of items Plex has: {removed & has}"
        assert self.untouched(run_servers, sections) == untouched, (
            f"{deployment} changed rows it is not about"
        )
        return error

    @precondition(ready)
    @rule(plex_faults=PLEX_FAULTS, faulty=ON)
    def dispatch_every_deployment(self, plex_faults: int, faulty: int) -> None:
        """A dispatcher pass once every window has closed: one run per deployment with waiting requests."""
        for deployment in DEPLOYMENTS:
            self.dispatch(deployment, plex_faults, faulty)

    @precondition(ready)
    @rule(deployment=st.sampled_from(DEPLOYMENTS), plex_faults=PLEX_FAULTS, faulty=ON)
    def dispatch(self, deployment: Deployment, plex_faults: int, faulty: int) -> None:
        """What the dispatcher does for a deployment: every waiting request, merged, one run; `plex_faults`
        503s from the Plex of server `faulty`."""
        stats = self.services.stats
        stats["dispatch"] = stats.get("dispatch", 0) + 1
        waiting = [r for r in queue.pending_requests(self.engine) if r.deployment is deployment]
        library = deployment is Deployment.PLEX_LIBRARY_SYNC
        if not waiting:
            if library:
                assert not any(s.touched_sync or s.touched_delete for s in self.sides), (
                    "a delivery was not queued"
                )
            return
        planned = new_batch(deployment, waiting)
        merged = planned.parameters
        assert merged.servers is not None, "a delivery asked for every server"
        if library and any(scope.removal_checks for scope in merged.servers.values()):
            stats["checks"] = stats.get("checks", 0) + 1
        batch = queue.Batch(uuid.uuid4().hex, deployment, "", merged.to_json(), planned.name,
                            list(planned.tags), utcnow())  # fmt: skip
        assert queue.claim(self.engine, batch, [r.id for r in planned.requests])
        queue.run_created(self.engine, batch.id, str(uuid.uuid4()))
        touched = {}
        for side in self.sides:  # this batch took every delivered request
            if library:
                touched[side.server] = (set(side.touched_sync), set(side.touched_delete))
                if side.touched_sync or side.touched_delete:
                    assert side.server in merged.servers, "a delivery did not sync its server"
                side.touched_sync, side.touched_delete = set(), set()
            elif deployment is Deployment.TAUTULLI_SYNC:
                touched[side.server] = (set(), set())
                side.plays, plays = set(), side.plays
                if plays:
                    assert side.server in merged.servers, "a play did not sync its server"
                    touched[side.server] = ({str(p) for p in plays}, set())
        self.sides[faulty].owner.plex.faults.extend(Fault(503) for _ in range(plex_faults))
        error = self.run(merged, "webhook")
        for side in self.sides:
            side.owner.plex.faults.clear()
        queue.finish(self.engine, batch, "FAILED" if error else "COMPLETED", str(error) if error else None,
                     requeue=False)  # fmt: skip
        failed = failed_servers(error)
        if plex_faults == 0 and failed:
            raise AssertionError(f"nothing made it fail: {failed}")
        assert set(failed) <= {self.sides[faulty].server}, f"a failing Plex failed another server: {failed}"
        for side in self.sides:
            if side.server not in merged.servers or side.server in failed:
                continue
            if library:
                self.check_touched(side, merged.servers[side.server], *touched[side.server])
            elif deployment is Deployment.TAUTULLI_SYNC:
                stored = {str(row_id) for row_id in self.play_ids(side)}
                assert touched[side.server][0] <= stored, "a delivered play is not stored after its run"

    def check_touched(self, side: Side, scope: PlexScope, synced: set[str], deleted: set[str]) -> None:
        """After a webhook's run, the items it touched are right with no full sync: those a download or
        library.new named and Plex has are stored as Plex has them; of those a delete named, the ones
        Plex dropped are gone and the ones in its trash are not `accessible` (the ones it still has are
        kept: checked by `run` for every run)."""
        stored, truth, available = self.stored(side), self.truth(side), self.available(side)
        for key in synced & available:
            assert stored.get(key) == truth[key], f"item {key}: {stored.get(key)} != Plex {truth[key]}"
        checked = self.checked_keys(side, scope) & deleted & set(stored)
        stale = checked - {str(k) for k in side.library.items}
        assert not stale, f"rows of items Plex dropped are still stored after their check: {stale}"
        trashed = {k for k in checked if k in truth and not truth[k][ACCESSIBLE]}
        marked = {k for k in trashed if stored[k][ACCESSIBLE]}
        assert not marked, f"rows of items in Plex's trash still accessible after their check: {marked}"

    def checked_keys(self, side: Side, scope: PlexScope) -> set[str]:
        keys: set[str] = set()
        ever = side.library_ever
        for check in scope.removal_checks:
            for item in list(ever.values()):
                if check.kind == "movie" and item.type == MOVIE and check.arr_id == item.rating_key:
                    keys.add(str(item.rating_key))
                elif check.kind == "series" and item.type == SHOW and item.rating_key == check.arr_id:
                    keys |= {str(item.rating_key), *self.ever_below(side, item.rating_key)}
                elif (
                    check.kind == "episode_file"
                    and item.type == EPISODE
                    and item.grandparent_key == check.arr_id
                ):
                    season = ever.get(item.parent_key or 0)
                    if season and (season.index, item.index) in check.episodes:
                        keys.add(str(item.rating_key))
        return keys

    def ever_below(self, side: Side, key: int) -> set[str]:
        return {str(k) for k, i in side.library_ever.items() if key in (i.parent_key, i.grandparent_key)}

    def play_ids(self, side: Side) -> set[int]:
        with self.engine.connect() as conn:
            return set(
                conn.scalars(
                    select(watch_history.c.tautulli_row_id).where(watch_history.c.server_id == side.server)
                )
            )

    def check_full(
        self,
        side: Side,
        before: dict[str, tuple[Any, ...]],
        failure: str | None,
        unmounted: int | None = None,
    ) -> None:
        """After a full sync of the server: every section equals what Plex lists, but the sections the
        deletion guard refuses (more than GUARD of their rows would go), which keep every row; an
        unmounted section keeps its rows as they were."""
        stored, truth = self.stored(side), self.truth(side)
        guarded = set()
        for section in side.library.sections.values():
            had = {k for k, v in before.items() if v[2] == section.key}
            listed = {k for k, v in truth.items() if v[2] == section.key}
            rows = {k: v for k, v in stored.items() if v[2] == section.key}
            if section.key == unmounted:
                if had:
                    guarded.add(section.key)
                assert rows == {k: v for k, v in before.items() if v[2] == section.key}, (
                    "an empty answer changed rows"
                )
            elif len(had - listed) > GUARD * len(had | listed):
                guarded.add(section.key)
                assert set(rows) >= had, "the guard deleted rows"
                assert {k: rows[k] for k in listed} == {k: truth[k] for k in listed}
            else:
                assert rows == {k: truth[k] for k in listed}, f"section {section.key} of {side.owner.name}"
        if guarded:
            assert failure is not None and "refusing to delete" in failure, failure
        else:
            assert failure is None, failure

    @precondition(ready)
    @rule(which=WHICH)
    def full_sync(self, which: int | None) -> None:
        sides = self.sides_of(which)
        before = {side.server: self.stored(side) for side in sides}
        parameters = (
            PlexLibrarySync()
            if which is None
            else PlexLibrarySync.on([sides[0].server], PlexScope(mode="full"))
        )
        failed = failed_servers(self.run(parameters))
        for side in sides:
            self.check_full(side, before[side.server], failed.get(side.server))

    @precondition(ready)
    @rule(which=WHICH)
    def incremental_sync(self, which: int | None) -> None:
        sides = self.sides_of(which)
        error = self.run(PlexLibrarySync.on([side.server for side in sides], PlexScope()))
        assert error is None, error
        for side in sides:
            stored, truth, available = self.stored(side), self.truth(side), self.available(side)
            for key, row in truth.items():
                if key in available:
                    assert stored.get(key) == row, f"item {key}: {stored.get(key)} != Plex {row}"
                else:  # in Plex's trash: a trashed item's updatedAt does not change
                    assert stored.get(key, ())[:ACCESSIBLE] == row[:ACCESSIBLE], key
            assert set(stored) - set(truth) <= {str(k) for k in side.library_ever}  # only what Plex dropped

    @precondition(ready)
    @rule(on=ON, index=st.integers(0, 50))
    def item_sync(self, on: int, index: int) -> None:
        side = self.sides[on]
        item = self.pick(sorted(side.library_ever.values(), key=lambda i: i.rating_key), index)
        if item is None:
            return
        key = str(item.rating_key)
        error = self.run(PlexLibrarySync.on([side.server], PlexScope(rating_keys=[key])))
        assert error is None, error
        stored, truth = self.stored(side), self.truth(side)
        if key in truth:
            for synced in (key, *(str(i.rating_key) for i in side.library.descendants(item.rating_key))):
                assert stored.get(synced) == truth[synced], synced

    @precondition(ready)
    @rule(on=ON, section=st.sampled_from([1, 2]), everywhere=st.booleans())
    def disk_goes_away_during_a_full_sync(self, on: int, section: int, everywhere: bool) -> None:
        """An unmounted disk: Plex answers the section empty. The guard keeps every row of it; the other
        sections, and the other server, sync as they should."""
        side = self.sides[on]
        sides = self.sides if everywhere else [side]
        before = {s.server: self.stored(s) for s in sides}
        parameters = (
            PlexLibrarySync() if everywhere else PlexLibrarySync.on([side.server], PlexScope(mode="full"))
        )
        side.library.unmount(section)
        try:
            error = self.run(parameters)
        finally:
            side.library.mount(section)
        failed = failed_servers(error)
        for s in sides:
            self.check_full(s, before[s.server], failed.get(s.server), section if s is side else None)

    @precondition(ready)
    @rule(which=WHICH)
    def tautulli_full_history(self, which: int | None) -> None:
        sides = self.sides_of(which)
        error = self.run(TautulliSync.on([side.server for side in sides], TautulliScope(days=0)))
        assert error is None, error
        for side in sides:
            assert self.play_ids(side) == {p.row_id for p in side.history.plays}

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def remember_every_item_plex_had(self) -> None:
        """After every step: an item a run stored and Plex dropped before the next sync is still known."""
        for side in self.sides:
            _ = side.library_ever

    @invariant()
    def play_totals_are_recomputed_from_all_plays_and_never_go_down(self) -> None:
        self.services.stats["steps"] += 1
        if not self.ready():
            return
        w, m = watch_history.c, media_items.c
        for side in self.sides:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(m.plex_id, m.type, m.total_play_count, m.total_watch_time_seconds).where(
                        m.server_id == side.server
                    )
                ).all()
                plays = conn.execute(
                    select(w.rating_key, w.parent_rating_key, w.grandparent_rating_key, w.duration_seconds)
                    .where(w.server_id == side.server)
                ).all()  # fmt: skip
            of: dict[tuple[str, str], list[int]] = {}
            for key, parent, grandparent, seconds in plays:
                for kind, item in ((MOVIE, key), (SEASON, parent), (SHOW, grandparent)):
                    if item:
                        of.setdefault((kind, item), []).append(seconds or 0)
            for key, type_, total, seconds in rows:
                kind = MOVIE if str(type_) in (MOVIE, EPISODE) else str(type_)
                expected = of.get((kind, key), [])
                assert (total or 0, seconds or 0) == (len(expected), sum(expected)), (side.owner.name, key)
                assert (total or 0) >= side.totals.get(key, 0), f"play total of {key} went down"
                side.totals[key] = total or 0


@pytest.mark.timeout(3600)
def test_the_database_tells_the_truth(services: Services) -> None:
    DataPath.services = services
    started = time.monotonic()
    run_state_machine_as_test(
        DataPath,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate]  # a long shrink of a slow machine stays optional
            if os.environ.get("SMARTPLEX_MODEL_SHRINK") == "0"
            else list(Phase),
        ),
    )
    stats = services.stats
    checks = [
        rows
        for a in services.artifacts
        if a["key"] == "plex-library-sync"
        and (rows := [row for row in a["table"] if row.get("section") == REMOVAL_CHECKS])
    ]
    removed = sum(1 for rows in checks for row in rows if row["rating_key"])
    print(f"\nmodel: {stats}")
    print(f"\nmodel: {stats.get('checks', 0)} merged runs with removal checks, {stats['examples']} examples, {stats['steps']} steps, {stats['runs']} runs, "
          f"{time.monotonic() - started:.0f} s, 0 violations; {len(checks)} runs with removal checks removed "
          f"{removed} rows; seconds in runs: {services.seconds}")  # fmt: skip
    assert stats["examples"] >= min(EXAMPLES, 200)
    # A model that never ran a removal check would pass while testing none of the deletion path.
    assert stats.get("checks", 0) >= EXAMPLES // 20, f"only {stats.get('checks', 0)} runs had removal checks"
    assert removed > 0 or EXAMPLES < 50, "no removal check ever removed a row: the model tests nothing"
