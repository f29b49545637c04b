"""SmartPlex's overseerr_requests written by the Overseerr sync, and the library link (store/overseerr.py),
on both backends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select, update

from smartplex_sync.models import OverseerrRequest
from smartplex_sync.store.overseerr import requests_in_library, smartplex_status, upsert_requests
from smartplex_sync.store.tables import media_items, overseerr_requests, users
from tests.conftest import both_backends
from tests.support.factories import add_integration, add_server, add_user

CREATED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SYNCED = datetime(2024, 5, 2, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Setup:
    owner: uuid.UUID
    server: uuid.UUID
    overseerr: uuid.UUID  # the owner's Overseerr integration
    other: uuid.UUID  # a second Overseerr instance (its request ids are its own)


@pytest.fixture
def setup(engine: Engine) -> Setup:
    with engine.begin() as conn:
        owner = add_user(conn, "owner@example.com")
        server = add_server(conn, owner, machine_id="m")
        overseerr = add_integration(conn, owner, "overseerr", url="http://o1:5055", name="Overseerr")
        other = add_integration(conn, owner, "overseerr", url="http://o2:5055", name="Jellyseerr")
    return Setup(owner, server, overseerr, other)


def rows(conn: Connection) -> list[Any]:
    return conn.execute(select(overseerr_requests).order_by(overseerr_requests.c.overseerr_request_id)).all()


def smartplex_row(
    conn: Connection, user_id: uuid.UUID, request_id: int, tmdb_id: int, **values: Any
) -> uuid.UUID:
    """A row as SmartPlex's `/overseerr/request` route writes it: no integration, status pending."""
    row_id = uuid.uuid4()
    conn.execute(
        overseerr_requests.insert().values(
            id=row_id, user_id=user_id, media_title="The Matrix", media_type="movie", tmdb_id=tmdb_id,
            overseerr_request_id=request_id, overseerr_status="pending", requested_at=CREATED, **values,
        )
    )  # fmt: skip
    return row_id


def test_status_is_smartplex_s_word_for_what_overseerr_says() -> None:
    def word(status: str, media_status: str | None = None) -> str | None:
        return smartplex_status(OverseerrRequest(1, "movie", status, media_status=media_status))

    assert [word(s) for s in ("PENDING", "APPROVED", "DECLINED", "FAILED", "AVAILABLE", "COMPLETED")] == [
        "pending",
        "approved",
        "declined",
        "failed",
        "available",
        "available",
    ]
    assert word("APPROVED", "AVAILABLE") == "available"  # approved, and the media arrived
    assert word("APPROVED", "PARTIALLY_AVAILABLE") == "approved"
    assert word("SOMETHING_NEW") is None


@both_backends
def test_a_request_is_stored_in_smartplex_s_words_and_a_webhook_keeps_what_it_does_not_tell(
    engine: Engine, setup: Setup
) -> None:
    with engine.begin() as conn:
        first = upsert_requests(
            conn,
            [
                OverseerrRequest(
                    7, "movie", "APPROVED", tmdb_id=603, requested_at=CREATED, requested_by_id=1
                ),
                OverseerrRequest(8, "tv", "PENDING", tmdb_id=1396, tvdb_id=81189, seasons=(1, 2)),
            ],
            SYNCED,
            integration_id=setup.overseerr,
            owner_id=setup.owner,
        )
        assert (first.written, first.skipped) == (2, [])
        # a webhook: it tells the title and the new status, not the ids or who asked
        later = SYNCED + timedelta(hours=1)
        webhook = OverseerrRequest(
            7, None, "AVAILABLE", media_status="AVAILABLE", title="The Matrix (1999)", updated_at=later
        )
        assert (
            upsert_requests(conn, [webhook], SYNCED, integration_id=setup.overseerr, owner_id=None).written
            == 1
        )
        seven, eight = rows(conn)
    assert (seven.media_title, seven.media_type, seven.tmdb_id, seven.overseerr_status) == (
        "The Matrix (1999)",
        "movie",
        603,
        "available",
    )
    assert (seven.requested_at, seven.status_updated_at, seven.completed_at) == (CREATED, later, later)
    assert (seven.overseerr_user_id, seven.integration_id) == (1, setup.overseerr)
    # the API does not tell a title: SmartPlex's own fallback ("movie 603")
    assert (eight.media_title, eight.media_type, eight.tvdb_id, eight.overseerr_status) == (
        "tv 1396",
        "tv",
        81189,
        "pending",
    )
    assert (eight.seasons, eight.requested_at, eight.completed_at) == (["1", "2"], SYNCED, None)


