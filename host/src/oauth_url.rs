//! The URL rules of OAuth, in one place for both sides of the relay: the relay as a protected
//! resource (its metadata URL, `transport/oauth.rs`) and as a client of backends' authorization
//! servers (discovery, `credentials/oauth.rs`; the endpoints a backend's `credentials:` names).

/// Whether `url` may carry callers' credentials or codes: `https://`, or `http://` to
/// `localhost`, `127.0.0.1` or `[::1]`. The host is read from the parsed URL, not from the
/// text's start: `http://localhost.evil.example` and `http://127.0.0.1@evil.example` are
/// other hosts.
pub fn secure_or_loopback(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(name))) => name == "localhost",
        ("http", Some(url::Host::Ipv4(ip))) => ip == std::net::Ipv4Addr::LOCALHOST,
        ("http", Some(url::Host::Ipv6(ip))) => ip == std::net::Ipv6Addr::LOCALHOST,
        _ => false,
    }
}

/// `/.well-known/<name>` inserted between a URL's authority and its path (RFC 8414 section 3,
/// RFC 9728 section 3.1).
pub fn well_known(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    format!("{scheme}://{authority}/.well-known/{name}{}", path.trim_end_matches('/'))
}

/// Whether two URLs have the same origin (scheme, host and port, RFC 6454); false when either
/// is not a URL.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin().is_tuple() && a.origin() == b.origin(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_go_before_the_path() {
        assert_eq!(
            well_known("http://localhost:3000/mcp", "oauth-protected-resource"),
            "http://localhost:3000/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            well_known("https://as.example", "oauth-authorization-server"),
            "https://as.example/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            well_known("https://relay.example.com/mcp", "oauth-protected-resource"),
            "https://relay.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            well_known("https://relay.example.com:8443", "oauth-protected-resource"),
            "https://relay.example.com:8443/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert!(same_origin("http://localhost:3000/mcp", "http://localhost:3000/other"));
        assert!(same_origin("https://as.example", "https://as.example:443/x"));
        assert!(!same_origin("https://evil.example/mcp", "https://docs.example/mcp"));
        assert!(!same_origin("http://docs.example/mcp", "https://docs.example/mcp"));
        assert!(!same_origin("not a url", "not a url"));
        assert!(secure_or_loopback("https://as.example/token") && secure_or_loopback("http://127.0.0.1:9/t"));
        assert!(!secure_or_loopback("http://as.example/token"));
    }

    #[test]
    fn loopback_is_the_urls_host_not_how_its_text_begins() {
        for url in
            ["http://localhost:8000/oauth/callback", "http://127.0.0.1/t", "http://[::1]:9/t", "https://a.example"]
        {
            assert!(secure_or_loopback(url), "{url}");
        }
        for url in [
            "http://localhost.evil.example/token",
            "http://127.0.0.1.nip.io/token",
            "http://127.0.0.1@evil.example/token",
            "http://localhost:80@evil.example/token",
            "http://[::1].evil/t",
            "ftp://localhost/t",
            "https://",
        ] {
            assert!(!secure_or_loopback(url), "{url}");
        }
    }
}
