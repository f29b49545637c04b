"""The pure half of the Plex sync: item JSON → SmartPlex's media_items rows, section choice, watermarks."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from flows._plex_items import (
    MIB,
    SectionInfo,
    ShowInfo,
    choose_sections,
    external_ids,
    in_trash,
    latest_change,
    show_key,
    to_row,
    to_rows,
)
from smartplex_sync.requests import PlexScope
from smartplex_sync.store.media import PLEX_COLUMNS

SERVER = uuid.UUID("00000000-0000-4000-8000-00000000000a")
MOVIES = SectionInfo(1, "Movies", "movie")
SHOWS = SectionInfo(2, "TV Shows", "show")

SHOW: dict[str, Any] = {
    "ratingKey": "3999",
    "type": "show",
    "title": "The Show",
    "year": 2018,
    "guid": "plex://show/5d9c",
    "Guid": [{"id": "imdb://tt1234567"}, {"id": "tmdb://1399"}, {"id": "tvdb://121361"}],
    "Genre": [{"tag": "Drama"}, {"tag": "Fantasy"}],
    "addedAt": 1_600_000_000,
    "updatedAt": 1_600_000_100,
}
SHOW_INFO = ShowInfo.of(SHOW)

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

SEASON: dict[str, Any] = {
    "ratingKey": 4000,
    "type": "season",
    "title": "Season 2",
    "index": 2,
    "parentTitle": "The Show",
    "parentRatingKey": "3999",
    "addedAt": 1,
    "updatedAt": 2,
}


def movie(**fields: Any) -> dict[str, Any]:
    return {"ratingKey": "7", "type": "movie", "title": "M", "addedAt": 1_700_000_000, **fields}


def test_a_row_sets_exactly_the_columns_plex_owns_and_its_metadata_is_json() -> None:
    for item, section, show in ((EPISODE, SHOWS, SHOW_INFO), (SEASON, SHOWS, SHOW_INFO), (SHOW, SHOWS, None),
                                (movie(), MOVIES, None)):  # fmt: skip
        row = to_row(item, SERVER, section, show)
        assert set(row) == set(PLEX_COLUMNS)
        json.dumps(row["metadata"])
        json.dumps(row["genres"])


def test_an_episode_row_is_smartplexs_shape_with_its_shows_ids_genres_and_title() -> None:
    row = to_row(EPISODE, SERVER, SHOWS, SHOW_INFO)
    assert (row["server_id"], row["plex_id"], row["type"], row["title"]) == (
        SERVER,
        "4021",
        "episode",
        "Pilot",
    )
    # SmartPlex reads an episode's parent_title as its show (deletion code, admin page), and groups
    # unwatched shows on grandparent_title: both are the show's title. The season's is in metadata.
    assert (row["parent_title"], row["grandparent_title"]) == ("The Show", "The Show")
    assert (row["season_number"], row["episode_number"]) == (2, 3)
    # The show's ids and genres, not the episode's own (SmartPlex reads an episode's tvdb_id as its series')
    assert (row["tmdb_id"], row["tvdb_id"], row["imdb_id"]) == (1399, 121361, "tt1234567")
    assert row["genres"] == ["Drama", "Fantasy"]
    assert row["library_section"] == "TV Shows"
    assert row["metadata"] == {
        "plex_added_at": "2023-11-14T22:13:20+00:00",
        "plex_updated_at": "2023-11-14T22:21:40+00:00",
        "plex_section_id": 2,
        "plex_parent_rating_key": "4000",
        "plex_grandparent_rating_key": "3999",
        "plex_guid": "plex://episode/5d9c",
        "plex_season_title": "Season 2",
    }
    assert row["added_at"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert datetime.fromisoformat(row["metadata"]["plex_added_at"]) == row["added_at"]  # the same moment
    assert row["file_size_bytes"] == 33_000  # every part of every media
    assert row["file_size_mb"] == 0.03
    assert row["file_path"] == "/tv/The Show/s02e03 - cd1.mkv"  # the first part of the first media
    assert (row["video_resolution"], row["video_codec"], row["audio_codec"], row["container"]) == (
        "1080",
        "h264",
        "eac3",
        "mkv",
    )
    assert (row["bitrate_kbps"], row["duration_ms"], row["year"]) == (8000, 2_700_000, 2019)
    assert row["accessible"] is True


def test_an_episode_whose_show_is_unknown_keeps_its_own_ids_and_genres() -> None:
    row = to_row({**EPISODE, "Genre": [{"tag": "Pilot episodes"}]}, SERVER, SHOWS)
    assert (row["tmdb_id"], row["tvdb_id"], row["imdb_id"]) == (99, 12345, "tt7654321")
    assert row["genres"] == ["Pilot episodes"]
    assert (row["parent_title"], row["grandparent_title"]) == ("The Show", "The Show")


def test_a_season_row_names_its_show_and_has_no_file() -> None:
    row = to_row(SEASON, SERVER, SHOWS, SHOW_INFO)
    assert (row["plex_id"], row["type"], row["title"]) == ("4000", "season", "Season 2")
    assert (row["parent_title"], row["grandparent_title"]) == ("The Show", None)
    assert (row["season_number"], row["episode_number"]) == (2, None)
    assert (row["tmdb_id"], row["tvdb_id"], row["genres"]) == (1399, 121361, ["Drama", "Fantasy"])
    assert row["metadata"]["plex_parent_rating_key"] == "3999" and "plex_season_title" not in row["metadata"]
    assert (row["file_size_bytes"], row["file_size_mb"], row["file_path"]) == (None, None, None)
    assert row["metadata"]["plex_added_at"] == "1970-01-01T00:00:01+00:00"


def test_a_show_row_has_its_own_ids_and_genres_and_no_parents() -> None:
    row = to_row(SHOW, SERVER, SHOWS)
    assert (row["type"], row["year"], row["parent_title"], row["grandparent_title"]) == (
        "show",
        2018,
        None,
        None,
    )
    assert (row["tmdb_id"], row["tvdb_id"], row["imdb_id"]) == (1399, 121361, "tt1234567")
    assert row["genres"] == ["Drama", "Fantasy"]
    assert (row["season_number"], row["episode_number"]) == (None, None)
    no_dates = to_row({"ratingKey": "1", "type": "show", "title": "S"}, SERVER, SHOWS)
    assert (
        no_dates["added_at"] is None and "plex_added_at" not in no_dates["metadata"]
    )  # absent, not null (see to_row)
    assert no_dates["genres"] == []


def test_show_info_is_what_seasons_and_episodes_take_from_their_show() -> None:
    ids = {"tmdb_id": 1399, "tvdb_id": 121361, "imdb_id": "tt1234567"}
    assert (SHOW_INFO.rating_key, SHOW_INFO.title, SHOW_INFO.ids, SHOW_INFO.genres) == (
        "3999",
        "The Show",
        ids,
        ("Drama", "Fantasy"),
    )
    assert (show_key(EPISODE), show_key(SEASON), show_key(SHOW), show_key(movie())) == (
        "3999",
        "3999",
        None,
        None,
    )


def test_genre_tags_without_a_tag_are_left_out() -> None:
    row = to_row(
        movie(Genre=[{"tag": "Comedy"}, {}, {"tag": ""}, "Drama", {"tag": "Romance"}]), SERVER, MOVIES
    )
    assert row["genres"] == ["Comedy", "Romance"]


@pytest.mark.parametrize(
    ("sizes", "mib"),
    [
        ([1_572_864_000], 1500.0),
        ([1_234_567_890], 1177.38),  # 1177.3756... MiB
        ([5_000], 0.0),
        ([MIB, MIB // 2], 1.5),  # the parts summed
        ([4_000_000_000_000], 3814697.27),  # a 4 TB remux: bigger than 32 bits
    ],
)
def test_file_size_mb_is_the_bytes_in_mib_rounded_to_two_places(sizes: list[int], mib: float) -> None:
    parts = [{"file": f"/m/{n}.mkv", "size": size} for n, size in enumerate(sizes)]
    row = to_row(movie(Media=[{"Part": parts}]), SERVER, MOVIES)
    assert (row["file_size_bytes"], row["file_size_mb"]) == (sum(sizes), mib)


def test_a_movie_without_sizes_has_no_size() -> None:
    row = to_row(movie(Media=[{"Part": [{"file": "/m/a.mkv"}]}]), SERVER, MOVIES)
    assert (row["file_path"], row["file_size_bytes"], row["file_size_mb"]) == ("/m/a.mkv", None, None)


@pytest.mark.parametrize(
    ("year", "stored"),
    [(1899, None), (1900, 1900), (1968, 1968), (2100, 2100), (2101, None), (0, None), (-5, None), ("", None),
     (None, None), ("2004", 2004)],
)  # fmt: skip
def test_a_year_outside_smartplexs_check_is_stored_as_none(year: Any, stored: int | None) -> None:
    assert to_row(movie(year=year), SERVER, MOVIES)["year"] == stored


@pytest.mark.parametrize(
    ("item", "title"),
    [
        (movie(title=""), "Movie 7"),
        (movie(title="   "), "Movie 7"),
        ({k: v for k, v in movie().items() if k != "title"}, "Movie 7"),
        (movie(title="  Heat "), "Heat"),
        ({**EPISODE, "title": ""}, "Episode 3"),
        ({**SEASON, "title": None}, "Season 2"),
        ({**SEASON, "title": "", "index": 0}, "Season 0"),  # Specials: index 0 is still its number
        ({"ratingKey": "12", "type": "show", "title": ""}, "Show 12"),
    ],
)
def test_an_empty_title_gets_a_fallback(item: dict[str, Any], title: str) -> None:
    """SmartPlex's CHECK (length(title) >= 1) refuses an empty title."""
    assert to_row(item, SERVER, SHOWS if item["type"] != "movie" else MOVIES, SHOW_INFO)["title"] == title


