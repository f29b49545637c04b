"""SQLAlchemy Core tables: SmartPlex's own tables that the syncs read and write, and SmartPlex Sync's.

SmartPlex's tables (`users`, `servers`, `integrations`, `media_items`, `user_stats`, `sync_history`,
`webhook_log`, `sync_schedule`, `sync_events`, `overseerr_requests`) are declared as SmartPlex's SQL
defines them (`packages/db`: schema.sql and the migrations that added columns). On PostgreSQL,
`migrations/0001_smartplex_tables.sql` creates them when they are missing and adds the columns that are;
on SQLite, `metadata.create_all` makes them from these declarations. Columns SmartPlex has no home for are
marked `info={"ours": True}` (each is documented in docs/supabase.md); `info={"shape": "per-user"}` marks
the one column a SmartPlex database may lack by design (`sync_schedule.user_id`: migration 005's global
shape has none).

SmartPlex Sync's own tables live in the PostgreSQL schema `smartplex_sync` (`OWN_SCHEMA`, mapped to
SQLite's main database), made by `migrations/0002_smartplex_sync_tables.sql`. A test holds the SQL files and
these declarations together, column for column.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.sql.schema import ForeignKeyConstraint
from sqlalchemy.types import TypeEngine

from smartplex_sync.models import Source
from smartplex_sync.store.engine import GUID, OWN_SCHEMA, UTCDateTime


@compiles(ForeignKeyConstraint, "sqlite")
def _sqlite_foreign_key(constraint: ForeignKeyConstraint, compiler: DDLCompiler, **kw: Any) -> str:
    """Every foreign key on SQLite too: its dialect leaves out those between tables of different schemas
    (ours and SmartPlex's), which on SQLite are one database (`OWN_SCHEMA` maps to it)."""
    return DDLCompiler.visit_foreign_key_constraint(compiler, constraint, **kw)


metadata = MetaData()
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
TextArray = JSON().with_variant(postgresql.ARRAY(Text), "postgresql")
OURS: dict[str, Any] = {"ours": True}
NOW = text("CURRENT_TIMESTAMP")
TRUE, FALSE = text("true"), text("false")
EMPTY_OBJECT, EMPTY_ARRAY = text("'{}'"), text("'[]'")

MEDIA_TYPES = ("movie", "show", "season", "episode", "track", "album", "artist")
SERVICES = tuple(source.value for source in Source)
"""SmartPlex's `webhook_log.source` and `sync_schedule.service` checks (a new Source needs a migration)."""


def _enum(name: str, *values: str) -> TypeEngine[str]:
    """One of SmartPlex's PostgreSQL enum types (made by SmartPlex's schema.sql, or by our 0001); a
    checked text column on SQLite."""
    return Enum(*values, name=name, native_enum=False, create_constraint=True, length=32).with_variant(
        postgresql.ENUM(*values, name=name, create_type=False), "postgresql"
    )


def _id() -> Column[Any]:
    return Column("id", GUID, primary_key=True)


def _created() -> Column[Any]:
    return Column("created_at", UTCDateTime, server_default=NOW)


def _updated() -> Column[Any]:
    return Column("updated_at", UTCDateTime, server_default=NOW)


# ---------------------------------------------------------------------------------------- SmartPlex's

users = Table(
    "users",
    metadata,
    _id(),
    Column("email", Text, nullable=False, unique=True),
    Column("display_name", Text),
    Column("avatar_url", Text),
    Column(
        "role",
        _enum("user_role", "admin", "moderator", "user", "guest"),
        nullable=False,
        server_default="user",
    ),
    Column("plex_user_id", Text),
    Column("plex_username", Text),
    _created(),
    _updated(),
    Column("last_active_at", UTCDateTime),
    Column("preferences", Json, server_default=EMPTY_OBJECT),
    Column("webhook_secret", Text),  # 006: the secret a user's webhooks carry
    Column("overseerr_user_id", Integer),  # 010
)

servers = Table(
    "servers",
    metadata,
    _id(),
    Column("user_id", GUID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("machine_id", Text),  # Plex's machineIdentifier
    Column("platform", Text),
    Column("version", Text),
    Column(
        "status",
        _enum("server_status", "online", "offline", "error"),
        nullable=False,
        server_default="offline",
    ),
    Column("last_seen_at", UTCDateTime),
    _created(),
    _updated(),
    Column("config", Json, server_default=EMPTY_OBJECT),
    Column("preferred_connection_url", Text),  # 006
    Column("plex_token", Text),  # 018
    UniqueConstraint("user_id", "machine_id"),
)

integrations = Table(
    "integrations",
    metadata,
    _id(),
    Column("user_id", GUID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("server_id", GUID, ForeignKey("servers.id", ondelete="CASCADE")),
    Column(
        "service",
        _enum("integration_service", "tautulli", "overseerr", "sonarr", "radarr", "trakt", "omdb"),
        nullable=False,
    ),
    Column("name", Text, nullable=False),
    Column("url", Text),
    Column("api_key", Text),
    Column("config", Json, server_default=EMPTY_OBJECT),
    Column(
        "status",
        _enum("integration_status", "active", "inactive", "error"),
        nullable=False,
        server_default="inactive",
    ),
    Column("last_sync_at", UTCDateTime),
    _created(),
    _updated(),
    UniqueConstraint("user_id", "service", "name"),
)

media_items = Table(
    "media_items",
    metadata,
    _id(),
    Column("server_id", GUID, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("plex_id", Text, nullable=False),  # Plex's ratingKey
    Column("type", _enum("media_type", *MEDIA_TYPES), nullable=False),
    Column("title", Text, nullable=False),
    Column("year", Integer),
    Column("imdb_id", Text),
    Column("tmdb_id", Integer),
    Column("tvdb_id", Integer),
    Column("library_section", Text),
    Column("file_path", Text),
    Column("file_size_bytes", BigInteger),
    Column("duration_ms", Integer),
    Column("added_at", UTCDateTime, server_default=NOW),
    _updated(),
    Column("metadata", Json, server_default=EMPTY_OBJECT),
    Column("total_play_count", Integer, server_default="0"),  # 004 / 014: Tautulli, every Plex user
    Column("last_watched_at", UTCDateTime),
    Column("total_watch_time_seconds", BigInteger, server_default="0"),
    Column("tautulli_synced_at", UTCDateTime),
    Column("parent_title", Text),  # 009 / 021
    Column("grandparent_title", Text),
    Column("season_number", Integer),
    Column("episode_number", Integer),
    Column("file_size_mb", Numeric(10, 2, asdecimal=False)),
    Column("genres", Json, server_default=EMPTY_ARRAY),  # 011
    Column("video_resolution", Text),  # 017
    Column("video_codec", Text),
    Column("audio_codec", Text),
    Column("container", Text),
    Column("bitrate_kbps", Integer),
    Column("accessible", Boolean, server_default=TRUE),
    Column("avg_percent_complete", Numeric(5, 2, asdecimal=False)),  # 020
    Column("complete_play_count", Integer, server_default="0"),
    Column("partial_play_count", Integer, server_default="0"),
    Column("sonarr_series_id", Integer),  # 021
    Column("radarr_movie_id", Integer),
    UniqueConstraint("server_id", "plex_id"),
    CheckConstraint("length(title) >= 1", name="media_items_title_check"),
    CheckConstraint("year IS NULL OR (year >= 1900 AND year <= 2100)", name="media_items_year_check"),
)
Index("idx_media_items_server_type", media_items.c.server_id, media_items.c.type)

user_stats = Table(
    "user_stats",
    metadata,
    _id(),
    Column("user_id", GUID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("media_item_id", GUID, ForeignKey("media_items.id", ondelete="CASCADE"), nullable=False),
    Column("play_count", Integer, nullable=False, server_default="0"),
    Column("total_duration_ms", BigInteger, nullable=False, server_default="0"),
    Column("last_played_at", UTCDateTime),
    Column("completion_percentage", REAL),
    Column("rating", REAL),
    _created(),
    _updated(),
    Column("percent_complete", Numeric(5, 2, asdecimal=False)),  # 020
    Column("watched_status", Integer, server_default="0"),
    UniqueConstraint("user_id", "media_item_id"),
)

sync_history = Table(
    "sync_history",
    metadata,
    _id(),
    Column("user_id", GUID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("server_id", GUID, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("sync_type", Text, nullable=False, server_default="manual"),
    Column("status", Text, nullable=False),
    Column("items_processed", Integer, nullable=False, server_default="0"),
    Column("items_added", Integer, nullable=False, server_default="0"),
    Column("items_updated", Integer, nullable=False, server_default="0"),
    Column("items_removed", Integer, nullable=False, server_default="0"),
    Column("started_at", UTCDateTime, server_default=NOW),
    Column("completed_at", UTCDateTime),
    Column("error_message", Text),
    Column("metadata", Json, server_default=EMPTY_OBJECT),
)

webhook_log = Table(
    "webhook_log",
    metadata,
    _id(),
    Column("source", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", Json, nullable=False),
    Column("received_at", UTCDateTime, server_default=NOW),
    Column("processed", Boolean, server_default=FALSE),
    Column("processed_at", UTCDateTime),
    Column("error_message", Text),
    _created(),
    Column("user_id", GUID, ForeignKey("users.id", ondelete="CASCADE")),  # 006
    Column("server_id", GUID, ForeignKey("servers.id", ondelete="CASCADE")),
    # Ours: what the gateway did with the delivery, and what it answered.
    Column("action", Text, info=OURS),
    Column("http_status", Integer, info=OURS),
    CheckConstraint(f"source IN {SERVICES}", name="webhook_log_source_check"),
)
Index("idx_webhook_log_received_at", webhook_log.c.received_at)
Index("idx_webhook_log_processed", webhook_log.c.processed)

sync_schedule = Table(
    "sync_schedule",
    metadata,
    _id(),
    Column("user_id", GUID, ForeignKey("users.id", ondelete="CASCADE"), info={"shape": "per-user"}),
    Column("service", Text, nullable=False),
    Column("enabled", Boolean, server_default=TRUE),
    Column("interval_hours", Integer, nullable=False, server_default="6"),
    Column("last_run_at", UTCDateTime),
    Column("next_run_at", UTCDateTime),
    Column("run_count", Integer, server_default="0"),
    Column("last_status", Text),
    Column("last_error", Text),
    _created(),
    _updated(),
    UniqueConstraint("user_id", "service"),
    CheckConstraint(f"service IN {SERVICES}", name="sync_schedule_service_check"),
    CheckConstraint("interval_hours >= 1 AND interval_hours <= 168", name="sync_schedule_interval_check"),
)

sync_events = Table(
    "sync_events",
    metadata,
    _id(),
    Column("sync_type", Text, nullable=False),
    Column("user_id", GUID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("server_id", GUID, ForeignKey("servers.id", ondelete="SET NULL")),
    Column("integration_id", GUID, ForeignKey("integrations.id", ondelete="SET NULL")),
    Column("trigger_type", Text, nullable=False),
    Column("triggered_by_user_id", GUID, ForeignKey("users.id", ondelete="SET NULL")),
    Column("status", Text, nullable=False, server_default="running"),
    Column("items_discovered", Integer, server_default="0"),
    Column("items_new", Integer, server_default="0"),
    Column("items_updated", Integer, server_default="0"),
    Column("items_removed", Integer, server_default="0"),
    Column("items_failed", Integer, server_default="0"),
    Column("duration_ms", Integer),
    Column("started_at", UTCDateTime, server_default=NOW),
    Column("completed_at", UTCDateTime),
    Column("error_message", Text),
    Column("error_details", Json),
    Column("sync_metadata", Json, server_default=EMPTY_OBJECT),
)
Index("idx_sync_events_user", sync_events.c.user_id, sync_events.c.started_at)

overseerr_requests = Table(
    "overseerr_requests",
    metadata,
    _id(),
    Column("user_id", GUID, ForeignKey("users.id", ondelete="CASCADE")),
    Column("overseerr_user_id", Integer),
    Column("media_title", Text, nullable=False),
    Column("media_type", Text, nullable=False),
    Column("tmdb_id", Integer, nullable=False),
    Column("tvdb_id", Integer),
    Column("seasons", TextArray),
    Column("overseerr_request_id", Integer),
    Column("overseerr_status", Text),
    Column("requested_at", UTCDateTime, server_default=NOW),
    Column("status_updated_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("notes", Text),
    Column("error_message", Text),
    # Ours: the Overseerr integration a request was read from (request ids are per Overseerr instance).
    Column("integration_id", GUID, ForeignKey("integrations.id", ondelete="SET NULL"), info=OURS),
    CheckConstraint("media_type IN ('movie', 'tv')", name="overseerr_requests_media_type_check"),
)

SMARTPLEX_TABLES = (
    users,
    servers,
    integrations,
    media_items,
    user_stats,
    sync_history,
    webhook_log,
    sync_schedule,
    sync_events,
    overseerr_requests,
)

# ------------------------------------------------------------------------------------------- ours

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Text, primary_key=True),
    Column("applied_at", UTCDateTime, nullable=False, server_default=NOW),
    schema=OWN_SCHEMA,
)

watch_history = Table(
    "watch_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("server_id", GUID, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("tautulli_row_id", BigInteger, nullable=False),
    Column("rating_key", Text, nullable=False),
    Column("parent_rating_key", Text),
    Column("grandparent_rating_key", Text),
    Column("plex_user_id", Text),  # Tautulli's user_id: the Plex account
    Column("user_name", Text),  # Tautulli's user: the Plex username
    Column("media_type", Text),
    Column("title", Text),
    Column("full_title", Text),
    Column("started_at", UTCDateTime),
    Column("stopped_at", UTCDateTime),
    Column("duration_seconds", Integer, nullable=False),
    Column("paused_seconds", Integer, nullable=False),
    Column("percent_complete", Integer, nullable=False),
    Column("watched_status", Numeric(3, 2, asdecimal=False)),
    Column("platform", Text),
    Column("player", Text),
    Column("synced_at", UTCDateTime, nullable=False),
    UniqueConstraint("server_id", "tautulli_row_id"),
    schema=OWN_SCHEMA,
)
Index("watch_history_item_idx", watch_history.c.server_id, watch_history.c.rating_key)
Index("watch_history_season_idx", watch_history.c.server_id, watch_history.c.parent_rating_key)
Index("watch_history_show_idx", watch_history.c.server_id, watch_history.c.grandparent_rating_key)

sync_state = Table(
    "sync_state",
    metadata,
    Column("service", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("watermark", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("service", "scope"),
    schema=OWN_SCHEMA,
)

arr_items = Table(
    "arr_items",
    metadata,
    Column("server_id", GUID, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("service", Text, nullable=False),
    Column("arr_id", Integer, nullable=False),  # Sonarr series id / Radarr movie id
    Column("title", Text, nullable=False),
    Column("tvdb_id", Integer),
    Column("tmdb_id", Integer),
    Column("imdb_id", Text),
    Column("path", Text),
    Column("synced_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("server_id", "service", "arr_id"),
    schema=OWN_SCHEMA,
)

schedule_mirror = Table(
    "schedule_mirror",
    metadata,
    Column("schedule_id", GUID, ForeignKey("sync_schedule.id", ondelete="CASCADE"), primary_key=True),
    Column("synced_enabled", Boolean),
    Column("synced_interval_hours", Integer),
    Column("mirrored_at", UTCDateTime),
    schema=OWN_SCHEMA,
)

dispatch_batches = Table(
    "dispatch_batches",
    metadata,
    Column("id", Text, primary_key=True),  # also the run's Prefect idempotency key
    Column("deployment", Text, nullable=False),
    Column("lane", Text, nullable=False),
    Column("parameters", Json, nullable=False),
    Column("name", Text, nullable=False),
    Column("tags", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("flow_run_id", Text),
    Column("state", Text),
    Column("finished_at", UTCDateTime),
    Column("error_message", Text),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime),
    schema=OWN_SCHEMA,
)
Index(
    "dispatch_batches_open_idx",
    dispatch_batches.c.deployment,
    dispatch_batches.c.lane,
    unique=True,
    postgresql_where=dispatch_batches.c.finished_at.is_(None),
    sqlite_where=dispatch_batches.c.finished_at.is_(None),
)
Index("dispatch_batches_flow_run_idx", dispatch_batches.c.flow_run_id)

webhook_requests = Table(
    "webhook_requests",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("webhook_id", GUID, ForeignKey("webhook_log.id", ondelete="CASCADE"), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("deployment", Text, nullable=False),
    Column("parameters", Json, nullable=False),
    Column("ready_at", UTCDateTime, nullable=False),
    Column("batch_id", Text),
    Column("dispatches", Integer, nullable=False),
    UniqueConstraint("webhook_id", "ordinal"),
    schema=OWN_SCHEMA,
)
Index(
    "webhook_requests_pending_idx",
    webhook_requests.c.deployment,
    webhook_requests.c.ready_at,
    postgresql_where=webhook_requests.c.batch_id.is_(None),
    sqlite_where=webhook_requests.c.batch_id.is_(None),
)
Index("webhook_requests_batch_idx", webhook_requests.c.batch_id)

batch_requests = Table(
    "batch_requests",
    metadata,
    Column(
        "batch_id",
        Text,
        ForeignKey(f"{OWN_SCHEMA}.dispatch_batches.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "request_id",
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey(f"{OWN_SCHEMA}.webhook_requests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    schema=OWN_SCHEMA,
)
Index("batch_requests_request_idx", batch_requests.c.request_id)

OWN_TABLES = (
    schema_migrations,
    watch_history,
    sync_state,
    arr_items,
    schedule_mirror,
    dispatch_batches,
    webhook_requests,
    batch_requests,
)
