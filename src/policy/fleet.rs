//! The live view of one hostname's backends (health, breakers, counters) and the routing decision made from it.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::policy::access::AccessPolicy;
use crate::policy::affinity;
use crate::policy::breaker::{Admit, Breaker, BreakerState, Transition};
use crate::policy::clients::canonical_ip;
use crate::policy::config::{AffinityKind, BackendState, BreakerConfig, ServiceConfig};
use crate::policy::decision::{Attempt, CookieSpec, Outcome, Reject, Route, Verdict};
use crate::policy::geo;
use crate::policy::health::{self, Health};
use crate::policy::ratelimit::RateLimiter;
use crate::policy::retry::RetryBudget;
use crate::policy::rng::Rng;
use crate::policy::select::{failover_order, Selector};

/// Round-robin weights are the configured ones times this, so slow start can ramp in small steps.
const WEIGHT_SCALE: u32 = 100;

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
}

impl BackendRecord {
    fn new(url: &str, ramp_start_ms: Option<u64>) -> Self {
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
        }
    }
}

/// Facts about one client request that the decision may use.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts {
    pub client_ip: Option<String>,
    pub country: Option<String>,
    pub continent: Option<String>,
    /// The client's whole Cookie header; the service's affinity cookie is picked out by name.
    pub cookies: Option<String>,
    /// The value of the affinity header (for `type: header`).
    pub affinity_header: Option<String>,
}

/// What a reported outcome changed, so the platform knows what to persist or schedule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Persisted state changed (a breaker or health transition).
    pub persist: bool,
    /// A backend became suspect: probe it soon instead of at the next full interval.
    pub reprobe_soon: bool,
}

