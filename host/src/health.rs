//! `relay health`: the reference plan's `health_check.py` as a subcommand. Speaks newline
//! JSON-RPC: `initialize`, then `tools/list`; prints server info and tool count.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Checks the relay at `host:port` (presenting `token`, if any); true when healthy. Prints the
/// verdict like the reference.
pub async fn check(host: &str, port: u16, timeout: Duration, token: Option<&str>) -> bool {
    match tokio::time::timeout(timeout, probe(host, port, token)).await {
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

async fn probe(host: &str, port: u16, token: Option<&str>) -> Result<(Value, usize), String> {
    let stream = TcpStream::connect((host, port)).await.map_err(|e| format!("cannot connect: {e}"))?;
    let (read, mut write) = stream.into_split();
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
