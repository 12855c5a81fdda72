//! One region's prober: what the hostname's object tells it to watch, each backend's hysteresis and schedule there, and the report it sends back.

use serde::{Deserialize, Serialize};

use crate::policy::control::config::{ActiveHealth, HeaderValue, Token};
use crate::policy::health::checks::{self, Health};
use crate::policy::health::regions::Region;
use crate::policy::rng::Rng;

/// The header every probe from a region's prober carries, naming the region.
pub const REGION_HEADER: &str = "X-FlowBalance-Probe-Region";

/// A probe due this soon is taken with the round being made now: an alarm may fire a little early.
const SLACK_MS: u64 = 25;

/// What the hostname's object sends a region's prober: the monitor to run and the backends to
/// probe (every backend that is not disabled).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub hostname: String,
    pub region: Region,
    pub monitor: ActiveHealth,
    pub backends: Vec<String>,
}

impl Setup {
    /// The monitor as this region runs it: the service's, plus the region header.
    pub fn region_monitor(&self) -> ActiveHealth {
        let mut m = self.monitor.clone();
        if let (Ok(name), Ok(value)) = (
            Token::try_from(REGION_HEADER.to_string()),
            HeaderValue::try_from(self.region.as_str().to_string()),
        ) {
            m.headers
                .retain(|k, _| !k.as_str().eq_ignore_ascii_case(REGION_HEADER));
            m.headers.insert(name, value);
        }
        m
    }
}

/// What one region last saw of one backend, as reported to the hostname's object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub url: String,
    /// The region's verdict after its own `consecutive_up` / `consecutive_down`.
    pub up: bool,
    /// The last probe's latency (ms).
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A region's report: every backend it has probed, each with its state and latency. The whole
/// view each time, so a lost report is made good by the next one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub region: Region,
    pub backends: Vec<Seen>,
}

/// One watched backend: its hysteresis in this region and when it is due.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watched {
    pub url: String,
    pub health: Health,
    /// The health path discovery settled on, if any.
    pub health_path: Option<String>,
    /// The last probe (None: never probed in this region).
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    /// In memory only: when the next probe is due; None: at once.
    #[serde(skip)]
    pub due_ms: Option<u64>,
}

/// A region's prober: the setup it runs and the backends it watches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionProber {
    pub setup: Setup,
    pub watched: Vec<Watched>,
    /// When the last report went out (memory only: a restarted prober reports after its first round).
    #[serde(skip)]
    pub reported_ms: Option<u64>,
}

impl RegionProber {
    pub fn new(setup: Setup) -> Self {
        let mut p = RegionProber {
            setup: setup.clone(),
            watched: Vec::new(),
            reported_ms: None,
        };
        p.configure(setup);
        p
    }

    /// Takes a new setup: backends kept keep their state, new ones are probed at once, and the
    /// next round reports (the object may have restarted and forgotten what was reported).
    pub fn configure(&mut self, setup: Setup) {
        let mut old = std::mem::take(&mut self.watched);
        self.watched = setup
            .backends
            .iter()
            .map(|url| match old.iter().position(|w| &w.url == url) {
                Some(i) => old.swap_remove(i),
                None => Watched {
                    url: url.clone(),
                    health: Health::new(),
                    health_path: None,
                    latency_ms: None,
                    error: None,
                    due_ms: None,
                },
            })
            .collect();
        self.setup = setup;
        self.reported_ms = None;
    }

    /// The backends to probe now (url, discovered path), each rescheduled one interval (±10%) ahead.
    pub fn take_due(&mut self, now_ms: u64, rng: &mut impl Rng) -> Vec<(String, Option<String>)> {
        let interval = self.setup.monitor.interval_ms;
        let mut due = Vec::new();
        for w in &mut self.watched {
            if w.due_ms.is_none_or(|at| at <= now_ms + SLACK_MS) {
                w.due_ms = Some(now_ms + checks::jitter_ms(interval, rng));
                due.push((w.url.clone(), w.health_path.clone()));
            }
        }
        due
    }

    /// Applies one probe result; true when the backend's state in this region flipped. A failing
    /// backend is probed again within [`checks::suspect_reprobe_ms`], so a real outage is confirmed
    /// (or cleared) in seconds.
    pub fn apply(
        &mut self,
        url: &str,
        ok: bool,
        latency_ms: u64,
        error: Option<String>,
        discovered_path: Option<String>,
        now_ms: u64,
    ) -> bool {
        let m = &self.setup.monitor;
        let (up, down, soon) = (
            m.consecutive_up,
            m.consecutive_down,
            now_ms + checks::suspect_reprobe_ms(m.interval_ms),
        );
        let Some(w) = self.watched.iter_mut().find(|w| w.url == url) else {
            return false;
        };
        w.health_path = discovered_path;
        w.latency_ms = Some(latency_ms);
        w.error = if ok { None } else { error };
        let flipped = w.health.observe(ok, up, down);
        if !w.health.healthy || w.health.consecutive_fail > 0 {
            w.due_ms = Some(w.due_ms.map_or(soon, |at| at.min(soon)));
        }
        flipped
    }

