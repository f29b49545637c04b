"""The typed requests: what merging keeps (table-driven), that scopes of different servers never mix, and
that merging never loses an item or depends on the order it reads requests in (property-tested). Pure:
no database, no Prefect."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from smartplex_sync.models import Action, ArrItem, Deployment, OverseerrRequest
from smartplex_sync.requests import (
    PARAMETERS,
    OverseerrScope,
    OverseerrSync,
    ParsedDelivery,
    PlexLibrarySync,
    PlexScope,
    RadarrScope,
    RadarrSync,
    RemovalCheck,
    Scope,
    SonarrScope,
    SonarrSync,
    Stamp,
    SyncParameters,
    SyncRequest,
    TautulliScope,
    TautulliSync,
    drop_reimported,
    merge_requests,
)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
S1 = uuid.UUID("00000000-0000-4000-8000-000000000001")
S2 = uuid.UUID("00000000-0000-4000-8000-000000000002")
S3 = uuid.UUID("00000000-0000-4000-8000-000000000003")


def webhook(n: int) -> str:
    """The str(uuid) of the n-th delivery (Stamp's second member)."""
    return str(uuid.UUID(int=n))


def stamped(*requests: SyncParameters[Any]) -> list[tuple[Stamp, SyncParameters[Any]]]:
    """Requests in delivery order: the first was received first."""
    return [((T0 + timedelta(seconds=i), webhook(i + 1), 0), r) for i, r in enumerate(requests)]


def on(scope: Scope, *servers: uuid.UUID) -> SyncParameters[Any]:
    """`scope` as its deployment's parameters, on `servers` (S1 unless named)."""
    return PARAMETERS[scope.deployment].on(servers or (S1,), scope)


def movie(arr_id: int, title: str = "", **ids: Any) -> ArrItem:
    return ArrItem("radarr", arr_id, title or f"Movie {arr_id}", **ids)


@pytest.mark.parametrize(
    ("scopes", "merged"),
    [
        pytest.param(
            [PlexScope(section_ids=[1]), PlexScope(section_ids=[2, 1])],
            PlexScope(section_ids=[1, 2]),
            id="sections unite",
        ),
        pytest.param(
            [PlexScope(section_types=["movie"]), PlexScope(rating_keys=["7"])],
            PlexScope(section_types=["movie"], rating_keys=["7"]),
            id="a section type and an item",
        ),
        pytest.param(
            [PlexScope(section_ids=[3]), PlexScope(mode="full")],
            PlexScope(mode="full"),
            id="a full sync of everything absorbs sections",
        ),
        pytest.param(
            [PlexScope(section_ids=[3]), PlexScope(section_ids=[4], mode="full")],
            PlexScope(section_ids=[3, 4], mode="full"),
            id="the broadest mode wins",
        ),
        pytest.param(
            [TautulliScope(rating_keys=["1"]), TautulliScope(rating_keys=["2", "1"])],
            TautulliScope(rating_keys=["1", "2"]),
            id="items unite, no window",
        ),
        pytest.param(
            [TautulliScope(rating_keys=["1"]), TautulliScope(days=7), TautulliScope(days=30)],
            TautulliScope(days=30, rating_keys=["1"]),
            id="the widest window",
        ),
        pytest.param(
            [TautulliScope(days=7), TautulliScope(days=0)],
            TautulliScope(days=0),
            id="all history is the widest",
        ),
        pytest.param(
            [RadarrScope(movies=[movie(1)]), RadarrScope(movies=[movie(2), movie(1)])],
            RadarrScope(movies=[movie(1), movie(2)]),
            id="movies unite by id",
        ),
        pytest.param(
            [RadarrScope(movies=[movie(1, "Old", tmdb_id=5)]), RadarrScope(movies=[movie(1, "New")])],
            RadarrScope(movies=[movie(1, "New", tmdb_id=5)]),
            id="the later delivery's known fields win",
        ),
        pytest.param(
            [SonarrScope(series=[ArrItem("sonarr", 9, "S")]), SonarrScope()],
            SonarrScope(),
            id="a full sync absorbs webhook items",
        ),
        pytest.param(
            [
                OverseerrScope(
                    requests=[OverseerrRequest(4, "movie", "APPROVED", tmdb_id=603, title="Inception (2010)")]
                ),
                OverseerrScope(requests=[OverseerrRequest(4, None, "AVAILABLE", media_status="AVAILABLE")]),
            ],
            OverseerrScope(
                requests=[
                    OverseerrRequest(
                        4,
                        "movie",
                        "AVAILABLE",
                        tmdb_id=603,
                        media_status="AVAILABLE",
                        title="Inception (2010)",
                    )
                ]
            ),
            id="an Overseerr request ends in its latest status and keeps its title",
        ),
    ],
)
def test_merge(scopes: list[Scope], merged: Scope) -> None:
    assert merge_requests(stamped(*(on(s) for s in scopes))) == on(merged)
    assert merge_requests(stamped(*(on(s, S1, S2) for s in scopes))) == on(merged, S1, S2)


def test_the_later_delivery_wins_whatever_order_the_requests_are_read_in() -> None:
    approved = on(OverseerrScope(requests=[OverseerrRequest(4, "movie", "APPROVED")]))
    available = on(OverseerrScope(requests=[OverseerrRequest(4, "movie", "AVAILABLE")]))
    in_order = stamped(approved, available)
    assert merge_requests(in_order) == merge_requests(reversed(in_order)) == available


def test_requests_of_two_deployments_never_merge() -> None:
    with pytest.raises(TypeError):
        merge_requests(stamped(TautulliSync(), PlexLibrarySync()))
    with pytest.raises(TypeError, match="PlexLibrarySync takes a PlexScope, not TautulliScope"):
        PlexLibrarySync.on([S1], TautulliScope())
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_requests([])


# --- servers ----------------------------------------------------------------------------------------


def test_scopes_of_different_servers_never_mix() -> None:
    """A rating key of one server means nothing on another: each server keeps its own scope."""
    first = on(PlexScope(rating_keys=["7"]), S1)
    second = on(PlexScope(rating_keys=["8"], mode="full", section_ids=[2]), S2)
    third = on(PlexScope(section_types=["movie"]), S1, S3)
    merged = merge_requests(stamped(first, second, third))
    assert merged == PlexLibrarySync(
        servers={
            S1: PlexScope(rating_keys=["7"], section_types=["movie"]),
            S2: PlexScope(rating_keys=["8"], mode="full", section_ids=[2]),
            S3: PlexScope(section_types=["movie"]),
        }
    )
    assert merged.scope_for(S2).mode == "full" and merged.scope_for(S1).mode == "incremental"


def test_every_server_absorbs_the_scopes_of_single_servers() -> None:
    """`servers=None` (every server, everything: a run started with default parameters) wins a merge."""
    webhook_items = on(TautulliScope(rating_keys=["91544"]), S1)
    everything = TautulliSync()
    for requests in ([webhook_items, everything], [everything, webhook_items]):
        merged = merge_requests(stamped(*requests))
        assert merged == TautulliSync(servers=None)
        assert merged.scope_for(S1) == merged.scope_for(S2) == TautulliScope(days=7)
    assert (
        PlexLibrarySync().scope_for(S3) == PlexScope(mode="full", all_sections=True) == PlexScope.everything()
    )
    assert SonarrSync().scope_for(S1).items is None


def test_a_scheduled_run_syncs_everything_on_each_of_its_servers() -> None:
    scheduled = PlexLibrarySync.scheduled([S2, S1])
    assert scheduled.servers == {S1: PlexScope.everything(), S2: PlexScope.everything()}
    assert list(scheduled.servers) == [S1, S2]  # in order, whatever order they were named in
    assert OverseerrSync.scheduled([S1]).scope_for(S1) == OverseerrScope(requests=None)
    assert TautulliSync.scheduled([S1]).scope_for(S1).days == 7


def test_a_delivery_attributed_to_its_servers_becomes_its_deployments_parameters() -> None:
    request = SyncRequest(PlexScope(section_types=["movie"]), wait_for_plex_scan=True)
    scoped = request.on([S2, S1])
    assert request.deployment is scoped.deployment is Deployment.PLEX_LIBRARY_SYNC
    assert scoped.wait_for_plex_scan
    assert scoped.parameters == PlexLibrarySync(
        servers=dict.fromkeys((S1, S2), PlexScope(section_types=["movie"]))
    )
    as_json = scoped.to_json()
    assert as_json["deployment"] == "plex-library-sync" and as_json["wait_for_plex_scan"] is True
    assert list(as_json["parameters"]["servers"]) == [str(S1), str(S2)]  # JSON keys: the server ids
    assert PlexLibrarySync.model_validate(as_json["parameters"]) == scoped.parameters


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="section_name"):
        PlexScope.model_validate({"section_name": "Movies"})
    with pytest.raises(ValueError, match="section_ids"):
        PlexLibrarySync.model_validate({"section_ids": [1]})  # a scope where the servers belong


