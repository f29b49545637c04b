"""Bring the configured database to the shape SmartPlex Sync needs; `smartplex-sync migrate`.

PostgreSQL and Supabase: apply `migrations/NNNN_*.sql` in order, each once, each in one transaction
together with the mark it leaves in `smartplex_sync.schema_migrations`, so a file that fails leaves no
mark. The files are written to be pasted into Supabase's SQL editor as well, and every one of them can be
run again. After them, every table and column the code uses is checked: when one is missing (a file
pasted statement by statement, past a failing statement; a SmartPlex schema that drifted), every file is
applied again and the check repeated, and a database still short of something is an error naming it.

SQLite (the embedded default): the tables are made from their declarations (`store.tables`), and a column
declared later is added to a table made earlier.

A database made by SmartPlex Sync 0.1, whose tables were of its own design, is first upgraded to
SmartPlex's (`store.legacy`), keeping its rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, inspect, text

from smartplex_sync.errors import ConfigurationError
from smartplex_sync.store import legacy
from smartplex_sync.store.engine import OWN_SCHEMA
from smartplex_sync.store.tables import metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: migration files are named NNNN_snake_case.sql")
        migrations.append(Migration(match.group(1), path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number in {directory}")
    return migrations


def _schema_of(engine: Engine, table: Table) -> str | None:
    return None if engine.dialect.name == "sqlite" else table.schema


def missing(engine: Engine) -> list[str]:
    """`table` or `table.column` for everything the code uses that the database lacks. The per-user column
    of `sync_schedule` is optional: SmartPlex's migration 005 made the table without it."""
    inspector = inspect(engine)
    gaps = []
    for table in metadata.sorted_tables:
        schema = _schema_of(engine, table)
        if not inspector.has_table(table.name, schema=schema):
            gaps.append(table.name)
            continue
        present = {column["name"] for column in inspector.get_columns(table.name, schema=schema)}
        gaps += [
            f"{table.name}.{column.name}"
            for column in table.columns
            if column.name not in present and column.info.get("shape") != "per-user"
        ]
    return gaps


def applied_versions(engine: Engine) -> set[str]:
    if not inspect(engine).has_table("schema_migrations", schema=OWN_SCHEMA):
        return set()
    with engine.connect() as conn:
        return set(conn.scalars(text(f"SELECT version FROM {OWN_SCHEMA}.schema_migrations")))


def pending(engine: Engine, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The files not applied yet (PostgreSQL), or everything as one step while a table or column is
    missing (SQLite)."""
    if engine.dialect.name == "sqlite":
        return [] if not missing(engine) else discover(directory)
    done = applied_versions(engine)
    return [m for m in discover(directory) if m.version not in done]


def _apply(conn: Connection, migration: Migration) -> None:
    conn.exec_driver_sql(migration.sql)


def _apply_files(engine: Engine, migrations: list[Migration]) -> list[str]:
    for migration in migrations:
        with engine.begin() as conn:
            _apply(conn, migration)
    return [m.version for m in migrations]


def _sqlite_schema(conn: Connection) -> list[str]:
    """Create the missing tables, add the missing columns; describe what was done."""
    inspector = inspect(conn)
    done = []
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(conn)
            done.append(f"created {table.name}")
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            default = f" DEFAULT {column.server_default.arg}" if column.server_default is not None else ""  # type: ignore[attr-defined]
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}{default}')
            done.append(f"added {table.name}.{column.name}")
    return done


def apply_schema(conn: Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Make the tables and columns the code needs within `conn`'s transaction (every file on PostgreSQL)."""
    if conn.dialect.name == "sqlite":
        return _sqlite_schema(conn)
    migrations = discover(directory)
    for migration in migrations:
        _apply(conn, migration)
    return [m.version for m in migrations]


def migrate(engine: Engine, directory: Path = MIGRATIONS_DIR, *, owner_email: str | None = None) -> list[str]:
    """Apply what is pending; return what was done (empty the second time).

    `owner_email`: whose rows an upgraded 0.1 database's are (default SMARTPLEX_OWNER_EMAIL)."""
    done: list[str] = []
    if legacy.is_legacy(engine):
        if owner_email is None:
            from smartplex_sync.settings import get_settings

            owner_email = get_settings().owner_email
        with engine.begin() as conn:
            done += legacy.upgrade(conn, owner_email, lambda c: apply_schema(c, directory))
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            done += _sqlite_schema(conn)
        return done
    done += _apply_files(engine, pending(engine, directory))
    if missing(engine):
        _apply_files(engine, discover(directory))
    if gaps := missing(engine):
        raise ConfigurationError(
            f"the database still lacks {', '.join(gaps)} after every migration ran: "
            "see docs/supabase.md (You already run SmartPlex)"
        )
    return done
