"""The upgrade of a database made by SmartPlex Sync 0.1, whose tables were of its own design.

0.1 kept one Plex server, named by its machine identifier, in tables that shared SmartPlex's names but
not their shape (`webhook_log.id` a number, `media_items.rating_key`, a global `sync_schedule` with a
`deployment` column). Its `webhook_log` has a `sync_requests` column, which SmartPlex's never has: that is
how a 0.1 database is told apart (`is_legacy`).

`upgrade` runs in the caller's transaction: it renames the 0.1 tables to `legacy_*` (dropping their
indexes, whose names the new ones reuse), makes the new schema, copies every row into SmartPlex's shape
under one owner (`SMARTPLEX_OWNER_EMAIL`) and a `servers` row per Plex machine the rows name, and drops
the `legacy_*` tables. What is kept:
- every `webhook_log` row (a new uuid each; `user_id` the owner, `server_id` the Plex server a Plex
  delivery named), and the dispatch queue: undispatched requests stay queued, with their parameters
  scoped to the server, and runs keep their links to the deliveries they served;
- every `media_items` row, by (server, rating key) → (server, plex_id), with the Plex-only facts
  (section, parent keys, guid, Plex's updatedAt) in `metadata`;
- Tautulli's plays, the watermarks, Sonarr/Radarr's catalogue, the schedule (enabled, interval, history)
  and the Overseerr requests that name a TMDB id (SmartPlex's table requires one), titled as SmartPlex
  titles a request it cannot name ("movie 603").
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    Table,
    func,
    insert,
    inspect,
    select,
    text,
)

from smartplex_sync.convert import chunked
from smartplex_sync.store.accounts import env_server_id, user_id_by_email
from smartplex_sync.store.engine import UTCDateTime, utcnow
from smartplex_sync.store.tables import (
    Json,
    arr_items,
    batch_requests,
    dispatch_batches,
    media_items,
    overseerr_requests,
    schedule_mirror,
    servers,
    sync_schedule,
    sync_state,
    users,
    watch_history,
    webhook_log,
    webhook_requests,
)

# Children before parents: the order they are dropped in.
LEGACY_TABLES = (
    "batch_requests",
    "webhook_requests",
    "dispatch_batches",
    "arr_items",
    "overseerr_requests",
    "watch_history",
    "sync_state",
    "media_items",
    "sync_schedule",
    "webhook_log",
    "schema_migrations",
)
_PLACEHOLDER_URL = "http://plex.invalid:32400"  # set from SMARTPLEX_PLEX_URL at the next start-up
_BATCH = 1000
_SECTION_TYPES = {"movie": "movie", "show": "show"}
_JSON_COLUMNS = {"payload", "sync_requests", "parameters", "tags"}


def is_legacy(engine: Engine) -> bool:
    inspector = inspect(engine)
    if not inspector.has_table("webhook_log"):
        return False
    return "sync_requests" in {column["name"] for column in inspector.get_columns("webhook_log")}


def upgrade(conn: Connection, owner_email: str, apply_schema: Callable[[Connection], list[str]]) -> list[str]:
    """Upgrade the 0.1 tables in `conn`'s transaction; `apply_schema` makes the new tables."""
    legacy = _rename_legacy_tables(conn)
    apply_schema(conn)
    owner = _owner(conn, owner_email)
    server_of = _servers(conn, owner, legacy)
    webhook_ids = _copy_webhooks(conn, legacy["webhook_log"], owner, server_of)
    copied = {
        "webhook_log": len(webhook_ids),
        "media_items": _copy_media_items(conn, legacy["media_items"], server_of),
    }
    if "watch_history" in legacy:
        _copy_plays(conn, legacy["watch_history"], server_of)
    if "sync_state" in legacy:
        _copy_watermarks(conn, legacy["sync_state"], server_of)
    if "arr_items" in legacy:
        _copy_arr_items(conn, legacy["arr_items"], server_of)
    if "overseerr_requests" in legacy:
        _copy_overseerr_requests(conn, legacy["overseerr_requests"])
    if "sync_schedule" in legacy:
        _copy_schedule(conn, legacy["sync_schedule"], owner)
    _copy_queue(conn, legacy, webhook_ids, list(server_of.values())[:1])  # 0.1's requests were its server's
    for name in LEGACY_TABLES:
        if name in legacy:
            conn.execute(text(f'DROP TABLE "legacy_{name}"'))
    return [f"upgraded SmartPlex Sync 0.1's tables ({', '.join(f'{n} {t}' for t, n in copied.items())} rows)"]


