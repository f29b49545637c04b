"""Engines for the embedded SQLite default and for PostgreSQL / Supabase."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator


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


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the gateway write while flows and readers read; busy_timeout waits out the other writers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Query parameters some guides add to pooler URLs that are not libpq options (psycopg would refuse them):
# Prisma's `pgbouncer=true` marks a transaction pooler, which every PostgreSQL engine here is ready for.
_NOT_LIBPQ_OPTIONS = ("pgbouncer",)


def make_engine(url: str) -> Engine:
    """An engine for `url`. SQLite files get WAL mode and their folder created.

    PostgreSQL URLs work as Supabase gives them, direct (5432) or through its transaction pooler (6543):
    libpq options such as `sslmode=require` pass through to the driver, and no server-side prepared
    statement is ever made. The code issues no `SET`, `LISTEN/NOTIFY` or advisory lock, which a
    transaction pooler would not keep from one transaction to the next."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # prepare_threshold=None: a transaction pooler (PgBouncer, Supavisor) cannot hold prepared statements.
    return create_engine(
        parsed.difference_update_query(_NOT_LIBPQ_OPTIONS),
        pool_pre_ping=True,
        connect_args={"prepare_threshold": None},
    )


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for `url`, or for the configured database."""
    if url is None:
        from smartplex_sync.settings import get_settings

        url = get_settings().sqlalchemy_url
    return make_engine(url)
