//! The reserved admin prefix (`/__lb_admin__`) on balanced hostnames: which hostnames serve it (`ADMIN_PREFIX_HOSTNAMES`) and the one rule that says whether a path is the prefix, a variant of it, or an ordinary balanced path.

use crate::policy::control::config::validate_hostname;

/// Where the console, `/auth` and the admin API live on a hostname that enables the prefix.
pub const RESERVED_PREFIX: &str = "/__lb_admin__";

/// What a path is with respect to the reserved prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserved<'a> {
    /// Spelled exactly: the admin surface, with the rest of the path below the prefix.
    Exact(&'a str),
    /// Another spelling of the prefix (case, percent-encoding, repeated leading slashes): answered
    /// with a 404 naming the canonical prefix, never forwarded to a backend.
    Variant,
    /// Not the prefix: balanced like any path.
    Outside,
}

/// RFC 3986 §2.3 unreserved characters: the only ones whose percent-encoding is a mere spelling.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The path normalised for comparison: repeated leading slashes collapsed, percent-encoded
/// unreserved characters decoded (RFC 3986 §6.2.2.2), ASCII lower case (§6.2.2.1 for the hex
/// digits; the prefix itself is compared case-insensitively). Other escapes stay encoded.
fn normalise(path: &str) -> Vec<u8> {
    let trimmed = path.trim_start_matches('/');
    let b = trimmed.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 1);
    out.push(b'/');
    let mut i = 0;
    while i < b.len() {
        let decoded = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|c| is_unreserved(*c));
        match decoded {
            Some(c) => {
                out.push(c.to_ascii_lowercase());
                i += 3;
            }
            None => {
                out.push(b[i].to_ascii_lowercase());
                i += 1;
            }
        }
    }
    out
}

/// Whether `rest` (what follows the prefix) ends the prefix's path segment: nothing, or any
/// character that cannot continue a segment name (`/`, an escape, `;` ...).
fn ends_segment(rest: &[u8]) -> bool {
    rest.first().is_none_or(|c| !is_unreserved(*c))
}

/// The rule for a hostname where the prefix is enabled: the exact spelling followed by `/` or
/// nothing is the admin surface; any path whose normalised form starts with the prefix segment is
/// a variant.
pub fn classify(path: &str) -> Reserved<'_> {
    if let Some(rest) = path.strip_prefix(RESERVED_PREFIX) {
        if rest.is_empty() || rest.starts_with('/') {
            return Reserved::Exact(rest);
        }
    }
    let norm = normalise(path);
    match norm.strip_prefix(RESERVED_PREFIX.as_bytes()) {
        Some(rest) if ends_segment(rest) => Reserved::Variant,
        _ => Reserved::Outside,
    }
}

/// `ADMIN_PREFIX_HOSTNAMES`: the balanced hostnames that serve the reserved prefix, a comma list
/// of hostnames (blanks ignored). Every entry must be a valid hostname; `*` is refused: a
/// wildcard would put the operator's console on every backend's origin.
pub fn parse_hostnames(raw: Option<&str>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for entry in raw.unwrap_or("").split(',').map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        if entry.contains('*') {
            errors.push(format!(
                "{entry:?}: wildcards are not allowed; name each hostname whose backends may share an origin with the console"
            ));
            continue;
        }
        match validate_hostname(entry) {
            Ok(h) => out.push(h),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "ADMIN_PREFIX_HOSTNAMES: {}; the {RESERVED_PREFIX} prefix stays off on every balanced hostname",
            errors.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_exact_spelling_is_the_admin_surface() {
        assert_eq!(classify("/__lb_admin__"), Reserved::Exact(""));
        assert_eq!(classify("/__lb_admin__/"), Reserved::Exact("/"));
        assert_eq!(
            classify("/__lb_admin__/admin/keys"),
            Reserved::Exact("/admin/keys")
        );
    }

    #[test]
    fn variants_are_reserved_but_not_served() {
        for v in [
            "/__LB_ADMIN__/",
            "/__Lb_Admin__",
            "/%5F%5Flb_admin__/",
            "/%5f%5flb_admin__/admin/keys",
            "/__lb_%61dmin__/",
            "//__lb_admin__/",
            "///__lb_admin__",
            "/__lb_admin__%2Fadmin/keys",
            "/__lb_admin__;x",
            "/__lb_admin__%3F",
        ] {
            assert_eq!(classify(v), Reserved::Variant, "{v}");
        }
    }

    #[test]
    fn other_paths_are_balanced() {
        for p in [
            "/",
            "/app",
            "/__lb_admin",
            "/__lb_admin__x/",
            "/__lb_admin__%78",
            "/x/__lb_admin__/",
            "/%25lb_admin__/",
            // %2F is reserved, not a spelling of "/": this is one segment, not a prefix.
            "/%2F__lb_admin__/",
        ] {
            assert_eq!(classify(p), Reserved::Outside, "{p}");
        }
    }

    #[test]
    fn hostnames_are_validated_and_wildcards_refused() {
        assert_eq!(parse_hostnames(None), Ok(vec![]));
        assert_eq!(parse_hostnames(Some(" ")), Ok(vec![]));
        assert_eq!(
            parse_hostnames(Some("App.Example.com, ,api.example.com.")),
            Ok(vec!["app.example.com".into(), "api.example.com".into()])
        );
        let e = parse_hostnames(Some("ok.example.com,*")).unwrap_err();
        assert!(e.contains("wildcards are not allowed"), "{e}");
        assert!(e.contains("stays off"), "{e}");
        let e = parse_hostnames(Some("host:8080")).unwrap_err();
        assert!(e.contains("port"), "{e}");
    }

    proptest! {
        #[test]
        fn classify_never_panics_and_exact_keeps_the_rest(s in "[/_%a-zA-Z0-9;]{0,40}") {
            match classify(&s) {
                Reserved::Exact(rest) => prop_assert_eq!(format!("{RESERVED_PREFIX}{rest}"), s),
                Reserved::Variant => {
                    let exact = format!("{RESERVED_PREFIX}/");
                    prop_assert!(!s.starts_with(&exact));
                }
                Reserved::Outside => {}
            }
        }
    }
}
