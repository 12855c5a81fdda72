//! The routing decision: access lists and rate limits, traffic rules, pool choice (a rule's pool or split, failover, geo), affinity pins and hashing, endpoint steering, and the attempts a route lists.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;

use super::Fleet;
use crate::policy::access::clients::canonical_ip;
use crate::policy::control::config::{
    AffinityKind, BackendState, BreakerConfig, EndpointSteering, PoolSteering,
};
use crate::policy::health::breaker::{Admit, BreakerState};
use crate::policy::health::regions::Region;
use crate::policy::traffic::affinity;
use crate::policy::traffic::decision::{Attempt, CookieSpec, Reject, Route, Verdict};
use crate::policy::traffic::dynamic::{self, PoolLatency};
use crate::policy::traffic::facts::RequestFacts;
use crate::policy::traffic::geo;
use crate::policy::traffic::rules::{
    split_at_random, split_by_key, split_key, Action, Client, RequestLine, RuleAnswer, RuleEffects,
    RuleNeeds,
};
use crate::policy::traffic::select::failover_order;
use crate::policy::traffic::steering::{self, Load};

impl Fleet {
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
        // Rules read the request line: ask for what is missing before anything is counted, so
        // the second ask is the one the rate limit sees.
        if !self.rules.is_empty() && !self.needs.rules.covered_by(facts.line.as_ref()) {
            return Verdict::More((*self.needs.rules).clone());
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
        let (rule_group, effects) = match self.apply_rules(facts, ip, now_ms) {
            Ok(routed) => routed,
            Err(mut answer) => {
                answer.log = self.cfg.logging.clone();
                return Verdict::Answer(*answer);
            }
        };
        self.budget.record_request(now_ms);
        let params = self.breaker_params();
        let (group, pool_why) = match rule_group {
            Some(g) => (g, None),
            None => self.choose_group(facts, now_ms, &params),
        };
        let members = self.groups[group].clone();
        let weights = self.effective_weights(now_ms);
        // Score weighting: a backend below the floor (weight 0) gets no new requests, not even
        // retries, while a peer of its pool is above it.
        let floored = self.cfg.load_balancer.score_weighting
            && members
                .iter()
                .any(|&i| weights[i] > 0 && self.eligible(i, now_ms, &params));
        let in_rotation = |i: usize| !floored || weights[i] > 0;

        let pinned = self.pinned_backend(facts, &members, now_ms);
        let primary = match pinned {
            Some(i) => Some(i),
            None => {
                let eligible: Vec<bool> = members
                    .iter()
                    .map(|&i| self.eligible(i, now_ms, &params) && in_rotation(i))
                    .collect();
                self.pick_in_group(group, &members, eligible, &weights, facts, now_ms)
            }
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
                let order = failover_order(members.len(), pos, |k| {
                    self.failover_ok(members[k]) && in_rotation(members[k])
                });
                let budget = self.budget.available(now_ms) as usize;
                for k in order.into_iter().take(max_extra.min(budget)) {
                    attempts.push(members[k]);
                    trials.push(false);
                }
                let mut route = self.route(attempts, trials, false, now_ms, pinned);
                route.rule_needs = self.rule_needs_for(facts);
                route.rules = effects;
                route.pool_why = pool_why;
                route.ticket = self.count_in(first, &route, now_ms);
                return Verdict::Route(route);
            }
            None => {
                // Panic mode (as Envoy): nothing looks healthy, so try every enabled backend,
                // least recently failed first, rather than refusing while one might work. A
                // rule's pool stays a hard choice: another pool may not serve that path at all.
                let scope: Vec<usize> = match rule_group {
                    Some(_) => members.clone(),
                    None => (0..self.backends.len()).collect(),
                };
                let mut all: Vec<usize> = scope
                    .into_iter()
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
        route.rule_needs = self.rule_needs_for(facts);
        route.rules = effects;
        route.ticket = self.count_in(first, &route, now_ms);
        Verdict::Route(route)
    }

    /// What the route tells the Worker to read of its next requests: nothing when this request
    /// was read exactly so already (the reply stays small on every ask).
    fn rule_needs_for(&self, facts: &RequestFacts) -> Option<Rc<RuleNeeds>> {
        (!self.needs.rules.read_as(facts.line.as_ref())).then(|| self.needs.rules.clone())
    }

    /// Walks the traffic rules: Err is a rule's own answer; Ok holds the group a rule's pool or
    /// split chose (None: steering chooses) and what the rules did (None: no rule matched).
    fn apply_rules(
        &mut self,
        facts: &RequestFacts,
        ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<(Option<usize>, Option<RuleEffects>), Box<RuleAnswer>> {
        if self.rules.is_empty() {
            return Ok((None, None));
        }
        let none = RequestLine::default();
        let line = facts.line.as_ref().unwrap_or(&none);
        let client = Client {
            ip,
            country: facts.country.as_deref(),
            continent: facts.continent.as_deref(),
        };
        let (action, effects) = {
            let walk = self.rules.evaluate(line, client);
            if let Some(answer) = walk.answer(line) {
                return Err(Box::new(answer));
            }
            (walk.action().clone(), walk.effects(None))
        };
        let pool = match action {
            Action::Pool(p) => Some(p),
            Action::Split(split) => self.split_pool(&split, facts, now_ms),
            _ => None,
        };
        let effects = effects.map(|mut e| {
            e.pool = pool.map(|p| self.cfg.pools[p].name.to_string());
            e
        });
        Ok((pool.map(|p| p + 1), effects))
    }

    /// The pool of a split for this client: the pool of the backend its valid affinity pin
    /// names (a pool it is still given clients), else by its key (affinity header value or
    /// address), else a weighted draw. An index into the config's pools.
    fn split_pool(
        &mut self,
        split: &[(usize, u32)],
        facts: &RequestFacts,
        now_ms: u64,
    ) -> Option<usize> {
        if let Some(id) = self.pin_id(facts, now_ms) {
            let kept = split.iter().find(|&&(p, w)| {
                w > 0 && self.groups[p + 1].iter().any(|&i| self.pin_ids[i] == id)
            });
            if let Some(&(p, _)) = kept {
                return Some(p);
            }
        }
        let shares: Vec<(&str, u32)> = split
            .iter()
            .map(|&(p, w)| (self.cfg.pools[p].name.as_str(), w))
            .collect();
        let k = match split_key(
            &self.cfg,
            facts.client_ip.as_deref(),
            facts.affinity_header.as_deref(),
        ) {
            Some(key) => split_by_key(&shares, &key),
            None => split_at_random(&shares, &mut self.rng),
        };
        k.map(|k| split[k].0)
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
        let needs = &self.needs;
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
            geo: needs.geo,
            log: self.cfg.logging.clone(),
            rules: None,
            rule_needs: None,
            pool_why: None,
            cookie: cookie_affinity.map(|a| CookieSpec {
                name: a.cookie_name.to_string(),
                ttl_s: a.ttl_s,
            }),
            affinity_header: needs.affinity_header.clone(),
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
    pub(super) fn pool_counts(
        &self,
        p: usize,
        now_ms: u64,
        params: &BreakerConfig,
    ) -> (usize, u32) {
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
    fn choose_group(
        &self,
        facts: &RequestFacts,
        now_ms: u64,
        params: &BreakerConfig,
    ) -> (usize, Option<String>) {
        let lb = &self.cfg.load_balancer;
        if lb.steering == PoolSteering::Dynamic && !self.cfg.pools.is_empty() {
            let (p, why) = self.dynamic_pool(facts, now_ms, params);
            return (p + 1, Some(why));
        }
        (self.steered_group(facts, now_ms, params), None)
    }

    /// Dynamic steering: the healthy pool with the lowest probe latency from the probe region
    /// nearest the client (a pool's latency from a region: the mean over its backends taking
    /// traffic that the region sees up). An index into the config's pools, and why.
    fn dynamic_pool(
        &self,
        facts: &RequestFacts,
        now_ms: u64,
        params: &BreakerConfig,
    ) -> (usize, String) {
        let pools: Vec<PoolLatency> = (0..self.cfg.pools.len())
            .map(|p| {
                let (healthy, minimum) = self.pool_counts(p, now_ms, params);
                let mut sums: BTreeMap<Region, (f64, u32)> = BTreeMap::new();
                for &i in &self.groups[p + 1] {
                    if !self.eligible(i, now_ms, params) {
                        continue;
                    }
                    for (region, ms) in self.region_latency(i) {
                        let e = sums.entry(region).or_insert((0.0, 0));
                        e.0 += ms;
                        e.1 += 1;
                    }
                }
                PoolLatency {
                    healthy: healthy >= minimum.max(1) as usize,
                    latency_ms: sums
                        .into_iter()
                        .map(|(r, (sum, n))| (r, sum / f64::from(n.max(1))))
                        .collect(),
                }
            })
            .collect();
        let choice = dynamic::choose(
            &pools,
            self.cfg.health.probe_regions(),
            facts.country.as_deref(),
            facts.continent.as_deref(),
        );
        let names: Vec<&str> = self.cfg.pools.iter().map(|p| p.name.as_str()).collect();
        (choice.pool, dynamic::why(&choice, &names))
    }

    /// Failover or geo steering, or the top-level group.
    fn steered_group(&self, facts: &RequestFacts, now_ms: u64, params: &BreakerConfig) -> usize {
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

    /// The backend id a valid affinity cookie of the client names (cookie affinity only).
    fn pin_id(&self, facts: &RequestFacts, now_ms: u64) -> Option<String> {
        let a = self.cfg.affinity()?;
        if !matches!(a.kind, AffinityKind::Cookie | AffinityKind::IpCookie) {
            return None;
        }
        let value = affinity::cookie_value(facts.cookies.as_deref()?, &a.cookie_name)?;
        match affinity::verify(
            &self.affinity_secret,
            &self.cfg.hostname,
            value,
            now_ms / 1000,
        ) {
            affinity::Pin::Valid { backend_id, .. } => Some(backend_id),
            _ => None,
        }
    }

    /// The backend a valid affinity cookie pins the client to, if it may still serve (enabled or draining, healthy).
    fn pinned_backend(
        &self,
        facts: &RequestFacts,
        members: &[usize],
        now_ms: u64,
    ) -> Option<usize> {
        let backend_id = self.pin_id(facts, now_ms)?;
        // A closed breaker is always available, so no breaker check beyond `Closed` is needed.
        members.iter().copied().find(|&i| {
            self.pin_ids[i] == backend_id
                && self.states[i] != BackendState::Disabled
                && self.backends[i].health.healthy
                && self.backends[i].breaker.state == BreakerState::Closed
        })
    }

    /// Picks in `group` (whose backend indices are `members`, `eligible` each) by hash affinity
    /// or weighted round robin; `weights` are every backend's effective weights.
    fn pick_in_group(
        &mut self,
        group: usize,
        members: &[usize],
        mut eligible: Vec<bool>,
        weights: &[u32],
        facts: &RequestFacts,
        now_ms: u64,
    ) -> Option<usize> {
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
                weight: weights[i],
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
}
