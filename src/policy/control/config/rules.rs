//! The `rules` block: traffic rules as the config types them (conditions, actions, their limits) and the cross-field checks each rule must pass.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::values::{check_header_value, check_name, check_token, describe, int, string_newtype};
use super::*;
use crate::policy::access::lists::Cidr;
use crate::policy::traffic::forwarding::{HOP_BY_HOP, LOOP_GUARD_HEADER};

/// Rules per service.
pub const MAX_RULES: usize = 100;
/// The longest `respond.body`, in bytes.
pub const MAX_RESPOND_BODY: usize = 4096;
/// The longest `path_regex`, in bytes of pattern.
pub const MAX_REGEX_LEN: usize = 512;
/// The most memory one compiled `path_regex` may take (regex-lite's `size_limit`): a pattern
/// such as `(a{100}){100}` is refused at config time instead of growing per request.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// How deeply a `path_regex` may nest groups and repetitions.
const REGEX_NEST_LIMIT: u32 = 32;
/// `redirect.status` when none is given.
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;
/// The content type of a `respond` body when the rule names none.
pub const DEFAULT_RESPOND_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Statuses whose responses carry no body (RFC 9110): a `respond` with one of them has none.
const BODILESS: [u16; 3] = [204, 205, 304];

string_newtype!(
    RuleName,
    check_rule_name,
    schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"})
);
string_newtype!(
    RulePath,
    check_rule_path,
    schemars::json_schema!({"type": "string", "pattern": "^/[!-~]*$", "maxLength": 1024, "description": "a path as the client sends it (percent-encoded), starting with /; no query"})
);
string_newtype!(
    Method,
    check_method,
    schemars::json_schema!({"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$", "description": "HTTP method (upper-cased)"})
);
string_newtype!(
    RedirectLocation,
    check_location,
    schemars::json_schema!({"type": "string", "maxLength": 2048, "pattern": "^([hH][tT][tT][pP][sS]?://[!-~]+|/([!-.0-~][!-~]*)?)$", "description": "an absolute http(s) URL, or a path on this hostname"})
);
string_newtype!(
    ResponseBody,
    check_body,
    schemars::json_schema!({"type": "string", "maxLength": MAX_RESPOND_BODY})
);
string_newtype!(
    ContentType,
    check_header_value,
    schemars::json_schema!({"type": "string", "maxLength": 1024, "pattern": "^[\\t -~]*$"})
);

fn check_rule_name(s: &str) -> Result<String, String> {
    check_name(s, "rule")
}

fn check_rule_path(s: &str) -> Result<String, String> {
    if s.starts_with('/')
        && s.len() <= 1024
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a path: start with '/', at most 1024 characters, no spaces, query or fragment (percent-encode other characters)"
        ))
    }
}

fn check_method(s: &str) -> Result<String, String> {
    match check_token(s) {
        Ok(m) if m.len() <= 32 => Ok(m.to_ascii_uppercase()),
        _ => Err(format!("{s:?} is not an HTTP method")),
    }
}

fn check_location(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let absolute = ["https://", "http://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len());
    // `//host/...` would be another host to a browser: that takes an absolute URL.
    let path = s.starts_with('/') && !s.starts_with("//");
    if (absolute || path) && s.len() <= 2048 && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a redirect location: an absolute http(s) URL or a path starting with a single '/', at most 2048 characters, no spaces (percent-encode them)"
        ))
    }
}

fn check_body(s: &str) -> Result<String, String> {
    if s.len() <= MAX_RESPOND_BODY {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{} bytes; a rule's response body may hold at most {MAX_RESPOND_BODY} bytes (4 KiB)",
            s.len()
        ))
    }
}

/// A `path_regex`: its text, compiled once when the config is read (regex-lite: no
/// backtracking, so matching time grows with the path's length only, and a size limit).
#[derive(Clone)]
pub struct PathRegex {
    source: String,
    compiled: regex_lite::Regex,
}

