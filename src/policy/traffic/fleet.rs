//! The live view of one hostname's backends (health, breakers, counters) and the routing decision made from it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::policy::access::clients::canonical_ip;
use crate::policy::access::lists::AccessPolicy;
use crate::policy::access::ratelimit::RateLimiter;
use crate::policy::control::config::{
    AffinityKind, BackendState, BreakerConfig, EndpointSteering, PoolSteering, ServiceConfig,
};
use crate::policy::health::breaker::{Admit, Breaker, BreakerState, Transition};
use crate::policy::health::checks::{self, BackendHealth, Health, ServiceHealth};
use crate::policy::rng::{Rng, SplitMix64};
use crate::policy::traffic::affinity;
use crate::policy::traffic::decision::{Attempt, CookieSpec, Outcome, Reject, Route, Verdict};
use crate::policy::traffic::geo;
use crate::policy::traffic::lease::LeasedBackend;
use crate::policy::traffic::retry::RetryBudget;
use crate::policy::traffic::select::{failover_order, Selector};
use crate::policy::traffic::steering::{self, Ewma, Load, PoolHealth};

/// Round-robin weights are the configured ones times this, so slow start can ramp in small steps.
const WEIGHT_SCALE: u32 = 100;
/// A request whose completion never comes (its Worker instance was evicted) stops counting as
/// outstanding this long after its timeout budget (attempts × connection timeout) ran out:
/// the grace covers a response body still streaming after its headers.
const TICKET_GRACE_MS: u64 = 10_000;
/// In-flight requests tracked per hostname; beyond this the oldest entry is dropped.
const MAX_TICKETS: usize = 100_000;
/// A probe due this soon is taken with the round being made now: an alarm may fire a little early.
const PROBE_SLACK_MS: u64 = 25;

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
    /// The request's body streams (no length, or too long to buffer): it cannot be replayed
    /// on another backend, so its first attempt avoids unproven backends when it can.
    pub streamed_body: bool,
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
                    .unwrap_or_else(|| {
                        BackendRecord::new(url, ramp_new.then_some(now_ms), ramp_new)
                    })
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
        }
    }

    /// What a lease carries of each backend, in backend order: whether it takes new traffic
    /// (healthy, breaker closed; enabled/draining/disabled travel in the config) and its
    /// round-robin weight now. A backend whose breaker is not closed is never in a lease.
    pub fn lease_backends(&self, now_ms: u64) -> Vec<LeasedBackend> {
        (0..self.backends.len())
            .map(|i| LeasedBackend {
                up: self.backends[i].health.healthy
                    && self.backends[i].breaker.state == BreakerState::Closed,
                weight: self.effective_weight(i, now_ms),
            })
            .collect()
    }

    /// How long until some breaker that is not closed may take its half-open trial (0: now).
    /// Only the object admits trials, so a Worker under a lease asks it from then on.
    pub fn trial_in_ms(&self, now_ms: u64) -> Option<u64> {
        let params = self.breaker_params();
        (0..self.backends.len())
            .filter(|&i| {
                self.states[i] != BackendState::Disabled && self.backends[i].health.healthy
            })
            .filter_map(|i| self.backends[i].breaker.trial_in_ms(now_ms, &params))
            .min()
    }

    /// A Worker's local view under a lease: the config, with each backend up or down as the
    /// object saw it and its weight as leased. Every breaker is closed here: a backend whose
    /// breaker was not closed is down, so this fleet never hands out a trial.
    pub fn from_lease(
        cfg: ServiceConfig,
        version: u64,
        leased: &[LeasedBackend],
        secret: &[u8],
        now_ms: u64,
    ) -> Result<Fleet, String> {
        let mut fleet = Fleet::new(cfg, version, &[], secret, now_ms);
        if leased.len() != fleet.backends.len() {
            return Err(format!(
                "lease lists {} backends, its config {}",
                leased.len(),
                fleet.backends.len()
            ));
        }
        for (b, l) in fleet.backends.iter_mut().zip(leased) {
            b.health.healthy = l.up;
        }
        fleet.leased_weights = Some(leased.iter().map(|l| l.weight).collect());
        Ok(fleet)
    }

    /// The key that signs affinity pins (a lease carries it to the Worker).
    pub fn secret(&self) -> &[u8] {
        &self.affinity_secret
    }

    /// Takes a backend out of this (leased) view: it failed here, so it gets no more of this
    /// Worker's traffic until a lease says otherwise. False when no backend has that URL.
    pub fn eject(&mut self, url: &str) -> bool {
        self.set_up(url, false)
    }

    /// Sets whether a backend of this (leased) view takes new traffic; false when no backend has that URL.
    pub fn set_up(&mut self, url: &str, up: bool) -> bool {
        match self.index_of(url) {
            Some(i) => {
                self.backends[i].health.healthy = up;
                true
            }
            None => false,
        }
    }

    /// Starts each group's round robin `offset` picks in, so Workers that got their leases at
    /// the same moment do not all send their first requests to the same backend.
    pub fn spread(&mut self, offset: u64) {
        for g in 0..self.groups.len() {
            let n = self.groups[g].len() as u64;
            let weights: Vec<u32> = self.groups[g]
                .iter()
                .map(|&i| self.effective_weight(i, 0))
                .collect();
            for _ in 0..offset.checked_rem(n).unwrap_or(0) {
                self.selectors[g].pick(&weights, |_| true);
            }
        }
    }

    /// Keeps the round-robin position of the view this one replaces when both have the same
    /// backends in the same groups, so a refreshed lease continues the rotation.
    pub fn adopt_rotation(&mut self, old: &Fleet) {
        let same = self.groups == old.groups
            && self.backends.len() == old.backends.len()
            && self
                .backends
                .iter()
                .zip(&old.backends)
                .all(|(a, b)| a.url == b.url);
        if same {
            self.selectors = old.selectors.clone();
        }
    }

    /// Seeds the p2c draws (the platform passes fresh randomness; tests keep the default).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = SplitMix64(seed);
    }

    /// Keeps what the previous config's fleet knew of load (requests in flight, response times)
    /// and when each backend is due for its next probe, for the backends both have, so a config
    /// change does not forget them.
    pub fn adopt_load(&mut self, old: &Fleet) {
        for (i, b) in self.backends.iter().enumerate() {
            if let Some(j) = old.index_of(&b.url) {
                self.load[i].ewma = old.load[j].ewma;
                self.probe_due[i] = old.probe_due[j];
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
                let mut route = self.route(attempts, trials, false, now_ms, pinned);
                route.ticket = self.count_in(first, &route, now_ms);
                return Verdict::Route(route);
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
        let first = attempts[0];
        let mut route = self.route(attempts, trials, true, now_ms, None);
        route.ticket = self.count_in(first, &route, now_ms);
        Verdict::Route(route)
    }

    /// Counts a decided request as outstanding at `backend` when the steering mode uses the
    /// count; the ticket comes back with the request's completion (see [`Fleet::complete`]).
    fn count_in(&mut self, backend: usize, route: &Route, now_ms: u64) -> Option<u64> {
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
            ticket: None,
            geo: self.cfg.geo.is_some(),
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

    /// Healthy backends (taking new traffic) in pool `p` and how many it must have.
    fn pool_counts(&self, p: usize, now_ms: u64, params: &BreakerConfig) -> (usize, u32) {
        let healthy = self.groups[p + 1]
            .iter()
            .filter(|&&i| self.eligible(i, now_ms, params))
            .count();
        (healthy, self.cfg.pools[p].minimum_healthy)
    }

    fn pool_index(&self, name: &str) -> Option<usize> {
        self.cfg.pools.iter().position(|p| p.name.as_str() == name)
    }

    /// The pool group for a request: failover order, or geo steering; without either the
    /// top-level group. A pool with fewer healthy backends than its `minimum_healthy` counts
    /// as unhealthy.
    fn choose_group(&self, facts: &RequestFacts, now_ms: u64, params: &BreakerConfig) -> usize {
        let lb = &self.cfg.load_balancer;
        if lb.steering == PoolSteering::Failover && !self.cfg.pools.is_empty() {
            let counts: Vec<(usize, u32)> = (0..self.cfg.pools.len())
                .map(|p| self.pool_counts(p, now_ms, params))
                .collect();
            let fallback = lb
                .fallback_pool
                .as_ref()
                .and_then(|n| self.pool_index(n))
                .unwrap_or(self.cfg.pools.len() - 1);
            return steering::failover_pool(&counts, fallback) + 1;
        }
        let Some(geo_cfg) = &self.cfg.geo else {
            return 0;
        };
        let pool_is_healthy = |name: &str| {
            self.pool_index(name).is_some_and(|p| {
                let (healthy, minimum) = self.pool_counts(p, now_ms, params);
                healthy >= minimum.max(1) as usize
            })
        };
        let name = geo::choose_pool(
            &geo_cfg.regions,
            &geo_cfg.fallback_pool,
            facts.country.as_deref(),
            facts.continent.as_deref(),
            pool_is_healthy,
        );
        self.pool_index(name).map(|p| p + 1).unwrap_or(0)
    }

    /// Each pool's name, health and healthy/total counts, for the status view.
    pub fn pool_status(&self, now_ms: u64) -> Vec<(String, PoolHealth, usize, usize)> {
        let params = self.breaker_params();
        (0..self.cfg.pools.len())
            .map(|p| {
                let (healthy, minimum) = self.pool_counts(p, now_ms, &params);
                let total = self.groups[p + 1].len();
                (
                    self.cfg.pools[p].name.to_string(),
                    steering::pool_health(healthy, total, minimum),
                    healthy,
                    total,
                )
            })
            .collect()
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
        let mut eligible: Vec<bool> = members
            .iter()
            .map(|&i| self.eligible(i, now_ms, params))
            .collect();
        if facts.streamed_body {
            let proven: Vec<bool> = (0..members.len())
                .map(|k| eligible[k] && !self.backends[members[k]].unproven)
                .collect();
            if proven.contains(&true) {
                eligible = proven;
            }
        }
        let client = facts.client_ip.as_deref().map(canonical_ip);
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
        let loads: Vec<Load> = members
            .iter()
            .map(|&i| Load {
                weight: self.effective_weight(i, now_ms),
                outstanding: self.load[i].outstanding,
                latency_ms: self.latency_ms(i, now_ms),
            })
            .collect();
        let ok = |k: usize| eligible[k];
        let pick = match self.cfg.load_balancer.endpoint_steering {
            EndpointSteering::RoundRobin => None,
            EndpointSteering::LeastOutstandingRequests => {
                steering::least_outstanding(&mut self.selectors[group], &loads, ok)
            }
            EndpointSteering::Latency => steering::latency_p2c(&loads, ok, &mut self.rng),
            EndpointSteering::Hash => client.and_then(|ip| {
                let names: Vec<&str> = members
                    .iter()
                    .map(|&i| self.backends[i].url.as_str())
                    .collect();
                steering::client_hash(&ip, &names, &loads, ok)
            }),
        };
        // Round robin, and the fallback of hash steering for a request with no client address.
        pick.or_else(|| {
            let weights: Vec<u32> = loads.iter().map(|l| l.weight).collect();
            self.selectors[group].pick(&weights, ok)
        })
        .map(|k| members[k])
    }

    /// Response time for latency steering: the recent average of real outcomes, else the last
    /// probe's (or older outcomes') latency.
    fn latency_ms(&self, i: usize, now_ms: u64) -> Option<f64> {
        self.load[i]
            .ewma
            .recent(now_ms)
            .or(self.backends[i].latency_ms)
    }

    /// The weight round robin uses now: the configured weight (scaled so a ramp has steps even
    /// at weight 1), reduced linearly while the backend is within its slow-start window.
    fn effective_weight(&self, i: usize, now_ms: u64) -> u32 {
        if let Some(w) = self.leased_weights.as_ref().and_then(|l| l.get(i)) {
            return *w;
        }
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

    pub fn cfg(&self) -> &ServiceConfig {
        &self.cfg
    }

    pub fn version(&self) -> u64 {
        self.version
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
            if !(all || (due && self.cfg.health.enabled)) {
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
    fn probe_sooner(&mut self, i: usize, now_ms: u64) -> bool {
        let h = &self.cfg.health;
        if !h.enabled || self.states[i] == BackendState::Disabled {
            return false;
        }
        let soon = now_ms + checks::suspect_reprobe_ms(h.interval_ms);
        match self.probe_due[i] {
            Some(at) if at <= soon => false,
            _ => {
                self.probe_due[i] = Some(soon);
                true
            }
        }
    }

    /// When the earliest probe is due (ms), or None when active checks are off. A backend not
    /// scheduled yet is due an interval (±10%) from now, or at once when it was never probed
    /// (new, or just added by a config change), so its health is not unknown for long.
    pub fn next_probe_at(&mut self, now_ms: u64, rng: &mut impl Rng) -> Option<u64> {
        let h = &self.cfg.health;
        if !h.enabled {
            return None;
        }
        let interval = h.interval_ms;
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

    /// Backends taking new traffic now (enabled, healthy, breaker closed), and how many there are.
    pub fn summary(&self) -> (usize, usize) {
        let up = (0..self.backends.len())
            .filter(|&i| self.failover_ok(i))
            .count();
        (up, self.backends.len())
    }

    /// Backend `i` as operators see it: down when its probes or breaker keep traffic from it,
    /// unknown until active checks have probed it once, else healthy.
    fn backend_health(&self, i: usize) -> BackendHealth {
        let b = &self.backends[i];
        if !b.health.healthy || b.breaker.state != BreakerState::Closed {
            BackendHealth::Unhealthy
        } else if self.cfg.health.enabled && b.last_probe_ms.is_none() {
            BackendHealth::Unknown
        } else {
            BackendHealth::Healthy
        }
    }

    /// The service's health over the backends that should take new traffic (enabled ones).
    pub fn service_health(&self) -> ServiceHealth {
        let serving: Vec<BackendHealth> = (0..self.backends.len())
            .filter(|&i| self.states[i] == BackendState::Enabled)
            .map(|i| self.backend_health(i))
            .collect();
        ServiceHealth::of(&serving)
    }

    /// Per-backend facts for the status view (the platform shapes them into JSON).
    pub fn backend_status(&self, now_ms: u64) -> Vec<BackendStatus<'_>> {
        let params = self.breaker_params();
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStatus {
                record: b,
                health: self.backend_health(i),
                weight: self.weights[i],
                effective_weight: f64::from(self.effective_weight(i, now_ms))
                    / f64::from(WEIGHT_SCALE),
                state: self.states[i],
                error_rate: b.breaker.error_rate(now_ms, &params),
                outstanding: self.load[i].outstanding,
                ewma_ms: self.load[i].ewma.value(),
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
    pub health: BackendHealth,
    pub weight: u32,
    /// The weight in use now (lower while slow start ramps the backend up).
    pub effective_weight: f64,
    pub state: BackendState,
    pub error_rate: Option<f64>,
    /// Requests counted in flight (steering modes that count them).
    pub outstanding: u32,
    /// Peak-EWMA of real response times (ms), if any sample arrived.
    pub ewma_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::control::config::{parse_service, Deployment};
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
            f.next_probe_at(0, &mut crate::policy::rng::SplitMix64(1)),
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

    fn ok_outcome(url: &str, latency_ms: u64) -> Outcome {
        Outcome {
            url: url.into(),
            failure: None,
            latency_ms,
            trial: false,
            retry: false,
            count: 1,
            status: Some(200),
            retry_reason: None,
        }
    }

    #[test]
    fn least_outstanding_counts_tickets_until_completion_or_expiry() {
        let mut f =
            fleet(json!({"load_balancer": {"endpoint_steering": "least_outstanding_requests"}}));
        let r1 = route(&mut f, 0);
        let r2 = route(&mut f, 1);
        let r3 = route(&mut f, 2);
        let firsts: Vec<&str> = [&r1, &r2, &r3]
            .iter()
            .map(|r| r.attempts[0].url.as_str())
            .collect();
        assert_eq!(
            firsts,
            ["http://a", "http://b", "http://c"],
            "idle: round robin"
        );
        assert_eq!(f.outstanding(), [1, 1, 1]);
        // b finishes: it is the only one with nothing in flight, so it gets the next two... once.
        f.complete(r2.ticket.unwrap());
        f.complete(r2.ticket.unwrap());
        assert_eq!(
            f.outstanding(),
            [1, 0, 1],
            "a repeated completion counts once"
        );
        let r4 = route(&mut f, 3);
        assert_eq!(r4.attempts[0].url, "http://b");
        assert_eq!(f.outstanding(), [1, 1, 1]);
        // A request that never reports back stops counting after its budget and grace.
        let budget = r1.timeout_ms * r1.attempts.len() as u64 + TICKET_GRACE_MS;
        route(&mut f, budget + 10);
        assert_eq!(
            f.outstanding().iter().sum::<u32>(),
            1,
            "expired tickets dropped"
        );
        // Round robin issues no tickets.
        let mut rr = fleet(json!({}));
        assert_eq!(route(&mut rr, 0).ticket, None);
        assert_eq!(rr.outstanding(), [0, 0, 0]);
    }

    #[test]
    fn least_outstanding_respects_drain_breakers_and_weights() {
        let mut f = fleet(json!({
            "backends": [{"url": "http://a", "weight": 2}, "http://b", {"url": "http://c", "state": "draining"}],
            "load_balancer": {"endpoint_steering": "least_outstanding_requests"},
        }));
        // Nothing completes: a (weight 2) takes twice b's share, c (draining) none.
        let picks: Vec<String> = (0..30).map(|i| first(&mut f, i)).collect();
        let on = |u: &str| picks.iter().filter(|p| *p == u).count();
        assert_eq!(
            (on("http://a"), on("http://b"), on("http://c")),
            (20, 10, 0)
        );
        for t in 0..3 {
            fail(&mut f, "http://a", 100 + t);
        }
        assert!(
            (0..5).all(|i| first(&mut f, 200 + i) == "http://b"),
            "open breaker skipped"
        );
    }

    #[test]
    fn latency_steering_avoids_a_slow_backend_once_its_outcomes_arrive() {
        let mut f = fleet(json!({"load_balancer": {"endpoint_steering": "latency"}}));
        f.report(&ok_outcome("http://a", 2000), 0);
        f.report(&ok_outcome("http://b", 3), 0);
        f.report(&ok_outcome("http://c", 4), 0);
        let mut picks = Vec::new();
        for i in 0..200 {
            let r = route(&mut f, 10 + i);
            picks.push(r.attempts[0].url.clone());
            f.complete(r.ticket.expect("latency mode counts requests"));
        }
        assert_eq!(picks.iter().filter(|u| *u == "http://a").count(), 0);
        assert!(picks.iter().filter(|u| *u == "http://b").count() > 50);
        assert!(picks.iter().filter(|u| *u == "http://c").count() > 50);
    }

    #[test]
    fn hash_steering_keeps_a_client_on_its_backend() {
        let mut f = fleet(json!({"load_balancer": {"endpoint_steering": "hash"}}));
        let facts = |ip: &str| RequestFacts {
            client_ip: Some(ip.into()),
            ..Default::default()
        };
        let mut seen = std::collections::HashSet::new();
        for c in 0..30 {
            let ip = format!("198.51.100.{c}");
            let Verdict::Route(r) = f.decide(&facts(&ip), c) else {
                panic!()
            };
            let url = r.attempts[0].url.clone();
            for t in 0..3 {
                // Another spelling of the same address (IPv4-mapped) is the same client.
                let Verdict::Route(again) = f.decide(&facts(&format!("::ffff:{ip}")), 100 + t)
                else {
                    panic!()
                };
                assert_eq!(again.attempts[0].url, url);
            }
            seen.insert(url);
        }
        assert_eq!(seen.len(), 3, "clients spread over every backend");
        assert_eq!(route(&mut f, 1000).ticket, None, "hash counts nothing");
    }

    #[test]
    fn failover_steering_takes_pools_in_order_with_minimum_healthy() {
        let mut f = fleet(json!({
            "backends": [],
            "activeHealthChecks": {"consecutive_down": 1, "consecutive_up": 1},
            "load_balancer": {"steering": "failover"},
            "pools": [
                {"name": "primary", "backends": ["http://a", "http://b"], "minimum_healthy": 2},
                {"name": "secondary", "backends": ["http://c"]},
                {"name": "last", "backends": ["http://d"]},
            ],
        }));
        assert!((0..6).all(|i| ["http://a", "http://b"].contains(&first(&mut f, i).as_str())));
        let health =
            |f: &Fleet| -> Vec<PoolHealth> { f.pool_status(10).iter().map(|p| p.1).collect() };
        assert_eq!(health(&f), [PoolHealth::Healthy; 3]);
        // One of two down: primary is below its minimum, so all traffic moves to secondary.
        f.apply_probe(1, false, 1, None, 10);
        assert_eq!(health(&f)[0], PoolHealth::Critical);
        assert!((0..6).all(|i| first(&mut f, 20 + i) == "http://c"));
        f.apply_probe(2, false, 1, None, 30);
        assert!((0..4).all(|i| first(&mut f, 40 + i) == "http://d"));
        // Primary back: it takes everything again.
        f.apply_probe(1, true, 1, None, 50);
        assert!((0..6).all(|i| first(&mut f, 60 + i) != "http://d"));
    }

    #[test]
    fn failover_falls_back_to_the_named_pool_and_geo_honours_minimum_healthy() {
        let mut f = fleet(json!({
            "backends": [],
            "activeHealthChecks": {"consecutive_down": 1, "consecutive_up": 1},
            "load_balancer": {"steering": "failover", "fallback_pool": "first"},
            "pools": [{"name": "first", "backends": ["http://a"]}, {"name": "second", "backends": ["http://b"]}],
        }));
        f.apply_probe(0, false, 1, None, 1);
        assert_eq!(first(&mut f, 2), "http://b");
        f.apply_probe(1, false, 1, None, 3);
        // Nothing healthy: the fallback pool's route is a panic-mode last try.
        assert!(route(&mut f, 4).panic);
        let mut g = fleet(json!({
            "backends": [],
            "activeHealthChecks": {"consecutive_down": 1, "consecutive_up": 1},
            "pools": [{"name": "eu", "backends": ["http://a", "http://b"], "minimum_healthy": 2}, {"name": "us", "backends": ["http://c"]}],
            "geo_steering": {"regions": {"EU": "eu"}, "fallback_pool": "us"},
        }));
        let eu = RequestFacts {
            continent: Some("EU".into()),
            ..Default::default()
        };
        let Verdict::Route(r) = g.decide(&eu, 0) else {
            panic!()
        };
        assert_ne!(r.attempts[0].url, "http://c");
        g.apply_probe(0, false, 1, None, 1);
        let Verdict::Route(r) = g.decide(&eu, 2) else {
            panic!()
        };
        assert_eq!(
            r.attempts[0].url, "http://c",
            "eu below its minimum: fallback pool"
        );
    }

    #[test]
    fn a_config_change_keeps_requests_in_flight() {
        let mut f =
            fleet(json!({"load_balancer": {"endpoint_steering": "least_outstanding_requests"}}));
        let r = route(&mut f, 0);
        route(&mut f, 1);
        let cfg = parse_service(
            &json!({"hostname": "svc.test", "backends": ["http://b", "http://a"],
                    "load_balancer": {"endpoint_steering": "least_outstanding_requests"}}),
            "",
            &Deployment::default(),
        )
        .unwrap();
        let mut g = Fleet::new(cfg, 2, f.records(), b"secret", 5);
        g.adopt_load(&f);
        assert_eq!(g.outstanding(), [1, 1]);
        g.complete(r.ticket.unwrap());
        assert_eq!(
            g.outstanding(),
            [1, 0],
            "a's ticket followed it to its new index"
        );
    }

    /// The object's alarm loop from `from_ms` to `until_ms`: it wakes at the earliest due probe
    /// and probes only the backends due (`up(url)`: does it answer); `failures` are failed real
    /// requests (time, backend) reported in between. Returns each backend's probe times.
    fn run_probes(
        f: &mut Fleet,
        from_ms: u64,
        until_ms: u64,
        up: impl Fn(&str) -> bool,
        failures: &[(u64, &str)],
    ) -> BTreeMap<String, Vec<u64>> {
        let mut rng = SplitMix64(42);
        let mut probed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut failures = failures.iter().peekable();
        let mut now = from_ms;
        loop {
            let at = f.next_probe_at(now, &mut rng).unwrap().max(now);
            if let Some(&&(t, url)) = failures.peek() {
                if t <= at && t <= until_ms {
                    failures.next();
                    now = t;
                    fail(f, url, t);
                    continue;
                }
            }
            if at > until_ms {
                return probed;
            }
            now = at;
            let plan = f.take_probe_plan(now, false, &mut rng);
            assert!(!plan.targets.is_empty(), "woke at {now} with nothing due");
            for t in &plan.targets {
                probed.entry(t.url.clone()).or_default().push(now);
                let outcome = ProbeOutcome {
                    ok: up(&t.url),
                    latency_ms: 1,
                    error: None,
                    discovered_path: None,
                };
                f.apply_probe_result(t, &outcome, now);
            }
        }
    }

    fn two_backends() -> Fleet {
        fleet(json!({
            "backends": ["http://a", "http://b"],
            "activeHealthChecks": {"interval": 5, "consecutive_up": 2, "consecutive_down": 2},
        }))
    }

    #[test]
    fn a_failing_backend_does_not_hurry_the_probes_of_the_others() {
        let mut f = two_backends();
        // b is dead (its probes fail) and real requests keep failing on it too.
        let failures: Vec<(u64, &str)> = (1..30).map(|s| (s * 1000, "http://b")).collect();
        let probed = run_probes(&mut f, 0, 30_000, |u| u != "http://b", &failures);
        let a = &probed["http://a"];
        assert!(
            (5..=7).contains(&a.len()),
            "healthy a probed {} times: {a:?}",
            a.len()
        );
        for gap in a.windows(2).map(|w| w[1] - w[0]) {
            assert!((4_500..=5_500).contains(&gap), "a's interval ±10%: {a:?}");
        }
        let b = &probed["http://b"];
        assert!(b.len() >= 12, "failing b re-probed within 2 s: {b:?}");
        for gap in b.windows(2).map(|w| w[1] - w[0]) {
            assert!(gap <= 2_000, "b waited {gap} ms: {b:?}");
        }
    }

    #[test]
    fn only_the_backend_a_real_request_failed_on_is_probed_early() {
        let mut f = two_backends();
        // Both answer probes; one real request fails on b at 7.3 s.
        let probed = run_probes(&mut f, 0, 30_000, |_| true, &[(7_300, "http://b")]);
        let b = &probed["http://b"];
        let next = b.iter().find(|&&t| t > 7_300).copied().unwrap();
        assert!(
            next <= 9_300,
            "b re-probed {} ms after the failure: {b:?}",
            next - 7_300
        );
        let a = &probed["http://a"];
        assert!((5..=7).contains(&a.len()), "a kept its interval: {a:?}");
        // Once b's probes clear it (consecutive_up good ones), it is back on its interval.
        let late: Vec<u64> = b.windows(2).map(|w| w[1] - w[0]).skip(4).collect();
        assert!(
            late.iter().all(|&g| g >= 4_500),
            "b back to its interval: {b:?}"
        );
    }

    #[test]
    fn a_backend_a_config_change_adds_is_probed_at_once_and_the_others_keep_their_schedule() {
        let mut f = two_backends();
        let mut rng = SplitMix64(1);
        assert_eq!(
            f.next_probe_at(0, &mut rng),
            Some(0),
            "never probed: at once"
        );
        for t in f.take_probe_plan(0, false, &mut rng).targets {
            f.apply_probe(t.index, true, 1, None, 0);
        }
        let first = f.next_probe_at(0, &mut rng).unwrap();
        assert!(
            (4_500..=5_500).contains(&first),
            "then one interval on: {first}"
        );
        let cfg = parse_service(
            &json!({"hostname": "svc.test", "backends": ["http://a", "http://b", "http://new"],
                    "activeHealthChecks": {"interval": 5}}),
            "",
            &Deployment::default(),
        )
        .unwrap();
        let mut g = Fleet::new(cfg, 2, f.records(), b"secret", 1_000);
        g.adopt_load(&f);
        assert_eq!(g.next_probe_at(1_000, &mut rng), Some(1_000));
        let plan = g.take_probe_plan(1_000, false, &mut rng);
        let urls: Vec<&str> = plan.targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["http://new"]);
        assert_eq!(g.next_probe_at(1_000, &mut rng), Some(first));
        // An operator's probe takes every backend, disabled ones excepted.
        let all = g.take_probe_plan(1_000, true, &mut rng);
        assert_eq!(all.targets.len(), 3);
    }

    #[test]
    fn without_active_checks_nothing_is_scheduled_but_an_operator_may_probe() {
        let mut f = fleet(json!({"activeHealthChecks": {"enabled": false}}));
        let mut rng = SplitMix64(1);
        assert_eq!(f.next_probe_at(0, &mut rng), None);
        assert!(!fail(&mut f, "http://a", 1).reprobe_soon);
        assert!(f.take_probe_plan(10, false, &mut rng).targets.is_empty());
        assert_eq!(f.take_probe_plan(10, true, &mut rng).targets.len(), 3);
    }

    #[test]
    fn draining_a_healthy_backend_leaves_the_service_healthy_and_unprobed_backends_are_unknown() {
        let mut f =
            fleet(json!({"backends": ["http://a", {"url": "http://b", "state": "draining"}]}));
        let health = |f: &Fleet| -> Vec<BackendHealth> {
            f.backend_status(0).iter().map(|s| s.health).collect()
        };
        assert_eq!(health(&f), [BackendHealth::Unknown, BackendHealth::Unknown]);
        assert_eq!(f.service_health(), ServiceHealth::Unknown);
        // Unknown is a view: traffic still goes to a backend never probed.
        assert_eq!(first(&mut f, 1), "http://a");
        f.apply_probe(0, true, 1, None, 10);
        f.apply_probe(1, true, 1, None, 10);
        assert_eq!(health(&f), [BackendHealth::Healthy, BackendHealth::Healthy]);
        assert_eq!(
            f.service_health(),
            ServiceHealth::Healthy,
            "b drains: not one that should take traffic"
        );
        // A draining backend that goes down does not degrade the service either; a serving one does.
        f.apply_probe(1, false, 1, None, 20);
        f.apply_probe(1, false, 1, None, 30);
        assert_eq!(f.service_health(), ServiceHealth::Healthy);
        f.apply_probe(0, false, 1, None, 20);
        f.apply_probe(0, false, 1, None, 30);
        assert_eq!(f.service_health(), ServiceHealth::Critical);
        // Without active checks nothing waits for a probe.
        let g = fleet(json!({"activeHealthChecks": {"enabled": false}}));
        assert_eq!(g.service_health(), ServiceHealth::Healthy);
    }

    #[test]
    fn a_request_that_cannot_be_replayed_avoids_a_backend_nobody_has_seen_answer() {
        let f = fleet(json!({"backends": ["http://a", "http://b"]}));
        assert!(
            f.records().iter().all(|r| !r.unproven),
            "a first config starts proven"
        );
        let cfg = parse_service(
            &json!({"hostname": "svc.test", "backends": ["http://a", "http://b", "http://dead"]}),
            "",
            &Deployment::default(),
        )
        .unwrap();
        let mut g = Fleet::new(cfg.clone(), 2, f.records(), b"secret", 1_000);
        let streamed = RequestFacts {
            streamed_body: true,
            ..Default::default()
        };
        let firsts = |g: &mut Fleet, facts: &RequestFacts, at: u64| -> Vec<String> {
            (0..30)
                .map(|i| match g.decide(facts, at + i) {
                    Verdict::Route(r) => r.attempts[0].url.clone(),
                    v => panic!("{v:?}"),
                })
                .collect()
        };
        // Backends still start eligible: other requests reach it (and fail over if it is dead).
        assert!(firsts(&mut g, &RequestFacts::default(), 1_000).contains(&"http://dead".into()));
        assert!(!firsts(&mut g, &streamed, 1_100).contains(&"http://dead".into()));
        assert_eq!(g.summary(), (3, 3));
        // A failed probe proves nothing; a good one (or a success) does. Kept across restarts.
        g.apply_probe(2, false, 1, Some("connection refused".into()), 1_200);
        assert!(g.records()[2].unproven);
        let saved = g.records().to_vec();
        assert!(Fleet::new(cfg.clone(), 2, &saved, b"s", 0).records()[2].unproven);
        g.apply_probe(2, true, 1, None, 1_300);
        assert!(firsts(&mut g, &streamed, 1_400).contains(&"http://dead".into()));
        let mut h = Fleet::new(cfg, 2, &saved, b"s", 0);
        h.report(&ok_outcome("http://dead", 1), 5);
        assert!(!h.records()[2].unproven);
        // With only unproven backends to pick from, they are picked.
        let only = parse_service(
            &json!({"hostname": "svc.test", "backends": ["http://n1", "http://n2"]}),
            "",
            &Deployment::default(),
        )
        .unwrap();
        let mut n = Fleet::new(only, 3, f.records(), b"s", 0);
        assert!(matches!(n.decide(&streamed, 1), Verdict::Route(_)));
    }
}
