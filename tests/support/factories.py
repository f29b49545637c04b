"""SmartPlex rows for tests that need a user, a server, an integration or a library item without going
through SmartPlex's UI or a Plex sync."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert

from smartplex_sync.store.tables import integrations, media_items, servers, users


def add_user(
    conn: Connection,
    email: str | None = None,
    *,
    secret: str | None = None,
    plex_username: str | None = None,
    plex_user_id: str | None = None,
    role: str = "user",
    user_id: uuid.UUID | None = None,
) -> uuid.UUID:
    user_id = user_id or uuid.uuid4()
    now = datetime.now(UTC)
    conn.execute(
        insert(users).values(
            id=user_id,
            email=email or f"{user_id.hex[:8]}@example.com",
            display_name=(email or "user").split("@")[0],
            role=role,
            webhook_secret=secret or secrets.token_hex(16),
            plex_username=plex_username,
            plex_user_id=plex_user_id,
            preferences={},
            created_at=now,
            updated_at=now,
        )
    )
    return user_id


def add_server(
    conn: Connection,
    user_id: uuid.UUID,
    *,
    name: str = "Plex",
    machine_id: str | None = None,
    url: str = "http://127.0.0.1:32400",
    token: str | None = "plex-token",
) -> uuid.UUID:
    server_id = uuid.uuid4()
    now = datetime.now(UTC)
    conn.execute(
        insert(servers).values(
            id=server_id,
            user_id=user_id,
            name=name,
            url=url,
            machine_id=machine_id,
            plex_token=token,
            status="offline",
            config={},
            created_at=now,
            updated_at=now,
        )
    )
    return server_id


def add_integration(
    conn: Connection,
    user_id: uuid.UUID,
    service: str,
    *,
    url: str = "http://127.0.0.1:8181",
    api_key: str = "api-key",
    server_id: uuid.UUID | None = None,
    status: str = "active",
    name: str | None = None,
) -> uuid.UUID:
    integration_id = uuid.uuid4()
    now = datetime.now(UTC)
    conn.execute(
        insert(integrations).values(
            id=integration_id,
            user_id=user_id,
            server_id=server_id,
            service=service,
            name=name or service.capitalize(),
            url=url,
            api_key=api_key,
            status=status,
            config={},
            created_at=now,
            updated_at=now,
        )
    )
    return integration_id


def owner_and_server(
    engine: Engine, *, machine_id: str | None = "machine-1", **server: Any
) -> tuple[uuid.UUID, uuid.UUID]:
    """A user with one server, committed; returns (user id, server id)."""
    with engine.begin() as conn:
        user_id = add_user(conn)
        return user_id, add_server(conn, user_id, machine_id=machine_id, **server)


def add_movie(
    conn: Connection, server_id: uuid.UUID, plex_id: str, *, title: str | None = None, **columns: Any
) -> uuid.UUID:
    """A movie row with no plays yet (play totals take their column defaults)."""
    item_id = uuid.uuid4()
    conn.execute(
        insert(media_items).values(
            id=item_id,
            server_id=server_id,
            plex_id=plex_id,
            type="movie",
            title=title or f"Movie {plex_id}",
            metadata={},
            genres=[],
            updated_at=datetime.now(UTC),
            **columns,
        )
    )
    return item_id