impl PathRegex {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() > MAX_REGEX_LEN {
            return Err(format!(
                "{} bytes; a path_regex may be at most {MAX_REGEX_LEN} bytes",
                s.len()
            ));
        }
        regex_lite::RegexBuilder::new(s)
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map(|compiled| PathRegex {
                source: s.to_string(),
                compiled,
            })
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("exceeds size limit") || text.contains("size limit") {
                    format!("{s:?} is too large once compiled (limit {REGEX_SIZE_LIMIT} bytes): use fewer or smaller counted repetitions")
                } else {
                    format!("{s:?} is not a valid regular expression: {text}")
                }
            })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.compiled.is_match(path)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathRegex({:?})", self.source)
    }
}

impl Serialize for PathRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for PathRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => PathRegex::parse(s).map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "expected a regular expression string, found {}",
                describe(other)
            ))),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl schemars::JsonSchema for PathRegex {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PathRegex".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "maxLength": MAX_REGEX_LEN, "description": "regular expression (regex-lite syntax, unanchored: use ^ and $) matched against the path as sent"})
    }
}

/// One traffic rule: when every condition of `when` holds, `then` applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within the service; names the rule in metrics, logs and the live tail.
    pub name: RuleName,
    /// Conditions, all of which must hold (none: the rule always matches).
    #[serde(default, skip_serializing_if = "When::is_empty")]
    pub when: When,
    pub then: Then,
}

/// A rule's conditions: every one given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct When {
    /// The path equals this (as sent, percent-encoded; no query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<RulePath>,
    /// The path starts with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<RulePath>,
    /// The path matches this regular expression (unanchored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<PathRegex>,
    /// The method is one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Header name (case-insensitive) → exact value, or `"*"`: present with any value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<Token, HeaderValue>,
    /// Query parameter (decoded) → exact value (decoded), or `"*"`: present.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// The client's country (ISO code) or continent (`AF AN AS EU NA OC SA`) is one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<RegionCode>,
    /// The client's address is in one of these networks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_ips: Vec<Cidr>,
    /// Conditions that must not all hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<When>>,
}

impl When {
    /// No condition: always holds.
    pub fn is_empty(&self) -> bool {
        self == &When::default()
    }
}

/// What a matching rule does. At most one routing action (`pool`, `split`, `redirect`,
/// `respond`); `rewrite` and header actions may come with `pool`, `split` or none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Then {
    /// Send the request to this pool, bypassing pool steering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolName>,
    /// Weighted pools; sticky per client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Vec<SplitTo>>,
    /// Answer with a redirect; no backend is contacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Answer with this response; no backend is contacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub respond: Option<Respond>,
    /// Change the path the backend gets (before its base path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Headers set on or removed from the request the backend gets.
    #[serde(skip_serializing_if = "HeaderActions::is_empty")]
    pub request_headers: HeaderActions,
    /// Headers set on or removed from the response the client gets.
    #[serde(skip_serializing_if = "HeaderActions::is_empty")]
    pub response_headers: HeaderActions,
    /// Go on to the next rules (only with header actions): their header actions add up.
    #[serde(skip_serializing_if = "is_false")]
    pub r#continue: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Then {
    /// The routing actions this `then` holds, by key.
    pub fn routing(&self) -> Vec<&'static str> {
        [
            ("pool", self.pool.is_some()),
            ("split", self.split.is_some()),
            ("redirect", self.redirect.is_some()),
            ("respond", self.respond.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// One pool of a split and its share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SplitTo {
    pub pool: PoolName,
    /// Relative share, 0-1000 (0: no new clients).
    #[serde(deserialize_with = "int::<0, 1000, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 0, max = 1000)))]
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub location: RedirectLocation,
    /// 301, 302, 303, 307 or 308.
    #[serde(
        default = "default_redirect_status",
        deserialize_with = "redirect_status"
    )]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(extend("enum" = [301, 302, 303, 307, 308]))
    )]
    pub status: u16,
    /// Append the request's path and query to `location`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub preserve_path: bool,
}

fn default_redirect_status() -> u16 {
    DEFAULT_REDIRECT_STATUS
}

