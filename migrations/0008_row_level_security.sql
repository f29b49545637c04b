-- SmartPlex Sync 0008: row level security on every table, and no policy for the Data API's roles.
-- Supabase publishes each table of the `public` schema through its Data API to anyone holding the anon key
-- (role `anon`) or a user's session (role `authenticated`), and both roles get privileges on new tables
-- by default. With RLS enabled and no policy for them, they see no row and can write none. The service
-- connection (SMARTPLEX_DATABASE_URL, the `postgres` role that owns these tables) is not subject to RLS,
-- nor is `service_role` (BYPASSRLS). To let signed-in SmartPlex users read the library, add a policy of
-- your own (docs/supabase.md). Every later migration enables RLS on the tables it creates.
-- On plain PostgreSQL this changes nothing for SmartPlex Sync; the SQLite runner skips these statements.
-- IF EXISTS: the file also applies to a database that lacks one of the tables (pasted out of order).

ALTER TABLE IF EXISTS schema_migrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS webhook_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS sync_schedule ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS media_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS sync_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS watch_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS overseerr_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS arr_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS dispatch_batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS webhook_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE IF EXISTS batch_requests ENABLE ROW LEVEL SECURITY;

INSERT INTO schema_migrations (version) VALUES ('0008') ON CONFLICT (version) DO NOTHING;
