//! Probe scheduling: each backend's own cadence, the round due now, and earlier probes for a backend that failed.

use super::Fleet;
use crate::policy::control::config::BackendState;
use crate::policy::health::checks;
use crate::policy::rng::Rng;

/// A probe due this soon is taken with the round being made now: an alarm may fire a little early.
const PROBE_SLACK_MS: u64 = 25;

impl Fleet {
    /// Does this object probe the backends itself (active checks on, no `regions`)? With
    /// `regions`, each region's prober does, and reports (see `apply_region_report`).
    pub fn probes_here(&self) -> bool {
        self.cfg.health.enabled && self.cfg.health.regions.is_empty()
    }

    /// The backends to probe now, each rescheduled one interval (±10%) ahead: those due by
    /// `now_ms`, or with `all` every backend not disabled (a probe asked for by an operator).
    /// Disabled backends are never probed. The path discovery found rides along.
    pub fn take_probe_plan(&mut self, now_ms: u64, all: bool, rng: &mut impl Rng) -> ProbePlan {
        let interval = self.cfg.health.interval_ms;
        let mut targets = Vec::new();
        for i in 0..self.backends.len() {
            if self.states[i] == BackendState::Disabled {
                continue;
            }
            let due = self.probe_due[i].is_none_or(|at| at <= now_ms + PROBE_SLACK_MS);
            if !(all || (due && self.probes_here())) {
                continue;
            }
            self.probe_due[i] = Some(now_ms + checks::jitter_ms(interval, rng));
            targets.push(ProbeTarget {
                index: i,
                url: self.backends[i].url.clone(),
                discovered_path: self.backends[i].health_path.clone(),
            });
        }
        ProbePlan { targets }
    }

    /// Applies one probe of `target`; true when something worth persisting changed. A result
    /// for a backend the config no longer has at that index (changed mid-round) is dropped.
    pub fn apply_probe_result(
        &mut self,
        target: &ProbeTarget,
        r: &ProbeOutcome,
        now_ms: u64,
    ) -> bool {
        if self.backends.get(target.index).map(|b| &b.url) != Some(&target.url) {
            return false;
        }
        let b = &mut self.backends[target.index];
        let path_changed = b.health_path != r.discovered_path;
        b.health_path = r.discovered_path.clone();
        let changed = self.apply_probe(target.index, r.ok, r.latency_ms, r.error.clone(), now_ms);
        let b = &self.backends[target.index];
        if b.suspect || !b.health.healthy || b.health.consecutive_fail > 0 {
            // Failing: confirm (or clear) it within seconds rather than an interval later.
            self.probe_sooner(target.index, now_ms);
        }
        changed || path_changed
    }

    /// Moves backend `i`'s next probe to within [`checks::suspect_reprobe_ms`] of `now_ms`;
    /// true when that is earlier than it was due (the platform then re-arms its alarm).
    pub(super) fn probe_sooner(&mut self, i: usize, now_ms: u64) -> bool {
        if !self.probes_here() || self.states[i] == BackendState::Disabled {
            return false;
        }
        let soon = now_ms + checks::suspect_reprobe_ms(self.cfg.health.interval_ms);
        match self.probe_due[i] {
            Some(at) if at <= soon => false,
            _ => {
                self.probe_due[i] = Some(soon);
                true
            }
        }
    }

    /// When the earliest probe is due (ms), or None when this object does not probe. A backend not
    /// scheduled yet is due an interval (±10%) from now, or at once when it was never probed
    /// (new, or just added by a config change), so its health is not unknown for long.
    pub fn next_probe_at(&mut self, now_ms: u64, rng: &mut impl Rng) -> Option<u64> {
        if !self.probes_here() {
            return None;
        }
        let interval = self.cfg.health.interval_ms;
        (0..self.backends.len())
            .filter(|&i| self.states[i] != BackendState::Disabled)
            .map(|i| {
                *self.probe_due[i].get_or_insert_with(|| {
                    if self.backends[i].last_probe_ms.is_none() {
                        now_ms
                    } else {
                        now_ms + checks::jitter_ms(interval, rng)
                    }
                })
            })
            .min()
    }
}

/// The backends one probe round covers and how to probe them.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbePlan {
    pub targets: Vec<ProbeTarget>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProbeTarget {
    pub index: usize,
    pub url: String,
    /// The path discovery settled on earlier, if any.
    pub discovered_path: Option<String>,
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOutcome {
    pub ok: bool,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub discovered_path: Option<String>,
}