@pytest.mark.parametrize(
    ("model", "old_shape"),
    [
        (PlexScope, {"section_type": "movie", "mode": "incremental"}),
        (PlexScope, {"rating_key": "12345"}),
        (TautulliScope, {"rating_key": "91544"}),
        (SonarrScope, {"series": [{"id": 12, "title": "Harbor Lights", "tvdb_id": 9876543}]}),
        (OverseerrScope, {"requests": [{"request_id": 61, "media_type": "tv"}]}),  # no status
    ],
)
def test_the_plain_dicts_of_the_previous_release_are_no_scope(
    model: type[Scope], old_shape: dict[str, Any]
) -> None:
    """The readers of older rows' plain dicts are gone (store/legacy.py converts those rows once): such a
    dict is refused, never read as "sync everything"."""
    with pytest.raises(ValidationError):
        model.model_validate(old_shape)


def test_labels_say_what_a_scope_syncs() -> None:
    assert PlexScope().mode_label == "incremental" and PlexScope.everything().mode_label == "full"
    assert PlexScope(rating_keys=["1"]).mode_label == "item"
    assert (
        PlexScope(removal_checks=[RemovalCheck(service="radarr", kind="movie", arr_id=1)]).mode_label
        == "removal"
    )
    assert TautulliScope().label == "last 7 days"
    assert TautulliScope(days=0, rating_keys=[str(k) for k in range(6)]).label == (
        "all history and 6 items (0, 1, 2, 3, 4 …)"
    )


