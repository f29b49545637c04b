"""SmartPlex's `media_items` on PostgreSQL: a full Plex library sync of the 20,000-item library of
`bench.plex_sync`, against SmartPlex's own way of writing the same rows, in the same run.

The database is built as a SmartPlex operator builds it: SmartPlex's own SQL files (`schema.sql`, `rls.sql`
and its migrations, `tests/support/smartplex_schema.py`), then our migrations (`smartplex_sync.migrate`)
and the rows the settings make (the owner and their server). It runs in a throwaway PostgreSQL cluster of
the machine's binaries (`tests/support/postgres.py`: loopback, `fsync=off`), or in a new database of
SMARTPLEX_BENCH_POSTGRES_URL's server when that is set.

- ours: the real flow (`flows.library_sync.plex_library_sync`, through Prefect as in `bench.plex_sync`)
  against the simulator in its own process, writing a page of rows per statement and transaction;
- SmartPlex's way (apps/api `routes/plex_sync.py`): every item upserted on its own with
  `supabase.table('media_items').upsert(media_data, on_conflict='server_id,plex_id').execute()`, one HTTP
  round trip to PostgREST per item, i.e. one `INSERT ... ON CONFLICT (server_id, plex_id) DO UPDATE`
  statement and its commit per item. Here: the same rows (the first BASELINE_SAMPLE the flow wrote, read
  back) written that way into a second server's rows, timed, and the rate extrapolated per item. Without
  PostgREST, HTTP and the network (and SmartPlex's `asyncio.sleep(0.01)` per episode) the baseline is
  faster here than SmartPlex's sync is in real life: the ratio is a floor.

`python -m bench smartplex_media` writes its section into docs/benchmarks.md.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SAWarning

from bench._stack import restore_environ
from bench.plex_sync import EPISODES, MOVIES, SEASONS, SHOWS, TOKEN, _simulator

BASELINE_SAMPLE = 1_000
GOAL_RATE, GOAL_RATIO = 2_000, 50
SETTINGS = ("SMARTPLEX_DATABASE_URL", "SMARTPLEX_PLEX_URL", "SMARTPLEX_PLEX_TOKEN", "SMARTPLEX_OWNER_EMAIL")


@contextmanager
def _postgres() -> Iterator[tuple[str, str]]:
    """A new, empty database: (its URL, where it lives)."""
    from tests.support.postgres import postgres_cluster

    given = os.environ.get("SMARTPLEX_BENCH_POSTGRES_URL")
    if not given:
        with postgres_cluster() as url:
            yield url, "a throwaway PostgreSQL cluster on loopback (fsync=off)"
        return
    from smartplex_sync.store import make_engine

    name = f"bench_smartplex_media_{uuid.uuid4().hex[:8]}"
    admin = make_engine(given.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(admin.url).set(database=name).render_as_string(hide_password=False)
        yield url, "a new database of SMARTPLEX_BENCH_POSTGRES_URL's server"
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.scalar(text("SHOW server_version"))).split()[0]


def smartplex_way(engine: Engine, rows: list[dict[str, Any]], server_id: uuid.UUID) -> float:
    """Seconds to write `rows` into `server_id`'s media_items one upsert statement and commit per item."""
    from smartplex_sync.store.tables import media_items

    keys = ("server_id", "plex_id")
    began = time.perf_counter()
    for row in rows:
        values = {**row, "server_id": server_id}
        statement = insert(media_items).values(values)  # id: the column's default (uuid_generate_v4())
        statement = statement.on_conflict_do_update(
            index_elements=[media_items.c.server_id, media_items.c.plex_id],
            set_={name: statement.excluded[name] for name in values if name not in keys},
        )
        with engine.begin() as conn, warnings.catch_warnings():  # one statement and transaction per item
            warnings.simplefilter(
                "ignore", SAWarning
            )  # `id` left out on purpose: SmartPlex's default makes it
            conn.execute(statement)
    return time.perf_counter() - began


