//! Latency percentiles from a request-duration histogram (the rollups keep counts per bucket, not latencies), interpolated linearly within a bucket.

use crate::policy::telemetry::metrics::BUCKETS_MS;

/// The latency (ms) below which `p` percent of the histogram's requests fall. `counts` holds one
/// count per bucket of [`BUCKETS_MS`] and a last one for +Inf (missing buckets count as 0, extra
/// ones join +Inf). Within its bucket the percentile is placed linearly between the bucket's lower
/// and upper bound, as if the bucket's requests were spread evenly; in the +Inf bucket, which has
/// no upper bound, it is that bucket's lower bound. None when the histogram is empty.
pub fn percentile(counts: &[u64], p: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = p / 100.0 * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        let lower = if i == 0 {
            0
        } else {
            BUCKETS_MS[(i - 1).min(BUCKETS_MS.len() - 1)]
        } as f64;
        let Some(&upper) = BUCKETS_MS.get(i) else {
            // +Inf (and anything past it): no upper bound to interpolate towards.
            return Some(lower);
        };
        if n > 0 && (below + n) as f64 >= rank {
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper as f64 - lower) * within.max(0.0));
        }
        below += n;
    }
    None
}

/// [`percentile`] rounded to a whole millisecond: the buckets are far coarser than that, and the
/// API reports latencies as integers.
pub fn percentile_ms(counts: &[u64], p: f64) -> Option<u64> {
    percentile(counts, p).map(|v| v.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::telemetry::metrics::bucket_of;

    fn histogram(latencies: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut h = vec![0; BUCKETS_MS.len() + 1];
        for l in latencies {
            h[bucket_of(l)] += 1;
        }
        h
    }

    #[test]
    fn evenly_spread_latencies_come_back_exact() {
        // 1..=100 ms: 5 in <=5, 5 in <=10, 15 in <=25, 25 in <=50, 50 in <=100.
        let h = histogram(1..=100);
        assert_eq!(percentile(&h, 50.0), Some(50.0));
        assert_eq!(percentile(&h, 95.0), Some(95.0));
        assert_eq!(percentile(&h, 99.0), Some(99.0));
        assert_eq!(percentile(&h, 10.0), Some(10.0));
    }

    #[test]
    fn interpolates_within_the_bucket_the_rank_falls_in() {
        // 4 requests in (10, 25], 4 in (100, 250].
        let mut h = vec![0; BUCKETS_MS.len() + 1];
        h[2] = 4;
        h[5] = 4;
        // p50: rank 4 of 8, the end of (10, 25].
        assert_eq!(percentile(&h, 50.0), Some(25.0));
        // p25: rank 2, half-way through (10, 25].
        assert_eq!(percentile(&h, 25.0), Some(17.5));
        // p95: rank 7.6, 3.6 of 4 into (100, 250]: 100 + 150 * 0.9.
        assert_eq!(percentile(&h, 95.0), Some(235.0));
        // Empty buckets between them are skipped, not interpolated through.
        assert_eq!(percentile(&h, 62.5), Some(137.5));
    }

    #[test]
    fn the_first_bucket_starts_at_zero() {
        let h = histogram([3, 3]);
        assert_eq!(percentile(&h, 50.0), Some(2.5));
        assert_eq!(percentile(&h, 100.0), Some(5.0));
    }

    #[test]
    fn the_inf_bucket_reports_its_lower_bound() {
        let h = histogram([20_000, 60_000]);
        assert_eq!(percentile(&h, 50.0), Some(10_000.0));
        assert_eq!(percentile(&h, 99.0), Some(10_000.0));
        // A short histogram (no +Inf entry) reads as zeros there.
        assert_eq!(percentile(&[0, 2], 50.0), Some(7.5));
    }

    #[test]
    fn empty_or_out_of_range_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[0; 12], 50.0), None);
        assert_eq!(percentile(&[1], 101.0), None);
        assert_eq!(percentile(&[1], f64::NAN), None);
    }

    #[test]
    fn whole_milliseconds() {
        let mut h = vec![0; BUCKETS_MS.len() + 1];
        h[1] = 3; // (5, 10]
        assert_eq!(percentile(&h, 50.0), Some(7.5));
        assert_eq!(percentile_ms(&h, 50.0), Some(8));
    }
}
