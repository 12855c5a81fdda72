//! The deployment's daily D1 budget: `D1_DAILY_ROWS_BUDGET`, how much of it a day's rows written use, and the UTC day they count against.

use serde::Serialize;

/// Half the free plan's 100,000 rows written a day: the rest stays the operator's.
pub const DEFAULT_DAILY_ROWS: u64 = 50_000;
/// Below this, the budget would stop sampled rows within minutes of a quiet day.
pub const MIN_DAILY_ROWS: u64 = 1_000;
/// Share of the budget (percent) at which sampled successes stop, so errors keep room.
pub const SAMPLES_STOP_PERCENT: u64 = 80;

/// `D1_DAILY_ROWS_BUDGET` as set: unset or empty is the default; anything else must be a whole
/// number of at least [`MIN_DAILY_ROWS`].
pub fn parse(v: Option<&str>) -> Result<u64, String> {
    let Some(raw) = v.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_DAILY_ROWS);
    };
    match raw.parse::<u64>() {
        Ok(n) if n >= MIN_DAILY_ROWS => Ok(n),
        _ => Err(format!(
            "D1_DAILY_ROWS_BUDGET: {raw:?} is not allowed; expected a whole number of rows written a day, at least {MIN_DAILY_ROWS} (default {DEFAULT_DAILY_ROWS})"
        )),
    }
}

/// What the day's rows written leave room for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Everything is written.
    #[default]
    Ok,
    /// From 80% of the budget: sampled successes are no longer written.
    SamplesStopped,
    /// From 100%: request-log rows are counted, not written.
    Exhausted,
}

/// The budget state after `rows_today` rows written against `budget` (0 counts as exhausted).
pub fn state(rows_today: u64, budget: u64) -> State {
    // u128: no product of two u64 overflows it.
    let used = u128::from(rows_today) * 100;
    if used >= u128::from(budget) * 100 {
        State::Exhausted
    } else if used >= u128::from(budget) * u128::from(SAMPLES_STOP_PERCENT) {
        State::SamplesStopped
    } else {
        State::Ok
    }
}

/// The UTC day ("YYYY-MM-DD") of a time in milliseconds since the Unix epoch: D1's daily
/// limits reset at midnight UTC.
pub fn day_of(ms: u64) -> String {
    let (y, m, d) = civil_from_days(ms / 86_400_000);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Year, month and day of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_defaults_when_unset_or_empty() {
        assert_eq!(parse(None), Ok(DEFAULT_DAILY_ROWS));
        assert_eq!(parse(Some("")), Ok(DEFAULT_DAILY_ROWS));
        assert_eq!(parse(Some("  ")), Ok(DEFAULT_DAILY_ROWS));
    }

    #[test]
    fn parse_accepts_whole_numbers_from_the_minimum() {
        assert_eq!(parse(Some("1000")), Ok(1000));
        assert_eq!(parse(Some(" 90000 ")), Ok(90_000));
    }

    #[test]
    fn parse_refuses_small_negative_and_non_numbers_naming_the_variable() {
        for bad in ["999", "0", "-5", "50k", "1e5", "12.5"] {
            let err = parse(Some(bad)).unwrap_err();
            assert!(err.starts_with("D1_DAILY_ROWS_BUDGET: "), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("at least 1000"), "{err}");
        }
    }

    #[test]
    fn state_stops_samples_at_80_percent_and_is_exhausted_at_100() {
        assert_eq!(state(0, 50_000), State::Ok);
        assert_eq!(state(39_999, 50_000), State::Ok);
        assert_eq!(state(40_000, 50_000), State::SamplesStopped);
        assert_eq!(state(49_999, 50_000), State::SamplesStopped);
        assert_eq!(state(50_000, 50_000), State::Exhausted);
        assert_eq!(state(u64::MAX, u64::MAX - 1), State::Exhausted);
        assert_eq!(state(0, 0), State::Exhausted);
    }

    #[test]
    fn state_serializes_snake_case() {
        let json = serde_json::to_string(&[State::Ok, State::SamplesStopped, State::Exhausted]);
        assert_eq!(
            json.ok().as_deref(),
            Some(r#"["ok","samples_stopped","exhausted"]"#)
        );
    }

    #[test]
    fn day_of_is_the_utc_day() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_399_999), "1970-01-01");
        assert_eq!(day_of(86_400_000), "1970-01-02");
        // 2024-02-29T23:59:59.999Z, then midnight: a leap day and the month after it.
        assert_eq!(day_of(1_709_251_199_999), "2024-02-29");
        assert_eq!(day_of(1_709_251_200_000), "2024-03-01");
        // 2026-12-31T12:00:00Z and 2000-03-01 (a leap century).
        assert_eq!(day_of(1_798_718_400_000), "2026-12-31");
        assert_eq!(day_of(951_868_800_000), "2000-03-01");
    }
}
