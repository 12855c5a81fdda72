//! A service's rules compiled once (names lowered, pools resolved, regexes already built by the config) and the walk that evaluates them against one request.

use std::borrow::Cow;
use std::net::IpAddr;

use super::{HeaderOps, RequestLine, RuleNeeds};
use crate::policy::access::lists::Cidr;
use crate::policy::control::config::{
    HeaderActions, PathRegex, Rewrite, Rule, ServiceConfig, When, DEFAULT_RESPOND_CONTENT_TYPE,
};
use crate::policy::rng::Rng;
use crate::policy::traffic::affinity;

/// What a rule that ends the walk does with the request.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// No routing action: the service's own steering picks the pool.
    Steering,
    /// This pool (index into the config's `pools`).
    Pool(usize),
    /// Weighted pools (index into `pools`, weight).
    Split(Vec<(usize, u32)>),
    Redirect {
        status: u16,
        location: String,
        preserve_path: bool,
    },
    Respond {
        status: u16,
        body: String,
        content_type: Option<String>,
    },
}

/// The client facts rules read besides the request line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Client<'a> {
    pub ip: Option<IpAddr>,
    pub country: Option<&'a str>,
    pub continent: Option<&'a str>,
}

/// One rule's conditions, names lowered, `"*"` turned into "any value".
#[derive(Clone, Debug)]
struct Cond {
    path: Option<String>,
    prefix: Option<String>,
    regex: Option<PathRegex>,
    methods: Vec<String>,
    headers: Vec<(String, Option<String>)>,
    query: Vec<(String, Option<String>)>,
    countries: Vec<String>,
    nets: Vec<Cidr>,
    not: Option<Box<Cond>>,
}

#[derive(Clone, Debug)]
struct Compiled {
    name: String,
    when: Cond,
    action: Action,
    rewrite: Option<Rewrite>,
    request_headers: HeaderOps,
    response_headers: HeaderOps,
    proceed: bool,
}

/// A service's rules, ready to evaluate. Built once per config (the Fleet holds it).
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Compiled>,
    needs: RuleNeeds,
}

/// What the walk over the rules found for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Walk<'r> {
    /// Names of the rules that applied, in order.
    pub matched: Vec<&'r str>,
    /// The rule that ended the walk, and what it does.
    pub decided: Option<(&'r str, &'r Action)>,
    /// The rewritten path (no query); None: unchanged.
    pub path: Option<String>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

impl Walk<'_> {
    /// The deciding rule's action; `Steering` when no rule decided.
    pub fn action(&self) -> &Action {
        self.decided.map_or(&Action::Steering, |(_, a)| a)
    }
}

/// The `when` blocks of a rule list, each with its nested `not`s.
fn conditions(rules: &[Rule]) -> impl Iterator<Item = &When> {
    rules
        .iter()
        .flat_map(|r| std::iter::successors(Some(&r.when), |w| w.not.as_deref()))
}

/// What `rules` read of the request line, and whether they read the client's geography.
pub fn needs_of(rules: &[Rule]) -> (RuleNeeds, bool) {
    let mut needs = RuleNeeds::default();
    let mut geo = false;
    for w in conditions(rules) {
        needs.method |= !w.methods.is_empty();
        needs.path |= w.path.is_some() || w.path_prefix.is_some() || w.path_regex.is_some();
        needs.query |= !w.query.is_empty();
        needs
            .headers
            .extend(w.headers.keys().map(|h| h.to_ascii_lowercase()));
        geo |= !w.countries.is_empty();
    }
    for r in rules {
        // A rewrite is computed from the path, and preserve_path appends path and query.
        let rewrites = r
            .then
            .rewrite
            .as_ref()
            .is_some_and(|rw| rw.replace_path.is_none());
        let preserves = r.then.redirect.as_ref().is_some_and(|r| r.preserve_path);
        needs.path |= rewrites || preserves;
        needs.query |= preserves;
    }
    needs.headers.sort();
    needs.headers.dedup();
    if needs.query {
        needs.path = true;
    }
    (needs, geo)
}

fn ops(actions: &HeaderActions) -> HeaderOps {
    HeaderOps {
        set: actions
            .set
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
        remove: actions
            .remove
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect(),
    }
}

