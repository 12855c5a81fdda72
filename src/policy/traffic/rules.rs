//! Traffic rules: an ordered list per service that matches requests and routes, splits, rewrites, redirects or answers them; pure, run by the object and by a Worker under a lease alike.
//!
//! The interface types below are what the platform reads and carries between the Worker and
//! the object. The config types live in `control/config/rules.rs`.

use serde::{Deserialize, Serialize};

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
    /// ISO country code (two letters); its continent is derived.
    #[serde(default)]
    pub country: Option<String>,
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
    /// The path and query the backend would get (before the backend's base path).
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

/// What `cfg`'s rules would do with `sample`. Err: the sample itself is unusable (the message
/// names the field).
// SKELETON: the rules helper replaces this body with the real evaluation.
pub fn explain(
    cfg: &crate::policy::control::config::ServiceConfig,
    sample: &Sample,
) -> Result<Explanation, String> {
    let _ = cfg;
    if !sample.path.starts_with('/') {
        return Err(format!("path: {:?} must start with /", sample.path));
    }
    Ok(Explanation {
        matched: Vec::new(),
        decided_by: None,
        action: ExplainedAction::Steering,
        path: sample.path.clone(),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    })
}
