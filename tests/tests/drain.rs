//! The drain (SIGTERM, `relay_drain`): `/readyz` turns 503 at once, nothing new starts (new
//! connections, sessions and requests are refused at once), running requests finish within
//! `shutdown.grace_secs` (past it they are cut off: answered with an error and logged), a
//! persistent connection closes once nothing of its own runs and it is quiet (WebSocket with
//! 1001), stdio backends are stopped by closing their stdin, and the process exits 0.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use relay_tests::{HttpSession, LineClient, Relay, eventually, process_alive, stdio_fixture_entry};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;

const RELAY_YAML: &str = "upstream: {backoff_initial_ms: 50, backoff_max_ms: 500, call_timeout_secs: 20}\naccess: {admin_without_auth: true}\n";

fn slow_call(id: u64, ms: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": ms}}})
}

/// A relay with one stdio backend `b` and `shutdown.grace_secs: grace_secs`, and a newline
/// client whose `slow` call (id 1) of `ms` milliseconds is running.
async fn relay_running_a_slow_call(grace_secs: u64, ms: u64) -> (Relay, LineClient) {
    let backends = format!("backends:\n{}", stdio_fixture_entry("b", &[]));
    let relay_yaml = format!("{RELAY_YAML}shutdown: {{grace_secs: {grace_secs}}}\n");
    let relay = Relay::start_with(&relay_yaml, &backends, &[]).await;
    relay.wait_ready("b").await;
    let mut line = relay.line_client().await;
    line.send_raw(&slow_call(1, ms).to_string()).await;
    eventually("the call running", || async { (relay_status_running(&relay).await >= 1).then_some(()) }).await;
    (relay, line)
}

async fn exit_code(relay: &mut Relay, within: Duration) -> i32 {
    let status = tokio::time::timeout(within, relay.wait()).await.expect("the relay exits in time");
    status.code().expect("exited, not killed by a signal")
}

#[tokio::test]
async fn sigterm_lets_running_calls_finish_refuses_new_work_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let backends = format!("backends:\n{}", stdio_fixture_entry("b", &["--starts", starts.to_str().unwrap()]));
    let relay_yaml = format!("{RELAY_YAML}shutdown: {{grace_secs: 20}}\n");
    let mut relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.wait_ready("b").await;
    let backend_pid: u32 = std::fs::read_to_string(&starts).unwrap().trim().parse().unwrap();

    // Work in flight on each transport, and an idle WebSocket and HTTP session.
    let mut line = relay.line_client().await;
    line.send_raw(&slow_call(7, 1500).to_string()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(relay.ws("/ws")).await.unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}});
    ws.send(Frame::text(init.to_string())).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Frame::text(slow_call(2, 1500).to_string())).await.unwrap();
    let http = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let http_call = tokio::spawn(http.post(&slow_call(3, 1500)).send());
    eventually("three calls running", || async { (relay_status_running(&relay).await >= 3).then_some(()) }).await;

    let ready = |port: u16| async move {
        let status = tokio::process::Command::new(relay_tests::relay_bin())
            .args(["health", "--ready", "--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        status.success()
    };
    assert!(ready(relay.port).await, "relay health --ready passes while the relay is ready");
    relay.signal("-TERM");
    let started = Instant::now();
    eventually("/readyz says 503", || async {
        let ready = reqwest::get(relay.http("/readyz")).await.ok()?;
        (ready.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;

    assert!(!ready(relay.port).await, "relay health --ready fails while the relay drains");
    // New work is refused at once, on every transport.
    let mut newcomer = LineClient::connect(relay.port).await;
    let refused = newcomer.request("initialize", json!({"protocolVersion": "2025-06-18"})).await;
    assert_eq!(refused["error"]["code"], -32004, "{refused}");
    let client = reqwest::Client::new();
    let init_http = client
        .post(relay.http("/mcp"))
        .header("Accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(init_http.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(init_http.headers()["retry-after"], "1");
    let in_session = http.post(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"})).send().await.unwrap();
    assert_eq!(in_session.status(), StatusCode::SERVICE_UNAVAILABLE);
    match tokio_tungstenite::connect_async(relay.ws("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("a WebSocket handshake during the drain: {other:?}"),
    }
    ws.send(Frame::text(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}).to_string())).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "refusals are immediate");

    // What was running finishes, on every transport.
    let answer = line.recv_response().await;
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["content"][0]["text"], "b: slow", "{answer}");
    let mut ws_answers = Vec::new();
    let mut close_code = None;
    while let Some(Ok(frame)) = ws.next().await {
        match frame {
            Frame::Text(text) => ws_answers.push(serde_json::from_str::<Value>(&text).unwrap()),
            Frame::Close(close) => {
                close_code = close.map(|c| u16::from(c.code));
                break;
            }
            _ => {}
        }
    }
    let by_id = |id: u64| ws_answers.iter().find(|a| a["id"] == id).cloned().unwrap_or_default();
    assert_eq!(by_id(2)["result"]["content"][0]["text"], "b: slow", "{ws_answers:?}");
    assert_eq!(by_id(4)["error"]["code"], -32004, "a request read during the drain is refused: {ws_answers:?}");
    assert_eq!(close_code, Some(1001), "WebSocket sessions close with Going Away");
    let http_answer = http_call.await.unwrap().unwrap();
    assert_eq!(http_answer.status(), StatusCode::OK);
    assert!(http_answer.text().await.unwrap().contains("b: slow"));

    // Then the process exits 0, well within the grace, and the backend was stopped.
    assert_eq!(exit_code(&mut relay, Duration::from_secs(15)).await, 0);
    assert!(started.elapsed() < Duration::from_secs(10), "exited {:?} after SIGTERM", started.elapsed());
    assert!(!process_alive(backend_pid), "the stdio backend was stopped");
    let log = relay.log();
    assert!(log.contains("stdio upstream stopped"), "stopped by closing its stdin: {log}");
    assert!(!log.contains("drain grace passed"));
}

/// `relay_get_status`'s count of running requests, asked on a connection of its own (the ask
/// itself is one of them).
async fn relay_status_running(relay: &Relay) -> u64 {
    relay.status().await["running_requests"].as_u64().unwrap_or(0).saturating_sub(1)
}

#[tokio::test]
async fn a_call_longer_than_the_grace_is_cut_off_answered_and_logged_and_the_process_still_exits_zero() {
    let (mut relay, mut line) = relay_running_a_slow_call(1, 30_000).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(relay.ws("/ws")).await.unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}});
    ws.send(Frame::text(init.to_string())).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Frame::text(slow_call(2, 30_000).to_string())).await.unwrap();
    eventually("the calls running", || async { (relay_status_running(&relay).await >= 2).then_some(()) }).await;
    let started = Instant::now();
    relay.signal("-TERM");

    // Each cut call gets an error answer (not the retryable drain error: it was running).
    let answer = line.recv_response().await;
    assert_eq!((answer["id"].clone(), answer["error"]["code"].clone()), (json!(1), json!(-32800)), "{answer}");
    assert_eq!(answer["error"]["data"]["reason"], "drain_grace_passed", "{answer}");
    let mut cut = None;
    let mut close_code = None;
    while let Some(Ok(frame)) = ws.next().await {
        match frame {
            Frame::Text(text) => cut = Some(serde_json::from_str::<Value>(&text).unwrap()),
            Frame::Close(close) => {
                close_code = close.map(|c| u16::from(c.code));
                break;
            }
            _ => {}
        }
    }
    let cut = cut.expect("the WebSocket call was answered");
    assert_eq!((cut["id"].clone(), cut["error"]["code"].clone()), (json!(2), json!(-32800)), "{cut}");
    assert_eq!(close_code, Some(1001), "closed with Going Away, not dropped (1006)");

    assert_eq!(exit_code(&mut relay, Duration::from_secs(15)).await, 0);
    assert!(started.elapsed() < Duration::from_secs(9), "exited {:?} after SIGTERM", started.elapsed());
    let log = relay.log();
    assert!(log.contains("drain grace passed"), "{log}");
    let records = log.lines().filter(|l| l.contains("Tool call finished") && l.contains("outcome=\"cut\"")).count();
    assert_eq!(records, 2, "each cut call has its record: {log}");
}

