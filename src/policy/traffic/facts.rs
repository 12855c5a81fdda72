//! What the decision reads of one client request, and which of it a service's config needs read.

use crate::policy::control::config::{AffinityKind, PoolSteering, ServiceConfig};
use std::rc::Rc;

use crate::policy::traffic::rules::{needs_of, RequestLine, RuleNeeds};

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
    /// What the service's rules read of the request (None: the service has no rules, or they
    /// read nothing of it).
    pub line: Option<RequestLine>,
}

/// The request facts a service's decisions need beyond those always read, because reading
/// them costs: which header keys header affinity, whether geo steering or a rule needs the
/// client's geography (`request.cf`), and what the rules read of the request line. Both the object (it tells the Worker in each route) and a Worker
/// deciding under a lease read it from here.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Needs {
    /// The request header whose value keys the client (`session_affinity.type: header` only).
    pub affinity_header: Option<String>,
    /// The service steers (or its rules match) by the client's country or continent.
    pub geo: bool,
    /// What the service's rules read of the request line and headers (shared: every request
    /// and route carries it, and a copy per request would cost allocations).
    pub rules: Rc<RuleNeeds>,
}

impl Needs {
    /// Walks the config (rules included): the Fleet computes this once per config.
    pub fn of(cfg: &ServiceConfig) -> Self {
        let (rules, rules_geo) = needs_of(&cfg.rules);
        Needs {
            affinity_header: cfg
                .affinity()
                .filter(|a| a.kind == AffinityKind::Header)
                .and_then(|a| a.header_name.as_ref().map(ToString::to_string)),
            // Dynamic steering reads the client's region from its country and continent.
            geo: cfg.geo.is_some()
                || rules_geo
                || cfg.load_balancer.steering == PoolSteering::Dynamic,
            rules: Rc::new(rules),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::control::config::{parse_service, Deployment};
    use serde_json::json;

    fn needs(extra: serde_json::Value) -> Needs {
        let mut v = json!({"hostname": "svc.test", "backends": ["http://a", "http://b"]});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Needs::of(&parse_service(&v, "", &Deployment::default()).unwrap())
    }

    #[test]
    fn only_header_affinity_reads_its_header_and_only_geo_steering_reads_geography() {
        assert_eq!(needs(json!({})), Needs::default());
        let affinity = |kind: &str| json!({"load_balancer": {"session_affinity": {"type": kind, "header_name": "X-User"}}});
        assert_eq!(
            needs(affinity("header")).affinity_header.as_deref(),
            Some("X-User")
        );
        assert_eq!(needs(affinity("cookie")), Needs::default());
        assert_eq!(needs(affinity("ip_cookie")), Needs::default());
        let geo = needs(json!({
            "backends": [],
            "pools": [{"name": "eu", "backends": ["http://a"]}, {"name": "us", "backends": ["http://b"]}],
            "geo_steering": {"regions": {"EU": "eu"}, "fallback_pool": "us"}
        }));
        assert_eq!((geo.affinity_header, geo.geo), (None, true));
    }
}
