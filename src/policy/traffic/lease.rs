//! Lease mode: what a lease carries, the object's book of granted leases (the config fence), and the Worker's held lease (expiry arithmetic, local decisions, local ejection).
//!
//! Time: the object and the Worker each read only their own clock. The Worker starts a lease's
//! clock when it *sent* the request for it, and the object when it granted it (later in real
//! time), so the Worker always stops using a lease no later than the object believes it may.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::control::config::{self, Deployment, EffectiveMode};
use crate::policy::traffic::decision::{Outcome, Verdict};
use crate::policy::traffic::facts::{Needs, RequestFacts};
use crate::policy::traffic::fleet::{Fleet, LeasedBackend};

/// The Worker treats a lease as over this long before its nominal end: a Worker's clock only
/// advances between I/O events, so it can lag real time by the CPU time of one request.
pub const EXPIRY_MARGIN_MS: u64 = 20;

/// While a breaker's trial is due but the object has not handed it out, a Worker asks the
/// object at most every tenth of a lease (and no more often than this).
pub const TRIAL_RETRY_MIN_MS: u64 = 10;

/// The longest lease (`decisions.lease_ms` range).
pub const MAX_LEASE_MS: u64 = 10_000;

/// Leases one hostname's object keeps track of at most; beyond it the object declines to grant
/// (the Worker then asks per request), because a lease it forgot could outlive a config fence.
pub const MAX_LEASES: usize = 10_000;

/// What the object grants: enough to decide locally, for `lease_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub id: u64,
    /// The config version (for display and logs).
    pub version: u64,
    /// Changes with every config change (also across object restarts): a Worker holding a
    /// lease of an older generation hands it back at once.
    pub generation: u64,
    pub lease_ms: u64,
    /// The canonical config: steering, affinity, geo, retry and timeout parameters.
    pub config: serde_json::Value,
    pub backends: Vec<LeasedBackend>,
    /// Where this Worker starts each pool's round robin.
    pub offset: u64,
    /// The affinity cookie key (base64), so the Worker signs and verifies pins as the object does.
    pub secret: String,
    /// A breaker not closed may take its trial this many ms after the grant: from then the
    /// Worker asks the object, which hands the single trial to one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_in_ms: Option<u64>,
    /// A live tail listens: the Worker reports each request's line.
    #[serde(default)]
    pub tailing: bool,
}

/// Worker -> object, `POST /lease` (JSON): outcomes to apply, leases no longer used, and whether
/// a fresh lease is wanted (false: only handing back).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub host: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<Outcome>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returned: Vec<u64>,
    #[serde(default)]
    pub want: bool,
    /// The Worker still holds a lease (a grant now is a refresh).
    #[serde(default)]
    pub holding: bool,
}

/// Object -> Worker: a fresh lease, or none (the service is not in lease mode, or is gone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseReply {
    pub lease: Option<Lease>,
}

/// Grants a lease on `fleet` (object side), recorded in `book`; None when the service is not
/// in lease mode or the book is full. `offset` spreads Workers' round robins (random).
pub fn grant(
    fleet: &Fleet,
    book: &mut LeaseBook,
    now_ms: u64,
    refresh: bool,
    offset: u64,
    tailing: bool,
) -> Option<Lease> {
    let d = &fleet.cfg().decisions;
    if fleet.cfg().effective_mode() != EffectiveMode::Lease {
        return None;
    }
    let id = book.grant(d.lease_ms, now_ms, refresh)?;
    let secret = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(fleet.secret())
    };
    // The Worker needs no webhook settings (nor their signing secrets) to decide.
    let mut config = fleet.cfg().to_value();
    if let Some(m) = config.as_object_mut() {
        m.remove("notifications");
    }
    Some(Lease {
        id,
        version: fleet.version(),
        generation: book.generation(),
        lease_ms: d.lease_ms,
        config,
        backends: fleet.lease_backends(now_ms),
        offset,
        secret,
        trial_in_ms: fleet.trial_in_ms(now_ms),
        tailing,
    })
}

/// Separates a decision reply from the lease that may follow it (a JSON text never holds a
/// raw control character, so this byte cannot occur inside either part).
const LEASE_MARK: char = '\u{1e}';

/// A decision reply (see `tail::reply`) with a lease appended, when there is one.
pub fn attach(mut reply: Vec<u8>, lease: Option<&Lease>) -> Vec<u8> {
    if let Some(text) = lease.and_then(|l| serde_json::to_string(l).ok()) {
        let mut mark = [0u8; 4];
        reply.extend_from_slice(LEASE_MARK.encode_utf8(&mut mark).as_bytes());
        reply.extend_from_slice(text.as_bytes());
    }
    reply
}

/// Reads [`attach`]: the decision reply, and the lease's JSON if one came with it.
pub fn detach(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once(LEASE_MARK) {
        Some((reply, lease)) => (reply, Some(lease)),
        None => (text, None),
    }
}

/// The moment (Worker clock) a lease whose request was sent at `sent_ms` stops being used.
pub fn lease_end(sent_ms: u64, lease_ms: u64) -> u64 {
    sent_ms.saturating_add(lease_ms.saturating_sub(EXPIRY_MARGIN_MS))
}

