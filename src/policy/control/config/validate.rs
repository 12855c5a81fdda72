//! Cross-field rules the types cannot express, and the deployment a config is checked against.

use std::collections::HashMap;

use super::*;

impl ServiceConfig {
    /// Cross-field rules the types cannot express, each error at its path.
    pub(super) fn validate(&self, ctx: &Deployment) -> Vec<Issue> {
        let mut errs = Vec::new();
        let at = |segs: &[Seg]| segs.to_vec();
        if ctx.is_admin_host(self.hostname.as_str()) {
            errs.push((
                at(&[key("hostname")]),
                format!(
                    "{:?} is one of the Worker's own hostnames (localhost, loopback, *.workers.dev, ADMIN_HOSTNAME), which serve the admin API and are never balanced",
                    self.hostname.as_str()
                ), None));
        }
        if self.backends.is_empty() && self.pools.is_empty() {
            errs.push((
                at(&[key("backends")]),
                "at least one backend is required (in backends or pools)".to_string(),
                None,
            ));
        }
        let total =
            self.backends.len() + self.pools.iter().map(|p| p.backends.len()).sum::<usize>();
        if total > MAX_BACKENDS {
            errs.push((
                at(&[key("backends")]),
                format!("{total} backends; at most {MAX_BACKENDS} are allowed per service"),
                None,
            ));
        }
        let mut lists: Vec<(Vec<Seg>, &[Backend])> = vec![(vec![key("backends")], &self.backends)];
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, p) in self.pools.iter().enumerate() {
            let pp = vec![key("pools"), Seg::Index(i)];
            if p.backends.is_empty() {
                errs.push((
                    extend(&pp, key("backends")),
                    "a pool needs at least one backend".into(),
                    None,
                ));
            }
            lists.push((extend(&pp, key("backends")), &p.backends));
            if p.minimum_healthy as usize > p.backends.len().max(1) {
                errs.push((
                    extend(&pp, key("minimum_healthy")),
                    format!(
                        "{} is more than the pool's {} backends: the pool could never be healthy",
                        p.minimum_healthy,
                        p.backends.len()
                    ),
                    None,
                ));
            }
            if let Some(first) = names.insert(p.name.as_str(), i) {
                errs.push((
                    extend(&pp, key("name")),
                    format!("duplicate pool name {:?} (same as {SAME})", p.name.as_str()),
                    Some(vec![key("pools"), Seg::Index(first), key("name")]),
                ));
                names.insert(p.name.as_str(), first);
            }
        }
        for (lp, list) in lists {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (i, b) in list.iter().enumerate() {
                let bp = extend(&lp, Seg::Index(i));
                if let Some(first) = seen.get(b.url.as_str()) {
                    errs.push((
                        bp.clone(),
                        format!("duplicate backend {:?} (same as {SAME})", b.url.as_str()),
                        Some(extend(&lp, Seg::Index(*first))),
                    ));
                } else {
                    seen.insert(b.url.as_str(), i);
                }
                // A DNS record needs an address: the URL's own when it is an IP literal.
                let literal = b
                    .url
                    .host()
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok();
                if self.dns.is_some() && b.address.is_none() && !literal {
                    errs.push((
                        extend(&bp, key("address")),
                        format!(
                            "the dns records need an IP address for {:?}: its host is a DNS name, so give \"address\"",
                            b.url.as_str()
                        ),
                        None,
                    ));
                }
                if let Some(why) = ctx.loops_back(b.url.host()) {
                    errs.push((
                        bp,
                        format!(
                            "{:?} points back at this deployment ({why}): requests would loop",
                            b.url.as_str()
                        ),
                        None,
                    ));
                }
            }
        }
        if let Some(g) = &self.geo {
            let gp = vec![key("geo_steering")];
            let known: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
            if self.pools.is_empty() {
                errs.push((gp.clone(), "requires pools".into(), None));
            } else {
                let mut check = |name: &PoolName, path: Vec<Seg>| {
                    if !known.contains(&name.as_str()) {
                        errs.push((
                            path,
                            format!(
                                "unknown pool {:?}; pools: {}",
                                name.as_str(),
                                known.join(", ")
                            ),
                            None,
                        ));
                    }
                };
                for (code, pool) in &g.regions {
                    check(pool, extend(&extend(&gp, key("regions")), key(&code.0)));
                }
                check(&g.fallback_pool, extend(&gp, key("fallback_pool")));
            }
        }
        errs.extend(self.validate_steering());
        let hooks = self.webhooks();
        if hooks.len() > MAX_WEBHOOKS {
            errs.push((
                at(&[key("notifications"), key("webhooks")]),
                format!(
                    "{} webhooks; at most {MAX_WEBHOOKS} are allowed per service",
                    hooks.len()
                ),
                None,
            ));
        }
        for (i, w) in hooks.iter().enumerate() {
            let wp = vec![key("notifications"), key("webhooks"), Seg::Index(i)];
            match (&w.secret, w.format) {
                (None, WebhookFormat::Json) => errs.push((
                    extend(&wp, key("secret")),
                    format!("required for format \"json\" (at least {MIN_WEBHOOK_SECRET} characters): receivers verify X-FlowBalance-Signature with it"),
                    None,
                )),
                (Some(s), _) if secrets::is_redacted(s) => errs.push((
                    extend(&wp, key("secret")),
                    format!("{s:?} is the redacted form of a secret, and no webhook secret of the stored config matches it; send the secret itself"),
                    None,
                )),
                (Some(s), _) if s.chars().count() < MIN_WEBHOOK_SECRET => errs.push((
                    extend(&wp, key("secret")),
                    format!("too short: at least {MIN_WEBHOOK_SECRET} characters"),
                    None,
                )),
                _ => {}
            }
            if w.events.is_empty() {
                errs.push((
                    extend(&wp, key("events")),
                    "at least one event (leave the key out for all events)".into(),
                    None,
                ));
            }
        }
        errs.extend(self.health.validate());
        errs.extend(rules::validate_rules(self));
        if let Some(a) = self.affinity() {
            if a.kind == AffinityKind::Header && a.header_name.is_none() {
                errs.push((
                    at(&[
                        key("load_balancer"),
                        key("session_affinity"),
                        key("header_name"),
                    ]),
                    "required when type is \"header\"".into(),
                    None,
                ));
            }
        }
        errs.extend(self.validate_regions());
        errs
    }

    /// Probe regions: each once, and a quorum they can reach.
    fn validate_regions(&self) -> Vec<Issue> {
        let mut errs = Vec::new();
        let at = |k: &str| vec![key("activeHealthChecks"), key(k)];
        let regions = &self.health.regions;
        for (i, r) in regions.iter().enumerate() {
            if let Some(first) = regions[..i].iter().position(|x| x == r) {
                errs.push((
                    extend(&at("regions"), Seg::Index(i)),
                    format!("{:?} is listed twice (same as {SAME})", r.as_str()),
                    Some(extend(&at("regions"), Seg::Index(first))),
                ));
            }
        }
        if let Some(q) = self.health.quorum {
            if regions.is_empty() {
                errs.push((
                    at("quorum"),
                    "applies only with activeHealthChecks.regions".into(),
                    None,
                ));
            } else if q as usize > regions.len() {
                errs.push((
                    at("quorum"),
                    format!(
                        "{q} is more than the {} regions: no backend could ever be marked down",
                        regions.len()
                    ),
                    None,
                ));
            }
        }
        errs
    }
}

