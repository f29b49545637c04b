"""The typed requests: what merging keeps (table-driven), and that it never loses an item or depends on
the order it reads requests in (property-tested). Pure: no database, no Prefect."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from smartplex_sync.models import ArrItem, Deployment, OverseerrRequest
from smartplex_sync.requests import (
    PARAMETERS,
    OverseerrSync,
    PlexLibrarySync,
    RadarrSync,
    RemovalCheck,
    SonarrSync,
    Stamp,
    SyncParameters,
    SyncRequest,
    TautulliSync,
    drop_reimported,
    merge_requests,
)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def stamped(*requests: SyncParameters) -> list[tuple[Stamp, SyncParameters]]:
    """Requests in delivery order: the first was received first."""
    return [((T0 + timedelta(seconds=i), i + 1, 0), r) for i, r in enumerate(requests)]


def movie(arr_id: int, title: str = "", **ids: Any) -> ArrItem:
    return ArrItem("radarr", arr_id, title or f"Movie {arr_id}", **ids)


@pytest.mark.parametrize(
    ("requests", "merged"),
    [
        pytest.param(
            [PlexLibrarySync(section_ids=[1]), PlexLibrarySync(section_ids=[2, 1])],
            PlexLibrarySync(section_ids=[1, 2]),
            id="sections unite",
        ),
        pytest.param(
            [PlexLibrarySync(section_types=["movie"]), PlexLibrarySync(rating_keys=["7"])],
            PlexLibrarySync(section_types=["movie"], rating_keys=["7"]),
            id="a section type and an item",
        ),
        pytest.param(
            [PlexLibrarySync(section_ids=[3]), PlexLibrarySync(mode="full")],
            PlexLibrarySync(mode="full"),
            id="a full sync of everything absorbs sections",
        ),
        pytest.param(
            [PlexLibrarySync(section_ids=[3]), PlexLibrarySync(section_ids=[4], mode="full")],
            PlexLibrarySync(section_ids=[3, 4], mode="full"),
            id="the broadest mode wins",
        ),
        pytest.param(
            [TautulliSync(rating_keys=["1"]), TautulliSync(rating_keys=["2", "1"])],
            TautulliSync(rating_keys=["1", "2"]),
            id="items unite, no window",
        ),
        pytest.param(
            [TautulliSync(rating_keys=["1"]), TautulliSync(days=7), TautulliSync(days=30)],
            TautulliSync(days=30, rating_keys=["1"]),
            id="the widest window",
        ),
        pytest.param(
            [TautulliSync(days=7), TautulliSync(days=0)],
            TautulliSync(days=0),
            id="all history is the widest",
        ),
        pytest.param(
            [RadarrSync(movies=[movie(1)]), RadarrSync(movies=[movie(2), movie(1)])],
            RadarrSync(movies=[movie(1), movie(2)]),
            id="movies unite by id",
        ),
        pytest.param(
            [RadarrSync(movies=[movie(1, "Old", tmdb_id=5)]), RadarrSync(movies=[movie(1, "New")])],
            RadarrSync(movies=[movie(1, "New", tmdb_id=5)]),
            id="the later delivery's known fields win",
        ),
        pytest.param(
            [SonarrSync(series=[ArrItem("sonarr", 9, "S")]), SonarrSync()],
            SonarrSync(),
            id="a full sync absorbs webhook items",
        ),
        pytest.param(
            [
                OverseerrSync(requests=[OverseerrRequest(4, "movie", "APPROVED", tmdb_id=603)]),
                OverseerrSync(requests=[OverseerrRequest(4, None, "AVAILABLE", media_status="AVAILABLE")]),
            ],
            OverseerrSync(
                requests=[OverseerrRequest(4, "movie", "AVAILABLE", tmdb_id=603, media_status="AVAILABLE")]
            ),
            id="an Overseerr request ends in its latest status",
        ),
    ],
)
def test_merge(requests: list[SyncParameters], merged: SyncParameters) -> None:
    assert merge_requests(stamped(*requests)) == merged


def test_the_later_delivery_wins_whatever_order_the_requests_are_read_in() -> None:
    approved = OverseerrSync(requests=[OverseerrRequest(4, "movie", "APPROVED")])
    available = OverseerrSync(requests=[OverseerrRequest(4, "movie", "AVAILABLE")])
    in_order = stamped(approved, available)
    assert merge_requests(in_order) == merge_requests(reversed(in_order)) == available


def test_requests_of_two_deployments_never_merge() -> None:
    with pytest.raises(TypeError):
        merge_requests(stamped(TautulliSync(), PlexLibrarySync()))


@pytest.mark.parametrize(
    ("deployment", "stored", "read"),
    [
        (
            Deployment.PLEX_LIBRARY_SYNC,
            {"section_type": "movie", "mode": "incremental"},
            PlexLibrarySync(section_types=["movie"]),
        ),
        (
            Deployment.PLEX_LIBRARY_SYNC,
            {"section_ids": [4], "mode": "incremental"},
            PlexLibrarySync(section_ids=[4]),
        ),
        (
            Deployment.PLEX_LIBRARY_SYNC,
            {"rating_key": "12345", "mode": "incremental"},
            PlexLibrarySync(rating_keys=["12345"]),
        ),
        (Deployment.PLEX_LIBRARY_SYNC, {"mode": "full"}, PlexLibrarySync(mode="full", all_sections=True)),
        (Deployment.TAUTULLI_SYNC, {"rating_key": "91544"}, TautulliSync(rating_keys=["91544"])),
        (Deployment.TAUTULLI_SYNC, {"days": 7}, TautulliSync(days=7)),
        (Deployment.TAUTULLI_SYNC, {}, TautulliSync(days=7)),
        (
            Deployment.SONARR_SYNC,
            {
                "series": [
                    {"id": 12, "title": "Harbor Lights", "tvdb_id": 9876543, "tmdb_id": None, "imdb_id": None}
                ]
            },
            SonarrSync(series=[ArrItem("sonarr", 12, "Harbor Lights", tvdb_id=9876543)]),
        ),
        (Deployment.RADARR_SYNC, {"movies": None}, RadarrSync()),
        (
            Deployment.OVERSEERR_SYNC,
            {
                "requests": [
                    {
                        "request_id": 61,
                        "media_type": "tv",
                        "tmdb_id": None,
                        "tvdb_id": 5,
                        "status": "approved",
                    }
                ]
            },
            OverseerrSync(requests=[OverseerrRequest(61, "tv", "APPROVED", tvdb_id=5)]),
        ),
    ],
)
def test_rows_stored_before_typed_requests_still_read(
    deployment: Deployment, stored: dict[str, Any], read: SyncParameters
) -> None:
    """webhook_log rows recorded by earlier versions keep their plain dicts; they still dispatch and replay."""
    old_row = {
        "deployment": deployment.value,
        "parameters": stored,
        "coalesce": True,
        "wait_for_plex_scan": True,
    }
    request = SyncRequest.from_json(old_row)
    assert request.parameters == read and request.wait_for_plex_scan
    assert SyncRequest.from_json(request.to_json()) == request


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="section_name"):
        PlexLibrarySync.model_validate({"section_name": "Movies"})


# --- properties -------------------------------------------------------------------------------------

ids = st.integers(min_value=1, max_value=6)
keys = st.sampled_from(["1", "2", "3", "40", "500"])
plex = st.builds(
    PlexLibrarySync,
    mode=st.sampled_from(["incremental", "full"]),
    section_ids=st.lists(ids, max_size=3),
    section_types=st.lists(st.sampled_from(["movie", "show"]), max_size=2),
    rating_keys=st.lists(keys, max_size=3),
)
tautulli = st.builds(
    TautulliSync,
    days=st.none() | st.integers(min_value=0, max_value=30),
    rating_keys=st.lists(keys, max_size=3),
)
movies = st.builds(
    RadarrSync,
    movies=st.none()
    | st.lists(st.builds(movie, ids, st.sampled_from(["A", "B"]), tmdb_id=st.none() | ids), max_size=3),
)
overseerr = st.builds(
    OverseerrSync,
    requests=st.none()
    | st.lists(
        st.builds(
            OverseerrRequest,
            ids,
            st.sampled_from(["movie", "tv", None]),
            st.sampled_from(["PENDING", "APPROVED", "AVAILABLE"]),
        ),
        max_size=3,
    ),
)


def covered(merged: SyncParameters, one: SyncParameters) -> bool:
    """Everything `one` asks for, `merged` does too."""
    match merged, one:
        case PlexLibrarySync(), PlexLibrarySync():
            sections = merged.all_sections or (
                set(one.section_ids) <= set(merged.section_ids)
                and set(one.section_types) <= set(merged.section_types)
            )
            full = merged.mode == "full" or one.mode == "incremental" or not one.syncs_sections
            return (
                (not one.syncs_sections or sections)
                and full
                and set(one.rating_keys) <= set(merged.rating_keys)
            )
        case TautulliSync(), TautulliSync():
            window = (
                one.days is None
                or merged.days == 0
                or (merged.days is not None and one.days != 0 and merged.days >= one.days)
            )
            items = set(one.rating_keys) <= set(merged.rating_keys) or merged.days == 0
            return window and items
        case RadarrSync(), RadarrSync():
            return merged.movies is None or (
                one.movies is not None and {m.arr_id for m in one.movies} <= {m.arr_id for m in merged.movies}
            )
        case OverseerrSync(), OverseerrSync():
            return merged.requests is None or (
                one.requests is not None
                and {r.request_id for r in one.requests} <= {r.request_id for r in merged.requests}
            )
    raise AssertionError((merged, one))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(*(st.lists(kind, min_size=1, max_size=6) for kind in (plex, tautulli, movies, overseerr))),
    st.randoms(),
)
def test_merging_keeps_every_item_and_ignores_reading_order(requests: list[SyncParameters], rnd: Any) -> None:
    in_order = stamped(*requests)
    merged = merge_requests(in_order)
    shuffled = list(in_order)
    rnd.shuffle(shuffled)
    assert merge_requests(shuffled) == merged
    for request in requests:
        assert covered(merged, request)
    assert merged.merge(merged) == merged  # idempotent
    assert PARAMETERS[merged.deployment].model_validate(merged.to_json()) == merged  # survives Prefect's JSON


@settings(max_examples=100, deadline=None)
@given(st.lists(plex, min_size=3, max_size=3))
def test_merging_is_associative(requests: list[PlexLibrarySync]) -> None:
    a, b, c = requests
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


def test_every_pair_of_section_scopes_merges_to_their_union() -> None:
    scopes = [
        PlexLibrarySync(section_ids=[1]),
        PlexLibrarySync(section_types=["show"]),
        PlexLibrarySync(rating_keys=["9"]),
        PlexLibrarySync(),
    ]
    for first, second in itertools.permutations(scopes, 2):
        merged = first.merge(second)
        assert covered(merged, first) and covered(merged, second)


def test_a_delete_followed_by_an_import_of_the_same_item_is_an_upgrade() -> None:
    movie = RemovalCheck(service="radarr", kind="movie", arr_id=7)
    series = RemovalCheck(service="sonarr", kind="series", arr_id=3, tvdb_id=81189)
    files = RemovalCheck(service="sonarr", kind="episode_file", tvdb_id=81189, episodes=((1, 2), (1, 3)))
    imports = [
        RemovalCheck(service="radarr", kind="movie", arr_id=7, tmdb_id=603),
        RemovalCheck(service="sonarr", kind="episode_file", arr_id=3, tvdb_id=81189, episodes=((1, 2),)),
    ]
    assert drop_reimported([movie, series, files], imports) == [series, files]  # S01E03 not re-imported
    whole = RemovalCheck(service="sonarr", kind="series", tvdb_id=81189)
    assert drop_reimported([files], [whole]) == []
    assert drop_reimported([movie], [RemovalCheck(service="radarr", kind="movie", arr_id=8)]) == [movie]
    with pytest.raises(ValidationError):
        RemovalCheck(service="radarr", kind="series", arr_id=1)
    with pytest.raises(ValidationError):
        RemovalCheck(service="sonarr", kind="episode_file", arr_id=1)


DELETED = PlexLibrarySync(removal_checks=[RemovalCheck(service="radarr", kind="movie", arr_id=7)])
IMPORTED = PlexLibrarySync(
    section_types=["movie"], imported=[RemovalCheck(service="radarr", kind="movie", arr_id=7, tmdb_id=603)]
)


def test_a_removal_check_merges_as_a_union_and_asks_for_no_section() -> None:
    other = PlexLibrarySync(removal_checks=[RemovalCheck(service="sonarr", kind="series", arr_id=2)])
    merged = DELETED.merge(other)
    assert {c.arr_id for c in merged.removal_checks} == {2, 7}
    assert not merged.syncs_sections and not merged.all_sections
    assert PlexLibrarySync.model_validate(merged.to_json()) == merged
    assert PlexLibrarySync.model_validate({"section_type": "movie"}).removal_checks == []  # older rows


def test_a_later_import_cancels_a_removal_check_whatever_order_the_requests_are_read_in() -> None:
    """Delete, then download of the same movie: an upgrade, nothing to remove. Download, then delete: the
    movie is gone, the check stays. The delivery stamps decide, not the order of the list."""
    t = datetime(2024, 1, 1, tzinfo=UTC)
    delete_then_import = [((t, 1, 0), DELETED), ((t + timedelta(seconds=1), 2, 0), IMPORTED)]
    import_then_delete = [((t, 1, 0), IMPORTED), ((t + timedelta(seconds=1), 2, 0), DELETED)]
    for stamped in (delete_then_import, delete_then_import[::-1]):
        merged = merge_requests(stamped)
        assert isinstance(merged, PlexLibrarySync)
        assert merged.removal_checks == [] and merged.section_types == ["movie"]
    for stamped in (import_then_delete, import_then_delete[::-1]):
        merged = merge_requests(stamped)
        assert isinstance(merged, PlexLibrarySync)
        assert merged.removal_checks == DELETED.removal_checks
    again = [*delete_then_import, ((t + timedelta(seconds=2), 3, 0), DELETED)]
    merged = merge_requests(again)
    assert isinstance(merged, PlexLibrarySync) and merged.removal_checks == DELETED.removal_checks
