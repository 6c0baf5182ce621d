//! The blue/green switch, for real: Redis, HAProxy running the shipped `deploy/haproxy/haproxy.cfg`
//! (only ports and paths changed, through its environment variables), and relays installed and
//! started by the shipped `deploy/deploy.sh` and `deploy/rollback.sh` (their service commands
//! replaced by ones that start processes). Traffic flows through HAProxy for the whole test on
//! every transport: stateless 2026-07-28 calls, Streamable HTTP sessions, newline and WebSocket
//! clients, some calls slow enough to be running when their colour is stopped. Counted over the
//! whole run: no failed call; sessions that had to move re-initialized (reported); the
//! rate-limit budget stays shared across the switch. Then a build whose health check fails is
//! refused and traffic never moves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use relay_tests::haproxy::{Haproxy, free_port};
use relay_tests::{PATIENCE, RedisServer, plugin_wasm, relay_bin, repo_root, stateless_request, stdio_fixture_entry};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message as Frame;

/// Stops whatever relays the scripts started (they run detached, as under systemd), however
/// the test ends.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for colour in ["blue", "green"] {
            if let Ok(pid) = std::fs::read_to_string(self.0.join(format!("{colour}.pid"))) {
                let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.trim()).status();
            }
        }
    }
}

/// A build directory as deploy.sh takes it: bin/relay, plugins/, config/relay.yaml.
fn build(dir: &Path, name: &str, redis: &RedisServer, backends: &Path, auth: bool) -> PathBuf {
    let build = dir.join(name);
    for sub in ["bin", "plugins", "config"] {
        std::fs::create_dir_all(build.join(sub)).unwrap();
    }
    std::fs::copy(relay_bin(), build.join("bin/relay")).unwrap();
    for plugin in ["rate_limit", "token_auth"] {
        std::fs::copy(plugin_wasm(plugin), build.join(format!("plugins/{plugin}.wasm"))).unwrap();
    }
    // A build whose health check fails: it requires a token nobody was given.
    let auth = if auth {
        "  - name: auth\n    world: auth\n    path: ../plugins/token_auth.wasm\n    grants: {env: [MISSING_TOKEN]}\n    config: {tokens: [{token_env: MISSING_TOKEN, principal: ops}]}\n"
    } else {
        ""
    };
    let yaml = format!(
        "listen: {{trusted_proxies: [127.0.0.1]}}\nbackends_file: {}\nplugin_cache_dir: {}\nshutdown: {{grace_secs: 10}}\nlimits: {{max_sessions_per_address: 20000, max_pending_per_address: 4096}}\nupstream: {{backoff_initial_ms: 50, backoff_max_ms: 500}}\nkv: {{backend: redis, url: '{}', namespace: prod, timeout_ms: 50}}\nplugins:\n{auth}  - name: rate-limit\n    world: policy\n    path: ../plugins/rate_limit.wasm\n    grants: {{clock: true}}\n    config: {{per_minute: 100000, per_tool: {{relay_list_servers: 4}}}}\n",
        backends.display(),
        dir.join("cache").display(),
        redis.url()
    );
    std::fs::write(build.join("config/relay.yaml"), yaml).unwrap();
    build
}

/// Runs deploy/NAME with the settings that point it at this test's processes.
async fn script(dir: &Path, lb: &Haproxy, ports: (u16, u16), name: &str, args: &[&Path]) -> (bool, String) {
    // `;`, not `&&`: only the relay goes to the background (a backgrounded list would hold the
    // script's output open, and `$!` would not be the relay).
    let start = "cd %d; RELAY_INSTANCE=%s RELAY_PORT=%p setsid nohup %d/bin/relay serve --config %d/config/relay.yaml >%d.out 2>>%d.log </dev/null & echo $! >%d.pid";
    let output = Command::new(repo_root().join("deploy").join(name))
        .args(args)
        .env("RELAY_ROOT", dir.join("opt"))
        .env("BLUE_PORT", ports.0.to_string())
        .env("GREEN_PORT", ports.1.to_string())
        .env("START_CMD", start)
        .env("STOP_CMD", "kill -TERM $(cat %d.pid)")
        .env("RUN_AS", "")
        .env("ENV_DIR", dir.join("env"))
        .env("HAPROXY_SOCKET", &lb.socket)
        .env("HAPROXY_STATE_FILE", dir.join("server-state"))
        .env("DRAIN_GRACE", "3")
        .env("SWITCH_SETTLE", "2")
        .env("SWITCH_TIMEOUT", "30")
        .env("READY_TIMEOUT", "30")
        .env("STOP_TIMEOUT", "30")
        .env_remove("RELAY_AUTH_TOKEN")
        .output()
        .await
        .expect("run the script");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    println!("---- {name} ----\n{text}");
    (output.status.success(), text)
}

