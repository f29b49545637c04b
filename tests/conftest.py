"""Shared fixtures: real PostgreSQL and SQLite databases, and a real Prefect server, started once."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from prefect.context import refresh_global_settings_context
from sqlalchemy import Engine, text

from deployments.processes import free_port, start_prefect_server, stop
from simulators.demo import DemoWorld, build_world, create_demo_app, service_env
from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine
from smartplex_sync.store.accounts import configure
from tests.support import prefect_stack
from tests.support.postgres import postgres_cluster
from tests.support.supabase import SupabaseLike, supabase_like

_database_names = itertools.count()

# The modules that take longest (`pytest --durations=0`, summed per module), longest first. The workers
# take modules in collection order, so these go first and the short ones fill in around them; a module
# missing here only runs later, never less.
SLOWEST_MODULES = (
    "test_supervisor.py",
    "test_topology.py",
    "test_end_to_end.py",
    "test_secrets_leak.py",
    "test_data_path_model.py",
    "test_schedules_prefect.py",
    "test_gateway.py",
    "test_stack.py",
    "test_hostile_input.py",
    "test_plex_sync.py",
    "test_supabase_connections.py",
    "test_tautulli_sync.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slowest modules first (a stable sort: within a module, and among the rest, the order is kept)."""
    rank = {name: position for position, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def supabase() -> Iterator[SupabaseLike]:
    """A PostgreSQL reached as a Supabase project's is: TLS required, PgBouncer in transaction mode before
    it, and the Data API's roles (tests/support/supabase.py)."""
    with supabase_like() as found:
        yield found


def _fresh_postgres_database(admin_url: str) -> str:
    name = f"smartplex_test_{os.getpid()}_{next(_database_names)}"
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database URL: SQLite by default, PostgreSQL when parametrized with "postgres"."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgres":
        url = _fresh_postgres_database(request.getfixturevalue("postgres_admin_url"))
    elif backend == "pgbouncer":
        direct = _fresh_postgres_database(request.getfixturevalue("postgres_admin_url"))
        url = (
            request.getfixturevalue("pgbouncer_admin_url").rsplit("/", 1)[0] + "/" + direct.rsplit("/", 1)[1]
        )
    else:
        url = f"sqlite:///{tmp_path / 'smartplex.db'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh migrated database (see `database_url`)."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


both_backends = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


def settings_of(env: dict[str, str]) -> dict[str, str]:
    """SMARTPLEX_* variables as Settings' keyword arguments."""
    return {
        key.removeprefix("SMARTPLEX_").lower(): value
        for key, value in env.items()
        if key.startswith("SMARTPLEX_")
    }


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on loopback, with its own PREFECT_HOME; exported as PREFECT_API_URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    process, api_url = start_prefect_server(home, free_port(), home / "server.log")
    previous = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ["PREFECT_API_URL"] = api_url
    os.environ["PREFECT_HOME"] = str(home)
    refresh_global_settings_context()  # Prefect reads its settings once, at import
    try:
        yield api_url
    finally:
        stop(process)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        refresh_global_settings_context()


@pytest.fixture(scope="session")
def demo_app() -> tuple[DemoWorld, FastAPI]:
    """The demo world and the app that serves its five simulated services (for fault injection)."""
    world = build_world(seed=7, movies=40, shows=3, plays=60)
    return world, create_demo_app(world)


@pytest.fixture(scope="session")
def demo_services(demo_app: tuple[DemoWorld, FastAPI]) -> Iterator[tuple[DemoWorld, str]]:
    """Simulated Plex, Tautulli, Sonarr, Radarr and Overseerr (the demo world) on one loopback port."""
    world, app = demo_app
    with serve_in_thread(app) as base_url:
        yield world, base_url


@pytest.fixture(scope="session")
def prefect_deployments(
    prefect_api_url: str, demo_services: tuple[DemoWorld, str], tmp_path_factory: pytest.TempPathFactory
) -> prefect_stack.PrefectStack:
    """The `smartplex` process pool and every deployment of prefect.yaml on the test server (once).

    Flow runs get SMARTPLEX_DATABASE_URL = a migrated SQLite file of their own (`.database_url`), and
    the settings that point them at the demo services.
    """
    root = tmp_path_factory.mktemp("prefect-stack")
    database_url = f"sqlite:///{root / 'smartplex.db'}"
    smartplex = {
        "SMARTPLEX_DATABASE_URL": database_url,
        "SMARTPLEX_DATA_DIR": str(root),
        **service_env(demo_services[1]),
    }
    engine = make_engine(database_url)
    migrate(engine)
    configure(engine, Settings(**settings_of(smartplex)))  # the demo's server and services, as rows
    engine.dispose()
    env = prefect_stack.stack_env(prefect_api_url, smartplex)
    stack = prefect_stack.PrefectStack(prefect_api_url, env, database_url)
    prefect_stack.create_work_pool(env)
    prefect_stack.deploy(env)
    return stack


@pytest.fixture(scope="session")
def prefect_worker(
    prefect_deployments: prefect_stack.PrefectStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[prefect_stack.PrefectStack]:
    """A `prefect worker start --pool smartplex` polling the test server every 2 s, for the session."""
    log = tmp_path_factory.mktemp("prefect-worker") / "worker.log"
    worker = prefect_stack.start_worker(prefect_deployments, log)
    try:
        yield prefect_deployments
    finally:
        stop(worker)
