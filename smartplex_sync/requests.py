"""What a delivery asks each sync deployment to do, per Plex server. Pure: no I/O.

A source parser reads a delivery into `SyncRequest`s: one *scope* each (`PlexScope`, `TautulliScope`,
`SonarrScope`, `RadarrScope`, `OverseerrScope`), saying what to sync but not where. The gateway then
attributes the delivery to a SmartPlex user and their Plex servers (`servers.id`), and the request becomes
its deployment's parameters (`PlexLibrarySync`, ...): a scope per server. The dispatcher merges every
request waiting for one deployment into one, and the flow takes the merged model as its `request`
parameter (Prefect validates it).

`servers=None` means every server, with the scope a scheduled run has (`Scope.everything()`): what a run
started from the Prefect UI with default parameters does. A scope with nothing selected means everything
too: `PlexScope()` syncs every movie and show section, `SonarrScope()` reads every series from Sonarr.

Merging (`merge_requests`) is a union, server by server: sections, section types, rating keys, removal
checks, series, movies and Overseerr requests of all the requests, the broadest mode and the widest
Tautulli window. Where two deliveries name the same item (an Overseerr request approved, then available),
the later delivery's known fields win; so `merge_requests` orders the requests by delivery (`Stamp`)
before folding them, and the result depends only on what was asked, never on the order it was read in.
No item is ever dropped, with one exception that is the point of it: a removal check (Sonarr/Radarr
deleted an item) is dropped when a later delivery of the same merge imported the same item again (a
delete, then a download: an upgrade). Scopes of different servers never mix: a rating key of one server
means nothing on another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smartplex_sync.models import SERVICE_OF, Action, ArrItem, ArrService, Deployment, OverseerrRequest

Mode = Literal["incremental", "full"]
SectionType = Literal["movie", "show"]
Trigger = Literal["webhook", "scheduled", "manual"]
"""How a run came about; SmartPlex's `sync_events.trigger_type`."""
DEFAULT_HISTORY_DAYS = 7
ALL_HISTORY = 0
"""A Tautulli window of 0 days: every play (a first backfill)."""
"""The Tautulli window of a scheduled run, and of a delivery that names no item."""

Stamp = tuple[datetime, str, int]
"""Orders requests by delivery: (received_at, webhook_log id, position in the delivery)."""

T = TypeVar("T")


def _sorted_unique(values: Iterable[T]) -> list[T]:
    return sorted(set(values))  # type: ignore[type-var]


def _union_by(key: Callable[[T], Hashable], earlier: Sequence[T], later: Sequence[T]) -> list[T]:
    """Items of both, one per key; where both have one, the later's non-None fields override."""
    merged: dict[Hashable, T] = {key(item): item for item in earlier}
    for item in later:
        known = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}  # type: ignore[arg-type]
        previous = merged.get(key(item))
        merged[key(item)] = (
            dataclasses.replace(previous, **{k: v for k, v in known.items() if v is not None})  # type: ignore[type-var]
            if previous is not None
            else item
        )
    return [merged[k] for k in sorted(merged)]  # type: ignore[type-var]


class Scope(BaseModel):
    """What to sync on one server. Frozen, strict about unknown fields, mergeable."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    deployment: ClassVar[Deployment]

    def merge(self, later: Self) -> Self:
        """The union of `self` and `later`; for an item both name, `later`'s known fields win."""
        raise NotImplementedError

    @classmethod
    def everything(cls) -> Self:
        """What a scheduled run syncs."""
        return cls()

    @classmethod
    def by_hand(cls, full: bool) -> Self:
        """What `smartplex-sync sync <service> [--full]` syncs: a scheduled run's scope unless `full` says
        more."""
        return cls.everything()


