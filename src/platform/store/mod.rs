//! The store: D1.
//!
//! Owns the registry of services created through the API, the request log and failed attempts,
//! the health history and the retention cron. Nothing here is on a request's critical path.

pub mod healthlog;
pub mod registry;
pub mod requestlog;
pub mod retention;
pub mod rollups;