def part(**flags: Any) -> dict[str, Any]:
    return {"file": "/m/a.mkv", "size": 1, **flags}


@pytest.mark.parametrize(
    ("item", "trashed"),
    [
        (movie(Media=[{"Part": [part()]}]), False),
        (movie(deletedAt=1_700_000_100, Media=[{"Part": [part()]}]), True),
        (movie(Media=[{"Part": [part(exists=False, accessible=False)]}]), True),
        (
            movie(Media=[{"Part": [part(exists=False, accessible=False)]}, {"Part": [part(exists=True)]}]),
            False,
        ),
        (movie(Media=[{"Part": [part(exists=True, accessible=False)]}]), True),
        (movie(Media=[{"Part": [part(exists=True, accessible=True)]}]), False),
        (SHOW, False),  # no parts at all: not in the trash
        ({**SHOW, "deletedAt": 5}, True),
    ],
)
def test_an_item_plex_keeps_in_its_trash_is_an_inaccessible_row(item: dict[str, Any], trashed: bool) -> None:
    """Trashed items are rows with accessible = false (SmartPlex's inaccessible_files), never skipped."""
    assert in_trash(item) is trashed
    assert to_row(item, SERVER, MOVIES if item["type"] == "movie" else SHOWS)["accessible"] is (not trashed)


