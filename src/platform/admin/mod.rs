//! The admin side: everything an operator or a script talks to.
//!
//! Owns the admin REST routes and their authentication, the console's files, sign-in and
//! sessions, the `Accounts` object (keys, revoked sessions, OAuth states, deployment audit), the
//! `LoginThrottle` object and the Prometheus scrape. Uses `object` to reach each hostname's
//! object and `store` for D1 queries.

pub mod accounts;
pub mod console;
pub mod metrics;
pub mod routes;
pub mod session;
pub mod throttle;
