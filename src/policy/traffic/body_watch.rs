//! Which successful answers the Worker watches until their body has arrived whole, and which it passes straight through.
//!
//! Watching costs: a small body is read in whole and the response rebuilt, a larger one is
//! pumped through a stream (measured: about 9% of lease-mode throughput when every answer is
//! watched). It is what sees a backend break bodies off after good headers, which opens its
//! breaker and turns a small broken body into a 502. So each backend's answers are sampled, and
//! a backend whose body broke off is watched on every answer until it has behaved for a while.

use std::collections::HashMap;

/// One answer in this many of each backend is watched (the first one included).
pub const WATCH_EVERY: u32 = 8;
/// After a body broke off, this many answers of that backend in a row are watched.
pub const WATCH_AFTER_BREAK: u32 = 100;
/// Backends remembered per isolate; past this the memory starts over (configs changed a lot).
const MAX_BACKENDS: usize = 1024;

#[derive(Default)]
struct Backend {
    /// Answers since the last sampled one.
    seen: u32,
    /// Answers still to watch since a body broke off.
    suspect: u32,
}

/// Per-backend sampling state, kept for the isolate's life.
#[derive(Default)]
pub struct BodyWatch {
    backends: HashMap<String, Backend>,
}

impl BodyWatch {
    /// Whether to watch the body of this successful answer from `backend`. Always watched: a
    /// half-open breaker's `trial` (its outcome decides the breaker), and a request `counted` in
    /// flight (least outstanding steering: it stays outstanding until its body is through).
    pub fn watch(&mut self, backend: &str, trial: bool, counted: bool) -> bool {
        let b = self.backend(backend);
        let sampled = b.seen == 0;
        b.seen = (b.seen + 1) % WATCH_EVERY;
        if b.suspect > 0 {
            b.suspect -= 1;
            return true;
        }
        trial || counted || sampled
    }

    /// A watched body of `backend` broke off: watch its next answers.
    pub fn broke(&mut self, backend: &str) {
        self.backend(backend).suspect = WATCH_AFTER_BREAK;
    }

    fn backend(&mut self, url: &str) -> &mut Backend {
        if self.backends.len() >= MAX_BACKENDS && !self.backends.contains_key(url) {
            self.backends.clear();
        }
        self.backends.entry(url.to_string()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_and_then_one_in_every_few_are_watched() {
        let mut w = BodyWatch::default();
        let watched: Vec<bool> = (0..2 * WATCH_EVERY)
            .map(|_| w.watch("a", false, false))
            .collect();
        let at: Vec<usize> = watched
            .iter()
            .enumerate()
            .filter(|(_, w)| **w)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at, vec![0, WATCH_EVERY as usize]);
    }

    #[test]
    fn backends_are_sampled_apart() {
        let mut w = BodyWatch::default();
        assert!(w.watch("a", false, false));
        assert!(
            w.watch("b", false, false),
            "b's first answer is its own sample"
        );
        assert!(!w.watch("a", false, false));
        assert!(!w.watch("b", false, false));
    }

    #[test]
    fn a_breaker_trial_and_a_request_counted_in_flight_are_always_watched() {
        let mut w = BodyWatch::default();
        w.watch("a", false, false);
        assert!(!w.watch("a", false, false));
        assert!(w.watch("a", true, false));
        assert!(w.watch("a", false, true));
    }

    #[test]
    fn after_a_break_every_answer_is_watched_for_a_while_then_sampling_resumes() {
        let mut w = BodyWatch::default();
        w.watch("a", false, false);
        w.broke("a");
        assert!((0..WATCH_AFTER_BREAK).all(|_| w.watch("a", false, false)));
        let later = (0..WATCH_EVERY)
            .filter(|_| w.watch("a", false, false))
            .count();
        assert_eq!(later, 1, "back to one in {WATCH_EVERY}");
    }

    #[test]
    fn a_break_leaves_other_backends_sampled() {
        let mut w = BodyWatch::default();
        w.watch("b", false, false);
        w.broke("a");
        assert!(!w.watch("b", false, false));
    }

    #[test]
    fn a_backend_that_keeps_breaking_bodies_stays_watched() {
        let mut w = BodyWatch::default();
        assert!(w.watch("a", false, false));
        for _ in 0..3 * WATCH_AFTER_BREAK {
            w.broke("a");
            assert!(w.watch("a", false, false));
        }
    }

    #[test]
    fn memory_is_bounded() {
        let mut w = BodyWatch::default();
        for i in 0..3 * MAX_BACKENDS {
            w.watch(&format!("http://b{i}"), false, false);
            w.broke(&format!("http://c{i}"));
        }
        assert!(w.backends.len() <= MAX_BACKENDS);
    }
}
