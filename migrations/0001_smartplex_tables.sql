-- SmartPlex Sync 0001: SmartPlex's own tables that the syncs read and write.
--
-- Paste into Supabase's SQL editor as one piece (it runs in one transaction), or let
-- `smartplex-sync migrate` apply it. It can be run again at any time.
--
-- On a database that already holds SmartPlex (its schema.sql, rls.sql and migrations), this file only
-- adds what is missing: a table SmartPlex's own migrations never created, a column they never added.
-- It never drops, renames or retypes anything, never changes a column's nullability or default, and
-- never changes an existing table's row level security or policies.
--
-- On an empty database (a new Supabase project, a plain PostgreSQL) it creates those tables as SmartPlex
-- defines them, each with row level security on and no policy: Supabase's Data API roles then see no row
-- (servers hold Plex tokens, integrations API keys). Columns SmartPlex has no home for are marked "ours".

CREATE SCHEMA IF NOT EXISTS smartplex_sync;

CREATE TABLE IF NOT EXISTS smartplex_sync.schema_migrations (
    version     TEXT PRIMARY KEY,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- SmartPlex's enum types (schema.sql).
DO $$
BEGIN
    IF to_regtype('user_role') IS NULL THEN
        CREATE TYPE user_role AS ENUM ('admin', 'moderator', 'user', 'guest');
    END IF;
    IF to_regtype('server_status') IS NULL THEN
        CREATE TYPE server_status AS ENUM ('online', 'offline', 'error');
    END IF;
    IF to_regtype('integration_service') IS NULL THEN
        CREATE TYPE integration_service AS ENUM ('tautulli', 'overseerr', 'sonarr', 'radarr', 'trakt', 'omdb');
    END IF;
    IF to_regtype('integration_status') IS NULL THEN
        CREATE TYPE integration_status AS ENUM ('active', 'inactive', 'error');
    END IF;
    IF to_regtype('media_type') IS NULL THEN
        CREATE TYPE media_type AS ENUM ('movie', 'show', 'season', 'episode', 'track', 'album', 'artist');
    END IF;
END $$;

-- The tables, as SmartPlex's schema.sql and migrations 004-021 define them; created only when missing.
DO $$
BEGIN
    IF to_regclass('users') IS NULL THEN
        CREATE TABLE users (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            email TEXT NOT NULL UNIQUE,
            display_name TEXT,
            avatar_url TEXT,
            role user_role NOT NULL DEFAULT 'user',
            plex_user_id TEXT,
            plex_username TEXT,
            created_at TIMESTAMPTZ DEFAULT now(),
            updated_at TIMESTAMPTZ DEFAULT now(),
            last_active_at TIMESTAMPTZ,
            preferences JSONB DEFAULT '{}'::jsonb,
            webhook_secret TEXT DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
            overseerr_user_id INTEGER,
            CONSTRAINT users_email_check CHECK (char_length(email) >= 3),
            CONSTRAINT users_display_name_check CHECK (char_length(display_name) >= 1)
        );
        CREATE INDEX idx_users_plex_user_id ON users (plex_user_id);
        ALTER TABLE users ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('servers') IS NULL THEN
        CREATE TABLE servers (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            url TEXT NOT NULL,
            machine_id TEXT,
            platform TEXT,
            version TEXT,
            status server_status NOT NULL DEFAULT 'offline',
            last_seen_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ DEFAULT now(),
            updated_at TIMESTAMPTZ DEFAULT now(),
            config JSONB DEFAULT '{}'::jsonb,
            preferred_connection_url TEXT,
            plex_token TEXT,
            CONSTRAINT servers_name_check CHECK (char_length(name) >= 1),
            CONSTRAINT servers_url_check CHECK (url ~ '^https?://.*'),
            UNIQUE (user_id, machine_id)
        );
        CREATE INDEX idx_servers_user_id ON servers (user_id);
        CREATE INDEX idx_servers_machine_id ON servers (machine_id);
        ALTER TABLE servers ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('integrations') IS NULL THEN
        CREATE TABLE integrations (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            server_id UUID REFERENCES servers (id) ON DELETE CASCADE,
            service integration_service NOT NULL,
            name TEXT NOT NULL,
            url TEXT,
            api_key TEXT,
            config JSONB DEFAULT '{}'::jsonb,
            status integration_status NOT NULL DEFAULT 'inactive',
            last_sync_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ DEFAULT now(),
            updated_at TIMESTAMPTZ DEFAULT now(),
            CONSTRAINT integrations_name_check CHECK (char_length(name) >= 1),
            UNIQUE (user_id, service, name)
        );
        CREATE INDEX idx_integrations_user_id ON integrations (user_id);
        CREATE INDEX idx_integrations_server_id ON integrations (server_id);
        ALTER TABLE integrations ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('media_items') IS NULL THEN
        CREATE TABLE media_items (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            server_id UUID NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
            plex_id TEXT NOT NULL,
            type media_type NOT NULL,
            title TEXT NOT NULL,
            year INTEGER,
            imdb_id TEXT,
            tmdb_id INTEGER,
            tvdb_id INTEGER,
            library_section TEXT,
            file_path TEXT,
            file_size_bytes BIGINT,
            duration_ms INTEGER,
            added_at TIMESTAMPTZ DEFAULT now(),
            updated_at TIMESTAMPTZ DEFAULT now(),
            metadata JSONB DEFAULT '{}'::jsonb,
            total_play_count INTEGER DEFAULT 0,
            last_watched_at TIMESTAMPTZ,
            total_watch_time_seconds BIGINT DEFAULT 0,
            tautulli_synced_at TIMESTAMPTZ,
            parent_title TEXT,
            grandparent_title TEXT,
            season_number INTEGER,
            episode_number INTEGER,
            file_size_mb NUMERIC(10, 2),
            genres JSONB DEFAULT '[]'::jsonb,
            video_resolution TEXT,
            video_codec TEXT,
            audio_codec TEXT,
            container TEXT,
            bitrate_kbps INTEGER,
            accessible BOOLEAN DEFAULT true,
            avg_percent_complete NUMERIC(5, 2),
            complete_play_count INTEGER DEFAULT 0,
            partial_play_count INTEGER DEFAULT 0,
            sonarr_series_id INTEGER,
            radarr_movie_id INTEGER,
            CONSTRAINT media_items_title_check CHECK (char_length(title) >= 1),
            CONSTRAINT media_items_year_check CHECK (year IS NULL OR (year >= 1900 AND year <= 2100)),
            CONSTRAINT media_items_file_size_check CHECK (file_size_bytes IS NULL OR file_size_bytes >= 0),
            CONSTRAINT media_items_duration_check CHECK (duration_ms IS NULL OR duration_ms >= 0),
            CONSTRAINT media_items_total_play_count_check CHECK (total_play_count >= 0),
            CONSTRAINT media_items_total_watch_time_check CHECK (total_watch_time_seconds >= 0),
            CONSTRAINT media_items_season_check CHECK (season_number IS NULL OR season_number >= 0),
            CONSTRAINT media_items_episode_check CHECK (episode_number IS NULL OR episode_number >= 0),
            CONSTRAINT media_items_file_size_mb_check CHECK (file_size_mb IS NULL OR file_size_mb >= 0),
            UNIQUE (server_id, plex_id)
        );
        CREATE INDEX idx_media_items_server_type ON media_items (server_id, type);
        CREATE INDEX idx_media_items_tmdb_id ON media_items (tmdb_id) WHERE tmdb_id IS NOT NULL;
        CREATE INDEX idx_media_items_tvdb_id ON media_items (tvdb_id) WHERE tvdb_id IS NOT NULL;
        CREATE INDEX idx_media_items_imdb_id ON media_items (imdb_id) WHERE imdb_id IS NOT NULL;
        CREATE INDEX idx_media_items_last_watched_at ON media_items (last_watched_at);
        CREATE INDEX idx_media_items_grandparent_title ON media_items (grandparent_title)
            WHERE type = 'episode' AND grandparent_title IS NOT NULL;
        CREATE INDEX idx_media_items_sonarr_series_id ON media_items (sonarr_series_id)
            WHERE sonarr_series_id IS NOT NULL;
        CREATE INDEX idx_media_items_radarr_movie_id ON media_items (radarr_movie_id)
            WHERE radarr_movie_id IS NOT NULL;
        ALTER TABLE media_items ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('user_stats') IS NULL THEN
        CREATE TABLE user_stats (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            media_item_id UUID NOT NULL REFERENCES media_items (id) ON DELETE CASCADE,
            play_count INTEGER NOT NULL DEFAULT 0,
            total_duration_ms BIGINT NOT NULL DEFAULT 0,
            last_played_at TIMESTAMPTZ,
            completion_percentage REAL,
            rating REAL,
            created_at TIMESTAMPTZ DEFAULT now(),
            updated_at TIMESTAMPTZ DEFAULT now(),
            percent_complete NUMERIC(5, 2),
            watched_status INTEGER DEFAULT 0,
            CONSTRAINT user_stats_play_count_check CHECK (play_count >= 0),
            CONSTRAINT user_stats_duration_check CHECK (total_duration_ms >= 0),
            CONSTRAINT user_stats_completion_check
                CHECK (completion_percentage IS NULL OR (completion_percentage >= 0 AND completion_percentage <= 100)),
            CONSTRAINT user_stats_rating_check CHECK (rating IS NULL OR (rating >= 0 AND rating <= 10)),
            UNIQUE (user_id, media_item_id)
        );
        CREATE INDEX idx_user_stats_media_item_id ON user_stats (media_item_id);
        ALTER TABLE user_stats ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('sync_history') IS NULL THEN
        CREATE TABLE sync_history (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            server_id UUID NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
            sync_type TEXT NOT NULL DEFAULT 'manual',
            status TEXT NOT NULL,
            items_processed INTEGER NOT NULL DEFAULT 0,
            items_added INTEGER NOT NULL DEFAULT 0,
            items_updated INTEGER NOT NULL DEFAULT 0,
            items_removed INTEGER NOT NULL DEFAULT 0,
            started_at TIMESTAMPTZ DEFAULT now(),
            completed_at TIMESTAMPTZ,
            error_message TEXT,
            metadata JSONB DEFAULT '{}'::jsonb,
            CONSTRAINT sync_history_items_check CHECK (
                items_processed >= 0 AND items_added >= 0 AND items_updated >= 0 AND items_removed >= 0
            )
        );
        CREATE INDEX idx_sync_history_server_id ON sync_history (server_id);
        ALTER TABLE sync_history ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('webhook_log') IS NULL THEN
        CREATE TABLE webhook_log (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            source TEXT NOT NULL,
            event_type TEXT NOT NULL,
            payload JSONB NOT NULL,
            received_at TIMESTAMPTZ DEFAULT now(),
            processed BOOLEAN DEFAULT false,
            processed_at TIMESTAMPTZ,
            error_message TEXT,
            created_at TIMESTAMPTZ DEFAULT now(),
            user_id UUID REFERENCES users (id) ON DELETE CASCADE,
            server_id UUID REFERENCES servers (id) ON DELETE CASCADE,
            CONSTRAINT webhook_log_source_check
                CHECK (source IN ('plex', 'tautulli', 'sonarr', 'radarr', 'overseerr'))
        );
        CREATE INDEX idx_webhook_log_source ON webhook_log (source);
        CREATE INDEX idx_webhook_log_received_at ON webhook_log (received_at DESC);
        CREATE INDEX idx_webhook_log_processed ON webhook_log (processed);
        CREATE INDEX idx_webhook_log_user_id ON webhook_log (user_id);
        ALTER TABLE webhook_log ENABLE ROW LEVEL SECURITY;
    END IF;

    -- SmartPlex's per-user shape (its migration 006). A database with 005's global shape keeps it.
    IF to_regclass('sync_schedule') IS NULL THEN
        CREATE TABLE sync_schedule (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            service TEXT NOT NULL,
            enabled BOOLEAN DEFAULT true,
            interval_hours INTEGER NOT NULL DEFAULT 6,
            last_run_at TIMESTAMPTZ,
            next_run_at TIMESTAMPTZ,
            run_count INTEGER DEFAULT 0,
            last_status TEXT,
            last_error TEXT,
            created_at TIMESTAMPTZ DEFAULT now(),
            updated_at TIMESTAMPTZ DEFAULT now(),
            CONSTRAINT sync_schedule_service_check
                CHECK (service IN ('plex', 'tautulli', 'sonarr', 'radarr', 'overseerr')),
            CONSTRAINT sync_schedule_interval_check CHECK (interval_hours >= 1 AND interval_hours <= 168),
            UNIQUE (user_id, service)
        );
        ALTER TABLE sync_schedule ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('sync_events') IS NULL THEN
        CREATE TABLE sync_events (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            sync_type TEXT NOT NULL,
            user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            server_id UUID REFERENCES servers (id) ON DELETE SET NULL,
            integration_id UUID REFERENCES integrations (id) ON DELETE SET NULL,
            trigger_type TEXT NOT NULL,
            triggered_by_user_id UUID REFERENCES users (id) ON DELETE SET NULL,
            status TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
            items_discovered INTEGER DEFAULT 0,
            items_new INTEGER DEFAULT 0,
            items_updated INTEGER DEFAULT 0,
            items_removed INTEGER DEFAULT 0,
            items_failed INTEGER DEFAULT 0,
            duration_ms INTEGER,
            started_at TIMESTAMPTZ DEFAULT now(),
            completed_at TIMESTAMPTZ,
            error_message TEXT,
            error_details JSONB,
            sync_metadata JSONB DEFAULT '{}'::jsonb
        );
        CREATE INDEX idx_sync_events_user ON sync_events (user_id, started_at DESC);
        CREATE INDEX idx_sync_events_type ON sync_events (sync_type, started_at DESC);
        ALTER TABLE sync_events ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('overseerr_requests') IS NULL THEN
        CREATE TABLE overseerr_requests (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id UUID REFERENCES users (id) ON DELETE CASCADE,
            overseerr_user_id INTEGER,
            media_title TEXT NOT NULL,
            media_type TEXT NOT NULL CHECK (media_type IN ('movie', 'tv')),
            tmdb_id INTEGER NOT NULL,
            tvdb_id INTEGER,
            seasons TEXT[],
            overseerr_request_id INTEGER,
            overseerr_status TEXT,
            requested_at TIMESTAMPTZ DEFAULT now(),
            status_updated_at TIMESTAMPTZ,
            completed_at TIMESTAMPTZ,
            notes TEXT,
            error_message TEXT
        );
        CREATE INDEX idx_overseerr_requests_user ON overseerr_requests (user_id, requested_at DESC);
        CREATE INDEX idx_overseerr_requests_overseerr_id ON overseerr_requests (overseerr_request_id)
            WHERE overseerr_request_id IS NOT NULL;
        ALTER TABLE overseerr_requests ENABLE ROW LEVEL SECURITY;
    END IF;
END $$;

-- Columns later SmartPlex migrations add (006, 009, 010, 011, 014, 017, 018, 020, 021), for a database
-- whose SmartPlex migrations stopped short of them or drifted; each only when missing.
ALTER TABLE users ADD COLUMN IF NOT EXISTS webhook_secret TEXT
    DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
ALTER TABLE users ADD COLUMN IF NOT EXISTS overseerr_user_id INTEGER;
ALTER TABLE servers ADD COLUMN IF NOT EXISTS preferred_connection_url TEXT;
ALTER TABLE servers ADD COLUMN IF NOT EXISTS plex_token TEXT;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS total_play_count INTEGER DEFAULT 0;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS last_watched_at TIMESTAMPTZ;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS total_watch_time_seconds BIGINT DEFAULT 0;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS tautulli_synced_at TIMESTAMPTZ;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS parent_title TEXT;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS grandparent_title TEXT;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS season_number INTEGER;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS episode_number INTEGER;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS file_size_mb NUMERIC(10, 2);
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS genres JSONB DEFAULT '[]'::jsonb;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS video_resolution TEXT;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS video_codec TEXT;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS audio_codec TEXT;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS container TEXT;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS bitrate_kbps INTEGER;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS accessible BOOLEAN DEFAULT true;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS avg_percent_complete NUMERIC(5, 2);
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS complete_play_count INTEGER DEFAULT 0;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS partial_play_count INTEGER DEFAULT 0;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS sonarr_series_id INTEGER;
ALTER TABLE media_items ADD COLUMN IF NOT EXISTS radarr_movie_id INTEGER;
ALTER TABLE user_stats ADD COLUMN IF NOT EXISTS percent_complete NUMERIC(5, 2);
ALTER TABLE user_stats ADD COLUMN IF NOT EXISTS watched_status INTEGER DEFAULT 0;
DO $$
BEGIN  -- a column with a foreign key, added only when missing (so no second constraint is made)
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'webhook_log' AND column_name = 'user_id') THEN
        ALTER TABLE webhook_log ADD COLUMN user_id UUID REFERENCES users (id) ON DELETE CASCADE;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'webhook_log' AND column_name = 'server_id') THEN
        ALTER TABLE webhook_log ADD COLUMN server_id UUID REFERENCES servers (id) ON DELETE CASCADE;
    END IF;
END $$;

-- Ours, where SmartPlex has no home for the fact (docs/supabase.md lists them):
-- what the gateway did with a delivery (deployments it asked for, or ignored / recorded / test /
-- rejected) and the HTTP status it answered;
ALTER TABLE webhook_log ADD COLUMN IF NOT EXISTS action TEXT;
ALTER TABLE webhook_log ADD COLUMN IF NOT EXISTS http_status INTEGER;
-- the Overseerr integration a request was read from: Overseerr numbers requests per instance.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'overseerr_requests' AND column_name = 'integration_id') THEN
        ALTER TABLE overseerr_requests ADD COLUMN integration_id UUID
            REFERENCES integrations (id) ON DELETE SET NULL;
    END IF;
END $$;

INSERT INTO smartplex_sync.schema_migrations (version) VALUES ('0001') ON CONFLICT (version) DO NOTHING;
