//! Request-log questions: the filters and paging of `GET .../logs` and the window and buckets of `GET .../metrics`, read from query pairs (every mistake a 400 naming its parameter) and turned into SQL conditions with bound values.

use std::fmt;

/// Rows per page when `limit` is not given, and the most one page may hold.
pub const DEFAULT_LOG_LIMIT: u32 = 100;
pub const MAX_LOG_LIMIT: u32 = 1000;
/// Metrics window when `window` is not given (seconds), and the longest (hour rollups are kept
/// 90 days by default, `ROLLUP_RETENTION_DAYS`).
pub const DEFAULT_METRICS_WINDOW_S: u64 = 300;
pub const MAX_METRICS_WINDOW_S: u64 = 90 * DAY_S;
/// Windows up to a day read the minute rollups; longer ones the hour rollups (minute rows are
/// kept only `LOG_RETENTION_DAYS`).
pub const MAX_MINUTE_WINDOW_S: u64 = DAY_S;
const DAY_S: u64 = 86_400;
const HOUR_S: u64 = 3600;
/// Most buckets one series may have: enough for a day by the minute, bounded for the browser.
pub const MAX_BUCKETS: u64 = 1440;

/// A query parameter that cannot be used, named so the caller can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub param: String,
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

fn bad(param: &str, message: impl Into<String>) -> QueryError {
    QueryError {
        param: param.to_string(),
        message: message.into(),
    }
}

/// A value bound to a `?n` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Number(f64),
}

/// Where a page of the log ends: the newest row *not* on it is older than this (time, then id).
/// Kept rows have their table's id (positive); sampled successes, which live inside the minute's
/// rollup row, have negative synthetic ids (see `store::requestlog::page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts_ms: u64,
    pub id: i64,
}

impl Cursor {
    /// The `before=` value that continues after the row (`ts_ms`, `id`): `<ts_ms>-<id>`.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.ts_ms, self.id)
    }

    fn parse(raw: &str) -> Result<Cursor, String> {
        let (ts, id) = raw.split_once('-').ok_or_else(|| {
            format!("{raw:?} is not a cursor; pass the next_before value of the previous page")
        })?;
        match (ts.parse(), id.parse()) {
            (Ok(ts_ms), Ok(id)) => Ok(Cursor { ts_ms, id }),
            _ => Err(format!(
                "{raw:?} is not a cursor; pass the next_before value of the previous page"
            )),
        }
    }
}

/// `status_class=4xx`: statuses 400..=499.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusClass(pub u16);

/// One page of the request log of one hostname, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogQuery {
    pub status_class: Option<StatusClass>,
    pub backend: Option<String>,
    pub method: Option<String>,
    pub path_prefix: Option<String>,
    pub before: Option<Cursor>,
    pub limit: u32,
}

const LOG_PARAMS: &[&str] = &[
    "status_class",
    "backend",
    "method",
    "path_prefix",
    "before",
    "limit",
];

impl LogQuery {
    /// Reads the query pairs of `GET /admin/services/{h}/logs`. An unknown or repeated parameter
    /// is refused: a misspelt filter must not quietly show every row.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LogQuery, QueryError> {
        let mut q = LogQuery {
            limit: DEFAULT_LOG_LIMIT,
            ..LogQuery::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in pairs {
            let Some(name) = LOG_PARAMS.iter().find(|p| **p == k) else {
                return Err(bad(
                    k,
                    format!("unknown parameter; allowed: {}", LOG_PARAMS.join(", ")),
                ));
            };
            if seen.contains(name) {
                return Err(bad(k, "given more than once"));
            }
            seen.push(name);
            match *name {
                "status_class" => q.status_class = Some(status_class(v)?),
                "backend" => q.backend = Some(bounded_text("backend", v, 2048)?),
                "method" => q.method = Some(method(v)?),
                "path_prefix" => q.path_prefix = Some(path_prefix(v)?),
                "before" => q.before = Some(Cursor::parse(v).map_err(|m| bad("before", m))?),
                _ => q.limit = integer("limit", v, 1, u64::from(MAX_LOG_LIMIT))? as u32,
            }
        }
        Ok(q)
    }

