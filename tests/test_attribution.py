"""Which user and which of their Plex servers a delivery syncs (`webhook_gateway.attribution`), from facts
given by hand: no database, no mocks. `servers` is passed whole (every user's) on purpose: attribution
itself must keep to the sender's."""

from __future__ import annotations

import uuid

import pytest

from smartplex_sync.models import Source
from smartplex_sync.store.accounts import ServerFacts
from webhook_gateway.attribution import Attribution, Sender, attribute

ALICE, BOB = uuid.uuid4(), uuid.uuid4()
NOBODY = Sender(None, "gateway token")
OTHER_SOURCES = (Source.TAUTULLI, Source.SONARR, Source.RADARR, Source.OVERSEERR)


def server(user: uuid.UUID, machine: str | None, *services: str, name: str = "Plex") -> ServerFacts:
    return ServerFacts(uuid.uuid4(), user, name, machine, frozenset(services))


def secret(user: uuid.UUID) -> Sender:
    return Sender(user, "webhook secret")


def unattributed(found: Attribution) -> bool:
    return found.problem is not None and found.server_ids == () and found.server_id is None


# --- Plex, by Server.uuid ------------------------------------------------------------------------------


def test_plex_syncs_the_server_its_server_uuid_names_among_the_senders() -> None:
    home, cabin = server(ALICE, "m-home"), server(ALICE, "m-cabin")
    bobs = server(BOB, "m-bob")
    found = attribute(Source.PLEX, secret(ALICE), [home, cabin, bobs], "m-cabin")
    assert found == Attribution(ALICE, (cabin.id,))
    assert found.server_id == cabin.id


def test_one_users_secret_never_syncs_another_users_server_even_for_the_same_machine() -> None:
    """Alice and Bob both have a row for one Plex machine (a shared server): each secret syncs its own row."""
    alices, bobs = server(ALICE, "m-shared"), server(BOB, "m-shared")
    bobs_own = server(BOB, "m-bob")
    everyone = [alices, bobs, bobs_own]
    assert attribute(Source.PLEX, secret(ALICE), everyone, "m-shared") == Attribution(ALICE, (alices.id,))
    assert attribute(Source.PLEX, secret(BOB), everyone, "m-shared") == Attribution(BOB, (bobs.id,))
    assert attribute(Source.TAUTULLI, secret(ALICE), everyone, "m-shared").server_ids == (alices.id,)
    # A machine only Bob has: Alice's secret syncs nothing, and the delivery stays hers.
    refused = attribute(Source.PLEX, secret(ALICE), everyone, "m-bob")
    assert unattributed(refused) and refused.user_id == ALICE
    assert "m-bob" in (refused.problem or "") and "webhook secret" in (refused.problem or "")


def test_a_server_row_without_machine_id_is_taken_when_it_is_the_senders_only_one() -> None:
    """SMARTPLEX_PLEX_URL's row before its first sync does not know its machine id yet."""
    unknown, known = server(ALICE, None), server(ALICE, "m-known")
    assert attribute(Source.PLEX, secret(ALICE), [unknown, known], "m-new") == Attribution(
        ALICE, (unknown.id,)
    )
    assert attribute(Source.TAUTULLI, secret(ALICE), [unknown, known], "m-new").server_ids == (unknown.id,)
    # The named machine wins over the row that does not know its own.
    assert attribute(Source.PLEX, secret(ALICE), [unknown, known], "m-known").server_ids == (known.id,)
    # Two such rows: which one is meant cannot be told.
    assert unattributed(attribute(Source.PLEX, secret(ALICE), [unknown, server(ALICE, None)], "m-new"))
    # Another user's row without machine id is never taken.
    assert unattributed(attribute(Source.PLEX, secret(ALICE), [known, server(BOB, None)], "m-new"))


def test_plex_without_server_uuid_syncs_the_senders_only_server_else_nothing() -> None:
    only = server(ALICE, "m-1")
    bobs = server(BOB, "m-2")
    assert attribute(Source.PLEX, secret(ALICE), [only, bobs], None) == Attribution(ALICE, (only.id,))
    several = attribute(Source.PLEX, secret(ALICE), [only, server(ALICE, "m-3"), bobs], None)
    assert unattributed(several) and several.user_id == ALICE
    assert "2 Plex servers" in (several.problem or "")
    none = attribute(Source.PLEX, secret(ALICE), [bobs], None)
    assert unattributed(none) and none.user_id == ALICE


# --- Tautulli, Sonarr, Radarr, Overseerr: by the integrations that serve the servers -------------------


