"""No leak through Supabase's Data API on a database `migrate` made from nothing: the SmartPlex tables it
creates have row level security on and no policy, so `anon` and `authenticated` (which hold Supabase's
default privileges on every table of `public`) read no row and write none (servers hold Plex tokens,
integrations API keys); our own tables sit in a schema those roles cannot enter. The service connection
that owns the tables works as before, direct and through the pooler. (On SmartPlex's own database,
test_smartplex_schema.py shows that SmartPlex's flags and policies are left as they are.)"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from smartplex_sync.migrate import migrate
from smartplex_sync.store import make_engine, webhooks
from smartplex_sync.store.engine import OWN_SCHEMA
from smartplex_sync.store.history import upsert_plays
from smartplex_sync.store.tables import OWN_TABLES, SMARTPLEX_TABLES
from tests.support.factories import add_movie, add_server, add_user
from tests.support.supabase import SERVICE_OWNER, SupabaseLike

DATA_API_USERS = ("anon", "authenticated")


@pytest.fixture
def owned_database(supabase: SupabaseLike) -> Iterator[tuple[SupabaseLike, str]]:
    """A database migrated by its owner (a non-superuser, as Supabase's `postgres`), with rows in it."""
    database = supabase.create_database(owner=SERVICE_OWNER)
    engine = make_engine(supabase.direct(database, SERVICE_OWNER))
    migrate(engine)
    webhooks.record(
        engine, source="plex", event_type="library.new", payload={"secret": "token"}, action="test"
    )
    with engine.begin() as conn:
        user = add_user(conn, "owner@example.com")
        server = add_server(conn, user, machine_id="m1", token="plex-secret-token")
        add_movie(conn, server, "1")
        upsert_plays(conn, server, [{"tautulli_row_id": 1, "rating_key": "1", "user_name": "jamie"}])
    engine.dispose()
    yield supabase, database


def as_data_api(supabase: SupabaseLike, database: str) -> psycopg.Connection:
    """How the Data API (PostgREST) connects: as `authenticator`, then SET LOCAL ROLE per request."""
    url = make_url(supabase.direct(database, "authenticator")).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False))


@pytest.mark.parametrize("role", DATA_API_USERS)
def test_data_api_roles_see_and_write_nothing_of_ours(
    owned_database: tuple[SupabaseLike, str], role: str
) -> None:
    supabase, database = owned_database
    with as_data_api(supabase, database) as conn:
        for table in SMARTPLEX_TABLES:
            with conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                # Supabase's default grants are there: row level security is what stops them.
                assert conn.execute(
                    f"SELECT has_table_privilege('{table.name}', 'SELECT, INSERT')"
                ).fetchone()[0]
                assert conn.execute(f"SELECT count(*) FROM {table.name}").fetchone() == (0,), table.name
                assert conn.execute(f"DELETE FROM {table.name}").rowcount == 0
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
                conn.transaction(),
            ):
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute(f"INSERT INTO {table.name} DEFAULT VALUES")
        for table in OWN_TABLES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute(f"SELECT count(*) FROM {OWN_SCHEMA}.{table.name}")
    owner = make_engine(supabase.direct(database, SERVICE_OWNER))
    with owner.connect() as conn:  # untouched by the deletes above
        for table in ("webhook_log", "media_items", "servers", "users"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() > 0, table
        assert conn.execute(text(f"SELECT count(*) FROM {OWN_SCHEMA}.watch_history")).scalar() == 1
    owner.dispose()


def test_service_role_bypasses_row_level_security(owned_database: tuple[SupabaseLike, str]) -> None:
    supabase, database = owned_database
    with as_data_api(supabase, database) as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        assert conn.execute("SELECT count(*) FROM media_items").fetchone() == (1,)
        assert conn.execute("SELECT plex_token FROM servers").fetchone() == ("plex-secret-token",)


def test_the_owner_reads_and_writes_through_both_connections(
    owned_database: tuple[SupabaseLike, str],
) -> None:
    supabase, database = owned_database
    for url in (supabase.direct(database, SERVICE_OWNER), supabase.pooled(database, SERVICE_OWNER)):
        engine = make_engine(url)
        webhooks.record(engine, source="sonarr", event_type="Test", payload={}, action="test")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM webhook_log")).scalar() >= 2
            assert conn.execute(text(f"SELECT count(*) FROM {OWN_SCHEMA}.watch_history")).scalar() == 1
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_every_table_we_create_has_row_level_security_and_no_policy(engine: Engine) -> None:
    """Every table the code knows, SmartPlex's (made here from nothing) and ours: a new table that forgets
    `ENABLE ROW LEVEL SECURITY` fails here."""
    with engine.connect() as conn:
        flags = dict(
            conn.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    f"c.relnamespace WHERE n.nspname IN (current_schema(), '{OWN_SCHEMA}') AND c.relkind = 'r'"
                )
            ).all()
        )
        policies = conn.execute(text("SELECT tablename, policyname FROM pg_policies")).all()
    assert {t.name for t in (*SMARTPLEX_TABLES, *OWN_TABLES)} == set(flags)
    assert [name for name, secured in flags.items() if not secured] == []
    assert policies == []
