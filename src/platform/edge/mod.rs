//! The edge: the Worker's balanced request path.
//!
//! Owns reading a request, deciding where it goes (under a held lease, or by asking the
//! hostname's object), forwarding with failover, streaming the answer back, reporting outcomes,
//! and WebSocket upgrades. Uses `object` for the tail's route and `store` for the request log.
//!
//! One direction, top to bottom: `balance` → `decide` (→ `incoming`, `lease`, `report`),
//! `forward` and `websocket` (→ `report`), `report` (→ `lease`). No file here imports the file
//! that imports it.

pub mod balance;
pub mod decide;
pub mod forward;
pub mod incoming;
pub mod lease;
pub mod report;
pub mod websocket;
