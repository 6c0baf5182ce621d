//! A WebSocket MCP server for the end-to-end tests: a few tools with predictable results, plus
//! misbehaviours on demand (slow, hanging, garbage). Prints `listening on 127.0.0.1:PORT` on
//! stdout once it accepts connections.
//!
//! Usage: fixture-ws-server [--port N] [--name NAME] [--hang-initialize] [--max-sessions N]
//! [--close-extra-sessions] [--logging] (`--logging`: it offers the logging capability;
//! `--max-sessions`: a connection past N open ones is closed before its
//! WebSocket handshake; `--close-extra-sessions`: one opened while another is open is closed
//! right after its `initialize` is answered)
//!
//! Tools: `echo {message}` → "NAME: message"; `add {a, b}`; `slow {ms, message}`;
//! `hang` (never answers); `garbage` (sends a non-JSON frame, never answers);
//! `register_tool {name}` (adds an echo-like tool and sends `tools/list_changed`);
//! `cancellations` (how many `notifications/cancelled` it has received that name a request in
//! flight on their own session); `sessions` (how many
//! `initialize` requests it has answered); `meta` (the request's `_meta` as JSON text);
//! `log {level, message}` (a `notifications/message` at `level`, sent when it meets the level its
//! session was set to with `logging/setLevel`, `info` until then); `big {bytes}` (an answer of
//! that many bytes of text) and `big_runs` (how many times `big` ran).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

struct Options {
    port: u16,
    name: String,
    hang_initialize: bool,
    max_sessions: usize,
    close_extra_sessions: bool,
    logging: bool,
}

fn options() -> Options {
    let mut opts = Options {
        port: 0,
        name: "fixture".into(),
        hang_initialize: false,
        max_sessions: usize::MAX,
        close_extra_sessions: false,
        logging: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => opts.port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--name" => opts.name = args.next().expect("--name NAME"),
            "--hang-initialize" => opts.hang_initialize = true,
            "--close-extra-sessions" => opts.close_extra_sessions = true,
            "--logging" => opts.logging = true,
            "--max-sessions" => opts.max_sessions = args.next().and_then(|n| n.parse().ok()).expect("--max-sessions N"),
            other => panic!("unknown argument {other}"),
        }
    }
    opts
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let opts = Arc::new(options());
    let listener = TcpListener::bind(("127.0.0.1", opts.port)).await.expect("bind");
    println!("listening on {}", listener.local_addr().unwrap());
    let extra_tools: Arc<Mutex<Vec<String>>> = Arc::default();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        if open.load(std::sync::atomic::Ordering::Relaxed) >= opts.max_sessions {
            drop(stream);
            continue;
        }
        let opts = opts.clone();
        let extra_tools = extra_tools.clone();
        let open = OpenGuard::new(&open);
        let extra = open.0.load(std::sync::atomic::Ordering::Relaxed) > 1;
        tokio::spawn(async move {
            let _open = open;
            let Ok(socket) = tokio_tungstenite::accept_async(stream).await else { return };
            let (mut sink, mut stream) = socket.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            // This session's requests not answered yet: a cancellation counts only when it
            // names one of them (the ids are the session's own).
            let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
            // The session's log level (its rank in LOG_LEVELS): info until set.
            let level = Arc::new(std::sync::atomic::AtomicUsize::new(1));
            let answered = in_flight.clone();
            tokio::spawn(async move {
                while let Some(text) = rx.recv().await {
                    if let Ok(message) = serde_json::from_str::<Value>(&text)
                        && message.get("method").is_none()
                        && let Some(id) = message.get("id")
                    {
                        answered.lock().unwrap().remove(&id.to_string());
                    }
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if request["method"] == "notifications/cancelled"
                    && in_flight.lock().unwrap().contains(&request["params"]["requestId"].to_string())
                {
                    CANCELLATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(id) = request.get("id")
                    && request.get("method").is_some()
                {
                    in_flight.lock().unwrap().insert(id.to_string());
                }
                let opts = opts.clone();
                let tx = tx.clone();
                let extra_tools = extra_tools.clone();
                let level = level.clone();
                let close_after = request["method"] == "initialize" && extra && opts.close_extra_sessions;
                tokio::spawn(async move { handle(&opts, &extra_tools, request, &tx, &level).await });
                if close_after {
                    // Its answer goes out first; then the writer ends with the last sender.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return;
                }
            }
        });
    }
}

/// One open connection, counted until it ends.
struct OpenGuard(Arc<std::sync::atomic::AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

static CANCELLATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static BIG_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// MCP's log levels, least severe first.
const LOG_LEVELS: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

fn rank(level: &Value) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| level.as_str() == Some(l))
}