def test_a_parsed_delivery_names_its_deployments_or_its_action() -> None:
    both = ParsedDelivery("MEDIA_AVAILABLE", (SyncRequest(PlexScope()), SyncRequest(OverseerrScope())))
    assert both.action_label == "plex-library-sync,overseerr-sync" and both.server_hint is None
    assert ParsedDelivery("media.play", action=Action.IGNORED, server_hint="abc").action_label == "ignored"
    with pytest.raises(ValueError, match="needs an action"):
        ParsedDelivery("library.new")


# --- properties -------------------------------------------------------------------------------------

ids = st.integers(min_value=1, max_value=6)
keys = st.sampled_from(["1", "2", "3", "40", "500"])
servers = st.sampled_from([S1, S2, S3])
plex_scopes = st.builds(
    PlexScope,
    mode=st.sampled_from(["incremental", "full"]),
    section_ids=st.lists(ids, max_size=3),
    section_types=st.lists(st.sampled_from(["movie", "show"]), max_size=2),
    rating_keys=st.lists(keys, max_size=3),
)
tautulli_scopes = st.builds(
    TautulliScope,
    days=st.none() | st.integers(min_value=0, max_value=30),
    rating_keys=st.lists(keys, max_size=3),
)
radarr_scopes = st.builds(
    RadarrScope,
    movies=st.none()
    | st.lists(st.builds(movie, ids, st.sampled_from(["A", "B"]), tmdb_id=st.none() | ids), max_size=3),
)
overseerr_scopes = st.builds(
    OverseerrScope,
    requests=st.none()
    | st.lists(
        st.builds(
            OverseerrRequest,
            ids,
            st.sampled_from(["movie", "tv", None]),
            st.sampled_from(["PENDING", "APPROVED", "AVAILABLE"]),
            title=st.none() | st.sampled_from(["Inception (2010)", "Harbor Lights (2023)"]),
        ),
        max_size=3,
    ),
)


