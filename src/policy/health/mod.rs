//! Health: whether a backend should take traffic.
//!
//! Owns probe hysteresis and scheduling (`checks`), monitor verdicts, the circuit breaker, service
//! and backend health classes, the health score (`score`), and the transitions between states
//! that events are made of; probing from several regions with a quorum (`regions`) and one
//! region's prober (`prober`), and health-checked DNS records (`dns`).
//! Uses `control` for the monitor and breaker settings, `traffic` for backend records and URL
//! parts, and `rng` for jitter.

pub mod breaker;
pub mod checks;
pub mod dns;
pub mod monitor;
pub mod prober;
pub mod regions;
pub mod score;
pub mod transitions;