fn any_or(v: &str) -> Option<String> {
    (v != "*").then(|| v.to_string())
}

fn cond(w: &When) -> Cond {
    Cond {
        path: w.path.as_ref().map(ToString::to_string),
        prefix: w.path_prefix.as_ref().map(ToString::to_string),
        regex: w.path_regex.clone(),
        methods: w.methods.iter().map(ToString::to_string).collect(),
        headers: w
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), any_or(v)))
            .collect(),
        query: w
            .query
            .iter()
            .map(|(k, v)| (k.clone(), any_or(v)))
            .collect(),
        countries: w.countries.iter().map(ToString::to_string).collect(),
        nets: w.client_ips.clone(),
        not: w.not.as_deref().map(|n| Box::new(cond(n))),
    }
}

impl RuleSet {
    /// Compiles `cfg`'s rules. Pool names resolve to indices into `cfg.pools` (validation
    /// made sure they exist; one that does not leaves the choice to steering).
    pub fn new(cfg: &ServiceConfig) -> Self {
        let pool = |name: &str| cfg.pools.iter().position(|p| p.name.as_str() == name);
        let rules = cfg
            .rules
            .iter()
            .map(|r| {
                let t = &r.then;
                let action = if let Some(p) = t.pool.as_ref().and_then(|p| pool(p)) {
                    Action::Pool(p)
                } else if let Some(split) = &t.split {
                    Action::Split(
                        split
                            .iter()
                            .filter_map(|s| pool(&s.pool).map(|p| (p, s.weight)))
                            .collect(),
                    )
                } else if let Some(rd) = &t.redirect {
                    Action::Redirect {
                        status: rd.status,
                        location: rd.location.to_string(),
                        preserve_path: rd.preserve_path,
                    }
                } else if let Some(rs) = &t.respond {
                    let body = rs
                        .body
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    let content_type =
                        rs.content_type
                            .as_ref()
                            .map(ToString::to_string)
                            .or_else(|| {
                                (!body.is_empty()).then(|| DEFAULT_RESPOND_CONTENT_TYPE.to_string())
                            });
                    Action::Respond {
                        status: rs.status,
                        body,
                        content_type,
                    }
                } else {
                    Action::Steering
                };
                Compiled {
                    name: r.name.to_string(),
                    when: cond(&r.when),
                    action,
                    rewrite: t.rewrite.clone(),
                    request_headers: ops(&t.request_headers),
                    response_headers: ops(&t.response_headers),
                    proceed: t.r#continue,
                }
            })
            .collect();
        RuleSet {
            rules,
            needs: needs_of(&cfg.rules).0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What the rules read of the request line.
    pub fn needs(&self) -> &RuleNeeds {
        &self.needs
    }

    /// Walks the rules in order: every matching `continue` rule adds its header actions, and
    /// the first matching rule without `continue` adds its own and ends the walk.
    pub fn evaluate<'r>(&'r self, line: &RequestLine, client: Client<'_>) -> Walk<'r> {
        let mut walk = Walk {
            matched: Vec::new(),
            decided: None,
            path: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        };
        let mut query = Query::new(&line.query);
        for rule in &self.rules {
            if !holds(&rule.when, line, &client, &mut query) {
                continue;
            }
            walk.matched.push(&rule.name);
            walk.request_headers.merge(&rule.request_headers);
            walk.response_headers.merge(&rule.response_headers);
            if rule.proceed {
                continue;
            }
            walk.path = rule.rewrite.as_ref().map(|rw| rewrite(&line.path, rw));
            walk.decided = Some((&rule.name, &rule.action));
            break;
        }
        walk
    }
}

impl HeaderOps {
    /// Adds `later`'s actions after these: for a header named in both, the later action wins,
    /// so each name ends up in at most one of `set` and `remove` and the order they are
    /// applied in does not matter.
    pub fn merge(&mut self, later: &HeaderOps) {
        for name in &later.remove {
            self.set.retain(|(n, _)| n != name);
            if !self.remove.contains(name) {
                self.remove.push(name.clone());
            }
        }
        for (name, value) in &later.set {
            self.remove.retain(|n| n != name);
            match self.set.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.clone(),
                None => self.set.push((name.clone(), value.clone())),
            }
        }
    }
}

/// The query's parameters, decoded (form-urlencoded) on first use only.
struct Query<'q> {
    raw: &'q str,
    pairs: Option<Vec<(Cow<'q, str>, Cow<'q, str>)>>,
}

