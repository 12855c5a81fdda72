//! Traffic rules: an ordered list per service that matches requests and routes, splits, rewrites, redirects or answers them; pure, run by the object and by a Worker under a lease alike.
//!
//! The interface types below are what the platform reads and carries between the Worker and
//! the object. The config types live in `control/config/rules.rs`.

use serde::{Deserialize, Serialize};

use crate::policy::control::config::Logging;

fn is_default_logging(l: &Logging) -> bool {
    *l == Logging::default()
}
use std::net::IpAddr;

use crate::policy::access::clients::canonical_ip;
use crate::policy::control::config::{AffinityKind, Method, RegionCode, RulePath, ServiceConfig};
use crate::policy::rng::SplitMix64;

mod engine;

pub use engine::{
    location, needs_of, rewrite, split_at_random, split_by_key, Action, Client, RuleSet, Walk,
};

/// The parts of a client request that rules read. In per-request mode the Worker sends only
/// what the service's rules name ([`RuleNeeds`]); under a lease it reads the same from the request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestLine {
    /// Uppercase method.
    #[serde(default)]
    pub method: String,
    /// The path as the client sent it (percent-encoded, starts with `/`), without the query.
    #[serde(default)]
    pub path: String,
    /// The raw query without `?` (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// The headers the rules name, lowercase, each with its value or None when the request
    /// has no such header. A header the rules name that is not listed here was not read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, Option<String>)>,
}

/// What a service's rules read of a request, beyond the client address and geography (those
/// travel as [`crate::policy::traffic::facts::RequestFacts`] already; `countries` conditions
/// turn on `Needs::geo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleNeeds {
    #[serde(default, skip_serializing_if = "is_false")]
    pub method: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub path: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub query: bool,
    /// Lowercase header names, sorted, each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

impl RuleNeeds {
    /// No rule reads anything of the request line.
    pub fn is_empty(&self) -> bool {
        !self.method && !self.path && !self.query && self.headers.is_empty()
    }

    /// Whether `line` is exactly what a Worker reading by these needs sends: a line only when
    /// they are not empty, the method only when named, a query only when named (an empty one
    /// cannot tell, so it does not count) and the named headers in order. The path is always
    /// sent with a line.
    pub fn read_as(&self, line: Option<&RequestLine>) -> bool {
        match line {
            None => self.is_empty(),
            Some(line) => {
                !self.is_empty()
                    && self.method != line.method.is_empty()
                    && self.query != line.query.is_empty()
                    && line.headers.iter().map(|(n, _)| n).eq(self.headers.iter())
            }
        }
    }