@both_backends
def test_completed_at_is_set_once(engine: Engine, setup: Setup) -> None:
    available = OverseerrRequest(7, "movie", "AVAILABLE", tmdb_id=603, updated_at=CREATED)
    with engine.begin() as conn:
        upsert_requests(conn, [available], SYNCED, integration_id=setup.overseerr, owner_id=setup.owner)
        again = OverseerrRequest(7, "movie", "AVAILABLE", tmdb_id=603, updated_at=CREATED + timedelta(days=3))
        upsert_requests(conn, [again], SYNCED, integration_id=setup.overseerr, owner_id=setup.owner)
        [row] = rows(conn)
    assert (row.completed_at, row.status_updated_at) == (CREATED, CREATED + timedelta(days=3))


@both_backends
def test_requests_without_a_tmdb_id_or_media_type_are_skipped(engine: Engine, setup: Setup) -> None:
    with engine.begin() as conn:
        stored = upsert_requests(
            conn,
            [
                OverseerrRequest(1, "tv", "PENDING", tvdb_id=81189),  # SmartPlex's tmdb_id is NOT NULL
                OverseerrRequest(2, None, "PENDING", tmdb_id=603),  # a template without the media type
                OverseerrRequest(3, "movie", "PENDING", tmdb_id=604),
            ],
            SYNCED,
            integration_id=setup.overseerr,
            owner_id=setup.owner,
        )
        assert (stored.written, stored.skipped) == (1, [1, 2])
        assert [r.overseerr_request_id for r in rows(conn)] == [3]
        # once stored, a webhook without the ids still updates the row
        later = upsert_requests(
            conn,
            [OverseerrRequest(3, None, "DECLINED")],
            SYNCED,
            integration_id=setup.overseerr,
            owner_id=None,
        )
        assert (later.written, later.skipped) == (1, [])
        assert [(r.tmdb_id, r.overseerr_status) for r in rows(conn)] == [(604, "declined")]


@both_backends
def test_a_row_smartplex_wrote_is_adopted_by_request_id_and_tmdb_id(engine: Engine, setup: Setup) -> None:
    with engine.begin() as conn:
        requester = add_user(conn, "viewer@example.com")
        adopted = smartplex_row(conn, requester, 7, 603)
        other_tmdb = smartplex_row(conn, requester, 8, 550)  # request 8 of SmartPlex is another film
        upsert_requests(
            conn,
            [
                OverseerrRequest(
                    7, "movie", "APPROVED", tmdb_id=603, requested_by_email="someone-else@example.com"
                ),
                OverseerrRequest(8, "movie", "APPROVED", tmdb_id=551),
            ],
            SYNCED,
            integration_id=setup.overseerr,
            owner_id=setup.owner,
        )
        found = {r.id: r for r in rows(conn)}
    assert len(found) == 3
    row = found[adopted]
    # the row now carries the integration; SmartPlex's requester and title stay
    assert (row.integration_id, row.user_id, row.media_title, row.overseerr_status, row.requested_at) == (
        setup.overseerr,
        requester,
        "The Matrix",
        "approved",
        CREATED,
    )
    assert (found[other_tmdb].integration_id, found[other_tmdb].overseerr_status) == (None, "pending")
    [new] = [r for r in found.values() if r.id not in (adopted, other_tmdb)]
    assert (new.overseerr_request_id, new.tmdb_id, new.integration_id, new.user_id) == (
        8,
        551,
        setup.overseerr,
        None,
    )


@both_backends
def test_request_ids_are_per_overseerr_instance(engine: Engine, setup: Setup) -> None:
    with engine.begin() as conn:
        requester = add_user(conn, "viewer@example.com")
        smartplex_row(conn, requester, 7, 603)
        upsert_requests(conn, [OverseerrRequest(7, "movie", "APPROVED", tmdb_id=603)], SYNCED,
                        integration_id=setup.overseerr, owner_id=setup.owner)  # fmt: skip
        # request 7 of another instance: its own row, not the first instance's (adopted) one
        upsert_requests(conn, [OverseerrRequest(7, "movie", "DECLINED", tmdb_id=603)], SYNCED,
                        integration_id=setup.other, owner_id=setup.owner)  # fmt: skip
        upsert_requests(conn, [OverseerrRequest(7, "movie", "AVAILABLE")], SYNCED,
                        integration_id=setup.overseerr, owner_id=setup.owner)  # fmt: skip
        found = {r.integration_id: (r.overseerr_status, r.user_id) for r in rows(conn)}
    assert found == {setup.overseerr: ("available", requester), setup.other: ("declined", None)}


