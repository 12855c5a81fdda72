//! The live view of one hostname's backends (health, breakers, counters) and the routing decision made from it.
//!
//! This file holds the fleet's state and how a config builds it; the submodules add its
//! decisions (`decide`), requests in flight (`load`), reported outcomes and probe results
//! (`outcomes`), probe scheduling (`probes`), the status view (`status`), and its side of a
//! lease (`leased`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::policy::access::lists::AccessPolicy;
use crate::policy::access::ratelimit::RateLimiter;
use crate::policy::control::config::{BackendState, BreakerConfig, ServiceConfig};
use crate::policy::health::breaker::{Breaker, BreakerState};
use crate::policy::health::checks::{Health, RecentProbes};
use crate::policy::health::regions::{Region, RegionStates};
use crate::policy::health::score;
use crate::policy::rng::SplitMix64;
use crate::policy::traffic::affinity;
use crate::policy::traffic::facts::Needs;
use crate::policy::traffic::retry::RetryBudget;
use crate::policy::traffic::rules::RuleSet;
use crate::policy::traffic::select::Selector;
use crate::policy::traffic::steering::Ewma;

mod decide;
mod leased;
mod load;
mod outcomes;
mod probes;
mod status;

pub use leased::LeasedBackend;
pub use outcomes::RegionChanges;
pub use probes::{ProbeOutcome, ProbePlan, ProbeTarget};
pub use status::BackendStatus;

/// Round-robin weights are the configured ones times this, so slow start can ramp in small steps.
const WEIGHT_SCALE: u32 = 100;

/// One counted request: the backend it was decided for and when it stops counting.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ticket {
    backend: usize,
    expires_ms: u64,
}

/// Live, unpersisted load of one backend: requests in flight and recent response time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct LiveLoad {
    outstanding: u32,
    ewma: Ewma,
}

/// What the Durable Object keeps of each backend across restarts (written on transitions only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendRecord {
    pub url: String,
    pub health: Health,
    pub breaker: Breaker,
    pub health_path: Option<String>,
    pub last_probe_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_failure_ms: u64,
    pub latency_ms: Option<f64>,
    pub suspect: bool,
    /// When the backend (re)joined traffic; it ramps up over `slow_start` from here.
    #[serde(default)]
    pub ramp_start_ms: Option<u64>,
    /// Added to a running service and not yet seen answering (a good probe or a success): it
    /// takes traffic, but not the first attempt of a request whose body cannot be replayed
    /// while a proven backend can take it, so a backend added dead costs no such request its
    /// only attempt. A service's first config starts proven.
    #[serde(default)]
    pub unproven: bool,
    /// With `activeHealthChecks.regions`: what each region's prober last said (true: up).
    /// Kept across restarts, so the quorum is never judged on a partial view.
    #[serde(default, skip_serializing_if = "RegionStates::is_empty")]
    pub regions: RegionStates,
}

impl BackendRecord {
    fn new(url: &str, ramp_start_ms: Option<u64>, unproven: bool) -> Self {
        BackendRecord {
            url: url.to_string(),
            health: Health::new(),
            breaker: Breaker::new(),
            health_path: None,
            last_probe_ms: None,
            last_error: None,
            last_failure_ms: 0,
            latency_ms: None,
            suspect: false,
            ramp_start_ms,
            unproven,
            regions: RegionStates::new(),
        }
    }
}

/// What a reported outcome changed, so the platform knows what to persist or schedule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Persisted state changed (a breaker or health transition).
    pub persist: bool,
    /// A backend became suspect and its next probe moved earlier: re-arm the alarm.
    pub reprobe_soon: bool,
}

/// One hostname's service: its config and the live state of every backend.
pub struct Fleet {
    cfg: ServiceConfig,
    version: u64,
    backends: Vec<BackendRecord>,
    weights: Vec<u32>,
    /// A lease's round-robin weights (already scaled, slow start applied by the object): a
    /// Worker deciding under a lease uses these instead of computing them from its own clock.
    leased_weights: Option<Vec<u32>>,
    states: Vec<BackendState>,
    /// Backend indices of the top-level list (index 0) and of each pool (1..).
    groups: Vec<Vec<usize>>,
    selectors: Vec<Selector>,
    budget: RetryBudget,
    limiter: Option<RateLimiter>,
    access: Option<AccessPolicy>,
    affinity_secret: Vec<u8>,
    /// `affinity::backend_id` of each backend, hashed once per config rather than per request.
    pin_ids: Vec<String>,
    load: Vec<LiveLoad>,
    /// Requests in flight by ticket (for steering modes that count them); ids only grow.
    tickets: BTreeMap<u64, Ticket>,
    next_ticket: u64,
    /// Draws for p2c; seeded from the construction time, reseeded by the platform.
    rng: SplitMix64,
    /// When each backend's next probe is due (ms), in memory only; None: not scheduled yet.
    /// Each backend keeps its own cadence, so one failing backend does not hurry the others.
    probe_due: Vec<Option<u64>>,
    /// Each backend's last probe results, for its health score (in memory only).
    probes_seen: Vec<RecentProbes>,
    /// The config's traffic rules, compiled once.
    rules: RuleSet,
    /// What decisions read of a request under this config, computed once.
    needs: Needs,
    /// With `activeHealthChecks.regions`: each backend's last probe latency (ms) from each region
    /// that sees it up, in memory only (every region reports at least once an interval).
    region_latency: Vec<BTreeMap<Region, f64>>,
}

