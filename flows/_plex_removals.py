"""Targeted deletion checks: Sonarr or Radarr says it deleted something, so find the rows of what it
names on one server, ask that server's Plex whether it still has each one, and act on its answer only.

The guard: only Plex's own word changes a row. Plex answers `/library/metadata/{k1},{k2},...` with the
items it has and 404 when it has none of them, so
- a 404 for a batch is a definite "not found" for every key in it: those rows are removed;
- a 200 that leaves keys out is asked again for just those keys, until the answer is a 404 or lists them;
- an item Plex still lists but keeps in its trash (`deletedAt`, or every part neither `exists` nor
  `accessible`) is unavailable: its row stays, not `accessible` (SmartPlex's `inaccessible_files`), until
  Plex empties its trash and answers 404;
- an error, a timeout or a 200 without items decides nothing: those rows stay and are reported.
A series check asks about the show and every row below it. An episode file removes its episode row only;
its season, and then its show, go only when Plex dropped them too (404) and no row below them is left:
never on the episode's account alone. Upgrades never get here: the parsers ask for no check on
`deleteReason: upgrade`, and the merge drops a check when a later delivery imported the same item again
(`smartplex_sync.requests.drop_reimported`).

`check_removals` has the shape of every flow: the rows' candidates read, Plex asked by a retried fetch
task per batch (`fetch_batch`, through `ask_plex`; an error left after its retries decides nothing), the
pure decisions (`plex_verdict`, `decide`), and one store task (`store_decision`, one transaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Connection, Engine

from flows._plex_items import in_trash
from flows._retry import NETWORK_RETRIES
from flows._runs import Opaque
from flows.clients.plex import METADATA_BATCH, PlexClient
from smartplex_sync.convert import chunked
from smartplex_sync.errors import ServiceError
from smartplex_sync.requests import RemovalCheck
from smartplex_sync.store.accounts import PlexServer
from smartplex_sync.store.media import (
    StoredItem,
    find_by_ids,
    find_children,
    find_episodes,
    mark_unavailable,
    remove_items,
)

Verdict = Literal["present", "trashed", "gone", "unknown"]


@dataclass(frozen=True)
class Candidates:
    """The rows one check asks Plex about (`targets`: a movie; a show with every row below it; the episodes
    of a file), the season and show of an episode file (`parents`), and every row below those (`below`)."""

    targets: list[StoredItem]
    parents: list[StoredItem] = field(default_factory=list)
    below: list[StoredItem] = field(default_factory=list)


@dataclass
class RemovalReport:
    """What a run of checks did; `table()` is the rows of the run's artifact."""

    removed: list[dict[str, Any]] = field(default_factory=list)  # removed, or marked unavailable
    still_in_plex: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def table(self) -> list[dict[str, Any]]:
        nothing = {"rating_key": "", "type": "", "title": "nothing removed", "action": "", "reason": ""}
        return self.removed or [nothing]

    def summary(self) -> dict[str, Any]:
        return {
            "removed": [row["rating_key"] for row in self.removed if row["action"] == "removed"],
            "unavailable": [row["rating_key"] for row in self.removed if row["action"] == "unavailable"],
            "still_in_plex": self.still_in_plex,
            "unanswered": self.unanswered,
            "skipped": self.skipped,
            "errors": self.errors,
            "requests": self.requests,
        }


def plex_verdict(item: dict[str, Any]) -> Verdict:
    """`trashed` when Plex keeps the item only in its trash, else `present`."""
    return "trashed" if in_trash(item) else "present"


@dataclass(frozen=True)
class Decision:
    """What a run of checks does to rows: rating key → reason."""

    remove: dict[str, str]
    unavailable: dict[str, str]


def decide(planned: Sequence[Candidates], verdicts: dict[str, Verdict]) -> Decision:
    """What the checks of a run do. A target Plex answered 404 for (`gone`) is removed, and every row
    below a removed row with it; one it keeps in its trash (`trashed`) is marked unavailable. A season or
    show of an episode file goes only when Plex answered 404 for it and no row below it is left; judged on
    what all checks together remove."""
    remove = {
        t.rating_key: "Plex: gone"
        for candidates in planned
        for t in candidates.targets
        if verdicts.get(t.rating_key) == "gone"
    }
    for candidates in planned:
        for row in [*candidates.targets, *candidates.below]:
            if (
                row.rating_key not in remove
                and {row.parent_rating_key, row.grandparent_rating_key} & remove.keys()
            ):
                remove[row.rating_key] = "below an item Plex no longer has"
    for candidates in planned:
        for parent in sorted(candidates.parents, key=lambda row: row.type != "season"):  # seasons first
            left = [
                r
                for r in candidates.below
                if parent.rating_key in (r.parent_rating_key, r.grandparent_rating_key)
                and r.rating_key not in remove
            ]
            if verdicts.get(parent.rating_key) == "gone" and not left:
                remove[parent.rating_key] = f"Plex no longer has this {parent.type}, nothing left below it"
    unavailable = {
        t.rating_key: "Plex: in its trash"
        for candidates in planned
        for t in candidates.targets
        if verdicts.get(t.rating_key) == "trashed" and t.rating_key not in remove
    }
    return Decision(remove, unavailable)


