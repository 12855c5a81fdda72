//! Telemetry: what FlowBalance tells operators.
//!
//! Owns the per-hostname counters and their Prometheus/OpenMetrics exposition, client answer
//! tallies, the daily D1 budget, the per-request record, webhook events and their outbox,
//! live-tail lines, request-log batching and queries, and retention. Uses `traffic` and `health`
//! for what it reports on, `control` for settings, and `rng` for backoff jitter.

pub mod answers;
pub mod budget;
pub mod logquery;
pub mod metrics;
pub mod notify;
pub mod percentiles;
pub mod record;
pub mod retention;
pub mod rollup;
pub mod tail;