    /// Whether `line` carries everything these needs name (a header counts as read when it is
    /// listed, with or without a value). The object asks the Worker again when it does not.
    pub fn covered_by(&self, line: Option<&RequestLine>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(line) = line else {
            return false;
        };
        (!self.method || !line.method.is_empty())
            && (!self.path || !line.path.is_empty())
            && self
                .headers
                .iter()
                .all(|h| line.headers.iter().any(|(name, _)| name == h))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Header changes: `set` replaces (or adds) each header, `remove` deletes; names lowercase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderOps {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// What the rules did to a request that still goes to a backend (carried on the route).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleEffects {
    /// Names of the rules that applied, in order (`continue` rules included).
    pub matched: Vec<String>,
    /// The rule that ended the walk, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The pool the deciding rule chose (`pool`, or the split's choice); None: steering chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The rewritten path (no query), applied before the backend's base path; None: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

/// A request a rule answers itself (`respond` or `redirect`): no backend is contacted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleAnswer {
    /// The rule that answered.
    pub rule: String,
    /// Names of the rules that applied, in order.
    pub matched: Vec<String>,
    pub status: u16,
    /// `redirect`: the complete Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Response header actions of the rules that applied.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    /// What the request log keeps of the service's answers (its `logging`; absent: the defaults).
    #[serde(default, skip_serializing_if = "is_default_logging")]
    pub log: Logging,
}

/// A sample request for `POST /admin/services/{h}/rules/test`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Default `GET`.
    #[serde(default)]
    pub method: Option<String>,
    /// Path with optional query, starting with `/`.
    pub path: String,
    /// Request headers (names case-insensitive).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// ISO country code (two letters).
    #[serde(default)]
    pub country: Option<String>,
    /// Continent code (`AF AN AS EU NA OC SA`), as the edge reports it beside the country.
    #[serde(default)]
    pub continent: Option<String>,
    #[serde(default)]
    pub client_ip: Option<String>,
}

/// What the rules would do with a [`Sample`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Names of the rules that applied, in order.
    pub matched: Vec<String>,
    /// The rule that ended the walk, if one did.
    pub decided_by: Option<String>,
    pub action: ExplainedAction,
    /// The path and query the backend would get (before the backend's base path); empty when
    /// a rule answers the request itself.
    pub path: String,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// The routing outcome of an explanation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExplainedAction {
    /// No rule chose a pool: the service's own steering decides.
    Steering,
    Pool {
        pool: String,
    },
    /// Weighted pools, and the one this sample's client would get.
    Split {
        split: Vec<SplitShare>,
        chosen: String,
    },
    Redirect {
        status: u16,
        location: String,
    },
    Respond {
        status: u16,
        body: String,
        content_type: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitShare {
    pub pool: String,
    pub weight: u32,
}

impl Walk<'_> {
    /// The answer when the deciding rule answers itself (`respond`, `redirect`); None otherwise.
    pub fn answer(&self, line: &RequestLine) -> Option<RuleAnswer> {
        let (rule, action) = self.decided?;
        let (status, location, body, content_type) = match action {
            Action::Redirect {
                status,
                location: to,
                preserve_path,
            } => (*status, Some(location(to, *preserve_path, line)), "", None),
            Action::Respond {
                status,
                body,
                content_type,
            } => (*status, None, body.as_str(), content_type.clone()),
            _ => return None,
        };
        Some(RuleAnswer {
            log: Default::default(),
            rule: rule.to_string(),
            matched: self.matched.iter().map(ToString::to_string).collect(),
            status,
            location,
            body: body.to_string(),
            content_type,
            response_headers: self.response_headers.clone(),
        })
    }

    /// What the rules did to a request that goes to a backend, `pool` being the pool the
    /// deciding rule chose; None when no rule matched.
    pub fn effects(&self, pool: Option<String>) -> Option<RuleEffects> {
        if self.matched.is_empty() {
            return None;
        }
        Some(RuleEffects {
            matched: self.matched.iter().map(ToString::to_string).collect(),
            decided_by: self.decided.map(|(name, _)| name.to_string()),
            pool,
            path: self.path.clone(),
            request_headers: self.request_headers.clone(),
            response_headers: self.response_headers.clone(),
        })
    }
}

/// The key that keeps a client in one pool of a split: the affinity header's value under
/// header affinity, else the client's address (one spelling per address). None: no key, so
/// the pool is drawn at random.
pub fn split_key(
    cfg: &ServiceConfig,
    client_ip: Option<&str>,
    affinity_header: Option<&str>,
) -> Option<String> {
    let by_header = cfg
        .affinity()
        .is_some_and(|a| a.kind == AffinityKind::Header);
    match affinity_header {
        Some(value) if by_header && !value.is_empty() => Some(value.to_string()),
        _ => client_ip.map(canonical_ip).filter(|k| !k.is_empty()),
    }
}

/// What `cfg`'s rules would do with `sample`, by the same walk requests take. A split names
/// the pool this sample's client would get (keyed as in traffic; a sample without a client
/// address or affinity header gets a seeded weighted draw). Err: the sample itself is unusable
/// (the message names the field).
pub fn explain(cfg: &ServiceConfig, sample: &Sample) -> Result<Explanation, String> {
    // The sample's fields are read with the config's own types, so they are checked alike.
    let method = Method::try_from(sample.method.clone().unwrap_or_else(|| "GET".into()))
        .map_err(|e| format!("method: {e}"))?;
    let no_fragment = sample.path.split('#').next().unwrap_or_default();
    let (path, query) = no_fragment.split_once('?').unwrap_or((no_fragment, ""));
    if RulePath::try_from(path.to_string()).is_err() || query.bytes().any(|b| !b.is_ascii_graphic())
    {
        return Err(format!(
            "path: {:?} must start with / and be percent-encoded as a client sends it (no spaces)",
            sample.path
        ));
    }
    for (field, code) in [
        ("country", &sample.country),
        ("continent", &sample.continent),
    ] {
        if let Some(c) = code {
            RegionCode::try_from(c.clone()).map_err(|e| format!("{field}: {e}"))?;
        }
    }
    let ip: Option<IpAddr> = match &sample.client_ip {
        Some(raw) => Some(
            canonical_ip(raw)
                .parse()
                .map_err(|_| format!("client_ip: {raw:?} is not an IP address"))?,
        ),
        None => None,
    };
    let line = RequestLine {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: sample
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), Some(v.clone())))
            .collect(),
    };
    let set = RuleSet::new(cfg);
    let walk = set.evaluate(
        &line,
        Client {
            ip,
            country: sample.country.as_deref(),
            continent: sample.continent.as_deref(),
        },
    );
    let pool_name = |p: usize| {
        cfg.pools
            .get(p)
            .map(|p| p.name.to_string())
            .unwrap_or_default()
    };
    let action = match walk.action() {
        Action::Steering => ExplainedAction::Steering,
        Action::Pool(p) => ExplainedAction::Pool {
            pool: pool_name(*p),
        },
        Action::Split(split) => {
            let named: Vec<(String, u32)> = split.iter().map(|&(p, w)| (pool_name(p), w)).collect();
            let shares: Vec<(&str, u32)> = named.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            let header = cfg
                .affinity()
                .and_then(|a| a.header_name.as_ref())
                .and_then(|h| line.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(h)))
                .and_then(|(_, v)| v.as_deref());
            let chosen = match split_key(cfg, sample.client_ip.as_deref(), header) {
                Some(key) => split_by_key(&shares, &key),
                None => split_at_random(&shares, &mut SplitMix64(0)),
            };
            ExplainedAction::Split {
                chosen: chosen
                    .and_then(|k| named.get(k))
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default(),
                split: named
                    .into_iter()
                    .map(|(pool, weight)| SplitShare { pool, weight })
                    .collect(),
            }
        }
        Action::Redirect { status, .. } | Action::Respond { status, .. } => {
            match walk.answer(&line) {
                Some(RuleAnswer {
                    location: Some(location),
                    ..
                }) => ExplainedAction::Redirect {
                    status: *status,
                    location,
                },
                Some(a) => ExplainedAction::Respond {
                    status: a.status,
                    body: a.body,
                    content_type: a.content_type,
                },
                None => ExplainedAction::Steering,
            }
        }
    };
    let answered = matches!(
        action,
        ExplainedAction::Redirect { .. } | ExplainedAction::Respond { .. }
    );
    let mut backend_path = walk.path.clone().unwrap_or_else(|| line.path.clone());
    if !line.query.is_empty() {
        backend_path.push('?');
        backend_path.push_str(&line.query);
    }
    Ok(Explanation {
        matched: walk.matched.iter().map(ToString::to_string).collect(),
        decided_by: walk.decided.map(|(n, _)| n.to_string()),
        action,
        // An answered request reaches no backend: no path or request headers to show.
        path: if answered {
            String::new()
        } else {
            backend_path
        },
        request_headers: if answered {
            HeaderOps::default()
        } else {
            walk.request_headers.clone()
        },
        response_headers: walk.response_headers.clone(),
    })
}

#[cfg(test)]
mod tests;
