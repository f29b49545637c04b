"""A model-based test of the whole data path: random sequences of library changes (additions, upgrades,
new seasons, deletes through Sonarr/Radarr and in Plex only), plays, webhooks delivered, delivered twice
or lost, Plex failures, and incremental, full and item syncs, against the simulators over real HTTP and a
real database (SQLite and PostgreSQL). The simulated Plex library is the ground truth.

The pipeline runs in-process: deliveries go through the real gateway app (parser, `webhooks.record`,
the queue), queued requests are merged as the dispatcher merges them (`batching.new_batch` over
`queue.pending_requests`, then `queue.claim`), and the flow bodies run with `.fn(request)`. No Prefect:
the flows' tasks run as their plain functions (so no retries: one injected fault fails a run) and
artifacts are recorded in memory, where the test reads them. Prefect's part (runs, retries, artifacts)
is covered by test_plex_sync.py, test_dispatch.py and test_end_to_end.py.

Invariants:
- after a full sync, `media_items` equals what Plex lists (less its trash), per server and section;
- after any incremental sync, every item Plex has is right; rows of items Plex dropped may wait for
  a full sync or a targeted check;
- after a delivered webhook and its run, the items it touched are right, with no full sync;
- play totals equal those recomputed from all stored plays and never go down;
- no run, failed or not, removes the row of an item Plex still has (an error or an empty answer
  removes nothing; an upgrade removes nothing);
- the rows of another server are never touched, and a run touches no section it was not about.

Examples: SMARTPLEX_MODEL_EXAMPLES (default 200), steps: SMARTPLEX_MODEL_STEPS (default 30);
`make model-test` runs the long run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, delete, select

import flows._arr as arr_flow
import flows.library_sync as library_sync
import flows.tautulli_sync as tautulli_flow
from flows.library_sync import plex_library_sync
from flows.radarr_sync import radarr_sync
from flows.sonarr_sync import sonarr_sync
from flows.tautulli_sync import tautulli_sync
from simulators import plex as plex_sim
from simulators import radarr, sonarr, tautulli
from simulators.demo import history_item
from simulators.plex import Fault, create_plex_app
from simulators.plex_library import EPISODE, MOVIE, SHOW, Item, PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.errors import DeletionGuardError
from smartplex_sync.models import Deployment
from smartplex_sync.requests import PlexLibrarySync, TautulliSync
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import queue
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.media import PLEX_COLUMNS
from smartplex_sync.store.tables import (
    arr_items,
    batch_requests,
    dispatch_batches,
    media_items,
    sync_state,
    watch_history,
    webhook_log,
    webhook_requests,
)
from tests.conftest import both_backends
from webhook_gateway.app import create_app
from webhook_gateway.batching import new_batch

TOKEN = "model-plex-token"
WEBHOOK_TOKEN = "model-webhook-token"
TAUTULLI_KEY = "model-tautulli-key"
SERVER = "model-plex-server"
OTHER_SERVER = "another-plex-server"
GUARD = 0.9
EXAMPLES = int(os.environ.get("SMARTPLEX_MODEL_EXAMPLES", "200"))
STEPS = int(os.environ.get("SMARTPLEX_MODEL_STEPS", "30"))
FLOWS: dict[Deployment, Callable[[Any], Any]] = {
    Deployment.PLEX_LIBRARY_SYNC: plex_library_sync.fn,
    Deployment.TAUTULLI_SYNC: tautulli_sync.fn,
    Deployment.SONARR_SYNC: sonarr_sync.fn,
    Deployment.RADARR_SYNC: radarr_sync.fn,
}
DELIVERY = st.sampled_from([None, 0, 1, 1, 1, 2])
"""How a webhook goes: left waiting for `deliver` (None), lost (0), delivered once or twice."""
ROW_COLUMNS = ("type", "title", "section_id", "file_size_bytes", "updated_at", "parent_rating_key")


@dataclass
class Services:
    """The simulators, served once per test; each example gets a new library and history."""

    plex: plex_sim.SimulatorState
    tautulli: tautulli.SimulatorState
    gateway: TestClient
    engine: Engine
    artifacts: list[dict[str, Any]]
    stats: dict[str, int] = field(default_factory=lambda: {"examples": 0, "steps": 0, "runs": 0})
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture
def services(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    library = PlexLibrary(machine_identifier=SERVER)
    history = tautulli.TautulliHistory()
    plex_app = create_plex_app(library, token=TOKEN)
    tautulli_app = tautulli.create_tautulli_app(
        history, api_key=TAUTULLI_KEY, pms_identifier=SERVER, pms_name="Model Plex"
    )
    with serve_in_thread(plex_app) as plex_url, serve_in_thread(tautulli_app) as tautulli_url:
        env = {
            "SMARTPLEX_DATABASE_URL": database_url,
            "SMARTPLEX_PLEX_URL": plex_url,
            "SMARTPLEX_PLEX_TOKEN": TOKEN,
            "SMARTPLEX_TAUTULLI_URL": tautulli_url,
            "SMARTPLEX_TAUTULLI_API_KEY": TAUTULLI_KEY,
            "SMARTPLEX_PLEX_SCAN_GRACE_SECONDS": "0",  # the model decides when Plex scans
            "SMARTPLEX_INCREMENTAL_OVERLAP_SECONDS": "0",
            "SMARTPLEX_DELETE_GUARD_FRACTION": str(GUARD),
            "SMARTPLEX_HTTP_TIMEOUT_SECONDS": "5",
            "SMARTPLEX_WEBHOOK_TOKEN": WEBHOOK_TOKEN,  # the test client is no loopback client
            # One gateway serves every example, faster than any sender: the long run went over Sonarr's
            # 300-delivery burst and got a 429 (limits have their own tests: test_limits.py).
            "SMARTPLEX_RATE_LIMIT_PER_SECOND": "0",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        artifacts: list[dict[str, Any]] = []
        for module, names in (
            (
                library_sync,
                ("fetch_identity", "fetch_sections", "fetch_page", "fetch_items", "fetch_children"),
            ),
            (tautulli_flow, ("fetch_server", "sync_history", "refresh_totals")),
            (arr_flow, ("publish_report", "store_and_link")),
        ):
            for name in names:
                monkeypatch.setattr(module, name, getattr(module, name).fn)
        for module in (library_sync, tautulli_flow, arr_flow):
            monkeypatch.setattr(
                module, "create_table_artifact", lambda **artifact: artifacts.append(artifact)
            )
        app: FastAPI = create_app(Settings(), background=False)
        with TestClient(app) as gateway:
            yield Services(
                plex_app.state.plex, tautulli_app.state.tautulli, gateway, app.state.gateway.engine, artifacts
            )
    get_settings.cache_clear()


@dataclass
class Event:
    """A webhook the simulators sent, waiting to be delivered (or lost), and the rating keys it touches."""

    source: str
    payload: dict[str, Any]
    touches: frozenset[str]


def _plex_row(library: PlexLibrary, item: Item) -> tuple[Any, ...]:
    size = sum(p.size for m in item.media for p in m.parts) or None
    parent = str(item.parent_key) if item.parent_key else None
    return (item.type, item.title, item.section_id, size, item.updated_at, parent)


def _arr_movie(item: Item) -> dict[str, Any]:
    """Radarr's movie for this Plex movie: same ids (the truth's guids; imdb for the legacy agent too)."""
    tmdb = next((int(g[7:]) for g in item.guids if g.startswith("tmdb://")), 0)
    return {"id": item.rating_key, "title": item.title, "year": item.year, "tmdbId": tmdb,
            "imdbId": f"tt{item.rating_key:07d}", "path": f"/movies/{item.title}", "sizeOnDisk": 1}  # fmt: skip


def _arr_series(show: Item) -> dict[str, Any]:
    return {"id": show.rating_key, "title": show.title, "path": f"/tv/{show.title}",
            "tvdbId": show.rating_key + 70_000, "tmdbId": 0, "year": show.year}  # fmt: skip


class DataPath(RuleBasedStateMachine):
    """One example: a fresh library and database, then random steps (see the module docstring)."""

    services: Services

    def __init__(self) -> None:
        super().__init__()
        s = self.services
        s.stats["examples"] += 1
        self.engine = s.engine
        with self.engine.begin() as conn:
            for table in (batch_requests, webhook_requests, dispatch_batches, webhook_log, watch_history,
                          arr_items, sync_state, media_items):  # fmt: skip
                conn.execute(delete(table))
        self.events: list[Event] = []
        self.history = tautulli.TautulliHistory()
        s.tautulli.history = self.history
        self.totals: dict[str, int] = {}
        self.sentinel: list[tuple[Any, ...]] = []
        self.library = PlexLibrary(machine_identifier=SERVER)
        self._ever: dict[int, Item] = {}
        self.touched_sync: set[str] = set()  # items delivered additions, upgrades, new seasons named
        self.touched_delete: set[str] = set()  # items delivered deletes named

    # -- setup ----------------------------------------------------------------------------------------

    @precondition(lambda self: not self.library.sections)
    @rule(seed=st.integers(0, 10_000), empty_trash=st.booleans())
    def build(self, seed: int, empty_trash: bool) -> None:
        self.library = PlexLibrary.generate(
            seed=seed, movies=4, shows=2, seasons_per_show=1, episodes_per_season=2,
            machine_identifier=SERVER, empty_trash_after_scan=empty_trash,
        )  # fmt: skip
        self.services.plex.library = self.library
        self.services.plex.faults.clear()
        self.full_sync()
        with self.engine.begin() as conn:  # the same items on another server: never to be touched
            rows = [dict(r._mapping) for r in conn.execute(select(media_items))]
            for row in rows:
                row.pop("id")
                row["server_id"] = OTHER_SERVER
            conn.execute(media_items.insert(), rows)
        self.sentinel = self.rows(OTHER_SERVER)

    def ready(self) -> bool:
        return bool(self.library.sections)

    # -- reading --------------------------------------------------------------------------------------

    def rows(self, server: str = SERVER) -> list[tuple[Any, ...]]:
        """The Plex-owned columns of a server's rows (Sonarr/Radarr ids link onto every server's rows of
        the same show or movie, by design: the model's first counterexample was that, not a bug)."""
        columns = [media_items.c[name] for name in PLEX_COLUMNS]
        with self.engine.connect() as conn:
            return sorted(
                tuple(r) for r in conn.execute(select(*columns).where(media_items.c.server_id == server))
            )

    def stored(self) -> dict[str, tuple[Any, ...]]:
        c = media_items.c
        columns = [c[name] for name in ROW_COLUMNS]
        with self.engine.connect() as conn:
            found = conn.execute(select(c.rating_key, *columns).where(c.server_id == SERVER))
            return {r[0]: (*r[1:5], int(r[5].timestamp()), r[6]) for r in found}

    def truth(self) -> dict[str, tuple[Any, ...]]:
        return {str(i.rating_key): _plex_row(self.library, i) for i in self.library.available_items()}

    def of_type(self, *types: str) -> list[Item]:
        return sorted(
            (i for i in self.library.available_items() if i.type in types), key=lambda i: i.rating_key
        )

    def pick(self, items: list[Item], index: int) -> Item | None:
        return items[index % len(items)] if items else None

    # -- the world changes ----------------------------------------------------------------------------

    @precondition(ready)
    @rule(via_radarr=st.booleans(), times=DELIVERY)
    def add_movie(self, via_radarr: bool, times: int | None) -> None:
        section = next(s for s in self.library.sections.values() if s.type == MOVIE)
        item = self.library.add_movie(section.key)
        if via_radarr:
            self.emit(
                times,
                Event("radarr", radarr.download_payload(_arr_movie(item)), frozenset({str(item.rating_key)})),
            )
        else:
            self.emit(
                times,
                Event(
                    "plex",
                    plex_sim.library_new_payload(self.library, item),
                    frozenset({str(item.rating_key)}),
                ),
            )

    @precondition(ready)
    @rule(index=st.integers(0, 50), via_sonarr=st.booleans(), times=DELIVERY)
    def add_season(self, index: int, via_sonarr: bool, times: int | None) -> None:
        show = self.pick(self.of_type(SHOW), index)
        if show is None:
            return
        season = self.library.add_season(show.rating_key, episodes=2)
        episodes = self.library.children(season.rating_key)
        touched = frozenset(str(i.rating_key) for i in (season, *episodes))
        if via_sonarr:
            payload = sonarr.download_payload(_arr_series(show), season.index or 1, 1)
        else:
            payload = plex_sim.library_new_payload(self.library, episodes[0])
        self.emit(times, Event("sonarr" if via_sonarr else "plex", payload, touched))

    @precondition(ready)
    @rule(index=st.integers(0, 50), times=DELIVERY)
    def upgrade(self, index: int, times: int | None) -> None:
        """A better file replaces the old one: the arr deletes the old file ("for upgrade") and imports."""
        item = self.pick(self.of_type(MOVIE, EPISODE), index)
        if item is None or not any(p.on_disk for m in item.media for p in m.parts):
            return
        self.library.upgrade(item.rating_key)
        touched = frozenset({str(item.rating_key)})
        if item.type == MOVIE:
            movie = _arr_movie(item)
            self.emit(
                times, Event("radarr", radarr.movie_file_delete_payload(movie, reason="upgrade"), touched)
            )
            self.emit(times, Event("radarr", radarr.download_payload(movie, is_upgrade=True), touched))
        else:
            show = self.library.items[item.grandparent_key or 0]
            season = self.library.items[item.parent_key or 0]
            series, numbers = _arr_series(show), (season.index or 0, item.index or 0)
            self.emit(
                times,
                Event(
                    "sonarr", sonarr.episode_file_delete_payload(series, *numbers, reason="upgrade"), touched
                ),
            )
            self.emit(
                times, Event("sonarr", sonarr.download_payload(series, *numbers, is_upgrade=True), touched)
            )

    @precondition(ready)
    @rule(
        kind=st.sampled_from([MOVIE, SHOW, EPISODE]),
        index=st.integers(0, 50),
        plex_scans=st.booleans(),
        times=DELIVERY,
        dispatched=st.booleans(),
    )
    def delete_through_arr(
        self, kind: str, index: int, plex_scans: bool, times: int | None, dispatched: bool
    ) -> None:
        """Sonarr/Radarr deletes the files, then (or not yet) Plex scans the folder; the dispatcher may
        run the library sync straight away (the scan grace has passed) or later."""
        item = self.pick(self.of_type(kind), index)
        if item is None:
            return
        touched = {
            str(item.rating_key),
            *(str(i.rating_key) for i in self.library.descendants(item.rating_key)),
        }
        self.library.delete_files(item.rating_key)
        if kind == MOVIE:
            payload = radarr.movie_delete_payload(_arr_movie(item))
        elif kind == SHOW:
            payload = sonarr.series_delete_payload(_arr_series(item))
        else:
            show, season = (
                self.library.items[item.grandparent_key or 0],
                self.library.items[item.parent_key or 0],
            )
            touched |= {str(show.rating_key), str(season.rating_key)}
            payload = sonarr.episode_file_delete_payload(
                _arr_series(show), season.index or 0, item.index or 0
            )
        self.emit(times, Event("radarr" if kind == MOVIE else "sonarr", payload, frozenset(touched)))
        if plex_scans:
            self.library.scan(item.section_id)
        if dispatched:
            self.dispatch(Deployment.PLEX_LIBRARY_SYNC, 0)

    @precondition(ready)
    @rule(index=st.integers(0, 50), times=DELIVERY)
    def reimport(self, index: int, times: int | None) -> None:
        """Files deleted through Radarr come back (a new download) before Plex scanned: Plex never notices."""
        gone = [i for i in self.of_type(MOVIE) if i.files_gone]
        item = self.pick(gone, index)
        if item is None:
            return
        for part in (p for m in item.media for p in m.parts):
            part.on_disk = True
        self.library.upgrade(item.rating_key)
        self.emit(
            times,
            Event("radarr", radarr.download_payload(_arr_movie(item)), frozenset({str(item.rating_key)})),
        )

    @precondition(ready)
    @rule(section=st.sampled_from([1, 2]))
    def plex_scans(self, section: int) -> None:
        self.library.scan(section)

    @precondition(ready)
    @rule(kind=st.sampled_from([MOVIE, SHOW, EPISODE]), index=st.integers(0, 50))
    def delete_in_plex_only(self, kind: str, index: int) -> None:
        item = self.pick(self.of_type(kind), index)
        if item is not None:
            self.library.delete(item.rating_key)

    @precondition(ready)
    @rule(index=st.integers(0, 50), percent=st.sampled_from([3, 45, 80, 95, 100]), times=DELIVERY)
    def play(self, index: int, percent: int, times: int | None) -> None:
        item = self.pick(self.of_type(MOVIE, EPISODE), index)
        if item is None:
            return
        started = int(time.time()) - 4 * 3600
        played = self.history.add_play(
            history_item(self.library, item), started=started, percent_complete=percent
        )
        parameters = tautulli.notification_parameters(played, action="stop", server_machine_id=SERVER)
        payload = tautulli.render_template(tautulli.DOCUMENTED_TEMPLATE, parameters)
        self.emit(times, Event("tautulli", payload, frozenset()))

    # -- webhooks -------------------------------------------------------------------------------------

    def emit(self, times: int | None, event: Event) -> None:
        """A webhook the simulators sent: delivered at once (`times`: 0 lost, 1, or 2), or left waiting."""
        self.events.append(event)
        if times is not None:
            self.deliver(len(self.events) - 1, times)

    @precondition(lambda self: self.events)
    @rule(index=st.integers(0, 50), times=st.sampled_from([0, 1, 1, 1, 2]))
    def deliver_waiting(self, index: int, times: int) -> None:
        self.deliver(index, times)

    def deliver(self, index: int, times: int) -> None:
        """Deliver a waiting webhook once, twice, or lose it (0)."""
        event = self.events.pop(index % len(self.events))
        self.services.stats["delivered"] = self.services.stats.get("delivered", 0) + times
        for _ in range(times):
            if event.source == "plex":  # Plex can only carry a token in the URL
                answer = self.services.gateway.post(
                    "/api/webhooks/plex",
                    params={"token": WEBHOOK_TOKEN},
                    data={"payload": json.dumps(event.payload)},
                )
            else:
                answer = self.services.gateway.post(
                    f"/api/webhooks/{event.source}",
                    headers={"X-Webhook-Token": WEBHOOK_TOKEN},
                    json=event.payload,
                )
            assert answer.status_code == 202, answer.text
            if event.payload.get("deleteReason") == "upgrade":
                # Ignored by design: it asks for nothing, and promises nothing about the item until the
                # upgrade's Download arrives (the long run flagged a stale row where only this one came).
                continue
            deletes = event.payload.get("eventType") in ("MovieDelete", "SeriesDelete", "EpisodeFileDelete")
            (self.touched_delete if deletes else self.touched_sync).update(event.touches)

    # -- runs -----------------------------------------------------------------------------------------

    def run(self, deployment: Deployment, call: Callable[[], Any]) -> Exception | None:
        """Run a flow body; check that it removed no row of an item Plex has, whatever it did."""
        self.services.stats["runs"] += 1
        before = self.stored()
        error: Exception | None = None
        began = time.monotonic()
        try:
            call()
        except Exception as exc:  # a failed run is a legal outcome; what it did to the rows is checked
            error = exc
        seconds = self.services.seconds
        seconds[deployment] = seconds.get(deployment, 0.0) + time.monotonic() - began
        available = self.truth()
        removed = set(before) - set(self.stored())
        assert not removed & set(available), (
            f"{deployment}: removed rows of items Plex has: {removed & set(available)}"
        )
        assert self.rows(OTHER_SERVER) == self.sentinel, "a row of another server changed"
        return error

    @precondition(ready)
    @rule(plex_faults=st.sampled_from([0, 0, 0, 1, 6]))
    def dispatch_every_deployment(self, plex_faults: int) -> None:
        """A dispatcher pass once every window has closed: one run per deployment with waiting requests."""
        for deployment in FLOWS:
            self.dispatch(deployment, plex_faults)

    @precondition(ready)
    @rule(deployment=st.sampled_from(list(FLOWS)), plex_faults=st.sampled_from([0, 0, 0, 1, 6]))
    def dispatch(self, deployment: Deployment, plex_faults: int) -> None:
        """What the dispatcher does for a deployment: every waiting request, merged, one run."""
        self.services.stats["dispatch"] = self.services.stats.get("dispatch", 0) + 1
        waiting = [r for r in queue.pending_requests(self.engine) if r.deployment is deployment]
        if not waiting:
            return
        planned = new_batch(deployment, waiting)
        if getattr(planned.parameters, "removal_checks", None):
            self.services.stats["checks"] = self.services.stats.get("checks", 0) + 1
        batch = queue.Batch(uuid.uuid4().hex, deployment, "", planned.parameters.to_json(), planned.name,
                            list(planned.tags), utcnow())  # fmt: skip
        assert queue.claim(self.engine, batch, [r.id for r in waiting])
        self.services.plex.faults.extend(Fault(503) for _ in range(plex_faults))
        if deployment is Deployment.PLEX_LIBRARY_SYNC:  # this batch took every delivered request
            touched = (set(self.touched_sync), set(self.touched_delete))
            self.touched_sync, self.touched_delete = set(), set()
        error = self.run(deployment, lambda: FLOWS[deployment](planned.parameters))
        self.services.plex.faults.clear()
        queue.finish(
            self.engine,
            batch,
            "FAILED" if error else "COMPLETED",
            str(error) if error else None,
            requeue=False,
        )
        if error is None and deployment is Deployment.PLEX_LIBRARY_SYNC:
            self.check_touched(planned.parameters, *touched)
        if error is not None and plex_faults == 0:
            raise error  # nothing made it fail: a bug

    def check_touched(self, merged: Any, synced: set[str], deleted: set[str]) -> None:
        """After a webhook's run, the items it touched are right with no full sync: those a download or
        library.new named and Plex has are stored as Plex has them; of those a delete named, the ones
        Plex dropped (or keeps in its trash) are gone, and the ones it still has are kept (checked by
        `run` for every run)."""
        assert isinstance(merged, PlexLibrarySync)
        stored, available = self.stored(), self.truth()
        for key in synced & set(available):
            assert stored.get(key) == available[key], (
                f"item {key}: {stored.get(key)} != Plex {available[key]}"
            )
        checked = self.checked_keys(merged) & deleted
        stale = (checked & set(stored)) - set(available) - self.present_in_plex()
        assert not stale, f"rows of items Plex dropped are still stored after their check: {stale}"

    def present_in_plex(self) -> set[str]:
        """Keys Plex still answers as there and not trashed (a show or season whose episodes are trashed)."""
        return {str(k) for k, i in self.library.items.items() if i.deleted_at is None}

    def checked_keys(self, merged: PlexLibrarySync) -> set[str]:
        keys: set[str] = set()
        for check in merged.removal_checks:
            for item in list(self.library_ever.values()):
                if check.kind == "movie" and item.type == MOVIE and check.arr_id == item.rating_key:
                    keys.add(str(item.rating_key))
                elif check.kind == "series" and item.rating_key == check.arr_id:
                    keys |= {str(item.rating_key), *self.ever_below(item.rating_key)}
                elif (
                    check.kind == "episode_file"
                    and item.type == EPISODE
                    and item.grandparent_key == check.arr_id
                ):
                    season = self.library_ever.get(item.parent_key or 0)
                    if season and (season.index, item.index) in check.episodes:
                        keys.add(str(item.rating_key))
        return keys

    @property
    def library_ever(self) -> dict[int, Item]:
        """Every item the library ever had (the truth forgets removed ones; the model remembers them)."""
        self._ever.update(self.library.items)
        return self._ever

    def ever_below(self, key: int) -> set[str]:
        return {str(k) for k, i in self.library_ever.items() if key in (i.parent_key, i.grandparent_key)}

    @precondition(ready)
    @rule()
    def full_sync(self) -> None:
        stored_before = self.stored()
        error = self.run(
            Deployment.PLEX_LIBRARY_SYNC, lambda: plex_library_sync.fn(PlexLibrarySync(mode="full"))
        )
        stored, available = self.stored(), self.truth()
        if isinstance(error, DeletionGuardError):  # legitimate only when that much really went
            for section in self.library.sections.values():
                had = {k for k, v in stored_before.items() if v[2] == section.key}
                missing = had - set(available)
                if len(missing) > GUARD * len(had):
                    assert {k for k, v in stored.items() if v[2] == section.key} >= had, "guard deleted rows"
                else:
                    assert {k: v for k, v in stored.items() if v[2] == section.key} == {
                        k: v for k, v in available.items() if v[2] == section.key
                    }
            return
        assert error is None, error
        assert stored == available

    @precondition(ready)
    @rule()
    def incremental_sync(self) -> None:
        error = self.run(Deployment.PLEX_LIBRARY_SYNC, lambda: plex_library_sync.fn(PlexLibrarySync()))
        assert error is None, error
        stored, available = self.stored(), self.truth()
        assert {k: v for k, v in stored.items() if k in available} == available
        assert set(stored) - set(available) <= {str(k) for k in self.library_ever}  # only what Plex dropped

    @precondition(ready)
    @rule(index=st.integers(0, 50))
    def item_sync(self, index: int) -> None:
        item = self.pick(sorted(self.library_ever.values(), key=lambda i: i.rating_key), index)
        if item is None:
            return
        key = str(item.rating_key)
        error = self.run(
            Deployment.PLEX_LIBRARY_SYNC, lambda: plex_library_sync.fn(PlexLibrarySync(rating_keys=[key]))
        )
        assert error is None, error
        stored, available = self.stored(), self.truth()
        if key in available:
            assert stored[key] == available[key]

    @precondition(ready)
    @rule(section=st.sampled_from([1, 2]))
    def disk_goes_away_during_a_full_sync(self, section: int) -> None:
        """An unmounted disk: Plex answers the section empty. The guard keeps every row of it."""
        before = {k: v for k, v in self.stored().items() if v[2] == section}
        self.library.unmount(section)
        try:
            error = self.run(
                Deployment.PLEX_LIBRARY_SYNC, lambda: plex_library_sync.fn(PlexLibrarySync(mode="full"))
            )
        finally:
            self.library.mount(section)
        assert isinstance(error, DeletionGuardError) or not before, error
        assert {k: v for k, v in self.stored().items() if v[2] == section} == before

    @precondition(ready)
    @rule()
    def tautulli_full_history(self) -> None:
        error = self.run(Deployment.TAUTULLI_SYNC, lambda: tautulli_sync.fn(TautulliSync(days=0)))
        assert error is None, error
        with self.engine.connect() as conn:
            stored = set(conn.scalars(select(watch_history.c.tautulli_row_id)))
        assert stored == {p.row_id for p in self.history.plays}

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def remember_every_item_plex_had(self) -> None:
        """After every step: an item a run stored and Plex dropped before the next sync is still known."""
        _ = self.library_ever

    @invariant()
    def play_totals_are_recomputed_from_all_plays_and_never_go_down(self) -> None:
        self.services.stats["steps"] += 1
        if not self.ready():
            return
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(media_items.c.rating_key, media_items.c.total_play_count,
                       media_items.c.total_watch_time_seconds).where(media_items.c.server_id == SERVER)
            ).all()  # fmt: skip
            plays = conn.execute(select(watch_history.c.rating_key, watch_history.c.duration_seconds)).all()
        counts: dict[str, list[int]] = {}
        for key, seconds in plays:
            counts.setdefault(key, []).append(seconds or 0)
        for key, total, seconds in rows:
            assert (total or 0, seconds or 0) == (len(counts.get(key, [])), sum(counts.get(key, []))), key
            assert (total or 0) >= self.totals.get(key, 0), f"play total of {key} went down"
            self.totals[key] = total or 0


@both_backends
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
    checks = [a for a in services.artifacts if a["key"] == "plex-removals"]
    removed = sum(1 for a in checks for row in a["table"] if row["rating_key"])
    print(f"\nmodel: {stats}")
    print(f"\nmodel: {stats.get('checks', 0)} merged runs with removal checks, {stats['examples']} examples, {stats['steps']} steps, {stats['runs']} runs, "
          f"{time.monotonic() - started:.0f} s, 0 violations; {len(checks)} runs with removal checks removed "
          f"{removed} rows; seconds in runs: {services.seconds}")  # fmt: skip
    assert stats["examples"] >= min(EXAMPLES, 200)
    # A model that never ran a removal check would pass while testing none of the deletion path.
    assert stats.get("checks", 0) >= EXAMPLES // 20, f"only {stats.get('checks', 0)} runs had removal checks"
    assert removed > 0 or EXAMPLES < 50, "no removal check ever removed a row: the model tests nothing"