fn redirect_status<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = Value::deserialize(d)?;
    match v.as_u64() {
        Some(n @ (301 | 302 | 303 | 307 | 308)) => Ok(n as u16),
        _ => Err(de::Error::custom(format!(
            "expected a redirect status (301, 302, 303, 307 or 308), found {}",
            describe(&v)
        ))),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Respond {
    #[serde(deserialize_with = "int::<200, 599, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 200, max = 599)))]
    pub status: u16,
    /// At most 4 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<ResponseBody>,
    /// Default `text/plain; charset=utf-8` when there is a body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<ContentType>,
}

/// `strip_prefix` and/or `add_prefix` (stripped first), or `replace_path` alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Rewrite {
    /// Removed from the start of the path when the path is it or continues with `/` after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<RulePath>,
    /// Put in front of the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_prefix: Option<RulePath>,
    /// The whole path (the query is kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_path: Option<RulePath>,
}

/// Headers to set (replacing any the message has) and to remove; names case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct HeaderActions {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<Token, HeaderValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Token>,
}

impl HeaderActions {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// Why a header may not be touched by a rule, if it may not.
fn untouchable(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if HOP_BY_HOP.contains(&lower.as_str()) {
        Some("is a hop-by-hop header: it belongs to one connection, and the runtime manages it")
    } else if lower == "host" {
        Some("is set from the backend's URL; FlowBalance passes the client's in X-Forwarded-Host")
    } else if lower == "content-length" {
        Some("frames the body; the runtime sets it")
    } else if lower == LOOP_GUARD_HEADER {
        Some("is FlowBalance's loop guard: it stops a request that comes back to the balancer")
    } else {
        None
    }
}

/// The rules' cross-field checks, each at its path: names, pools, actions that cannot go
/// together, headers that cannot be touched.
pub(super) fn validate_rules(cfg: &ServiceConfig) -> Vec<Issue> {
    let mut errs = Vec::new();
    if cfg.rules.len() > MAX_RULES {
        errs.push((
            vec![key("rules")],
            format!(
                "{} rules; at most {MAX_RULES} are allowed per service",
                cfg.rules.len()
            ),
            None,
        ));
    }
    let pools: Vec<&str> = cfg.pools.iter().map(|p| p.name.as_str()).collect();
    let unknown_pool = |name: &PoolName| -> Option<String> {
        if pools.contains(&name.as_str()) {
            None
        } else if pools.is_empty() {
            Some(format!(
                "unknown pool {:?}: the service has no pools (add them under pools)",
                name.as_str()
            ))
        } else {
            Some(format!(
                "unknown pool {:?}; pools: {}",
                name.as_str(),
                pools.join(", ")
            ))
        }
    };
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, rule) in cfg.rules.iter().enumerate() {
        let rp = vec![key("rules"), Seg::Index(i)];
        if let Some(first) = names.insert(rule.name.as_str(), i) {
            errs.push((
                extend(&rp, key("name")),
                format!(
                    "duplicate rule name {:?} (same as {SAME})",
                    rule.name.as_str()
                ),
                Some(vec![key("rules"), Seg::Index(first), key("name")]),
            ));
            names.insert(rule.name.as_str(), first);
        }
        validate_when(&rule.when, &extend(&rp, key("when")), &mut errs);
        let tp = extend(&rp, key("then"));
        let then = &rule.then;
        let routing = then.routing();
        if routing.len() > 1 {
            errs.push((
                tp.clone(),
                format!(
                    "holds {}: a rule takes at most one of pool, split, redirect, respond",
                    routing.join(" and ")
                ),
                None,
            ));
        }
        if let Some(p) = &then.pool {
            if let Some(m) = unknown_pool(p) {
                errs.push((extend(&tp, key("pool")), m, None));
            }
        }
        if let Some(split) = &then.split {
            let sp = extend(&tp, key("split"));
            if split.is_empty() {
                errs.push((sp.clone(), "at least one pool".into(), None));
            } else if split.iter().all(|s| s.weight == 0) {
                errs.push((
                    sp.clone(),
                    "every weight is 0: at least one pool must take clients".into(),
                    None,
                ));
            }
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (k, s) in split.iter().enumerate() {
                let pp = extend(&extend(&sp, Seg::Index(k)), key("pool"));
                if let Some(m) = unknown_pool(&s.pool) {
                    errs.push((pp.clone(), m, None));
                }
                if let Some(first) = seen.insert(s.pool.as_str(), k) {
                    errs.push((
                        pp,
                        format!(
                            "pool {:?} is in this split twice (same as {SAME})",
                            s.pool.as_str()
                        ),
                        Some(extend(&extend(&sp, Seg::Index(first)), key("pool"))),
                    ));
                }
            }
        }
        let answers = then.redirect.is_some() || then.respond.is_some();
        if answers {
            for (k, set) in [
                ("rewrite", then.rewrite.is_some()),
                ("request_headers", !then.request_headers.is_empty()),
            ] {
                if set {
                    errs.push((
                        extend(&tp, key(k)),
                        "has no effect: this rule answers the request itself (redirect or respond), so no request goes to a backend".into(),
                        None,
                    ));
                }
            }
        }
        if let Some(r) = &then.redirect {
            if r.preserve_path && r.location.contains(['?', '#']) {
                errs.push((
                    extend(&extend(&tp, key("redirect")), key("location")),
                    "has a query or fragment, so the request's path cannot be appended (preserve_path); drop one of them".into(),
                    None,
                ));
            }
        }
        if let Some(r) = &then.respond {
            if BODILESS.contains(&r.status) && r.body.as_ref().is_some_and(|b| !b.is_empty()) {
                errs.push((
                    extend(&extend(&tp, key("respond")), key("body")),
                    format!("a {} response has no body", r.status),
                    None,
                ));
            }
        }
        if let Some(rw) = &then.rewrite {
            let wp = extend(&tp, key("rewrite"));
            if rw == &Rewrite::default() {
                errs.push((
                    wp,
                    "needs strip_prefix, add_prefix or replace_path".into(),
                    None,
                ));
            } else if rw.replace_path.is_some()
                && (rw.strip_prefix.is_some() || rw.add_prefix.is_some())
            {
                errs.push((
                    extend(&wp, key("replace_path")),
                    "replaces the whole path: it cannot go with strip_prefix or add_prefix".into(),
                    None,
                ));
            }
        }
        if then.r#continue {
            let others: Vec<&str> = routing
                .iter()
                .copied()
                .chain(then.rewrite.is_some().then_some("rewrite"))
                .collect();
            if !others.is_empty() {
                errs.push((
                    extend(&tp, key("continue")),
                    format!(
                        "only a rule whose then holds nothing but request_headers and response_headers may continue; this one has {}",
                        others.join(" and ")
                    ),
                    None,
                ));
            }
        }
        for k in ["request_headers", "response_headers"] {
            let actions = if k == "request_headers" {
                &then.request_headers
            } else {
                &then.response_headers
            };
            validate_header_actions(actions, &extend(&tp, key(k)), &mut errs);
        }
    }
    errs
}

