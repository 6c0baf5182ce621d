//! A mock of the Godot WebSocket logger that `joshua_logger` talks to: an MCP server on
//! WebSocket with one tool, `logger_log {level, message, component, data, trace_id}`. Each
//! record received is appended as one JSON line to the `--record` file. Prints
//! `listening on 127.0.0.1:PORT` once it accepts connections.
//!
//! Usage: fixture-logger --record FILE [--port N] [--silent]
//! `--silent` answers the handshake on its first connection but never a `logger_log` call there
//! (a logger that hangs); later connections are answered.

use std::io::Write;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut port, mut record, mut silent) = (0u16, None, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--record" => record = Some(args.next().expect("--record FILE")),
            "--silent" => silent = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let record = record.expect("--record FILE");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("listening on {}", listener.local_addr().unwrap());
    for connection in 0.. {
        let (stream, _) = listener.accept().await.expect("accept");
        let record = record.clone();
        let silent = silent && connection == 0;
        tokio::spawn(async move {
            let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else { return };
            while let Some(Ok(frame)) = socket.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let Some(id) = request.get("id").cloned() else { continue };
                let result = match request["method"].as_str() {
                    Some("initialize") => json!({
                        "protocolVersion": request["params"]["protocolVersion"],
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "godot-logger", "version": "1"},
                    }),
                    Some("tools/list") => json!({"tools": [{"name": "logger_log", "inputSchema": {"type": "object"}}]}),
                    Some("tools/call") if request["params"]["name"] == "logger_log" => {
                        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&record).unwrap();
                        writeln!(file, "{}", request["params"]["arguments"]).unwrap();
                        if silent {
                            continue;
                        }
                        json!({"content": [{"type": "text", "text": "logged"}]})
                    }
                    _ => json!({}),
                };
                let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
                if socket.send(Message::text(reply.to_string())).await.is_err() {
                    break;
                }
            }
        });
    }
}
