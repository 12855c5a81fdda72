//! Automatic rollback: what clients got in recent time slices, and the watch of a config change that decides whether to undo it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::config::ChangeSafety;

/// Client outcomes are added up per slice of this many milliseconds.
pub const SLICE_MS: u64 = 10_000;
/// The baseline of a change: the error share in this long before it.
pub const BASELINE_MS: u64 = 5 * 60_000;
/// Workers carry what clients got to the object within about a second: answers reported this
/// soon after a change may belong to requests decided before it or after it, so they are judged
/// on neither side (the baseline of a busy service hardly misses them).
pub const SETTLE_MS: u64 = 1_500;

/// Requests answered, and how many of them count as errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
}

impl Tally {
    /// `count` responses with HTTP status `code`: any 5xx is an error, FlowBalance's own 502/503
    /// (no backend could answer) included.
    pub fn of(code: u16, count: u64) -> Tally {
        Tally {
            requests: count,
            errors: if code >= 500 { count } else { 0 },
        }
    }

    pub fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
    }

    /// The error share in percent; 0 without requests (nothing went wrong that anyone saw).
    pub fn error_pct(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }
}

/// A watched config change: the version it made, the one it replaced, and the error shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    pub version: u64,
    /// What an automatic rollback restores (0: the deployed config).
    pub previous: u64,
    pub started_ms: u64,
    /// Answers reported before this are not judged (see `SETTLE_MS`).
    pub judged_from_ms: u64,
    pub until_ms: u64,
    /// The 5 minutes before the change.
    pub baseline: Tally,
    /// Since the change.
    pub after: Tally,
    pub max_increase: f64,
    pub min_requests: u64,
}

impl Watch {
    /// Percentage points the error share rose since the change.
    pub fn increase(&self) -> f64 {
        self.after.error_pct() - self.baseline.error_pct()
    }

    /// The change made things plainly worse: enough requests since, and the error share rose by
    /// more than allowed. No requests since the change never count against it.
    pub fn worse(&self) -> bool {
        self.after.requests >= self.min_requests && self.increase() > self.max_increase
    }

    /// One line for the history, the audit trail and the logs: both error rates.
    pub fn summary(&self) -> String {
        format!(
            "automatic rollback of version {} to version {}: error rate {:.1}% over {} requests after the change, {:.1}% over {} requests in the 5 minutes before (allowed rise {} points)",
            self.version,
            self.previous,
            self.after.error_pct(),
            self.after.requests,
            self.baseline.error_pct(),
            self.baseline.requests,
            self.max_increase,
        )
    }
}

/// A config change as the watch sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    pub version: u64,
    /// The version it replaced; None when there was no config before (nothing to go back to).
    pub previous: Option<u64>,
    /// FlowBalance's own rollback: never itself rolled back automatically.
    pub automatic: bool,
}

/// What the watch says now.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Nothing is watched.
    Idle,
    /// Still within the window, no reason to act.
    Watching,
    /// The window passed without a reason to act: the change stays.
    Kept,
    /// Undo the change.
    RollBack,
}

/// One hostname's recent client outcomes (at most `BASELINE_MS` of slices) and the change being
/// watched. Small: stored whole, with the counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Safety {
    /// (slice number, what clients got in it), oldest first.
    recent: VecDeque<(u64, Tally)>,
    pub watch: Option<Watch>,
}

impl Safety {
    /// Adds what clients got at `now_ms` to its slice, and to the watch while it lasts.
    pub fn record(&mut self, now_ms: u64, t: Tally) {
        if t.requests == 0 {
            return;
        }
        let slice = now_ms / SLICE_MS;
        match self.recent.back_mut() {
            Some((s, tally)) if *s >= slice => tally.add(t),
            _ => self.recent.push_back((slice, t)),
        }
        self.prune(now_ms);
        if let Some(w) = &mut self.watch {
            if (w.judged_from_ms..=w.until_ms).contains(&now_ms) {
                w.after.add(t);
            }
        }
    }

    /// Drops slices that no longer reach into the baseline window.
    fn prune(&mut self, now_ms: u64) {
        let first = now_ms.saturating_sub(BASELINE_MS) / SLICE_MS;
        while self.recent.front().is_some_and(|(s, _)| *s < first) {
            self.recent.pop_front();
        }
    }

    /// What clients got in the `BASELINE_MS` before `now_ms` (to the slice).
    pub fn baseline(&self, now_ms: u64) -> Tally {
        let first = now_ms.saturating_sub(BASELINE_MS) / SLICE_MS;
        let mut sum = Tally::default();
        for (_, t) in self.recent.iter().filter(|(s, _)| *s >= first) {
            sum.add(*t);
        }
        sum
    }

