//! How long the request log, health history and minute rollups (`LOG_RETENTION_DAYS`) and the hour rollups (`ROLLUP_RETENTION_DAYS`) are kept, and how much one cleanup run may delete.

/// A retention variable: its name and the days kept when it is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub var: &'static str,
    pub default_days: u32,
}

/// The request log, health history and minute rollups.
pub const LOG_RETENTION: Retention = Retention {
    var: "LOG_RETENTION_DAYS",
    default_days: 7,
};
/// The hour rollups: long windows (up to 90 days) of `/metrics` read them.
pub const ROLLUP_RETENTION: Retention = Retention {
    var: "ROLLUP_RETENTION_DAYS",
    default_days: 90,
};
pub const MAX_DAYS: u32 = 3650;
/// Rows one DELETE statement removes at most: short statements never hold D1 for long.
pub const DELETE_BATCH: u32 = 1000;
/// DELETE statements per table per cleanup run (the cron runs every 5 minutes): at most
/// 25,000 rows a run, 7.2 million a day, per table.
pub const MAX_STATEMENTS: u32 = 25;

const DAY_MS: u64 = 24 * 3600 * 1000;

impl Retention {
    /// Reads the variable: unset (or blank) is the default; anything else must be a whole number
    /// of days in 1..=3650. A value that cannot be read deletes nothing (fail closed).
    pub fn parse_days(&self, raw: Option<&str>) -> Result<u32, String> {
        let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(self.default_days);
        };
        match text.parse::<u32>() {
            Ok(d) if (1..=MAX_DAYS).contains(&d) => Ok(d),
            _ => Err(format!(
                "{}: {text:?} is not allowed; expected a whole number of days 1..={MAX_DAYS} (default {})",
                self.var, self.default_days
            )),
        }
    }
}

/// Rows older than this (ms since the epoch) are past retention.
pub fn cutoff_ms(now_ms: u64, days: u32) -> u64 {
    now_ms.saturating_sub(u64::from(days) * DAY_MS)
}

/// After a statement deleted `deleted` rows as the `run`-th (from 1) of this cleanup: delete
/// more? Only while statements come back full and the run's bound is not reached.
pub fn delete_more(deleted: u64, run: u32) -> bool {
    deleted >= u64::from(DELETE_BATCH) && run < MAX_STATEMENTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_default_and_bounds() {
        let parse_days = |raw| LOG_RETENTION.parse_days(raw);
        assert_eq!(parse_days(None), Ok(7));
        assert_eq!(parse_days(Some("  ")), Ok(7));
        assert_eq!(parse_days(Some("30")), Ok(30));
        assert_eq!(parse_days(Some(" 1 ")), Ok(1));
        assert_eq!(parse_days(Some("3650")), Ok(3650));
        for bad in ["0", "3651", "-1", "7d", "1.5", "seven"] {
            let e = parse_days(Some(bad)).unwrap_err();
            assert!(
                e.contains("LOG_RETENTION_DAYS") && e.contains("1..=3650"),
                "{e}"
            );
        }
    }

    #[test]
    fn rollup_days_default_to_ninety_and_name_their_variable() {
        assert_eq!(ROLLUP_RETENTION.parse_days(None), Ok(90));
        assert_eq!(ROLLUP_RETENTION.parse_days(Some("400")), Ok(400));
        let e = ROLLUP_RETENTION.parse_days(Some("0")).unwrap_err();
        assert!(
            e.starts_with("ROLLUP_RETENTION_DAYS:") && e.contains("default 90"),
            "{e}"
        );
    }

    #[test]
    fn cutoff_is_days_before_now_and_never_wraps() {
        let now = 1_800_000_000_000;
        assert_eq!(cutoff_ms(now, 7), now - 7 * 86_400_000);
        assert_eq!(cutoff_ms(1000, 1), 0);
    }

    #[test]
    fn cleanup_is_bounded() {
        assert!(delete_more(1000, 1));
        assert!(
            !delete_more(999, 1),
            "a short statement means nothing is left"
        );
        assert!(!delete_more(1000, MAX_STATEMENTS));
        let mut runs = 1;
        while delete_more(1000, runs) {
            runs += 1;
        }
        assert_eq!(runs, MAX_STATEMENTS);
    }
}
