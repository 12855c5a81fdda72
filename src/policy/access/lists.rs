//! Client IP access control: CIDR parsing and matching, allow/deny list policy.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A v4 or v6 network (`ipnet` does the arithmetic). Host bits are cleared at parse time, and a
/// mapped-v4 rule (`::ffff:a.b.c.d/96+`) is stored as the v4 rule it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(IpNet);

/// IPv4-mapped IPv6 (::ffff:a.b.c.d) is how dual-stack sockets report IPv4 clients; treat it as
/// the IPv4 address so IPv4 rules apply.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        if let IpAddr::V6(a) = addr {
            if let (Some(v4), true) = (a.to_ipv4_mapped(), (96..=128).contains(&prefix)) {
                return Cidr::new(IpAddr::V4(v4), prefix - 96);
            }
        }
        IpNet::new(addr, prefix)
            .map(|n| Cidr(n.trunc()))
            .map_err(|_| format!("prefix /{prefix} too long for {addr}"))
    }

    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match self.0 {
            // v6 rules see the address as reported, so a mapped client still matches a wide
            // v6 rule such as ::/0; plain v4 clients never match v6 rules.
            IpNet::V6(net) => matches!(ip, IpAddr::V6(a) if net.contains(&a)),
            IpNet::V4(net) => matches!(canonical(ip), IpAddr::V4(a) if net.contains(&a)),
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
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
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: u8::from_str would also accept "+8".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length (0-{max})"))?,
            Some(_) => return Err(format!("{s:?} has an invalid prefix length (0-{max})")),
        };
        Cidr::new(addr, prefix).map_err(|e| format!("{s:?}: {e}"))
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl schemars::JsonSchema for Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "description": "IP address or CIDR range, v4 or v6 (10.0.0.0/8, 2001:db8::/32, 1.2.3.4)"})
    }
}

/// Deny wins; a non-empty allow list admits only its networks; an unknown client IP is refused
/// only when an allow list exists (it cannot be shown to be on it, but cannot match a deny).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl AccessPolicy {
    /// Lists arrive parsed (config time), so there is nothing left to fail here.
    pub fn new(allow: &[Cidr], deny: &[Cidr]) -> Self {
        AccessPolicy {
            allow: allow.to_vec(),
            deny: deny.to_vec(),
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
    use std::net::{Ipv4Addr, Ipv6Addr};

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

    fn list(v: &[&str]) -> Vec<Cidr> {
        v.iter().map(|s| c(s)).collect()
    }

    #[test]
    fn policy() {
        let open = AccessPolicy::new(&[], &[]);
        assert!(open.is_open());
        assert!(open.permits(None));
        assert!(open.permits(Some(ip("1.2.3.4"))));

        let deny = AccessPolicy::new(&[], &list(&["1.2.3.0/24"]));
        assert!(!deny.permits(Some(ip("1.2.3.4"))));
        assert!(!deny.permits(Some(ip("::ffff:1.2.3.4"))));
        assert!(deny.permits(Some(ip("1.2.4.4"))));
        assert!(deny.permits(None));

        let both = AccessPolicy::new(&list(&["10.0.0.0/8"]), &list(&["10.0.0.1"]));
        assert!(both.permits(Some(ip("10.0.0.2"))));
        assert!(!both.permits(Some(ip("10.0.0.1"))));
        assert!(!both.permits(Some(ip("192.168.0.1"))));
        assert!(!both.permits(None));
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
