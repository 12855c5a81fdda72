//! Backend selection: smooth weighted round robin (nginx's algorithm) over eligible backends, and failover order.

use serde::{Deserialize, Serialize};

/// Per-backend "current weight" of nginx's smooth weighted round robin.
///
/// Each pick adds every eligible backend's weight to its current weight, picks the highest
/// (lowest index on ties, so equal weights give plain round robin in index order) and subtracts
/// the round's total weight from the winner. With all backends eligible, the currents sum to 0
/// after every pick and return to all-zero after `sum(weights)` picks, so the sequence is
/// periodic with exactly `weights[i]` picks of `i` per period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selector {
    current: Vec<i64>,
}

impl Selector {
    pub fn new(n: usize) -> Self {
        Selector {
            current: vec![0; n],
        }
    }

    /// Config changed: the old currents belong to other weights, so start from zero.
    pub fn resize(&mut self, n: usize) {
        self.current.clear();
        self.current.resize(n, 0);
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Picks among backends `i` with `eligible(i)`; `weights[i]` (0 or missing treated as 1,
    /// so a misconfigured backend still gets some traffic rather than silently none).
    /// Ineligible backends keep their current weight untouched, as nginx does for down peers.
    /// Returns `None` only when no backend is eligible.
    pub fn pick(&mut self, weights: &[u32], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for i in 0..self.current.len() {
            if !eligible(i) {
                continue;
            }
            let w = i64::from(weights.get(i).copied().unwrap_or(1).max(1));
            // Saturating: only absurd backend counts could get near i64 limits; never panic.
            self.current[i] = self.current[i].saturating_add(w);
            total = total.saturating_add(w);
            match best {
                // Strictly greater keeps the lowest index on ties (deterministic round robin).
                Some(b) if self.current[i] <= self.current[b] => {}
                _ => best = Some(i),
            }
        }
        let b = best?;
        self.current[b] = self.current[b].saturating_sub(total);
        Some(b)
    }
}

/// Failover order after `first` failed: the other eligible indices, starting after `first` and
/// wrapping (deterministic rotation, so retries spread over different neighbours per first pick).
pub fn failover_order(n: usize, first: usize, eligible: impl Fn(usize) -> bool) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    // Reduce first modulo n so an out-of-range index neither overflows nor panics; such an
    // index is no backend, so then all n are candidates (k = n is `first` itself otherwise).
    let start = first % n;
    (1..=n)
        .map(|k| (start + k) % n)
        .filter(|&i| i != first && eligible(i))
        .collect()
}

/// Proven upper bound on how many times in a row SWRR (all eligible, fixed weights, fresh
/// selector) can pick backend `i`; `None` when `i` is the only backend (runs are unbounded).
///
/// Let s = sum of weights (each ≥ 1), n backends, r = s − w_i, L = s − ceil(s/n).
/// (1) After each pick the currents sum to 0 and the picked value was the maximum of n values
///     summing to s, so ≥ ceil(s/n); hence every current is ≥ −L (unpicked ones only grow).
/// (2) So c_i = −Σ_{j≠i} c_j ≤ (n−1)L before any run.
/// (3) At the k-th pick of a run, i's value is c_i + w_i − (k−1)r and must be ≥ j's value
///     c_j + k·w_j ≥ −L + k·w_j for every j ≠ i, giving k ≤ (nL + s) / (r + w_j).
///
/// Taking the heaviest other backend j gives the bound. Note the tempting
/// `ceil(w_i / r) + 1` is *not* a valid bound once n ≥ 3: weights 8:1:1 produce a run of 6
/// across the cycle boundary (pinned in the tests).
pub fn max_run_bound(weights: &[u32], i: usize) -> Option<u64> {
    let ws: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    let n = ws.len() as u64;
    let wi = *ws.get(i)?;
    let s: u64 = ws.iter().sum();
    let r = s - wi;
    let w_other = ws
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, &w)| w)
        .max()?;
    let l = s - s.div_ceil(n);
    Some((n * l + s) / (r + w_other))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(weights: &[u32], picks: usize) -> Vec<usize> {
        let mut sel = Selector::new(weights.len());
        (0..picks)
            .map(|_| sel.pick(weights, |_| true).unwrap())
            .collect()
    }

    fn longest_run(seq: &[usize], i: usize) -> u64 {
        let (mut best, mut cur) = (0, 0);
        for &x in seq {
            cur = if x == i { cur + 1 } else { 0 };
            best = best.max(cur);
        }
        best
    }

    #[test]
    fn equal_weights_are_round_robin() {
        assert_eq!(run(&[1, 1, 1], 6), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(run(&[7, 7], 4), vec![0, 1, 0, 1]);
    }

    #[test]
    fn nginx_reference_sequence() {
        // a=5, b=1, c=1 -> a a b a c a a (nginx ngx_http_upstream_round_robin.c comment).
        assert_eq!(run(&[5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(run(&[3, 1], 8), vec![0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn zero_weight_counts_as_one() {
        assert_eq!(run(&[0, 0], 4), vec![0, 1, 0, 1]);
        // Missing weights also count as one.
        let mut sel = Selector::new(2);
        assert_eq!(sel.pick(&[], |_| true), Some(0));
        assert_eq!(sel.pick(&[], |_| true), Some(1));
    }

    #[test]
    fn naive_run_bound_fails_for_three_backends() {
        let seq = run(&[8, 1, 1], 20);
        assert_eq!(&seq[..10], &[0, 0, 0, 1, 0, 0, 2, 0, 0, 0]);
        // 3 at the end of one cycle + 3 at the start of the next = 6 > ceil(8/2)+1 = 5.
        assert_eq!(longest_run(&seq, 0), 6);
        assert!(max_run_bound(&[8, 1, 1], 0).unwrap() >= 6);
    }

    #[test]
    fn ineligible_skipped_and_none_when_empty() {
        let mut sel = Selector::new(3);
        let picks: Vec<_> = (0..4).map(|_| sel.pick(&[1, 1, 1], |i| i != 1)).collect();
        assert_eq!(picks, vec![Some(0), Some(2), Some(0), Some(2)]);
        assert_eq!(sel.pick(&[1, 1, 1], |_| false), None);
        assert_eq!(Selector::new(0).pick(&[], |_| true), None);
    }

    #[test]
    fn resize_resets() {
        let mut sel = Selector::new(2);
        sel.pick(&[1, 1], |_| true);
        sel.resize(3);
        assert_eq!(sel, Selector::new(3));
        assert_eq!(sel.len(), 3);
    }

    #[test]
    fn failover_rotation() {
        assert_eq!(failover_order(4, 1, |_| true), vec![2, 3, 0]);
        assert_eq!(failover_order(4, 3, |i| i != 1), vec![0, 2]);
        assert_eq!(failover_order(1, 0, |_| true), Vec::<usize>::new());
        assert_eq!(failover_order(0, 0, |_| true), Vec::<usize>::new());
        // Out-of-range first: no panic, all eligible indices in rotation.
        assert_eq!(failover_order(3, usize::MAX, |_| true).len(), 3);
    }

    proptest! {
        #[test]
        fn one_cycle_is_exact(weights in prop::collection::vec(1u32..20, 1..6)) {
            let s: u32 = weights.iter().sum();
            let seq = run(&weights, s as usize);
            for (i, &w) in weights.iter().enumerate() {
                prop_assert_eq!(seq.iter().filter(|&&x| x == i).count(), w as usize);
            }
        }

        #[test]
        fn runs_are_bounded(weights in prop::collection::vec(1u32..40, 2..7)) {
            let s: u32 = weights.iter().sum();
            // Two periods so runs across the cycle boundary are counted too.
            let seq = run(&weights, 2 * s as usize);
            for i in 0..weights.len() {
                let bound = max_run_bound(&weights, i).unwrap();
                prop_assert!(longest_run(&seq, i) <= bound, "i={} bound={}", i, bound);
            }
        }

        #[test]
        fn never_picks_ineligible(
            weights in prop::collection::vec(0u32..10, 1..6),
            masks in prop::collection::vec(any::<u8>(), 1..60),
        ) {
            let mut sel = Selector::new(weights.len());
            for m in masks {
                let elig = |i: usize| m & (1 << i) != 0;
                let any = (0..weights.len()).any(elig);
                match sel.pick(&weights, elig) {
                    Some(i) => prop_assert!(i < weights.len() && elig(i)),
                    None => prop_assert!(!any),
                }
            }
        }
    }
}
