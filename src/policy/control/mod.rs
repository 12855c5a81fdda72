//! Control: the config and how it changes.
//!
//! Owns the typed config model with its defaults, validation and JSON Schema, backend edits,
//! `If-Match` preconditions, the audit trail of changes and the watch that rolls a bad change back. Uses `access` (CIDRs), `health`
//! (monitor options) and `traffic` (URL parts, hop-by-hop headers) for the types its sections hold.

pub mod audit;
pub mod changes;
pub mod config;
pub mod precondition;
pub mod watch;
