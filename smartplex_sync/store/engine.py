"""Engines for the embedded SQLite default and for PostgreSQL / Supabase, and the column types that read
the same on both."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import CHAR, DateTime, Engine, create_engine, event
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.types import TypeDecorator, TypeEngine

OWN_SCHEMA = "smartplex_sync"
"""The PostgreSQL schema of SmartPlex Sync's own tables (kept out of `public`, which Supabase's Data API
publishes). SQLite has no schemas: there they live beside SmartPlex's tables under the same names."""


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps them as naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class GUID(TypeDecorator[uuid.UUID]):
    """A UUID: PostgreSQL's `uuid`, canonical 36-character text on SQLite. Python sees `uuid.UUID`."""

    impl = CHAR(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(PG_UUID(as_uuid=True))
        return dialect.type_descriptor(CHAR(36))

    def process_bind_param(self, value: uuid.UUID | str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        if value is None or isinstance(value, uuid.UUID):
            return value
        return uuid.UUID(str(value))


def utcnow() -> datetime:
    return datetime.now(UTC)


DEFAULT_WAIT_SECONDS = 30.0


def _sqlite_pragmas(wait_seconds: float) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets the gateway write while flows and readers read; busy_timeout waits out other writers.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(wait_seconds * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


# Query parameters some guides add to pooler URLs that are not libpq options (psycopg would refuse them):
# Prisma's `pgbouncer=true` marks a transaction pooler, which every PostgreSQL engine here is ready for.
_NOT_LIBPQ_OPTIONS = ("pgbouncer",)


def make_engine(url: str, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Engine:
    """An engine for `url`. SQLite files get WAL mode and their folder created.

    `wait_seconds` bounds how long a statement waits for the database: for SQLite's write lock held by
    another process, for a PostgreSQL connection (connect timeout) or for one from the pool. Past it, the
    statement raises instead of hanging (the gateway answers 503 rather than keep a sender waiting).

    PostgreSQL URLs work as Supabase gives them, direct (5432) or through its transaction pooler (6543):
    libpq options such as `sslmode=require` pass through to the driver, and no server-side prepared
    statement is ever made. The code issues no `SET`, `LISTEN/NOTIFY` or advisory lock, which a
    transaction pooler would not keep from one transaction to the next."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": wait_seconds})
        event.listen(engine, "connect", _sqlite_pragmas(wait_seconds))
        return engine.execution_options(schema_translate_map={OWN_SCHEMA: None})
    # prepare_threshold=None: a transaction pooler (PgBouncer, Supavisor) cannot hold prepared statements.
    return create_engine(
        parsed.difference_update_query(_NOT_LIBPQ_OPTIONS),
        pool_pre_ping=True,
        pool_timeout=wait_seconds,
        connect_args={"prepare_threshold": None, "connect_timeout": max(1, math.ceil(wait_seconds))},
    )


def check_writable(engine: Engine, wait_seconds: float = 1.0) -> None:
    """Raise unless a write could start now: SQLite's write lock free within `wait_seconds` (another
    process may hold it), PostgreSQL reachable. Writes nothing."""
    if engine.dialect.name != "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        (saved,) = cursor.execute("PRAGMA busy_timeout").fetchone()
        cursor.execute(f"PRAGMA busy_timeout={int(wait_seconds * 1000)}")
        try:
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("ROLLBACK")
        finally:
            cursor.execute(f"PRAGMA busy_timeout={saved}")
            cursor.close()
    finally:
        raw.close()


@lru_cache
def get_engine(url: str | None = None, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Engine:
    """The process-wide engine for `url` (or the configured database) and `wait_seconds`."""
    if url is None:
        from smartplex_sync.settings import get_settings

        url = get_settings().sqlalchemy_url
    return make_engine(url, wait_seconds)
