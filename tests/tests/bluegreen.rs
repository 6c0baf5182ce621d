//! The blue/green switch, for real: Redis, HAProxy running the shipped `deploy/haproxy/haproxy.cfg`
//! (only ports and paths changed, through its environment variables), and relays installed and
//! started by the shipped `deploy/deploy.sh` and `deploy/rollback.sh` (their service commands
//! replaced by ones that start processes). Traffic flows through HAProxy for the whole test:
//! `relay-load` on all four client kinds (stateless 2026-07-28, Streamable HTTP sessions,
//! newline, WebSocket), each with quick calls and with calls slow enough to be running when
//! their colour is stopped, plus held sessions that call now and then. Counted over the whole
//! run of three switches (deploy, rollback, deploy), for every kind: no failed call (a retry of what the relay refused without acting on it
//! is counted apart); the held Streamable HTTP session keeps its id across both switches (the
//! new colour takes it up); the old colour is retired in seconds; the rate-limit budget stays
//! shared. Then a build whose health check fails is refused and traffic never moves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use relay_tests::haproxy::{Haproxy, free_port};
use relay_tests::{
    PATIENCE, RedisServer, load_bin, plugin_wasm, relay_bin, repo_root, stateless_request, stdio_fixture_entry,
};
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
    build_in(dir, name, redis, "prod", backends, auth)
}

/// [`build`] keeping its shared state under kv `namespace`.
fn build_in(dir: &Path, name: &str, redis: &RedisServer, namespace: &str, backends: &Path, auth: bool) -> PathBuf {
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
        "listen: {{trusted_proxies: [127.0.0.1]}}\nbackends_file: {}\nplugin_cache_dir: {}\nshutdown: {{grace_secs: 10}}\nlimits: {{max_sessions_per_address: 20000, max_pending_per_address: 4096}}\nupstream: {{backoff_initial_ms: 50, backoff_max_ms: 500}}\nkv: {{backend: redis, url: '{}', namespace: {namespace}, timeout_ms: 50}}\nplugins:\n{auth}  - name: rate-limit\n    world: policy\n    path: ../plugins/rate_limit.wasm\n    grants: {{clock: true}}\n    config: {{per_minute: 100000, per_tool: {{relay_list_servers: 4}}}}\n",
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
    let began = std::time::Instant::now();
    let start = "cd %d; RELAY_INSTANCE=%s RELAY_PORT=%p setsid nohup %d/bin/relay serve --config %d/config/relay.yaml >%d.out 2>>%d.log </dev/null & echo $! >%d.pid";
    let output = Command::new(repo_root().join("deploy").join(name))
        .args(args)
        .env("RELAY_ROOT", dir.join("opt"))
        .env("BLUE_PORT", ports.0.to_string())
        .env("GREEN_PORT", ports.1.to_string())
        .env("START_CMD", start)
        .env("STOP_CMD", "kill -TERM $(cat %d.pid)")
        .env("ALIVE_CMD", "kill -0 $(cat %d.pid)")
        .env("LOG_CMD", "tail -n 20 %d.log")
        .env("RUN_AS", "")
        .env("ENV_DIR", dir.join("env"))
        .env("HAPROXY_SOCKET", &lb.socket)
        .env("HAPROXY_STATE_FILE", dir.join("server-state"))
        .env("SWITCH_SETTLE", "2")
        .env("SWITCH_TIMEOUT", "30")
        .env("READY_TIMEOUT", "30")
        .env("STOP_TIMEOUT", "30")
        .env_remove("RELAY_AUTH_TOKEN")
        .output()
        .await
        .expect("run the script");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    println!("---- {name} ({:.1} s) ----\n{text}", began.elapsed().as_secs_f64());
    (output.status.success(), text)
}

/// What one held client saw over the run.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: Vec<String>,
    /// Connections the relay closed while the client was idle (it reconnected).
    reconnected: u64,
    /// Calls the relay refused without acting on them (draining), sent again.
    retried: u64,
}

fn call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}})
}

fn answered(reply: &Value) -> bool {
    reply["result"]["content"][0]["text"] == "b: hi"
}

fn draining(reply: &Value) -> bool {
    reply["error"]["code"] == -32004
}

const INIT: &str =
    r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{}}}"#;

/// How often a held session calls.
const HELD_EVERY: Duration = Duration::from_millis(700);

/// A held newline session through HAProxy's TCP frontend, calling now and then and watching its
/// connection meanwhile, as a good client does: a connection the relay closed while it was idle
/// is opened again; a call refused as draining is sent again on a new connection; a call left
/// without an answer is a failure.
async fn held_newline(port: u16, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut id = 1;
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let opened = write.write_all(format!("{INIT}\n").as_bytes()).await.is_ok()
            && matches!(lines.next_line().await, Ok(Some(line)) if line.contains("\"result\""));
        if !opened {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            // Idle: the relay may close the connection (it drains); then connect again.
            tokio::select! {
                () = tokio::time::sleep(HELD_EVERY) => {}
                line = lines.next_line() => {
                    if !matches!(line, Ok(Some(_))) {
                        tally.reconnected += 1;
                        continue 'connect;
                    }
                }
            }
            id += 1;
            if write.write_all(format!("{}\n", call(id)).as_bytes()).await.is_err() {
                tally.reconnected += 1;
                continue 'connect;
            }
            let reply = match lines.next_line().await {
                Ok(Some(line)) => serde_json::from_str::<Value>(&line).unwrap_or_default(),
                _ => {
                    tally.failed.push(format!("held newline: call {id} got no answer"));
                    continue 'connect;
                }
            };
            if answered(&reply) {
                tally.ok += 1;
            } else if draining(&reply) {
                tally.retried += 1;
                continue 'connect;
            } else {
                tally.failed.push(format!("held newline: {reply}"));
            }
        }
    }
    tally
}

