//! Requests in flight: the tickets a counting steering mode hands out, and their completion or expiry.

use super::{Fleet, Ticket};
use crate::policy::traffic::decision::Route;

/// A request whose completion never comes (its Worker instance was evicted) stops counting as
/// outstanding this long after its timeout budget (attempts × connection timeout) ran out:
/// the grace covers a response body still streaming after its headers.
pub(super) const TICKET_GRACE_MS: u64 = 10_000;

/// In-flight requests tracked per hostname; beyond this the oldest entry is dropped.
const MAX_TICKETS: usize = 100_000;

impl Fleet {
    /// Counts a decided request as outstanding at `backend` when the steering mode uses the
    /// count; the ticket comes back with the request's completion (see [`Fleet::complete`]).
    pub(super) fn count_in(&mut self, backend: usize, route: &Route, now_ms: u64) -> Option<u64> {
        if !self
            .cfg
            .load_balancer
            .endpoint_steering
            .counts_outstanding()
        {
            return None;
        }
        self.expire_tickets(now_ms);
        if self.tickets.len() >= MAX_TICKETS {
            if let Some((_, t)) = self.tickets.pop_first() {
                self.release(t.backend);
            }
        }
        let id = self.next_ticket;
        self.next_ticket += 1;
        let budget = route
            .timeout_ms
            .saturating_mul(route.attempts.len().max(1) as u64);
        self.tickets.insert(
            id,
            Ticket {
                backend,
                expires_ms: now_ms
                    .saturating_add(budget)
                    .saturating_add(TICKET_GRACE_MS),
            },
        );
        self.load[backend].outstanding = self.load[backend].outstanding.saturating_add(1);
        Some(id)
    }

    /// Drops tickets whose request never reported back. Oldest first: with one config the
    /// expiries grow with the ids, so the scan stops at the first live ticket.
    fn expire_tickets(&mut self, now_ms: u64) {
        while let Some(entry) = self.tickets.first_entry() {
            if entry.get().expires_ms > now_ms {
                break;
            }
            let t = entry.remove();
            self.release(t.backend);
        }
    }

    fn release(&mut self, backend: usize) {
        if let Some(l) = self.load.get_mut(backend) {
            l.outstanding = l.outstanding.saturating_sub(1);
        }
    }

    /// A counted request finished (its response went out, or it failed, or its WebSocket
    /// closed): it no longer counts as outstanding. Unknown or repeated tickets are ignored.
    pub fn complete(&mut self, ticket: u64) {
        if let Some(t) = self.tickets.remove(&ticket) {
            self.release(t.backend);
        }
    }

    /// Requests counted as in flight now, per backend (0 in modes that do not count).
    pub fn outstanding(&self) -> Vec<u32> {
        self.load.iter().map(|l| l.outstanding).collect()
    }
}
