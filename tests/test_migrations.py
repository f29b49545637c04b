"""Migrations apply to SQLite and PostgreSQL, once, and produce exactly the tables the code queries."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, select

from smartplex_sync.migrate import discover, migrate, pending, to_sqlite
from smartplex_sync.store.tables import metadata, sync_schedule
from tests.conftest import both_backends


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
        for word in ("JSONB", "TIMESTAMPTZ", "IDENTITY", "now()"):
            assert word not in sql, (migration.path.name, word)
