"""The source parsers: every fixture against its expected outcome, bad input, and any JSON at all."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import SERVICES, Action, Deployment, Source
from smartplex_sync.requests import OverseerrScope, ParsedDelivery, PlexScope, TautulliScope
from smartplex_sync.settings import Settings
from webhook_gateway.sources import SOURCES, Form, parse

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text())


def load_fixture(relative_path: str) -> tuple[Source, Any]:
    source = Source(relative_path.split("/", 1)[0])
    return source, json.loads((FIXTURES / relative_path).read_text())


def as_json(delivery: ParsedDelivery) -> dict[str, Any]:
    """A delivery in the shape of `expected.json`."""
    return {
        "event_type": delivery.event_type,
        "action": delivery.action.value if delivery.action else None,
        "requests": [
            {"deployment": r.deployment.value, "scope": r.scope.model_dump(mode="json")}
            for r in delivery.requests
        ],
        "note": delivery.note,
        "server_hint": delivery.server_hint,
    }


OUTCOMES = {path: expected for path, expected in EXPECTED.items() if "error" not in expected}
ERRORS = {path: expected["error"] for path, expected in EXPECTED.items() if "error" in expected}


@pytest.mark.parametrize("relative_path", sorted(OUTCOMES))
def test_fixture_parses_to_its_expected_outcome(relative_path: str) -> None:
    source, payload = load_fixture(relative_path)
    assert as_json(parse(source, payload)) == OUTCOMES[relative_path]


@pytest.mark.parametrize("relative_path", sorted(ERRORS))
def test_invalid_fixture_is_rejected_with_its_expected_error(relative_path: str) -> None:
    source, payload = load_fixture(relative_path)
    expected = ERRORS[relative_path]
    with pytest.raises(PayloadError) as caught:
        parse(source, payload)
    assert caught.value.status_code == expected["status_code"]
    assert caught.value.event_type == expected["event_type"]
    assert expected["message_contains"] in caught.value.message


def test_every_fixture_file_has_an_expected_outcome() -> None:
    on_disk = {str(path.relative_to(FIXTURES)) for path in FIXTURES.glob("*/*.json")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize(
    ("source", "events"),
    [
        (Source.PLEX, {"library.on.deck", "library.new", "media.play", "media.pause", "media.resume",
                       "media.stop", "media.scrobble", "media.rate", "admin.database.backup",
                       "admin.database.corrupted", "device.new", "playback.started"}),
        (Source.SONARR, {"Test", "Grab", "Download", "Rename", "SeriesAdd", "SeriesDelete", "EpisodeFileDelete",
                         "Health", "HealthRestored", "ApplicationUpdate", "ManualInteractionRequired"}),
        (Source.RADARR, {"Test", "Grab", "Download", "Rename", "MovieDelete", "MovieFileDelete", "Health",
                         "ApplicationUpdate", "MovieAdded", "HealthRestored", "ManualInteractionRequired"}),
        (Source.OVERSEERR, {"MEDIA_PENDING", "MEDIA_APPROVED", "MEDIA_AUTO_APPROVED", "MEDIA_AVAILABLE",
                            "MEDIA_DECLINED", "MEDIA_FAILED", "TEST_NOTIFICATION", "ISSUE_CREATED",
                            "ISSUE_COMMENT", "ISSUE_RESOLVED", "ISSUE_REOPENED", "media.requested",
                            "media.approved", "media.available", "media.declined", "media.failed"}),
    ],
)  # fmt: skip
def test_fixtures_cover_every_event_of_the_service(source: Source, events: set[str]) -> None:
    covered = {outcome["event_type"] for path, outcome in OUTCOMES.items() if path.startswith(f"{source}/")}
    assert events <= covered


def test_every_source_is_registered_once_with_the_deployments_it_feeds() -> None:
    assert set(SOURCES) == set(Source)
    for path, outcome in OUTCOMES.items():
        source = Source(path.split("/", 1)[0])
        for request in outcome["requests"]:
            assert Deployment(request["deployment"]) in SOURCES[source].feeds, path
    fed = {source: {Deployment(r["deployment"]) for p, o in OUTCOMES.items() if p.startswith(f"{source}/")
                    for r in o["requests"]} for source in Source}  # fmt: skip
    assert {source: SOURCES[source].feeds for source in Source} == fed  # no deployment it never asks for


def test_each_sender_carries_its_token_as_its_settings_allow() -> None:
    """Plex takes only a URL; Tautulli a JSON Headers box; Sonarr and Radarr a username/password or
    headers; Overseerr an Authorization Header box (docs/webhooks.md)."""
    assert {source: SOURCES[source].token_forms for source in Source} == {
        Source.PLEX: (Form.QUERY,),
        Source.TAUTULLI: (Form.BEARER, Form.HEADER),
        Source.SONARR: (Form.BASIC, Form.BEARER, Form.HEADER),
        Source.RADARR: (Form.BASIC, Form.BEARER, Form.HEADER),
        Source.OVERSEERR: (Form.BEARER,),
    }


@pytest.mark.parametrize("source", list(Source))
def test_each_source_s_openapi_example_is_a_delivery_it_reads(source: Source) -> None:
    assert parse(source, SOURCES[source].example).event_type != "unknown"


@pytest.mark.parametrize("source", list(Source))
@pytest.mark.parametrize(
    ("payload", "got"),
    [
        ([{"event": "library.new"}], "an array"),
        ("library.new", "a string"),
        (42, "a number"),
        (True, "a boolean"),
    ],
)
def test_a_body_that_is_not_an_object_is_a_422(source: Source, payload: Any, got: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse(source, payload)
    assert caught.value.status_code == 422
    assert caught.value.message == f"expected a JSON object, got {got}"
    assert caught.value.event_type == "unknown"


@pytest.mark.parametrize("source", list(Source))
def test_an_empty_body_is_a_400(source: Source) -> None:
    with pytest.raises(PayloadError) as caught:
        parse(source, None)
    assert caught.value.status_code == 400
    assert caught.value.message.startswith("empty body")


def test_an_empty_tautulli_body_points_at_the_template() -> None:
    with pytest.raises(PayloadError) as caught:
        parse(Source.TAUTULLI, None)
    assert caught.value.message == "empty body: check the JSON Data template"


@pytest.mark.parametrize(
    ("source", "payload", "event_type", "message"),
    [
        (Source.PLEX, {"event": 7}, "unknown", "event must be a string, got a number"),
        (Source.PLEX, {"event": "library.new", "Metadata": []}, "library.new", "Metadata must be an object"),
        (Source.PLEX, {"event": "library.new", "Metadata": {"librarySectionID": True}}, "library.new",
         "Metadata.librarySectionID must be an integer, got a boolean"),
        (Source.PLEX, {"event": "library.new", "Metadata": {"librarySectionID": 1.5}}, "library.new",
         "Metadata.librarySectionID must be an integer, got a number 1.5"),
        (Source.TAUTULLI, {"action": ["stop"]}, "unknown", "action must be a string, got an array"),
        (Source.TAUTULLI, {"event": "watched", "rating_key": 91544.5}, "watched", "rating_key must be a string"),
        (Source.SONARR, {"eventType": "Download"}, "Download", "Download without a series object"),
        (Source.SONARR, {"eventType": "Download", "series": {"title": "Harbor Lights"}}, "Download",
         "series.id is missing"),
        (Source.SONARR, {"eventType": "Download", "series": {"id": 12, "tvdbId": "tt123"}}, "Download",
         "series.tvdbId must be an integer, got a string 'tt123'"),
        (Source.SONARR, {"eventType": "Download", "series": {"id": 12}, "isUpgrade": "yes"}, "Download",
         "isUpgrade must be true or false"),
        (Source.RADARR, {"eventType": "Upgrade", "movie": None}, "Upgrade", "Upgrade without a movie object"),
        (Source.RADARR, {"eventType": "Download", "movie": {"id": 87, "imdbId": 2278388}}, "Download",
         "movie.imdbId must be a string, got a number"),
        (Source.OVERSEERR, {"notification_type": "MEDIA_AVAILABLE", "media": "tv"}, "MEDIA_AVAILABLE",
         "media must be an object, got a string"),
        (Source.OVERSEERR, {"notification_type": "MEDIA_PENDING", "media": {"tmdbId": "tmdb-1"}}, "MEDIA_PENDING",
         "media.tmdbId must be an integer"),
    ],
)  # fmt: skip
def test_a_field_of_the_wrong_type_is_a_422_naming_the_field(
    source: Source, payload: dict[str, Any], event_type: str, message: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        parse(source, payload)
    assert caught.value.status_code == 422
    assert caught.value.event_type == event_type
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("source", "payload"),
    [
        (Source.PLEX, {}),
        (Source.PLEX, {"event": ""}),
        (Source.TAUTULLI, {"event": None, "action": None}),
        (Source.SONARR, {"series": {"id": 12}}),
        (Source.RADARR, {"eventType": None}),
        (Source.OVERSEERR, {"subject": "Harbor Lights (2023)"}),
    ],
)
def test_a_delivery_without_an_event_is_ignored_as_unknown(source: Source, payload: dict[str, Any]) -> None:
    assert parse(source, payload) == ParsedDelivery("unknown", action=Action.IGNORED)


@pytest.mark.parametrize(
    ("source", "payload"),
    [
        (Source.PLEX, {"event": "media.rate", "rating": "ten", "Metadata": "48210"}),
        (Source.TAUTULLI, {"event": "play", "rating_key": ["48210"]}),
        (Source.SONARR, {"eventType": "Grab", "series": "Harbor Lights"}),
        (Source.RADARR, {"eventType": "Rename", "movie": 87}),
        (Source.OVERSEERR, {"notification_type": "ISSUE_CREATED", "media": "tv", "request": 61}),
    ],
)
def test_fields_an_ignored_event_does_not_need_are_not_checked(
    source: Source, payload: dict[str, Any]
) -> None:
    assert parse(source, payload).action in (Action.IGNORED, Action.RECORDED)


def test_tautulli_event_key_wins_over_action() -> None:
    delivery = parse(Source.TAUTULLI, {"event": "watched", "action": "play", "rating_key": " 48210 "})
    assert delivery.event_type == "watched"
    assert delivery.requests[0].scope == TautulliScope(rating_keys=["48210"])


def test_the_same_new_episode_from_two_sonarr_shapes_asks_for_the_same_syncs() -> None:
    _, download = load_fixture("sonarr/download.json")
    _, import_complete = load_fixture("sonarr/download_import_complete.json")
    import_complete["episodes"] = download["episodes"]  # the fixtures name different episodes
    asked = [parse(Source.SONARR, payload).requests for payload in (download, import_complete)]
    assert asked[0] == asked[1]


@pytest.mark.parametrize(
    ("relative_path", "kind", "episodes"),
    [
        ("radarr/movie_delete.json", "movie", ()),
        ("radarr/movie_file_delete_manual.json", "movie", ()),
        ("sonarr/series_delete.json", "series", ()),
        ("sonarr/episode_file_delete.json", "episode_file", ((2, 5),)),
    ],
)
def test_a_delete_asks_for_a_removal_check_after_plex_scanned(
    relative_path: str, kind: str, episodes: tuple[tuple[int, int], ...]
) -> None:
    source, payload = load_fixture(relative_path)
    (request,) = parse(source, payload).requests
    assert request.wait_for_plex_scan
    assert isinstance(request.scope, PlexScope)
    assert not request.scope.syncs_sections and not request.scope.rating_keys
    (check,) = request.scope.removal_checks
    assert (check.kind, check.episodes) == (kind, episodes)


@pytest.mark.parametrize(
    "relative_path",
    ["radarr/movie_file_delete.json", "sonarr/episode_file_delete_for_upgrade.json",
     "sonarr/series_delete_files_kept.json"],
)  # fmt: skip
def test_an_upgrade_or_a_delete_that_kept_the_files_asks_for_nothing(relative_path: str) -> None:
    assert parse(*load_fixture(relative_path)).action is Action.IGNORED


@pytest.mark.parametrize("relative_path", ["sonarr/download_upgrade.json", "radarr/download_upgrade.json"])
def test_an_upgrade_download_names_its_item_and_asks_for_no_removal(relative_path: str) -> None:
    source, payload = load_fixture(relative_path)
    plex = next(r.scope for r in parse(source, payload).requests if isinstance(r.scope, PlexScope))
    assert plex.imported and not plex.removal_checks


# Any JSON value, and any fixture with one value changed, must parse or raise PayloadError.
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.integers(min_value=-(2**70), max_value=-(2**63) + 1)
    | st.floats()
    | st.text(max_size=6)
    | st.text(
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2
    )  # lone surrogates
    | st.text(max_size=2).map(lambda t: t * 600)  # over MAX_TEXT_LENGTH
    | st.from_regex(r"\A[+-]?[0-9]{1,25}\Z")
    | st.sampled_from(
        ["", " 7 ", "movie", "tv", "{rating_key}", "{{requestId}}", "tv.plex.provider.vod", "1/../x"]
    )
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)

# What each parser reads: top-level fields, and the fields it reads inside nested objects.
READ_FIELDS: dict[Source, dict[str, list[str] | None]] = {
    Source.PLEX: {"Metadata": ["librarySectionID", "librarySectionType", "ratingKey"], "Server": ["uuid"]},
    Source.TAUTULLI: {"action": None, "rating_key": None, "server_machine_id": None},
    Source.SONARR: {
        "series": ["id", "title", "tvdbId", "tmdbId", "imdbId"],
        "isUpgrade": None,
        "episodeFile": None,
        "episodeFiles": None,
    },
    Source.RADARR: {"movie": ["id", "title", "tmdbId", "imdbId"], "isUpgrade": None},
    Source.OVERSEERR: {
        "subject": None,
        "media": ["media_type", "tmdbId", "tvdbId", "status"],
        "request": ["request_id", "requestedBy_username", "requestedBy_email"],
    },
}
ACTED_ON = {  # event key, and the events whose fields the parser reads
    Source.PLEX: ("event", ["library.new", "media.scrobble"]),
    Source.TAUTULLI: ("event", ["stop", "watched", "playback.stop", "test"]),
    Source.SONARR: ("eventType", ["Download", "Upgrade"]),
    Source.RADARR: ("eventType", ["Download", "Upgrade"]),
    Source.OVERSEERR: ("notification_type", ["MEDIA_AVAILABLE", "MEDIA_PENDING", "media.available"]),
}


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[Source, Any]:
    """A delivery shaped like its source's: the fields its parser reads, each holding any JSON value."""
    source = draw(st.sampled_from(list(Source)))
    document: dict[str, Any] = {}
    for key, inner in READ_FIELDS[source].items():
        if draw(st.booleans()):
            shaped = (
                st.fixed_dictionaries({}, optional=dict.fromkeys(inner, json_values))
                if inner
                else st.nothing()
            )
            document[key] = draw(json_values | shaped)
    event_key, events = ACTED_ON[source]
    document[event_key] = draw(st.sampled_from(events) | json_leaves)
    return source, document


