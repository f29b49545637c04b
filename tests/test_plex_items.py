"""The pure half of the Plex sync: item JSON → media_items rows, section choice, watermarks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from flows._plex_items import SectionInfo, choose_sections, external_ids, latest_change, to_row
from smartplex_sync.requests import PlexLibrarySync

MOVIES = SectionInfo(1, "Movies", "movie")
SHOWS = SectionInfo(2, "TV Shows", "show")

EPISODE: dict[str, Any] = {
    "ratingKey": "4021",
    "key": "/library/metadata/4021",
    "guid": "plex://episode/5d9c",
    "type": "episode",
    "title": "Pilot",
    "grandparentTitle": "The Show",
    "parentTitle": "Season 2",
    "index": 3,
    "parentIndex": 2,
    "parentRatingKey": "4000",
    "grandparentRatingKey": "3999",
    "year": 2019,
    "duration": 2_700_000,
    "addedAt": 1_700_000_000,
    "updatedAt": 1_700_000_500,
    "Guid": [{"id": "imdb://tt7654321"}, {"id": "tmdb://99"}, {"id": "tvdb://12345"}],
    "Media": [
        {
            "videoResolution": "1080",
            "videoCodec": "h264",
            "audioCodec": "eac3",
            "container": "mkv",
            "bitrate": 8000,
            "Part": [
                {"file": "/tv/The Show/s02e03 - cd1.mkv", "size": 1_000, "duration": 1, "container": "mkv"},
                {"file": "/tv/The Show/s02e03 - cd2.mkv", "size": 2_000, "duration": 1, "container": "mkv"},
            ],
        },
        {
            "videoResolution": "4k",
            "videoCodec": "hevc",
            "container": "mp4",
            "Part": [{"file": "/tv/4k/s02e03.mp4", "size": 30_000}],
        },
    ],
}


def test_episode_row_has_show_season_numbers_ids_and_all_parts_summed() -> None:
    row = to_row(EPISODE, "server-a", SHOWS)
    assert row["server_id"] == "server-a" and row["rating_key"] == "4021" and row["type"] == "episode"
    assert (row["show_title"], row["season_title"], row["season_number"], row["episode_number"]) == (
        "The Show",
        "Season 2",
        2,
        3,
    )
    assert (row["parent_rating_key"], row["grandparent_rating_key"]) == ("4000", "3999")
    assert (row["section_id"], row["section_title"], row["section_type"]) == (2, "TV Shows", "show")
    assert (row["tmdb_id"], row["tvdb_id"], row["imdb_id"]) == (99, 12345, "tt7654321")
    assert row["file_size_bytes"] == 33_000  # every part of every media
    assert row["file_path"] == "/tv/The Show/s02e03 - cd1.mkv"  # the first part of the first media
    assert (row["video_resolution"], row["video_codec"], row["audio_codec"], row["container"]) == (
        "1080",
        "h264",
        "eac3",
        "mkv",
    )
    assert (row["bitrate_kbps"], row["duration_ms"]) == (8000, 2_700_000)
    assert row["added_at"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert row["updated_at"] is not None and row["updated_at"].utcoffset() is not None


def test_season_and_show_rows_have_no_file() -> None:
    season = {"ratingKey": 4000, "type": "season", "title": "Season 2", "index": 2, "parentTitle": "The Show",
              "parentRatingKey": "3999", "addedAt": 1, "updatedAt": 2}  # fmt: skip
    row = to_row(season, "s", SHOWS)
    assert (row["rating_key"], row["show_title"], row["season_title"], row["season_number"]) == (
        "4000",
        "The Show",
        "Season 2",
        2,
    )
    assert row["episode_number"] is None and row["file_size_bytes"] is None and row["file_path"] is None
    show = to_row({"ratingKey": "3999", "type": "show", "title": "The Show", "year": 2018}, "s", SHOWS)
    assert (show["type"], show["year"], show["show_title"], show["added_at"]) == ("show", 2018, None, None)


@pytest.mark.parametrize(
    ("guid", "expected"),
    [
        ("com.plexapp.agents.imdb://tt0111161?lang=en", (None, None, "tt0111161")),
        ("com.plexapp.agents.themoviedb://278?lang=en", (278, None, None)),
        ("com.plexapp.agents.thetvdb://81189?lang=en", (None, 81189, None)),
        # the id of a legacy season or episode guid is the show's: not the item's own id
        ("com.plexapp.agents.thetvdb://81189/1/2?lang=en", (None, None, None)),
        ("com.plexapp.agents.hama://anidb-123?lang=en", (None, None, None)),
        ("plex://movie/5d776825880197001ec967c6", (None, None, None)),
    ],
)
def test_ids_from_legacy_guid_strings(guid: str, expected: tuple[Any, ...]) -> None:
    ids = external_ids({"guid": guid})
    assert (ids["tmdb_id"], ids["tvdb_id"], ids["imdb_id"]) == expected


def test_guid_array_wins_and_junk_is_ignored() -> None:
    item = {
        "guid": "com.plexapp.agents.themoviedb://1?lang=en",
        "Guid": [{"id": "tmdb://2"}, {"id": "tvdb://not-a-number"}, {"id": "anidb://7"}, {}],
    }
    assert external_ids(item) == {"tmdb_id": 2, "tvdb_id": None, "imdb_id": None}


def test_item_from_metadata_endpoint_carries_its_own_section() -> None:
    item = {
        "ratingKey": "7",
        "type": "movie",
        "title": "M",
        "librarySectionID": 5,
        "librarySectionTitle": "4K",
    }
    row = to_row(item, "s")
    assert (row["section_id"], row["section_title"], row["section_type"]) == (5, "4K", "movie")


def test_latest_change_is_the_newest_added_or_updated_stamp() -> None:
    assert latest_change([{"addedAt": 5, "updatedAt": 9}, {"addedAt": 12}, {}]) == 12
    assert latest_change([]) is None


DIRECTORIES = [
    {"key": "1", "title": "Movies", "type": "movie"},
    {"key": "2", "title": "TV", "type": "show"},
    {"key": "3", "title": "Music", "type": "artist"},
    {"key": "4", "title": "Movies", "type": "movie"},  # the same title twice: ids, never titles
]


def chosen(**request: Any) -> tuple[list[int], list[int]]:
    sections, unknown = choose_sections(DIRECTORIES, PlexLibrarySync(**request))
    return [s.id for s in sections], unknown


def test_sections_by_id_by_type_or_all_video_sections() -> None:
    assert chosen(section_ids=[4, 2, 4]) == ([2, 4], [])
    assert chosen(section_types=["movie"]) == ([1, 4], [])
    assert chosen(section_ids=[2], section_types=["movie"]) == ([1, 2, 4], [])  # a merged request: both
    assert chosen() == ([1, 2, 4], [])
    assert choose_sections(DIRECTORIES, PlexLibrarySync(section_types=["show"]))[0][0].item_types == (
        "show",
        "season",
        "episode",
    )
    assert chosen(section_ids=[3, 1]) == ([1], [3])  # not a movie or show section: reported, not synced
    with pytest.raises(ValueError, match="section_types"):
        PlexLibrarySync(section_types=["artist"])