impl<'q> Query<'q> {
    fn new(raw: &'q str) -> Self {
        Query { raw, pairs: None }
    }

    fn has(&mut self, name: &str, value: Option<&str>) -> bool {
        let raw = self.raw;
        self.pairs
            .get_or_insert_with(|| url::form_urlencoded::parse(raw.as_bytes()).collect())
            .iter()
            .any(|(k, v)| k == name && value.is_none_or(|want| v == want))
    }
}

fn holds(c: &Cond, line: &RequestLine, client: &Client<'_>, query: &mut Query<'_>) -> bool {
    let path = line.path.as_str();
    c.path.as_deref().is_none_or(|p| p == path)
        && c.prefix.as_deref().is_none_or(|p| path.starts_with(p))
        && (c.methods.is_empty()
            || c.methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&line.method)))
        && c.headers.iter().all(|(name, want)| {
            line.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case(name)
                    && v.as_deref()
                        .is_some_and(|v| want.as_deref().is_none_or(|w| w == v))
            })
        })
        && (c.countries.is_empty()
            || c.countries.iter().any(|code| {
                [client.country, client.continent]
                    .into_iter()
                    .flatten()
                    .any(|have| have.trim().eq_ignore_ascii_case(code))
            }))
        && (c.nets.is_empty() || client.ip.is_some_and(|ip| c.nets.iter().any(|n| n.contains(ip))))
        && c.query.iter().all(|(name, want)| query.has(name, want.as_deref()))
        // The regex last: it is the dearest test.
        && c.regex.as_ref().is_none_or(|r| r.is_match(path))
        && c.not.as_deref().is_none_or(|n| !holds(n, line, client, query))
}

/// The path after `rw` (no query): `replace_path`, or `strip_prefix` (only at a segment
/// boundary) then `add_prefix`.
pub fn rewrite(path: &str, rw: &Rewrite) -> String {
    if let Some(p) = &rw.replace_path {
        return p.to_string();
    }
    let mut out: &str = path;
    if let Some(strip) = &rw.strip_prefix {
        let strip = strip.trim_end_matches('/');
        if let Some(rest) = out.strip_prefix(strip) {
            if rest.is_empty() {
                out = "/";
            } else if rest.starts_with('/') {
                out = rest;
            }
        }
    }
    match &rw.add_prefix {
        Some(add) => format!("{}{out}", add.trim_end_matches('/')),
        None => out.to_string(),
    }
}

/// A redirect's Location: `location`, plus the request's path and query with `preserve_path`.
pub fn location(location: &str, preserve_path: bool, line: &RequestLine) -> String {
    if !preserve_path {
        return location.to_string();
    }
    let mut out = location.trim_end_matches('/').to_string();
    out.push_str(if line.path.is_empty() {
        "/"
    } else {
        &line.path
    });
    if !line.query.is_empty() {
        out.push('?');
        out.push_str(&line.query);
    }
    out
}

/// The split's pool for a client keyed by `key` (address or affinity header value): weighted
/// rendezvous hashing over the pools' names, so a client keeps its pool across requests and
/// Workers, and a weight change moves only the clients it must. Pools of weight 0 take no one.
/// Returns an index into `split` (pool name, weight).
pub fn split_by_key(split: &[(&str, u32)], key: &str) -> Option<usize> {
    let live: Vec<usize> = (0..split.len()).filter(|&k| split[k].1 > 0).collect();
    let candidates: Vec<(&str, u32)> = live.iter().map(|&k| split[k]).collect();
    affinity::rendezvous_weighted(key, &candidates).map(|j| live[j])
}

/// The split's pool for a client with no key: a weighted draw. Returns an index into `split`.
pub fn split_at_random(split: &[(&str, u32)], rng: &mut impl Rng) -> Option<usize> {
    let total: u64 = split.iter().map(|s| u64::from(s.1)).sum();
    let mut draw = rng.below(total);
    for (k, s) in split.iter().enumerate() {
        if draw < u64::from(s.1) {
            return Some(k);
        }
        draw -= u64::from(s.1);
    }
    None
}
