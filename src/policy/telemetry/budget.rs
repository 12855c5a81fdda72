//! The deployment's daily D1 budget: how many rows may be written a day, and what is still written as the day's count nears it.

use serde::{Deserialize, Serialize};

/// Rows a day by default: half the free plan's 100,000, leaving the rest to the operator.
pub const DEFAULT_DAILY_ROWS: u64 = 50_000;
/// A budget below this would stop the request log within minutes of normal use.
pub const MIN_DAILY_ROWS: u64 = 1_000;

/// `D1_DAILY_ROWS_BUDGET`: a whole number of rows, at least [`MIN_DAILY_ROWS`] (unset: the default).
pub fn parse(v: Option<&str>) -> Result<u64, String> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_DAILY_ROWS);
    };
    match v.parse::<u64>() {
        Ok(n) if n >= MIN_DAILY_ROWS => Ok(n),
        _ => Err(format!(
            "D1_DAILY_ROWS_BUDGET: expected a whole number of rows >= {MIN_DAILY_ROWS}, found {v:?}"
        )),
    }
}

/// What is written as the day's rows near the budget. Rollups are always written: they are
/// bounded by backends × minutes, not by traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Ok,
    /// 80% spent: sampled successes are no longer kept.
    SamplesStopped,
    /// Spent: request-log rows are counted, not written.
    Exhausted,
}

pub fn state(rows_today: u64, budget: u64) -> State {
    if rows_today >= budget {
        State::Exhausted
    } else if rows_today * 5 >= budget * 4 {
        State::SamplesStopped
    } else {
        State::Ok
    }
}

/// The UTC day (`YYYY-MM-DD`) of a time in ms since the epoch: the budget's day, as D1's own
/// daily limit resets at 00:00 UTC.
pub fn day_of(ms: u64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_defaults_and_bounds() {
        assert_eq!(parse(None), Ok(DEFAULT_DAILY_ROWS));
        assert_eq!(parse(Some(" ")), Ok(DEFAULT_DAILY_ROWS));
        assert_eq!(parse(Some("2000")), Ok(2000));
        assert!(parse(Some("999")).unwrap_err().contains(">= 1000"));
        assert!(parse(Some("lots")).is_err());
    }

    #[test]
    fn samples_stop_at_80_percent_and_logs_at_the_budget() {
        assert_eq!(state(0, 1000), State::Ok);
        assert_eq!(state(799, 1000), State::Ok);
        assert_eq!(state(800, 1000), State::SamplesStopped);
        assert_eq!(state(999, 1000), State::SamplesStopped);
        assert_eq!(state(1000, 1000), State::Exhausted);
    }

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_796_428_799_999), "2026-12-04");
        assert_eq!(day_of(1_796_428_800_000), "2026-12-05");
    }
}