/// A held WebSocket session through HAProxy's HTTP frontend, behaving like the newline one.
async fn held_websocket(url: String, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut id = 1;
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if ws.send(Frame::text(INIT)).await.is_err() || !matches!(ws.next().await, Some(Ok(Frame::Text(_)))) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                () = tokio::time::sleep(HELD_EVERY) => {}
                frame = ws.next() => {
                    if !matches!(frame, Some(Ok(Frame::Text(_) | Frame::Ping(_) | Frame::Pong(_)))) {
                        tally.reconnected += 1;
                        continue 'connect;
                    }
                }
            }
            id += 1;
            if ws.send(Frame::text(call(id).to_string())).await.is_err() {
                tally.reconnected += 1;
                continue 'connect;
            }
            let reply = loop {
                match ws.next().await {
                    Some(Ok(Frame::Text(text))) => break serde_json::from_str::<Value>(&text).unwrap_or_default(),
                    Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => {
                        tally.failed.push(format!("held websocket: call {id} got no answer"));
                        continue 'connect;
                    }
                    Some(Ok(_)) => {}
                }
            };
            if answered(&reply) {
                tally.ok += 1;
            } else if draining(&reply) {
                tally.retried += 1;
                continue 'connect;
            } else {
                tally.failed.push(format!("held websocket: {reply}"));
            }
        }
    }
    tally
}

/// One Streamable HTTP session held for the whole run: every call goes out under the same
/// `Mcp-Session-Id`, whichever colour serves it. A call refused as draining (503) is sent
/// again; a 404 (the session lost) is a failure.
async fn held_session(url: String, stop: Arc<AtomicBool>) -> Tally {
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
    let response = post(INIT.to_owned(), None).await.expect("initialize the held session");
    let session = response.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let mut id = 1;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(HELD_EVERY).await;
        id += 1;
        loop {
            let (status, body) = match post(call(id).to_string(), Some(&session)).await {
                Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            };
            if status == 200 && body.contains("b: hi") {
                tally.ok += 1;
            } else if status == 503 && body.contains("-32004") {
                tally.retried += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            } else {
                tally.failed.push(format!("held session: {status} {body}"));
            }
            break;
        }
    }
    tally
}