impl Fleet {
    /// Builds the live view for `cfg`, restoring saved per-backend state by URL.
    pub fn new(
        cfg: ServiceConfig,
        version: u64,
        saved: &[BackendRecord],
        secret: &[u8],
        now_ms: u64,
    ) -> Self {
        let all: Vec<(String, u32, BackendState)> = cfg
            .all_backends()
            .iter()
            .map(|b| (b.url.to_string(), b.weight, b.state))
            .collect();
        // A backend the fleet did not have before (not the first config) ramps up gently.
        let ramp_new = !saved.is_empty();
        let probed_from = cfg.health.probe_regions().to_vec();
        let backends = all
            .iter()
            .map(|(url, _, _)| {
                let mut b = saved
                    .iter()
                    .find(|r| &r.url == url)
                    .cloned()
                    .unwrap_or_else(|| {
                        BackendRecord::new(url, ramp_new.then_some(now_ms), ramp_new)
                    });
                // A region no longer probing has no say in the quorum.
                b.regions.retain(|r, _| probed_from.contains(r));
                b
            })
            .collect();
        let index_of = |url: &str| all.iter().position(|(u, _, _)| u == url);
        let mut groups = vec![cfg
            .backends
            .iter()
            .filter_map(|b| index_of(b.url.as_str()))
            .collect::<Vec<_>>()];
        for pool in &cfg.pools {
            groups.push(
                pool.backends
                    .iter()
                    .filter_map(|b| index_of(b.url.as_str()))
                    .collect(),
            );
        }
        if groups[0].is_empty() {
            // Pools only: requests without a geo choice may use every backend.
            groups[0] = (0..all.len()).collect();
        }
        let selectors = groups.iter().map(|g| Selector::new(g.len())).collect();
        let limiter = cfg
            .rate_limit
            .as_ref()
            .map(|r| RateLimiter::new(r.requests, u64::from(r.window_s) * 1000, 100_000));
        let access = cfg
            .access
            .as_ref()
            .map(|a| AccessPolicy::new(&a.allow, &a.deny));
        let rules = RuleSet::new(&cfg);
        let needs = Needs::of(&cfg);
        Fleet {
            pin_ids: all
                .iter()
                .map(|(u, _, _)| affinity::backend_id(u))
                .collect(),
            weights: all.iter().map(|(_, w, _)| *w).collect(),
            leased_weights: None,
            states: all.iter().map(|(_, _, s)| *s).collect(),
            cfg,
            version,
            backends,
            groups,
            selectors,
            budget: RetryBudget::default(),
            limiter,
            access,
            affinity_secret: secret.to_vec(),
            load: vec![LiveLoad::default(); all.len()],
            tickets: BTreeMap::new(),
            // Ids start from the clock so a ticket of an earlier object lifetime is not mistaken
            // for one of this lifetime (at most 4096 decisions per ms on average keep them apart).
            next_ticket: now_ms << 12,
            rng: SplitMix64(now_ms),
            probe_due: vec![None; all.len()],
            probes_seen: vec![RecentProbes::default(); all.len()],
            rules,
            needs,
            region_latency: vec![BTreeMap::new(); all.len()],
        }
    }

