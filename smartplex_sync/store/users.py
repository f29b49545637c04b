"""SmartPlex's own `users` table (not ours: SmartPlex creates it), read for one thing: a user's role.

SmartPlex keeps `users(id uuid, email, role …)` with role one of admin, moderator, user, guest. The
gateway asks it whether a user signed in with Supabase Auth is an admin.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, Text, cast, column, inspect, select, table
from sqlalchemy.sql.expression import TableClause


def _users(name: str) -> TableClause:
    schema, _, table_name = name.rpartition(".")
    return table(table_name, column("id"), column("role"), schema=schema or None)


def users_table_exists(engine: Engine, name: str = "users") -> bool:
    schema, _, table_name = name.rpartition(".")
    return inspect(engine).has_table(table_name, schema=schema or None)


def role_of(engine: Engine, user_id: str, name: str = "users") -> str | None:
    """`role` of the user whose id is `user_id`, or None (no such user, or an id that is not a UUID)."""
    try:
        canonical = str(uuid.UUID(user_id))
    except ValueError:
        return None
    users = _users(name)
    with engine.connect() as conn:
        role = conn.execute(
            select(cast(users.c.role, Text)).where(cast(users.c.id, Text) == canonical)
        ).scalar_one_or_none()
    return role
