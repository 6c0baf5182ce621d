//! One MCP client connection over any of the relay's transports, as the URL's scheme picks it:
//! `tcp://` newline JSON-RPC, `ws://` WebSocket, `http://` Streamable HTTP with a session, or
//! (with `--stateless`) HTTP in the 2026-07-28 protocol, where every call stands alone;
//! `wss://` and `https://` over TLS, verified against `--ca` or the Mozilla roots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::reply::Reply;

/// The protocol version a session asks for.
const VERSION: &str = "2025-06-18";
/// The stateless protocol version.
const STATELESS: &str = "2026-07-28";

/// Where to connect and how.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The transport the scheme picks.
    pub transport: Transport,
    /// A bearer token to present.
    pub token: Option<String>,
    /// Give up on any one step after this long.
    pub timeout: Duration,
    /// How `wss://` and `https://` connections verify the server.
    pub tls: Arc<rustls::ClientConfig>,
}

/// The transport a URL's scheme picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `tcp://host:port`.
    Line,
    /// `ws://host:port/path`.
    WebSocket,
    /// `http://host:port/mcp` with `initialize` and `Mcp-Session-Id`.
    Http,
    /// `http://host:port/mcp`, 2026-07-28 (no session).
    Stateless,
}

impl Transport {
    /// Its name in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Line => "newline",
            Transport::WebSocket => "websocket",
            Transport::Http => "http",
            Transport::Stateless => "stateless-http",
        }
    }
}

impl Target {
    /// Parses `url`; `stateless` picks 2026-07-28 for an `http://` URL.
    pub fn parse(
        url: &str,
        stateless: bool,
        token: Option<String>,
        timeout: Duration,
        ca: Option<&Path>,
    ) -> Result<Self, String> {
        let transport = match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("tcp") => Transport::Line,
            Some("ws" | "wss") => Transport::WebSocket,
            Some("http" | "https") if stateless => Transport::Stateless,
            Some("http" | "https") => Transport::Http,
            _ => return Err(format!("{url}: the scheme must be tcp://, ws://, wss://, http:// or https://")),
        };
        if stateless && transport != Transport::Stateless {
            return Err("--stateless needs an http:// URL".into());
        }
        Ok(Self { url: url.to_owned(), transport, token, timeout, tls: tls_config(ca)? })
    }

    /// Where the relay's `/metrics` would be (same host and port, same TLS or not).
    pub fn metrics_url(&self) -> Option<String> {
        let (scheme, rest) = self.url.split_once("://")?;
        let authority = rest.split('/').next()?;
        let scheme = if matches!(scheme, "https" | "wss") { "https" } else { "http" };
        Some(format!("{scheme}://{authority}/metrics"))
    }
}

/// A TLS client configuration trusting the CA certificates in `ca` (PEM), or the Mozilla
/// roots without it.
fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
                roots.add(cert).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why a step failed, by kind (the summary counts them).
#[derive(Debug)]
pub struct Failure {
    /// `connect`, `initialize`, `timeout`, `protocol` or `rpc <code>`.
    pub kind: String,
    /// What happened.
    pub detail: String,
    /// The relay did not act on it, and says so: refused because it drains (`-32004`), a
    /// session it no longer knows (404: initialize again), or never sent at all (the
    /// connection was refused or already closed). A good client sends it again on a fresh
    /// connection. A request sent and then left without any answer is never retryable.
    pub retryable: bool,
}

impl Failure {
    pub(crate) fn new(kind: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self { kind: kind.into(), detail: detail.to_string(), retryable: false }
    }

    pub(crate) fn retryable(kind: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self { retryable: true, ..Self::new(kind, detail) }
    }

    /// A failed HTTP send: retryable when the request never left (no connection).
    fn of_send(error: reqwest::Error) -> Self {
        if error.is_connect() { Self::retryable("connect", error) } else { Self::new("connect", error) }
    }
}

/// An open, initialized client.
pub enum Client {
    Line { reader: BufReader<tokio::net::tcp::OwnedReadHalf>, writer: tokio::net::tcp::OwnedWriteHalf, line: String },
    WebSocket(Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>),
    Http { http: reqwest::Client, session: String },
    Stateless { http: reqwest::Client },
}

/// Builds the HTTP client all HTTP connections of a run share (its pool holds the sockets).
pub fn http_client(target: &Target, connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .use_preconfigured_tls((*target.tls).clone())
        .build()
        .expect("HTTP client")
}

