//! FlowBalance: an HTTP load balancer on Cloudflare Workers; pure policy plus thin platform glue.

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod platform;
