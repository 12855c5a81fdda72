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

/// The address a backend's record gives: its URL's host when that is an IP literal (`host` as
/// `BackendUrl::host` spells it, IPv6 bracketed), else its configured `address`.
pub fn address_of(host: &str, address: Option<IpAddr>) -> Option<Address> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .or(address)
        .map(Address::of)
}

/// `text` with every occurrence of `secret` replaced: an API error or a network message that
/// echoes the request must not carry the token into the status view, the history or a webhook.
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    text.replace(secret, "[redacted]")
}

/// A healthy set is written again at least this often (records changed by hand come back).
pub const RESYNC_MS: u64 = 300_000;

/// What the object remembers of its syncs (stored; shown in the status view).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The `dns` block the last attempt was for (`zone/name/ttl`): another one syncs at once.
    #[serde(default)]
    pub key: Option<String>,
    /// The addresses the last attempt wanted.
    #[serde(default)]
    pub wanted: Vec<Address>,
    /// The managed records after the last successful sync.
    #[serde(default)]
    pub records: Vec<Address>,
    /// The last successful sync found nothing healthy and kept the set.
    #[serde(default)]
    pub held: bool,
    /// When the last attempt ended, and why it failed (None: it worked).
    #[serde(default)]
    pub last_ms: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    /// Failed attempts in a row, and when the next one may start.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub retry_at: u64,
}

impl SyncState {
    /// When the next sync is due for the `dns` block `key` and the addresses `wanted` now: at once
    /// when either changed since the last attempt (a health change, a config change), after the
    /// backoff while failing, else [`RESYNC_MS`] after the last sync.
    pub fn due_at(&self, key: &str, wanted: &[Address]) -> u64 {
        match self.last_ms {
            Some(_) if self.key.as_deref() != Some(key) => 0,
            Some(_) if self.failures > 0 => self.retry_at,
            Some(last) if self.wanted == wanted => last + RESYNC_MS,
            _ => 0,
        }
    }

    /// Records a successful sync.
    pub fn succeeded(
        &mut self,
        now_ms: u64,
        key: &str,
        wanted: &[Address],
        records: Vec<Address>,
        held: bool,
    ) {
        *self = SyncState {
            key: Some(key.to_string()),
            wanted: wanted.to_vec(),
            records,
            held,
            last_ms: Some(now_ms),
            error: None,
            failures: 0,
            retry_at: 0,
        };
    }

    /// Records a failed sync and schedules the retry with [`backoff_ms`]. True when it is the
    /// first failure in a row (the one reported: later ones only count).
    pub fn failed(&mut self, now_ms: u64, key: &str, wanted: &[Address], error: String) -> bool {
        self.retry_at = now_ms + backoff_ms(self.failures);
        self.failures += 1;
        self.key = Some(key.to_string());
        self.wanted = wanted.to_vec();
        self.last_ms = Some(now_ms);
        self.error = Some(error);
        self.failures == 1
    }
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

    #[test]
    fn a_backend_gives_its_ip_literal_else_its_address() {
        let lit = address_of("[2001:db8::1]", Some("192.0.2.7".parse().unwrap()));
        assert_eq!(lit, Some(addr("2001:db8::1")));
        assert_eq!(
            address_of("api.test", Some("192.0.2.7".parse().unwrap())),
            Some(addr("192.0.2.7"))
        );
        assert_eq!(address_of("127.0.0.2", None), Some(addr("127.0.0.2")));
        assert_eq!(address_of("api.test", None), None);
        assert_eq!(
            redact("Bearer s3cr3t refused; s3cr3t", "s3cr3t"),
            "Bearer [redacted] refused; [redacted]"
        );
        assert_eq!(redact("nothing", ""), "nothing");
    }

    #[test]
    fn syncs_at_once_on_a_change_backs_off_on_failure_and_resyncs_every_five_minutes() {
        let a = [addr("192.0.2.1")];
        let b = [addr("192.0.2.1"), addr("192.0.2.2")];
        let mut s = SyncState::default();
        assert_eq!(s.due_at("z/n/60", &a), 0);
        s.succeeded(1_000, "z/n/60", &a, a.to_vec(), false);
        assert_eq!(s.due_at("z/n/60", &a), 1_000 + RESYNC_MS);
        assert_eq!(s.due_at("z/n/60", &b), 0, "a health change syncs at once");
        assert_eq!(s.due_at("z/n/30", &a), 0, "a config change syncs at once");
        assert!(s.failed(2_000, "z/n/60", &b, "401".into()));
        assert_eq!(s.due_at("z/n/60", &b), 7_000);
        assert_eq!(
            s.due_at("z/n/60", &a),
            7_000,
            "a failing sync waits for its backoff"
        );
        assert!(
            !s.failed(7_000, "z/n/60", &b, "401".into()),
            "reported once"
        );
        assert_eq!((s.due_at("z/n/60", &b), s.failures), (17_000, 2));
        assert_eq!(s.records, a.to_vec(), "the last good set is still known");
        s.succeeded(17_000, "z/n/60", &[], a.to_vec(), true);
        assert_eq!((s.failures, s.error.clone(), s.held), (0, None, true));
    }
}
