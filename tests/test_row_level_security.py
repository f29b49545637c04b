"""No leak through Supabase's Data API: after the migrations, `anon` and `authenticated` (which hold
Supabase's default privileges on every table of `public`) read no row and write none, while the service
connection that owns the tables and `service_role` work as before."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from smartplex_sync.migrate import migrate
from smartplex_sync.requests import PlexLibrarySync, SyncRequest
from smartplex_sync.store import make_engine, webhooks
from smartplex_sync.store.history import upsert_plays
from smartplex_sync.store.tables import metadata
from tests.support.factories import add_movie
from tests.support.supabase import SERVICE_OWNER, SupabaseLike

DATA_API_USERS = ("anon", "authenticated")


@pytest.fixture
def owned_database(supabase: SupabaseLike) -> Iterator[tuple[SupabaseLike, str]]:
    """A database migrated by its owner (a non-superuser, as Supabase's `postgres`), with rows in it."""
    database = supabase.create_database(owner=SERVICE_OWNER)
    engine = make_engine(supabase.direct(database, SERVICE_OWNER))
    migrate(engine)
    webhooks.record(
        engine, source="plex", event_type="library.new", payload={"secret": "token"}, action="plex-library-sync",
        requests=[SyncRequest(PlexLibrarySync(mode="full"))],
    )  # fmt: skip
    with engine.begin() as conn:
        add_movie(conn, "1", "srv")
        upsert_plays(conn, [{"tautulli_row_id": 1, "rating_key": "1", "user_name": "jamie"}])
    engine.dispose()
    yield supabase, database


def as_data_api(supabase: SupabaseLike, database: str) -> psycopg.Connection:
    """How the Data API (PostgREST) connects: as `authenticator`, then SET LOCAL ROLE per request."""
    url = make_url(supabase.direct(database, "authenticator")).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False))


def row_counts(conn: psycopg.Connection) -> dict[str, int]:
    return {
        t.name: conn.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0] for t in metadata.sorted_tables
    }


@pytest.mark.parametrize("role", DATA_API_USERS)
def test_data_api_roles_hold_privileges_but_see_and_write_nothing(
    owned_database: tuple[SupabaseLike, str], role: str
) -> None:
    supabase, database = owned_database
    with as_data_api(supabase, database) as conn:
        for table in metadata.sorted_tables:
            with conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                # Supabase's default grants are there: row level security is what stops them.
                assert conn.execute(
                    f"SELECT has_table_privilege('{table.name}', 'SELECT, INSERT')"
                ).fetchone()[0]
                assert conn.execute(f"SELECT count(*) FROM {table.name}").fetchone() == (0,), table.name
                assert (
                    conn.execute(f"UPDATE {table.name} SET {table.c[0].name} = {table.c[0].name}").rowcount
                    == 0
                )
                assert conn.execute(f"DELETE FROM {table.name}").rowcount == 0
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
                conn.transaction(),
            ):
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute(f"INSERT INTO {table.name} DEFAULT VALUES")
    owner = make_engine(supabase.direct(database, SERVICE_OWNER))
    with owner.connect() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar() for t in metadata.sorted_tables
        }
    owner.dispose()
    for filled in ("schema_migrations", "webhook_log", "sync_schedule", "media_items", "watch_history"):
        assert counts[filled] > 0, filled  # untouched by the updates and deletes above


def test_service_role_bypasses_row_level_security(owned_database: tuple[SupabaseLike, str]) -> None:
    supabase, database = owned_database
    with as_data_api(supabase, database) as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        counts = row_counts(conn)
    assert counts["webhook_log"] == 1 and counts["sync_schedule"] == 5 and counts["media_items"] == 1


def test_the_owner_reads_and_writes_through_both_connections(
    owned_database: tuple[SupabaseLike, str],
) -> None:
    supabase, database = owned_database
    for url in (supabase.direct(database, SERVICE_OWNER), supabase.pooled(database, SERVICE_OWNER)):
        engine = make_engine(url)
        webhooks.record(engine, source="sonarr", event_type="Test", payload={}, action="test")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM webhook_log")).scalar() >= 2
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_every_table_has_row_level_security_and_no_policy(engine: Engine) -> None:
    """Every table the code knows, and every table the migrations made, including those of later
    migrations: a new table that forgets `ENABLE ROW LEVEL SECURITY` fails here."""
    with engine.connect() as conn:
        flags = dict(
            conn.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity FROM pg_class c"
                    " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')"
                )
            ).all()
        )
        policies = conn.execute(text("SELECT tablename, policyname FROM pg_policies")).all()
    assert {t.name for t in metadata.sorted_tables} <= set(flags)
    assert [name for name, secured in flags.items() if not secured] == []
    assert policies == []
