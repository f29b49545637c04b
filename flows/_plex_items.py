"""Plex JSON → SmartPlex `media_items` rows, and the other pure decisions of the library sync. No I/O.

Rows are written as SmartPlex's own Plex sync writes them (apps/api `plex_sync.py`), on one row per
movie, show, season and episode:
- `type` from SmartPlex's `media_type` enum; `title` never empty (SmartPlex's CHECK); `year` only within
  SmartPlex's CHECK (1900 to 2100), else NULL;
- seasons and episodes carry their show's tmdb/tvdb/imdb ids and genres (SmartPlex's cascade deletion
  reads an episode's `tvdb_id` as its series', `get_unwatched_shows()` reports `MAX(tvdb_id)`);
- `parent_title` and `grandparent_title` of an episode are its show's title: SmartPlex's deletion code
  and admin page read `parent_title` as "TV show name for episodes", its `get_unwatched_shows()` groups
  on `grandparent_title`. A season's `parent_title` is its show's. The season's own title is in
  `metadata.plex_season_title`;
- `metadata.plex_added_at` is Plex's addedAt (ISO 8601, UTC offset included), which SmartPlex's deletion
  rule reads for its grace period; `added_at` holds the same moment;
- `accessible` is false while Plex keeps the item only in its trash (`deletedAt`, or every part neither
  `exists` nor `accessible`): SmartPlex's `inaccessible_files` lists it;
- `file_size_bytes` sums the parts, `file_size_mb` is it in MiB rounded to 2 places (SmartPlex's 009);
  the quality columns come from the first media and part (`extract_quality_metadata`);
- what only the sync needs is in `metadata` too: section id, parent and grandparent rating keys, guid,
  Plex's updatedAt.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from smartplex_sync.convert import blank_to_none, from_epoch
from smartplex_sync.requests import PlexScope
from smartplex_sync.store.media import GRANDPARENT_KEY, PARENT_KEY, SECTION_ID

# Legacy agents keep the id in `guid`; a path after the id (`thetvdb://81189/1/2`) means the id belongs to
# the show, not to this season or episode, so it is not taken as the item's own id.
_LEGACY = re.compile(
    r"^com\.plexapp\.agents\.(?P<agent>imdb|themoviedb|thetvdb|tmdb|tvdb)://(?P<id>[^/?]+)(?P<rest>[^?]*)"
)
_LEGACY_KINDS = {"imdb": "imdb", "themoviedb": "tmdb", "tmdb": "tmdb", "thetvdb": "tvdb", "tvdb": "tvdb"}
_SECTION_CHILD_TYPES = {"movie": ("movie",), "show": ("show", "season", "episode")}
_INT32 = 2**31 - 1  # SmartPlex's INTEGER columns
MIB = 1024 * 1024


@dataclass(frozen=True)
class SectionInfo:
    id: int
    title: str
    type: str  # movie | show

    @property
    def item_types(self) -> tuple[str, ...]:
        """The item types a sync of this section lists, parents before children."""
        return _SECTION_CHILD_TYPES[self.type]

    @classmethod
    def from_directory(cls, directory: dict[str, Any]) -> SectionInfo:
        return cls(int(directory["key"]), str(directory.get("title", "")), str(directory["type"]))

    @classmethod
    def of_item(cls, item: dict[str, Any]) -> SectionInfo:
        """The section of an item read from `/library/metadata`, which names it."""
        return cls(
            int(item["librarySectionID"]),
            str(item.get("librarySectionTitle", "")),
            "movie" if item["type"] == "movie" else "show",
        )


@dataclass(frozen=True)
class ShowInfo:
    """What seasons and episodes take from their show."""

    rating_key: str
    title: str
    ids: dict[str, Any]
    genres: tuple[str, ...]

    @classmethod
    def of(cls, show: dict[str, Any]) -> ShowInfo:
        return cls(str(show["ratingKey"]), str(show.get("title") or ""), external_ids(show), genres(show))


def external_ids(item: dict[str, Any]) -> dict[str, Any]:
    """tmdb_id, tvdb_id and imdb_id from `Guid[]` (new agents), else from a legacy `guid` string."""
    ids: dict[str, Any] = {"tmdb_id": None, "tvdb_id": None, "imdb_id": None}
    for guid in item.get("Guid") or ():
        kind, _, value = str(guid.get("id", "")).partition("://")
        _put(ids, kind, value)
    match = _LEGACY.match(item.get("guid") or "")
    if match and not match.group("rest"):
        _put(ids, _LEGACY_KINDS[match.group("agent")], match.group("id"))
    return ids


def _put(ids: dict[str, Any], kind: str, value: str) -> None:
    column = f"{kind}_id"
    if column not in ids or ids[column] is not None or not value:
        return
    if kind == "imdb":
        ids[column] = value
    elif value.isdigit() and int(value) <= _INT32:
        ids[column] = int(value)


def genres(item: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        str(tag["tag"]) for tag in item.get("Genre") or () if isinstance(tag, dict) and tag.get("tag")
    )


def _time(value: Any) -> datetime | None:
    return from_epoch(int(value)) if value not in (None, "") else None


def _iso(value: Any) -> str | None:
    moment = _time(value)
    return moment.isoformat() if moment else None


def _int(value: Any, limit: int = _INT32) -> int | None:
    if value in (None, ""):
        return None
    number = int(value)
    return number if 0 <= number <= limit else None


def _year(value: Any) -> int | None:
    year = _int(value)
    return year if year is not None and 1900 <= year <= 2100 else None


def in_trash(item: dict[str, Any]) -> bool:
    """Plex keeps the item only in its trash: it carries `deletedAt`, or every part of it is neither there
    (`exists`) nor playable (`accessible`)."""
    if item.get("deletedAt"):
        return True
    parts = [part for media in item.get("Media") or () for part in media.get("Part") or ()]
    return bool(parts) and all(p.get("exists") is False or p.get("accessible") is False for p in parts)


def show_key(item: dict[str, Any]) -> str | None:
    """The rating key of the show a season or episode belongs to."""
    if item["type"] == "season":
        return blank_to_none(item.get("parentRatingKey"))
    if item["type"] == "episode":
        return blank_to_none(item.get("grandparentRatingKey"))
    return None


def to_row(
    item: dict[str, Any], server_id: uuid.UUID, section: SectionInfo, show: ShowInfo | None = None
) -> dict[str, Any]:
    """One `media_items` row (the columns Plex owns) of a movie, show, season or episode. Seasons and
    episodes take their show's ids and genres from `show` (their own when it is not known)."""
    type_ = item["type"]
    key = str(item["ratingKey"])
    media = item.get("Media") or []
    parts = [part for m in media for part in m.get("Part") or ()]
    first = media[0] if media else {}
    sizes = [int(p["size"]) for p in parts if p.get("size") is not None]
    size = sum(sizes) if sizes else None
    inherits = type_ in ("season", "episode") and show is not None
    show_title = blank_to_none(item.get("parentTitle") if type_ == "season" else item.get("grandparentTitle"))
    metadata = {
        "plex_added_at": _iso(item.get("addedAt")),
        "plex_updated_at": _iso(item.get("updatedAt")),
        SECTION_ID: section.id,
        PARENT_KEY: blank_to_none(item.get("parentRatingKey")),
        GRANDPARENT_KEY: blank_to_none(item.get("grandparentRatingKey")),
        "plex_guid": blank_to_none(item.get("guid")),
    }
    if type_ == "episode":
        metadata["plex_season_title"] = blank_to_none(item.get("parentTitle"))
    # Unknown keys are left out rather than stored as null: SQLite's json_patch drops null members where
    # PostgreSQL's || keeps them, and both backends must hold the same rows.
    metadata = {name: value for name, value in metadata.items() if value is not None}
    row: dict[str, Any] = {
        "server_id": server_id,
        "plex_id": key,
        "type": type_,
        "title": str(item.get("title") or "").strip()
        or f"{type_.capitalize()} {blank_to_none(item.get('index')) or key}",
        "year": _year(item.get("year")),
        **(show.ids if inherits and show else external_ids(item)),
        "library_section": section.title,
        "file_path": blank_to_none(parts[0].get("file")) if parts else None,
        "file_size_bytes": size,
        "file_size_mb": round(size / MIB, 2) if size is not None else None,
        "duration_ms": _int(item.get("duration")),
        "added_at": _time(item.get("addedAt")),
        "metadata": metadata,
        "parent_title": show_title if type_ in ("season", "episode") else None,
        "grandparent_title": show_title if type_ == "episode" else None,
        "season_number": _int(item.get("index") if type_ == "season" else item.get("parentIndex"))
        if type_ in ("season", "episode")
        else None,
        "episode_number": _int(item.get("index")) if type_ == "episode" else None,
        "genres": list(show.genres if inherits and show else genres(item)),
        "video_resolution": blank_to_none(first.get("videoResolution")),
        "video_codec": blank_to_none(first.get("videoCodec")),
        "audio_codec": blank_to_none(first.get("audioCodec")),
        "container": blank_to_none(first.get("container")),
        "bitrate_kbps": _int(first.get("bitrate")),
        "accessible": not in_trash(item),
    }
    return row


