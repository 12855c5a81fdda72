//! When buffered request-log rows are written: one flush per short coalescing window, shared by every request whose row it carries, bounded in size.

/// A flush waits this long for more rows after the first one, then writes them all. Short
/// enough that a row is in D1 well inside its request's `waitUntil` (30 s); long enough that
/// D1 sees a few writes a second under load, not one per request (measured in `npm run bench`:
/// 50 ms cost about 10% of throughput, 250 ms none measurable).
pub const COALESCE_MS: u64 = 250;
/// Rows per INSERT statement (they travel as one JSON parameter, unpacked by `json_each`).
pub const ROWS_PER_STATEMENT: usize = 200;
/// Rows waiting in one isolate beyond this are dropped and counted: memory stays bounded even
/// when D1 is slower than the traffic.
pub const MAX_PENDING: usize = 5_000;

/// What queueing one row asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// No flush is waiting for rows: start one (and keep the request alive until it is done).
    StartFlush,
    /// The waiting flush will carry this row: keep the request alive until that flush is done.
    JoinFlush,
    /// Too many rows wait already: this one is dropped (and counted).
    Dropped,
}

/// Rows waiting for the flush that is gathering them.
#[derive(Debug)]
pub struct Batch<T> {
    rows: Vec<T>,
    /// A flush has been started and has not yet taken the rows.
    gathering: bool,
    dropped: u64,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            rows: Vec::new(),
            gathering: false,
            dropped: 0,
        }
    }
}

impl<T> Batch<T> {
    pub fn push(&mut self, row: T) -> Queued {
        if self.rows.len() >= MAX_PENDING {
            self.dropped += 1;
            return Queued::Dropped;
        }
        self.rows.push(row);
        if std::mem::replace(&mut self.gathering, true) {
            Queued::JoinFlush
        } else {
            Queued::StartFlush
        }
    }

    /// The rows the gathering flush writes now; the next row starts a new flush.
    pub fn take(&mut self) -> Vec<T> {
        self.gathering = false;
        std::mem::take(&mut self.rows)
    }

    /// Rows dropped so far (and resets the count), for the flush to report.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_row_starts_a_flush_later_ones_join_it() {
        let mut b = Batch::default();
        assert_eq!(b.push(1), Queued::StartFlush);
        assert_eq!(b.push(2), Queued::JoinFlush);
        assert_eq!(b.push(3), Queued::JoinFlush);
        assert_eq!(b.take(), vec![1, 2, 3]);
        // Rows arriving while that flush writes belong to the next one.
        assert_eq!(b.push(4), Queued::StartFlush);
        assert_eq!(b.take(), vec![4]);
        assert!(b.take().is_empty());
    }

    #[test]
    fn bounded_and_drops_are_counted() {
        let mut b = Batch::default();
        for i in 0..MAX_PENDING {
            assert_ne!(b.push(i), Queued::Dropped);
        }
        assert_eq!(b.push(0), Queued::Dropped);
        assert_eq!(b.push(0), Queued::Dropped);
        assert_eq!(b.take_dropped(), 2);
        assert_eq!(b.take_dropped(), 0);
        assert_eq!(b.take().len(), MAX_PENDING);
        assert_eq!(b.push(1), Queued::StartFlush);
    }
}
