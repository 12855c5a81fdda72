//! The per-hostname Durable Object and what runs inside it.
//!
//! Owns the `Balancer` object (config and its storage, live backend state, decisions, leases,
//! counters, the webhook outbox), its probes, the `Prober` objects that probe from other regions,
//! webhook deliveries and the live tail's sockets.
//! Uses `store` for the health history and registry, `relay` for the headers the Worker sends.

pub mod balancer;
pub mod probe;
pub mod prober;
pub mod tail;
pub mod webhook;
