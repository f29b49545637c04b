"""The truth behind the Plex simulator: sections, movies, shows, seasons and episodes, generated from a
seed and mutated by tests (add, new season, upgrade, delete, files deleted on disk, scan, empty trash,
unmount). No I/O.

Deletions follow Plex's documented behaviour (support article "Library" settings, "Empty trash
automatically after every scan", on by default):
- `delete` is Plex deleting an item itself (Plex Web's Delete): it is gone at once, children included.
- `delete_files` is a file deleted on disk (Sonarr/Radarr, a user): Plex notices nothing and keeps
  listing the item, unchanged, until it scans the folder.
- `scan` (a whole section, or a partial scan of one folder) puts the items whose every file is gone in
  the trash: they stay listed, marked with `deletedAt`, and their parts are neither `exists` nor
  `accessible`. With `empty_trash_after_scan` (the default) the scan then empties the trash.
- `empty_trash` (`PUT /library/sections/{id}/emptyTrash`) removes the trashed items, then the seasons
  and shows left with no children; from then on `/library/metadata/{key}` answers 404.

Times are unix seconds on a logical clock: every mutation advances it by `tick` seconds, so an item
changed by a later mutation always has a strictly larger `updatedAt`, and `updatedAt >= addedAt` holds
for every item as it does on a real Plex Media Server.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MOVIE, SHOW, SEASON, EPISODE = "movie", "show", "season", "episode"
TYPE_NUMBERS = {MOVIE: 1, SHOW: 2, SEASON: 3, EPISODE: 4}
SECTION_TYPES = {MOVIE: (MOVIE,), SHOW: (SHOW, SEASON, EPISODE)}

_WORDS = [
    "Silent",
    "Harbor",
    "Iron",
    "Garden",
    "Midnight",
    "Crimson",
    "River",
    "Echo",
    "Glass",
    "Winter",
    "Hollow",
    "Signal",
    "Paper",
    "Atlas",
    "Velvet",
    "Storm",
    "Northern",
    "Lantern",
    "Broken",
    "Compass",
    "Golden",
    "Orbit",
    "Quiet",
    "Fox",
    "Distant",
    "Thunder",
    "Salt",
    "Ember",
]
_RESOLUTIONS = ("sd", "720", "1080", "4k")
_GENRES = ("Drama", "Comedy", "Action", "Thriller", "Documentary", "Animation", "Science Fiction", "Romance")
_CODECS = ("h264", "hevc", "mpeg4", "av1")
_AUDIO = ("aac", "ac3", "eac3", "dts", "truehd")
_CONTAINERS = ("mkv", "mp4", "avi")


@dataclass
class Part:
    file: str
    size: int
    duration: int
    container: str
    on_disk: bool = True  # False once the file was deleted on disk (Plex learns it when it scans)

    def to_json(self, part_id: int, *, trashed: bool, check_files: bool) -> dict[str, Any]:
        """A trashed item's parts say they are neither there nor playable; `checkFiles=1` makes PMS look
        at the disk for every part."""
        data: dict[str, Any] = {
            "id": part_id,
            "key": f"/library/parts/{part_id}/{self.size}/file.{self.container}",
            "file": self.file,
            "size": self.size,
            "duration": self.duration,
            "container": self.container,
        }
        if trashed or check_files:
            data.update(exists=self.on_disk, accessible=self.on_disk)
        return data


@dataclass
class Media:
    video_resolution: str
    video_codec: str
    audio_codec: str
    container: str
    bitrate: int
    parts: list[Part]

    def to_json(self, media_id: int, *, trashed: bool = False, check_files: bool = False) -> dict[str, Any]:
        return {
            "id": media_id,
            "duration": sum(p.duration for p in self.parts),
            "bitrate": self.bitrate,
            "videoResolution": self.video_resolution,
            "videoCodec": self.video_codec,
            "audioCodec": self.audio_codec,
            "container": self.container,
            "Part": [
                p.to_json(media_id * 10 + i, trashed=trashed, check_files=check_files)
                for i, p in enumerate(self.parts)
            ],
        }


@dataclass
class Item:
    rating_key: int
    type: str
    title: str
    section_id: int
    added_at: int
    updated_at: int
    year: int | None = None
    index: int | None = None  # season number of a season, episode number of an episode
    parent_key: int | None = None
    grandparent_key: int | None = None
    guid: str = ""
    guids: list[str] = field(default_factory=list)  # Guid[] ids: imdb://, tmdb://, tvdb://
    media: list[Media] = field(default_factory=list)
    deleted_at: int | None = None  # in Plex's trash since this time: listed, marked, not playable
    genres: tuple[str, ...] = ()  # Genre[] tags of a movie or show

    @property
    def files_gone(self) -> bool:
        """Every file of this item is gone from disk (a movie or episode; never a show or season)."""
        parts = [p for m in self.media for p in m.parts]
        return bool(parts) and not any(p.on_disk for p in parts)


@dataclass
class Section:
    key: int
    title: str
    type: str  # movie | show
    location: str
    created_at: int
    mounted: bool = True
    uuid: str = ""


def _genres_of(key: int) -> tuple[str, ...]:
    """One or two genres, from the rating key (not the seeded generator: libraries stay as they were)."""
    first = _GENRES[key % len(_GENRES)]
    second = _GENRES[(key // len(_GENRES)) % len(_GENRES)]
    return (first,) if first == second or key % 3 == 0 else (first, second)


class PlexLibrary:
    """A Plex server's library, held in memory. Rating keys are never reused, like Plex's."""

    def __init__(
        self,
        *,
        seed: int = 0,
        machine_identifier: str | None = None,
        friendly_name: str = "Simulated Plex",
        start_time: int = 1_700_000_000,
        tick: int = 1,
        empty_trash_after_scan: bool = True,
    ) -> None:
        self.rng = random.Random(seed)
        self.machine_identifier = machine_identifier or hashlib.sha1(f"plex-{seed}".encode()).hexdigest()
        self.friendly_name = friendly_name
        self.version = "1.41.3.9314-a0bfb8370"
        self.now = start_time
        self.tick = tick
        self.empty_trash_after_scan = empty_trash_after_scan  # Plex's setting; on by default
        self.sections: dict[int, Section] = {}
        self.items: dict[int, Item] = {}
        self._children: dict[int, list[int]] = {}
        self._next_key = 1000

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        *,
        seed: int = 0,
        movies: int = 100,
        shows: int = 10,
        seasons_per_show: int = 3,
        episodes_per_season: int = 8,
        machine_identifier: str | None = None,
        history_seconds: int = 5 * 365 * 86400,
        **options: Any,
    ) -> PlexLibrary:
        """A library with one movie section and one show section; past items spread over `history_seconds`."""
        library = cls(seed=seed, machine_identifier=machine_identifier, **options)
        movie_section = library.add_section("Movies", MOVIE)
        show_section = library.add_section("TV Shows", SHOW)
        start = library.now - history_seconds
        for _ in range(movies):
            library.add_movie(movie_section.key, at=library.rng.randint(start, library.now))
        for _ in range(shows):
            library.add_show(
                show_section.key,
                seasons=seasons_per_show,
                episodes=episodes_per_season,
                at=library.rng.randint(start, library.now),
            )
        return library

    def _clock(self, at: int | None) -> int:
        if at is not None:
            return at
        self.now += self.tick
        return self.now

    def _put(self, item: Item) -> Item:
        self.items[item.rating_key] = item
        if item.parent_key is not None:
            self._children.setdefault(item.parent_key, []).append(item.rating_key)
        return item

    def _key(self) -> int:
        self._next_key += 1
        return self._next_key

    def _title(self) -> str:
        return " ".join(self.rng.sample(_WORDS, self.rng.randint(1, 3)))

    def _media(self, path: str, duration_ms: int) -> list[Media]:
        """One Media, sometimes split into two Parts (cd1/cd2); rarely a second Media (another version)."""
        media = []
        for version in range(2 if self.rng.random() < 0.05 else 1):
            container = self.rng.choice(_CONTAINERS)
            part_count = 2 if self.rng.random() < 0.1 else 1
            parts = [
                Part(
                    file=f"{path}{f' - v{version}' if version else ''}{f' - cd{n + 1}' if part_count > 1 else ''}.{container}",
                    size=self.rng.randint(200_000_000, 40_000_000_000),
                    duration=duration_ms // part_count,
                    container=container,
                )
                for n in range(part_count)
            ]
            media.append(
                Media(
                    video_resolution=self.rng.choice(_RESOLUTIONS),
                    video_codec=self.rng.choice(_CODECS),
                    audio_codec=self.rng.choice(_AUDIO),
                    container=container,
                    bitrate=self.rng.randint(800, 60_000),
                    parts=parts,
                )
            )
        return media

    def add_section(self, title: str, type_: str) -> Section:
        if type_ not in SECTION_TYPES:
            raise ValueError(f"unknown section type {type_!r}")
        key = len(self.sections) + 1
        section = Section(
            key,
            title,
            type_,
            f"/data/{title.lower().replace(' ', '-')}",
            self.now,
            uuid=hashlib.sha1(f"{self.machine_identifier}-{key}".encode()).hexdigest(),
        )
        self.sections[key] = section
        return section

    def add_movie(self, section_id: int, *, at: int | None = None) -> Item:
        self._require_section(section_id, MOVIE)
        now = self._clock(at)
        key, title, year = self._key(), self._title(), self.rng.randint(1950, 2024)
        item = Item(key, MOVIE, title, section_id, now, now, year=year, genres=_genres_of(key))
        if self.rng.random() < 0.2:  # a legacy-agent movie: ids only in `guid`, no Guid[]
            item.guid = f"com.plexapp.agents.imdb://tt{key:07d}?lang=en"
        else:
            item.guid = f"plex://movie/{key:024x}"
            item.guids = [f"imdb://tt{key:07d}", f"tmdb://{key + 500_000}"]
        duration = self.rng.randint(80, 180) * 60_000
        item.media = self._media(f"{self.sections[section_id].location}/{title} ({year})/{title}", duration)
        return self._put(item)

    def add_show(
        self, section_id: int, *, seasons: int = 2, episodes: int = 6, at: int | None = None
    ) -> Item:
        self._require_section(section_id, SHOW)
        now = self._clock(at)
        key, title = self._key(), self._title()
        show = Item(
            key, SHOW, title, section_id, now, now, year=self.rng.randint(1990, 2024), genres=_genres_of(key)
        )
        legacy = self.rng.random() < 0.2
        if legacy:
            show.guid = f"com.plexapp.agents.thetvdb://{key + 70_000}?lang=en"
        else:
            show.guid = f"plex://show/{key:024x}"
            show.guids = [f"tvdb://{key + 70_000}", f"tmdb://{key + 900_000}", f"imdb://tt{key:07d}"]
        self._put(show)
        for _ in range(seasons):
            self._new_season(show, episodes, now)
        return show

    def add_season(self, show_key: int, *, episodes: int = 6, at: int | None = None) -> Item:
        """A new season of a show already in the library (what Overseerr misses, its issue #3276)."""
        show = self.items[show_key]
        if show.type != SHOW:
            raise ValueError(f"{show_key} is a {show.type}, not a show")
        return self._new_season(show, episodes, self._clock(at))

    def _new_season(self, show: Item, episodes: int, now: int) -> Item:
        number = 1 + max((s.index or 0 for s in self.children(show.rating_key)), default=0)
        legacy = show.guid.startswith("com.plexapp.agents")
        season = Item(
            self._key(), SEASON, f"Season {number}", show.section_id, now, now, year=show.year,
            index=number, parent_key=show.rating_key,
        )  # fmt: skip
        season.guid = (
            f"{show.guid.split('?')[0]}/{number}?lang=en"
            if legacy
            else f"plex://season/{season.rating_key:024x}"
        )
        self._put(season)
        location = self.sections[show.section_id].location
        for episode_number in range(1, episodes + 1):
            key = self._key()
            episode = Item(
                key, EPISODE, self._title(), show.section_id, now, now, year=show.year,
                index=episode_number, parent_key=season.rating_key, grandparent_key=show.rating_key,
            )  # fmt: skip
            if legacy:
                episode.guid = f"{show.guid.split('?')[0]}/{number}/{episode_number}?lang=en"
            else:
                episode.guid = f"plex://episode/{key:024x}"
                episode.guids = [f"tvdb://{key + 3_000_000}", f"imdb://tt{key + 9_000_000:07d}"]
            path = f"{location}/{show.title}/Season {number:02d}/{show.title} - s{number:02d}e{episode_number:02d}"
            episode.media = self._media(path, self.rng.randint(20, 60) * 60_000)
            self._put(episode)
        return season

    # -- mutations ------------------------------------------------------------------------------------

    def upgrade(self, rating_key: int) -> Item:
        """A better file replaces the old one: new size and resolution, `updatedAt` bumped."""
        item = self.items[rating_key]
        if not item.media:
            raise ValueError(f"{rating_key} is a {item.type}: it has no file to upgrade")
        item.updated_at = self._clock(None)
        media = item.media[0]
        media.video_resolution = "4k" if media.video_resolution != "4k" else "1080"
        media.video_codec = "hevc"
        for part in media.parts:
            part.size += self.rng.randint(1_000_000, 5_000_000_000)
        return item

    def delete(self, rating_key: int) -> list[int]:
        """Delete an item and everything below it; return the rating keys that went."""
        gone = [rating_key, *(c.rating_key for c in self.descendants(rating_key))]
        for key in gone:
            self._remove(key)
        self._clock(None)
        return gone

    def delete_files(self, rating_key: int) -> list[int]:
        """The files of an item (and of everything below it) are deleted on disk. Plex lists the items
        unchanged until it scans; return the keys of the movies/episodes whose files went."""
        touched = []
        for item in (self.items[rating_key], *self.descendants(rating_key)):
            for part in (p for m in item.media for p in m.parts):
                part.on_disk = False
            if item.media:
                touched.append(item.rating_key)
        return touched

    def scan(self, section_id: int, path: str | None = None) -> list[int]:
        """Plex scans a section, or only the folder `path` of it (a partial scan): items whose every file
        is gone go to the trash. Then, with `empty_trash_after_scan`, the trash is emptied. An unmounted
        section is not scanned. Return the keys put in the trash by this scan."""
        if not self.sections[section_id].mounted:
            return []
        now = self._clock(None)
        trashed = []
        for item in self.items.values():
            if item.section_id != section_id or item.deleted_at is not None or not item.files_gone:
                continue
            if path is None or any(p.file.startswith(path) for m in item.media for p in m.parts):
                item.deleted_at = now
                trashed.append(item.rating_key)
        if self.empty_trash_after_scan:
            self.empty_trash(section_id)
        return trashed

    def empty_trash(self, section_id: int) -> list[int]:
        """Remove the trashed items of a section, then the seasons and shows left without children, as
        Plex does; return the rating keys that went."""
        gone = [k for k, i in self.items.items() if i.section_id == section_id and i.deleted_at is not None]
        for key in gone:
            self._remove(key)
        for type_ in (SEASON, SHOW):
            empty = [
                k
                for k, i in self.items.items()
                if i.section_id == section_id and i.type == type_ and not self._children.get(k)
            ]
            for key in empty:
                self._remove(key)
            gone += empty
        return gone

    def _remove(self, key: int) -> None:
        item = self.items.pop(key)
        self._children.pop(key, None)
        if item.parent_key in self._children:
            self._children[item.parent_key].remove(key)

    def unmount(self, section_id: int) -> None:
        """The disk went away: the section is still listed but answers no items."""
        self.sections[section_id].mounted = False

    def mount(self, section_id: int) -> None:
        self.sections[section_id].mounted = True

    # -- queries --------------------------------------------------------------------------------------

    def _require_section(self, section_id: int, type_: str) -> None:
        section = self.sections.get(section_id)
        if section is None or section.type != type_:
            raise ValueError(f"section {section_id} is not a {type_} section")

    def children(self, rating_key: int) -> list[Item]:
        return sorted((self.items[k] for k in self._children.get(rating_key, ())), key=lambda i: i.index or 0)

    def descendants(self, rating_key: int) -> Iterator[Item]:
        for child in self.children(rating_key):
            yield child
            yield from self.descendants(child.rating_key)

    def section_items(self, section_id: int, type_: str) -> list[Item]:
        """What `/library/sections/{id}/all?type=` sees: nothing while the section is unmounted."""
        if not self.sections[section_id].mounted:
            return []
        return [i for i in self.items.values() if i.section_id == section_id and i.type == type_]

    def visible_items(self) -> Iterator[Item]:
        for item in self.items.values():
            if self.sections[item.section_id].mounted:
                yield item

    def available_items(self) -> Iterator[Item]:
        """What SmartPlex should hold: visible items, less those in the trash."""
        return (item for item in self.visible_items() if item.deleted_at is None)

    # -- JSON -----------------------------------------------------------------------------------------

    def to_json(
        self, item: Item, *, include_guids: bool, include_section: bool, check_files: bool = False
    ) -> dict[str, Any]:
        """`Metadata[]` entry as PMS answers it. Items listed by a section carry no librarySectionID
        (their MediaContainer does); `/library/metadata/{key}` items do. A trashed item carries its
        `deletedAt`."""
        data: dict[str, Any] = {
            "ratingKey": str(item.rating_key),
            "key": f"/library/metadata/{item.rating_key}"
            + ("/children" if item.type in (SHOW, SEASON) else ""),
            "guid": item.guid,
            "type": item.type,
            "title": item.title,
            "titleSort": item.title.removeprefix("The "),
            "addedAt": item.added_at,
            "updatedAt": item.updated_at,
        }
        if item.year is not None:
            data["year"] = item.year
        if item.index is not None:
            data["index"] = item.index
        if item.type == SEASON:
            show = self.items.get(item.parent_key or 0)
            data.update(parentRatingKey=str(item.parent_key), parentTitle=show.title if show else "")
        elif item.type == EPISODE:
            season = self.items.get(item.parent_key or 0)
            show = self.items.get(item.grandparent_key or 0)
            data.update(
                parentRatingKey=str(item.parent_key),
                grandparentRatingKey=str(item.grandparent_key),
                parentTitle=season.title if season else "",
                grandparentTitle=show.title if show else "",
                parentIndex=season.index if season else None,
            )
        if item.media:
            data["duration"] = sum(p.duration for p in item.media[0].parts)
            trashed = item.deleted_at is not None
            data["Media"] = [
                m.to_json(item.rating_key * 10 + n, trashed=trashed, check_files=check_files)
                for n, m in enumerate(item.media)
            ]
        if item.deleted_at is not None:
            data["deletedAt"] = item.deleted_at
        if include_guids and item.guids:
            data["Guid"] = [{"id": g} for g in item.guids]
        if item.genres:
            data["Genre"] = [{"tag": genre} for genre in item.genres]
        if include_section:
            section = self.sections[item.section_id]
            data.update(
                librarySectionID=section.key,
                librarySectionTitle=section.title,
                librarySectionKey=f"/library/sections/{section.key}",
            )
        return data

    def section_json(self, section: Section) -> dict[str, Any]:
        agent, scanner = (
            ("tv.plex.agents.movie", "Plex Movie")
            if section.type == MOVIE
            else ("tv.plex.agents.series", "Plex TV Series")
        )
        updated = max((i.updated_at for i in self.items.values() if i.section_id == section.key), default=0)
        return {
            "allowSync": True,
            "key": str(section.key),
            "type": section.type,
            "title": section.title,
            "agent": agent,
            "scanner": scanner,
            "language": "en-US",
            "uuid": section.uuid,
            "refreshing": False,
            "createdAt": section.created_at,
            "updatedAt": max(updated, section.created_at),
            "scannedAt": self.now,
            "contentChangedAt": self.now,
            "Location": [{"id": section.key, "path": section.location}],
        }