def _rename_legacy_tables(conn: Connection) -> dict[str, Table]:
    inspector = inspect(conn)
    present = [name for name in LEGACY_TABLES if inspector.has_table(name)]
    for name in present:
        for index in inspector.get_indexes(name):
            if index["name"] and not index.get("duplicates_constraint"):  # a constraint's goes with it
                conn.execute(text(f'DROP INDEX "{index["name"]}"'))
        conn.execute(text(f'ALTER TABLE "{name}" RENAME TO "legacy_{name}"'))
    reflected = MetaData()
    return {name: _reflect(conn, reflected, f"legacy_{name}") for name in present}


def _reflect(conn: Connection, into: MetaData, name: str) -> Table:
    """The table with the types 0.1 wrote through: aware UTC datetimes, JSON (SQLite kept both as text)."""
    columns = []
    for column in inspect(conn).get_columns(name):
        kind = column["type"]
        if isinstance(kind, DateTime):
            kind = UTCDateTime()
        elif column["name"] in _JSON_COLUMNS:
            kind = Json
        columns.append(Column(column["name"], kind))
    return Table(name, into, *columns)


def _rows(conn: Connection, table: Table, order_by: str | None = None) -> Iterator[dict[str, Any]]:
    statement = select(table)
    if order_by:
        statement = statement.order_by(table.c[order_by])
    for row in conn.execute(statement):
        yield dict(row._mapping)


def _owner(conn: Connection, email: str) -> uuid.UUID:
    found = user_id_by_email(conn, email)
    if found is not None:
        return found
    owner = uuid.uuid4()
    now = utcnow()
    conn.execute(
        insert(users).values(
            id=owner,
            email=email,
            display_name="SmartPlex Sync",
            role="admin",
            webhook_secret=secrets.token_hex(32),
            preferences={},
            created_at=now,
            updated_at=now,
        )
    )
    return owner


def _servers(conn: Connection, owner: uuid.UUID, legacy: dict[str, Table]) -> dict[str, uuid.UUID]:
    """A `servers` row of the owner per Plex machine the 0.1 rows name. 0.1 synced one server, the one
    SMARTPLEX_PLEX_URL named: the machine synced last. It gets the id the environment's server has, so
    that the settings fill in its URL and token; it comes first."""
    machines: list[str] = []
    if "media_items" in legacy:
        table = legacy["media_items"]
        newest = func.max(table.c.synced_at)
        machines += conn.scalars(
            select(table.c.server_id).group_by(table.c.server_id).order_by(newest.desc())
        ).all()
    if "watch_history" in legacy:
        column = legacy["watch_history"].c.server_id
        found = conn.scalars(select(column).where(column.is_not(None)).distinct().order_by(column)).all()
        machines += [m for m in found if m not in machines]
    now = utcnow()
    server_of = {}
    for n, machine in enumerate(machines):
        server_id = env_server_id(owner) if n == 0 else uuid.uuid4()
        conn.execute(
            insert(servers).values(
                id=server_id,
                user_id=owner,
                name="Plex" if n == 0 else f"Plex {machine[:8]}",
                url=_PLACEHOLDER_URL,
                machine_id=machine,
                status="offline",
                config={"managed_by": "environment"} if n == 0 else {},
                created_at=now,
                updated_at=now,
            )
        )
        server_of[machine] = server_id
    return server_of


def _copy_webhooks(
    conn: Connection, legacy: Table, owner: uuid.UUID, server_of: dict[str, uuid.UUID]
) -> dict[int, uuid.UUID]:
    only_server = next(iter(server_of.values())) if len(server_of) == 1 else None
    new_ids: dict[int, uuid.UUID] = {}
    for batch in chunked(_rows(conn, legacy, "id"), _BATCH):
        rows = []
        for row in batch:
            new_ids[row["id"]] = uuid.uuid4()
            payload = row["payload"]
            named = payload.get("Server") if isinstance(payload, dict) else None
            machine = named.get("uuid") if isinstance(named, dict) else None
            server = server_of.get(machine or "") if row["source"] == "plex" else only_server
            rows.append(
                {
                    "id": new_ids[row["id"]],
                    "source": row["source"],
                    "event_type": row["event_type"],
                    "payload": payload,
                    "received_at": row["received_at"],
                    "processed": row["processed"],
                    "processed_at": row["processed_at"],
                    "error_message": row["error_message"],
                    "created_at": row["received_at"],
                    "user_id": owner,
                    "server_id": server,
                    "action": row["action"],
                    "http_status": row["http_status"],
                }
            )
        conn.execute(insert(webhook_log), rows)
    return new_ids


def _year(value: Any) -> int | None:
    return value if isinstance(value, int) and 1900 <= value <= 2100 else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _copy_media_items(conn: Connection, legacy: Table, server_of: dict[str, uuid.UUID]) -> int:
    copied = 0
    for batch in chunked(_rows(conn, legacy, "id"), _BATCH):
        rows = [_media_item_of(row, server_of[row["server_id"]]) for row in batch]
        conn.execute(insert(media_items), rows)
        copied += len(rows)
    return copied


