"""SmartPlex's users, servers and integrations: who owns which Plex server, with which credentials, and
which Tautulli, Sonarr, Radarr and Overseerr serve it.

SmartPlex keeps these rows (its UI and Plex sign-in write them); the syncs read them. The environment
settings stay for one server without SmartPlex: `configure_from_settings` creates or updates the rows they
describe (a user `SMARTPLEX_OWNER_EMAIL`, a server `SMARTPLEX_PLEX_URL`, an integration per configured
service), with ids derived from the owner, so replicas starting together write the same rows.

An integration serves a server the way SmartPlex picks one (apps/api `cascade_deletion_service`): the
server owner's, of that service, `status = 'active'`, with `server_id` that server's or NULL (all of the
owner's servers); one of that server's before a NULL one.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from smartplex_sync.models import Source
from smartplex_sync.settings import Settings
from smartplex_sync.store.engine import utcnow
from smartplex_sync.store.tables import integrations, servers, users

ENVIRONMENT = "environment"
"""`servers.config.managed_by` / `integrations.config.managed_by` of the rows the settings made."""
_NAMESPACE = uuid.UUID("4c7b1f0e-58c2-4c9e-9d62-7a3e8f1b2d60")


@dataclass(frozen=True)
class PlexServer:
    """A `servers` row, with what a sync needs to reach it. `token` is a secret: never log it."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    url: str
    machine_id: str | None
    token: str | None

    def __repr__(self) -> str:  # the token never reaches a log line or a Prefect parameter
        return f"PlexServer({self.name!r}, {self.id}, machine {self.machine_id})"


@dataclass(frozen=True)
class Integration:
    """An `integrations` row: a Tautulli, Sonarr, Radarr or Overseerr of a user. `api_key` is a secret."""

    id: uuid.UUID
    user_id: uuid.UUID
    server_id: uuid.UUID | None
    service: str
    name: str
    url: str | None
    api_key: str | None

    def __repr__(self) -> str:
        return f"Integration({self.service} {self.name!r}, {self.id})"


@dataclass(frozen=True)
class ServerFacts:
    """What attribution needs to know of a server: its owner, its Plex machine, the services serving it."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    machine_id: str | None
    services: frozenset[str]


def _plex_server(row: Any) -> PlexServer:
    return PlexServer(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        url=(row.preferred_connection_url or row.url).rstrip("/"),
        machine_id=row.machine_id,
        token=row.plex_token,
    )


_SERVER_COLUMNS = (
    servers.c.id,
    servers.c.user_id,
    servers.c.name,
    servers.c.url,
    servers.c.preferred_connection_url,
    servers.c.machine_id,
    servers.c.plex_token,
)


def plex_servers(conn: Connection, server_ids: Collection[uuid.UUID] | None = None) -> list[PlexServer]:
    """These servers (every server with `None`), in a stable order."""
    statement = select(*_SERVER_COLUMNS).order_by(servers.c.created_at, servers.c.id)
    if server_ids is not None:
        statement = statement.where(servers.c.id.in_(list(server_ids)))
    return [_plex_server(row) for row in conn.execute(statement)]


def server_names(conn: Connection, server_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    ids = list(set(server_ids))
    if not ids:
        return {}
    return {
        row.id: row.name
        for row in conn.execute(select(servers.c.id, servers.c.name).where(servers.c.id.in_(ids)))
    }


def servers_of(conn: Connection, user_ids: Collection[uuid.UUID] | None) -> list[uuid.UUID]:
    """The ids of these users' servers (every server with `None`)."""
    statement = select(servers.c.id).order_by(servers.c.created_at, servers.c.id)
    if user_ids is not None:
        statement = statement.where(servers.c.user_id.in_(list(user_ids)))
    return list(conn.scalars(statement))


def _serving(service: str, server_id: Any, owner_id: Any) -> Any:
    return (
        (integrations.c.service == service)
        & (integrations.c.status == "active")
        & (integrations.c.user_id == owner_id)
        & or_(integrations.c.server_id == server_id, integrations.c.server_id.is_(None))
    )