impl Client {
    /// Connects and initializes (no handshake for stateless HTTP).
    pub async fn open(target: &Target, http: &reqwest::Client) -> Result<Self, Failure> {
        let step = async {
            match target.transport {
                Transport::Line => {
                    let address = target.url.trim_start_matches("tcp://").trim_end_matches('/');
                    let stream = TcpStream::connect(address).await.map_err(|e| Failure::retryable("connect", e))?;
                    let _ = stream.set_nodelay(true);
                    let (read, writer) = stream.into_split();
                    let mut client = Client::Line { reader: BufReader::new(read), writer, line: String::new() };
                    let mut params = initialize_params();
                    if let Some(token) = &target.token {
                        params["_meta"] = json!({"authorization": format!("Bearer {token}")});
                    }
                    client.exchange(target, "initialize", params).await.map_err(|f| retag(f, "initialize"))?;
                    client.notify_initialized().await?;
                    Ok(client)
                }
                Transport::WebSocket => {
                    let mut request =
                        target.url.as_str().into_client_request().map_err(|e| Failure::new("connect", e))?;
                    if let Some(token) = &target.token {
                        let value = format!("Bearer {token}").parse().map_err(|e| Failure::new("connect", e))?;
                        request.headers_mut().insert("authorization", value);
                    }
                    let tls = tokio_tungstenite::Connector::Rustls(target.tls.clone());
                    // A refused handshake (503 from a draining relay) or connection was never a call.
                    let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(tls))
                        .await
                        .map_err(|e| Failure::retryable("connect", e))?;
                    let mut client = Client::WebSocket(Box::new(socket));
                    client
                        .exchange(target, "initialize", initialize_params())
                        .await
                        .map_err(|f| retag(f, "initialize"))?;
                    client.notify_initialized().await?;
                    Ok(client)
                }
                Transport::Http => {
                    let body =
                        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": initialize_params()});
                    let response = post(http, target, None, &body).send().await.map_err(Failure::of_send)?;
                    let session = response
                        .headers()
                        .get("mcp-session-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            Failure::new("initialize", format!("HTTP {} without a session", response.status()))
                        })?;
                    answer_of(response).await.map_err(|f| retag(f, "initialize"))?;
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
                    post(http, target, Some(&session), &note)
                        .send()
                        .await
                        .map_err(|e| Failure::new("initialize", e))?;
                    Ok(Client::Http { http: http.clone(), session })
                }
                Transport::Stateless => Ok(Client::Stateless { http: http.clone() }),
            }
        };
        tokio::time::timeout(target.timeout, step).await.map_err(|_| Failure::new("timeout", "opening"))?
    }

    /// Calls `tool`; the result must not be a JSON-RPC error (a tool result with `isError`
    /// counts as an answer).
    pub async fn call(&mut self, target: &Target, tool: &str, arguments: &Value) -> Result<(), Failure> {
        let params = json!({"name": tool, "arguments": arguments});
        tokio::time::timeout(target.timeout, self.exchange(target, "tools/call", params))
            .await
            .map_err(|_| Failure::new("timeout", format!("no answer within {:?}", target.timeout)))?
    }

    /// Closes the connection (an HTTP session is ended with DELETE).
    pub async fn close(self, target: &Target) {
        match self {
            Client::Line { mut writer, .. } => {
                let _ = writer.shutdown().await;
            }
            Client::WebSocket(mut socket) => {
                let _ = SinkExt::close(&mut socket).await;
            }
            Client::Http { http, session } => {
                let mut request = http.delete(&target.url).header("mcp-session-id", session);
                if let Some(token) = &target.token {
                    request = request.bearer_auth(token);
                }
                let _ = request.send().await;
            }
            Client::Stateless { .. } => {}
        }
    }

    async fn notify_initialized(&mut self) -> Result<(), Failure> {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        match self {
            Client::Line { writer, .. } => {
                writer.write_all(format!("{note}\n").as_bytes()).await.map_err(|e| Failure::new("initialize", e))
            }
            Client::WebSocket(socket) => {
                socket.send(Frame::text(note)).await.map_err(|e| Failure::new("initialize", e))
            }
            _ => Ok(()),
        }
    }

    /// Whether the relay has closed this connection already (a drained relay closes a quiet
    /// connection): a good client watches its connection and does not send into a closed one.
    fn closed_by_relay(&mut self) -> bool {
        use futures::FutureExt;
        use tokio::io::AsyncBufReadExt;
        match self {
            Client::Line { reader, .. } => {
                matches!(reader.fill_buf().now_or_never(), Some(Ok([]) | Err(_)))
            }
            Client::WebSocket(socket) => {
                matches!(socket.next().now_or_never(), Some(None | Some(Err(_)) | Some(Ok(Frame::Close(_)))))
            }
            _ => false,
        }
    }

    /// One request and its answer.
    async fn exchange(&mut self, target: &Target, method: &str, params: Value) -> Result<(), Failure> {
        if self.closed_by_relay() {
            return Err(Failure::retryable("closed", "the relay closed the connection before the call was sent"));
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        match self {
            Client::Line { reader, writer, line } => {
                // Not written: the relay never saw it.
                writer.write_all(format!("{body}\n").as_bytes()).await.map_err(|e| Failure::retryable("closed", e))?;
                loop {
                    line.clear();
                    if reader.read_line(line).await.map_err(|e| Failure::new("protocol", e))? == 0 {
                        return Err(Failure::new("protocol", "connection closed"));
                    }
                    let reply = Reply::parse(line)?;
                    if reply.answers("1") {
                        return reply.outcome();
                    }
                }
            }
            Client::WebSocket(socket) => {
                socket.send(Frame::text(body.to_string())).await.map_err(|e| Failure::retryable("closed", e))?;
                while let Some(frame) = socket.next().await {
                    let Frame::Text(text) = frame.map_err(|e| Failure::new("protocol", e))? else { continue };
                    let reply = Reply::parse(text.as_str())?;
                    if reply.answers("1") {
                        return reply.outcome();
                    }
                }
                Err(Failure::new("protocol", "connection closed"))
            }
            Client::Http { http, session } => {
                let response = post(http, target, Some(session), &body).send().await.map_err(Failure::of_send)?;
                if response.status() == reqwest::StatusCode::NOT_FOUND {
                    // The session is unknown here: MCP says initialize again; nothing ran.
                    return Err(Failure::retryable("session gone", "HTTP 404 for the session; initialize again"));
                }
                answer_of(response).await
            }
            Client::Stateless { http } => {
                let mut body = body;
                body["params"]["_meta"] = json!({
                    "io.modelcontextprotocol/protocolVersion": STATELESS,
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": {"name": "relay-load", "version": "1"},
                });
                let name = body["params"]["name"].as_str().unwrap_or("").to_owned();
                let mut request = post(http, target, None, &body)
                    .header("mcp-protocol-version", STATELESS)
                    .header("mcp-method", method);
                if !name.is_empty() {
                    request = request.header("mcp-name", name);
                }
                let response = request.send().await.map_err(Failure::of_send)?;
                answer_of(response).await
            }
        }
    }
}

