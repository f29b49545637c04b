"""Migrations make, on SQLite and on an empty PostgreSQL, exactly the tables the code declares; they apply
once; a pasted file and `migrate` make the same schema; a file that fails leaves no mark; a file marked
applied whose objects are missing (pasted statement by statement past a failure) is applied again."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url

from smartplex_sync.errors import ConfigurationError
from smartplex_sync.migrate import MIGRATIONS_DIR, applied_versions, discover, migrate, missing, pending
from smartplex_sync.store import make_engine
from smartplex_sync.store.engine import OWN_SCHEMA
from smartplex_sync.store.tables import OWN_TABLES, SMARTPLEX_TABLES, metadata
from tests.conftest import both_backends
from tests.support.postgres import pg_tool
from tests.support.supabase import SERVICE_OWNER, SupabaseLike


@both_backends
def test_migrations_create_every_table_and_column_the_code_declares(engine: Engine) -> None:
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        schema = None if engine.dialect.name == "sqlite" else table.schema
        columns = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
        assert columns == {c.name for c in table.columns}, table.name
    assert missing(engine) == []


@both_backends
def test_second_run_is_a_no_op(engine: Engine) -> None:
    assert pending(engine) == []
    assert migrate(engine) == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_our_tables_live_in_a_schema_of_their_own(engine: Engine) -> None:
    """SmartPlex's tables in the current schema (public), ours in `smartplex_sync`, which Supabase's Data
    API does not publish."""
    inspector = inspect(engine)
    assert {t.name for t in SMARTPLEX_TABLES} <= set(inspector.get_table_names())
    assert set(inspector.get_table_names(schema=OWN_SCHEMA)) == {t.name for t in OWN_TABLES}
    assert applied_versions(engine) == {m.version for m in discover()}


def test_every_file_records_itself_so_pasted_files_count_as_applied() -> None:
    for migration in discover():
        assert (
            f"INSERT INTO {OWN_SCHEMA}.schema_migrations (version) VALUES ('{migration.version}') "
            "ON CONFLICT (version) DO NOTHING" in migration.sql
        )


# What a schema is made of, read from the catalogs of the current schema and ours. Names only, never oids.
SCHEMAS = f"(current_schema(), '{OWN_SCHEMA}')"
CATALOG_QUERIES = {
    "relations": f"""
        SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
               pg_get_userbyid(c.relowner), c.relacl::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN {SCHEMAS} ORDER BY 1, 2""",
    "columns": f"""
        SELECT table_schema, table_name, column_name, data_type, udt_name, character_maximum_length,
               numeric_precision, numeric_scale, column_default, is_nullable, is_identity,
               identity_generation, is_generated
        FROM information_schema.columns WHERE table_schema IN {SCHEMAS} ORDER BY 1, 2, 3""",
    "constraints": f"""
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace::regnamespace::text IN {SCHEMAS} ORDER BY 1, 2""",
    "indexes": f"""
        SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname IN {SCHEMAS} ORDER BY 1, 2, 3""",
    "policies": f"""
        SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_policies WHERE schemaname IN {SCHEMAS} ORDER BY 1, 2, 3""",
    "grants": f"""
        SELECT table_schema, table_name, grantee, privilege_type, is_grantable
        FROM information_schema.role_table_grants WHERE table_schema IN {SCHEMAS} ORDER BY 1, 2, 3, 4""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), md5(prosrc) FROM pg_proc
        WHERE pronamespace = current_schema()::regnamespace ORDER BY 1, 2""",
    "types": """
        SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)::text FROM pg_type t
        JOIN pg_enum e ON e.enumtypid = t.oid WHERE t.typnamespace = current_schema()::regnamespace
        GROUP BY 1 ORDER BY 1""",
    "migrations": f"SELECT version FROM {OWN_SCHEMA}.schema_migrations ORDER BY 1",
}


def catalog(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    for name, query in CATALOG_QUERIES.items():
        try:
            with conn.begin_nested():
                found[name] = [tuple(row) for row in conn.execute(text(query))]
        except Exception:  # no schema_migrations yet
            found[name] = []
    return found


def psql_file(url: str, path: Path) -> None:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(
        [pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), libpq],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_pasted_files_and_migrate_make_the_same_schema(supabase: SupabaseLike) -> None:
    """`psql -f` of every file in order, as a user pasting them into Supabase's SQL editor, and
    `smartplex-sync migrate`, each into a new database of the same owner: the catalogs are identical,
    and Supabase's Data API roles hold no privilege in our schema."""
    pasted, migrated = (supabase.create_database(owner=SERVICE_OWNER) for _ in range(2))
    for migration in discover():
        psql_file(supabase.direct(pasted, SERVICE_OWNER), migration.path)
    engine = make_engine(supabase.direct(migrated, SERVICE_OWNER))
    assert migrate(engine) == [m.version for m in discover()]
    engine.dispose()
    found = {}
    for database in (pasted, migrated):
        engine = make_engine(supabase.direct(database, SERVICE_OWNER))
        with engine.connect() as conn:
            found[database] = catalog(conn)
        engine.dispose()
    assert found[pasted] == found[migrated]
    grants = found[migrated]["grants"]
    assert {row[2] for row in grants if row[0] == "public"} >= {"anon", "authenticated", "service_role"}
    assert {row[2] for row in grants if row[0] == OWN_SCHEMA} == {SERVICE_OWNER}