impl ServiceConfig {
    /// `load_balancer.steering` and `fallback_pool` against the pools and `geo_steering`.
    /// An explicit lease mode refuses what needs every request at the object
    /// ([`ServiceConfig::object_needs`]); `auto` runs such a service per request instead.
    fn validate_steering(&self) -> Vec<Issue> {
        let mut errs = Vec::new();
        if self.decisions.mode == DecisionMode::Lease {
            for need in self.object_needs() {
                errs.push(match need {
                    ObjectNeed::RateLimit => (
                        vec![key("rate_limit")],
                        "cannot be combined with decisions.mode \"lease\": exact per-client rate limiting needs every request at the Durable Object (use mode \"per_request\" or \"auto\", or remove rate_limit)".into(),
                        None,
                    ),
                    ObjectNeed::Steering(steering) => {
                        let name = serde_json::to_value(steering)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        (
                            vec![key("load_balancer"), key("endpoint_steering")],
                            format!("\"{name}\" cannot be combined with decisions.mode \"lease\": it counts every request in flight at the Durable Object (use \"round_robin\" or \"hash\", or mode \"per_request\" or \"auto\")"),
                            None,
                        )
                    }
                });
            }
        }
        let lb = |k: &str| vec![key("load_balancer"), key(k)];
        let known: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        match self.load_balancer.steering {
            PoolSteering::Failover => {
                if self.pools.is_empty() {
                    errs.push((lb("steering"), "\"failover\" requires pools".into(), None));
                }
                if !self.backends.is_empty() {
                    errs.push((
                        vec![key("backends")],
                        "with steering \"failover\", put every backend in a pool (pools are tried in order)".into(),
                        None,
                    ));
                }
                if self.geo.is_some() {
                    errs.push((
                        vec![key("geo_steering")],
                        "applies only with steering \"geo\", not \"failover\"".into(),
                        None,
                    ));
                }
            }
            PoolSteering::Dynamic => {
                if self.pools.len() < 2 {
                    errs.push((
                        lb("steering"),
                        "\"dynamic\" chooses between pools: it needs at least two".into(),
                        None,
                    ));
                }
                if self.health.regions.is_empty() {
                    errs.push((
                        lb("steering"),
                        "\"dynamic\" steers by the latency measured from each probe region: it needs activeHealthChecks.regions".into(),
                        None,
                    ));
                }
                if self.geo.is_some() {
                    errs.push((
                        vec![key("geo_steering")],
                        "applies only with steering \"geo\", not \"dynamic\"".into(),
                        None,
                    ));
                }
                if self.load_balancer.fallback_pool.is_some() {
                    errs.push((
                        lb("fallback_pool"),
                        "applies only with steering \"failover\"".into(),
                        None,
                    ));
                }
            }
            PoolSteering::Geo => {
                if self.load_balancer.fallback_pool.is_some() {
                    errs.push((
                        lb("fallback_pool"),
                        "applies only with steering \"failover\" (geo uses geo_steering.fallback_pool)".into(),
                        None,
                    ));
                }
            }
        }
        if let Some(f) = &self.load_balancer.fallback_pool {
            if !known.is_empty() && !known.contains(&f.as_str()) {
                errs.push((
                    lb("fallback_pool"),
                    format!("unknown pool {:?}; pools: {}", f.as_str(), known.join(", ")),
                    None,
                ));
            }
        }
        errs
    }
}