/// The moment (Worker clock) a refresh is started in the background: half way, so a refresh
/// has half a lease to come back before the first request would have to wait.
pub fn refresh_at(sent_ms: u64, lease_ms: u64) -> u64 {
    sent_ms.saturating_add(lease_ms / 2)
}

/// Counts shown in the status view and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LeaseCounters {
    /// Leases granted to a Worker that held none (its first request, or after an idle gap).
    pub grants: u64,
    /// Leases granted to replace one still held.
    pub refreshes: u64,
    /// Leases handed back before they expired.
    pub early_returns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Granted {
    generation: u64,
    /// Object clock.
    expires_ms: u64,
}

/// The object's record of leases it granted and that may still be in use.
#[derive(Clone, Debug)]
pub struct LeaseBook {
    generation: u64,
    next_id: u64,
    granted: BTreeMap<u64, Granted>,
    /// Leases of an earlier object lifetime may be in use until then (they were not recorded here).
    unknown_until_ms: u64,
    pub counters: LeaseCounters,
}

impl LeaseBook {
    /// A book for a fresh object lifetime: leases granted by an earlier lifetime are unknown, so
    /// they count as in use for `unknown_for_ms` (the longest a lease of the stored config lasts).
    pub fn new(now_ms: u64, unknown_for_ms: u64) -> Self {
        LeaseBook {
            // From the clock, so generations of different lifetimes differ.
            generation: now_ms,
            next_id: now_ms << 12,
            granted: BTreeMap::new(),
            unknown_until_ms: now_ms.saturating_add(unknown_for_ms),
            counters: LeaseCounters::default(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records a grant of `lease_ms` made now; None when the book is full (decide per request).
    /// `refresh`: the Worker still holds a lease (counted apart from first grants).
    pub fn grant(&mut self, lease_ms: u64, now_ms: u64, refresh: bool) -> Option<u64> {
        self.expire(now_ms);
        if self.granted.len() >= MAX_LEASES {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.granted.insert(
            id,
            Granted {
                generation: self.generation,
                expires_ms: now_ms.saturating_add(lease_ms),
            },
        );
        if refresh {
            self.counters.refreshes += 1;
        } else {
            self.counters.grants += 1;
        }
        Some(id)
    }

    /// Leases the Worker says it no longer uses. Unknown or expired ids are ignored.
    pub fn hand_back(&mut self, ids: &[u64], now_ms: u64) {
        for id in ids {
            if self
                .granted
                .remove(id)
                .is_some_and(|g| g.expires_ms > now_ms)
            {
                self.counters.early_returns += 1;
            }
        }
    }

    /// The config changed: leases granted from now on belong to the new generation.
    pub fn new_generation(&mut self) {
        self.generation += 1;
    }

    /// Leases that may be in use now.
    pub fn outstanding(&mut self, now_ms: u64) -> usize {
        self.expire(now_ms);
        self.granted.len()
    }

    /// How long (object clock) until no lease of an earlier generation can still be in use:
    /// the fence a config change waits behind before it is acknowledged. 0: none left.
    pub fn fence_wait_ms(&mut self, now_ms: u64) -> u64 {
        self.expire(now_ms);
        let generation = self.generation;
        self.granted
            .values()
            .filter(|g| g.generation < generation)
            .map(|g| g.expires_ms)
            .chain([self.unknown_until_ms])
            .max()
            .unwrap_or(0)
            .saturating_sub(now_ms)
    }

    fn expire(&mut self, now_ms: u64) {
        self.granted.retain(|_, g| g.expires_ms > now_ms);
    }
}

/// A lease as the Worker holds it: the local view it decides from, its clock, and what it
/// learned locally.
pub struct Held {
    pub id: u64,
    pub generation: u64,
    pub version: u64,
    pub tailing: bool,
    sent_ms: u64,
    lease_ms: u64,
    /// Worker clock: from then, requests go to the object (a breaker's trial is due).
    trial_at_ms: Option<u64>,
    fleet: Fleet,
    /// Each backend's URL and whether the lease had it up (restored when an ejection ends).
    leased_up: Vec<(String, bool)>,
    /// Backends that failed here, and until when they stay out (the end of the lease they
    /// failed under).
    ejected: Vec<(String, u64)>,
    /// A refresh is on its way.
    refreshing: bool,
    /// Leases this one replaced: handed back with the next message to the object.
    superseded: Vec<u64>,
}

/// What the Worker does with one request under its lease.
// Made once per request and matched at once: boxing the verdict would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Local {
    /// Decided here.
    Decided(Verdict),
    /// Ask the object: the lease is over, or a breaker's trial is due.
    AskObject,
}

impl Held {
    /// The config this lease decides with.
    pub fn cfg(&self) -> &crate::policy::control::config::ServiceConfig {
        self.fleet.cfg()
    }

    /// What the Worker must read of a request to decide it under this lease (computed once,
    /// when the lease was taken).
    pub fn needs(&self) -> Needs {
        self.fleet.needs().clone()
    }

    /// Builds the local view from a lease whose request was sent at `sent_ms` (Worker clock).
    pub fn new(lease: Lease, sent_ms: u64) -> Result<Held, String> {
        let cfg =
            config::parse_service(&lease.config, "", &Deployment::default()).map_err(|errs| {
                let first = errs.first().map(|e| format!("{}: {}", e.path, e.message));
                format!("lease config unreadable: {}", first.unwrap_or_default())
            })?;
        let secret = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&lease.secret)
                .map_err(|e| format!("lease secret unreadable: {e}"))?
        };
        let mut fleet = Fleet::from_lease(cfg, lease.version, &lease.backends, &secret, sent_ms)?;
        fleet.spread(lease.offset);
        let leased_up = fleet
            .records()
            .iter()
            .zip(&lease.backends)
            .map(|(r, b)| (r.url.clone(), b.up))
            .collect();
        Ok(Held {
            id: lease.id,
            generation: lease.generation,
            version: lease.version,
            tailing: lease.tailing,
            sent_ms,
            lease_ms: lease.lease_ms,
            trial_at_ms: lease.trial_in_ms.map(|t| sent_ms.saturating_add(t)),
            fleet,
            leased_up,
            ejected: Vec::new(),
            refreshing: false,
            superseded: Vec::new(),
        })
    }

    /// Worker clock: the lease is not used from then on.
    pub fn ends_ms(&self) -> u64 {
        lease_end(self.sent_ms, self.lease_ms)
    }

    pub fn usable(&self, now_ms: u64) -> bool {
        now_ms < self.ends_ms()
    }

    /// Decides one request locally with the same policy code as the object, unless the lease
    /// is over or a trial is due.
    pub fn decide(&mut self, facts: &RequestFacts, now_ms: u64) -> Local {
        if !self.usable(now_ms) || self.trial_at_ms.is_some_and(|t| now_ms >= t) {
            return Local::AskObject;
        }
        if self.ejected.iter().any(|(_, until)| *until <= now_ms) {
            self.end_ejections(now_ms);
        }
        Local::Decided(self.fleet.decide(facts, now_ms))
    }

    /// Should a background refresh start now? True once per lease, from half way.
    pub fn start_refresh(&mut self, now_ms: u64) -> bool {
        if self.refreshing || now_ms < refresh_at(self.sent_ms, self.lease_ms) {
            return false;
        }
        self.refreshing = true;
        true
    }

    /// A refresh failed: let a later request try again.
    pub fn refresh_failed(&mut self) {
        self.refreshing = false;
    }

    /// A backend failed in this Worker: no more of its traffic for the rest of this lease.
    pub fn eject(&mut self, url: &str) {
        if self.fleet.eject(url) {
            let until = self.ends_ms();
            self.ejected.retain(|(u, _)| u != url);
            self.ejected.push((url.to_string(), until));
        }
    }

    /// Ejections whose lease has ended: the backend is as this lease says again.
    fn end_ejections(&mut self, now_ms: u64) {
        let (over, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ejected)
            .into_iter()
            .partition(|(_, until)| *until <= now_ms);
        self.ejected = live;
        for (url, _) in over {
            let up = self
                .leased_up
                .iter()
                .find(|(u, _)| *u == url)
                .is_some_and(|(_, up)| *up);
            self.fleet.set_up(&url, up);
        }
    }

    /// Leases to hand back with the next message to the object (taken: sent once).
    pub fn take_superseded(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.superseded)
    }