async fn handle(
    opts: &Options,
    extra: &Mutex<Vec<String>>,
    request: Value,
    tx: &mpsc::UnboundedSender<String>,
    level: &std::sync::atomic::AtomicUsize,
) {
    let Some(id) = request.get("id").cloned() else { return };
    let method = request["method"].as_str().unwrap_or("");
    let params = &request["params"];
    let result = match method {
        "initialize" if opts.hang_initialize => return,
        "initialize" => {
            SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": if opts.logging {
                json!({"tools": {"listChanged": true}, "logging": {}})
            } else {
                json!({"tools": {"listChanged": true}})
            },
            "serverInfo": {"name": opts.name, "version": "1.0.0"},
            })
        }
        "ping" => json!({}),
        "logging/setLevel" => {
            level.store(rank(&params["level"]).unwrap_or(1), std::sync::atomic::Ordering::Relaxed);
            json!({})
        }
        "tools/list" => json!({"tools": tools(extra)}),
        "tools/call" => {
            let args = &params["arguments"];
            match params["name"].as_str().unwrap_or("") {
                "echo" => text(format!("{}: {}", opts.name, args["message"].as_str().unwrap_or(""))),
                "add" => text((args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)).to_string()),
                "slow" => {
                    tokio::time::sleep(Duration::from_millis(args["ms"].as_u64().unwrap_or(1000))).await;
                    text(format!("{}: {}", opts.name, args["message"].as_str().unwrap_or("done")))
                }
                "hang" => return,
                // One progress notification for the call's token (with a `message` of
                // `message_bytes`, if given), then (after `ms`) the answer.
                "progress" => {
                    let token = params["_meta"]["progressToken"].clone();
                    let mut note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": 1, "total": 2}});
                    if let Some(bytes) = args["message_bytes"].as_u64() {
                        note["params"]["message"] = "x".repeat(bytes as usize).into();
                    }
                    let _ = tx.send(note.to_string());
                    if let Some(ms) = args["ms"].as_u64() {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    text(format!("{}: progressed", opts.name))
                }
                // What the relay passed on in `_meta` (trace context, progress token).
                "meta" => text(params.get("_meta").cloned().unwrap_or(Value::Null).to_string()),
                "log" => {
                    if rank(&args["level"]).is_some_and(|r| r >= level.load(std::sync::atomic::Ordering::Relaxed)) {
                        let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                            "params": {"level": args["level"], "data": args["message"]}});
                        let _ = tx.send(note.to_string());
                    }
                    text(format!("{}: logged", opts.name))
                }
                "cancellations" => text(CANCELLATIONS.load(std::sync::atomic::Ordering::Relaxed).to_string()),
                "big" => {
                    BIG_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    text("x".repeat(args["bytes"].as_u64().unwrap_or(0) as usize))
                }
                "big_runs" => text(BIG_RUNS.load(std::sync::atomic::Ordering::Relaxed).to_string()),
                "sessions" => text(SESSIONS.load(std::sync::atomic::Ordering::Relaxed).to_string()),
                "garbage" => {
                    let _ = tx.send("this is not json {{{".into());
                    return;
                }
                "register_tool" => {
                    let name = args["name"].as_str().unwrap_or("extra").to_owned();
                    extra.lock().unwrap().push(name.clone());
                    let _ =
                        tx.send(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}).to_string());
                    text(format!("registered {name}"))
                }
                name if extra.lock().unwrap().iter().any(|t| t == name) => text(format!("{}: {name}", opts.name)),
                name => {
                    let error = json!({"code": -32602, "message": format!("Unknown tool: {name}")});
                    let _ = tx.send(json!({"jsonrpc": "2.0", "id": id, "error": error}).to_string());
                    return;
                }
            }
        }
        _ => {
            let error = json!({"code": -32601, "message": format!("Method not found: {method}")});
            let _ = tx.send(json!({"jsonrpc": "2.0", "id": id, "error": error}).to_string());
            return;
        }
    };
    let _ = tx.send(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string());
}

fn text(text: String) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

fn tools(extra: &Mutex<Vec<String>>) -> Vec<Value> {
    let object = |props: Value| json!({"type": "object", "properties": props});
    let mut tools = vec![
        json!({"name": "echo", "description": "Echo a message", "inputSchema": object(json!({"message": {"type": "string"}}))}),
        json!({"name": "add", "description": "Add two numbers", "inputSchema": object(json!({"a": {"type": "number"}, "b": {"type": "number"}}))}),
        json!({"name": "slow", "description": "Answer after ms milliseconds", "inputSchema": object(json!({"ms": {"type": "integer"}, "message": {"type": "string"}}))}),
        json!({"name": "hang", "description": "Never answer", "inputSchema": object(json!({}))}),
        json!({"name": "progress", "description": "Report progress once, then answer", "inputSchema": object(json!({}))}),
        json!({"name": "meta", "description": "The request's _meta", "inputSchema": object(json!({}))}),
        json!({"name": "garbage", "description": "Send a non-JSON frame", "inputSchema": object(json!({}))}),
        json!({"name": "register_tool", "description": "Add a tool", "inputSchema": object(json!({"name": {"type": "string"}}))}),
        json!({"name": "cancellations", "description": "Count received cancellations", "inputSchema": object(json!({}))}),
        json!({"name": "big", "description": "Answer bytes bytes of text", "inputSchema": object(json!({"bytes": {"type": "integer"}}))}),
        json!({"name": "big_runs", "description": "How many times big ran", "inputSchema": object(json!({}))}),
        json!({"name": "sessions", "description": "Count answered initialize requests", "inputSchema": object(json!({}))}),
        json!({"name": "log", "description": "Send a log message at a level", "inputSchema": object(json!({"level": {"type": "string"}, "message": {"type": "string"}}))}),
    ];
    for name in extra.lock().unwrap().iter() {
        tools.push(json!({"name": name, "inputSchema": object(json!({}))}));
    }
    tools
}
