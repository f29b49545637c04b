-- SmartPlex Sync 0006: what Sonarr and Radarr told us, kept apart from the Plex rows it describes.
-- A Download webhook asks for a Plex sync and a Sonarr/Radarr sync at the same moment, so the arr side
-- may arrive before Plex has the item. Its ids wait here; `link_arr_ids` copies them onto media_items
-- whenever either side changes (after every Sonarr, Radarr and Plex library sync).

CREATE TABLE IF NOT EXISTS arr_items (
    service     TEXT NOT NULL CHECK (service IN ('sonarr', 'radarr')),
    arr_id      INTEGER NOT NULL,           -- Sonarr series id / Radarr movie id
    title       TEXT NOT NULL,
    tvdb_id     INTEGER,
    tmdb_id     INTEGER,
    imdb_id     TEXT,
    path        TEXT,                       -- the series / movie folder, as the arr sees it
    synced_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (service, arr_id)
);

CREATE INDEX IF NOT EXISTS arr_items_tvdb_idx ON arr_items (service, tvdb_id) WHERE tvdb_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS arr_items_tmdb_idx ON arr_items (service, tmdb_id) WHERE tmdb_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS arr_items_imdb_idx ON arr_items (service, imdb_id) WHERE imdb_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS media_items_imdb_idx ON media_items (imdb_id) WHERE imdb_id IS NOT NULL;

INSERT INTO schema_migrations (version) VALUES ('0006') ON CONFLICT (version) DO NOTHING;
