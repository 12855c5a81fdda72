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

/// Path and query of an absolute URL string (`https://h/p?q` -> `/p?q`), without the fragment.
pub fn path_and_query(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[after_scheme..];
    let start = rest.find(['/', '?']).unwrap_or(rest.len());
    let pq = &rest[start..];
    match pq.find('#') {
        Some(i) => &pq[..i],
        None => pq,
    }
}

/// Host (without port) and path (without query) of an absolute URL, without a full URL parse
/// on the hot path: `http://h.test:8787/a/b?q` -> (`h.test`, `/a/b`).
pub fn host_and_path(url: &str) -> (&str, &str) {
    let rest = url.find("://").map(|i| &url[i + 3..]).unwrap_or(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = if authority.starts_with('[') {
        authority
            .find(']')
            .map(|i| &authority[..=i])
            .unwrap_or(authority)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    let after = &rest[end..];
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    let path = &after[..path_end];
    (host, if path.is_empty() { "/" } else { path })
}

#[cfg(test)]
mod tests {
    use super::*;

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