@both_backends
def test_a_delivery_naming_no_instance_updates_the_row_an_instance_of_its_owner_stored(
    engine: Engine, setup: Setup
) -> None:
    with engine.begin() as conn:
        upsert_requests(conn, [OverseerrRequest(9, "movie", "PENDING", tmdb_id=27205)], SYNCED,
                        integration_id=setup.overseerr, owner_id=setup.owner)  # fmt: skip
        upsert_requests(conn, [OverseerrRequest(9, "movie", "APPROVED", tmdb_id=27205)], SYNCED,
                        integration_id=None, owner_id=setup.owner)  # fmt: skip
        found = [(r.integration_id, r.overseerr_status) for r in rows(conn)]
    assert found == [(setup.overseerr, "approved")]


@both_backends
def test_the_requester_is_the_smartplex_user_by_email_else_the_owner_by_overseerr_id(
    engine: Engine, setup: Setup
) -> None:
    with engine.begin() as conn:
        viewer = add_user(conn, "Viewer@Example.com")
        conn.execute(update(users).where(users.c.id == setup.owner).values(overseerr_user_id=1))
        upsert_requests(
            conn,
            [
                OverseerrRequest(1, "movie", "PENDING", tmdb_id=1, requested_by_email="viewer@example.COM"),
                OverseerrRequest(
                    2, "movie", "PENDING", tmdb_id=2, requested_by_id=1
                ),  # the owner's Overseerr id
                OverseerrRequest(
                    3, "movie", "PENDING", tmdb_id=3, requested_by_id=5
                ),  # nobody SmartPlex knows
                OverseerrRequest(4, "movie", "PENDING", tmdb_id=4, requested_by_email="stranger@example.com"),
            ],
            SYNCED,
            integration_id=setup.overseerr,
            owner_id=setup.owner,
        )
        # a later answer that cannot name the requester never clears it
        upsert_requests(conn, [OverseerrRequest(1, "movie", "APPROVED", tmdb_id=1, requested_by_email="x@example.com")],
                        SYNCED, integration_id=setup.overseerr, owner_id=setup.owner)  # fmt: skip
        found = {r.overseerr_request_id: (r.user_id, r.overseerr_user_id) for r in rows(conn)}
    assert found == {1: (viewer, None), 2: (setup.owner, 1), 3: (None, 5), 4: (None, None)}


@both_backends
def test_requests_link_to_movies_by_tmdb_and_shows_by_tvdb_or_tmdb_on_the_servers_asked(
    engine: Engine, setup: Setup
) -> None:
    with engine.begin() as conn:
        another = add_server(conn, setup.owner, name="Other", machine_id="other")
        for server, key, type_, ids in (
            (setup.server, "1", "movie", {"tmdb_id": 603}),
            (setup.server, "2", "show", {"tvdb_id": 81189}),
            (setup.server, "3", "show", {"tmdb_id": 60059}),
            (setup.server, "4", "episode", {"tmdb_id": 604}),  # an episode never stands for a request
            (another, "6", "movie", {"tmdb_id": 605}),  # another server's library
        ):
            conn.execute(
                media_items.insert().values(
                    id=uuid.uuid4(), server_id=server, plex_id=key, type=type_, title=key, metadata={}, **ids
                )
            )
        requests = [
            OverseerrRequest(1, "movie", "APPROVED", tmdb_id=603),
            OverseerrRequest(2, "tv", "APPROVED", tmdb_id=1396, tvdb_id=81189),
            OverseerrRequest(3, "tv", "APPROVED", tmdb_id=60059, tvdb_id=273181),
            OverseerrRequest(4, "movie", "PENDING", tmdb_id=604),
            OverseerrRequest(5, "movie", "PENDING", tmdb_id=81189),  # a tvdb number, but a movie request
            OverseerrRequest(6, "movie", "PENDING", tmdb_id=605),
        ]
        upsert_requests(conn, requests, SYNCED, integration_id=setup.overseerr, owner_id=setup.owner)
        upsert_requests(conn, requests[:1], SYNCED, integration_id=setup.other, owner_id=setup.owner)
        ids = [r.request_id for r in requests]
        assert requests_in_library(conn, ids, setup.overseerr, [setup.server]) == {1, 2, 3}
        assert requests_in_library(conn, ids, setup.overseerr, [setup.server, another]) == {1, 2, 3, 6}
        assert requests_in_library(conn, [1, 4], setup.overseerr, [setup.server]) == {1}
        assert requests_in_library(conn, ids, setup.other, [another]) == set()  # its request 1 is not on it
        assert requests_in_library(conn, [], setup.overseerr, [setup.server]) == set()
        assert requests_in_library(conn, ids, setup.overseerr, []) == set()
