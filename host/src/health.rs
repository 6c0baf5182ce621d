//! `relay health`: the reference plan's `health_check.py` as a subcommand. Speaks newline
//! JSON-RPC: `initialize`, then `tools/list`; prints server info and tool count. With
//! `--ready` it only asks `GET /readyz` (no login, no session: what a container's frequent
//! health check should cost).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::transport::{certificates, private_key};

/// Checks the relay at `host:port` (presenting `token`, if any); true when healthy. Prints the
/// verdict like the reference.
pub async fn check(host: &str, port: u16, timeout: Duration, token: Option<&str>, tls: Option<&TlsCheck>) -> bool {
    match tokio::time::timeout(timeout, connect_and_probe(host, port, token, tls)).await {
        Ok(Ok((server, tools))) => {
            println!("✅ Health check PASSED for {host}:{port}");
            println!("   Server: {server}");
            println!("   Tools: {tools} available");
            true
        }
        Ok(Err(e)) => {
            println!("❌ Health check FAILED for {host}:{port}");
            println!("   {e}");
            false
        }
        Err(_) => {
            println!("❌ Health check TIMEOUT for {host}:{port}");
            false
        }
    }
}

/// `--ready`: whether `GET /readyz` on `host:port` says 200 within `timeout` (plain HTTP: the
/// probes stay reachable in the clear even when the port requires TLS).
pub async fn ready(host: &str, port: u16, timeout: Duration) -> bool {
    use hyper_util::client::legacy::Client;
    let client =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = match format!("http://{host}:{port}/readyz").parse::<hyper::Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            println!("❌ {host}:{port}: {e}");
            return false;
        }
    };
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(response)) if response.status() == hyper::StatusCode::OK => {
            println!("✅ {host}:{port} is ready");
            true
        }
        Ok(Ok(response)) => {
            println!("❌ {host}:{port} is not ready (/readyz said {})", response.status());
            false
        }
        Ok(Err(e)) => {
            println!("❌ {host}:{port}: {e}");
            false
        }
        Err(_) => {
            println!("❌ {host}:{port}: /readyz did not answer in time");
            false
        }
    }
}

/// `--tls`: speak TLS, verifying the relay's certificate against `ca` (PEM) or, without it,
/// the Mozilla roots.
pub struct TlsCheck {
    /// A PEM file of the CA certificates to trust.
    pub ca: Option<std::path::PathBuf>,
    /// The name the certificate must have (and SNI), when not the host connected to.
    pub server_name: Option<String>,
    /// The client certificate chain and key (PEM files) to present, for a relay requiring one.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

async fn connect_and_probe(
    host: &str,
    port: u16,
    token: Option<&str>,
    tls: Option<&TlsCheck>,
) -> Result<(Value, usize), String> {
    let stream = TcpStream::connect((host, port)).await.map_err(|e| format!("cannot connect: {e}"))?;
    let Some(tls) = tls else {
        let (read, write) = stream.into_split();
        return probe(read, write, token).await;
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for cert in certificates(ca).map_err(|e| e.to_string())? {
                roots.add(cert).map_err(|e| e.to_string())?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match &tls.identity {
        Some((cert, key)) => {
            let chain = certificates(cert).map_err(|e| e.to_string())?;
            let key = private_key(key).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    let server_name = tls.server_name.as_deref().unwrap_or(host);
    let name =
        rustls_pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| format!("{server_name}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let (read, write) = tokio::io::split(stream);
    probe(read, write, token).await
}

async fn probe<R, W>(read: R, mut write: W, token: Option<&str>) -> Result<(Value, usize), String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut lines = BufReader::new(read).lines();
    let mut call = async |request: Value| -> Result<Value, String> {
        write.write_all(format!("{request}\n").as_bytes()).await.map_err(|e| e.to_string())?;
        let line = lines.next_line().await.map_err(|e| e.to_string())?.ok_or("connection closed")?;
        serde_json::from_str(&line).map_err(|e| format!("invalid response: {e}"))
    };
    let mut params = json!({"protocolVersion": crate::mcp::version::LATEST, "capabilities": {}, "clientInfo": {"name": "relay-health"}});
    if let Some(token) = token {
        params["_meta"] = json!({"authorization": format!("Bearer {token}")});
    }
    let init = call(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})).await?;
    let server = init.pointer("/result/serverInfo").cloned().ok_or_else(|| format!("Invalid response: {init}"))?;
    let list = call(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await?;
    let tools =
        list.pointer("/result/tools").and_then(Value::as_array).ok_or_else(|| format!("Invalid response: {list}"))?;
    Ok((server, tools.len()))
}