def parameters_of(
    scopes: st.SearchStrategy[Scope], model: type[SyncParameters[Any]]
) -> st.SearchStrategy[Any]:
    """The deployment's parameters: a scope on each of some servers, rarely every server (None)."""
    per_server = st.dictionaries(servers, scopes, max_size=3).map(lambda found: model(servers=found))
    return st.one_of(per_server, per_server, per_server, st.just(model()))


plex = parameters_of(plex_scopes, PlexLibrarySync)
tautulli = parameters_of(tautulli_scopes, TautulliSync)
radarr = parameters_of(radarr_scopes, RadarrSync)
overseerr = parameters_of(overseerr_scopes, OverseerrSync)


def scope_covered(merged: Scope, one: Scope) -> bool:
    """Everything `one` asks for on a server, `merged` does too."""
    match merged, one:
        case PlexScope(), PlexScope():
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
        case TautulliScope(), TautulliScope():
            window = (
                one.days is None
                or merged.days == 0
                or (merged.days is not None and one.days != 0 and merged.days >= one.days)
            )
            items = set(one.rating_keys) <= set(merged.rating_keys) or merged.days == 0
            return window and items
        case RadarrScope(), RadarrScope():
            return merged.movies is None or (
                one.movies is not None and {m.arr_id for m in one.movies} <= {m.arr_id for m in merged.movies}
            )
        case OverseerrScope(), OverseerrScope():
            return merged.requests is None or (
                one.requests is not None
                and {r.request_id for r in one.requests} <= {r.request_id for r in merged.requests}
            )
    raise AssertionError((merged, one))


def covered(merged: SyncParameters[Any], one: SyncParameters[Any]) -> bool:
    """Everything `one` asks for, on every server it names, `merged` does too."""
    if merged.servers is None:
        return True
    if one.servers is None:
        return False
    return all(
        server in merged.servers and scope_covered(merged.servers[server], scope)
        for server, scope in one.servers.items()
    )


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(*(st.lists(kind, min_size=1, max_size=6) for kind in (plex, tautulli, radarr, overseerr))),
    st.randoms(),
)
def test_merging_keeps_every_item_and_ignores_reading_order(
    requests: list[SyncParameters[Any]], rnd: Any
) -> None:
    in_order = stamped(*requests)
    merged = merge_requests(in_order)
    shuffled = list(in_order)
    rnd.shuffle(shuffled)
    assert merge_requests(shuffled) == merged
    for request in requests:
        assert covered(merged, request)
    assert merged.merge(merged) == merged  # idempotent
    assert PARAMETERS[merged.deployment].model_validate(merged.to_json()) == merged  # survives Prefect's JSON


@settings(max_examples=200, deadline=None)
@given(st.one_of(*(st.lists(kind, min_size=1, max_size=6) for kind in (plex, tautulli, radarr, overseerr))))
def test_each_servers_scope_is_the_merge_of_that_servers_scopes_alone(
    requests: list[SyncParameters[Any]],
) -> None:
    """Scopes of different servers never mix: a server's merged scope is what merging only its own scopes
    gives, and a merge names exactly the servers its requests named (unless one asked for every server)."""
    merged = merge_requests(stamped(*requests))
    if any(r.servers is None for r in requests):
        assert merged.servers is None
        return
    assert merged.servers is not None
    assert set(merged.servers) == {server for r in requests for server in r.servers or {}}
    for server, scope in merged.servers.items():
        own = [r.servers[server] for r in requests if r.servers and server in r.servers]
        alone = own[0]
        for later in own[1:]:
            alone = alone.merge(later)
        assert scope == alone


