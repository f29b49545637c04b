"""Targeted deletion checks: Sonarr or Radarr says it deleted something, so find the rows of what it
names, ask Plex whether it still has each one, and remove exactly the rows Plex no longer has.

The guard: only Plex's own word removes a row. Plex answers `/library/metadata/{k1},{k2},...` with the
items it has and 404 when it has none of them, so
- a 404 for a batch is a definite "not found" for every key in it;
- a 200 that leaves keys out is asked again for just those keys, until the answer is a 404 or lists them;
- an item Plex still lists but keeps in its trash (`deletedAt`, or every part neither `exists` nor
  `accessible`) counts as gone: it is unavailable, and SmartPlex must never offer it for cleanup;
- an error, a timeout or a 200 without items decides nothing: those rows stay and are reported.
An upgrade (`deleteReason: upgrade`, or the same item imported again in the same window) removes nothing.
An episode file removes its episode row only; its season goes only when Plex dropped the season too and
no episode row of it is left; the show never goes on an episode's account.

Pure decisions (`plex_verdict`, `decide`, `drop_reimported`) are kept apart from the I/O
(`check_removals`), which takes its parameters as plain `RemovalCheck`s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy import Connection, Engine

from flows._plex_items import in_trash
from flows.clients.plex import PlexClient
from smartplex_sync.errors import ServiceError
from smartplex_sync.store.media import (
    StoredItem,
    find_by_ids,
    find_children,
    find_episodes,
    remove_items,
)

Verdict = Literal["present", "trashed", "gone", "unknown"]
BATCH_SIZE = 50
"""Rating keys per `/library/metadata/{k1},...` request (keeps the URL short)."""


class RemovalCheck(BaseModel):
    """What one Sonarr/Radarr delete event identifies. `movie` (Radarr MovieDelete, MovieFileDelete),
    `series` (Sonarr SeriesDelete), `episode_file` (Sonarr EpisodeFileDelete: `episodes` holds its
    (season, episode) numbers). Ids the arr does not know are None (it sends 0 or leaves them out)."""

    model_config = ConfigDict(frozen=True)

    service: Literal["sonarr", "radarr"]
    kind: Literal["movie", "series", "episode_file"]
    arr_id: int | None = None
    tmdb_id: int | None = None
    tvdb_id: int | None = None
    imdb_id: str | None = None
    episodes: tuple[tuple[int, int], ...] = ()
    upgrade: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.service == "radarr") != (self.kind == "movie"):
            raise ValueError(f"{self.service} does not delete a {self.kind}")
        if self.kind == "episode_file" and not self.episodes:
            raise ValueError("an episode_file check names its (season, episode) numbers")
        return self

    @property
    def label(self) -> str:
        ids = {"id": self.arr_id, "tmdb": self.tmdb_id, "tvdb": self.tvdb_id, "imdb": self.imdb_id}
        named = " ".join(f"{k}={v}" for k, v in ids.items() if v)
        episodes = " ".join(f"S{s:02d}E{e:02d}" for s, e in self.episodes)
        return " ".join(filter(None, (self.service, self.kind, named, episodes)))

    def same_item(self, other: RemovalCheck) -> bool:
        """Both name the same series or movie of the same arr (by arr id, else by a shared external id)."""
        if self.service != other.service:
            return False
        if self.arr_id and other.arr_id:
            return self.arr_id == other.arr_id
        pairs = ((self.tmdb_id, other.tmdb_id), (self.tvdb_id, other.tvdb_id), (self.imdb_id, other.imdb_id))
        return any(mine and mine == theirs for mine, theirs in pairs)


@dataclass(frozen=True)
class Candidates:
    """The rows one check is about (`targets`), their seasons (`parents`, episode files only) and the rows
    below the targets or parents (`below`)."""

    targets: list[StoredItem]
    parents: list[StoredItem] = field(default_factory=list)
    below: list[StoredItem] = field(default_factory=list)


@dataclass
class RemovalReport:
    """What a run of checks did; `table()` is the rows of the run's artifact."""

    removed: list[dict[str, Any]] = field(default_factory=list)
    still_in_plex: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def table(self) -> list[dict[str, Any]]:
        return self.removed or [{"rating_key": "", "type": "", "title": "nothing removed", "reason": ""}]


def drop_reimported(checks: Sequence[RemovalCheck], imports: Iterable[RemovalCheck]) -> list[RemovalCheck]:
    """Drop the checks whose item was imported again in the same window: a delete followed by a download
    of the same movie or episode is an upgrade. `imports` name the downloads' items the same way (a
    `series` import, with no episodes, stands for every episode of it)."""
    imported = list(imports)

    def covers(other: RemovalCheck, check: RemovalCheck) -> bool:
        if not check.same_item(other):
            return False
        if check.kind == "series":  # one episode imported again does not bring a deleted series back
            return other.kind == "series"
        return check.kind == "movie" or not other.episodes or set(check.episodes) <= set(other.episodes)

    return [check for check in checks if not any(covers(other, check) for other in imported)]