def test_numbers_beyond_smartplexs_integer_columns_are_left_out() -> None:
    item = movie(duration=2**31, Media=[{"bitrate": -1, "Part": [part()]}], Guid=[{"id": f"tmdb://{2**31}"}])
    row = to_row(item, SERVER, MOVIES)
    assert (row["duration_ms"], row["bitrate_kbps"], row["tmdb_id"]) == (None, None, None)
    assert external_ids({"Guid": [{"id": f"tvdb://{2**31 - 1}"}]})["tvdb_id"] == 2**31 - 1


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


def test_an_item_from_the_metadata_endpoint_carries_its_own_section() -> None:
    item = movie(librarySectionID=5, librarySectionTitle="4K")
    assert SectionInfo.of_item(item) == SectionInfo(5, "4K", "movie")
    row = to_row(item, SERVER, SectionInfo.of_item(item))
    assert (row["metadata"]["plex_section_id"], row["library_section"]) == (5, "4K")
    assert SectionInfo.of_item(
        {**EPISODE, "librarySectionID": "2", "librarySectionTitle": "TV"}
    ) == SectionInfo(2, "TV", "show")


def test_latest_change_is_the_newest_added_or_updated_stamp() -> None:
    assert latest_change([{"addedAt": 5, "updatedAt": 9}, {"addedAt": 12}, {}]) == 12
    assert latest_change([]) is None


DIRECTORIES = [
    {"key": "1", "title": "Movies", "type": "movie"},
    {"key": "2", "title": "TV", "type": "show"},
    {"key": "3", "title": "Music", "type": "artist"},
    {"key": "4", "title": "Movies", "type": "movie"},  # the same title twice: ids, never titles
]


def chosen(**scope: Any) -> tuple[list[int], list[int]]:
    sections, unknown = choose_sections(DIRECTORIES, PlexScope(**scope))
    return [s.id for s in sections], unknown


def test_sections_by_id_by_type_or_all_video_sections() -> None:
    assert chosen(section_ids=[4, 2, 4]) == ([2, 4], [])
    assert chosen(section_types=["movie"]) == ([1, 4], [])
    assert chosen(section_ids=[2], section_types=["movie"]) == ([1, 2, 4], [])  # a merged request: both
    assert chosen() == ([1, 2, 4], [])
    assert (
        choose_sections(DIRECTORIES, PlexScope.everything())[0]
        == choose_sections(DIRECTORIES, PlexScope())[0]
    )
    assert choose_sections(DIRECTORIES, PlexScope(section_types=["show"]))[0][0].item_types == (
        "show",
        "season",
        "episode",
    )
    assert chosen(section_ids=[3, 1]) == ([1], [3])  # not a movie or show section: reported, not synced
    assert chosen(rating_keys=["9"]) == ([], [])  # single items only: no section
    with pytest.raises(ValueError, match="section_types"):
        PlexScope(section_types=["artist"])


def test_to_rows_gives_each_item_its_show_when_known_and_its_own_ids_otherwise() -> None:
    orphan = {**EPISODE, "ratingKey": "5001", "grandparentRatingKey": "4999", "parentRatingKey": "4998"}
    rows = to_rows([SHOW, EPISODE, orphan], SERVER, SHOWS, {"3999": SHOW_INFO})
    assert rows == [
        to_row(SHOW, SERVER, SHOWS),
        to_row(EPISODE, SERVER, SHOWS, SHOW_INFO),
        to_row(orphan, SERVER, SHOWS),
    ]
    assert rows[1]["tmdb_id"] == 1399 and rows[2]["tmdb_id"] == 99  # the show's ids, else the episode's own
    assert to_rows([], SERVER, SHOWS, {}) == []
