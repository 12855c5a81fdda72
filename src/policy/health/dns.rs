//! Health-checked DNS records: which A/AAAA records a service's healthy backends want, the diff against what the zone holds (only records FlowBalance manages, never emptied), and the Cloudflare v4 API envelope.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The `comment` FlowBalance writes on the records it manages for `hostname`: records without it
/// (anyone else's) are never touched.
pub fn marker(hostname: &str) -> String {
    format!("flowbalance:{hostname}")
}

/// An address record's type and content, e.g. `("A", "192.0.2.10")`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Address {
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
}

impl Address {
    pub fn of(ip: IpAddr) -> Address {
        Address {
            kind: if ip.is_ipv4() { "A" } else { "AAAA" }.to_string(),
            content: ip.to_string(),
        }
    }
}

/// A DNS record as the Cloudflare v4 API lists it (the fields FlowBalance reads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub content: String,
    #[serde(default)]
    pub comment: Option<String>,
}

/// What a sync does: records to create, record ids to delete, and whether the healthy set was
/// empty so the last non-empty set was kept (fail open).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<Address>,
    pub delete: Vec<String>,
    pub held: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// The diff from the zone's records for the name (`existing`) to the addresses of the healthy
/// backends (`wanted`). Only records carrying `marker` are managed; a managed duplicate is
/// deleted. With nothing healthy the set is never emptied: nothing is deleted and `held` says so
/// (the records last written stay, and clients keep an answer).
pub fn plan(wanted: &[Address], existing: &[ZoneRecord], marker: &str) -> Plan {
    let managed: Vec<&ZoneRecord> = existing
        .iter()
        .filter(|r| r.comment.as_deref() == Some(marker) && (r.kind == "A" || r.kind == "AAAA"))
        .collect();
    if wanted.is_empty() {
        return Plan {
            held: true,
            ..Plan::default()
        };
    }
    let want: BTreeSet<&Address> = wanted.iter().collect();
    let mut have: BTreeSet<Address> = BTreeSet::new();
    let mut delete = Vec::new();
    for r in managed {
        let a = Address {
            kind: r.kind.clone(),
            content: normalised(&r.content),
        };
        if want.contains(&a) && !have.contains(&a) {
            have.insert(a);
        } else {
            delete.push(r.id.clone());
        }
    }
    let create = want
        .into_iter()
        .filter(|a| !have.contains(*a))
        .cloned()
        .collect();
    Plan {
        create,
        delete,
        held: false,
    }
}

/// One spelling per address (an API may answer `2001:DB8::1` for `2001:db8::1`).
fn normalised(content: &str) -> String {
    content
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| content.to_string())
}

/// The Cloudflare v4 API's answer envelope.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<ApiError>,
    #[serde(default = "none")]
    pub result: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Debug, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// Reads an API answer: the result, or the errors in one sentence (`status` is the HTTP status).
pub fn read<T: serde::de::DeserializeOwned>(status: u16, body: &str) -> Result<T, String> {
    let env: Envelope<T> = serde_json::from_str(body)
        .map_err(|e| format!("Cloudflare API answered {status} with an unreadable body: {e}"))?;
    match (env.success, env.result) {
        (true, Some(result)) => Ok(result),
        (true, None) => Err(format!("Cloudflare API answered {status} with no result")),
        (false, _) => {
            let why: Vec<String> = env
                .errors
                .iter()
                .map(|e| format!("{} ({})", e.message, e.code))
                .collect();
            Err(format!(
                "Cloudflare API answered {status}: {}",
                if why.is_empty() {
                    "no error given".to_string()
                } else {
                    why.join("; ")
                }
            ))
        }
    }
}

/// The wait before sync attempt `attempt` (0-based) after failures: 5 s doubling, at most 5 minutes.
pub fn backoff_ms(attempt: u32) -> u64 {
    (5_000u64 << attempt.min(6)).min(300_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "flowbalance:app.test";

    fn rec(id: &str, kind: &str, content: &str, comment: Option<&str>) -> ZoneRecord {
        ZoneRecord {
            id: id.into(),
            kind: kind.into(),
            name: "origin.test".into(),
            content: content.into(),
            comment: comment.map(str::to_string),
        }
    }

    fn addr(s: &str) -> Address {
        Address::of(s.parse().unwrap())
    }

    #[test]
    fn creates_the_missing_deletes_the_extra_and_leaves_foreign_records() {
        let existing = vec![
            rec("1", "A", "192.0.2.1", Some(M)),
            rec("2", "A", "192.0.2.2", Some(M)),
            rec("3", "A", "192.0.2.9", None),
            rec("4", "A", "192.0.2.8", Some("flowbalance:other.test")),
            rec("5", "TXT", "hello", Some(M)),
        ];
        let p = plan(&[addr("192.0.2.1"), addr("2001:db8::1")], &existing, M);
        assert_eq!(p.create, vec![addr("2001:db8::1")]);
        assert_eq!(p.delete, vec!["2".to_string()]);
        assert!(!p.held);
        assert_eq!(addr("2001:db8::1").kind, "AAAA");
    }

    #[test]
    fn never_empties_the_set_and_removes_managed_duplicates() {
        let existing = vec![rec("1", "A", "192.0.2.1", Some(M))];
        let p = plan(&[], &existing, M);
        assert!(p.held && p.is_empty());
        let dup = vec![
            rec("1", "AAAA", "2001:DB8::1", Some(M)),
            rec("2", "AAAA", "2001:db8::1", Some(M)),
        ];
        let p = plan(&[addr("2001:db8::1")], &dup, M);
        assert_eq!((p.create.len(), p.delete), (0, vec!["2".to_string()]));
        assert!(plan(&[addr("2001:db8::1")], &dup[..1], M).is_empty());
    }

    #[test]
    fn the_envelope_gives_the_result_or_the_errors() {
        let ok: Vec<ZoneRecord> = read(200, r#"{"success":true,"errors":[],"result":[]}"#).unwrap();
        assert!(ok.is_empty());
        let err = read::<Vec<ZoneRecord>>(
            403,
            r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"result":null}"#,
        )
        .unwrap_err();
        assert!(
            err.contains("403") && err.contains("Authentication error (10000)"),
            "{err}"
        );
        assert!(read::<Vec<ZoneRecord>>(502, "<html>")
            .unwrap_err()
            .contains("unreadable"));
        assert_eq!(
            (backoff_ms(0), backoff_ms(3), backoff_ms(30)),
            (5_000, 40_000, 300_000)
        );
    }
}
