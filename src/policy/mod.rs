//! Pure load-balancing policy: no `worker` types, no I/O, no clock reads; time and randomness come in as arguments.

pub mod access;
pub mod affinity;
pub mod audit;
pub mod auth;
pub mod breaker;
pub mod changes;
pub mod clients;
pub mod config;
pub mod decision;
pub mod failover;
pub mod fleet;
pub mod forwarding;
pub mod geo;
pub mod health;
pub mod jwt;
pub mod keys;
pub mod oauth;
pub mod precondition;
pub mod ratelimit;
pub mod retry;
pub mod rng;
pub mod select;
pub mod session;