/// What one client saw over the run.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: Vec<String>,
    /// Reconnections (newline, WebSocket) or re-initializations (HTTP sessions).
    moved: u64,
}

fn call(id: u64, slow: bool) -> Value {
    let (name, arguments) = if slow { ("slow", json!({"ms": 1200})) } else { ("echo", json!({"message": "hi"})) };
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

fn answered(reply: &Value) -> bool {
    let text = reply["result"]["content"][0]["text"].as_str().unwrap_or_default();
    text == "b: hi" || text == "b: slow"
}

fn draining(reply: &Value) -> bool {
    reply["error"]["code"] == -32004
}

const INIT: &str =
    r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{}}}"#;

/// A newline client through HAProxy's TCP frontend: a call whose connection closes before its
/// answer (it was never read: a draining relay answers what it read) or that is refused as
/// draining is sent again on a new connection.
async fn newline_client(port: u16, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut id = 1;
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        if write.write_all(format!("{INIT}\n").as_bytes()).await.is_err() {
            continue;
        }
        match lines.next_line().await {
            Ok(Some(line)) if serde_json::from_str::<Value>(&line).is_ok_and(|r| r.get("result").is_some()) => {}
            _ => {
                tally.moved += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            let sent = call(id, id % 10 == 0).to_string() + "\n";
            if write.write_all(sent.as_bytes()).await.is_err() {
                tally.moved += 1;
                continue 'connect;
            }
            let reply = match lines.next_line().await {
                Ok(Some(line)) => serde_json::from_str::<Value>(&line).unwrap_or_default(),
                _ => {
                    tally.moved += 1;
                    continue 'connect;
                }
            };
            if answered(&reply) {
                tally.ok += 1;
            } else if draining(&reply) {
                tally.moved += 1;
                continue 'connect;
            } else {
                tally.failed.push(format!("newline: {reply}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tally
}

/// A WebSocket client through HAProxy's HTTP frontend, reconnecting like the newline one.
async fn websocket_client(url: String, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut id = 1;
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            tally.moved += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if ws.send(Frame::text(INIT)).await.is_err() || !matches!(ws.next().await, Some(Ok(Frame::Text(_)))) {
            tally.moved += 1;
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            if ws.send(Frame::text(call(id, id % 10 == 0).to_string())).await.is_err() {
                tally.moved += 1;
                continue 'connect;
            }
            let reply = loop {
                match ws.next().await {
                    Some(Ok(Frame::Text(text))) => break serde_json::from_str::<Value>(&text).unwrap_or_default(),
                    Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => {
                        tally.moved += 1;
                        continue 'connect;
                    }
                    Some(Ok(_)) => {}
                }
            };
            if answered(&reply) {
                tally.ok += 1;
            } else if draining(&reply) {
                tally.moved += 1;
                continue 'connect;
            } else {
                tally.failed.push(format!("websocket: {reply}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tally
}

/// A Streamable HTTP client: a session that answers 404 (its colour is gone) or 503 (draining)
/// is opened again, and the call sent again.
async fn session_client(url: String, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let client = reqwest::Client::new();
    let post = |body: String, session: Option<&str>| {
        let mut request = client
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let mut session: Option<String> = None;
    let mut id = 1;
    while !stop.load(Ordering::Relaxed) {
        let Some(current) = session.clone() else {
            match post(INIT.to_owned(), None).await {
                Ok(response) if response.status() == 200 => {
                    session = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            continue;
        };
        id += 1;
        let response = match post(call(id, id % 10 == 0).to_string(), Some(&current)).await {
            Ok(response) => response,
            Err(e) => {
                tally.failed.push(format!("session: {e}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status == 404 || status == 503 {
            tally.moved += 1;
            session = None;
        } else if status == 200 && (body.contains("b: hi") || body.contains("b: slow")) {
            tally.ok += 1;
        } else {
            tally.failed.push(format!("session: {status} {body}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally
}

fn envelope() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": relay_tests::STATELESS_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bluegreen", "version": "1"},
    })
}

async fn stateless_call(url: &str, id: u64, name: &str, arguments: Value) -> (u16, Value) {
    let params = json!({"name": name, "arguments": arguments});
    match stateless_request(url, id, "tools/call", params, envelope()).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let reply = relay_tests::sse_messages(&text).pop().or_else(|| serde_json::from_str(&text).ok());
            (status, reply.unwrap_or_else(|| json!({"body": text})))
        }
        Err(e) => (0, json!({"transport error": e.to_string()})),
    }
}

/// Stateless 2026-07-28 calls: nothing to move, so nothing may fail.
async fn stateless_client(url: String, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut id = 1;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let slow = id % 10 == 0;
        let arguments = if slow { json!({"ms": 1200}) } else { json!({"message": "hi"}) };
        let (status, reply) = stateless_call(&url, id, if slow { "slow" } else { "echo" }, arguments).await;
        if status == 200 && answered(&reply) {
            tally.ok += 1;
        } else {
            tally.failed.push(format!("stateless: {status} {reply}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_rollback_through_haproxy_lose_no_call() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("opt")).unwrap();
    std::fs::create_dir_all(dir.join("env")).unwrap();
    let _reaper = Reaper(dir.join("opt"));
    let redis = RedisServer::start().await;
    let backends = dir.join("backends.yaml");
    std::fs::write(&backends, format!("backends:\n{}", stdio_fixture_entry("b", &[]))).unwrap();
    let ports = (free_port(), free_port());
    let lb = Haproxy::start(dir, ports.0, ports.1).await;

    // First install: blue.
    let (ok, log) = script(dir, &lb, ports, "deploy.sh", &[&build(dir, "build-1", &redis, &backends, false)]).await;
    assert!(ok, "first install failed:\n{log}");
    tokio::time::timeout(PATIENCE, async {
        while lb.serving().await != "blue" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("blue serves through HAProxy");

    // The shared budget: 2 of relay_list_servers' 4 per minute spent on blue.
    let mcp = lb.url("/mcp");
    for id in 0..2 {
        let (status, reply) = stateless_call(&mcp, 900 + id, "relay_list_servers", json!({})).await;
        assert!(status == 200 && reply.get("result").is_some(), "{status} {reply}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(("stateless", tokio::spawn(stateless_client(mcp.clone(), stop.clone()))));
        clients.push(("newline", tokio::spawn(newline_client(lb.tcp, stop.clone()))));
    }
    clients.push(("websocket", tokio::spawn(websocket_client(format!("ws://127.0.0.1:{}/ws", lb.http), stop.clone()))));
    clients.push(("session", tokio::spawn(session_client(mcp.clone(), stop.clone()))));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (ok, log) = script(dir, &lb, ports, "deploy.sh", &[&build(dir, "build-2", &redis, &backends, false)]).await;
    assert!(ok, "deploy to green failed:\n{log}");
    assert_eq!(lb.serving().await, "green");
    assert_eq!(std::fs::read_link(dir.join("opt/relay-active")).unwrap(), dir.join("opt/green"));
    // The budget followed the traffic: green has 2 left of the 4 spent on blue.
    let mut refused = None;
    for id in 0..3 {
        let (_, reply) = stateless_call(&mcp, 910 + id, "relay_list_servers", json!({})).await;
        if reply.get("error").is_some() {
            refused = Some((id, reply));
            break;
        }
    }
    let (nth, reply) = refused.expect("the shared budget runs out on green");
    assert_eq!((nth, reply["error"]["code"].clone()), (2, json!(-32019)), "{reply}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (ok, log) = script(dir, &lb, ports, "rollback.sh", &[]).await;
    assert!(ok, "rollback to blue failed:\n{log}");
    assert_eq!(lb.serving().await, "blue");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A build that fails its health check never gets traffic; blue serves throughout.
    let (ok, log) = script(dir, &lb, ports, "deploy.sh", &[&build(dir, "build-3", &redis, &backends, true)]).await;
    assert!(!ok, "a build that fails its health check was deployed:\n{log}");
    assert!(log.contains("relay health failed"), "{log}");
    assert_eq!(lb.serving().await, "blue");
    assert_eq!(std::fs::read_link(dir.join("opt/relay-active")).unwrap(), dir.join("opt/blue"));
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Relaxed);
    let mut moved = Vec::new();
    let mut failed = Vec::new();
    for (kind, client) in clients {
        let tally = tokio::time::timeout(PATIENCE, client).await.expect("client stops").unwrap();
        assert!(tally.ok > 20, "{kind}: only {} calls answered", tally.ok);
        moved.push(format!("{kind}: {} answered, {} moved", tally.ok, tally.moved));
        failed.extend(tally.failed);
    }
    println!("over the whole run: {moved:?}");
    assert!(failed.is_empty(), "failed calls: {failed:#?}");
    // The colour that is not serving was stopped, and every relay exited cleanly.
    let green_log = std::fs::read_to_string(dir.join("opt/green.log")).unwrap_or_default();
    assert!(green_log.contains("drained"), "green drained when it was retired:\n{green_log}");
}
