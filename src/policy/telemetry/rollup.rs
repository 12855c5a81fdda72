//! Traffic rollups of one hostname: what its object adds up per minute and per hour from reported outcomes, answer tallies and sampled successes, and which of those rows are still to be written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::telemetry::answers::{Answered, Source};
use crate::policy::telemetry::metrics::{bucket_of, BUCKETS_MS};
use crate::policy::telemetry::record::LogRow;
use crate::policy::traffic::decision::Outcome;

pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 3_600_000;
/// The row of the hostname as its clients saw it (what they were answered, and by whom); every
/// other row is one backend's attempts.
pub const HOST_ROW: &str = "";
/// Closed minutes held while D1 cannot take them. Older ones are dropped from the minute table
/// (counted), but their counts stay in their hour's row, which is held until written.
pub const MAX_PENDING_MINUTES: usize = 60;
/// Hours held while D1 cannot take them (bounded like the minutes: the state is stored whole).
pub const MAX_PENDING_HOURS: usize = 48;
/// Only the newest closed minutes keep their samples while D1 is away (samples are the first
/// thing to go; counts are kept).
const SAMPLED_PENDING_MINUTES: usize = 5;

/// One row's counts: a backend's attempts, or the hostname's answers ([`HOST_ROW`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub requests: u64,
    pub c2xx: u64,
    pub c3xx: u64,
    pub c4xx: u64,
    pub c5xx: u64,
    /// Attempts that got no HTTP answer (connection error, timeout).
    pub cerr: u64,
    /// Answered by FlowBalance itself: 429 (rate limit), 403 (access lists), 502/503 (no backend).
    pub rate_limited: u64,
    pub denied: u64,
    pub no_backend: u64,
    /// Attempts that were a retry of an earlier one, and those of them that answered.
    pub retried: u64,
    pub failed_over: u64,
    pub latency_sum_ms: u64,
    /// Counts per [`BUCKETS_MS`] bucket then +Inf (empty until a latency is recorded).
    pub hist: Vec<u64>,
}

impl Tally {
    fn count_status(&mut self, status: Option<u16>, n: u64) {
        self.requests += n;
        match status {
            Some(200..=299) => self.c2xx += n,
            Some(300..=399) => self.c3xx += n,
            Some(400..=499) => self.c4xx += n,
            Some(500..=599) => self.c5xx += n,
            // 1xx (a WebSocket's 101) counts as answered, not as an error.
            Some(_) => self.c2xx += n,
            None => self.cerr += n,
        }
    }

    fn count_latency(&mut self, latency_ms: u64, n: u64) {
        if self.hist.len() != BUCKETS_MS.len() + 1 {
            self.hist.resize(BUCKETS_MS.len() + 1, 0);
        }
        self.hist[bucket_of(latency_ms)] += n;
        self.latency_sum_ms += latency_ms * n;
    }

    fn add(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.c2xx += o.c2xx;
        self.c3xx += o.c3xx;
        self.c4xx += o.c4xx;
        self.c5xx += o.c5xx;
        self.cerr += o.cerr;
        self.rate_limited += o.rate_limited;
        self.denied += o.denied;
        self.no_backend += o.no_backend;
        self.retried += o.retried;
        self.failed_over += o.failed_over;
        self.latency_sum_ms += o.latency_sum_ms;
        if self.hist.len() < o.hist.len() {
            self.hist.resize(o.hist.len(), 0);
        }
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
    }
}

/// One minute or hour: its start, its rows by backend, and (minutes only) its sampled successes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Period {
    pub t_ms: u64,
    pub rows: BTreeMap<String, Tally>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<LogRow>,
}

/// The hostname's rollups not yet written: the open minute, closed minutes, and the hours they
/// belong to. Stored with the object's counters, so a restart loses no written-to-be minute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    #[serde(default)]
    pub open: Option<Period>,
    #[serde(default)]
    pub closed: Vec<Period>,
    /// Hour totals of closed minutes; written with every batch (each is the hour's whole value,
    /// so a repeated write changes nothing), forgotten once written after their hour ended.
    #[serde(default)]
    pub hours: Vec<Period>,
    /// Closed minutes dropped because D1 did not take them in time.
    #[serde(default)]
    pub dropped_minutes: u64,
}

