-- Services created through the admin API (DEFAULT_BACKENDS services are listed from the variable).
CREATE TABLE IF NOT EXISTS services (hostname TEXT PRIMARY KEY, version INTEGER NOT NULL, updated_ms REAL NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
-- Request log, written in batches off the request path.
CREATE TABLE IF NOT EXISTS request_logs (id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms REAL NOT NULL, hostname TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, backend TEXT, attempts INTEGER NOT NULL, latency_ms REAL NOT NULL);
CREATE INDEX IF NOT EXISTS request_logs_host_ts ON request_logs (hostname, ts_ms);
CREATE INDEX IF NOT EXISTS request_logs_ts ON request_logs (ts_ms);
