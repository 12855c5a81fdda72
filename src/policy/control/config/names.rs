//! Hostnames and backend URLs: what is accepted and the one normalised spelling of each.

use std::net::{Ipv4Addr, Ipv6Addr};

// ---- Hostnames and URLs ----

/// Normalised (lowercase, no trailing dot, IPv6 bracketed) hostname or a message.
pub fn validate_hostname(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("hostname must not be empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{s:?} is not a valid hostname: contains spaces, control or non-ASCII characters"
        ));
    }
    let lower = s.to_ascii_lowercase();
    let bare = lower.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    if let Some(v6) = bare
        .or(Some(lower.as_str()))
        .filter(|h| h.parse::<Ipv6Addr>().is_ok())
    {
        return Ok(format!("[{v6}]"));
    }
    if lower.starts_with('[') || lower.contains(':') {
        let port = lower.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (host_error(h).is_none() || h.ends_with(']'))
        });
        return Err(if port {
            format!("{s:?} must not contain a port")
        } else {
            format!("{s:?} is not a valid hostname or IPv6 literal")
        });
    }
    let h = lower.strip_suffix('.').unwrap_or(&lower);
    match host_error(h) {
        None => Ok(h.to_string()),
        Some(reason) => Err(format!("{s:?} is not a valid hostname: {reason}")),
    }
}

/// Why a lowercase host (DNS name or IPv4) is invalid, or None.
pub(super) fn host_error(h: &str) -> Option<String> {
    if h.parse::<Ipv4Addr>().is_ok() {
        return None;
    }
    if h.is_empty() {
        return Some("empty".into());
    }
    if h.len() > 253 {
        return Some("longer than 253 characters".into());
    }
    let mut last = "";
    for label in h.split('.') {
        if label.is_empty() {
            return Some("empty label".into());
        }
        if label.len() > 63 {
            return Some(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Some(format!("invalid character {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("label {label:?} starts or ends with '-'"));
        }
        last = label;
    }
    // No TLD is numeric, so "1.2.3.999" is a mistyped IPv4 address, not a name.
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Some("not a valid IPv4 address or DNS name".into());
    }
    None
}

/// Normalised backend URL (`scheme://host[:port][/path]`, lowercase scheme and host, default
/// port and trailing slash dropped) or a message. The `url` crate does the parsing; the checks
/// here refuse what it would silently rewrite (dot segments, odd hosts) or a proxy must not take.
pub fn validate_backend_url(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("backend URL must not be empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{s:?} contains spaces, control or non-ASCII characters"
        ));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("{s:?} is not an absolute http(s) URL"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("{s:?} is not an http(s) URL"));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    if path.split('/').any(|seg| {
        matches!(
            seg.to_ascii_lowercase().as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        )
    }) {
        return Err(format!(
            "{s:?} has a '.' or '..' path segment; write the path it means"
        ));
    }
    if let Some(bad) = path.bytes().find(|b| b"<>\"\\^`{|}".contains(b)) {
        return Err(format!(
            "{s:?} has an invalid character {:?} in the path",
            bad as char
        ));
    }
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        {
            return Err(format!("{s:?} has an invalid percent-escape in the path"));
        }
    }
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let bare_host = match host.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or(r),
        None => host.split(':').next().unwrap_or(host),
    };
    if !authority.contains('@') && !bare_host.is_empty() && !host.starts_with('[') {
        if let Some(reason) = host_error(&bare_host.to_ascii_lowercase()) {
            return Err(format!("{s:?} has an invalid host: {reason}"));
        }
    }
    let url = url::Url::parse(s).map_err(|e| match e {
        url::ParseError::InvalidPort => format!("{s:?} has an invalid port (1-65535)"),
        url::ParseError::EmptyHost => format!("{s:?} has no host"),
        url::ParseError::InvalidIpv6Address => format!("{s:?} has an invalid IPv6 host"),
        other => format!("{s:?} is not a valid URL: {other}"),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{s:?} must not contain userinfo"));
    }
    if url.query().is_some() {
        return Err(format!("{s:?} must not contain a query"));
    }
    if url.fragment().is_some() {
        return Err(format!("{s:?} must not contain a fragment"));
    }
    if url.port() == Some(0) {
        return Err(format!("{s:?} has an invalid port (1-65535)"));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        Some(h) => h.to_string(),
        None => return Err(format!("{s:?} has no host")),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    Ok(format!("{}://{host}{port}{path}", url.scheme()))
}
