//! Config preview: recent requests replayed through the current config's decisions and a draft's, and what the draft would change.
//!
//! Both sides use the real decision ([`Fleet::decide`]) on fleets built from the configs and
//! the current backend records, so current health and breakers apply to the draft as they
//! would once it is saved. The platform supplies the rows (the request log) and the probe
//! results of the draft's new backends.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

use crate::policy::control::config::{AffinityKind, BackendState, ServiceConfig};
use crate::policy::telemetry::record::LogRow;
use crate::policy::traffic::decision::Verdict;
use crate::policy::traffic::facts::{Needs, RequestFacts};
use crate::policy::traffic::fleet::{BackendRecord, Fleet};
use crate::policy::traffic::rules::RequestLine;
use crate::policy::traffic::steering::PoolHealth;

/// How many of the newest logged requests a preview replays, and how far back it looks.
pub const REPLAY_ROWS: u32 = 1000;
pub const REPLAY_WINDOW_MS: u64 = 3_600_000;

/// The warning of a preview with nothing to replay.
pub const NOTHING_TO_REPLAY: &str =
    "the request log holds no recent requests of this service: there was nothing to replay";

/// What the preview answers (shares are fractions of `requests`, 0 to 1).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preview {
    pub requests: usize,
    /// Backend URL → share of the replayed requests it takes under the current config.
    pub before: BTreeMap<String, f64>,
    /// The same under the draft.
    pub after: BTreeMap<String, f64>,
    /// Share of requests whose backend would change (refused ones included).
    pub changed: f64,
    /// Share the draft would refuse or answer itself.
    pub refused: f64,
    pub warnings: Vec<String>,
}

/// The service as it runs now: what the draft is compared with.
pub struct Current<'a> {
    pub cfg: &'a ServiceConfig,
    pub records: &'a [BackendRecord],
    /// The affinity key, so hashes and pins come out as in real decisions.
    pub secret: &'a [u8],
    pub now_ms: u64,
}

/// Where one replayed request ends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    Backend(String),
    /// Refused, answered by a rule, or no backend to take it.
    Refused,
}

/// Replays `rows` under `current` and `draft`. `unanswered`: the draft's new backends that did
/// not answer the probe sent for the preview, each with why.
pub fn preview(
    current: &Current,
    draft: &ServiceConfig,
    rows: &[LogRow],
    unanswered: &[(String, String)],
) -> Preview {
    let mut before_fleet = replay_fleet(current, current.cfg, current.now_ms);
    // Built one slow-start window ago, so the draft's new backends show the share they settle
    // at, not the first moments of their ramp.
    let built = current
        .now_ms
        .saturating_sub(draft.load_balancer.slow_start_ms);
    let mut after_fleet = replay_fleet(current, draft, built);
    let keys = Keys::of(current.cfg, draft);
    // Per group of requests the decision can tell apart: how many ended where, before and after.
    let mut groups: HashMap<Key, BTreeMap<Outcome, (usize, usize)>> = HashMap::new();
    let mut before = shares_of(current.cfg);
    let mut after = shares_of(draft);
    let mut refused = 0;
    for row in rows {
        let facts = facts_of(row);
        let (b, rule_b) = replay(&mut before_fleet, &facts, current.now_ms);
        let (a, rule_a) = replay(&mut after_fleet, &facts, current.now_ms);
        if let Outcome::Backend(url) = &b {
            *before.entry(url.clone()).or_default() += 1.0;
        }
        match &a {
            Outcome::Backend(url) => *after.entry(url.clone()).or_default() += 1.0,
            Outcome::Refused => refused += 1,
        }
        let group = groups.entry(keys.key(row, rule_b, rule_a)).or_default();
        group.entry(b).or_default().0 += 1;
        group.entry(a).or_default().1 += 1;
    }
    // Within a group, which request a round-robin turn gives to which backend is chance: what
    // changes is how many go where. So a group counts as moved what its counts moved.
    let moved: usize = groups
        .values()
        .flat_map(|g| g.values())
        .map(|(b, a)| b.saturating_sub(*a))
        .sum();
    let n = rows.len();
    let share = |count: f64| if n == 0 { 0.0 } else { round(count / n as f64) };
    before.values_mut().for_each(|v| *v = share(*v));
    after.values_mut().for_each(|v| *v = share(*v));
    let changed = share(moved as f64);
    let mut preview = Preview {
        requests: n,
        warnings: Vec::new(),
        refused: share(refused as f64),
        changed,
        before,
        after,
    };
    preview.warnings = warnings(current, draft, &after_fleet, unanswered, &preview);
    preview
}

/// A fleet for replaying: the rate limit is left out (a replay's burst is not the clients').
fn replay_fleet(current: &Current, cfg: &ServiceConfig, built_ms: u64) -> Fleet {
    let mut cfg = cfg.clone();
    cfg.rate_limit = None;
    Fleet::new(cfg, 0, current.records, current.secret, built_ms)
}

/// Every backend of `cfg` at share 0, so a backend that takes nothing still shows.
fn shares_of(cfg: &ServiceConfig) -> BTreeMap<String, f64> {
    cfg.all_backends()
        .iter()
        .map(|b| (b.url.to_string(), 0.0))
        .collect()
}

fn facts_of(row: &LogRow) -> RequestFacts {
    RequestFacts {
        client_ip: row.asker.client_ip.clone(),
        country: row.asker.country.clone(),
        line: Some(RequestLine {
            method: row.request.method.clone(),
            path: row.request.path.clone(),
            query: row.asker.query.clone().unwrap_or_default(),
            headers: Vec::new(),
        }),
        ..RequestFacts::default()
    }
}