/// What a config is checked against beyond itself: the deployment it will run in.
#[derive(Clone, Debug, Default)]
pub struct Deployment {
    /// `ADMIN_HOSTNAME`, normalised.
    pub admin_hostname: Option<String>,
    /// Hostnames this deployment balances (DEFAULT_BACKENDS and API-created), normalised.
    pub balanced: Vec<String>,
}

impl Deployment {
    pub fn new(admin_hostname: Option<&str>, balanced: Vec<String>) -> Self {
        Deployment {
            admin_hostname: admin_hostname.and_then(|h| validate_hostname(h).ok()),
            balanced,
        }
    }

    /// The Worker's own hostnames serve the admin surface; every other hostname is balanced.
    pub fn is_admin_host(&self, host: &str) -> bool {
        matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
            || host.ends_with(".workers.dev")
            || self.admin_hostname.as_deref() == Some(host)
    }

    /// Why a backend host would send requests back into this Worker, if it would. Loopback
    /// names are allowed: locally they are the developer's own servers, not the Worker.
    fn loops_back(&self, host: &str) -> Option<&'static str> {
        if host.ends_with(".workers.dev") || self.admin_hostname.as_deref() == Some(host) {
            Some("one of the Worker's own hostnames")
        } else if self.balanced.iter().any(|b| b == host) {
            Some("a hostname this deployment balances")
        } else {
            None
        }
    }
}
