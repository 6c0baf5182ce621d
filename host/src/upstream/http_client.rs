//! The HTTP client the Streamable HTTP upstream speaks through: hyper's pooled client over
//! plain TCP or rustls (webpki roots), HTTP/1.1 with keep-alive, one pool per upstream.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::UpstreamError;

/// A pooled client for `http://` and `https://` endpoints.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Idle keep-alive connections kept per host: enough for the calls one upstream runs at once.
const IDLE_PER_HOST: usize = 256;

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A client whose connection attempts give up after `connect_timeout`.
pub fn build(connect_timeout: Duration) -> Result<HttpClient, UpstreamError> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build(connector))
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