def plex_verdict(item: dict[str, Any]) -> Verdict:
    """`trashed` when Plex keeps the item only in its trash, else `present`."""
    return "trashed" if in_trash(item) else "present"


def decide(planned: Sequence[tuple[str, Candidates]], verdicts: dict[str, Verdict]) -> dict[str, str]:
    """The rows to remove for all checks of a run (kind and candidates each), rating key → reason. Only
    `gone` and `trashed` remove a target; seasons are judged on what all checks together remove."""
    remove = {
        t.rating_key: f"Plex: {verdicts[t.rating_key]}"
        for _, candidates in planned
        for t in candidates.targets
        if verdicts.get(t.rating_key) in ("gone", "trashed")
    }
    for kind, candidates in planned:
        if kind != "series":
            continue
        for row in candidates.below:
            if {row.parent_rating_key, row.grandparent_rating_key} & remove.keys():
                remove[row.rating_key] = "below a show Plex no longer has"
    for kind, candidates in planned:
        if kind != "episode_file":
            continue
        for season in candidates.parents:
            left = [r for r in candidates.below if r.parent_rating_key == season.rating_key]
            if verdicts.get(season.rating_key) == "gone" and all(r.rating_key in remove for r in left):
                remove[season.rating_key] = "season Plex no longer has, no episode left"
    return remove


def find_candidates(conn: Connection, server_id: str, check: RemovalCheck) -> Candidates:
    ids = {"tmdb_id": check.tmdb_id, "tvdb_id": check.tvdb_id, "imdb_id": check.imdb_id}
    if check.kind == "movie":
        return Candidates(find_by_ids(conn, server_id, "movie", radarr_movie_id=check.arr_id, **ids))
    shows = find_by_ids(conn, server_id, "show", sonarr_series_id=check.arr_id, **ids)
    show_keys = {s.rating_key for s in shows}
    if check.kind == "series":
        return Candidates(shows, below=find_children(conn, server_id, show_keys))
    episodes = find_episodes(conn, server_id, show_keys, check.episodes)
    season_keys = {e.parent_rating_key for e in episodes if e.parent_rating_key}
    seasons = [s for s in find_children(conn, server_id, show_keys) if s.rating_key in season_keys]
    return Candidates(episodes, parents=seasons, below=find_children(conn, server_id, season_keys))


def ask_plex(
    client: PlexClient, rating_keys: Sequence[str], batch_size: int = BATCH_SIZE
) -> tuple[dict[str, Verdict], list[str]]:
    """A verdict per rating key, and the errors met. Keys a 200 left out are asked again on their own
    batch; a 404 makes every key of its batch `gone`; an error makes them `unknown`."""
    verdicts: dict[str, Verdict] = {}
    errors: list[str] = []
    pending = [list(rating_keys[i : i + batch_size]) for i in range(0, len(rating_keys), batch_size)]
    while pending:
        batch = pending.pop()
        try:
            found = client.metadata(batch)
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


def check_removals(
    client: PlexClient,
    engine: Engine,
    server_id: str,
    checks: Sequence[RemovalCheck],
    *,
    batch_size: int = BATCH_SIZE,
) -> RemovalReport:
    """Run the checks against Plex server `server_id` (its machineIdentifier) and remove what Plex no
    longer has, in one transaction. Errors from Plex are reported, never raised: the caller decides
    whether a run with `errors` should fail (and be retried)."""
    report = RemovalReport()
    requests_before = client.requests_made
    planned: list[tuple[RemovalCheck, Candidates]] = []
    with engine.connect() as conn:
        for check in checks:
            if check.upgrade:
                report.skipped.append(f"{check.label}: an upgrade, nothing to remove")
                continue
            candidates = find_candidates(conn, server_id, check)
            if candidates.targets:
                planned.append((check, candidates))
            else:
                report.skipped.append(f"{check.label}: no row on server {server_id}")
    asked = list(dict.fromkeys(r.rating_key for _, c in planned for r in (*c.targets, *c.parents)))
    verdicts, report.errors = ask_plex(client, asked, batch_size)
    reasons = decide([(check.kind, candidates) for check, candidates in planned], verdicts)
    with engine.begin() as conn:
        removed = remove_items(conn, server_id, reasons)
    report.removed = [{**asdict(row), "reason": reasons[row.rating_key]} for row in removed]
    targets = [t.rating_key for _, c in planned for t in c.targets]
    report.still_in_plex = [k for k in dict.fromkeys(targets) if verdicts.get(k) == "present"]
    report.unanswered = [k for k in asked if verdicts.get(k) == "unknown"]
    report.requests = client.requests_made - requests_before
    return report
