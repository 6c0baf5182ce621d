//! The browser rules every HTTP route passes first, WebSocket upgrades and `DELETE` included:
//! a request that carries an `Origin` must come from loopback or a configured origin (a web
//! page elsewhere cannot drive the relay), and its `Host` must name this relay (a DNS
//! rebinding page whose name now points at 127.0.0.1 still sends its own name). Requests
//! without `Origin` (non-browser clients) pass the origin rule.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which browser origins and host names the relay answers.
#[derive(Debug, Clone, Default)]
pub struct BrowserRules {
    /// Origins (`scheme://host[:port]`) allowed besides loopback ones.
    pub allowed_origins: Vec<String>,
    /// Host names (no port) allowed besides loopback names.
    pub allowed_hosts: Vec<String>,
    /// The listener is bound to a loopback address: only loopback (or allowed) host names
    /// can reach it legitimately.
    pub loopback_listener: bool,
}

impl BrowserRules {
    /// The rules for a relay listening on `listen_host` (an address or name).
    pub fn new(allowed_origins: Vec<String>, allowed_hosts: Vec<String>, listen_host: &str) -> Self {
        Self { allowed_origins, allowed_hosts, loopback_listener: is_loopback_name(listen_host) }
    }

    /// Why a request is refused, if it is.
    pub fn refusal(&self, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let host = origin.parse::<axum::http::Uri>().ok().and_then(|uri| uri.host().map(str::to_owned));
            let allowed = host.as_deref().is_some_and(is_loopback_name)
                || self.allowed_origins.iter().any(|o| o.trim_end_matches('/') == origin);
            if !allowed {
                return Some((StatusCode::FORBIDDEN, "origin not allowed"));
            }
        }
        if let Some(host) = headers.get(header::HOST) {
            let name = host_name(host.to_str().unwrap_or(""));
            let listed = self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name));
            let open = !self.loopback_listener && self.allowed_hosts.is_empty();
            if !(is_loopback_name(name) || listed || open) {
                return Some((StatusCode::MISDIRECTED_REQUEST, "host not allowed"));
            }
        }
        None
    }
}

/// Middleware: refuses requests that break the browser rules before any handler runs (the
/// metrics port; the main port's requests pass [`super::gate`], which asks [`refuse`]).
pub async fn enforce(State(rules): State<Arc<BrowserRules>>, request: Request, next: Next) -> Response {
    match refuse(&rules, &request) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// The answer to a request that breaks the browser rules (logged), if it does.
pub fn refuse<B>(rules: &BrowserRules, request: &axum::http::Request<B>) -> Option<Response> {
    let (status, message) = rules.refusal(request.headers())?;
    let named = |name| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::warn!(
        origin = named(header::ORIGIN),
        host = named(header::HOST),
        path = request.uri().path(),
        "browser request refused: {message}"
    );
    Some((status, message).into_response())
}

/// The name part of a `Host` header (`[::1]:8000` → `::1`, `example:80` → `example`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':')
        .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host })
}

/// `localhost` (and its subdomains) and loopback addresses.
fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.len() > ".localhost".len()
            && name.get(name.len() - ".localhost".len()..).is_some_and(|end| end.eq_ignore_ascii_case(".localhost"))
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn loopback_and_configured_origins_pass_others_are_refused() {
        let rules = BrowserRules {
            allowed_origins: vec!["https://app.example".into()],
            allowed_hosts: vec![],
            loopback_listener: true,
        };
        assert!(rules.refusal(&headers(&[(header::ORIGIN, "http://localhost:3000")])).is_none());
        assert!(rules.refusal(&headers(&[(header::ORIGIN, "http://[::1]:3000")])).is_none());
        assert!(rules.refusal(&headers(&[(header::ORIGIN, "https://app.example")])).is_none());
        assert!(rules.refusal(&headers(&[(header::ORIGIN, "http://evil.example")])).is_some());
        assert!(rules.refusal(&headers(&[(header::ORIGIN, "null")])).is_some());
        assert!(rules.refusal(&headers(&[])).is_none(), "non-browser clients send no Origin");
    }

    #[test]
    fn a_loopback_listener_answers_loopback_and_listed_host_names_only() {
        let mut rules = BrowserRules { loopback_listener: true, ..Default::default() };
        for ok in ["127.0.0.1:8000", "localhost", "[::1]:8000", "LOCALHOST:1"] {
            assert!(rules.refusal(&headers(&[(header::HOST, ok)])).is_none(), "{ok}");
        }
        assert!(rules.refusal(&headers(&[(header::HOST, "rebound.evil.example:8000")])).is_some());
        rules.allowed_hosts = vec!["relay.internal".into()];
        assert!(rules.refusal(&headers(&[(header::HOST, "relay.internal:8000")])).is_none());
        rules.loopback_listener = false;
        rules.allowed_hosts.clear();
        assert!(rules.refusal(&headers(&[(header::HOST, "relay.internal:8000")])).is_none(), "open listener");
    }
}
