"""SQLAlchemy Core tables, matching `migrations/*.sql` column for column (a test holds them together)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from smartplex_sync.store.engine import UTCDateTime

metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")


def _id() -> Column:
    return Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)


schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Text, primary_key=True),
    Column("applied_at", UTCDateTime, nullable=False),
)

webhook_log = Table(
    "webhook_log",
    metadata,
    _id(),
    Column("source", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", Json),
    Column("received_at", UTCDateTime, nullable=False),
    Column("processed", Boolean, nullable=False),
    Column("processed_at", UTCDateTime),
    Column("error_message", Text),
    Column("action", Text, nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("sync_requests", Json, nullable=False),
    Column("flow_run_id", Text),
)

sync_schedule = Table(
    "sync_schedule",
    metadata,
    _id(),
    Column("service", Text, nullable=False, unique=True),
    Column("deployment", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("interval_hours", Integer, nullable=False),
    Column("last_run_at", UTCDateTime),
    Column("next_run_at", UTCDateTime),
    Column("run_count", Integer, nullable=False),
    Column("last_status", Text),
    Column("last_error", Text),
    Column("synced_enabled", Boolean),
    Column("synced_interval_hours", Integer),
    Column("mirrored_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

media_items = Table(
    "media_items",
    metadata,
    _id(),
    Column("server_id", Text, nullable=False),
    Column("rating_key", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("year", Integer),
    Column("show_title", Text),
    Column("season_title", Text),
    Column("season_number", Integer),
    Column("episode_number", Integer),
    Column("parent_rating_key", Text),
    Column("grandparent_rating_key", Text),
    Column("section_id", Integer),
    Column("section_title", Text),
    Column("section_type", Text),
    Column("guid", Text),
    Column("tmdb_id", Integer),
    Column("tvdb_id", Integer),
    Column("imdb_id", Text),
    Column("sonarr_series_id", Integer),
    Column("radarr_movie_id", Integer),
    Column("file_size_bytes", BigInteger),
    Column("duration_ms", BigInteger),
    Column("video_resolution", Text),
    Column("video_codec", Text),
    Column("audio_codec", Text),
    Column("container", Text),
    Column("bitrate_kbps", Integer),
    Column("file_path", Text),
    Column("added_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
    Column("total_play_count", Integer, nullable=False),
    Column("complete_play_count", Integer, nullable=False),
    Column("partial_play_count", Integer, nullable=False),
    Column("total_watch_time_seconds", BigInteger, nullable=False),
    Column("avg_percent_complete", Numeric(5, 2, asdecimal=False)),
    Column("last_watched_at", UTCDateTime),
    Column("tautulli_synced_at", UTCDateTime),
    Column("synced_at", UTCDateTime, nullable=False),
    UniqueConstraint("server_id", "rating_key"),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("service", Text, primary_key=True),
    Column("scope", Text, primary_key=True),
    Column("watermark", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

watch_history = Table(
    "watch_history",
    metadata,
    _id(),
    Column("tautulli_row_id", BigInteger, nullable=False, unique=True),
    Column("server_id", Text),
    Column("rating_key", Text, nullable=False),
    Column("parent_rating_key", Text),
    Column("grandparent_rating_key", Text),
    Column("user_id", BigInteger),
    Column("user_name", Text),
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
)

overseerr_requests = Table(
    "overseerr_requests",
    metadata,
    _id(),
    Column("request_id", Integer, nullable=False, unique=True),
    Column("media_type", Text, nullable=False),
    Column("tmdb_id", Integer),
    Column("tvdb_id", Integer),
    Column("status", Text, nullable=False),
    Column("media_status", Text),
    Column("is_4k", Boolean, nullable=False),
    Column("requested_by", Text),
    Column("requested_by_email", Text),
    Column("requested_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
    Column("synced_at", UTCDateTime, nullable=False),
)

arr_items = Table(
    "arr_items",
    metadata,
    Column("service", Text, primary_key=True),
    Column("arr_id", Integer, primary_key=True),
    Column("title", Text, nullable=False),
    Column("tvdb_id", Integer),
    Column("tmdb_id", Integer),
    Column("imdb_id", Text),
    Column("path", Text),
    Column("synced_at", UTCDateTime, nullable=False),
)

dispatch_batches = Table(
    "dispatch_batches",
    metadata,
    Column("id", Text, primary_key=True),
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
)

webhook_requests = Table(
    "webhook_requests",
    metadata,
    _id(),
    Column("webhook_id", BigInteger, ForeignKey("webhook_log.id", ondelete="CASCADE"), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("deployment", Text, nullable=False),
    Column("parameters", Json, nullable=False),
    Column("ready_at", UTCDateTime, nullable=False),
    Column("batch_id", Text),
    Column("dispatches", Integer, nullable=False),
    UniqueConstraint("webhook_id", "ordinal"),
)

batch_requests = Table(
    "batch_requests",
    metadata,
    Column("batch_id", Text, ForeignKey("dispatch_batches.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "request_id",
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("webhook_requests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)