def paths_in(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path to a value inside a decoded JSON document, the document itself excluded."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    paths = []
    for key, child in items:
        paths.append((*prefix, key))
        paths.extend(paths_in(child, (*prefix, key)))
    return paths


def replaced(document: Any, path: tuple[str | int, ...], new_value: Any) -> Any:
    """A deep copy of `document` with the value at `path` replaced."""
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new_value
    return copy


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> tuple[Source, Any]:
    """A fixture with one value anywhere inside it replaced by any JSON value."""
    source, document = load_fixture(draw(st.sampled_from(sorted(EXPECTED))))
    path = draw(st.sampled_from(paths_in(document)))
    return source, replaced(document, path, draw(json_values))


def assert_parses_or_rejects(source: Source, payload: Any) -> None:
    try:
        delivery = parse(source, payload)
    except PayloadError as error:
        assert error.status_code in (400, 422)
        assert error.message
        return
    assert isinstance(delivery.event_type, str)
    assert delivery.server_hint is None or isinstance(delivery.server_hint, str)
    for request in delivery.requests:
        parameters = request.on([ANY_SERVER]).to_json()  # as queued and passed to Prefect
        json.dumps(parameters, allow_nan=False)
        assert all(-(2**63) <= n < 2**63 for n in integers_in(parameters))  # BIGINT


ANY_SERVER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def integers_in(value: Any) -> list[int]:
    if isinstance(value, dict):
        return [n for child in value.values() for n in integers_in(child)]
    if isinstance(value, list):
        return [n for child in value for n in integers_in(child)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


@settings(max_examples=150, deadline=None)
@given(source=st.sampled_from(list(Source)), payload=json_values)
def test_any_json_value_parses_or_raises_payload_error(source: Source, payload: Any) -> None:
    assert_parses_or_rejects(source, payload)


@settings(max_examples=300, deadline=None)
@given(delivery=deliveries())
def test_any_values_under_the_fields_parsers_read_parse_or_raise_payload_error(
    delivery: tuple[Source, Any],
) -> None:
    assert_parses_or_rejects(*delivery)


# Every integer a parser passes on ends up in a BIGINT column or a Prefect parameter.
INTEGER_FIELDS = [
    ("plex/library_new_movie.json", ("Metadata", "librarySectionID")),
    *(("sonarr/download.json", ("series", key)) for key in ("id", "tvdbId", "tmdbId")),
    *(("radarr/download.json", ("movie", key)) for key in ("id", "tmdbId")),
    ("overseerr/media_available_movie.json", ("request", "request_id")),
    *(("overseerr/media_available_movie.json", ("media", key)) for key in ("tmdbId", "tvdbId")),
]
any_size_integers = (
    st.integers()
    | st.integers(min_value=2**63 - 3, max_value=2**200)
    | st.integers(min_value=-(2**200), max_value=-(2**63) + 3)
)


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(INTEGER_FIELDS),
    value=any_size_integers | any_size_integers.map(str) | st.floats(min_value=2**62, max_value=1e300),
)
def test_an_integer_field_is_a_64_bit_integer_or_a_422(
    field: tuple[str, tuple[str, ...]], value: Any
) -> None:
    fixture, path = field
    source, document = load_fixture(fixture)
    assert_parses_or_rejects(source, replaced(document, path, value))


@settings(max_examples=300, deadline=None)
@given(mutated=mutated_fixtures())
def test_a_fixture_with_any_value_replaced_parses_or_raises_payload_error(
    mutated: tuple[Source, Any],
) -> None:
    assert_parses_or_rejects(*mutated)


@pytest.mark.parametrize(("source", "name"), [(Source.SONARR, "download"), (Source.RADARR, "download")])
def test_arr_downloads_give_plex_time_to_scan_before_the_library_sync(source: Source, name: str) -> None:
    payload = json.loads((FIXTURES / source.value / f"{name}.json").read_text())
    library, arr = parse(source, payload).requests
    assert library.deployment is Deployment.PLEX_LIBRARY_SYNC and library.wait_for_plex_scan
    assert not arr.wait_for_plex_scan  # their ids need no scan


def test_plex_library_new_starts_the_sync_without_waiting() -> None:
    payload = json.loads((FIXTURES / "plex" / "library_new_movie.json").read_text())
    assert not parse(Source.PLEX, payload).requests[0].wait_for_plex_scan


PLEX_MACHINE = "8c5f2d8a41e7b93f0e6a2d9c7b1f40a3e5d6c7b8"  # Server.uuid of the Plex fixtures


@pytest.mark.parametrize(
    "name",
    ["library_new_movie", "library_new_episode", "media_scrobble", "media_play", "admin_database_backup"],
)
def test_plex_names_its_server_by_server_uuid(name: str) -> None:
    """Every Plex delivery names its server, the ignored ones too (the gateway records whose it was)."""
    source, payload = load_fixture(f"plex/{name}.json")
    assert payload["Server"]["uuid"] == PLEX_MACHINE
    assert parse(source, payload).server_hint == PLEX_MACHINE


def test_a_plex_delivery_without_a_server_names_none() -> None:
    seed_guide = parse(*load_fixture("plex/library_new_seed_guide_curl.json"))
    assert seed_guide.requests and seed_guide.server_hint is None
    assert parse(Source.PLEX, {"event": "media.scrobble", "Server": {"uuid": ""}}).server_hint is None
    with pytest.raises(PayloadError, match=r"Server\.uuid must be a string"):
        parse(Source.PLEX, {"event": "library.new", "Server": {"uuid": 7}})


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (PLEX_MACHINE, PLEX_MACHINE),
        (f" {PLEX_MACHINE}\n", PLEX_MACHINE),
        ("{server_machine_id}", None),  # a Tautulli that does not know the parameter leaves it as typed
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_tautulli_names_its_plex_server_by_server_machine_id(value: str | None, hint: str | None) -> None:
    _, payload = load_fixture("tautulli/stop.json")
    if value is not None:
        payload["server_machine_id"] = value
    delivery = parse(Source.TAUTULLI, payload)
    assert delivery.server_hint == hint
    assert [r.scope for r in delivery.requests] == [TautulliScope(rating_keys=["91544"])]
    without_key = parse(Source.TAUTULLI, {**payload, "rating_key": "{rating_key}"})
    assert without_key.server_hint == hint and without_key.requests[0].scope == TautulliScope()


def test_only_a_history_event_of_tautulli_reads_the_server() -> None:
    """A test or an ignored action asks for no sync, so its server_machine_id is not even read."""
    for event in ("test", "play", "{action}"):
        delivery = parse(Source.TAUTULLI, {"event": event, "server_machine_id": ["not", "read"]})
        assert delivery.server_hint is None and not delivery.requests
    with pytest.raises(PayloadError, match="server_machine_id must be a string"):
        parse(Source.TAUTULLI, {"event": "stop", "rating_key": "1", "server_machine_id": 5})


@pytest.mark.parametrize(
    "name", ["media_pending_movie", "media_approved_tv", "media_available_movie", "seed_media_requested"]
)
def test_an_overseerr_subject_is_the_requests_title(name: str) -> None:
    source, payload = load_fixture(f"overseerr/{name}.json")
    (overseerr,) = [r.scope for r in parse(source, payload).requests if isinstance(r.scope, OverseerrScope)]
    assert overseerr.requests is not None
    (request,) = overseerr.requests
    assert request.title == payload["subject"] and request.title


def test_an_overseerr_delivery_without_a_subject_leaves_the_title_unknown() -> None:
    _, payload = load_fixture("overseerr/media_pending_movie.json")
    for subject in (None, ""):
        payload["subject"] = subject
        (request,) = parse(Source.OVERSEERR, payload).requests
        assert isinstance(request.scope, OverseerrScope) and request.scope.requests is not None
        assert request.scope.requests[0].title is None  # None never overwrites a title stored before
    del payload["subject"]
    assert parse(Source.OVERSEERR, payload).requests[0].scope.requests[0].title is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("source", list(Source))
def test_every_source_has_the_settings_the_gateway_reads_by_its_name(source: Source) -> None:
    fields = Settings.model_fields
    for suffix in ("webhook_token", "quiet_seconds", "max_wait_seconds", "url"):
        assert f"{source.value}_{suffix}" in fields, suffix
    own = Settings.model_validate(
        {f"{source.value}_quiet_seconds": 3.5, f"{source.value}_max_wait_seconds": 7}
    )
    assert own.coalescing_window(SERVICES[source].deployment) == (3.5, 7.0)
