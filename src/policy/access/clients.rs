//! Per-client keys and tables: one canonical form per client address, and bounded tables so memory stays capped under many clients.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::Ipv6Net;

use crate::policy::access::lists::canonical;

/// The longest key kept for a client value that is not an IP address (in bytes).
pub const MAX_CLIENT_KEY: usize = 64;

/// One key per client address, so spellings of the same address count together:
/// IPv4-mapped IPv6 becomes IPv4 (`::ffff:1.2.3.4` → `1.2.3.4`) and IPv6 takes its RFC 5952
/// form (`2001:0DB8:0:0::1` → `2001:db8::1`). A value that is not an address is kept, trimmed
/// and cut to `MAX_CLIENT_KEY` bytes, so it still keys a bounded entry.
pub fn canonical_ip(raw: &str) -> String {
    let raw = raw.trim();
    let bare = raw
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(raw);
    match bare.parse::<IpAddr>() {
        Ok(ip) => canonical(ip).to_string(),
        Err(_) => bounded_key(raw).trim_end().to_string(),
    }
}

/// `raw` cut to at most `MAX_CLIENT_KEY` bytes, on a character boundary: any caller-chosen value
/// that keys a table entry (a client that is not an address, a claimed user name).
pub fn bounded_key(raw: &str) -> &str {
    let mut end = raw.len().min(MAX_CLIENT_KEY);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}

/// The unit a login throttle counts: one IPv4 address, or one IPv6 /64 (an end site is handed at
/// least a /64, so rotating addresses inside it must not buy fresh attempts). Other values are
/// keyed as [`canonical_ip`] keys them.
pub fn client_network(raw: &str) -> String {
    let key = canonical_ip(raw);
    match key.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => Ipv6Net::new(v6, 64)
            .map(|n| n.trunc().to_string())
            .unwrap_or(key),
        _ => key,
    }
}

/// Makes room for one more client: drops the entries `stale` says are done, then, if the table
/// is still full, the least recently active one. Returns the keys dropped, for a caller that
/// mirrors the table in storage.
pub fn make_room<V>(
    clients: &mut BTreeMap<String, V>,
    max: usize,
    stale: impl Fn(&V) -> bool,
    last_active: impl Fn(&V) -> u64,
) -> Vec<String> {
    let mut dropped: Vec<String> = clients
        .iter()
        .filter(|(_, v)| stale(v))
        .map(|(k, _)| k.clone())
        .collect();
    for k in &dropped {
        clients.remove(k);
    }
    if clients.len() >= max {
        let oldest = clients
            .iter()
            .min_by_key(|(_, v)| last_active(v))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            clients.remove(&k);
            dropped.push(k);
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn drops_stale_first_then_the_oldest() {
        let mut t: BTreeMap<String, u64> = [("a", 5), ("b", 1), ("c", 9)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(make_room(&mut t, 3, |&v| v == 9, |&v| v), ["c"]);
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            ["a", "b"],
            "stale entry dropped, room made without evicting"
        );
        assert_eq!(make_room(&mut t, 2, |_| false, |&v| v), ["b"]);
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            ["a"],
            "least recently active evicted"
        );
    }

    #[test]
    fn spellings_of_one_address_share_a_key() {
        for (raw, want) in [
            ("1.2.3.4", "1.2.3.4"),
            (" 1.2.3.4 ", "1.2.3.4"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("::FFFF:0102:0304", "1.2.3.4"),
            ("[::ffff:1.2.3.4]", "1.2.3.4"),
            ("2001:0DB8:0:0::1", "2001:db8::1"),
            ("2001:db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
            ("[2001:DB8::1]", "2001:db8::1"),
            ("::1", "::1"),
            // IPv4-compatible (deprecated) and NAT64 addresses are IPv6, not the IPv4 inside.
            ("::1.2.3.4", "::102:304"),
            ("64:ff9b::1.2.3.4", "64:ff9b::102:304"),
        ] {
            assert_eq!(canonical_ip(raw), want, "{raw}");
        }
    }

    #[test]
    fn ipv6_clients_count_per_64_and_ipv4_per_address() {
        for (raw, want) in [
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
            ("[2001:DB8:1:2:0:0:0:9]", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("::1", "::/64"),
            ("1.2.3.4", "1.2.3.4"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("unknown", "unknown"),
        ] {
            assert_eq!(client_network(raw), want, "{raw}");
        }
        assert_ne!(client_network("1.2.3.4"), client_network("1.2.3.5"));
    }

    #[test]
    fn other_values_are_kept_but_bounded() {
        assert_eq!(canonical_ip("unknown"), "unknown");
        assert_eq!(canonical_ip("fe80::1%eth0"), "fe80::1%eth0");
        // Octal-looking IPv4 is ambiguous: kept as given rather than guessed.
        assert_eq!(canonical_ip("01.2.3.4"), "01.2.3.4");
        assert_eq!(canonical_ip(&"x".repeat(500)).len(), MAX_CLIENT_KEY);
        // Cut on a character boundary: 'é' is two bytes.
        assert_eq!(canonical_ip(&"é".repeat(100)), "é".repeat(32));
    }

    proptest! {
        #[test]
        fn canonical_is_bounded_and_idempotent(s in ".{0,200}") {
            let once = canonical_ip(&s);
            prop_assert!(once.len() <= MAX_CLIENT_KEY.max(39));
            prop_assert_eq!(canonical_ip(&once), once);
        }

        #[test]
        fn every_ipv6_spelling_of_an_ipv4_is_that_ipv4(a: u8, b: u8, c: u8, d: u8) {
            let v4 = format!("{a}.{b}.{c}.{d}");
            let mapped = format!("::FFFF:{:02X}{:02X}:{:X}", a, b, u16::from(c) << 8 | u16::from(d));
            prop_assert_eq!(canonical_ip(&format!("::ffff:{v4}")), v4.clone());
            prop_assert_eq!(canonical_ip(&mapped), v4);
        }
    }
}
