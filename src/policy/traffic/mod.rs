//! Traffic: where a request goes and what happens when an attempt fails.
//!
//! Owns backend selection (smooth weighted round robin, least outstanding, latency, client hash),
//! pools and geo/failover steering, session affinity, the request facts a decision reads (and
//! which of them a config needs), a hostname's live fleet and its decisions, config previews
//! (recent requests replayed under a draft), leases, the failover and retry plans, WebSocket
//! upgrades, how a request is forwarded, and which answers' bodies are watched.
//! Uses `health` for backend state and breakers, `control` for the config, `access` for access
//! lists and rate limits, `telemetry` for the counters a decision updates, and `rng`.

pub mod affinity;
pub mod attempts;
pub mod body_watch;
pub mod decision;
pub mod dynamic;
pub mod facts;
pub mod failover;
pub mod fleet;
pub mod forwarding;
pub mod geo;
pub mod lease;
pub mod preview;
pub mod retry;
pub mod rules;
pub mod select;
pub mod steering;
pub mod upgrade;
