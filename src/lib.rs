//! FlowBalance: an HTTP load balancer on Cloudflare Workers; pure policy plus thin platform glue.

// A panic reinitialises the wasm instance and fails every request in flight on it.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod platform;
