//! The admin side: everything an operator or a script talks to.
//!
//! Owns the admin REST routes and their authentication, the console's files, sign-in and
//! sessions, the `Accounts` object (keys, revoked sessions, OAuth states, deployment audit), the
//! `LoginThrottle` object, the Prometheus scrape and the bounded reading of request bodies. Uses
//! `relay` to reach each hostname's object, `object` for the live tail and `store` for D1 queries.

pub mod accounts;
pub mod body;
pub mod console;
pub mod metrics;
pub mod routes;
pub mod session;
pub mod throttle;
