//! How a client request is rewritten onto a backend: target URL, hop-by-hop headers, X-Forwarded-*.

/// Hop-by-hop headers (RFC 9110 §7.6.1) apply to one connection and must not be forwarded.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// FlowBalance's loop guard: set on every forwarded request, and a balanced request that
/// already carries it is refused (508), so a backend pointing back at the balancer costs one hop.
pub const LOOP_GUARD_HEADER: &str = "x-flowbalance-hop";

/// Headers that name further hop-by-hop headers: `Connection: close, x-foo` makes `x-foo` hop-by-hop too.
pub fn connection_tokens(connection: Option<&str>) -> Vec<String> {
    connection
        .unwrap_or("")
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Joins a backend origin (with optional base path, no trailing slash) and the client's
/// path plus query: `http://b:81/base` + `/x?q=1` -> `http://b:81/base/x?q=1`.
pub fn backend_url(backend: &str, path_and_query: &str) -> String {
    let base = backend.trim_end_matches('/');
    if path_and_query.is_empty() {
        return format!("{base}/");
    }
    if path_and_query.starts_with('/') {
        format!("{base}{path_and_query}")
    } else {
        format!("{base}/{path_and_query}")
    }
}

/// Appends the client address to an existing X-Forwarded-For chain.
pub fn forwarded_for(existing: Option<&str>, client_ip: &str) -> String {
    match existing.map(str::trim).filter(|e| !e.is_empty()) {
        Some(chain) => format!("{chain}, {client_ip}"),
        None => client_ip.to_string(),
    }
}

/// The parts of an absolute URL string, split once without a full URL parse (this runs per
/// request): `https://u@[::1]:81/a/b?q#f` -> scheme `https`, host `[::1]`, port 81, path `/a/b`,
/// path and query `/a/b?q`. The one splitter for request, backend and probe URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlParts<'a> {
    pub scheme: &'a str,
    /// Bracketed for IPv6, without userinfo or port.
    pub host: &'a str,
    pub port: Option<u16>,
    /// `/` when empty; no query or fragment.
    pub path: &'a str,
    /// Path and query, without the fragment ("" when both are empty).
    pub path_and_query: &'a str,
}

impl<'a> UrlParts<'a> {
    pub fn of(url: &'a str) -> Self {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match authority.find(']') {
            Some(i) if authority.starts_with('[') => {
                (&authority[..=i], authority[i + 1..].strip_prefix(':'))
            }
            _ => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let after = &rest[end..];
        let pq = &after[..after.find('#').unwrap_or(after.len())];
        let path = &pq[..pq.find('?').unwrap_or(pq.len())];
        UrlParts {
            scheme,
            host,
            port: port.and_then(|p| p.parse().ok()),
            path: if path.is_empty() { "/" } else { path },
            path_and_query: pq,
        }
    }

    /// The explicit port, else the scheme's default.
    pub fn port_or_default(&self) -> u16 {
        self.port
            .unwrap_or(if self.scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            })
    }
}

/// Path and query of an absolute URL string (`https://h/p?q` -> `/p?q`), without the fragment.
pub fn path_and_query(url: &str) -> &str {
    UrlParts::of(url).path_and_query
}

/// Host (without port) and path (without query) of an absolute URL:
/// `http://h.test:8787/a/b?q` -> (`h.test`, `/a/b`).
pub fn host_and_path(url: &str) -> (&str, &str) {
    let p = UrlParts::of(url);
    (p.host, p.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls_once() {
        let p = UrlParts::of("https://u:p@[2001:db8::1]:8443/a/b?q=1#frag");
        assert_eq!(
            (p.scheme, p.host, p.port),
            ("https", "[2001:db8::1]", Some(8443))
        );
        assert_eq!((p.path, p.path_and_query), ("/a/b", "/a/b?q=1"));
        let p = UrlParts::of("http://h.test");
        assert_eq!(
            (p.host, p.port, p.path, p.path_and_query),
            ("h.test", None, "/", "")
        );
        assert_eq!(p.port_or_default(), 80);
        assert_eq!(UrlParts::of("https://h.test?x").port_or_default(), 443);
        assert_eq!(UrlParts::of("http://h.test:81?x").path_and_query, "?x");
    }

    #[test]
    fn joins_base_path_and_query() {
        assert_eq!(backend_url("http://b:81", "/x?q=1"), "http://b:81/x?q=1");
        assert_eq!(
            backend_url("http://b/base", "/x?q=1&r"),
            "http://b/base/x?q=1&r"
        );
        assert_eq!(backend_url("http://b/base/", "/"), "http://b/base/");
        assert_eq!(backend_url("http://b", ""), "http://b/");
        assert_eq!(backend_url("http://b", "?q"), "http://b/?q");
    }

    #[test]
    fn connection_tokens_are_lowercased_names() {
        assert_eq!(
            connection_tokens(Some("close, X-Secret-Hop")),
            ["close", "x-secret-hop"]
        );
        assert!(connection_tokens(None).is_empty());
        assert!(HOP_BY_HOP.contains(&"transfer-encoding"));
        assert!(!HOP_BY_HOP.contains(&"set-cookie"));
    }

    #[test]
    fn forwarded_for_chains() {
        assert_eq!(forwarded_for(None, "1.2.3.4"), "1.2.3.4");
        assert_eq!(forwarded_for(Some(" "), "1.2.3.4"), "1.2.3.4");
        assert_eq!(
            forwarded_for(Some("9.9.9.9"), "1.2.3.4"),
            "9.9.9.9, 1.2.3.4"
        );
    }

    #[test]
    fn host_and_path_of_urls() {
        assert_eq!(
            host_and_path("http://h.test:8787/a/b?q=1"),
            ("h.test", "/a/b")
        );
        assert_eq!(host_and_path("https://h.test"), ("h.test", "/"));
        assert_eq!(host_and_path("http://[::1]:80/x#f"), ("[::1]", "/x"));
        assert_eq!(host_and_path("http://u@h/x"), ("h", "/x"));
    }

    #[test]
    fn path_and_query_of_urls() {
        assert_eq!(path_and_query("https://h.example/p/q?x=1#frag"), "/p/q?x=1");
        assert_eq!(path_and_query("http://h:8787"), "");
        assert_eq!(path_and_query("http://h?x"), "?x");
    }
}
