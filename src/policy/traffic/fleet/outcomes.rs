//! What the fleet learns: a reported request outcome or a probe result, fed to the backend's breaker and health.

use super::{Changes, Fleet};
use crate::policy::health::breaker::{Admit, BreakerState, Transition};
use crate::policy::health::prober::Report;
use crate::policy::health::regions::{self, Region, Verdict};
use crate::policy::traffic::decision::Outcome;

/// What a region's report changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionChanges {
    /// Persisted state changed (a region's view of a backend, or the backend's health).
    pub persist: bool,
    /// Backends whose state in the reporting region flipped: (url, up now, the region's last error).
    pub flips: Vec<(String, bool, Option<String>)>,
}

impl Fleet {
    /// Applies one reported outcome from the Worker.
    pub fn report(&mut self, outcome: &Outcome, now_ms: u64) -> Changes {
        let mut changes = Changes::default();
        let Some(i) = self.index_of(&outcome.url) else {
            return changes; // the backend was removed since the decision
        };
        let params = self.breaker_params();
        if outcome.retry {
            self.budget.spend(1, now_ms);
        }
        self.load[i].ewma.observe(outcome.latency_ms as f64, now_ms);
        let b = &mut self.backends[i];
        let latency = outcome.latency_ms as f64;
        b.latency_ms = Some(match b.latency_ms {
            Some(prev) => prev * 0.8 + latency * 0.2,
            None => latency,
        });
        let transition = match &outcome.failure {
            None => {
                b.unproven = false;
                b.breaker
                    .on_successes(outcome.count.max(1), now_ms, &params)
            }
            Some(reason) => {
                b.last_error = Some(reason.clone());
                b.last_failure_ms = now_ms;
                b.suspect = true;
                b.breaker.on_failure(now_ms, &params)
            }
        };
        if let Some(t) = transition {
            changes.persist = true;
            if t == Transition::Closed {
                b.ramp_start_ms = Some(now_ms);
            }
        }
        if outcome.failure.is_some() {
            // Only this backend is probed early; the others keep their own schedule.
            changes.reprobe_soon = self.probe_sooner(i, now_ms);
        }
        changes
    }

    /// Applies one active probe result; returns true when health or breaker state flipped.
    pub fn apply_probe(
        &mut self,
        i: usize,
        ok: bool,
        latency_ms: u64,
        error: Option<String>,
        now_ms: u64,
    ) -> bool {
        let params = self.breaker_params();
        let (up, down) = (
            self.cfg.health.consecutive_up,
            self.cfg.health.consecutive_down,
        );
        let Some(b) = self.backends.get_mut(i) else {
            return false;
        };
        b.last_probe_ms = Some(now_ms);
        self.probes_seen[i].record(ok);
        if ok {
            b.unproven = false;
        }
        if ok {
            b.latency_ms = Some(latency_ms as f64);
        } else {
            b.last_error = error;
            b.last_failure_ms = now_ms;
        }
        let mut flipped = b.health.observe(ok, up, down);
        let mut rejoined = flipped && b.health.healthy;
        // Recovery follows the probes: `consecutive_up` good ones close the breaker too.
        if ok && b.health.healthy && b.health.consecutive_ok >= up.max(1) {
            let closed = b.breaker.close_on_probes().is_some();
            flipped |= closed;
            rejoined |= closed;
        }
        // A probe may serve as the half-open breaker's single trial.
        if matches!(
            b.breaker.state,
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. }
        ) && matches!(b.breaker.admit(now_ms, &params), Admit::Trial)
        {
            let t = if ok {
                b.breaker.on_success(now_ms, &params)
            } else {
                b.breaker.on_failure(now_ms, &params)
            };
            flipped |= t.is_some();
            rejoined |= t == Some(Transition::Closed);
        }
        if rejoined {
            b.ramp_start_ms = Some(now_ms);
        }
        if ok && b.health.consecutive_ok >= up.max(1) && b.breaker.state == BreakerState::Closed {
            b.suspect = false;
        }
        flipped
    }

    /// Applies a region prober's report (`activeHealthChecks.regions`): each backend's state in
    /// that region, its latency from there, and the quorum's verdict over every region. A report
    /// from a region the config does not probe from, or for a backend it no longer has, changes nothing.
    pub fn apply_region_report(&mut self, report: &Report, now_ms: u64) -> RegionChanges {
        let mut changes = RegionChanges::default();
        let region = report.region;
        if !self.cfg.health.probe_regions().contains(&region) {
            return changes;
        }
        let quorum = self.cfg.health.quorum_in_effect();
        for seen in &report.backends {
            let Some(i) = self.index_of(&seen.url) else {
                continue;
            };
            let b = &mut self.backends[i];
            b.last_probe_ms = Some(now_ms);
            let was = b.regions.insert(region, seen.up);
            // A region's first word counts as a flip only when it is "down" (backends start up).
            if was.unwrap_or(true) != seen.up {
                changes
                    .flips
                    .push((seen.url.clone(), seen.up, seen.error.clone()));
            }
            changes.persist |= was != Some(seen.up);
            let latency = &mut self.region_latency[i];
            if seen.up {
                b.unproven = false;
                latency.insert(region, seen.latency_ms as f64);
            } else {
                b.last_error = seen.error.clone();
                b.last_failure_ms = now_ms;
                latency.remove(&region);
            }
            // The probe latency that stands in for request samples: the regions' mean.
            if !latency.is_empty() {
                b.latency_ms = Some(latency.values().sum::<f64>() / latency.len() as f64);
            }
            let verdict = regions::verdict(&self.backends[i].regions, quorum);
            changes.persist |= self.apply_verdict(i, verdict != Verdict::Down, now_ms);
        }
        changes
    }

    /// Applies a health verdict reached elsewhere (the regions' quorum) to backend `i`, as its
    /// own probes' hysteresis would: down takes it out of traffic; up brings it back, closes an
    /// open breaker (recovery follows the probes) and starts its slow-start ramp. True when
    /// health or breaker state flipped.
    pub fn apply_verdict(&mut self, i: usize, healthy: bool, now_ms: u64) -> bool {
        let Some(b) = self.backends.get_mut(i) else {
            return false;
        };
        let flipped = b.health.healthy != healthy;
        b.health.healthy = healthy;
        if !healthy {
            return flipped;
        }
        let closed = b.breaker.close_on_probes().is_some();
        if flipped || closed {
            b.ramp_start_ms = Some(now_ms);
        }
        b.suspect = false;
        flipped || closed
    }

    /// Backend `i`'s probe latency (ms) from each region that sees it up, for dynamic steering.
    pub fn region_latency(&self, i: usize) -> Vec<(Region, f64)> {
        self.region_latency
            .get(i)
            .map(|m| m.iter().map(|(r, l)| (*r, *l)).collect())
            .unwrap_or_default()
    }
}
