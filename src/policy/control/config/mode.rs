//! Where a service's decisions are made in effect: `decisions.mode` with `auto` resolved, and why.

use super::*;

/// A feature that needs every request at the hostname's object, so it rules out lease mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectNeed {
    /// `rate_limit`: exact per-client counts.
    RateLimit,
    /// `load_balancer.endpoint_steering` that counts requests in flight
    /// (see [`EndpointSteering::counts_outstanding`]).
    Steering(EndpointSteering),
}

impl ObjectNeed {
    /// What an operator would name it: the field, and its value when that is what matters.
    pub fn name(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::Steering(EndpointSteering::LeastOutstandingRequests) => {
                "endpoint_steering \"least_outstanding_requests\""
            }
            Self::Steering(EndpointSteering::Latency) => "endpoint_steering \"latency\"",
            Self::Steering(_) => "endpoint_steering",
        }
    }
}

/// Where decisions are made in effect (`decisions.mode` with `auto` resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectiveMode {
    PerRequest,
    Lease,
}

impl ServiceConfig {
    /// The features this service uses that need every request at the object, in config order.
    pub fn object_needs(&self) -> impl Iterator<Item = ObjectNeed> + '_ {
        let steering = self.load_balancer.endpoint_steering;
        [
            self.rate_limit.as_ref().map(|_| ObjectNeed::RateLimit),
            steering
                .counts_outstanding()
                .then_some(ObjectNeed::Steering(steering)),
        ]
        .into_iter()
        .flatten()
    }

    /// The mode the service runs in: an explicit mode as set; `auto` is lease unless a feature
    /// needs every request at the object. Cheap (no allocation): asked on every decision.
    pub fn effective_mode(&self) -> EffectiveMode {
        match self.decisions.mode {
            DecisionMode::PerRequest => EffectiveMode::PerRequest,
            DecisionMode::Lease => EffectiveMode::Lease,
            DecisionMode::Auto if self.object_needs().next().is_some() => EffectiveMode::PerRequest,
            DecisionMode::Auto => EffectiveMode::Lease,
        }
    }

    /// Why [`Self::effective_mode`] is what it is, in words for the status view and console.
    pub fn effective_mode_why(&self) -> String {
        match self.decisions.mode {
            DecisionMode::PerRequest => "decisions.mode is \"per_request\"".into(),
            DecisionMode::Lease => "decisions.mode is \"lease\"".into(),
            DecisionMode::Auto => {
                let needs: Vec<&str> = self.object_needs().map(ObjectNeed::name).collect();
                match needs.as_slice() {
                    [] => "no feature needs every request at the object".into(),
                    [one] => format!("{one} needs every request at the object"),
                    many => format!("{} need every request at the object", many.join(" and ")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(extra: &str) -> ServiceConfig {
        let text = format!(r#"{{"hostname": "a.com", "backends": ["http://x"]{extra}}}"#);
        match parse_default_backends(&text, &Deployment::default()) {
            Ok(mut s) if s.len() == 1 => s.remove(0),
            other => panic!("{text}: {other:?}"),
        }
    }

    fn mode(extra: &str) -> (EffectiveMode, String) {
        let s = service(extra);
        (s.effective_mode(), s.effective_mode_why())
    }

    #[test]
    fn auto_is_the_default_and_leases_when_nothing_needs_the_object() {
        assert_eq!(service("").decisions.mode, DecisionMode::Auto);
        let why = "no feature needs every request at the object".to_string();
        assert_eq!(mode(""), (EffectiveMode::Lease, why.clone()));
        for steering in ["round_robin", "hash"] {
            let extra = format!(r#", "load_balancer": {{"endpoint_steering": "{steering}"}}"#);
            assert_eq!(
                mode(&extra),
                (EffectiveMode::Lease, why.clone()),
                "{steering}"
            );
        }
    }

    #[test]
    fn auto_runs_per_request_for_each_feature_that_needs_every_request() {
        let cases = [
            (
                r#", "rate_limit": {"requests": 5, "window": 1}"#,
                "rate_limit needs every request at the object",
            ),
            (
                r#", "load_balancer": {"endpoint_steering": "least_outstanding_requests"}"#,
                "endpoint_steering \"least_outstanding_requests\" needs every request at the object",
            ),
            (
                r#", "load_balancer": {"endpoint_steering": "latency"}"#,
                "endpoint_steering \"latency\" needs every request at the object",
            ),
            (
                r#", "rate_limit": {"requests": 5, "window": 1}, "load_balancer": {"endpoint_steering": "latency"}"#,
                "rate_limit and endpoint_steering \"latency\" need every request at the object",
            ),
        ];
        for (extra, why) in cases {
            assert_eq!(
                mode(extra),
                (EffectiveMode::PerRequest, why.to_string()),
                "{extra}"
            );
        }
    }

    #[test]
    fn an_explicit_mode_is_kept_and_says_so() {
        assert_eq!(
            mode(r#", "decisions": {"mode": "per_request"}"#),
            (
                EffectiveMode::PerRequest,
                "decisions.mode is \"per_request\"".into()
            )
        );
        assert_eq!(
            mode(r#", "decisions": {"mode": "lease"}"#),
            (EffectiveMode::Lease, "decisions.mode is \"lease\"".into())
        );
        // Explicit per_request with nothing that needs it still runs per request.
        assert_eq!(
            service(r#", "decisions": {"mode": "per_request"}"#).effective_mode(),
            EffectiveMode::PerRequest
        );
    }

    #[test]
    fn the_effective_mode_is_always_one_validation_accepts_as_explicit() {
        // Auto never picks lease for a config that explicit lease would refuse.
        for extra in [
            "",
            r#", "rate_limit": {"requests": 5, "window": 1}"#,
            r#", "load_balancer": {"endpoint_steering": "least_outstanding_requests"}"#,
            r#", "load_balancer": {"endpoint_steering": "latency"}"#,
            r#", "load_balancer": {"endpoint_steering": "hash"}"#,
        ] {
            let explicit = match service(extra).effective_mode() {
                EffectiveMode::Lease => "lease",
                EffectiveMode::PerRequest => "per_request",
            };
            let text = format!(
                r#"{{"hostname": "a.com", "backends": ["http://x"], "decisions": {{"mode": "{explicit}"}}{extra}}}"#
            );
            assert!(
                parse_default_backends(&text, &Deployment::default()).is_ok(),
                "{text}"
            );
        }
    }
}