/// One hostname's service: its config and the live state of every backend.
pub struct Fleet {
    cfg: ServiceConfig,
    version: u64,
    backends: Vec<BackendRecord>,
    weights: Vec<u32>,
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
        let backends = all
            .iter()
            .map(|(url, _, _)| {
                saved
                    .iter()
                    .find(|r| &r.url == url)
                    .cloned()
                    .unwrap_or_else(|| BackendRecord::new(url, ramp_new.then_some(now_ms)))
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
        Fleet {
            pin_ids: all
                .iter()
                .map(|(u, _, _)| affinity::backend_id(u))
                .collect(),
            weights: all.iter().map(|(_, w, _)| *w).collect(),
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
        }
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

    /// Decides where one request goes. Reads only memory; the caller persists nothing.
    pub fn decide(&mut self, facts: &RequestFacts, now_ms: u64) -> Verdict {
        // One spelling per client (IPv4-mapped IPv6, zero-compressed IPv6), so lists and limits
        // cannot be sidestepped by writing the same address another way.
        let client = facts.client_ip.as_deref().map(canonical_ip);
        let ip: Option<IpAddr> = client.as_deref().and_then(|s| s.parse().ok());
        if let Some(access) = &self.access {
            if !access.permits(ip) {
                return Verdict::Reject(Reject {
                    status: 403,
                    message: format!(
                        "client {} is not allowed to reach {}",
                        facts.client_ip.as_deref().unwrap_or("(unknown)"),
                        self.cfg.hostname
                    ),
                    retry_after_s: None,
                });
            }
        }
        if let Some(limiter) = &mut self.limiter {
            let key = client.as_deref().unwrap_or("unknown");
            if let Err(wait_ms) = limiter.check(key, now_ms) {
                return Verdict::Reject(Reject {
                    status: 429,
                    message: format!("rate limit for {} exceeded", self.cfg.hostname),
                    retry_after_s: Some(wait_ms.div_ceil(1000).max(1)),
                });
            }
        }
        self.budget.record_request(now_ms);
        let params = self.breaker_params();
        let group = self.choose_group(facts, now_ms, &params);
        let members = self.groups[group].clone();

        let pinned = self.pinned_backend(facts, &members, now_ms);
        let primary = match pinned {
            Some(i) => Some(i),
            None => self.pick_in_group(group, &members, facts, now_ms, &params),
        };

        let max_extra = self
            .cfg
            .retries
            .max(self.cfg.connection.max_connection_retries) as usize;
        let mut attempts = Vec::new();
        match primary {
            Some(first) => {
                let trial = matches!(
                    self.backends[first].breaker.admit(now_ms, &params),
                    Admit::Trial
                );
                attempts.push(first);
                let mut trials = vec![trial];
                let pos = members.iter().position(|&m| m == first).unwrap_or(0);
                let order = failover_order(members.len(), pos, |k| self.failover_ok(members[k]));
                let budget = self.budget.available(now_ms) as usize;
                for k in order.into_iter().take(max_extra.min(budget)) {
                    attempts.push(members[k]);
                    trials.push(false);
                }
                return Verdict::Route(self.route(attempts, trials, false, now_ms, pinned));
            }
            None => {
                // Panic mode (as Envoy): nothing looks healthy, so try every enabled backend,
                // least recently failed first, rather than refusing while one might work.
                let mut all: Vec<usize> = (0..self.backends.len())
                    .filter(|&i| self.states[i] != BackendState::Disabled)
                    .collect();
                all.sort_by_key(|&i| self.backends[i].last_failure_ms);
                attempts.extend(all.into_iter().take(max_extra + 1));
            }
        }
        if attempts.is_empty() {
            return Verdict::Reject(Reject {
                status: 503,
                message: format!("no backend of {} is enabled", self.cfg.hostname),
                retry_after_s: Some(5),
            });
        }
        let trials = vec![false; attempts.len()];
        Verdict::Route(self.route(attempts, trials, true, now_ms, None))
    }

    fn route(
        &self,
        attempts: Vec<usize>,
        trials: Vec<bool>,
        panic: bool,
        now_ms: u64,
        pinned: Option<usize>,
    ) -> Route {
        let cookie_affinity = self
            .cfg
            .affinity()
            .filter(|a| matches!(a.kind, AffinityKind::Cookie | AffinityKind::IpCookie));
        let n = attempts.len() as u32;
        let attempts = attempts
            .into_iter()
            .zip(trials)
            .map(|(i, trial)| Attempt {
                url: self.backends[i].url.clone(),
                trial,
                pin: match cookie_affinity {
                    Some(a) if pinned != Some(i) => Some(self.sign_pin(i, a.ttl_s, now_ms)),
                    _ => None,
                },
            })
            .collect();
        Route {
            attempts,
            retries: self.cfg.retries.min(n.saturating_sub(1)),
            conn_retries: self
                .cfg
                .connection
                .max_connection_retries
                .min(n.saturating_sub(1)),
            timeout_ms: self.cfg.connection.connection_timeout_ms,
            immediate_failover: self.cfg.connection.immediate_failover,
            panic,
            cookie: cookie_affinity.map(|a| CookieSpec {
                name: a.cookie_name.to_string(),
                ttl_s: a.ttl_s,
            }),
            affinity_header: self
                .cfg
                .affinity()
                .filter(|a| a.kind == AffinityKind::Header)
                .and_then(|a| a.header_name.as_ref().map(ToString::to_string)),
        }
    }

    /// The pin's expiry is carried inside the signed value, so no server-side session table is needed.
    fn sign_pin(&self, i: usize, ttl_s: u64, now_ms: u64) -> String {
        affinity::sign(
            &self.affinity_secret,
            &self.cfg.hostname,
            &self.pin_ids[i],
            now_ms / 1000 + ttl_s,
        )
    }

    /// Geo steering picks a pool group; without it, the top-level group.
    fn choose_group(&self, facts: &RequestFacts, now_ms: u64, params: &BreakerConfig) -> usize {
        let Some(geo_cfg) = &self.cfg.geo else {
            return 0;
        };
        let pool_has_healthy = |name: &str| {
            self.cfg
                .pools
                .iter()
                .position(|p| p.name.as_str() == name)
                .map(|p| {
                    self.groups[p + 1]
                        .iter()
                        .any(|&i| self.eligible(i, now_ms, params))
                })
                .unwrap_or(false)
        };
        let name = geo::choose_pool(
            &geo_cfg.regions,
            &geo_cfg.fallback_pool,
            facts.country.as_deref(),
            facts.continent.as_deref(),
            pool_has_healthy,
        );
        self.cfg
            .pools
            .iter()
            .position(|p| p.name.as_str() == name)
            .map(|p| p + 1)
            .unwrap_or(0)
    }

    /// The backend a valid affinity cookie pins the client to, if it may still serve (enabled or draining, healthy).
    fn pinned_backend(
        &self,
        facts: &RequestFacts,
        members: &[usize],
        now_ms: u64,
    ) -> Option<usize> {
        let a = self.cfg.affinity()?;
        if !matches!(a.kind, AffinityKind::Cookie | AffinityKind::IpCookie) {
            return None;
        }
        let value = affinity::cookie_value(facts.cookies.as_deref()?, &a.cookie_name)?;
        let affinity::Pin::Valid { backend_id, .. } = affinity::verify(
            &self.affinity_secret,
            &self.cfg.hostname,
            value,
            now_ms / 1000,
        ) else {
            return None;
        };
        // A closed breaker is always available, so no breaker check beyond `Closed` is needed.
        members.iter().copied().find(|&i| {
            self.pin_ids[i] == backend_id
                && self.states[i] != BackendState::Disabled
                && self.backends[i].health.healthy
                && self.backends[i].breaker.state == BreakerState::Closed
        })
    }

    /// Picks in `group` (whose backend indices are `members`) by hash affinity or weighted round robin.
    fn pick_in_group(
        &mut self,
        group: usize,
        members: &[usize],
        facts: &RequestFacts,
        now_ms: u64,
        params: &BreakerConfig,
    ) -> Option<usize> {
        let eligible: Vec<bool> = members
            .iter()
            .map(|&i| self.eligible(i, now_ms, params))
            .collect();
        let key = self.cfg.affinity().and_then(|a| match a.kind {
            AffinityKind::Header => facts.affinity_header.clone(),
            AffinityKind::IpCookie => facts.client_ip.clone(),
            AffinityKind::Cookie => None,
        });
        if let Some(key) = key {
            // Hash affinity: the same key lands on the same healthy backend, and only keys
            // on a lost backend move.
            let live: Vec<usize> = (0..members.len()).filter(|&k| eligible[k]).collect();
            let urls: Vec<&str> = live
                .iter()
                .map(|&k| self.backends[members[k]].url.as_str())
                .collect();
            return affinity::rendezvous(&key, &urls).map(|j| members[live[j]]);
        }
        let weights: Vec<u32> = members
            .iter()
            .map(|&i| self.effective_weight(i, now_ms))
            .collect();
        self.selectors[group]
            .pick(&weights, |k| eligible[k])
            .map(|k| members[k])
    }

    /// The weight round robin uses now: the configured weight (scaled so a ramp has steps even
    /// at weight 1), reduced linearly while the backend is within its slow-start window.
    fn effective_weight(&self, i: usize, now_ms: u64) -> u32 {
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

    fn index_of(&self, url: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.url == url)
    }

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
        let b = &mut self.backends[i];
        let latency = outcome.latency_ms as f64;
        b.latency_ms = Some(match b.latency_ms {
            Some(prev) => prev * 0.8 + latency * 0.2,
            None => latency,
        });
        let transition = match &outcome.failure {
            None => b
                .breaker
                .on_successes(outcome.count.max(1), now_ms, &params),
            Some(reason) => {
                b.last_error = Some(reason.clone());
                b.last_failure_ms = now_ms;
                if !b.suspect {
                    b.suspect = true;
                    changes.reprobe_soon = true;
                }
                b.breaker.on_failure(now_ms, &params)
            }
        };
        if let Some(t) = transition {
            changes.persist = true;
            if t == Transition::Closed {
                b.ramp_start_ms = Some(now_ms);
            }
            if matches!(t, Transition::Opened { .. }) {
                changes.reprobe_soon = true;
            }
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

    pub fn cfg(&self) -> &ServiceConfig {
        &self.cfg
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// What the next probe round covers: every backend not disabled, with the path to probe.
    pub fn probe_plan(&self) -> ProbePlan {
        let h = &self.cfg.health;
        ProbePlan {
            targets: (0..self.backends.len())
                .filter(|&i| self.states[i] != BackendState::Disabled)
                .map(|i| ProbeTarget {
                    index: i,
                    url: self.backends[i].url.clone(),
                    discovered_path: self.backends[i].health_path.clone(),
                })
                .collect(),
            path: h.path.as_ref().map(ToString::to_string),
            timeout_ms: h.timeout_ms,
        }
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
        self.apply_probe(target.index, r.ok, r.latency_ms, r.error.clone(), now_ms) || path_changed
    }

    /// Delay until the next probe round, or None when active checks are off. Suspect or down
    /// backends are re-probed within seconds rather than at the next full interval.
    pub fn next_probe_delay_ms(&self, rng: &mut impl Rng) -> Option<u64> {
        let h = &self.cfg.health;
        if !h.enabled {
            return None;
        }
        let delay = health::jitter_ms(h.interval_ms, rng);
        let suspect = self.backends.iter().any(|b| b.suspect || !b.health.healthy);
        Some(if suspect {
            delay.min(health::suspect_reprobe_ms(h.interval_ms))
        } else {
            delay
        })
    }

    /// How soon a backend a real request just failed on is probed, or None without active checks.
    pub fn reprobe_delay_ms(&self) -> Option<u64> {
        let h = &self.cfg.health;
        h.enabled.then(|| health::suspect_reprobe_ms(h.interval_ms))
    }

    /// Backends taking new traffic now (enabled, healthy, breaker closed), and how many there are.
    pub fn summary(&self) -> (usize, usize) {
        let up = (0..self.backends.len())
            .filter(|&i| self.failover_ok(i))
            .count();
        (up, self.backends.len())
    }

    /// Per-backend facts for the status view (the platform shapes them into JSON).
    pub fn backend_status(&self, now_ms: u64) -> Vec<BackendStatus<'_>> {
        let params = self.breaker_params();
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStatus {
                record: b,
                weight: self.weights[i],
                effective_weight: f64::from(self.effective_weight(i, now_ms))
                    / f64::from(WEIGHT_SCALE),
                state: self.states[i],
                error_rate: b.breaker.error_rate(now_ms, &params),
            })
            .collect()
    }

    /// State to persist: per-backend records.
    pub fn records(&self) -> &[BackendRecord] {
        &self.backends
    }
}

/// The backends one probe round covers and how to probe them.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbePlan {
    pub targets: Vec<ProbeTarget>,
    /// The configured health path; None means discovery.
    pub path: Option<String>,
    pub timeout_ms: u64,
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

/// One backend as the status view shows it.
pub struct BackendStatus<'a> {
    pub record: &'a BackendRecord,
    pub weight: u32,
    /// The weight in use now (lower while slow start ramps the backend up).
    pub effective_weight: f64,
    pub state: BackendState,
    pub error_rate: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::{parse_service, Deployment};
    use serde_json::json;

    fn fleet(extra: serde_json::Value) -> Fleet {
        let mut v = json!({
            "hostname": "svc.test",
            "backends": ["http://a", "http://b", "http://c"],
            "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 3, "recovery_timeout_ms": 1000}},
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Fleet::new(
            parse_service(&v, "", &Deployment::default()).unwrap(),
            1,
            &[],
            b"secret",
            0,
        )
    }

    fn route(f: &mut Fleet, now: u64) -> Route {
        match f.decide(&RequestFacts::default(), now) {
            Verdict::Route(r) => r,
            Verdict::Reject(r) => panic!("rejected: {r:?}"),
        }
    }

    fn first(f: &mut Fleet, now: u64) -> String {
        route(f, now).attempts[0].url.clone()
    }

    fn fail(f: &mut Fleet, url: &str, now: u64) -> Changes {
        f.report(
            &Outcome {
                url: url.into(),
                failure: Some("connect".into()),
                latency_ms: 1,
                trial: false,
                retry: false,
                count: 1,
                status: None,
                retry_reason: None,
            },
            now,
        )
    }

    #[test]
    fn equal_weights_rotate_in_order_with_failover_candidates() {
        let mut f = fleet(json!({}));
        let picks: Vec<String> = (0..6).map(|i| first(&mut f, i)).collect();
        assert_eq!(
            picks,
            ["http://a", "http://b", "http://c", "http://a", "http://b", "http://c"]
        );
        let r = route(&mut f, 10);
        // Default: 1 retry, 2 connection retries: the primary plus the two others, in rotation.
        let urls: Vec<&str> = r.attempts.iter().map(|a| a.url.as_str()).collect();
        assert_eq!(urls, ["http://a", "http://b", "http://c"]);
        assert_eq!((r.retries, r.conn_retries, r.panic), (1, 2, false));
    }

    #[test]
    fn weights_interleave_smoothly() {
        let mut f = fleet(json!({"backends": [{"url": "http://a", "weight": 3}, "http://b"]}));
        let picks: Vec<String> = (0..8).map(|i| first(&mut f, i)).collect();
        assert_eq!(picks.iter().filter(|u| *u == "http://a").count(), 6);
        assert_ne!(
            picks[..3],
            ["http://a", "http://a", "http://a"],
            "3:1 must not burst: {picks:?}"
        );
    }

    #[test]
    fn breaker_opens_after_threshold_then_admits_one_trial() {
        let mut f = fleet(json!({}));
        assert!(!fail(&mut f, "http://b", 0).persist);
        fail(&mut f, "http://b", 1);
        assert!(
            fail(&mut f, "http://b", 2).persist,
            "third failure opens the breaker"
        );
        for t in 3..30 {
            let r = route(&mut f, t);
            assert!(
                r.attempts.iter().all(|a| a.url != "http://b"),
                "open breaker got traffic"
            );
        }
        // After the recovery time exactly one request is the trial.
        let trials: Vec<Route> = (0..6).map(|i| route(&mut f, 2000 + i)).collect();
        let to_b: Vec<&Attempt> = trials
            .iter()
            .flat_map(|r| &r.attempts)
            .filter(|a| a.url == "http://b")
            .collect();
        assert_eq!(to_b.len(), 1, "{trials:?}");
        assert!(to_b[0].trial);
        let ok = Outcome {
            url: "http://b".into(),
            failure: None,
            latency_ms: 3,
            trial: true,
            retry: false,
            count: 1,
            status: None,
            retry_reason: None,
        };
        assert!(
            f.report(&ok, 2100).persist,
            "trial success closes the breaker"
        );
        let picks: Vec<String> = (0..3).map(|i| first(&mut f, 2200 + i)).collect();
        assert!(picks.contains(&"http://b".to_string()));
    }

    #[test]
    fn successes_reset_consecutive_failures() {
        let mut f = fleet(json!({}));
        fail(&mut f, "http://a", 0);
        fail(&mut f, "http://a", 1);
        let ok = Outcome {
            url: "http://a".into(),
            failure: None,
            latency_ms: 3,
            trial: false,
            retry: false,
            count: 5,
            status: None,
            retry_reason: None,
        };
        f.report(&ok, 2);
        assert!(!fail(&mut f, "http://a", 3).persist);
        assert_eq!(f.backends[0].breaker.state, BreakerState::Closed);
    }

    #[test]
    fn probes_mark_down_after_threshold_and_all_down_is_panic_mode() {
        let mut f =
            fleet(json!({"activeHealthChecks": {"consecutive_down": 2, "consecutive_up": 3}}));
        assert!(!f.apply_probe(0, false, 1, Some("refused".into()), 10));
        assert!(f.apply_probe(0, false, 1, Some("refused".into()), 20));
        for t in 0..6 {
            assert_ne!(first(&mut f, 100 + t), "http://a");
        }
        f.apply_probe(1, false, 1, None, 30);
        f.apply_probe(1, false, 1, None, 40);
        f.apply_probe(2, false, 1, None, 5);
        f.apply_probe(2, false, 1, None, 6);
        let r = route(&mut f, 200);
        assert!(r.panic);
        let urls: Vec<&str> = r.attempts.iter().map(|a| a.url.as_str()).collect();
        // Least recently failed first.
        assert_eq!(urls, ["http://c", "http://a", "http://b"]);
        // Coming back needs consecutive_up good probes.
        f.apply_probe(0, true, 1, None, 300);
        f.apply_probe(0, true, 1, None, 301);
        assert!(route(&mut f, 302).panic);
        assert!(f.apply_probe(0, true, 1, None, 303));
        let r = route(&mut f, 304);
        assert!(!r.panic);
        assert_eq!(r.attempts[0].url, "http://a");
    }

    #[test]
    fn disabled_backends_get_nothing_and_draining_no_new_clients() {
        let mut f = fleet(
            json!({"backends": ["http://a", {"url": "http://b", "state": "disabled"}, {"url": "http://c", "state": "draining"}]}),
        );
        for t in 0..5 {
            let r = route(&mut f, t);
            assert!(r.attempts.iter().all(|a| a.url == "http://a"), "{r:?}");
        }
    }

    #[test]
    fn access_lists_and_rate_limits_reject_before_routing() {
        let mut f = fleet(
            json!({"access_control": {"deny": ["10.0.0.0/8"]}, "rate_limit": {"requests": 2, "window": 60}}),
        );
        let denied = RequestFacts {
            client_ip: Some("10.1.2.3".into()),
            ..Default::default()
        };
        assert!(matches!(
            f.decide(&denied, 0),
            Verdict::Reject(Reject { status: 403, .. })
        ));
        let ok = RequestFacts {
            client_ip: Some("192.0.2.1".into()),
            ..Default::default()
        };
        assert!(matches!(f.decide(&ok, 0), Verdict::Route(_)));
        assert!(matches!(f.decide(&ok, 1), Verdict::Route(_)));
        match f.decide(&ok, 2) {
            Verdict::Reject(r) => {
                assert_eq!(r.status, 429);
                assert!(r.retry_after_s.unwrap() >= 1);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn saved_state_is_restored_by_url() {
        let mut f = fleet(json!({}));
        for t in 0..3 {
            fail(&mut f, "http://c", t);
        }
        let saved = f.records().to_vec();
        let cfg = parse_service(
            &json!({"hostname": "svc.test", "backends": ["http://c", "http://d"]}),
            "",
            &Deployment::default(),
        )
        .unwrap();
        let g = Fleet::new(cfg, 2, &saved, b"secret", 0);
        assert!(matches!(
            g.backends[0].breaker.state,
            BreakerState::Open { .. }
        ));
        assert_eq!(g.backends[1].breaker.state, BreakerState::Closed);
    }

    #[test]
    fn cookie_affinity_pins_and_repins() {
        let mut f = fleet(json!({"load_balancer": {"session_affinity": {"type": "cookie"}}}));
        let r = route(&mut f, 1000);
        let pin = r.attempts[0].pin.clone().expect("a new client gets a pin");
        assert_eq!(
            r.cookie.as_ref().map(|c| c.name.as_str()),
            Some("lb_session")
        );
        let facts = RequestFacts {
            cookies: Some(format!("x=1; lb_session={pin}")),
            ..Default::default()
        };
        for t in 0..5 {
            let Verdict::Route(r) = f.decide(&facts, 2000 + t) else {
                panic!()
            };
            assert_eq!(r.attempts[0].url, "http://a");
            assert!(
                r.attempts[0].pin.is_none(),
                "a pinned client is not re-pinned"
            );
        }
        for t in 0..3 {
            fail(&mut f, "http://a", 3000 + t);
        }
        let Verdict::Route(r) = f.decide(&facts, 3100) else {
            panic!()
        };
        assert_ne!(r.attempts[0].url, "http://a");
        assert!(r.attempts[0].pin.is_some(), "moved clients get a new pin");
    }

    #[test]
    fn good_probes_bring_a_backend_back_before_the_breaker_timeout() {
        // interval 5 s, consecutive_up 2, recovery 60 s: back after two good probes, not 60 s.
        let mut f = fleet(json!({
            "activeHealthChecks": {"interval": 5, "consecutive_up": 2, "consecutive_down": 2},
            "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 3, "recovery_timeout_ms": 60000}},
        }));
        for t in 0..3 {
            fail(&mut f, "http://b", t);
        }
        f.apply_probe(1, false, 1, None, 5_000);
        f.apply_probe(1, false, 1, None, 10_000);
        assert!(!f.backends[1].health.healthy);
        f.apply_probe(1, true, 1, None, 15_000);
        assert!(
            !(0..6).any(|i| first(&mut f, 15_001 + i) == "http://b"),
            "one good probe is not enough"
        );
        assert!(
            f.apply_probe(1, true, 1, None, 20_000),
            "second good probe flips health and breaker"
        );
        assert_eq!(f.backends[1].breaker.state, BreakerState::Closed);
        let picks: Vec<String> = (0..6).map(|i| first(&mut f, 20_001 + i)).collect();
        assert!(picks.iter().any(|u| u == "http://b"), "{picks:?}");
    }

    #[test]
    fn without_active_checks_the_breaker_still_protects() {
        let mut f = fleet(json!({"activeHealthChecks": {"enabled": false}}));
        for t in 0..3 {
            fail(&mut f, "http://a", t);
        }
        assert!((0..30).all(|i| first(&mut f, 10 + i) != "http://a"));
        assert_eq!(
            f.next_probe_delay_ms(&mut crate::policy::rng::SplitMix64(1)),
            None
        );
    }

    #[test]
    fn slow_start_ramps_a_recovered_backend_up_over_its_window() {
        let mut f = fleet(json!({
            "activeHealthChecks": {"consecutive_up": 1, "consecutive_down": 1},
            "load_balancer": {"slow_start": 10},
        }));
        f.apply_probe(0, false, 1, None, 0);
        f.apply_probe(0, true, 1, None, 1_000);
        let share =
            |f: &mut Fleet, at: u64| (0..300).filter(|i| first(f, at + i) == "http://a").count();
        let early = share(&mut f, 1_100);
        let mid = share(&mut f, 6_000);
        let late = share(&mut f, 12_000);
        assert!(early < 15, "1% into the ramp: {early}/300");
        assert!((30..80).contains(&mid), "half way: {mid}/300");
        assert!(
            (95..105).contains(&late),
            "full share after the window: {late}/300"
        );
    }

    #[test]
    fn slow_start_keeps_weights_and_pins() {
        let mut f = fleet(json!({
            "backends": [{"url": "http://a", "weight": 3}, "http://b"],
            "load_balancer": {"slow_start": 10, "session_affinity": {"type": "cookie"}},
        }));
        let r = route(&mut f, 1000);
        let pin = r.attempts[0].pin.clone().expect("pinned");
        let pinned_to = r.attempts[0].url.clone();
        // Re-adding the fleet with saved state: b is new and ramps, a keeps its 3:1 share.
        let saved = f.records().to_vec();
        let cfg = parse_service(
            &json!({"hostname": "svc.test", "backends": [{"url": "http://a", "weight": 3}, "http://b", "http://c"],
                    "load_balancer": {"slow_start": 10, "session_affinity": {"type": "cookie"}}}),
            "",
            &Deployment::default(),
        )
        .unwrap();
        let mut g = Fleet::new(cfg, 2, &saved, b"secret", 2000);
        let picks: Vec<String> = (0..100).map(|i| first(&mut g, 2001 + i)).collect();
        assert!(
            picks.iter().filter(|u| *u == "http://c").count() <= 2,
            "new backend starts small"
        );
        let late: Vec<String> = (0..500).map(|i| first(&mut g, 20_000 + i)).collect();
        let a = late.iter().filter(|u| *u == "http://a").count();
        assert!((280..320).contains(&a), "3:1:1 after the ramp: {a}/500");
        let facts = RequestFacts {
            cookies: Some(format!("lb_session={pin}")),
            ..Default::default()
        };
        let Verdict::Route(r) = g.decide(&facts, 2002) else {
            panic!()
        };
        assert_eq!(
            r.attempts[0].url, pinned_to,
            "a pin is honoured while others ramp"
        );
    }

    #[test]
    fn client_addresses_are_canonical_for_lists_and_limits() {
        let mut f = fleet(
            json!({"access_control": {"deny": ["10.0.0.0/8"]}, "rate_limit": {"requests": 2, "window": 60}}),
        );
        let facts = |ip: &str| RequestFacts {
            client_ip: Some(ip.into()),
            ..Default::default()
        };
        assert!(matches!(
            f.decide(&facts("::ffff:10.1.2.3"), 0),
            Verdict::Reject(Reject { status: 403, .. })
        ));
        assert!(matches!(
            f.decide(&facts("2001:DB8:0:0::1"), 1),
            Verdict::Route(_)
        ));
        assert!(matches!(
            f.decide(&facts("2001:db8::1"), 2),
            Verdict::Route(_)
        ));
        assert!(
            matches!(
                f.decide(&facts("2001:0db8::0001"), 3),
                Verdict::Reject(Reject { status: 429, .. })
            ),
            "three spellings of one address share one limit"
        );
    }
}
