-- Analytics from rollups: each hostname's Durable Object writes one row per (hostname, minute, backend)
-- that had traffic, and keeps the hour's row current beside it. backend '' is the hostname as its clients
-- saw it (what they were answered, by whom), and every other backend is the attempts FlowBalance sent there.
-- hist holds counts per request-duration bucket (metrics::BUCKETS_MS, then +Inf), as a JSON array.
-- samples (minute rows of backend '' only) holds the minute's sampled successful requests as a JSON array:
-- successes are logged inside the rollup row, at no extra row written.
CREATE TABLE IF NOT EXISTS rollup_minutes (hostname TEXT NOT NULL, t_ms INTEGER NOT NULL, backend TEXT NOT NULL, requests INTEGER NOT NULL, c2xx INTEGER NOT NULL DEFAULT 0, c3xx INTEGER NOT NULL DEFAULT 0, c4xx INTEGER NOT NULL DEFAULT 0, c5xx INTEGER NOT NULL DEFAULT 0, cerr INTEGER NOT NULL DEFAULT 0, rate_limited INTEGER NOT NULL DEFAULT 0, denied INTEGER NOT NULL DEFAULT 0, no_backend INTEGER NOT NULL DEFAULT 0, retried INTEGER NOT NULL DEFAULT 0, failed_over INTEGER NOT NULL DEFAULT 0, latency_sum_ms INTEGER NOT NULL DEFAULT 0, hist TEXT NOT NULL DEFAULT '[]', samples TEXT, PRIMARY KEY (hostname, t_ms, backend)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_hours (hostname TEXT NOT NULL, t_ms INTEGER NOT NULL, backend TEXT NOT NULL, requests INTEGER NOT NULL, c2xx INTEGER NOT NULL DEFAULT 0, c3xx INTEGER NOT NULL DEFAULT 0, c4xx INTEGER NOT NULL DEFAULT 0, c5xx INTEGER NOT NULL DEFAULT 0, cerr INTEGER NOT NULL DEFAULT 0, rate_limited INTEGER NOT NULL DEFAULT 0, denied INTEGER NOT NULL DEFAULT 0, no_backend INTEGER NOT NULL DEFAULT 0, retried INTEGER NOT NULL DEFAULT 0, failed_over INTEGER NOT NULL DEFAULT 0, latency_sum_ms INTEGER NOT NULL DEFAULT 0, hist TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (hostname, t_ms, backend)) WITHOUT ROWID;
-- The deployment's D1 rows written per UTC day (D1's own meta.rows_written), for D1_DAILY_ROWS_BUDGET.
CREATE TABLE IF NOT EXISTS d1_usage (day TEXT NOT NULL, tbl TEXT NOT NULL, rows INTEGER NOT NULL, PRIMARY KEY (day, tbl)) WITHOUT ROWID;
-- The request log keeps what an operator must see one by one: why a row was kept (error, retried, slow,
-- refused, NULL: logged before sampling), and its failed attempts as JSON (failed_attempts is gone: rollups
-- count failures per backend).
ALTER TABLE request_logs ADD COLUMN kept TEXT;
ALTER TABLE request_logs ADD COLUMN failed TEXT;
-- Only the index the queries use: every index is one more row written per insert and per delete.
DROP INDEX IF EXISTS request_logs_ts;
DROP TABLE IF EXISTS failed_attempts;