def _media_item_of(row: Mapping[str, Any], server_id: uuid.UUID) -> dict[str, Any]:
    """A release 0.1 media item as a row of SmartPlex's media_items (what has no column goes in metadata)."""
    show = row["show_title"] if row["type"] in ("season", "episode") else None
    size = row["file_size_bytes"]
    return {
        "id": uuid.uuid4(),
        "server_id": server_id,
        "plex_id": row["rating_key"],
        "type": row["type"],
        "title": row["title"] or f"{row['type']} {row['rating_key']}",
        "year": _year(row["year"]),
        "imdb_id": row["imdb_id"],
        "tmdb_id": row["tmdb_id"],
        "tvdb_id": row["tvdb_id"],
        "library_section": row["section_title"],
        "file_path": row["file_path"],
        "file_size_bytes": size,
        "file_size_mb": round(size / 1048576, 2) if size is not None else None,
        "duration_ms": row["duration_ms"],
        "added_at": row["added_at"],
        "updated_at": row["synced_at"],
        "metadata": {
            "plex_added_at": _iso(row["added_at"]),
            "plex_updated_at": _iso(row["updated_at"]),
            "plex_section_id": row["section_id"],
            "plex_parent_rating_key": row["parent_rating_key"],
            "plex_grandparent_rating_key": row["grandparent_rating_key"],
            "plex_guid": row["guid"],
            "plex_season_title": row["season_title"],
        },
        "genres": [],
        "parent_title": show,
        "grandparent_title": show if row["type"] == "episode" else None,
        "season_number": row["season_number"],
        "episode_number": row["episode_number"],
        "video_resolution": row["video_resolution"],
        "video_codec": row["video_codec"],
        "audio_codec": row["audio_codec"],
        "container": row["container"],
        "bitrate_kbps": row["bitrate_kbps"],
        "accessible": True,
        "total_play_count": row["total_play_count"],
        "complete_play_count": row["complete_play_count"],
        "partial_play_count": row["partial_play_count"],
        "total_watch_time_seconds": row["total_watch_time_seconds"],
        "avg_percent_complete": row["avg_percent_complete"],
        "last_watched_at": row["last_watched_at"],
        "tautulli_synced_at": row["tautulli_synced_at"],
        "sonarr_series_id": row["sonarr_series_id"],
        "radarr_movie_id": row["radarr_movie_id"],
    }


def _copy_plays(conn: Connection, legacy: Table, server_of: dict[str, uuid.UUID]) -> None:
    only_server = next(iter(server_of.values()), None)
    for batch in chunked(_rows(conn, legacy, "id"), _BATCH):
        rows = []
        for row in batch:
            server = server_of.get(row["server_id"] or "", only_server)
            if server is None:
                continue  # a play of an unknown server with no server at all to give it to
            row.pop("id")
            user = row.pop("user_id")
            rows.append({**row, "server_id": server, "plex_user_id": None if user is None else str(user)})
        if rows:
            conn.execute(insert(watch_history), rows)


def _copy_watermarks(conn: Connection, legacy: Table, server_of: dict[str, uuid.UUID]) -> None:
    for row in _rows(conn, legacy):
        machine, _, section = str(row["scope"]).rpartition(":")
        if machine in server_of:
            conn.execute(insert(sync_state).values({**row, "scope": f"{server_of[machine]}:{section}"}))


def _copy_arr_items(conn: Connection, legacy: Table, server_of: dict[str, uuid.UUID]) -> None:
    rows = list(_rows(conn, legacy))
    for server in server_of.values():
        if rows:
            conn.execute(insert(arr_items), [{**row, "server_id": server} for row in rows])


_OVERSEERR_STATUS = {"DECLINED": "declined", "FAILED": "failed", "PENDING": "pending"}


def _copy_overseerr_requests(conn: Connection, legacy: Table) -> None:
    for row in _rows(conn, legacy):
        if not row["tmdb_id"] or row["media_type"] not in ("movie", "tv"):
            continue
        status = "available" if row["media_status"] == "AVAILABLE" else _OVERSEERR_STATUS.get(row["status"])
        conn.execute(
            insert(overseerr_requests).values(
                id=uuid.uuid4(),
                media_title=f"{row['media_type']} {row['tmdb_id']}",
                media_type=row["media_type"],
                tmdb_id=row["tmdb_id"],
                tvdb_id=row["tvdb_id"],
                overseerr_request_id=row["request_id"],
                overseerr_status=status or "approved",
                requested_at=row["requested_at"],
                status_updated_at=row["updated_at"],
            )
        )