    /// A config change: it ends the watch of the change before it, and is watched itself unless
    /// it is an automatic rollback, auto rollback is off, or there is no version to go back to.
    /// `settle_ms`: how long answers may still belong to the config before it (`SETTLE_MS`, plus
    /// the lease length when Workers decided under leases of it).
    pub fn changed(&mut self, change: Change, safety: &ChangeSafety, now_ms: u64, settle_ms: u64) {
        self.watch = match change.previous {
            Some(previous) if safety.auto_rollback && !change.automatic => Some(Watch {
                version: change.version,
                previous,
                started_ms: now_ms,
                judged_from_ms: now_ms + settle_ms,
                until_ms: now_ms + safety.watch_s * 1000,
                baseline: self.baseline(now_ms),
                after: Tally::default(),
                max_increase: safety.max_error_rate_increase,
                min_requests: safety.min_requests,
            }),
            _ => None,
        };
    }

    /// The service was deleted: nothing left to watch.
    pub fn forget(&mut self) {
        self.watch = None;
    }

    pub fn verdict(&self, now_ms: u64) -> Verdict {
        match &self.watch {
            None => Verdict::Idle,
            Some(w) if w.worse() => Verdict::RollBack,
            Some(w) if now_ms >= w.until_ms => Verdict::Kept,
            Some(_) => Verdict::Watching,
        }
    }

    /// Ends the watch (after `Kept` or `RollBack`), handing it over.
    pub fn end(&mut self) -> Option<Watch> {
        self.watch.take()
    }