fn validate_when(when: &When, wp: &[Seg], errs: &mut Vec<Issue>) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for name in when.headers.keys() {
        if let Some(first) = seen.insert(name.to_ascii_lowercase(), name) {
            errs.push((
                extend(&extend(wp, key("headers")), key(name)),
                format!("{name:?} repeats {first:?} (header names are case-insensitive)"),
                None,
            ));
        }
    }
    if when.query.keys().any(String::is_empty) {
        errs.push((
            extend(&extend(wp, key("query")), key("")),
            "a query parameter needs a name".into(),
            None,
        ));
    }
    if let Some(not) = &when.not {
        let np = extend(wp, key("not"));
        if not.is_empty() {
            errs.push((
                np.clone(),
                "holds no condition, so it would never let the rule match".into(),
                None,
            ));
        }
        validate_when(not, &np, errs);
    }
}

fn validate_header_actions(actions: &HeaderActions, hp: &[Seg], errs: &mut Vec<Issue>) {
    let mut seen: HashMap<String, Vec<Seg>> = HashMap::new();
    let names = actions
        .set
        .keys()
        .map(|n| (n, extend(&extend(hp, key("set")), key(n))))
        .chain(
            actions
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| (n, extend(&extend(hp, key("remove")), Seg::Index(i)))),
        );
    for (name, at) in names {
        if let Some(why) = untouchable(name) {
            errs.push((
                at.clone(),
                format!(
                    "{:?} cannot be set or removed by a rule: it {why}",
                    name.as_str()
                ),
                None,
            ));
        }
        if let Some(first) = seen.insert(name.to_ascii_lowercase(), at.clone()) {
            errs.push((
                at,
                format!(
                    "{:?} is named twice (same as {SAME}; header names are case-insensitive)",
                    name.as_str()
                ),
                Some(first),
            ));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
