//! Access: who may do what.
//!
//! Owns admin credentials and the login throttle, client addresses, allow/deny lists and rate
//! limits for balanced traffic, the reserved admin prefix rule, named API keys, console sessions,
//! JWTs, OAuth sign-in and bounded expiring sets. Uses `control` for hostname validation, config
//! errors and the audit actor type.

pub mod auth;
pub mod clients;
pub mod expiring;
pub mod jwt;
pub mod keys;
pub mod lists;
pub mod oauth;
pub mod prefix;
pub mod ratelimit;
pub mod session;
