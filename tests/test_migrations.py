"""Migrations apply to SQLite and PostgreSQL, once, and produce exactly the tables the code queries."""

from __future__ import annotations

import subprocess
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.engine import make_url

from smartplex_sync.migrate import discover, migrate, pending, to_sqlite
from smartplex_sync.store import make_engine
from smartplex_sync.store.tables import metadata, sync_schedule
from tests.conftest import both_backends
from tests.support.postgres import pg_tool
from tests.support.supabase import SERVICE_OWNER, SupabaseLike


@both_backends
def test_migrations_create_every_table_the_code_knows(engine: Engine) -> None:
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name


@both_backends
def test_second_run_is_a_no_op(engine: Engine) -> None:
    assert pending(engine) == []
    assert migrate(engine) == []


@both_backends
def test_seed_schedule_matches_the_guide(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            select(sync_schedule.c.service, sync_schedule.c.enabled, sync_schedule.c.interval_hours)
        )
        schedule = {r.service: (r.enabled, r.interval_hours) for r in rows}
    assert schedule == {
        "plex": (True, 12),
        "tautulli": (True, 6),
        "sonarr": (False, 24),
        "radarr": (False, 24),
        "overseerr": (False, 6),
    }


def test_every_file_records_itself_so_pasted_files_count_as_applied() -> None:
    for migration in discover():
        assert f"VALUES ('{migration.version}') ON CONFLICT (version) DO NOTHING" in migration.sql


def test_sqlite_spelling_drops_postgres_only_types() -> None:
    for migration in discover():
        sql = to_sqlite(migration.sql)
        for word in ("JSONB", "TIMESTAMPTZ", "IDENTITY", "now()", "ROW LEVEL SECURITY"):
            assert word not in sql, (migration.path.name, word)


# What a schema is made of, read from the catalogs of the current schema. Names only, never oids.
CATALOG_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner),
               c.relacl::text
        FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace ORDER BY 1""",
    "columns": """
        SELECT table_name, ordinal_position, column_name, data_type, character_maximum_length,
               numeric_precision, numeric_scale, column_default, is_nullable, is_identity,
               identity_generation, is_generated
        FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1, 2""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = current_schema() ORDER BY 1, 2""",
    "grants": """
        SELECT table_name, grantee, privilege_type, is_grantable
        FROM information_schema.role_table_grants WHERE table_schema = current_schema() ORDER BY 1, 2, 3""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc
        WHERE pronamespace = current_schema()::regnamespace ORDER BY 1, 2""",
    "migrations": "SELECT version FROM schema_migrations ORDER BY 1",
    "schedule": "SELECT service, deployment, enabled, interval_hours FROM sync_schedule ORDER BY 1",
}


def catalog(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: [tuple(row) for row in conn.execute(text(query))] for name, query in CATALOG_QUERIES.items()
    }


def test_pasted_files_and_migrate_make_the_same_schema(supabase: SupabaseLike) -> None:
    """`psql -f` of every file in order, as a user pasting them into Supabase's SQL editor, and
    `smartplex-sync migrate`, each into a new database of the same owner: the catalogs are identical."""
    pasted, migrated = (supabase.create_database(owner=SERVICE_OWNER) for _ in range(2))
    pasted_url = make_url(supabase.direct(pasted, SERVICE_OWNER)).set(drivername="postgresql")
    for migration in discover():
        subprocess.run(
            [pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(migration.path),
             pasted_url.render_as_string(hide_password=False)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    engine = make_engine(supabase.direct(migrated, SERVICE_OWNER))
    assert migrate(engine) == [m.version for m in discover()]
    found = {}
    for database in (pasted, migrated):
        engine = make_engine(supabase.direct(database, SERVICE_OWNER))
        with engine.connect() as conn:
            found[database] = catalog(conn)
        engine.dispose()
    assert found[pasted] == found[migrated]
    tables = {row[0] for row in found[migrated]["relations"] if row[1] == "r"}
    assert tables == {t.name for t in metadata.sorted_tables}
    assert {row[1] for row in found[migrated]["grants"]} >= {"anon", "authenticated", "service_role"}