fn initialize_params() -> Value {
    json!({"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "relay-load", "version": "1"}})
}

fn retag(failure: Failure, kind: &str) -> Failure {
    if failure.kind == "protocol" { Failure { kind: kind.into(), ..failure } } else { failure }
}

/// How many times a call is sent again after a retryable failure.
const RETRIES: u32 = 8;

/// Opens a client, like a good client: a refusal the relay did not act on (it drains, the
/// connection was refused) is tried again on a fresh connection, each try counted in
/// `retried`.
pub async fn open_retrying(
    target: &Target,
    http: &reqwest::Client,
    retried: &(dyn Fn() + Sync),
) -> Result<Client, Failure> {
    let mut tries = 0;
    loop {
        match Client::open(target, http).await {
            Err(failure) if failure.retryable && tries < RETRIES => {
                tries += 1;
                retried();
                tokio::time::sleep(backoff(tries)).await;
            }
            other => return other,
        }
    }
}

/// Calls `tool` on `client` like a good client: a call the relay refused without acting on it
/// (it drains; a session it no longer knows; never sent on a closing connection) is sent again
/// on a fresh connection (`client` is replaced), each try counted in `retried`. A call sent and
/// left without an answer is a failure, never retried.
pub async fn call_retrying(
    client: &mut Client,
    target: &Target,
    http: &reqwest::Client,
    tool: &str,
    arguments: &Value,
    retried: &(dyn Fn() + Sync),
) -> Result<(), Failure> {
    let mut tries = 0;
    loop {
        match client.call(target, tool, arguments).await {
            Err(failure) if failure.retryable && tries < RETRIES => {
                tries += 1;
                retried();
                tokio::time::sleep(backoff(tries)).await;
                *client = open_retrying(target, http, retried).await?;
            }
            other => return other,
        }
    }
}

fn backoff(tries: u32) -> Duration {
    Duration::from_millis(25u64 << tries.min(5))
}

fn post(http: &reqwest::Client, target: &Target, session: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
    let mut request = http
        .post(&target.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session).header("mcp-protocol-version", VERSION);
    }
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    request
}

/// The JSON-RPC answer in an HTTP response: the body, or the SSE event that carries it.
async fn answer_of(response: reqwest::Response) -> Result<(), Failure> {
    let status = response.status();
    let sse = response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = response.text().await.map_err(|e| Failure::new("protocol", e))?;
    let reply = if sse {
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| Reply::parse(data.trim()).ok())
            .find(Reply::is_answer)
            .ok_or_else(|| Failure::new("protocol", "the event stream ended without an answer"))?
    } else {
        Reply::parse(&text).map_err(|_| Failure::new("protocol", format!("HTTP {status}: {text:.120}")))?
    };
    reply.outcome()
}