def to_rows(
    items: list[dict[str, Any]], server_id: uuid.UUID, section: SectionInfo, shows: Mapping[str, ShowInfo]
) -> list[dict[str, Any]]:
    """The `media_items` rows of a page of items; `shows` (by rating key) are their seasons' and
    episodes' shows, as far as they are known."""
    return [to_row(item, server_id, section, shows.get(show_key(item) or "")) for item in items]


def latest_change(items: Iterable[dict[str, Any]]) -> int | None:
    """The newest addedAt/updatedAt among `items` (unix s): the next watermark, in the server's own clock."""
    stamps = [int(v) for item in items for v in (item.get("addedAt"), item.get("updatedAt")) if v is not None]
    return max(stamps, default=None)


def choose_sections(
    directories: list[dict[str, Any]], scope: PlexScope
) -> tuple[list[SectionInfo], list[int]]:
    """The movie and show sections a run syncs: every one (`all_sections`), else those with the given ids
    and those of the given types, each once and in the server's order. Never by title (titles are not
    unique and change). Returns them and the requested ids the server has no such section for."""
    sections = [SectionInfo.from_directory(d) for d in directories if d.get("type") in _SECTION_CHILD_TYPES]
    known = {s.id for s in sections}
    unknown = [i for i in scope.section_ids if i not in known]
    if scope.all_sections:
        return sections, unknown
    chosen = [s for s in sections if s.id in scope.section_ids or s.type in scope.section_types]
    return chosen, unknown