def integration_for(conn: Connection, service: str, server: PlexServer) -> Integration | None:
    """The integration of `service` that serves `server` (see the module docstring), or None."""
    row = conn.execute(
        select(
            integrations.c.id,
            integrations.c.user_id,
            integrations.c.server_id,
            integrations.c.name,
            integrations.c.url,
            integrations.c.api_key,
        )
        .where(_serving(service, server.id, server.user_id))
        .order_by(case((integrations.c.server_id.is_(None), 1), else_=0), integrations.c.created_at)
        .limit(1)
    ).first()
    if row is None:
        return None
    return Integration(row.id, row.user_id, row.server_id, service, row.name, row.url, row.api_key)


def server_facts(conn: Connection, user_id: uuid.UUID | None) -> list[ServerFacts]:
    """Every server of `user_id` (of every user with None), with the services that serve each."""
    statement = select(servers.c.id, servers.c.user_id, servers.c.name, servers.c.machine_id).order_by(
        servers.c.created_at, servers.c.id
    )
    if user_id is not None:
        statement = statement.where(servers.c.user_id == user_id)
    rows = conn.execute(statement).all()
    if not rows:
        return []
    owners = {row.user_id for row in rows}
    active = conn.execute(
        select(integrations.c.user_id, integrations.c.server_id, integrations.c.service).where(
            integrations.c.status == "active", integrations.c.user_id.in_(list(owners))
        )
    ).all()
    facts = []
    for row in rows:
        services = {
            str(i.service) for i in active if i.user_id == row.user_id and i.server_id in (None, row.id)
        }
        facts.append(ServerFacts(row.id, row.user_id, row.name, row.machine_id, frozenset(services)))
    return facts


def webhook_secrets(conn: Connection) -> list[tuple[uuid.UUID, str]]:
    """(user id, webhook secret) of every user who has one."""
    rows = conn.execute(select(users.c.id, users.c.webhook_secret).where(users.c.webhook_secret.is_not(None)))
    return [(row.id, row.webhook_secret) for row in rows if row.webhook_secret]


def user_id_by_email(conn: Connection, email: str) -> uuid.UUID | None:
    return conn.scalar(select(users.c.id).where(func.lower(users.c.email) == email.lower()))


def record_server_seen(
    conn: Connection,
    server_id: uuid.UUID,
    *,
    machine_id: str,
    version: str | None,
    platform: str | None,
    seen_at: datetime | None = None,
) -> None:
    """Plex answered for this server: its machine id (kept when known), version, platform, online now."""
    conn.execute(
        update(servers)
        .where(servers.c.id == server_id)
        .values(
            machine_id=func.coalesce(servers.c.machine_id, machine_id),
            version=version,
            platform=platform,
            status="online",
            last_seen_at=seen_at or utcnow(),
            updated_at=seen_at or utcnow(),
        )
    )


# ------------------------------------------------------------------------------ rows from the settings


@dataclass(frozen=True)
class ServiceSettings:
    url: str
    api_key: str


@dataclass(frozen=True)
class ConfiguredOwner:
    """What `configure_from_settings` made: the owner, and their server when SMARTPLEX_PLEX_URL is set."""

    user_id: uuid.UUID
    server_id: uuid.UUID | None


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def env_server_id(owner_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"server:{owner_id}")


def configure_from_settings(
    engine: Engine,
    *,
    owner_email: str,
    plex_url: str | None,
    plex_token: str | None,
    plex_server_name: str,
    services: dict[str, ServiceSettings],
) -> ConfiguredOwner | None:
    """Create or update the rows the environment settings describe; None when they describe nothing.

    The owner keeps the role and webhook secret they have; a new one is an admin with a random secret.
    Integrations the settings made earlier and no longer name are set inactive, never deleted.
    """
    if plex_url is None and not services:
        return None
    now = utcnow()
    with engine.begin() as conn:
        owner_id = _owner(conn, owner_email, now)
        server_id = None
        if plex_url is not None:
            server_id = _environment_server(conn, owner_id, plex_server_name, plex_url, plex_token, now)
        _environment_integrations(conn, owner_id, server_id, services, now)
    return ConfiguredOwner(owner_id, server_id)