    /// Backends that failed here and are still out (for tests and the log).
    pub fn ejected(&self, now_ms: u64) -> Vec<&str> {
        self.ejected
            .iter()
            .filter(|(_, until)| *until > now_ms)
            .map(|(u, _)| u.as_str())
            .collect()
    }

    /// `next` replaces this lease. Returns the new held lease and the ids to hand back *now*:
    /// after a config change (another generation) every older lease goes back at once, so the
    /// change is acknowledged sooner; otherwise this one waits for the next message.
    /// Ejections made under this lease stay in force until it would have ended, and the
    /// round robin continues where it was when the backends are the same.
    pub fn replaced_by(mut self, mut next: Held, now_ms: u64) -> (Held, Vec<u64>) {
        let mut old = self.take_superseded();
        old.push(self.id);
        let urgent = next.generation != self.generation;
        // A trial was due and is still due: the object has not handed it out (its backend was
        // not picked). Ask again only now and then, not with every request.
        let still_due = |t: Option<u64>| t.is_some_and(|t| t <= now_ms);
        if still_due(self.trial_at_ms) && still_due(next.trial_at_ms) {
            next.trial_at_ms =
                Some(now_ms.saturating_add((next.lease_ms / 10).max(TRIAL_RETRY_MIN_MS)));
        }
        if !urgent {
            next.fleet.adopt_rotation(&self.fleet);
        }
        for (url, until) in self.ejected {
            if until > now_ms && next.fleet.eject(&url) {
                next.ejected.push((url, until));
            }
        }
        if urgent {
            (next, old)
        } else {
            next.superseded = old;
            (next, Vec::new())
        }
    }
}

#[cfg(test)]
mod tests;