def _copy_schedule(conn: Connection, legacy: Table, owner: uuid.UUID) -> None:
    per_user = "user_id" in {column["name"] for column in inspect(conn).get_columns("sync_schedule")}
    if not per_user:
        return  # a 005-shaped table of SmartPlex's own stays as it is
    for row in _rows(conn, legacy):
        schedule_id = uuid.uuid4()
        conn.execute(
            insert(sync_schedule).values(
                id=schedule_id,
                user_id=owner,
                service=row["service"],
                enabled=row["enabled"],
                interval_hours=row["interval_hours"],
                last_run_at=row["last_run_at"],
                next_run_at=row["next_run_at"],
                run_count=row["run_count"],
                last_status=row["last_status"],
                last_error=row["last_error"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
        )
        if row["synced_enabled"] is not None:
            conn.execute(
                insert(schedule_mirror).values(
                    schedule_id=schedule_id,
                    synced_enabled=row["synced_enabled"],
                    synced_interval_hours=row["synced_interval_hours"],
                    mirrored_at=row["mirrored_at"],
                )
            )


def scoped_parameters(deployment: str, parameters: Any, server_ids: list[uuid.UUID]) -> dict[str, Any]:
    """0.1's parameters of one deployment (today's shape or its older plain dicts), on these servers
    (every server when none is known)."""
    scope = dict(parameters or {})
    if deployment == "plex-library-sync":
        if (section_type := scope.pop("section_type", None)) in _SECTION_TYPES:
            scope["section_types"] = [*scope.get("section_types", []), section_type]
        if (rating_key := scope.pop("rating_key", None)) is not None:
            scope["rating_keys"] = [*scope.get("rating_keys", []), str(rating_key)]
    elif deployment == "tautulli-sync":
        if (rating_key := scope.pop("rating_key", None)) is not None:
            scope["rating_keys"] = [*scope.get("rating_keys", []), str(rating_key)]
    elif deployment in ("sonarr-sync", "radarr-sync"):
        service, items = deployment.split("-")[0], "series" if deployment == "sonarr-sync" else "movies"
        if isinstance(scope.get(items), list):
            scope[items] = [
                {"service": service, "arr_id": i["id"], **{k: v for k, v in i.items() if k != "id"}}
                if isinstance(i, dict) and "arr_id" not in i and "id" in i
                else i
                for i in scope[items]
            ]
    elif deployment == "overseerr-sync" and isinstance(scope.get("requests"), list):
        scope["requests"] = [
            {**r, "status": str(r.get("status") or "PENDING").upper()} if isinstance(r, dict) else r
            for r in scope["requests"]
        ]
    if not server_ids:
        return {"servers": None}
    return {"servers": {str(server): scope for server in server_ids}}


def _copy_queue(
    conn: Connection, legacy: dict[str, Table], webhook_ids: dict[int, uuid.UUID], server_ids: list[uuid.UUID]
) -> None:
    """Batches, queued requests and their links; plus the requests of undispatched deliveries recorded
    before 0.1 had a queue (only in `webhook_log.sync_requests`), queued now."""
    if "dispatch_batches" in legacy:
        for row in _rows(conn, legacy["dispatch_batches"]):
            row["parameters"] = scoped_parameters(row["deployment"], row["parameters"], server_ids)
            conn.execute(insert(dispatch_batches).values(row))
    request_ids: dict[int, int] = {}
    queued: set[int] = set()
    if "webhook_requests" in legacy:
        for row in _rows(conn, legacy["webhook_requests"], "id"):
            old_id = row.pop("id")
            queued.add(row["webhook_id"])
            row["webhook_id"] = webhook_ids[row["webhook_id"]]
            row["parameters"] = scoped_parameters(row["deployment"], row["parameters"], server_ids)
            request_ids[old_id] = conn.execute(
                insert(webhook_requests).values(row).returning(webhook_requests.c.id)
            ).scalar_one()
    if "batch_requests" in legacy:
        for row in _rows(conn, legacy["batch_requests"]):
            conn.execute(
                insert(batch_requests).values(
                    batch_id=row["batch_id"], request_id=request_ids[row["request_id"]]
                )
            )
    undispatched = select(legacy["webhook_log"]).where(legacy["webhook_log"].c.processed.is_(False))
    for delivery in conn.execute(undispatched):
        if delivery.id in queued:
            continue
        for ordinal, request in enumerate(delivery.sync_requests or []):
            if request.get("flow_run_id"):
                continue
            conn.execute(
                insert(webhook_requests).values(
                    webhook_id=webhook_ids[delivery.id],
                    ordinal=ordinal,
                    deployment=request["deployment"],
                    parameters=scoped_parameters(
                        request["deployment"], request.get("parameters"), server_ids
                    ),
                    ready_at=delivery.received_at,
                    dispatches=0,
                )
            )