def _owner(conn: Connection, email: str, now: datetime) -> uuid.UUID:
    """The user with `email`, made an admin with a random webhook secret if there is none."""
    new_user = {"display_name": "SmartPlex Sync", "role": "admin", "webhook_secret": secrets.token_hex(32)}
    conn.execute(
        _insert(conn)(users)
        .values(id=uuid.uuid4(), email=email, preferences={}, created_at=now, updated_at=now, **new_user)
        .on_conflict_do_nothing(index_elements=["email"])
    )
    owner_id = user_id_by_email(conn, email)
    assert owner_id is not None
    return owner_id


def _environment_server(
    conn: Connection, owner_id: uuid.UUID, name: str, url: str, token: str | None, now: datetime
) -> uuid.UUID:
    """The owner's SMARTPLEX_PLEX_URL server (one id per owner), created or brought up to date."""
    server_id = env_server_id(owner_id)
    values: dict[str, Any] = {
        "name": name, "url": url, "plex_token": token, "config": {"managed_by": ENVIRONMENT}, "updated_at": now,
    }  # fmt: skip
    statement = _insert(conn)(servers).values(
        id=server_id, user_id=owner_id, status="offline", created_at=now, **values
    )
    conn.execute(statement.on_conflict_do_update(index_elements=["id"], set_=values))
    return server_id


def _environment_integrations(
    conn: Connection,
    owner_id: uuid.UUID,
    server_id: uuid.UUID | None,
    services: dict[str, ServiceSettings],
    now: datetime,
) -> None:
    """One active "<Service> (environment)" integration per configured service; the others inactive."""
    named = [_integration_name(service) for service in services]
    conn.execute(
        update(integrations)
        .where(
            integrations.c.user_id == owner_id,
            integrations.c.name.like("% (environment)"),
            integrations.c.name.not_in(named) if named else true(),
        )
        .values(status="inactive", updated_at=now)
    )
    for service, configured in services.items():
        values = {
            "url": configured.url,
            "api_key": configured.api_key,
            "server_id": server_id,
            "status": "active",
            "config": {"managed_by": ENVIRONMENT},
            "updated_at": now,
        }
        statement = _insert(conn)(integrations).values(
            id=uuid.uuid5(_NAMESPACE, f"integration:{owner_id}:{service}"),
            user_id=owner_id,
            service=service,
            name=_integration_name(service),
            created_at=now,
            **values,
        )
        conn.execute(
            statement.on_conflict_do_update(index_elements=["user_id", "service", "name"], set_=values)
        )


def _integration_name(service: str) -> str:
    return f"{service.capitalize()} (environment)"


def configured_services(settings: Settings) -> dict[str, ServiceSettings]:
    """The services SMARTPLEX_<SERVICE>_URL and _API_KEY describe."""
    found = {}
    for service in (source.value for source in Source if source is not Source.PLEX):  # Plex: servers
        url, key = getattr(settings, f"{service}_url"), getattr(settings, f"{service}_api_key")
        if url and key is not None and key.get_secret_value():
            found[service] = ServiceSettings(url, key.get_secret_value())
    return found


def configure(engine: Engine, settings: Settings) -> ConfiguredOwner | None:
    """`configure_from_settings` with the values of `settings`."""
    return configure_from_settings(
        engine,
        owner_email=settings.owner_email,
        plex_url=settings.plex_url,
        plex_token=settings.plex_token.get_secret_value() if settings.plex_token else None,
        plex_server_name=settings.plex_server_name,
        services=configured_services(settings),
    )


def integration_rows(conn: Connection) -> list[Integration]:
    """Every active Tautulli, Sonarr, Radarr and Overseerr integration."""
    rows = conn.execute(
        select(
            integrations.c.id,
            integrations.c.user_id,
            integrations.c.server_id,
            integrations.c.service,
            integrations.c.name,
            integrations.c.url,
            integrations.c.api_key,
        )
        .where(
            integrations.c.status == "active",
            integrations.c.service.in_(["tautulli", "sonarr", "radarr", "overseerr"]),
        )
        .order_by(integrations.c.service, integrations.c.name)
    )
    return [Integration(r.id, r.user_id, r.server_id, str(r.service), r.name, r.url, r.api_key) for r in rows]


def user_emails(conn: Connection, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not user_ids:
        return {}
    rows = conn.execute(select(users.c.id, users.c.email).where(users.c.id.in_(list(set(user_ids)))))
    return {row.id: row.email for row in rows}
