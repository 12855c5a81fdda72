-- Failed attempts of logged requests, each charged to the backend that failed it (per-backend metrics).
CREATE TABLE IF NOT EXISTS failed_attempts (id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms REAL NOT NULL, hostname TEXT NOT NULL, backend TEXT NOT NULL, status INTEGER, latency_ms REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failed_attempts_host_ts ON failed_attempts (hostname, ts_ms);
CREATE INDEX IF NOT EXISTS failed_attempts_ts ON failed_attempts (ts_ms);