def test_other_services_sync_the_servers_an_integration_of_theirs_serves() -> None:
    home = server(ALICE, "m-home", "tautulli", "sonarr")
    cabin = server(ALICE, "m-cabin", "radarr")
    bare = server(ALICE, "m-bare")
    bobs = server(BOB, "m-bob", "overseerr", "tautulli", "sonarr", "radarr")
    everyone = [home, cabin, bare, bobs]
    assert attribute(Source.TAUTULLI, secret(ALICE), everyone, None) == Attribution(ALICE, (home.id,))
    assert attribute(Source.SONARR, secret(ALICE), everyone, None).server_ids == (home.id,)
    assert attribute(Source.RADARR, secret(ALICE), everyone, None).server_ids == (cabin.id,)
    # No Overseerr of Alice's serves any of her servers (Bob's does not count): all of hers.
    every = attribute(Source.OVERSEERR, secret(ALICE), everyone, None)
    assert every == Attribution(ALICE, (home.id, cabin.id, bare.id))
    assert every.server_id is None  # webhook_log.server_id names one server only


@pytest.mark.parametrize("source", OTHER_SOURCES)
def test_other_services_without_integrations_sync_all_the_senders_servers(source: Source) -> None:
    first, second = server(ALICE, "m-1"), server(ALICE, "m-2")
    assert attribute(source, secret(ALICE), [first, server(BOB, "m-3"), second], None) == Attribution(
        ALICE, (first.id, second.id)
    )


@pytest.mark.parametrize("source", OTHER_SOURCES)
def test_a_sender_without_servers_syncs_nothing(source: Source) -> None:
    found = attribute(source, secret(ALICE), [server(BOB, "m-1", source.value)], None)
    assert unattributed(found) and found.user_id == ALICE


def test_tautullis_server_machine_id_names_one_server_whatever_the_integrations_say() -> None:
    home = server(ALICE, "m-home", "tautulli")
    cabin = server(ALICE, "m-cabin")
    assert attribute(Source.TAUTULLI, secret(ALICE), [home, cabin], "m-cabin").server_ids == (cabin.id,)


# --- an unknown sender (the gateway token or a local client, and no SMARTPLEX_OWNER_EMAIL user) -------


def test_an_unknown_sender_is_attributed_only_when_one_user_can_be_meant() -> None:
    alices, bobs = server(ALICE, "m-alice", "sonarr"), server(BOB, "m-bob")
    everyone = [alices, bobs]
    # A machine only one user has names them.
    assert attribute(Source.PLEX, NOBODY, everyone, "m-bob") == Attribution(BOB, (bobs.id,))
    assert attribute(Source.TAUTULLI, NOBODY, everyone, "m-alice") == Attribution(ALICE, (alices.id,))
    # A machine both have a row for, or no machine at all while two users have servers: nobody's.
    shared = attribute(Source.PLEX, NOBODY, [*everyone, server(ALICE, "m-bob")], "m-bob")
    assert unattributed(shared) and shared.user_id is None
    assert "2 SmartPlex users" in (shared.problem or "")
    for source in Source:
        found = attribute(source, NOBODY, everyone, None)
        assert unattributed(found) and found.user_id is None, source
    # Alice's Sonarr integration does not make an unknown sender's Sonarr hers.
    assert unattributed(attribute(Source.SONARR, NOBODY, everyone, None))
    # A machine nobody has, and no row without machine id: nothing.
    assert unattributed(attribute(Source.PLEX, NOBODY, everyone, "m-elsewhere"))


def test_an_unknown_sender_while_one_user_has_servers_is_that_users() -> None:
    home = server(ALICE, "m-home", "radarr")
    cabin = server(ALICE, "m-cabin")
    assert attribute(Source.PLEX, NOBODY, [home], None) == Attribution(ALICE, (home.id,))
    assert attribute(Source.RADARR, NOBODY, [home, cabin], None) == Attribution(ALICE, (home.id,))
    assert attribute(Source.SONARR, NOBODY, [home, cabin], None) == Attribution(ALICE, (home.id, cabin.id))
    several = attribute(Source.PLEX, NOBODY, [home, cabin], None)  # which of hers cannot be told
    assert unattributed(several) and several.user_id == ALICE
    # The row without machine id is taken for an unknown machine only when it is the only server at all.
    unknown = server(ALICE, None)
    assert attribute(Source.PLEX, NOBODY, [unknown], "m-new").server_ids == (unknown.id,)
    assert unattributed(attribute(Source.PLEX, NOBODY, [unknown, home], "m-new"))


def test_nobody_has_a_server() -> None:
    for source in Source:
        found = attribute(source, NOBODY, [], None)
        assert unattributed(found) and found.user_id is None
