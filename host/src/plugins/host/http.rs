//! `wasi:http` (outgoing): requests leave the relay only for hosts in `grants.http` (any other
//! is answered 403 by the relay itself, without leaving the machine), and at most
//! `limits.max_outgoing_requests` of one plugin at once: more wait for one of them to finish
//! (the plugin call's deadline bounds the wait), as a fan-out over more models than that would.

use std::sync::Arc;

use tokio::sync::Semaphore;
use wasmtime_wasi_http::WasiHttpHooks;

/// The `wasi:http` gate: requests leave the relay only for hosts in the plugin's grant, and at
/// most `limits.max_outgoing_requests` at once.
#[derive(Clone)]
pub struct HttpGrant {
    plugin: String,
    hosts: Arc<[String]>,
    outgoing: Arc<Semaphore>,
}

impl HttpGrant {
    /// `plugin` may send to `hosts`, at most `max_outgoing` requests at once.
    pub fn new(plugin: &str, hosts: &[String], max_outgoing: usize) -> Self {
        Self {
            plugin: plugin.to_owned(),
            hosts: hosts.iter().cloned().collect(),
            outgoing: Arc::new(Semaphore::new(max_outgoing)),
        }
    }

    /// Whether a request to `uri` is granted: an entry names the host (any port) or the exact
    /// `host:port` (the scheme's default port counts). Authorities with user info are refused.
    fn allows(&self, uri: &hyper::Uri) -> bool {
        let Some(authority) = uri.authority() else { return false };
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host();
        let default_port = if uri.scheme_str() == Some("https") { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        self.hosts.iter().any(|granted| match granted.rsplit_once(':') {
            Some((granted_host, granted_port)) if granted_port.parse::<u16>().is_ok() => {
                granted_host.eq_ignore_ascii_case(host) && granted_port.parse::<u16>() == Ok(port)
            }
            _ => granted.eq_ignore_ascii_case(host),
        })
    }
}

impl WasiHttpHooks for HttpGrant {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    hyper::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        let authority = request.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        if !self.allows(request.uri()) {
            tracing::warn!(plugin = %self.plugin, host = %authority, "outgoing HTTP refused: host not in grants.http");
            // Answered as a 403 from the relay rather than a transport error, which guests'
            // HTTP clients tend to report as a bare "connection reset".
            // The body is read and dropped frame by frame, so the guest's writes of it succeed.
            return Box::new(async move {
                use http_body_util::BodyExt;
                let mut body = request.into_body();
                while let Some(Ok(_)) = body.frame().await {}
                let why = "the host is not in this plugin's grants.http";
                Ok((refusal(&authority, 403, why), Box::new(async { Ok(()) }) as Box<_>))
            });
        }
        let (outgoing, plugin) = (self.outgoing.clone(), self.plugin.clone());
        Box::new(async move {
            let permit = match outgoing.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    tracing::debug!(%plugin, host = %authority, "outgoing HTTP waits: limits.max_outgoing_requests in flight");
                    outgoing.acquire_owned().await.expect("the outgoing semaphore is never closed")
                }
            };
            // The default sender (hyper, rustls with the webpki roots) does the rest; the permit
            // is held until the request's I/O is done (or dropped with the store).
            let sending = wasmtime_wasi_http::default_hooks().send_request(request, options, fut);
            let (response, io) = Box::into_pin(sending).await?;
            let io = Box::new(async move {
                let _permit = permit;
                Box::into_pin(io).await
            }) as Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;
            Ok((response, io))
        })
    }
}

/// The relay's own answer to a request it did not send.
fn refusal(authority: &str, status: u16, why: &str) -> hyper::Response<wasmtime_wasi_http::WasiBody> {
    use http_body_util::BodyExt;
    let message = format!("the relay refused a request to {authority}: {why}");
    let body = serde_json::json!({"error": {"message": message, "type": "relay_refused"}}).to_string();
    let body = http_body_util::Full::new(bytes::Bytes::from(body)).map_err(|never| match never {}).boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-relay-refused", "grants.http")
        .body(body)
        .expect("a static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_grants_name_a_host_or_an_exact_host_and_port() {
        let hosts = ["api.openai.com", "127.0.0.1:8080", "secure.example:443"].map(str::to_owned);
        let grant = HttpGrant::new("p", &hosts, 1);
        let allows = |uri: &str| grant.allows(&uri.parse().unwrap());
        assert!(allows("https://api.openai.com/v1/chat/completions"));
        assert!(allows("https://API.openai.com:8443/v1"));
        assert!(allows("http://127.0.0.1:8080/v1"));
        assert!(!allows("http://127.0.0.1:9/v1"));
        assert!(!allows("http://127.0.0.1/v1"), "port 80 is not the granted 8080");
        assert!(allows("https://secure.example/x"), "443 is https's default port");
        assert!(!allows("http://secure.example/x"), "80 is not the granted 443");
        assert!(!allows("https://evil.example/"));
        assert!(!allows("https://api.openai.com.evil.example/"));
        assert!(!allows("http://api.openai.com:x@h.evil.example/"), "user info is refused");
        assert!(!allows("/relative"));
    }
}
