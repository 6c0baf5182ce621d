//! A fast MCP backend for measuring the relay hop: one `echo` tool over WebSocket (`/` or
//! `/ws`) and Streamable HTTP (`POST /mcp`, plain JSON answers), on one port, with as little
//! work per call as a server can do, so the backend is never the bottleneck. Prints
//! `listening on 127.0.0.1:PORT` once it accepts connections.
//!
//! With `--line-port N` it also speaks newline JSON-RPC on that port (the same answers; a line
//! that is not JSON ends the connection), listening with the relay's backlog: `bench.sh` runs
//! the reference scenario's clients against it too, to show what a server that only answers
//! costs on the same machine beside what the relay does.
//!
//! Usage: echo-backend [--port N] [--line-port N]

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn main() {
    let mut port = 0u16;
    let mut line_port = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--line-port" => line_port = Some(args.next().and_then(|p| p.parse().ok()).expect("--line-port N")),
            other => panic!("unknown argument {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        if let Some(line_port) = line_port {
            tokio::spawn(serve_lines(line_port));
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        println!("listening on {}", listener.local_addr().unwrap());
        let app = Router::new().route("/", get(upgrade)).route("/ws", get(upgrade)).route("/mcp", post(http));
        axum::serve(listener, app).await.expect("serve");
    });
}

/// The answer to one JSON-RPC message; `None` for notifications.
fn answer(request: &Value) -> Option<Value> {
    let id = request.get("id")?.clone();
    let params = &request["params"];
    let result = match request["method"].as_str().unwrap_or("") {
        "initialize" => json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "echo-backend", "version": "1"},
        }),
        "tools/list" => json!({"tools": [{
            "name": "echo",
            "description": "Echo a message",
            "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}},
        }]}),
        "tools/call" if params["name"] == "echo" => {
            json!({"content": [{"type": "text", "text": params["arguments"]["message"].as_str().unwrap_or("")}]})
        }
        "ping" => json!({}),
        method => {
            let error = json!({"code": -32601, "message": format!("Method not found: {method}")});
            return Some(json!({"jsonrpc": "2.0", "id": id, "error": error}));
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// Newline JSON-RPC on `port`, a task per connection. The backlog is the relay's: with tokio's
/// default of 1024, a thousand clients connecting at once lose SYNs and wait a second each.
async fn serve_lines(port: u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(([127, 0, 0, 1], port).into()).expect("bind the line port");
    let listener = socket.listen(8192).expect("listen");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(request) = serde_json::from_str::<Value>(&line) else { break };
                if let Some(reply) = answer(&request)
                    && write.write_all(format!("{reply}\n").as_bytes()).await.is_err()
                {
                    break;
                }
            }
        });
    }
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    ws.protocols(["mcp"]).on_upgrade(serve_socket)
}

async fn serve_socket(socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        if let Some(reply) = answer(&request)
            && sink.send(Message::Text(reply.to_string().into())).await.is_err()
        {
            break;
        }
    }
}

async fn http(_headers: HeaderMap, body: String) -> Response {
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(reply) = answer(&request) else { return StatusCode::ACCEPTED.into_response() };
    let mut response = ([(header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response();
    if request["method"] == "initialize" {
        response.headers_mut().insert("mcp-session-id", "echo-session".parse().unwrap());
    }
    response
}