def find_candidates(conn: Connection, server_id: uuid.UUID, check: RemovalCheck) -> Candidates:
    ids: dict[str, Any] = {"tmdb_id": check.tmdb_id, "tvdb_id": check.tvdb_id, "imdb_id": check.imdb_id}
    if check.kind == "movie":
        return Candidates(find_by_ids(conn, server_id, "movie", radarr_movie_id=check.arr_id, **ids))
    shows = find_by_ids(conn, server_id, "show", sonarr_series_id=check.arr_id, **ids)
    show_keys = {s.rating_key for s in shows}
    below = find_children(conn, server_id, show_keys)
    if check.kind == "series":
        return Candidates([*shows, *below])
    episodes = find_episodes(conn, server_id, show_keys, check.episodes)
    if not episodes:
        return Candidates([])
    season_keys = {e.parent_rating_key for e in episodes}
    seasons = [row for row in below if row.rating_key in season_keys]
    return Candidates(episodes, parents=[*seasons, *shows], below=below)


@task(**NETWORK_RETRIES, cache_policy=NO_CACHE, task_run_name="ask Plex about {label}")
def fetch_batch(client: PlexClient, batch: list[str], label: str) -> dict[str, dict[str, Any]]:
    """Plex's answer for one batch of rating keys: the items it has ({} for a 404: none of them)."""
    return client.metadata(batch)


def ask_plex(
    client: PlexClient, rating_keys: Sequence[str], batch_size: int = METADATA_BATCH
) -> tuple[dict[str, Verdict], list[str]]:
    """A verdict per rating key, and the errors met. Keys a 200 left out are asked again on their own
    batch; a 404 makes every key of its batch `gone`; an error (once its retries are spent) makes them
    `unknown`."""
    verdicts: dict[str, Verdict] = {}
    errors: list[str] = []
    pending = list(chunked(rating_keys, batch_size))
    while pending:
        batch = pending.pop()
        try:
            found = fetch_batch(client, batch, f"{len(batch)} rows")
        except ServiceError as exc:
            errors.append(str(exc))
            verdicts.update(dict.fromkeys(batch, "unknown"))
            continue
        if not found:
            verdicts.update(dict.fromkeys(batch, "gone"))
            continue
        for key in batch:
            if key in found:
                verdicts[key] = plex_verdict(found[key])
        left_out = [key for key in batch if key not in found]
        if left_out:
            pending.append(left_out)  # smaller than `batch`: the loop ends
    return verdicts, errors


@task(cache_policy=NO_CACHE)
def store_decision(engine: Engine, server_id: uuid.UUID, decided: Opaque[Decision]) -> list[StoredItem]:
    """Remove and mark unavailable what the decision says, in one transaction; the rows removed."""
    decision = decided.value
    with engine.begin() as conn:
        removed = remove_items(conn, server_id, decision.remove)
        mark_unavailable(conn, server_id, decision.unavailable)
    return removed


def check_removals(
    client: PlexClient,
    engine: Engine,
    server: PlexServer,
    checks: Sequence[RemovalCheck],
    *,
    batch_size: int = METADATA_BATCH,
) -> RemovalReport:
    """Run the checks against one server's Plex and act on its answers, in one transaction. Errors from
    Plex are reported, never raised: the caller decides whether a run with `errors` should fail (and be
    retried)."""
    report = RemovalReport()
    requests_before = client.requests_made
    planned: list[tuple[RemovalCheck, Candidates]] = []
    with engine.connect() as conn:
        for check in checks:
            candidates = find_candidates(conn, server.id, check)
            if candidates.targets:
                planned.append((check, candidates))
            else:
                report.skipped.append(f"{check.label}: no row on server {server.name}")
    asked = list(dict.fromkeys(r.rating_key for _, c in planned for r in (*c.targets, *c.parents)))
    verdicts, report.errors = ask_plex(client, asked, batch_size)
    decision = decide([candidates for _, candidates in planned], verdicts)
    rows = {r.rating_key: r for _, c in planned for r in (*c.targets, *c.parents, *c.below)}
    removed = store_decision(engine, server.id, Opaque(decision))
    report.removed = [
        {**asdict(row), "action": "removed", "reason": decision.remove[row.rating_key]} for row in removed
    ] + [
        {**asdict(rows[key]), "action": "unavailable", "reason": reason}
        for key, reason in decision.unavailable.items()
    ]
    targets = [t.rating_key for _, c in planned for t in c.targets]
    report.still_in_plex = [k for k in dict.fromkeys(targets) if verdicts.get(k) == "present"]
    report.unanswered = [k for k in asked if verdicts.get(k) == "unknown"]
    report.requests = client.requests_made - requests_before
    return report
