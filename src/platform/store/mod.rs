//! The store: D1.
//!
//! Owns the registry of services created through the API, the request log, the analytics read
//! from the rollups, the health history and the retention cron. Nothing here is on a request's critical path.

pub mod analytics;
pub mod healthlog;
pub mod registry;
pub mod requestlog;
pub mod retention;
