-- Health history: backend health and breaker transitions, written by each hostname's Durable Object.
CREATE TABLE IF NOT EXISTS health_events (id INTEGER PRIMARY KEY AUTOINCREMENT, hostname TEXT NOT NULL, backend TEXT NOT NULL, at_ms REAL NOT NULL, kind TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS health_events_host_at ON health_events (hostname, at_ms);
CREATE INDEX IF NOT EXISTS health_events_at ON health_events (at_ms);