    /// The report to send now: at once after a flip, else once an interval; None when nothing is
    /// due or nothing was probed yet.
    pub fn report(&mut self, flipped: bool, now_ms: u64) -> Option<Report> {
        let interval = self.setup.monitor.interval_ms;
        let due = flipped
            || self
                .reported_ms
                .is_none_or(|at| at + interval <= now_ms + SLACK_MS);
        let backends: Vec<Seen> = self
            .watched
            .iter()
            .filter_map(|w| {
                Some(Seen {
                    url: w.url.clone(),
                    up: w.health.healthy,
                    latency_ms: w.latency_ms?,
                    error: w.error.clone(),
                })
            })
            .collect();
        if !due || backends.is_empty() {
            return None;
        }
        self.reported_ms = Some(now_ms);
        Some(Report {
            region: self.setup.region,
            backends,
        })
    }

    /// When the next probe is due (None: nothing to probe).
    pub fn next_due(&self, now_ms: u64) -> Option<u64> {
        self.watched
            .iter()
            .map(|w| w.due_ms.unwrap_or(now_ms))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rng::SplitMix64;

    fn setup(backends: &[&str]) -> Setup {
        let monitor = ActiveHealth {
            interval_ms: 10_000,
            consecutive_up: 2,
            consecutive_down: 2,
            ..ActiveHealth::default()
        };
        Setup {
            hostname: "api.example.com".into(),
            region: Region::Apac,
            monitor,
            backends: backends.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn probes_carry_the_region_header_replacing_any_configured_one() {
        let mut s = setup(&["http://a"]);
        s.monitor.headers.insert(
            Token::try_from("x-flowbalance-probe-region".to_string()).unwrap(),
            HeaderValue::try_from("forged".to_string()).unwrap(),
        );
        let m = s.region_monitor();
        let headers: Vec<(&str, &str)> = m
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(headers, vec![(REGION_HEADER, "apac")]);
    }

    #[test]
    fn a_region_flips_by_its_own_thresholds_and_reports_at_once() {
        let mut rng = SplitMix64(7);
        let mut p = RegionProber::new(setup(&["http://a", "http://b"]));
        // Never probed: both due at once; nothing to report before a probe.
        assert_eq!(p.report(false, 0), None);
        assert_eq!(p.take_due(0, &mut rng).len(), 2);
        assert!(p.take_due(1, &mut rng).is_empty());
        assert!(!p.apply("http://a", true, 12, None, Some("/health".into()), 5));
        assert!(!p.apply("http://b", false, 3, Some("500".into()), None, 5));
        // The first report goes at once and names only what is known.
        let r = p.report(false, 5).unwrap();
        assert_eq!(r.region, Region::Apac);
        assert_eq!(
            r.backends,
            vec![
                Seen {
                    url: "http://a".into(),
                    up: true,
                    latency_ms: 12,
                    error: None
                },
                Seen {
                    url: "http://b".into(),
                    up: true,
                    latency_ms: 3,
                    error: Some("500".into())
                },
            ]
        );
        // The failing backend is due again within 2 s; the other keeps its interval.
        assert_eq!(p.next_due(5), Some(2005));
        assert_eq!(
            p.take_due(2005, &mut rng),
            vec![("http://b".to_string(), None)]
        );
        // Nothing flipped and an interval has not passed: no report.
        assert_eq!(p.report(false, 2005), None);
        // The second failure flips it down (consecutive_down 2): reported at once.
        assert!(p.apply("http://b", false, 3, Some("500".into()), None, 2005));
        let r = p.report(true, 2005).unwrap();
        assert!(!r.backends[1].up);
        // Recovery takes consecutive_up good probes.
        assert!(!p.apply("http://b", true, 4, None, None, 4000));
        assert!(p.apply("http://b", true, 4, None, None, 6000));
        // Unchanged, it reports once an interval.
        assert_eq!(p.report(false, 9000), None);
        assert!(p
            .report(false, 12_005)
            .unwrap()
            .backends
            .iter()
            .all(|s| s.up));
    }

    #[test]
    fn a_new_setup_keeps_known_backends_and_probes_new_ones_at_once() {
        let mut rng = SplitMix64(1);
        let mut p = RegionProber::new(setup(&["http://a", "http://b"]));
        p.take_due(0, &mut rng);
        p.apply("http://a", false, 1, None, None, 0);
        p.apply("http://a", false, 1, None, None, 1);
        assert!(!p.watched[0].health.healthy);
        p.report(true, 1);
        p.configure(setup(&["http://a", "http://c"]));
        let urls: Vec<&str> = p.watched.iter().map(|w| w.url.as_str()).collect();
        assert_eq!(urls, vec!["http://a", "http://c"]);
        assert!(
            !p.watched[0].health.healthy,
            "a's state in this region is kept"
        );
        assert_eq!(
            p.take_due(2, &mut rng),
            vec![("http://c".to_string(), None)]
        );
        // A new setup reports at the next round even without a flip.
        assert!(p.report(false, 3).is_some());
        // A result for a backend no longer watched is dropped.
        assert!(!p.apply("http://b", false, 1, None, None, 3));
    }
}