    /// The `WHERE` conditions after `hostname = ?1` (each ` AND ...`) and their values, bound
    /// from `?2` on. Rows are ordered by (ts_ms, id) descending, which the cursor follows.
    pub fn conditions(&self) -> (String, Vec<SqlValue>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        let next = |values: &mut Vec<SqlValue>, v: SqlValue| {
            values.push(v);
            values.len() + 1
        };
        if let Some(StatusClass(c)) = self.status_class {
            let lo = next(&mut values, SqlValue::Number(f64::from(c) * 100.0));
            sql.push_str(&format!(" AND status >= ?{lo} AND status < ?{lo} + 100"));
        }
        if let Some(b) = &self.backend {
            let n = next(&mut values, SqlValue::Text(b.clone()));
            sql.push_str(&format!(" AND backend = ?{n}"));
        }
        if let Some(m) = &self.method {
            let n = next(&mut values, SqlValue::Text(m.clone()));
            sql.push_str(&format!(" AND method = ?{n}"));
        }
        if let Some(p) = &self.path_prefix {
            // A substring compare, not LIKE: '%' and '_' in a path are plain characters.
            let n = next(&mut values, SqlValue::Text(p.clone()));
            sql.push_str(&format!(" AND substr(path, 1, length(?{n})) = ?{n}"));
        }
        if let Some(c) = self.before {
            let ts = next(&mut values, SqlValue::Number(c.ts_ms as f64));
            let id = next(&mut values, SqlValue::Number(c.id as f64));
            sql.push_str(&format!(
                " AND (ts_ms < ?{ts} OR (ts_ms = ?{ts} AND id < ?{id}))"
            ));
        }
        (sql, values)
    }
}

fn status_class(v: &str) -> Result<StatusClass, QueryError> {
    match v.to_ascii_lowercase().as_str() {
        "1xx" => Ok(StatusClass(1)),
        "2xx" => Ok(StatusClass(2)),
        "3xx" => Ok(StatusClass(3)),
        "4xx" => Ok(StatusClass(4)),
        "5xx" => Ok(StatusClass(5)),
        _ => Err(bad(
            "status_class",
            format!("{v:?} is not allowed; expected one of 1xx, 2xx, 3xx, 4xx, 5xx"),
        )),
    }
}

fn method(v: &str) -> Result<String, QueryError> {
    let ok = !v.is_empty() && v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphabetic());
    if ok {
        Ok(v.to_ascii_uppercase())
    } else {
        Err(bad(
            "method",
            format!("{v:?} is not an HTTP method; expected letters such as GET or POST"),
        ))
    }
}

fn path_prefix(v: &str) -> Result<String, QueryError> {
    if !v.starts_with('/') {
        return Err(bad("path_prefix", format!("{v:?} must start with '/'")));
    }
    bounded_text("path_prefix", v, 1024)
}

fn bounded_text(param: &str, v: &str, max: usize) -> Result<String, QueryError> {
    if v.is_empty() || v.len() > max {
        Err(bad(param, format!("must be 1 to {max} characters")))
    } else {
        Ok(v.to_string())
    }
}

fn integer(param: &str, v: &str, min: u64, max: u64) -> Result<u64, QueryError> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            param,
            format!("{v:?} is not allowed; expected an integer {min}..={max}"),
        )),
    }
}

/// `GET /admin/services/{h}/metrics`: totals over the last `window_s` seconds, and when
/// `bucket_s` is given, a series of buckets that long (aligned to multiples of it since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsQuery {
    pub window_s: u64,
    pub bucket_s: Option<u64>,
}

/// Which rollup table answers a question: one row per minute, or per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    Minutes,
    Hours,
}

impl Rollup {
    pub fn table(self) -> &'static str {
        match self {
            Rollup::Minutes => "rollup_minutes",
            Rollup::Hours => "rollup_hours",
        }
    }

    /// How long one row's period is (ms).
    pub fn period_ms(self) -> u64 {
        match self {
            Rollup::Minutes => 60_000,
            Rollup::Hours => HOUR_S * 1000,
        }
    }

    /// The table for totals over a window: minutes up to a day, hours beyond.
    pub fn for_window(window_s: u64) -> Rollup {
        if window_s <= MAX_MINUTE_WINDOW_S {
            Rollup::Minutes
        } else {
            Rollup::Hours
        }
    }
}