class RemovalCheck(BaseModel):
    """One item a Sonarr/Radarr event names: what a delete asks Plex about, or what a Download imported.
    `movie` (Radarr), `series` (Sonarr SeriesDelete, or a Download that names no episode), `episode_file`
    (Sonarr: `episodes` holds the (season, episode) numbers of the file). Ids the arr does not know are
    None (it sends 0 or leaves them out)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: ArrService
    kind: Literal["movie", "series", "episode_file"]
    arr_id: int | None = None
    tmdb_id: int | None = None
    tvdb_id: int | None = None
    imdb_id: str | None = None
    episodes: tuple[tuple[int, int], ...] = ()

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

    def brought_back_by(self, imported: RemovalCheck) -> bool:
        """A later import of `imported` brings back what this check is about: the same movie, every
        episode of this file (an import that names no episode stands for all of them), or, for a series,
        the whole series again (one episode imported again does not bring a deleted series back)."""
        if not self.same_item(imported):
            return False
        if self.kind == "series":
            return imported.kind == "series"
        return self.kind == "movie" or not imported.episodes or set(self.episodes) <= set(imported.episodes)


def drop_reimported(checks: Sequence[RemovalCheck], imports: Iterable[RemovalCheck]) -> list[RemovalCheck]:
    """The checks whose item none of `imports` (later deliveries) brought back."""
    imported = list(imports)
    return [check for check in checks if not any(check.brought_back_by(other) for other in imported)]


def _canonical_checks(values: Iterable[RemovalCheck]) -> list[RemovalCheck]:
    return sorted(set(values), key=lambda check: check.model_dump_json())


class PlexScope(Scope):
    """Plex library → media_items on one server: sections (by id or by type, or all of them) and single
    items.

    `mode` applies to the sections: `incremental` lists what changed since the section's watermark,
    `full` lists everything and removes what Plex no longer has. `rating_keys` are synced item by item
    (with their seasons and episodes), in one request for all of them. `removal_checks` (Sonarr/Radarr
    deleted these items) ask Plex about each and remove the rows it no longer has, after the rest of the
    run. `imported` names what Sonarr/Radarr downloads imported: nothing is done with it but the merge,
    which drops the removal checks of earlier deliveries that these imports brought back. Selecting
    nothing (no section, type, key or check) selects every section.
    """

    deployment: ClassVar[Deployment] = Deployment.PLEX_LIBRARY_SYNC
    mode: Mode = "incremental"
    all_sections: bool = Field(False, description="Every movie and show section of the server.")
    section_ids: list[int] = Field(default_factory=list, description="Sections by librarySectionID.")
    section_types: list[SectionType] = Field(default_factory=list, description="Every section of a type.")
    rating_keys: list[str] = Field(default_factory=list, description="Single items (and their children).")
    removal_checks: list[RemovalCheck] = Field(
        default_factory=list, description="Items Sonarr/Radarr deleted: remove the rows Plex no longer has."
    )
    imported: list[RemovalCheck] = Field(
        default_factory=list, description="Items Sonarr/Radarr imported (cancel earlier removal checks)."
    )

    @model_validator(mode="before")
    @classmethod
    def _nothing_means_everything(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        selected = ("section_ids", "section_types", "rating_keys", "removal_checks")
        if data.get("all_sections") or not any(data.get(name) for name in selected):
            return {**data, "all_sections": True, "section_ids": [], "section_types": []}
        return data

    @field_validator("section_ids", "section_types", "rating_keys")
    @classmethod
    def _canonical(cls, values: list[Any]) -> list[Any]:
        return _sorted_unique(values)

    @field_validator("removal_checks", "imported")
    @classmethod
    def _canonical_checks(cls, values: list[RemovalCheck]) -> list[RemovalCheck]:
        return _canonical_checks(values)

    @classmethod
    def everything(cls) -> PlexScope:
        return cls(mode="full")

    @classmethod
    def by_hand(cls, full: bool) -> PlexScope:
        return cls(mode="full" if full else "incremental")

    def merge(self, later: PlexScope) -> PlexScope:
        """The union; `later`'s imports cancel `self`'s removal checks of the same item (never the
        reverse: an item deleted after it was imported is deleted)."""
        return PlexScope(
            mode="full" if "full" in (self.mode, later.mode) else "incremental",
            all_sections=self.all_sections or later.all_sections,
            section_ids=[*self.section_ids, *later.section_ids],
            section_types=[*self.section_types, *later.section_types],
            rating_keys=[*self.rating_keys, *later.rating_keys],
            removal_checks=[*drop_reimported(self.removal_checks, later.imported), *later.removal_checks],
            imported=[*self.imported, *later.imported],
        )

    @property
    def syncs_sections(self) -> bool:
        return self.all_sections or bool(self.section_ids or self.section_types)

    @property
    def mode_label(self) -> str:
        return self.mode if self.syncs_sections else "item" if self.rating_keys else "removal"


def _broadest_window(first: int | None, second: int | None) -> int | None:
    """Days of history: None asks for no window, 0 for all history, otherwise the larger wins."""
    if first is None or second is None:
        return second if first is None else first
    return 0 if 0 in (first, second) else max(first, second)


class TautulliScope(Scope):
    """Tautulli history → watch_history and play totals on one server: a window of days, and single items.

    `days` 0 is all history (a first backfill); None asks for no window. `rating_keys` fetch every play of
    those items in one request. With neither, the last DEFAULT_HISTORY_DAYS days.
    """

    deployment: ClassVar[Deployment] = Deployment.TAUTULLI_SYNC
    days: int | None = Field(None, ge=0, description="Plays of the last N days; 0 for all history.")
    rating_keys: list[str] = Field(default_factory=list, description="Every play of these items.")

    @model_validator(mode="before")
    @classmethod
    def _nothing_means_the_default_window(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("days") is None and not data.get("rating_keys"):
            return {**data, "days": DEFAULT_HISTORY_DAYS}
        return data

    @field_validator("rating_keys")
    @classmethod
    def _canonical(cls, values: list[str]) -> list[str]:
        return _sorted_unique(values)

    @classmethod
    def by_hand(cls, full: bool) -> TautulliScope:
        return cls(days=ALL_HISTORY if full else DEFAULT_HISTORY_DAYS)

    def merge(self, later: TautulliScope) -> TautulliScope:
        return TautulliScope(
            days=_broadest_window(self.days, later.days), rating_keys=[*self.rating_keys, *later.rating_keys]
        )

    @property
    def label(self) -> str:
        parts = []
        if self.days is not None:
            parts.append(f"last {self.days} days" if self.days else "all history")
        if self.rating_keys:
            shown = ", ".join(self.rating_keys[:5]) + (" …" if len(self.rating_keys) > 5 else "")
            parts.append(f"{len(self.rating_keys)} items ({shown})")
        return " and ".join(parts)


def _arr_key(item: ArrItem) -> int:
    return item.arr_id


def _merge_items(
    earlier: list[T] | None, later: list[T] | None, key: Callable[[T], Hashable]
) -> list[T] | None:
    """None (everything) absorbs any list; two lists unite by `key`."""
    if earlier is None or later is None:
        return None
    return _union_by(key, earlier, later)


class _ArrScope(Scope):
    """What sonarr-sync and radarr-sync share: one list of ArrItems (named `ITEMS`), None for everything."""

    ITEMS: ClassVar[str]
    SERVICE: ClassVar[ArrService]

    @field_validator("*")
    @classmethod
    def _canonical(cls, values: list[ArrItem] | None) -> list[ArrItem] | None:
        return None if values is None else _union_by(_arr_key, [], values)

    @property
    def items(self) -> list[ArrItem] | None:
        return getattr(self, self.ITEMS)

    def merge(self, later: Self) -> Self:
        return type(self)(**{self.ITEMS: _merge_items(self.items, later.items, _arr_key)})


class SonarrScope(_ArrScope):
    """Sonarr series → arr_items and media_items' sonarr_series_id: the series webhooks named (Sonarr is not
    called), or with `series` None every series Sonarr has."""

    deployment: ClassVar[Deployment] = Deployment.SONARR_SYNC
    ITEMS: ClassVar[str] = "series"
    SERVICE: ClassVar[ArrService] = "sonarr"
    series: list[ArrItem] | None = Field(None, description="None: every series Sonarr has.")


class RadarrScope(_ArrScope):
    """Radarr movies → arr_items and media_items' radarr_movie_id: the movies webhooks named (Radarr is not
    called), or with `movies` None every movie Radarr has."""

    deployment: ClassVar[Deployment] = Deployment.RADARR_SYNC
    ITEMS: ClassVar[str] = "movies"
    SERVICE: ClassVar[ArrService] = "radarr"
    movies: list[ArrItem] | None = Field(None, description="None: every movie Radarr has.")


def _request_key(request: OverseerrRequest) -> int:
    return request.request_id


class OverseerrScope(Scope):
    """Overseerr requests → SmartPlex's overseerr_requests: the requests webhooks named, with what they
    told (Overseerr is not called), or with `requests` None every request Overseerr has."""

    deployment: ClassVar[Deployment] = Deployment.OVERSEERR_SYNC
    requests: list[OverseerrRequest] | None = Field(None, description="None: every request Overseerr has.")

    @field_validator("requests")
    @classmethod
    def _canonical(cls, values: list[OverseerrRequest] | None) -> list[OverseerrRequest] | None:
        return None if values is None else _union_by(_request_key, [], values)

    def merge(self, later: OverseerrScope) -> OverseerrScope:
        return OverseerrScope(requests=_merge_items(self.requests, later.requests, _request_key))


S = TypeVar("S", bound=Scope)


class SyncParameters(BaseModel, Generic[S]):
    """A sync deployment's parameters: what to sync on each Plex server (`servers`, by `servers.id`), or
    `None`: every server, everything (`Scope.everything()`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    deployment: ClassVar[Deployment]
    SCOPE: ClassVar[type[Scope]]
    servers: dict[UUID, S] | None = Field(
        None, description="What to sync on each Plex server (SmartPlex's servers.id); null: every server."
    )

    @field_validator("servers")
    @classmethod
    def _in_order(cls, servers: dict[UUID, S] | None) -> dict[UUID, S] | None:
        return None if servers is None else dict(sorted(servers.items()))

    @classmethod
    def on(cls, server_ids: Iterable[UUID], scope: Scope) -> Self:
        """`scope` on each of these servers."""
        if not isinstance(scope, cls.SCOPE):
            raise TypeError(f"{cls.__name__} takes a {cls.SCOPE.__name__}, not {type(scope).__name__}")
        return cls(servers=dict.fromkeys(server_ids, scope))

    @classmethod
    def scheduled(cls, server_ids: Iterable[UUID]) -> Self:
        """What a scheduled run of these servers syncs."""
        return cls.on(server_ids, cls.SCOPE.everything())

    def merge(self, later: Self) -> Self:
        """Server by server, the union of both (None, every server and everything, absorbs the rest)."""
        if self.servers is None or later.servers is None:
            return type(self)(servers=None)
        merged = dict(self.servers)
        for server_id, scope in later.servers.items():
            merged[server_id] = merged[server_id].merge(scope) if server_id in merged else scope
        return type(self)(servers=merged)

    def scope_for(self, server_id: UUID) -> S:
        """The scope of one server (every server's is everything when `servers` is None)."""
        if self.servers is None:
            return self.SCOPE.everything()  # type: ignore[return-value]
        return self.servers[server_id]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class PlexLibrarySync(SyncParameters[PlexScope]):
    """plex-library-sync's parameters: a `PlexScope` per server."""

    deployment: ClassVar[Deployment] = Deployment.PLEX_LIBRARY_SYNC
    SCOPE: ClassVar[type[Scope]] = PlexScope


class TautulliSync(SyncParameters[TautulliScope]):
    """tautulli-sync's parameters: a `TautulliScope` per server."""

    deployment: ClassVar[Deployment] = Deployment.TAUTULLI_SYNC
    SCOPE: ClassVar[type[Scope]] = TautulliScope


class SonarrSync(SyncParameters[SonarrScope]):
    """sonarr-sync's parameters: a `SonarrScope` per server."""

    deployment: ClassVar[Deployment] = Deployment.SONARR_SYNC
    SCOPE: ClassVar[type[Scope]] = SonarrScope


class RadarrSync(SyncParameters[RadarrScope]):
    """radarr-sync's parameters: a `RadarrScope` per server."""

    deployment: ClassVar[Deployment] = Deployment.RADARR_SYNC
    SCOPE: ClassVar[type[Scope]] = RadarrScope


class OverseerrSync(SyncParameters[OverseerrScope]):
    """overseerr-sync's parameters: an `OverseerrScope` per server."""

    deployment: ClassVar[Deployment] = Deployment.OVERSEERR_SYNC
    SCOPE: ClassVar[type[Scope]] = OverseerrScope


PARAMETERS: dict[Deployment, type[SyncParameters[Any]]] = {
    model.deployment: model
    for model in (PlexLibrarySync, TautulliSync, SonarrSync, RadarrSync, OverseerrSync)
}
"""The parameter model of every sync deployment."""

if set(PARAMETERS) != set(SERVICE_OF):
    raise RuntimeError("every service's deployment needs its SyncParameters model, and only those")


def merge_requests(requests: Iterable[tuple[Stamp, SyncParameters[Any]]]) -> SyncParameters[Any]:
    """One deployment's requests as one: folded in delivery order, so later deliveries win per item."""
    ordered = sorted(requests, key=lambda stamped: stamped[0])
    if not ordered:
        raise ValueError("nothing to merge")
    merged = ordered[0][1]
    for _, parameters in ordered[1:]:
        if type(parameters) is not type(merged):
            raise TypeError(f"cannot merge {type(parameters).__name__} into {type(merged).__name__}")
        merged = merged.merge(parameters)
    return merged


@dataclass(frozen=True)
class SyncRequest:
    """One deployment run a delivery asks for, before it is attributed to servers. `wait_for_plex_scan`
    holds it back SMARTPLEX_PLEX_SCAN_GRACE_SECONDS: Sonarr and Radarr post `Download` as soon as a file
    is imported, and Plex lists it only after its own scan."""

    scope: Scope
    wait_for_plex_scan: bool = False

    @property
    def deployment(self) -> Deployment:
        return self.scope.deployment

    def on(self, server_ids: Iterable[UUID]) -> ScopedRequest:
        """This request, on these servers."""
        return ScopedRequest(PARAMETERS[self.deployment].on(server_ids, self.scope), self.wait_for_plex_scan)


@dataclass(frozen=True)
class ScopedRequest:
    """A request attributed to its servers: the deployment's parameters, as queued and run."""

    parameters: SyncParameters[Any]
    wait_for_plex_scan: bool = False

    @property
    def deployment(self) -> Deployment:
        return self.parameters.deployment

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment.value,
            "parameters": self.parameters.to_json(),
            "wait_for_plex_scan": self.wait_for_plex_scan,
        }


@dataclass(frozen=True)
class ParsedDelivery:
    """What a source made of one delivery: its event name, the syncs it asks for, and the Plex server it
    names (`server_hint`: Plex's `Server.uuid`, Tautulli's `server_machine_id`), if any.

    `action` is set when it asks for none (ignored, recorded only, a test event).
    """

    event_type: str
    requests: tuple[SyncRequest, ...] = ()
    action: Action | None = None
    note: str | None = None
    server_hint: str | None = None

    def __post_init__(self) -> None:
        if not self.requests and self.action is None:
            raise ValueError("a delivery without sync requests needs an action")

    @property
    def action_label(self) -> str:
        if self.requests:
            return ",".join(dict.fromkeys(r.deployment.value for r in self.requests))
        assert self.action is not None
        return self.action.value
