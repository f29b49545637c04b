"""The world of the data-path model (tests/test_data_path_model.py): two SmartPlex users with a Plex
server each, served by simulators (a Plex and a Tautulli per server, on one loopback port), their rows in
SmartPlex's `users`, `servers` and `integrations`, and the in-process gateway. Each example of the model
gives the simulators new libraries and histories; the rows of the users, servers and integrations stay.

The database is a migrated SQLite file, or a PostgreSQL built from SmartPlex's own SQL files
(`apply_smartplex_schema`) and then migrated, as an operator's Supabase project is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from simulators import plex as plex_sim
from simulators import tautulli
from simulators.plex_library import PlexLibrary
from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import make_engine
from tests.support.factories import add_integration, add_server, add_user
from tests.support.pipeline import flows_in_process
from tests.support.smartplex_schema import apply_smartplex_schema
from webhook_gateway.app import create_app

BACKENDS = ("sqlite", "smartplex-postgres")


@dataclass(frozen=True)
class Owner:
    """One user and their Plex server as SmartPlex's rows hold them, and the simulators behind it."""

    index: int
    name: str
    email: str
    secret: str  # users.webhook_secret: what their deliveries carry
    machine: str  # servers.machine_id, the Plex's machineIdentifier
    plex_token: str
    tautulli_key: str
    user_id: uuid.UUID = field(default=uuid.UUID(int=0))
    server_id: uuid.UUID = field(default=uuid.UUID(int=0))
    plex: Any = None  # plex_sim.SimulatorState
    tautulli: Any = None  # tautulli.SimulatorState


OWNERS = (
    Owner(0, "Alice's Plex", "alice@model.smartplex.local", "model-alice-secret", "model-plex-alice",
          "model-plex-token-alice", "model-tautulli-key-alice"),
    Owner(1, "Bob's Plex", "bob@model.smartplex.local", "model-bob-secret", "model-plex-bob",
          "model-plex-token-bob", "model-tautulli-key-bob"),
)  # fmt: skip


@dataclass
class Services:
    """What the model drives: the owners (with their simulators), the gateway, the database."""

    owners: tuple[Owner, ...]
    gateway: TestClient
    engine: Engine
    artifacts: list[dict[str, Any]]
    stats: dict[str, int] = field(default_factory=lambda: {"examples": 0, "steps": 0, "runs": 0})
    seconds: dict[str, float] = field(default_factory=dict)


def model_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated database: SQLite, or SmartPlex's own PostgreSQL schema and then ours."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'model.db'}"
    else:
        from tests.conftest import _fresh_postgres_database

        url = _fresh_postgres_database(request.getfixturevalue("postgres_admin_url"))
        apply_smartplex_schema(url)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


def _simulators() -> tuple[FastAPI, list[tuple[FastAPI, FastAPI]]]:
    """Each owner's Plex and Tautulli under /<index>/plex and /<index>/tautulli of one app."""
    app = FastAPI()
    apps = []
    for owner in OWNERS:
        plex_app = plex_sim.create_plex_app(
            PlexLibrary(machine_identifier=owner.machine), token=owner.plex_token
        )
        tautulli_app = tautulli.create_tautulli_app(
            tautulli.TautulliHistory(),
            api_key=owner.tautulli_key,
            pms_identifier=owner.machine,
            pms_name=owner.name,
        )
        app.mount(f"/{owner.index}/plex", plex_app)
        app.mount(f"/{owner.index}/tautulli", tautulli_app)
        apps.append((plex_app, tautulli_app))
    return app, apps


@contextmanager
def model_world(database_url: str, monkeypatch: pytest.MonkeyPatch, *, guard: float) -> Iterator[Services]:
    """The simulators served, the owners' rows written, the gateway up and the flows in process;
    `guard` is SMARTPLEX_DELETE_GUARD_FRACTION."""
    app, apps = _simulators()
    with serve_in_thread(app) as base:
        for name in ("PLEX_URL", "PLEX_TOKEN", "TAUTULLI_URL", "TAUTULLI_API_KEY", "SONARR_URL",
                     "SONARR_API_KEY", "RADARR_URL", "RADARR_API_KEY", "OVERSEERR_URL", "OVERSEERR_API_KEY",
                     "WEBHOOK_TOKEN"):  # fmt: skip
            monkeypatch.delenv(f"SMARTPLEX_{name}", raising=False)  # every server and service is a row
        env = {
            "SMARTPLEX_DATABASE_URL": database_url,
            "SMARTPLEX_PLEX_SCAN_GRACE_SECONDS": "0",  # the model decides when Plex scans
            "SMARTPLEX_INCREMENTAL_OVERLAP_SECONDS": "0",
            "SMARTPLEX_DELETE_GUARD_FRACTION": str(guard),
            "SMARTPLEX_HTTP_TIMEOUT_SECONDS": "5",
            # One gateway serves every example, faster than any sender: the long run went over Sonarr's
            # 300-delivery burst and got a 429 (limits have their own tests: test_limits.py).
            "SMARTPLEX_RATE_LIMIT_PER_SECOND": "0",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        engine = make_engine(database_url)
        owners = []
        with engine.begin() as conn:
            for owner, (plex_app, tautulli_app) in zip(OWNERS, apps, strict=True):
                user_id = add_user(conn, owner.email, secret=owner.secret)
                server_id = add_server(conn, user_id, name=owner.name, machine_id=owner.machine,
                                       url=f"{base}/{owner.index}/plex", token=owner.plex_token)  # fmt: skip
                add_integration(conn, user_id, "tautulli", url=f"{base}/{owner.index}/tautulli",
                                api_key=owner.tautulli_key, server_id=server_id)  # fmt: skip
                owners.append(
                    replace(
                        owner,
                        user_id=user_id,
                        server_id=server_id,
                        plex=plex_app.state.plex,
                        tautulli=tautulli_app.state.tautulli,
                    )
                )
        engine.dispose()
        artifacts = flows_in_process(monkeypatch)
        gateway_app = create_app(Settings(), background=False)
        with TestClient(gateway_app) as gateway:
            yield Services(tuple(owners), gateway, gateway_app.state.gateway.engine, artifacts)
    get_settings.cache_clear()