const METRICS_PARAMS: &[&str] = &["window", "bucket"];

impl MetricsQuery {
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<MetricsQuery, QueryError> {
        let mut window = None;
        let mut bucket = None;
        for (k, v) in pairs {
            let slot = match k {
                "window" => &mut window,
                "bucket" => &mut bucket,
                _ => {
                    return Err(bad(
                        k,
                        format!("unknown parameter; allowed: {}", METRICS_PARAMS.join(", ")),
                    ))
                }
            };
            if slot.is_some() {
                return Err(bad(k, "given more than once"));
            }
            *slot = Some(v);
        }
        let window_s = match window {
            Some(v) => integer("window", v, 1, MAX_METRICS_WINDOW_S)?,
            None => DEFAULT_METRICS_WINDOW_S,
        };
        // Beyond a day only hour rows are there to be bucketed.
        let hourly = window_s > MAX_MINUTE_WINDOW_S;
        let mut least = window_s.div_ceil(MAX_BUCKETS);
        if hourly {
            least = least.div_ceil(HOUR_S) * HOUR_S;
        }
        let bucket_s = match bucket {
            Some(v) => {
                let b = integer("bucket", v, 1, window_s)?;
                if window_s.div_ceil(b) > MAX_BUCKETS {
                    return Err(bad(
                        "bucket",
                        format!(
                            "{b} s buckets over a {window_s} s window make more than {MAX_BUCKETS} buckets; use at least {least} s"
                        ),
                    ));
                }
                if hourly && b % HOUR_S != 0 {
                    return Err(bad(
                        "bucket",
                        format!(
                            "windows over {MAX_MINUTE_WINDOW_S} s read hourly rollups; use a multiple of {HOUR_S} s (at least {least} s)"
                        ),
                    ));
                }
                Some(b)
            }
            None => None,
        };
        Ok(MetricsQuery { window_s, bucket_s })
    }

    /// The table the window's totals read.
    pub fn totals_from(&self) -> Rollup {
        Rollup::for_window(self.window_s)
    }