/// What one write carries: the closed minutes (the first `minutes` of them) and the hours.
#[derive(Debug, PartialEq)]
pub struct Batch<'a> {
    pub minutes: &'a [Period],
    pub hours: &'a [Period],
}

impl Rollup {
    /// The open minute at `now`, closing the one before if its minute has passed.
    fn minute(&mut self, now: u64) -> &mut Period {
        self.roll(now);
        self.open.get_or_insert_with(|| Period {
            t_ms: now - now % MINUTE_MS,
            ..Default::default()
        })
    }

    fn row(&mut self, now: u64, backend: &str) -> &mut Tally {
        self.minute(now)
            .rows
            .entry(backend.to_string())
            .or_default()
    }

    /// Counts one reported attempt (or a batch of `count` successes) against its backend.
    pub fn record_outcome(&mut self, now: u64, o: &Outcome) {
        let n = u64::from(o.count.max(1));
        let t = self.row(now, &o.url);
        t.count_status(o.status, n);
        t.count_latency(o.latency_ms, n);
        if o.retry {
            t.retried += n;
            if o.failure.is_none() {
                t.failed_over += n;
            }
        }
    }

    /// Counts what the hostname's clients were answered.
    pub fn record_answered(&mut self, now: u64, list: &[Answered]) {
        if list.is_empty() {
            return;
        }
        let t = self.row(now, HOST_ROW);
        for a in list {
            let n = u64::from(a.count);
            t.count_status(Some(a.code), n);
            if a.source == Source::Flowbalance {
                match a.code {
                    429 => t.rate_limited += n,
                    403 => t.denied += n,
                    502 | 503 => t.no_backend += n,
                    _ => {}
                }
            }
        }
    }

    /// Keeps a sampled success in the open minute unless `cap` are kept already; false when dropped.
    pub fn record_sample(&mut self, now: u64, row: LogRow, cap: usize) -> bool {
        let m = self.minute(now);
        // The samples live in the hostname's row, which exists even before its first answer tally.
        m.rows.entry(HOST_ROW.to_string()).or_default();
        if m.samples.len() >= cap {
            return false;
        }
        m.samples.push(row);
        true
    }

    /// Closes the open minute once `now` is past it: it joins the closed minutes and its hour.
    pub fn roll(&mut self, now: u64) {
        let Some(open) = self.open.as_ref() else {
            return;
        };
        if now < open.t_ms + MINUTE_MS {
            return;
        }
        let Some(minute) = self.open.take() else {
            return;
        };
        let hour_t = minute.t_ms - minute.t_ms % HOUR_MS;
        match self.hours.iter_mut().find(|h| h.t_ms == hour_t) {
            Some(h) => {
                for (backend, t) in &minute.rows {
                    h.rows.entry(backend.clone()).or_default().add(t);
                }
            }
            None => {
                self.hours.push(Period {
                    t_ms: hour_t,
                    rows: minute.rows.clone(),
                    samples: Vec::new(),
                });
                if self.hours.len() > MAX_PENDING_HOURS {
                    self.hours.remove(0);
                }
            }
        }
        self.closed.push(minute);
        if self.closed.len() > MAX_PENDING_MINUTES {
            self.closed.remove(0);
            self.dropped_minutes += 1;
        }
        let keep_samples = self.closed.len().saturating_sub(SAMPLED_PENDING_MINUTES);
        for m in &mut self.closed[..keep_samples] {
            m.samples.clear();
        }
    }

