//! Geo steering: maps a request's country/continent to a backend pool, with health fallback.

use std::borrow::Borrow;
use std::collections::BTreeMap;

/// Looks a region code up exactly, then upper-cased (platform codes are upper case, hand-written
/// config may not be, and the other way round).
fn lookup<'a, K: Borrow<str> + Ord, V: AsRef<str>>(
    regions: &'a BTreeMap<K, V>,
    code: Option<&str>,
) -> Option<&'a str> {
    let code = code.map(str::trim).filter(|c| !c.is_empty())?;
    regions
        .get(code)
        .or_else(|| regions.get(code.to_ascii_uppercase().as_str()))
        .map(AsRef::as_ref)
}

/// Picks the pool for a request: country code first (e.g. "DE"), then continent ("EU"), then
/// `fallback`. A chosen pool without a healthy backend falls to the fallback pool (returned even
/// when it is unhealthy too: there is nothing better to offer).
///
/// Country and continent codes share one map, and a few collide (AF, AS, NA, SA are both a
/// country and a continent); the country reading wins because it is checked first.
pub fn choose_pool<'a, K: Borrow<str> + Ord, V: AsRef<str>>(
    regions: &'a BTreeMap<K, V>,
    fallback: &'a str,
    country: Option<&str>,
    continent: Option<&str>,
    has_healthy: impl Fn(&str) -> bool,
) -> &'a str {
    match lookup(regions, country).or_else(|| lookup(regions, continent)) {
        Some(pool) if has_healthy(pool) => pool,
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> BTreeMap<String, String> {
        [("DE", "frankfurt"), ("EU", "europe"), ("NA", "us")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn steering_order() {
        let r = regions();
        let all = |_: &str| true;
        assert_eq!(
            choose_pool(&r, "default", Some("DE"), Some("EU"), all),
            "frankfurt"
        );
        assert_eq!(
            choose_pool(&r, "default", Some("FR"), Some("EU"), all),
            "europe"
        );
        assert_eq!(
            choose_pool(&r, "default", Some("de"), None, all),
            "frankfurt"
        );
        assert_eq!(
            choose_pool(&r, "default", Some("JP"), Some("AS"), all),
            "default"
        );
        assert_eq!(choose_pool(&r, "default", None, None, all), "default");
        assert_eq!(
            choose_pool(&r, "default", Some(""), Some("EU"), all),
            "europe"
        );
    }

    #[test]
    fn unhealthy_falls_back() {
        let r = regions();
        let no_fra = |p: &str| p != "frankfurt";
        assert_eq!(
            choose_pool(&r, "default", Some("DE"), Some("EU"), no_fra),
            "default"
        );
        assert_eq!(
            choose_pool(&r, "default", Some("FR"), Some("EU"), no_fra),
            "europe"
        );
        // Fallback is returned even when nothing is healthy.
        assert_eq!(
            choose_pool(&r, "default", Some("FR"), Some("EU"), |_| false),
            "default"
        );
    }
}
