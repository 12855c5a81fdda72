//! The edge: the Worker's balanced request path.
//!
//! Owns reading a request, asking the hostname's object for a decision (or deciding under a
//! lease), forwarding with failover, streaming the answer back, reporting outcomes, and WebSocket
//! upgrades. Uses `object` for the tail's route and `store` for the request log.

pub mod balance;
pub mod lease;
pub mod websocket;