    /// The rows due for writing at `now` (None: nothing closed since the last write).
    pub fn batch(&mut self, now: u64) -> Option<Batch<'_>> {
        self.roll(now);
        if self.closed.is_empty() {
            return None;
        }
        Some(Batch {
            minutes: &self.closed,
            hours: &self.hours,
        })
    }

    /// The closed minutes and hours plus the open minute as it stands (and its hour with it), for
    /// a write an operator asked for now; the open minute is written again, whole, when it closes.
    pub fn with_open(&mut self, now: u64) -> (Vec<Period>, Vec<Period>) {
        self.roll(now);
        let mut minutes = self.closed.clone();
        let mut hours = self.hours.clone();
        if let Some(open) = &self.open {
            let hour_t = open.t_ms - open.t_ms % HOUR_MS;
            let at = match hours.iter().position(|h| h.t_ms == hour_t) {
                Some(i) => i,
                None => {
                    hours.push(Period {
                        t_ms: hour_t,
                        ..Default::default()
                    });
                    hours.len() - 1
                }
            };
            for (backend, t) in &open.rows {
                hours[at].rows.entry(backend.clone()).or_default().add(t);
            }
            minutes.push(open.clone());
        }
        (minutes, hours)
    }

    /// The batch taken at `now` was written: its minutes go, and hours that can get no more minutes.
    pub fn written(&mut self, minutes: usize) {
        self.closed.drain(..minutes.min(self.closed.len()));
        let open_hour = self.open.as_ref().map(|m| m.t_ms - m.t_ms % HOUR_MS);
        let pending: Vec<u64> = self
            .closed
            .iter()
            .map(|m| m.t_ms - m.t_ms % HOUR_MS)
            .collect();
        self.hours
            .retain(|h| Some(h.t_ms) == open_hour || pending.contains(&h.t_ms));
    }

    /// When the open minute closes (None: no traffic since the last close).
    pub fn closes_at(&self) -> Option<u64> {
        self.open.as_ref().map(|m| m.t_ms + MINUTE_MS)
    }

    /// Whether anything is waiting to be written.
    pub fn pending(&self) -> bool {
        !self.closed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::telemetry::record::{Kept, RequestRecord};

    const T0: u64 = 1_700_000_040_000; // a minute boundary

    fn ok(url: &str, latency_ms: u64, count: u32) -> Outcome {
        Outcome {
            url: url.into(),
            failure: None,
            latency_ms,
            trial: false,
            retry: false,
            count,
            status: Some(200),
            retry_reason: None,
        }
    }

    fn sample(ts_ms: u64) -> LogRow {
        LogRow {
            hostname: "a.test".into(),
            rule: None,
            request: RequestRecord {
                ts_ms,
                method: "GET".into(),
                path: "/".into(),
                status: 200,
                backend: Some("http://b:1".into()),
                attempts: 1,
                latency_ms: 3,
            },
            failed: vec![],
            kept: Some(Kept::Sampled),
            asker: Default::default(),
        }
    }

    #[test]
    fn outcomes_count_by_class_latency_bucket_and_retry() {
        let mut r = Rollup::default();
        r.record_outcome(T0 + 1, &ok("http://b:1", 7, 10));
        r.record_outcome(
            T0 + 2,
            &Outcome {
                failure: Some("connect".into()),
                status: None,
                ..Outcome::connect_failure("http://b:1")
            },
        );
        r.record_outcome(
            T0 + 3,
            &Outcome {
                retry: true,
                status: Some(503),
                failure: Some("status 503".into()),
                ..ok("http://c:1", 2000, 1)
            },
        );
        r.record_outcome(
            T0 + 4,
            &Outcome {
                retry: true,
                ..ok("http://c:1", 40, 1)
            },
        );
        let m = r.open.as_ref().unwrap();
        assert_eq!(m.t_ms, T0);
        let b = &m.rows["http://b:1"];
        assert_eq!((b.requests, b.c2xx, b.cerr, b.retried), (11, 10, 1, 0));
        assert_eq!(b.hist[1], 10); // 7 ms is in the 10 ms bucket
        assert_eq!(b.hist[0], 1);
        assert_eq!(b.latency_sum_ms, 71);
        let c = &m.rows["http://c:1"];
        assert_eq!((c.requests, c.c5xx, c.retried, c.failed_over), (2, 1, 2, 1));
        assert_eq!(c.hist[8], 1); // 2000 ms: 2500 bucket
        assert_eq!(c.hist.iter().sum::<u64>(), 2);
    }

    #[test]
    fn answers_make_the_host_row_with_flowbalance_refusals_by_kind() {
        let mut r = Rollup::default();
        let a = |code, source, count| Answered {
            code,
            source,
            count,
        };
        r.record_answered(
            T0,
            &[
                a(200, Source::Backend, 5),
                a(429, Source::Flowbalance, 2),
                a(403, Source::Flowbalance, 1),
                a(503, Source::Flowbalance, 3),
                a(503, Source::Backend, 1),
                a(404, Source::Backend, 1),
            ],
        );
        let h = &r.open.as_ref().unwrap().rows[HOST_ROW];
        assert_eq!(h.requests, 13);
        assert_eq!((h.c2xx, h.c4xx, h.c5xx), (5, 4, 4));
        assert_eq!((h.rate_limited, h.denied, h.no_backend), (2, 1, 3));
        assert!(h.hist.is_empty());
    }

    #[test]
    fn a_minute_closes_into_its_hour_and_is_written_once() {
        let mut r = Rollup::default();
        assert!(r.batch(T0).is_none());
        r.record_outcome(T0 + 5, &ok("http://b:1", 7, 3));
        assert_eq!(r.closes_at(), Some(T0 + MINUTE_MS));
        assert!(r.batch(T0 + MINUTE_MS - 1).is_none());
        r.record_outcome(T0 + MINUTE_MS + 1, &ok("http://b:1", 7, 2));
        // The second outcome opened the next minute and closed the first.
        let b = r.batch(T0 + MINUTE_MS + 2).unwrap();
        assert_eq!(b.minutes.len(), 1);
        assert_eq!(b.minutes[0].t_ms, T0);
        assert_eq!(b.minutes[0].rows["http://b:1"].requests, 3);
        assert_eq!(b.hours.len(), 1);
        assert_eq!(b.hours[0].rows["http://b:1"].requests, 3);
        r.written(1);
        assert!(r.batch(T0 + MINUTE_MS + 3).is_none());
        // The hour stays (its open minute belongs to it) and grows when that minute closes.
        let b = r.batch(T0 + 2 * MINUTE_MS).unwrap();
        assert_eq!(b.minutes[0].rows["http://b:1"].requests, 2);
        assert_eq!(b.hours[0].rows["http://b:1"].requests, 5);
        r.written(1);
        // Nothing open or pending: the hour was written whole and is forgotten.
        assert!(r.hours.is_empty());
        assert!(!r.pending());
    }

    #[test]
    fn an_early_write_includes_the_open_minute_and_its_hour_without_closing_it() {
        let mut r = Rollup::default();
        r.record_outcome(T0, &ok("http://b:1", 7, 3));
        r.record_outcome(T0 + MINUTE_MS, &ok("http://b:1", 7, 2));
        let (minutes, hours) = r.with_open(T0 + MINUTE_MS + 1);
        assert_eq!(minutes.len(), 2);
        assert_eq!(minutes[1].rows["http://b:1"].requests, 2);
        assert_eq!(hours[0].rows["http://b:1"].requests, 5);
        r.written(1);
        // The open minute is still open, and counted once in its hour when it closes.
        assert_eq!(r.open.as_ref().unwrap().rows["http://b:1"].requests, 2);
        let b = r.batch(T0 + 2 * MINUTE_MS).unwrap();
        assert_eq!(b.hours[0].rows["http://b:1"].requests, 5);
    }

    #[test]
    fn samples_are_capped_per_minute_and_pending_state_is_bounded() {
        let mut r = Rollup::default();
        for i in 0..5 {
            let kept = r.record_sample(T0 + i, sample(T0 + i), 3);
            assert_eq!(kept, i < 3);
        }
        assert_eq!(r.open.as_ref().unwrap().samples.len(), 3);
        // D1 away for longer than the bound: the oldest minutes go, counted; samples go first.
        for m in 0..(MAX_PENDING_MINUTES as u64 + 10) {
            r.record_outcome(T0 + m * MINUTE_MS, &ok("http://b:1", 1, 1));
            r.record_sample(T0 + m * MINUTE_MS, sample(T0), 3);
        }
        r.roll(T0 + 1000 * MINUTE_MS);
        assert_eq!(r.closed.len(), MAX_PENDING_MINUTES);
        assert_eq!(r.dropped_minutes, 10);
        let sampled = r.closed.iter().filter(|m| !m.samples.is_empty()).count();
        assert_eq!(sampled, SAMPLED_PENDING_MINUTES);
        // Every minute's count is still in its hour.
        let total: u64 = r.hours.iter().map(|h| h.rows["http://b:1"].requests).sum();
        assert_eq!(total, MAX_PENDING_MINUTES as u64 + 10);
        // Stored whole: it reads back as it was.
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rollup>(&text).unwrap(), r);
    }
}