@settings(max_examples=100, deadline=None)
@given(st.lists(plex, min_size=3, max_size=3))
def test_merging_is_associative(requests: list[PlexLibrarySync]) -> None:
    a, b, c = requests
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


def test_every_pair_of_section_scopes_merges_to_their_union() -> None:
    scopes = [
        PlexScope(section_ids=[1]),
        PlexScope(section_types=["show"]),
        PlexScope(rating_keys=["9"]),
        PlexScope(),
    ]
    for first, second in itertools.permutations(scopes, 2):
        merged = first.merge(second)
        assert scope_covered(merged, first) and scope_covered(merged, second)


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


DELETED = PlexScope(removal_checks=[RemovalCheck(service="radarr", kind="movie", arr_id=7)])
IMPORTED = PlexScope(
    section_types=["movie"], imported=[RemovalCheck(service="radarr", kind="movie", arr_id=7, tmdb_id=603)]
)


def test_a_removal_check_merges_as_a_union_and_asks_for_no_section() -> None:
    other = PlexScope(removal_checks=[RemovalCheck(service="sonarr", kind="series", arr_id=2)])
    merged = DELETED.merge(other)
    assert {c.arr_id for c in merged.removal_checks} == {2, 7}
    assert not merged.syncs_sections and not merged.all_sections
    assert PlexScope.model_validate(merged.model_dump(mode="json")) == merged
    assert PlexLibrarySync.model_validate(on(merged).to_json()) == on(merged)


def test_a_later_import_cancels_a_removal_check_whatever_order_the_requests_are_read_in() -> None:
    """Delete, then download of the same movie: an upgrade, nothing to remove. Download, then delete: the
    movie is gone, the check stays. The delivery stamps decide, not the order of the list."""
    t = datetime(2024, 1, 1, tzinfo=UTC)
    first, second, third = ((t + timedelta(seconds=n), webhook(n + 1), 0) for n in range(3))
    delete_then_import = [(first, on(DELETED)), (second, on(IMPORTED))]
    import_then_delete = [(first, on(IMPORTED)), (second, on(DELETED))]
    for requests in (delete_then_import, delete_then_import[::-1]):
        merged = merge_requests(requests).scope_for(S1)
        assert merged.removal_checks == [] and merged.section_types == ["movie"]
    for requests in (import_then_delete, import_then_delete[::-1]):
        assert merge_requests(requests).scope_for(S1).removal_checks == DELETED.removal_checks
    again = [*delete_then_import, (third, on(DELETED))]
    assert merge_requests(again).scope_for(S1).removal_checks == DELETED.removal_checks


def test_an_import_on_another_server_cancels_no_removal_check() -> None:
    """The same Radarr movie id on two servers: a download on one is no upgrade on the other."""
    t = datetime(2024, 1, 1, tzinfo=UTC)
    deleted_on_one = ((t, webhook(1), 0), on(DELETED, S1))
    imported_on_two = ((t + timedelta(seconds=1), webhook(2), 0), on(IMPORTED, S2))
    merged = merge_requests([deleted_on_one, imported_on_two])
    assert merged.scope_for(S1) == DELETED and merged.scope_for(S2) == IMPORTED


def test_requests_of_one_delivery_keep_their_order_by_position() -> None:
    """Two requests of one delivery (same time, same webhook) fold in their order in the delivery."""
    same = (T0, webhook(1))
    approved = on(OverseerrScope(requests=[OverseerrRequest(4, "movie", "APPROVED")]))
    available = on(OverseerrScope(requests=[OverseerrRequest(4, "movie", "AVAILABLE")]))
    merged = merge_requests([((*same, 1), available), ((*same, 0), approved)])
    assert merged == available