def main() -> str:
    from smartplex_sync.migrate import migrate
    from smartplex_sync.settings import get_settings
    from smartplex_sync.store import make_engine
    from smartplex_sync.store.accounts import configure, configure_from_settings
    from smartplex_sync.store.tables import media_items
    from tests.support.smartplex_schema import apply_smartplex_schema

    context = multiprocessing.get_context("spawn")
    control, child_end = context.Pipe()
    simulator = context.Process(target=_simulator, args=(child_end,), daemon=True)
    simulator.start()
    plex_url = control.recv()
    saved = {key: os.environ.get(key) for key in SETTINGS}
    try:
        with _postgres() as (database_url, where):
            applied = apply_smartplex_schema(database_url)
            engine = make_engine(database_url)
            migrate(engine)
            version = _server_version(engine)
            os.environ.update(
                SMARTPLEX_DATABASE_URL=database_url,
                SMARTPLEX_PLEX_URL=plex_url,
                SMARTPLEX_PLEX_TOKEN=TOKEN,
                SMARTPLEX_OWNER_EMAIL="owner@bench.smartplex.local",
            )
            get_settings.cache_clear()
            owner = configure(engine, get_settings())
            assert owner is not None and owner.server_id is not None
            server_id = owner.server_id

            from flows.library_sync import plex_library_sync
            from smartplex_sync.requests import PlexLibrarySync, PlexScope

            plex_library_sync(PlexLibrarySync.on([server_id], PlexScope(rating_keys=["0"])))  # warm-up
            request = PlexLibrarySync.on([server_id], PlexScope(mode="full"))
            began = time.perf_counter()
            result = plex_library_sync(request)
            wall = time.perf_counter() - began
            ours = result["servers"][str(server_id)]
            inside = float(result["seconds"])
            columns = [c for c in media_items.c if c.name not in ("id", "server_id")]
            with engine.connect() as conn:
                stored = conn.scalar(
                    select(func.count()).select_from(media_items).where(media_items.c.server_id == server_id)
                )
                sample = [
                    dict(row._mapping)
                    for row in conn.execute(
                        select(*columns)
                        .where(media_items.c.server_id == server_id)
                        .order_by(media_items.c.added_at, media_items.c.plex_id)
                        .limit(BASELINE_SAMPLE)
                    )
                ]
            other = configure_from_settings(  # a second server to write SmartPlex's way into
                engine,
                owner_email="baseline@bench.smartplex.local",
                plex_url=plex_url,
                plex_token=TOKEN,
                plex_server_name="SmartPlex's way",
                services={},
            )
            assert other is not None and other.server_id is not None
            baseline_seconds = smartplex_way(engine, sample, other.server_id)
            again_seconds = smartplex_way(engine, sample, other.server_id)  # the same rows again: updates
            engine.dispose()
    finally:
        control.send("stop")
        simulator.join(20)
        restore_environ(saved)
        get_settings.cache_clear()

    written = int(ours["added"])
    rate_inside, rate_wall = written / inside, written / wall
    baseline_rate = len(sample) / baseline_seconds
    again_rate = len(sample) / again_seconds
    ratio = rate_inside / baseline_rate
    extrapolated = written / baseline_rate
    rate_met, ratio_met = rate_inside >= GOAL_RATE, ratio >= GOAL_RATIO
    skipped = ", ".join(applied.statement_by_statement) or "none"
    lines = [
        "## SmartPlex's `media_items` on PostgreSQL: a full library sync",
        "",
        f"Library: {MOVIES:,} movies and {SHOWS} shows x {SEASONS} seasons x {EPISODES} episodes (as in the "
        f"Plex library sync above), simulator in its own process. PostgreSQL {version}, {where}; the schema "
        "built from SmartPlex's own SQL files (schema.sql, rls.sql, migrations 001–021; run statement by "
        f"statement where a file failed whole: {skipped}), then our migrations. Ours: the real "
        "`plex-library-sync` flow through Prefect, a full sync into an empty `media_items`. SmartPlex's way "
        "(apps/api `routes/plex_sync.py`): one `upsert(..., on_conflict='server_id,plex_id')` per item, i.e. "
        "one `INSERT ... ON CONFLICT (server_id, plex_id) DO UPDATE` statement and commit per item, timed on "
        f"the first {len(sample):,} rows the flow wrote (same columns and values, into a second server) and "
        "extrapolated per item. It runs here without PostgREST, HTTP or a network hop (each a round trip per "
        "item in SmartPlex), so the ratio below is a floor.",
        "",
        "| | items | seconds | items/s |",
        "|---|---:|---:|---:|",
        f"| ours: full sync, inside the flow | {written:,} | {inside:.2f} | **{rate_inside:,.0f}** |",
        f"| ours: full sync, end to end (flow call) | {written:,} | {wall:.2f} | {rate_wall:,.0f} |",
        f"| SmartPlex's way: one upsert + commit per item, new rows | {len(sample):,} | {baseline_seconds:.2f} "
        f"| {baseline_rate:,.0f} |",
        f"| SmartPlex's way: the same rows again (updates) | {len(sample):,} | {again_seconds:.2f} "
        f"| {again_rate:,.0f} |",
        f"| SmartPlex's way, extrapolated to the whole library | {written:,} | {extrapolated:.1f} | "
        f"{baseline_rate:,.0f} |",
        "",
        f"- Rows in `media_items` for the server after the sync: {stored:,} (the flow reported {written:,} "
        "added).",
        f"- **{ratio:.1f}×** SmartPlex's way, inside the flow ({rate_wall / baseline_rate:.1f}× end to end).",
        f"- Goal ≥ {GOAL_RATE:,} items/s: **{'met' if rate_met else 'not met'}** ({rate_inside:,.0f} items/s "
        f"inside the flow). Goal ≥ {GOAL_RATIO}× SmartPlex's way: **{'met' if ratio_met else 'not met'}** "
        f"({ratio:.1f}×).",
    ]
    if not ratio_met:
        lines.append(
            f"- Against a local database a per-item statement costs only "
            f"{baseline_seconds / len(sample) * 1000:.2f} ms; through supabase-py each item is also an HTTPS "
            "request to PostgREST (tens of ms to a hosted Supabase), which this baseline does not include. "
            "The 50× goal is not reached against the baseline measured here."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main())
