"""A PostgreSQL reached the way a Supabase project's database is reached, for the tests of that path.

- The cluster requires TLS on TCP (`sslmode=require`), like the direct connection and the session pooler
  on 5432.
- PgBouncer in transaction mode, TLS required too, stands for the transaction pooler on 6543.
- The roles the Data API uses exist as Supabase creates them: `anon`, `authenticated` (NOLOGIN
  NOINHERIT) and `service_role` (BYPASSRLS), reached through the `authenticator` login role, with the
  default privileges Supabase grants them on every new table of `public`.
- `service_owner` is a login role without superuser, like Supabase's `postgres`: it owns the tables it
  migrates, and an owner is not subject to row level security.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import make_url

from smartplex_sync.store import make_engine
from tests.support.pgbouncer import pgbouncer
from tests.support.postgres import postgres_cluster

DATA_API_ROLES = ("anon", "authenticated", "service_role")
SERVICE_OWNER = "service_owner"

_ROLES = f"""
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT;
GRANT anon, authenticated, service_role TO authenticator;
CREATE ROLE {SERVICE_OWNER} LOGIN NOSUPERUSER;
"""

# Per database; set in template1 so that every database created afterwards starts with them.
_DATABASE_DEFAULTS = f"""
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres, {SERVICE_OWNER} IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres, {SERVICE_OWNER} IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres, {SERVICE_OWNER} IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""

_names = itertools.count()


def _with_database(url: str, database: str, user: str | None = None) -> str:
    parsed = make_url(url).set(database=database)
    if user:
        parsed = parsed.set(username=user)
    return parsed.render_as_string(hide_password=False)


@dataclass(frozen=True)
class SupabaseLike:
    """Admin URLs (database `postgres`, `?sslmode=require`) of the cluster and of PgBouncer before it."""

    direct_url: str
    pooler_url: str

    def create_database(self, owner: str = "postgres") -> str:
        """A new empty database owned by `owner`; returns its name."""
        name = f"supabase_{os.getpid()}_{next(_names)}"
        admin = make_engine(self.direct_url).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{owner}"'))
        admin.dispose()
        return name

    def direct(self, database: str, user: str | None = None) -> str:
        return _with_database(self.direct_url, database, user)

    def pooled(self, database: str, user: str | None = None) -> str:
        return _with_database(self.pooler_url, database, user)


@contextmanager
def supabase_like() -> Iterator[SupabaseLike]:
    with postgres_cluster(tls=True) as admin_url:
        direct = admin_url + "?sslmode=require"
        engine = make_engine(direct).execution_options(isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(_ROLES)
        engine.dispose()
        template = make_engine(_with_database(direct, "template1"))
        with template.begin() as conn:
            conn.exec_driver_sql(_DATABASE_DEFAULTS)
        template.dispose()
        with pgbouncer(admin_url, tls=True, users=("postgres", SERVICE_OWNER, "authenticator")) as pooler:
            yield SupabaseLike(direct, pooler + "?sslmode=require")