    /// Seeds the p2c draws (the platform passes fresh randomness; tests keep the default).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = SplitMix64(seed);
    }

    /// Keeps what the previous config's fleet knew of load (requests in flight, response times),
    /// each backend's recent probe results and when it is due for its next probe, for the
    /// backends both have, so a config change does not forget them.
    pub fn adopt_load(&mut self, old: &Fleet) {
        for (i, b) in self.backends.iter().enumerate() {
            if let Some(j) = old.index_of(&b.url) {
                self.load[i].ewma = old.load[j].ewma;
                self.probe_due[i] = old.probe_due[j];
                self.probes_seen[i] = old.probes_seen[j];
                self.region_latency[i] = old.region_latency[j].clone();
                self.region_latency[i].retain(|r, _| self.backends[i].regions.contains_key(r));
            }
        }
        for (&id, t) in &old.tickets {
            if let Some(i) = self.index_of(&old.backends[t.backend].url) {
                self.tickets.insert(id, Ticket { backend: i, ..*t });
                self.load[i].outstanding = self.load[i].outstanding.saturating_add(1);
            }
        }
        self.next_ticket = self.next_ticket.max(old.next_ticket);
    }

    fn breaker_params(&self) -> BreakerConfig {
        self.cfg.breaker().clone()
    }

    /// May new traffic go to backend `i` now (healthy, enabled, breaker closed or ready for a trial)?
    fn eligible(&self, i: usize, now_ms: u64, params: &BreakerConfig) -> bool {
        self.states[i] == BackendState::Enabled
            && self.backends[i].health.healthy
            && self.backends[i].breaker.available(now_ms, params)
    }

    /// Eligible as a failover target: like `eligible`, but a half-open or open breaker is skipped
    /// so a retry never becomes an unplanned second trial.
    fn failover_ok(&self, i: usize) -> bool {
        self.states[i] == BackendState::Enabled
            && self.backends[i].health.healthy
            && self.backends[i].breaker.state == BreakerState::Closed
    }

    /// The configured weight (scaled so a ramp has steps even at weight 1), reduced linearly
    /// while the backend is within its slow-start window.
    fn ramped_weight(&self, i: usize, now_ms: u64) -> u32 {
        let full = self.weights[i] * WEIGHT_SCALE;
        let window = self.cfg.load_balancer.slow_start_ms;
        match self.backends[i].ramp_start_ms {
            Some(start) if window > 0 && now_ms.saturating_sub(start) < window => {
                let elapsed = now_ms.saturating_sub(start);
                // At least 1% of the share, so a ramping backend is still probed by traffic.
                let share = (elapsed * 100 / window).max(1);
                (u64::from(full) * share / 100).max(1) as u32
            }
            _ => full,
        }
    }

    /// Every backend's round-robin weight now: as leased, else the ramped weight, times the
    /// health score with `score_weighting` (0 below the floor). A breaker that is not closed
    /// keeps the ramped weight: the breaker itself holds that backend to its trials.
    fn effective_weights(&self, now_ms: u64) -> Vec<u32> {
        let scores = self
            .cfg
            .load_balancer
            .score_weighting
            .then(|| self.health_scores(now_ms));
        (0..self.backends.len())
            .map(|i| {
                if let Some(w) = self.leased_weights.as_ref().and_then(|l| l.get(i)) {
                    return *w;
                }
                let ramped = self.ramped_weight(i, now_ms);
                match &scores {
                    Some(s) if self.backends[i].breaker.state == BreakerState::Closed => {
                        score::weighted(ramped, s[i])
                    }
                    _ => ramped,
                }
            })
            .collect()
    }

    /// Every backend's health score now (see `health::score`): its probes, its breaker's
    /// error rate, and its peak-EWMA against the median of its pool's (the top-level list
    /// counts as a pool).
    pub fn health_scores(&self, now_ms: u64) -> Vec<u8> {
        let params = self.breaker_params();
        let latency: Vec<Option<f64>> = self.load.iter().map(|l| l.ewma.recent(now_ms)).collect();
        // A backend's pool: the named pool that lists it, else the top-level list.
        let mut home = vec![0; self.backends.len()];
        for (g, members) in self.groups.iter().enumerate() {
            for &i in members {
                home[i] = g;
            }
        }
        let medians: Vec<Option<f64>> = self
            .groups
            .iter()
            .map(|g| score::median(g.iter().filter_map(|&i| latency[i]).collect()))
            .collect();
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                score::score(&score::Inputs {
                    healthy: b.health.healthy,
                    breaker_closed: b.breaker.state == BreakerState::Closed,
                    probe_pass_rate: self.probes_seen[i].pass_rate(),
                    error_rate: b.breaker.error_rate(now_ms, &params),
                    latency_ms: latency[i],
                    median_ms: medians[home[i]],
                })
            })
            .collect()
    }

    fn index_of(&self, url: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.url == url)
    }

    pub fn cfg(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// What a decision reads of a request under this config (the Worker reads it before asking).
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// State to persist: per-backend records.
    pub fn records(&self) -> &[BackendRecord] {
        &self.backends
    }
}

#[cfg(test)]
mod tests;