/// A second SIGTERM (or SIGINT) during the drain cuts its grace short: it was ignored, and an
/// operator could only wait out the grace or SIGKILL the relay (nothing answered or logged).
#[tokio::test]
async fn a_second_signal_cuts_the_drain_short_and_the_cut_calls_are_answered() {
    let (mut relay, mut line) = relay_running_a_slow_call(60, 30_000).await;
    relay.signal("-TERM");
    relay.wait_for_log("draining").await;
    relay.signal("-INT");
    let answer = line.recv_response().await;
    assert_eq!(answer["error"]["data"]["reason"], "drain_cut_short", "said as what it was: {answer}");
    assert_eq!(exit_code(&mut relay, Duration::from_secs(10)).await, 0);
    assert!(relay.log().contains("a second shutdown signal"), "{}", relay.log());
    assert!(relay.log().contains("drain cut short; requests still running are cut off"), "{}", relay.log());
}

#[tokio::test]
async fn a_request_sent_as_the_last_answer_arrives_is_answered_not_dropped() {
    let (mut relay, mut line) = relay_running_a_slow_call(20, 800).await;
    relay.signal("-TERM");
    let answer = line.recv_response().await;
    assert_eq!(answer["result"]["content"][0]["text"], "b: slow", "{answer}");
    // The next request goes out the moment the answer is in: read and refused as draining
    // (retryable elsewhere), never met by a closed socket.
    line.send_raw(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string()).await;
    let refused = line.recv_response().await;
    assert_eq!((refused["id"].clone(), refused["error"]["code"].clone()), (json!(2), json!(-32004)), "{refused}");
    // Then, quiet and with nothing in flight, the connection closes and the relay exits early.
    assert_eq!(exit_code(&mut relay, Duration::from_secs(10)).await, 0);
}

#[tokio::test]
async fn relay_drain_drains_like_sigterm_and_needs_admin() {
    let dir = tempfile::tempdir().unwrap();
    let relay_yaml = "shutdown: {grace_secs: 5}\n";
    let mut relay = Relay::start_files(dir.path(), relay_yaml, "backends: []\n", &[]).await;
    let mut user = relay.line_client().await;
    let refused = user.call_tool("relay_drain", json!({})).await;
    assert_eq!(refused["error"]["code"], -32013, "an open relay's clients are not admin: {refused}");
    drop(user);

    let dir = tempfile::tempdir().unwrap();
    let mut relay_admin = Relay::start_files(dir.path(), RELAY_YAML, "backends: []\n", &[]).await;
    let mut admin = relay_admin.line_client().await;
    let drained = admin.call_tool("relay_drain", json!({})).await;
    assert_eq!(drained["result"]["structuredContent"]["draining"], true, "{drained}");
    assert_eq!(exit_code(&mut relay_admin, Duration::from_secs(10)).await, 0);
    relay_admin.wait_for_log("relay_drain called").await;
    relay.terminate().await;
}