/// One decision, its side effects on load undone (a replayed request never completes), and the
/// traffic rule that decided it, if one did.
fn replay(fleet: &mut Fleet, facts: &RequestFacts, now_ms: u64) -> (Outcome, Option<String>) {
    let mut verdict = fleet.decide(facts, now_ms);
    if let Verdict::More(needs) = &verdict {
        // Headers are not logged: the rules see them absent.
        let mut facts = facts.clone();
        if let Some(line) = &mut facts.line {
            line.headers = needs.headers.iter().map(|h| (h.clone(), None)).collect();
        }
        verdict = fleet.decide(&facts, now_ms);
    }
    match verdict {
        Verdict::Route(route) => {
            if let Some(ticket) = route.ticket {
                fleet.complete(ticket);
            }
            let outcome = route
                .attempts
                .first()
                .map_or(Outcome::Refused, |a| Outcome::Backend(a.url.clone()));
            (outcome, route.rules.and_then(|e| e.decided_by))
        }
        Verdict::Answer(answer) => (Outcome::Refused, Some(answer.rule)),
        Verdict::Reject(_) | Verdict::More(_) => (Outcome::Refused, None),
    }
}

/// What sets requests apart for either config's decision, so only requests alike in it are
/// compared as a share: the country under geo steering, the client under `ip_cookie` affinity,
/// and the traffic rule that decided each side (requests a rule treats alike form one group,
/// whatever their paths).
struct Keys {
    country: bool,
    client: bool,
}

type Key = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Keys {
    fn of(a: &ServiceConfig, b: &ServiceConfig) -> Self {
        // Access lists read the client too, but refuse or not: a share compares them as well.
        let by_client = |c: &ServiceConfig| {
            c.affinity()
                .is_some_and(|f| f.kind == AffinityKind::IpCookie)
        };
        Keys {
            country: Needs::of(a).geo || Needs::of(b).geo,
            client: by_client(a) || by_client(b),
        }
    }

    fn key(&self, row: &LogRow, rule_before: Option<String>, rule_after: Option<String>) -> Key {
        (
            self.country.then(|| row.asker.country.clone()).flatten(),
            self.client.then(|| row.asker.client_ip.clone()).flatten(),
            rule_before,
            rule_after,
        )
    }
}

/// Plain sentences about what the draft risks.
fn warnings(
    current: &Current,
    draft: &ServiceConfig,
    fleet: &Fleet,
    unanswered: &[(String, String)],
    p: &Preview,
) -> Vec<String> {
    let mut out = Vec::new();
    if p.requests == 0 {
        out.push(NOTHING_TO_REPLAY.to_string());
    }
    for (url, why) in unanswered {
        let share = p.after.get(url).copied().unwrap_or(0.0);
        out.push(format!(
            "new backend {url} did not answer a probe ({why}); it would take {} of the requests",
            percent(share)
        ));
    }
    let all = draft.all_backends();
    if !all.is_empty() && all.iter().all(|b| b.state != BackendState::Enabled) {
        out.push(
            "every backend of the service is disabled or draining: every request would be answered 503"
                .to_string(),
        );
    }
    for ((name, health, healthy, _), pool) in
        fleet.pool_status(current.now_ms).iter().zip(&draft.pools)
    {
        // A new backend that did not answer counts as down, as its first probes would make it.
        let dead = pool
            .backends
            .iter()
            .filter(|b| b.state == BackendState::Enabled)
            .filter(|b| unanswered.iter().any(|(u, _)| u == b.url.as_str()))
            .count();
        let healthy = healthy.saturating_sub(dead);
        if *health == PoolHealth::Critical || healthy < pool.minimum_healthy as usize {
            out.push(format!(
                "pool \"{name}\" would have {healthy} healthy backend(s), fewer than its minimum_healthy of {}: its traffic would go elsewhere",
                pool.minimum_healthy
            ));
        }
    }
    let by_weight = weight_moved(current.cfg, draft);
    if by_weight > 0.5 {
        out.push(format!(
            "the new weights move {} of the traffic to other backends",
            percent(by_weight)
        ));
    } else if p.changed > 0.5 {
        out.push(format!(
            "{} of the replayed requests would go to another backend",
            percent(p.changed)
        ));
    }
    out
}

/// The share of traffic that changes backend when the configured weights of enabled backends
/// change from `a` to `b` (half the sum of the differences of the shares).
fn weight_moved(a: &ServiceConfig, b: &ServiceConfig) -> f64 {
    let shares = |c: &ServiceConfig| -> BTreeMap<String, f64> {
        let enabled: Vec<_> = c
            .all_backends()
            .into_iter()
            .filter(|b| b.state == BackendState::Enabled)
            .collect();
        let total: u64 = enabled.iter().map(|b| u64::from(b.weight)).sum();
        enabled
            .iter()
            .map(|b| {
                let s = if total == 0 {
                    0.0
                } else {
                    f64::from(b.weight) / total as f64
                };
                (b.url.to_string(), s)
            })
            .collect()
    };
    let (sa, sb) = (shares(a), shares(b));
    if sa.is_empty() || sb.is_empty() {
        return 0.0;
    }
    let moved: f64 = sa
        .iter()
        .map(|(url, s)| (s - sb.get(url).copied().unwrap_or(0.0)).max(0.0))
        .sum();
    round(moved)
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

#[cfg(test)]
mod tests;
