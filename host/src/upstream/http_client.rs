//! The HTTP connector every outgoing HTTP request of the relay uses (plain TCP or rustls with
//! the webpki roots, HTTP/1.1), hyper's pooled client for the credential flows, and the rules
//! the Streamable HTTP upstream follows (same-origin redirects, error chains).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::UpstreamError;

/// A pooled client for `http://` and `https://` endpoints.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Idle keep-alive connections kept per origin: enough for the calls one upstream runs at once
/// (for this client and for an upstream's own connections, [`super::http_pool`]).
pub(super) const IDLE_PER_HOST: usize = 256;

/// How long an idle keep-alive connection is kept before it is closed instead of reused.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A client whose connection attempts give up after `connect_timeout` (the token endpoints
/// and discovery of [`crate::credentials`]; MCP upstreams use [`super::http_pool`]).
pub fn build(connect_timeout: Duration) -> Result<HttpClient, UpstreamError> {
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build(connector(connect_timeout)))
}

/// Opens TCP (no delay) or TLS connections to `http://` and `https://` origins, giving up
/// after `connect_timeout`.
pub fn connector(connect_timeout: Duration) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().wrap_connector(tcp)
}

/// Where a `307`/`308` answer from `from` sends the request, when that is the same origin
/// (scheme, host and port): a server that moved its endpoint (`/mcp` to `/mcp/`, as some
/// frameworks do). `None` for another origin, which would receive the configured credential
/// headers, or for a `Location` that is not a URI.
pub fn same_origin_redirect(from: &Uri, location: &HeaderValue) -> Option<Uri> {
    let location = location.to_str().ok()?;
    let target = if location.starts_with('/') && !location.starts_with("//") {
        let mut parts = from.clone().into_parts();
        parts.path_and_query = Some(location.parse().ok()?);
        Uri::from_parts(parts).ok()?
    } else {
        location.parse::<Uri>().ok()?
    };
    (target.scheme() == from.scheme() && target.authority() == from.authority()).then_some(target)
}

/// An error and its causes in one line (the outermost message alone rarely says what failed).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_redirects_are_followed() {
        let from: Uri = "http://127.0.0.1:8000/mcp".parse().unwrap();
        let to = |location: &str| same_origin_redirect(&from, &HeaderValue::from_str(location).unwrap());
        assert_eq!(to("/mcp/").unwrap().to_string(), "http://127.0.0.1:8000/mcp/");
        assert_eq!(to("http://127.0.0.1:8000/v2/mcp").unwrap().to_string(), "http://127.0.0.1:8000/v2/mcp");
        assert_eq!(to("http://127.0.0.1:9000/mcp"), None, "another port");
        assert_eq!(to("https://127.0.0.1:8000/mcp"), None, "another scheme");
        assert_eq!(to("//evil.example/mcp"), None, "scheme-relative: another host");
        assert_eq!(to("http://evil.example/mcp"), None);
    }
}
