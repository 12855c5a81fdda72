//! The store: D1.
//!
//! Owns the registry of services created through the API, the request log, the analytics read
//! from the rollups (which each hostname's object writes), the health history, the retention cron,
//! and D1's state and daily budget. Nothing here is on a request's critical path, and every caller
//! survives D1 refusing (quota, outage, missing table): writes are kept for the next try or logged
//! as lost, admin reads answer 503 `unavailable: "d1"`.

pub mod analytics;
pub mod healthlog;
pub mod registry;
pub mod requestlog;
pub mod retention;
pub mod rollups;
pub mod usage;
