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

/// True if `name` must be dropped when forwarding (case-insensitive).
pub fn is_hop_by_hop(name: &str, extra: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    HOP_BY_HOP.contains(&lower.as_str()) || extra.contains(&lower)
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
    fn hop_by_hop_includes_connection_tokens() {
        let extra = connection_tokens(Some("close, X-Secret-Hop"));
        assert!(is_hop_by_hop("Transfer-Encoding", &extra));
        assert!(is_hop_by_hop("x-secret-hop", &extra));
        assert!(!is_hop_by_hop("content-type", &extra));
        assert!(!is_hop_by_hop("set-cookie", &extra));
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
    fn path_and_query_of_urls() {
        assert_eq!(path_and_query("https://h.example/p/q?x=1#frag"), "/p/q?x=1");
        assert_eq!(path_and_query("http://h:8787"), "");
        assert_eq!(path_and_query("http://h?x"), "?x");
    }
}
