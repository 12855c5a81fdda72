//! Client IP access control: CIDR parsing and matching, allow/deny list policy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A v4 or v6 network. Host bits are cleared at parse time, so `contains` is a masked compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cidr {
    V4 { net: u32, prefix: u8 },
    V6 { net: u128, prefix: u8 },
}

fn mask32(prefix: u8) -> u32 {
    // checked_shl: a /0 would shift by 32, which overflows.
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// IPv4-mapped IPv6 (::ffff:a.b.c.d) is how dual-stack sockets report IPv4 clients; treat it as
/// the IPv4 address so IPv4 rules apply.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        match addr {
            IpAddr::V4(a) if prefix <= 32 => Ok(Cidr::V4 {
                net: u32::from(a) & mask32(prefix),
                prefix,
            }),
            IpAddr::V6(a) if prefix <= 128 => {
                // A mapped-v4 rule with prefix >= 96 is really a v4 rule; store it as one so it
                // matches clients reported either way.
                if let (Some(v4), true) = (a.to_ipv4_mapped(), prefix >= 96) {
                    return Cidr::new(IpAddr::V4(v4), prefix - 96);
                }
                Ok(Cidr::V6 {
                    net: u128::from(a) & mask128(prefix),
                    prefix,
                })
            }
            _ => Err(format!("prefix /{prefix} too long for {addr}")),
        }
    }

    pub fn prefix(&self) -> u8 {
        match *self {
            Cidr::V4 { prefix, .. } | Cidr::V6 { prefix, .. } => prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            // v6 rules see the address as reported, so a mapped client still matches a wide
            // v6 rule such as ::/0; plain v4 clients never match v6 rules.
            (Cidr::V6 { net, prefix }, IpAddr::V6(a)) => u128::from(a) & mask128(prefix) == net,
            (Cidr::V6 { .. }, IpAddr::V4(_)) => false,
            (Cidr::V4 { net, prefix }, _) => match canonical(ip) {
                IpAddr::V4(a) => u32::from(a) & mask32(prefix) == net,
                IpAddr::V6(_) => false,
            },
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Cidr::V4 { net, prefix } => write!(f, "{}/{prefix}", Ipv4Addr::from(net)),
            Cidr::V6 { net, prefix } => write!(f, "{}/{prefix}", Ipv6Addr::from(net)),
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `1.2.3.4` (= /32), `2001:db8::/32`, `::1` (= /128). Host bits set in the
    /// address are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid CIDR {s:?}: bad address {addr:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: u8::from_str would also accept "+8".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("invalid CIDR {s:?}: prefix /{p} exceeds /{max}"))?,
            Some(p) => return Err(format!("invalid CIDR {s:?}: bad prefix {p:?}")),
        };
        Cidr::new(addr, prefix).map_err(|e| format!("invalid CIDR {s:?}: {e}"))
    }
}

/// Deny wins; a non-empty allow list admits only its networks; an unknown client IP is refused
/// only when an allow list exists (it cannot be shown to be on it, but cannot match a deny).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

fn parse_list(items: &[String], what: &str, errors: &mut Vec<String>) -> Vec<Cidr> {
    items
        .iter()
        // Blank entries (e.g. a trailing comma in config) carry no rule.
        .filter(|s| !s.trim().is_empty())
        .filter_map(|s| match s.parse() {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(format!("{what}: {e}"));
                None
            }
        })
        .collect()
}

impl AccessPolicy {
    /// Reports every bad entry at once, so a config fix does not take several round trips.
    pub fn new(allow: &[String], deny: &[String]) -> Result<Self, String> {
        let mut errors = Vec::new();
        let allow = parse_list(allow, "allow", &mut errors);
        let deny = parse_list(deny, "deny", &mut errors);
        if errors.is_empty() {
            Ok(AccessPolicy { allow, deny })
        } else {
            Err(errors.join("; "))
        }
    }

    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        match ip {
            None => self.allow.is_empty(),
            Some(ip) => {
                !self.deny.iter().any(|c| c.contains(ip))
                    && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parsing() {
        assert_eq!(c("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("1.2.3.4").to_string(), "1.2.3.4/32");
        assert_eq!(c(" 2001:db8::/32 ").to_string(), "2001:db8::/32");
        assert_eq!(c("::1").to_string(), "::1/128");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(c("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "host",
            "10.0.0.0/0008",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn matching() {
        assert!(c("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!c("0.0.0.0/0").contains(ip("::1")));
        assert!(c("::/0").contains(ip("2001:db8::1")));
        assert!(c("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!c("2001:db8::/32").contains(ip("2001:db9::1")));
        // Mapped addresses match v4 rules, and mapped rules match plain v4.
        assert!(c("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(c("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        assert!(!c("10.0.0.0/8").contains(ip("::10.1.2.3")));
        assert!(c("::/0").contains(ip("::ffff:10.1.2.3")));
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn policy() {
        let open = AccessPolicy::new(&[], &[]).unwrap();
        assert!(open.is_open());
        assert!(open.permits(None));
        assert!(open.permits(Some(ip("1.2.3.4"))));

        let deny = AccessPolicy::new(&[], &list(&["1.2.3.0/24", ""])).unwrap();
        assert!(!deny.permits(Some(ip("1.2.3.4"))));
        assert!(!deny.permits(Some(ip("::ffff:1.2.3.4"))));
        assert!(deny.permits(Some(ip("1.2.4.4"))));
        assert!(deny.permits(None));

        let both = AccessPolicy::new(&list(&["10.0.0.0/8"]), &list(&["10.0.0.1"])).unwrap();
        assert!(both.permits(Some(ip("10.0.0.2"))));
        assert!(!both.permits(Some(ip("10.0.0.1"))));
        assert!(!both.permits(Some(ip("192.168.0.1"))));
        assert!(!both.permits(None));

        let err = AccessPolicy::new(&list(&["bad"]), &list(&["10.0.0.0/99"])).unwrap_err();
        assert!(
            err.contains("\"bad\"") && err.contains("10.0.0.0/99"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn v4_own_network_and_neighbour(a in any::<u32>(), n in 0u8..=32) {
            let addr = IpAddr::V4(Ipv4Addr::from(a));
            let net = Cidr::new(addr, n).unwrap();
            prop_assert!(net.contains(addr));
            prop_assert!(net.contains(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())));
            if n < 32 {
                // Flip the first bit after the prefix: that network excludes `a`.
                let other = Cidr::new(IpAddr::V4(Ipv4Addr::from(a ^ (1 << (31 - n)))), n + 1).unwrap();
                prop_assert!(!other.contains(addr));
                prop_assert!(Cidr::new(addr, n + 1).unwrap().contains(addr));
            }
        }

        #[test]
        fn v6_own_network(a in any::<u128>(), n in 0u8..=128) {
            let addr = IpAddr::V6(Ipv6Addr::from(a));
            let net = Cidr::new(addr, n).unwrap();
            // Mapped v4 addresses may be converted to v4 rules; they still contain themselves.
            prop_assert!(net.contains(addr));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<Cidr>();
        }
    }
}