    /// When the watch must be looked at even without traffic: its end.
    pub fn due_at(&self) -> Option<u64> {
        self.watch.as_ref().map(|w| w.until_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn safety() -> ChangeSafety {
        ChangeSafety::default()
    }

    fn change(version: u64) -> Change {
        Change {
            version,
            previous: Some(version - 1),
            automatic: false,
        }
    }

    fn t(requests: u64, errors: u64) -> Tally {
        Tally { requests, errors }
    }

    /// `n` requests of which `errors` failed, one a second from `from_ms`.
    fn traffic(s: &mut Safety, from_ms: u64, n: u64, errors: u64) {
        for i in 0..n {
            s.record(from_ms + i * 1000, t(1, u64::from(i < errors)));
        }
    }

    #[test]
    fn statuses_count_as_errors_from_500_up() {
        assert_eq!(Tally::of(200, 3), t(3, 0));
        assert_eq!(Tally::of(404, 2), t(2, 0));
        assert_eq!(Tally::of(500, 2), t(2, 2));
        assert_eq!(Tally::of(503, 1), t(1, 1));
        assert_eq!(t(0, 0).error_pct(), 0.0);
        assert_eq!(t(8, 2).error_pct(), 25.0);
    }

    #[test]
    fn the_baseline_is_the_five_minutes_before_the_change() {
        let mut s = Safety::default();
        // 10 minutes before: outside the baseline, all errors.
        traffic(&mut s, T0 - 600_000, 50, 50);
        // The 5 minutes before: 100 requests, 10 errors.
        traffic(&mut s, T0 - 290_000, 100, 10);
        s.changed(change(2), &safety(), T0, 0);
        let w = s.watch.clone().unwrap();
        assert_eq!(w.baseline, t(100, 10));
        assert_eq!(w.after, t(0, 0));
        assert_eq!(w.until_ms, T0 + 60_000);
        assert_eq!(w.previous, 1);
        // Slices never outgrow the window.
        assert!(s.recent.len() <= (BASELINE_MS / SLICE_MS) as usize + 1);
    }

    #[test]
    fn a_rise_past_the_threshold_over_min_requests_rolls_back() {
        let mut s = Safety::default();
        traffic(&mut s, T0 - 100_000, 100, 5); // 5 %
        s.changed(change(2), &safety(), T0, 0);
        // 29 requests, all failing: not yet enough to judge.
        traffic(&mut s, T0 + 1, 29, 29);
        assert_eq!(s.verdict(T0 + 30_000), Verdict::Watching);
        traffic(&mut s, T0 + 30_000, 1, 1);
        assert_eq!(s.verdict(T0 + 31_000), Verdict::RollBack);
        let w = s.end().unwrap();
        assert_eq!(w.after, t(30, 30));
        assert_eq!(w.increase(), 95.0);
        assert!(
            w.summary().contains("100.0% over 30 requests"),
            "{}",
            w.summary()
        );
        assert!(
            w.summary().contains("5.0% over 100 requests"),
            "{}",
            w.summary()
        );
        assert_eq!(s.verdict(T0 + 31_000), Verdict::Idle);
    }

    #[test]
    fn a_rise_within_the_threshold_is_kept_when_the_window_ends() {
        let mut s = Safety::default();
        traffic(&mut s, T0 - 100_000, 100, 10); // 10 %
        s.changed(change(2), &safety(), T0, 0);
        traffic(&mut s, T0 + 1, 50, 15); // 30 %: +20 points, not more
        assert_eq!(s.verdict(T0 + 59_000), Verdict::Watching);
        assert_eq!(s.verdict(T0 + 60_000), Verdict::Kept);
    }

    #[test]
    fn the_threshold_and_min_requests_come_from_the_config() {
        let strict = ChangeSafety {
            max_error_rate_increase: 5.0,
            min_requests: 10,
            ..safety()
        };
        let mut s = Safety::default();
        s.changed(change(2), &strict, T0, 0);
        traffic(&mut s, T0, 10, 1); // 10 % against a quiet baseline of 0 %
        assert_eq!(s.verdict(T0 + 10_000), Verdict::RollBack);
    }

    #[test]
    fn answers_reported_while_the_change_settles_are_not_judged() {
        let mut s = Safety::default();
        traffic(&mut s, T0 - 30_000, 20, 0);
        s.changed(change(2), &safety(), T0, SETTLE_MS + 1000);
        // Reports of requests decided under the old config (or its leases), or the new one.
        s.record(T0 + 2000, t(10, 5));
        let w = s.watch.as_ref().unwrap();
        assert_eq!((w.baseline, w.after), (t(20, 0), t(0, 0)));
        traffic(&mut s, T0 + SETTLE_MS + 1000, 30, 30);
        let w = s.watch.as_ref().unwrap();
        assert_eq!((w.baseline, w.after), (t(20, 0), t(30, 30)));
        assert_eq!(s.verdict(T0 + 40_000), Verdict::RollBack);
    }

    #[test]
    fn no_traffic_after_the_change_never_rolls_back() {
        let mut s = Safety::default();
        s.changed(change(2), &safety(), T0, 0);
        assert_eq!(s.verdict(T0 + 30_000), Verdict::Watching);
        assert_eq!(s.verdict(T0 + 60_000), Verdict::Kept);
        // Nor does traffic that arrives after the window closed.
        let mut s = Safety::default();
        s.changed(change(2), &safety(), T0, 0);
        traffic(&mut s, T0 + 61_000, 100, 100);
        assert_eq!(s.verdict(T0 + 200_000), Verdict::Kept);
    }

    #[test]
    fn an_automatic_rollback_is_not_watched_so_nothing_loops() {
        let mut s = Safety::default();
        s.changed(change(2), &safety(), T0, 0);
        traffic(&mut s, T0, 40, 40);
        assert_eq!(s.verdict(T0 + 40_000), Verdict::RollBack);
        s.end();
        // The rollback itself (version 3, restoring 1) starts no watch, however bad things stay.
        let rollback = Change {
            version: 3,
            previous: Some(2),
            automatic: true,
        };
        s.changed(rollback, &safety(), T0 + 40_000, 0);
        traffic(&mut s, T0 + 40_000, 100, 100);
        assert_eq!(s.verdict(T0 + 50_000), Verdict::Idle);
        assert_eq!(s.due_at(), None);
    }

    #[test]
    fn a_write_in_the_window_ends_the_watch_before_it_and_starts_its_own() {
        let mut s = Safety::default();
        traffic(&mut s, T0 - 60_000, 60, 0);
        s.changed(change(2), &safety(), T0, 0);
        traffic(&mut s, T0, 20, 20);
        s.changed(change(3), &safety(), T0 + 20_000, 0);
        let w = s.watch.clone().unwrap();
        assert_eq!((w.version, w.previous), (3, 2));
        // Its baseline holds the 5 minutes before it, the errors of version 2 included.
        assert_eq!(w.baseline, t(80, 20));
        assert_eq!(w.until_ms, T0 + 80_000);
        assert_eq!(s.due_at(), Some(T0 + 80_000));
    }

    #[test]
    fn off_or_nothing_to_go_back_to_means_no_watch() {
        let mut s = Safety::default();
        let off = ChangeSafety {
            auto_rollback: false,
            ..safety()
        };
        s.changed(change(2), &off, T0, 0);
        assert_eq!(s.verdict(T0), Verdict::Idle);
        let created = Change {
            version: 1,
            previous: None,
            automatic: false,
        };
        s.changed(created, &safety(), T0, 0);
        assert_eq!(s.verdict(T0), Verdict::Idle);
        // A change with auto rollback off also ends the watch of the change before it.
        s.changed(change(2), &safety(), T0, 0);
        s.changed(change(3), &off, T0 + 1000, 0);
        assert_eq!(s.watch, None);
    }

    #[test]
    fn it_survives_storage_as_json() {
        let mut s = Safety::default();
        traffic(&mut s, T0 - 10_000, 5, 1);
        s.changed(change(7), &safety(), T0, 0);
        traffic(&mut s, T0, 3, 3);
        let text = serde_json::to_string(&s).unwrap();
        let back: Safety = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert!(text.len() < 1000, "{text}");
    }
}
