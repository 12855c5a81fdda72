//! Pure load-balancing policy: no `worker` types, no I/O, no clock reads; time and randomness come in as arguments.

pub mod access;
pub mod control;
pub mod health;
pub mod rng;
pub mod telemetry;
pub mod traffic;