/// `relay-load` at `url` for `secs` (`extra` arguments: `--stateless`, the tool), its summary.
fn load(url: String, secs: u64, slow: bool, stateless: bool) -> tokio::task::JoinHandle<Value> {
    tokio::spawn(async move {
        let mut command = Command::new(load_bin());
        command.arg(&url).args(["--scenario", "rate", "--json", "--timeout", "20"]);
        command.args(["--duration", &secs.to_string()]);
        if slow {
            command.args(["--clients", "2", "--tool", "slow", "--args", r#"{"ms": 1200}"#]);
        } else {
            command.args(["--clients", "2", "--rate", "40", "--tool", "echo", "--args", r#"{"message": "hi"}"#]);
        }
        if stateless {
            command.arg("--stateless");
        }
        let output = command.kill_on_drop(true).output().await.expect("run relay-load");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("relay-load said: {stdout}"))
    })
}

/// Seconds the script took to retire the old colour ("... stopped after Ns").
fn retired_in(log: &str) -> Option<u64> {
    let at = log.find(" stopped after ")? + " stopped after ".len();
    log[at..].split('s').next()?.parse().ok()
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

    // Load for the whole sequence below: every kind, quick calls and slow ones.
    const LOAD_SECS: u64 = 55;
    let (tcp, ws) = (format!("tcp://127.0.0.1:{}", lb.tcp), format!("ws://127.0.0.1:{}/ws", lb.http));
    let mut loads = Vec::new();
    for slow in [false, true] {
        let what = if slow { "slow" } else { "quick" };
        loads.push((format!("newline {what}"), load(tcp.clone(), LOAD_SECS, slow, false)));
        loads.push((format!("websocket {what}"), load(ws.clone(), LOAD_SECS, slow, false)));
        loads.push((format!("http session {what}"), load(mcp.clone(), LOAD_SECS, slow, false)));
        loads.push((format!("stateless {what}"), load(mcp.clone(), LOAD_SECS, slow, true)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let held = vec![
        ("held newline", tokio::spawn(held_newline(lb.tcp, stop.clone()))),
        ("held websocket", tokio::spawn(held_websocket(ws.clone(), stop.clone()))),
        ("held http session", tokio::spawn(held_session(mcp.clone(), stop.clone()))),
    ];
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (ok, log) = script(dir, &lb, ports, "deploy.sh", &[&build(dir, "build-2", &redis, &backends, false)]).await;
    assert!(ok, "deploy to green failed:\n{log}");
    assert!(log.contains("green shares blue's session store"), "{log}");
    assert_eq!(lb.serving().await, "green");
    assert_eq!(std::fs::read_link(dir.join("opt/relay-active")).unwrap(), dir.join("opt/green"));
    // The old colour is done as soon as its work is: seconds, not a fixed grace.
    let retired = retired_in(&log).expect("deploy.sh says when blue stopped");
    assert!(retired <= 8, "blue took {retired}s to drain and stop:\n{log}");
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
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (ok, log) = script(dir, &lb, ports, "rollback.sh", &[]).await;
    assert!(ok, "rollback to blue failed:\n{log}");
    assert_eq!(lb.serving().await, "blue");
    let retired = retired_in(&log).expect("rollback.sh says when green stopped");
    assert!(retired <= 8, "green took {retired}s to drain and stop:\n{log}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A build that fails its health check never gets traffic; blue serves throughout.
    let (ok, log) = script(dir, &lb, ports, "deploy.sh", &[&build(dir, "build-3", &redis, &backends, true)]).await;
    assert!(!ok, "a build that fails its health check was deployed:\n{log}");
    assert!(log.contains("relay health failed"), "{log}");
    assert_eq!(lb.serving().await, "blue");
    assert_eq!(std::fs::read_link(dir.join("opt/relay-active")).unwrap(), dir.join("opt/blue"));

    // A build that keeps its sessions elsewhere (another kv namespace) would lose every
    // client's session at the switch: it gets no traffic.
    let elsewhere = build_in(dir, "build-3b", &redis, "prod-2", &backends, false);
    let (ok, log) = script(dir, &lb, ports, "deploy.sh", &[&elsewhere]).await;
    assert!(!ok, "a build that does not share the sessions was deployed:\n{log}");
    assert!(log.contains("does not share blue's session store"), "{log}");
    assert_eq!(lb.serving().await, "blue");

    // A relay that exits at start (its port is taken) is reported at once, with its reason,
    // not after READY_TIMEOUT.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", ports.1)).unwrap();
    let started = std::time::Instant::now();
    let (ok, log) = script(dir, &lb, ports, "deploy.sh", &[&build(dir, "build-4", &redis, &backends, false)]).await;
    assert!(!ok, "a relay that could not listen was deployed:\n{log}");
    assert!(log.contains("green exited while starting") && log.contains("cannot listen"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(20), "noticed after {:?}", started.elapsed());
    drop(squatter);
    assert_eq!(lb.serving().await, "blue");

    // The third switch, under the same load.
    let (ok, log) = script(dir, &lb, ports, "deploy.sh", &[&build(dir, "build-5", &redis, &backends, false)]).await;
    assert!(ok, "the third switch failed:\n{log}");
    assert_eq!(lb.serving().await, "green");
    let retired = retired_in(&log).expect("deploy.sh says when blue stopped");
    assert!(retired <= 8, "blue took {retired}s to drain and stop:\n{log}");

    let mut failed = Vec::new();
    let mut report = Vec::new();
    for (kind, run) in loads {
        let summary =
            tokio::time::timeout(PATIENCE + Duration::from_secs(LOAD_SECS), run).await.expect("load ends").unwrap();
        let (ok, failures, retried) = (
            summary["successes"].as_u64().unwrap_or(0),
            summary["failures"].as_u64().unwrap_or(0),
            summary["retried"].as_u64().unwrap_or(0),
        );
        report.push(format!("{kind}: {ok} answered, {failures} failed, {retried} retried"));
        assert!(ok > 20, "{kind}: only {ok} calls answered: {summary}");
        if failures > 0 {
            failed.push(format!("{kind}: {}", summary["errors"]));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for (kind, client) in held {
        let tally = tokio::time::timeout(PATIENCE, client).await.expect("held client stops").unwrap();
        report.push(format!(
            "{kind}: {} answered, {} failed, {} retried, {} reconnected",
            tally.ok,
            tally.failed.len(),
            tally.retried,
            tally.reconnected
        ));
        assert!(tally.ok > 10, "{kind}: only {} calls answered", tally.ok);
        failed.extend(tally.failed);
    }
    println!("over the whole run:\n  {}", report.join("\n  "));
    assert!(failed.is_empty(), "failed calls: {failed:#?}");
    // The colours that were retired drained, and the held HTTP session moved every time
    // without a new initialize (its 404s would be failures above).
    let green_log = std::fs::read_to_string(dir.join("opt/green.log")).unwrap_or_default();
    assert!(green_log.contains("drained"), "green drained when it was retired:\n{green_log}");
    assert!(green_log.contains("session taken up from another instance"), "{green_log}");
    let blue_log = std::fs::read_to_string(dir.join("opt/blue.log")).unwrap_or_default();
    assert!(blue_log.contains("session taken up from another instance"), "{blue_log}");
}
