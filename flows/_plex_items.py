"""Plex JSON → `media_items` rows, and the other pure decisions of the library sync. No I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smartplex_sync.requests import PlexLibrarySync

# Legacy agents keep the id in `guid`; a path after the id (`thetvdb://81189/1/2`) means the id belongs to
# the show, not to this season or episode, so it is not taken as the item's own id.
_LEGACY = re.compile(
    r"^com\.plexapp\.agents\.(?P<agent>imdb|themoviedb|thetvdb|tmdb|tvdb)://(?P<id>[^/?]+)(?P<rest>[^?]*)"
)
_LEGACY_KINDS = {"imdb": "imdb", "themoviedb": "tmdb", "tmdb": "tmdb", "thetvdb": "tvdb", "tvdb": "tvdb"}
_SECTION_CHILD_TYPES = {"movie": ("movie",), "show": ("show", "season", "episode")}


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
    elif value.isdigit():
        ids[column] = int(value)


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value not in (None, "") else None


def _int(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def to_row(item: dict[str, Any], server_id: str, section: SectionInfo | None = None) -> dict[str, Any]:
    """One `media_items` row (Plex-owned columns only) for one movie, show, season or episode.

    `section` is the section being listed (its items carry no librarySectionID); without it the
    item's own librarySection* fields, present on `/library/metadata`, are used.
    """
    type_ = item["type"]
    media = item.get("Media") or []
    parts = [part for m in media for part in m.get("Part") or ()]
    first = media[0] if media else {}
    sizes = [int(p["size"]) for p in parts if p.get("size") is not None]
    row: dict[str, Any] = {
        "server_id": server_id,
        "rating_key": str(item["ratingKey"]),
        "type": type_,
        "title": str(item.get("title") or ""),
        "year": _int(item.get("year")),
        "show_title": None,
        "season_title": None,
        "season_number": None,
        "episode_number": None,
        "parent_rating_key": _str(item.get("parentRatingKey")),
        "grandparent_rating_key": _str(item.get("grandparentRatingKey")),
        "section_id": section.id if section else _int(item.get("librarySectionID")),
        "section_title": section.title if section else _str(item.get("librarySectionTitle")),
        "section_type": section.type if section else ("movie" if type_ == "movie" else "show"),
        "guid": _str(item.get("guid")),
        **external_ids(item),
        "file_size_bytes": sum(sizes) if sizes else None,
        "duration_ms": _int(item.get("duration")),
        "video_resolution": _str(first.get("videoResolution")),
        "video_codec": _str(first.get("videoCodec")),
        "audio_codec": _str(first.get("audioCodec")),
        "container": _str(first.get("container")),
        "bitrate_kbps": _int(first.get("bitrate")),
        "file_path": _str(parts[0].get("file")) if parts else None,
        "added_at": _time(item.get("addedAt")),
        "updated_at": _time(item.get("updatedAt")),
    }
    if type_ == "season":
        row.update(show_title=_str(item.get("parentTitle")), season_title=row["title"])
        row["season_number"] = _int(item.get("index"))
    elif type_ == "episode":
        row.update(show_title=_str(item.get("grandparentTitle")), season_title=_str(item.get("parentTitle")))
        row.update(season_number=_int(item.get("parentIndex")), episode_number=_int(item.get("index")))
    return row


def latest_change(items: Iterable[dict[str, Any]]) -> int | None:
    """The newest addedAt/updatedAt among `items` (unix s): the next watermark, in the server's own clock."""
    stamps = [int(v) for item in items for v in (item.get("addedAt"), item.get("updatedAt")) if v is not None]
    return max(stamps, default=None)


def choose_sections(
    directories: list[dict[str, Any]], request: PlexLibrarySync
) -> tuple[list[SectionInfo], list[int]]:
    """The movie and show sections a run syncs: every one (`all_sections`), else those with the given ids
    and those of the given types, each once and in the server's order. Never by title (titles are not
    unique and change). Returns them and the requested ids the server has no such section for."""
    sections = [SectionInfo.from_directory(d) for d in directories if d.get("type") in _SECTION_CHILD_TYPES]
    known = {s.id for s in sections}
    unknown = [i for i in request.section_ids if i not in known]
    if request.all_sections:
        return sections, unknown
    chosen = [s for s in sections if s.id in request.section_ids or s.type in request.section_types]
    return chosen, unknown