    /// The table the series reads: hour buckets (and every bucket of a window over a day) from the
    /// hour rows, shorter ones from the minute rows.
    pub fn series_from(&self) -> Option<Rollup> {
        self.bucket_s.map(|b| {
            if b % HOUR_S == 0 {
                Rollup::Hours
            } else {
                self.totals_from()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(q: &[(&str, &str)]) -> Result<LogQuery, QueryError> {
        LogQuery::parse(q.iter().copied())
    }

    fn metrics(q: &[(&str, &str)]) -> Result<MetricsQuery, QueryError> {
        MetricsQuery::parse(q.iter().copied())
    }

    #[test]
    fn no_parameters_is_the_newest_hundred() {
        let q = log(&[]).unwrap();
        assert_eq!(q.limit, 100);
        assert_eq!(q.conditions(), (String::new(), vec![]));
    }

    #[test]
    fn every_filter_becomes_a_bound_condition() {
        let q = log(&[
            ("status_class", "5XX"),
            ("backend", "http://127.0.0.1:9101"),
            ("method", "post"),
            ("path_prefix", "/api/50%_"),
            ("before", "1700000000000-42"),
            ("limit", "25"),
        ])
        .unwrap();
        assert_eq!(q.limit, 25);
        let (sql, values) = q.conditions();
        assert_eq!(
            sql,
            " AND status >= ?2 AND status < ?2 + 100 AND backend = ?3 AND method = ?4 \
             AND substr(path, 1, length(?5)) = ?5 AND (ts_ms < ?6 OR (ts_ms = ?6 AND id < ?7))"
        );
        assert_eq!(
            values,
            vec![
                SqlValue::Number(500.0),
                SqlValue::Text("http://127.0.0.1:9101".into()),
                SqlValue::Text("POST".into()),
                SqlValue::Text("/api/50%_".into()),
                SqlValue::Number(1_700_000_000_000.0),
                SqlValue::Number(42.0),
            ]
        );
    }

    #[test]
    fn each_mistake_names_its_parameter() {
        for (q, param, needle) in [
            (vec![("status_class", "6xx")], "status_class", "1xx, 2xx"),
            (
                vec![("status_class", "500")],
                "status_class",
                "expected one of",
            ),
            (vec![("method", "GET /")], "method", "HTTP method"),
            (vec![("method", "")], "method", "HTTP method"),
            (
                vec![("path_prefix", "api")],
                "path_prefix",
                "start with '/'",
            ),
            (vec![("backend", "")], "backend", "1 to 2048"),
            (vec![("before", "yesterday")], "before", "next_before"),
            (vec![("before", "1-x")], "before", "next_before"),
            (vec![("limit", "0")], "limit", "1..=1000"),
            (vec![("limit", "1001")], "limit", "1..=1000"),
            (vec![("limit", "-5")], "limit", "integer"),
            (vec![("status", "5xx")], "status", "allowed: status_class"),
            (
                vec![("method", "GET"), ("method", "PUT")],
                "method",
                "more than once",
            ),
        ] {
            let e = log(&q).unwrap_err();
            assert_eq!(e.param, param, "{q:?}");
            assert!(e.message.contains(needle), "{q:?}: {e}");
        }
    }

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            ts_ms: 1_764_300_000_123,
            id: 9,
        };
        assert_eq!(log(&[("before", &c.encode())]).unwrap().before, Some(c));
        let sample = Cursor {
            ts_ms: 1_764_300_000_123,
            id: -1_764_300_000_001,
        };
        assert_eq!(sample.encode(), "1764300000123--1764300000001");
        assert_eq!(
            log(&[("before", &sample.encode())]).unwrap().before,
            Some(sample)
        );
    }

    #[test]
    fn metrics_window_and_bucket_are_bounded() {
        assert_eq!(
            metrics(&[]).unwrap(),
            MetricsQuery {
                window_s: 300,
                bucket_s: None
            }
        );
        assert_eq!(
            metrics(&[("window", "86400"), ("bucket", "60")]).unwrap(),
            MetricsQuery {
                window_s: 86_400,
                bucket_s: Some(60)
            }
        );
        let long = metrics(&[("window", "7776000"), ("bucket", "86400")]).unwrap();
        assert_eq!(long.totals_from(), Rollup::Hours);
        assert_eq!(long.series_from(), Some(Rollup::Hours));
        let day = metrics(&[("window", "86400"), ("bucket", "60")]).unwrap();
        assert_eq!(day.totals_from(), Rollup::Minutes);
        assert_eq!(day.series_from(), Some(Rollup::Minutes));
        let hourly = metrics(&[("window", "86400"), ("bucket", "3600")]).unwrap();
        assert_eq!(hourly.totals_from(), Rollup::Minutes);
        assert_eq!(hourly.series_from(), Some(Rollup::Hours));
        for (q, param, needle) in [
            (vec![("window", "0")], "window", "1..=7776000"),
            (vec![("window", "7776001")], "window", "1..=7776000"),
            (
                vec![("window", "172800"), ("bucket", "600")],
                "bucket",
                "multiple of 3600",
            ),
            (
                vec![("window", "7776000"), ("bucket", "3600")],
                "bucket",
                "at least 7200 s",
            ),
            (
                vec![("window", "900"), ("bucket", "901")],
                "bucket",
                "1..=900",
            ),
            (
                vec![("window", "86400"), ("bucket", "59")],
                "bucket",
                "at least 60 s",
            ),
            (vec![("bucket", "0")], "bucket", "integer"),
            (
                vec![("windows", "60")],
                "windows",
                "allowed: window, bucket",
            ),
            (
                vec![("window", "60"), ("window", "60")],
                "window",
                "more than once",
            ),
        ] {
            let e = metrics(&q).unwrap_err();
            assert_eq!(e.param, param, "{q:?}");
            assert!(e.message.contains(needle), "{q:?}: {e}");
        }
    }
}