@pytest.fixture
def postgres_engine(postgres_admin_url: str) -> Any:
    from tests.conftest import _fresh_postgres_database

    engine = make_engine(_fresh_postgres_database(postgres_admin_url))
    yield engine
    engine.dispose()


def test_a_file_that_fails_leaves_no_mark_and_nothing_of_itself(
    postgres_engine: Engine, tmp_path: Path
) -> None:
    for migration in discover():
        shutil.copy(migration.path, tmp_path / migration.path.name)
    (tmp_path / "0099_broken.sql").write_text(
        "CREATE TABLE smartplex_sync.half_made (id INTEGER);\n"
        "SELECT no_such_function();\n"
        "INSERT INTO smartplex_sync.schema_migrations (version) VALUES ('0099') ON CONFLICT (version) DO NOTHING;\n"
    )
    with pytest.raises(Exception, match="no_such_function"):
        migrate(postgres_engine, tmp_path)
    assert applied_versions(postgres_engine) == {m.version for m in discover()}
    assert not inspect(postgres_engine).has_table("half_made", schema=OWN_SCHEMA)
    (tmp_path / "0099_broken.sql").unlink()
    assert migrate(postgres_engine, tmp_path) == []


def test_a_file_marked_applied_but_not_whole_is_applied_again(postgres_engine: Engine) -> None:
    """Pasted statement by statement, past a failing one, a file records itself anyway: `migrate` sees
    what it lacks and applies every file again (they can all run twice)."""
    migrate(postgres_engine)
    with postgres_engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {OWN_SCHEMA}.arr_items"))
        conn.execute(text("ALTER TABLE webhook_log DROP COLUMN http_status"))
    assert set(missing(postgres_engine)) == {"arr_items", "webhook_log.http_status"}
    assert pending(postgres_engine) == []  # every file is marked applied
    assert migrate(postgres_engine) == []
    assert missing(postgres_engine) == []


def test_a_database_that_stays_short_of_a_column_is_an_error_naming_it(
    postgres_engine: Engine, tmp_path: Path
) -> None:
    for migration in discover():
        (tmp_path / migration.path.name).write_text(
            migration.sql.replace(
                "ALTER TABLE webhook_log ADD COLUMN IF NOT EXISTS http_status INTEGER;", ""
            ).replace("http_status INTEGER,", "")
        )
    with pytest.raises(ConfigurationError, match=r"webhook_log\.http_status"):
        migrate(postgres_engine, tmp_path)


def test_migrations_dir_holds_only_numbered_files() -> None:
    assert [m.path.name for m in discover()] == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
