//! Regression tests for the security defects found by trying the relay as an attacker would
//! (issue 9): each test is named after what it guards and fails on the code before the fix.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relay_tests::{
    HttpBackend, HttpSession, LineClient, Relay, copy_plugin, eventually, mcp_post, repo_root, sse_messages, text_of,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// relay.yaml for these tests: fast reconnects, plus `extra` (top-level YAML).
fn yaml(extra: &str) -> String {
    format!("upstream: {{backoff_initial_ms: 50, backoff_max_ms: 500, call_timeout_secs: 20}}\n{extra}")
}

fn stdio_entry(name: &str, flags: &[&str]) -> String {
    relay_tests::stdio_fixture_entry(name, flags)
}

fn record_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.record"))
}

/// A newline client initialized as anonymous (open relay).
async fn line(relay: &Relay) -> LineClient {
    relay.line_client_as(None).await
}

#[tokio::test]
async fn browsers_from_other_origins_cannot_drive_any_route() {
    let relay = Relay::start_with(&yaml(""), "backends: []\n", &[]).await;
    // The WebSocket upgrade from a foreign page is refused before any session exists.
    let mut request = relay.ws("/ws").into_client_request().unwrap();
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("a foreign origin got a WebSocket: {:?}", other.map(|(_, r)| r.status())),
    }
    let mut request = relay.ws("/").into_client_request().unwrap();
    request.headers_mut().insert("origin", "http://localhost:5173".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok(), "a loopback page may connect");

    // DELETE and GET of a session are held to the same rule.
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let client = reqwest::Client::new();
    for method in [reqwest::Method::DELETE, reqwest::Method::GET] {
        let response = client
            .request(method.clone(), relay.http("/mcp"))
            .header("mcp-session-id", &session.id)
            .header("accept", "text/event-stream")
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method}");
    }
    // DNS rebinding: the page's own name in Host, no Origin (a same-origin request).
    let rebound = client
        .post(relay.http("/mcp"))
        .header("host", format!("rebound.evil.example:{}", relay.port))
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    // The session survived all of that.
    let list = session.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).send().await.unwrap();
    assert_eq!(list.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_backends_request_never_reaches_another_principal() {
    let relay = Relay::start_with(&yaml(""), &format!("backends:\n{}", stdio_entry("b", &[])), &[]).await;
    relay.wait_ready("b").await;
    let url = relay.http("/mcp");
    let alice = HttpSession::open(&url, json!({"elicitation": {}})).await;
    let bob = HttpSession::open(&url, json!({"elicitation": {}})).await;
    // Alice's call streams (SSE) and runs a while.
    let alice_call = alice.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"ms": 2500}}}));
    let alice_task = tokio::spawn(async move { alice_call.send().await.unwrap().text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Bob's call names no stream format, so it is answered with plain JSON: it has no stream,
    // but it is in flight on the backend.
    let bob_answer: Value = reqwest::Client::new()
        .post(&url)
        .header("mcp-session-id", &bob.id)
        .header("content-type", "application/json")
        .body(
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "ask", "arguments": {"question": "Bob's secret question"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_body = alice_task.await.unwrap();
    assert!(!alice_body.contains("Bob's secret question"), "Bob's elicitation reached Alice: {alice_body}");
    let alice_messages = sse_messages(&alice_body);
    assert_eq!(text_of(alice_messages.last().unwrap()), "b: slow");
    // The backend was told no (no client can be named), and Bob's call completed.
    let answer: Value = serde_json::from_str(&text_of(&bob_answer)).unwrap();
    assert_eq!(answer["code"], -32601, "{bob_answer}");
}

/// relay.yaml with token-auth (`ops` is admin, `alice` has no roles), the top-level settings
/// `top` and the plugin entries `extra` after auth.
fn auth_yaml(dir: &Path, top: &str, extra: &str) -> String {
    let auth = copy_plugin(dir, "token_auth");
    format!(
        "{}plugin_cache_dir: cache\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config:\n      tokens:\n        - {{token: ADMINTOKEN-123, principal: ops, roles: [admin]}}\n        - {{token: ALICETOKEN-456, principal: alice}}\n{extra}",
        yaml(top),
        auth.display()
    )
}

#[tokio::test]
async fn tools_that_disturb_other_clients_need_admin() {
    let dir = tempfile::tempdir().unwrap();
    let backends = format!("backends:\n{}", stdio_entry("b", &[]));
    let relay = Relay::start_files(dir.path(), &auth_yaml(dir.path(), "", ""), &backends, &[]).await;
    let mut alice = relay.line_client_as(Some("ALICETOKEN-456")).await;
    let reconnect = alice.call_tool("relay_reconnect_server", json!({"name": "b"})).await;
    assert_eq!(reconnect["error"]["code"], -32013, "{reconnect}");
    let mut ops = relay.line_client_as(Some("ADMINTOKEN-123")).await;
    let reconnect = ops.call_tool("relay_reconnect_server", json!({"name": "b"})).await;
    assert_eq!(reconnect["result"]["structuredContent"]["reconnecting"], "b", "{reconnect}");
}

#[tokio::test]
async fn client_credentials_are_never_forwarded_to_backends() {
    let dir = tempfile::tempdir().unwrap();
    let record = record_path(dir.path(), "b");
    let backends = format!("backends:\n{}", stdio_entry("b", &["--record", record.to_str().unwrap()]));
    let mut relay = Relay::start_files(dir.path(), &auth_yaml(dir.path(), "", ""), &backends, &[]).await;
    relay.token = Some("ADMINTOKEN-123".into());
    relay.wait_ready("b").await;
    let mut alice = relay.line_client_as(Some("ALICETOKEN-456")).await;
    let meta = json!({"authorization": "Bearer ALICETOKEN-456", "progressToken": 5});
    let reply =
        alice.request("tools/call", json!({"name": "echo", "arguments": {"message": "hi"}, "_meta": meta})).await;
    assert_eq!(text_of(&reply), "b: hi");
    alice.request("prompts/get", json!({"name": "x", "_meta": {"authorization": "Bearer ALICETOKEN-456"}})).await;
    // The key in any letter case is the same credential, and stripped the same.
    for key in ["Authorization", "AUTHORIZATION", "authoRization"] {
        let meta = json!({key: "Bearer ALICETOKEN-456", "progressToken": 6});
        let reply =
            alice.request("tools/call", json!({"name": "echo", "arguments": {"message": key}, "_meta": meta})).await;
        assert_eq!(text_of(&reply), format!("b: {key}"));
    }
    let mut capitalised = LineClient::connect(relay.port).await;
    let params = json!({"protocolVersion": "2025-06-18", "_meta": {"Authorization": "Bearer ALICETOKEN-456"}});
    let answer = capitalised.request("initialize", params).await;
    assert!(answer["result"].is_object(), "_meta.Authorization authenticates too: {answer}");
    let received = std::fs::read_to_string(&record).unwrap();
    assert!(received.contains("\"progressToken\""), "other _meta keys still pass: {received}");
    assert!(!received.contains("ALICETOKEN"), "a client's token reached the backend: {received}");
}

/// Reads until the peer closes; returns how long that took (or panics after `limit`).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

/// A PROXY v2 header from a trusted proxy saying the client is `source` (IPv6, TCP).
fn proxy_v2_from(source: &str) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]);
    header.extend_from_slice(&source.parse::<std::net::Ipv6Addr>().unwrap().octets());
    header.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    header.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb]);
    header
}

/// A PROXY header from an address `listen.trusted_proxies` leaves out (a proxy the operator
/// forgot to name) is refused with a warning that names the setting: it was read as the start
/// of a newline message, so each of HAProxy's health checks counted as a failed authentication
/// from the proxy's address, and `relay health` on loopback was locked out.
#[tokio::test]
async fn a_proxy_header_from_an_address_not_trusted_is_refused_and_counts_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let top = "listen: {trusted_proxies: [127.0.0.9]}\n";
    let relay = Relay::start_files(dir.path(), &auth_yaml(dir.path(), top, ""), "backends: []\n", &[]).await;
    for _ in 0..25 {
        let mut check = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
        check
            .write_all(&[proxy_v2_from("2001:db8::1"), b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()].concat())
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), check.read_to_end(&mut answer)).await;
        assert!(answer.is_empty(), "answered: {}", String::from_utf8_lossy(&answer));
    }
    relay.wait_for_log("listen.trusted_proxies does not name").await;
    let mut ops = relay.line_client_as(Some("ADMINTOKEN-123")).await;
    let pong = ops.request("ping", json!({})).await;
    assert_eq!(pong["result"], json!({}), "loopback was locked out: {pong}");
}

/// Per-address caps count an IPv6 client by its /64, as the authentication throttle does:
/// rotating source addresses within one's /64 (here behind a trusted proxy) does not multiply
/// the connections it may hold unauthenticated.
#[tokio::test]
async fn an_ipv6_client_is_capped_by_its_64() {
    let dir = tempfile::tempdir().unwrap();
    let top =
        "listen: {trusted_proxies: [127.0.0.1]}\nlimits: {handshake_timeout_secs: 10, max_pending_per_address: 2}\n";
    let relay = Relay::start_files(dir.path(), &auth_yaml(dir.path(), top, ""), "backends: []\n", &[]).await;
    let connect_from = |source: &'static str| async move {
        let mut stream = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
        stream.write_all(&proxy_v2_from(source)).await.unwrap();
        stream
    };
    let mut same_64 = [
        connect_from("2001:db8:1:1::a").await,
        connect_from("2001:db8:1:1::b").await,
        connect_from("2001:db8:1:1:ffff::c").await,
    ];
    // One of the three is refused at once; which one is the relay's order (its workers read the
    // headers of connections accepted at once in either order).
    let closings = same_64.iter_mut().map(|stream| Box::pin(closed_within(stream, Duration::from_secs(5))));
    let (took, _, _) = futures::future::select_all(closings).await;
    assert!(took < Duration::from_secs(2), "a third address of the /64 was held {took:?}");
    relay.wait_for_log("refused by limits.max_pending_per_address").await;
    let mut other_64 = connect_from("2001:db8:1:2::a").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(700), other_64.read(&mut buf)).await;
    assert!(read.is_err(), "another /64 is not refused: {read:?}");
}

/// The unauthenticated phase has one deadline, `handshake_timeout_secs`, however the client
/// spreads its bytes: a first byte sent late, then a first line that never ends, had the
/// deadline twice over (each stage had its own; with PROXY and TLS, four times).
#[tokio::test]
async fn the_time_before_authentication_is_one_deadline_however_it_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "limits: {handshake_timeout_secs: 3}\n";
    let relay = Relay::start_files(dir.path(), &auth_yaml(dir.path(), limits, ""), "backends: []\n", &[]).await;
    // A newline client's first line, and an HTTP client's first request head, started late.
    for first_bytes in [&b"{\"jsonrpc\":"[..], b"POST /mcp HTTP/1.1\r\n"] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stream.write_all(first_bytes).await.unwrap();
        closed_within(&mut stream, Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(4500), "closed after {took:?}; the deadline is 3 s from the connection");
    }
}

/// With auth on, an HTTP connection stays "not yet authenticated" until one of its requests
/// presents a credential the relay accepts: counted only until its first request head, a client
/// sending `GET /healthz` now and then held any number of connections without a token. Such a
/// connection is closed at the handshake deadline; one that was vouched for stays.
#[tokio::test]
async fn probes_without_a_token_do_not_end_a_connections_unauthenticated_phase() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "limits: {handshake_timeout_secs: 3, max_pending_per_address: 3}\n";
    let relay = Relay::start_files(dir.path(), &auth_yaml(dir.path(), limits, ""), "backends: []\n", &[]).await;
    let probe = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    // Everything the relay sends until it is quiet for 300 ms (one whole answer).
    let answer = async |stream: &mut TcpStream| {
        let (mut answer, mut buf) = (Vec::new(), [0u8; 4096]);
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("answered").unwrap();
        answer.extend_from_slice(&buf[..n]);
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).to_string()
    };
    let connected = Instant::now();
    let mut vouched = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    .to_string();
    let post = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n\
         Authorization: Bearer ALICETOKEN-456\r\nContent-Length: {}\r\n\r\n{initialize}",
        initialize.len()
    );
    vouched.write_all(post.as_bytes()).await.unwrap();
    assert!(answer(&mut vouched).await.starts_with("HTTP/1.1 200"));
    let mut probes = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
        stream.write_all(probe).await.unwrap();
        assert!(answer(&mut stream).await.starts_with("HTTP/1.1 200"));
        probes.push(stream);
    }
    let mut over = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    over.write_all(probe).await.unwrap();
    let refused = answer(&mut over).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "three probing connections are still pending: {refused}");
    // Past the handshake deadline (3 s from the connection; each request within 3 s of the
    // last answer, hyper's own wait for the next head), the vouched-for connection serves on.
    for at in [2000, 3600] {
        tokio::time::sleep(Duration::from_millis(at).saturating_sub(connected.elapsed())).await;
        vouched.write_all(post.as_bytes()).await.unwrap();
        let again = answer(&mut vouched).await;
        assert!(again.starts_with("HTTP/1.1 200"), "a vouched-for connection stays: {again}");
    }
    for stream in &mut probes {
        closed_within(stream, Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn nothing_waits_forever_before_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "limits: {handshake_timeout_secs: 1, body_timeout_secs: 1, max_pending_per_address: 3}\n";
    let relay = Relay::start_files(dir.path(), &auth_yaml(dir.path(), limits, ""), "backends: []\n", &[]).await;
    let deadline = Duration::from_secs(5);

    // A newline connection that never finishes its first line.
    let mut half_line = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    half_line.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,").await.unwrap();
    // An HTTP request whose head never ends.
    let mut half_head = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    half_head.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    // A silent connection.
    let mut silent = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    // A fourth unauthenticated connection from the same address is over the cap: one of the four
    // is closed at once, long before the 1 s handshake deadline. Which one is the relay's order:
    // its workers accept from one listener, and may count two connections the other way round.
    let mut fourth = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let refused = {
        let four = [&mut half_line, &mut half_head, &mut silent, &mut fourth];
        let closings = four.into_iter().map(|stream| Box::pin(closed_within(stream, Duration::from_secs(5))));
        let (took, refused, _) = futures::future::select_all(closings).await;
        assert!(took < Duration::from_millis(800), "the first of four closed after {took:?}");
        refused
    };
    // One that speaks is told why, in its own protocol; the refusals are logged and counted.
    let mut fifth = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(deadline, fifth.read(&mut answer)).await.expect("answered").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("retry-after: 1"), "{answer}");
    relay.wait_for_log("refused by limits.max_pending_per_address").await;
    // The others are closed by the handshake deadline.
    let mut four = [half_line, half_head, silent, fourth];
    for (_, stream) in four.iter_mut().enumerate().filter(|(index, _)| *index != refused) {
        closed_within(stream, deadline).await;
    }

    // A body that declares 1000 bytes and sends 10 gets 408 once the body deadline passes.
    let mut slow_body = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let head = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAuthorization: Bearer ALICETOKEN-456\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\"";
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(deadline, slow_body.read(&mut answer)).await.expect("answered").unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    // With the stalled connections gone, clients connect again.
    let mut alice = relay.line_client_as(Some("ALICETOKEN-456")).await;
    assert!(alice.request("ping", json!({})).await.get("result").is_some());
}

#[tokio::test]
async fn no_principal_can_use_up_the_relays_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let limiter = copy_plugin(dir.path(), "rate_limit");
    let policy = format!(
        "  - name: rate-limit\n    world: policy\n    path: {}\n    grants: {{clock: true}}\n    config: {{per_minute: 2, methods: [initialize]}}\n",
        limiter.display()
    );
    let limits = "limits: {max_sessions_per_principal: 2, max_sessions: 100}\n";
    let relay_yaml = auth_yaml(dir.path(), limits, &policy);
    let relay = Relay::start_files(dir.path(), &relay_yaml, "backends: []\n", &[]).await;
    let _one = relay.line_client_as(Some("ALICETOKEN-456")).await;
    let _two = relay.line_client_as(Some("ALICETOKEN-456")).await;
    // Alice's third session is refused, clearly; the admin still gets in.
    let mut third = LineClient::connect(relay.port).await;
    let init = json!({"protocolVersion": "2025-06-18", "_meta": {"authorization": "Bearer ALICETOKEN-456"}});
    let refused = third.request("initialize", init).await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("principal alice"), "{refused}");
    let mut ops = relay.line_client_as(Some("ADMINTOKEN-123")).await;
    // initialize passes the policy chain: a policy that counts it refuses the third.
    assert!(ops.request("initialize", json!({"protocolVersion": "2025-06-18"})).await.get("result").is_some());
    let limited = ops.request("initialize", json!({"protocolVersion": "2025-06-18"})).await;
    assert_eq!(limited["error"]["code"], -32019, "{limited}");
}

/// The per-principal cap is waived for an open relay only: an auth plugin's principal that
/// happens to be named `anonymous` is capped like any other.
#[tokio::test]
async fn an_auth_plugins_principal_named_anonymous_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "limits: {max_sessions_per_principal: 2, max_sessions: 100}\n";
    let relay_yaml = auth_yaml(dir.path(), limits, "").replace("principal: alice", "principal: anonymous");
    let relay = Relay::start_files(dir.path(), &relay_yaml, "backends: []\n", &[]).await;
    let _held =
        [relay.line_client_as(Some("ALICETOKEN-456")).await, relay.line_client_as(Some("ALICETOKEN-456")).await];
    let mut third = LineClient::connect(relay.port).await;
    let init = json!({"protocolVersion": "2025-06-18", "_meta": {"authorization": "Bearer ALICETOKEN-456"}});
    let refused = third.request("initialize", init).await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("principal anonymous"), "{refused}");
}

/// An open relay serves everyone as `anonymous`: one client that opened as many HTTP sessions
/// as a principal may hold (and then went away: the sessions outlive its connections) refused
/// every other client's until they expired. Anonymous sessions are capped per address instead.
#[tokio::test]
async fn one_anonymous_client_cannot_take_an_open_relays_sessions() {
    let limits = "limits: {max_sessions_per_principal: 2, max_sessions_per_address: 2, max_sessions: 100}\n";
    let relay = Relay::start_with(&yaml(limits), "backends: []\n", &[]).await;
    let url = relay.http("/mcp");
    let from = |address: &str| {
        let address = address.parse::<std::net::IpAddr>().unwrap();
        reqwest::Client::builder().local_address(address).build().unwrap()
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}}});
    let attacker = from("127.0.0.1");
    for _ in 0..2 {
        assert!(mcp_post(&attacker, &url, &init, None).send().await.unwrap().status().is_success());
    }
    let refused = mcp_post(&attacker, &url, &init, None).send().await.unwrap().text().await.unwrap();
    assert!(refused.contains("address 127.0.0.1"), "its own address is capped: {refused}");
    drop(attacker);
    let other = mcp_post(&from("127.0.0.2"), &url, &init, None).send().await.unwrap();
    let status = other.status();
    assert!(status.is_success(), "another client gets a session: {status} {}", other.text().await.unwrap());
}

/// A backend's requests to clients (elicitation, sampling) wait for their client's answer in a
/// few slots per backend. A client that left them unanswered held them all, and the backend's
/// next request stopped the relay reading that backend: every other client's calls waited out
/// the call deadline. Now one client holds a few, and one more past the slots is refused.
#[tokio::test]
async fn a_client_that_never_answers_the_backend_does_not_stall_it_for_others() {
    let backends = format!("backends:\n{}", stdio_entry("b", &[]));
    let relay = Relay::start_with(&yaml(""), &backends, &[]).await;
    relay.wait_ready("b").await;
    let asking = json!({"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}}});
    let mut silent = LineClient::connect(relay.port).await;
    assert!(silent.request("initialize", asking.clone()).await["result"].is_object());
    for id in 1000..1040 {
        let ask =
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "ask", "arguments": {}}});
        silent.send_raw(&ask.to_string()).await;
    }
    let (mut asked, mut refused) = (0, 0);
    while asked + refused < 40 {
        let message = silent.recv().await;
        if message["method"] == "elicitation/create" {
            asked += 1;
        } else if message["id"].is_number() {
            refused += 1;
        }
        if asked == 8 && refused == 32 {
            break;
        }
    }
    assert_eq!((asked, refused), (8, 32), "one session holds a few of the backend's requests, not all");
    let mut other = LineClient::connect(relay.port).await;
    assert!(other.request("initialize", asking).await["result"].is_object());
    let echoed = tokio::time::timeout(Duration::from_secs(10), other.call_tool("echo", json!({"message": "hi"})))
        .await
        .expect("another client's call is not held behind the unanswered ones");
    assert_eq!(text_of(&echoed), "b: hi");
    // Once the silent client is gone, the backend's requests it held are answered, and the
    // backend may ask the next client (while both had calls running it could not be told apart).
    drop(silent);
    let ask = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "ask", "arguments": {}}});
    other.send_raw(&ask.to_string()).await;
    let question = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let message = other.recv().await;
            if message["method"] == "elicitation/create" {
                return message;
            }
        }
    })
    .await
    .expect("the next client is asked");
    let answer = json!({"jsonrpc": "2.0", "id": question["id"], "result": {"action": "accept", "content": {}}});
    other.send_raw(&answer.to_string()).await;
    assert!(text_of(&other.recv_response().await).contains("accept"));
}

#[tokio::test]
async fn one_connection_cannot_start_unbounded_work() {
    let dir = tempfile::tempdir().unwrap();
    let record = record_path(dir.path(), "b");
    let backends = format!("backends:\n{}", stdio_entry("b", &["--record", record.to_str().unwrap()]));
    let relay = Relay::start_files(dir.path(), &yaml("limits: {max_requests_in_flight: 4}\n"), &backends, &[]).await;
    relay.wait_ready("b").await;
    let mut client = line(&relay).await;
    for id in 100..120 {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 1000}}});
        client.send_raw(&call.to_string()).await;
    }
    let calls = || std::fs::read_to_string(&record).unwrap().matches("\"tools/call\"").count();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(calls(), 4, "only max_requests_in_flight calls run at once");
    for _ in 0..20 {
        assert_eq!(text_of(&client.recv_response().await), "b: slow");
    }
    assert_eq!(calls(), 20);
}

/// An HTTP session is held to its in-flight limit as a connection is: as many requests may wait
/// for a slot as may run (each waits with its body read), one more is refused at once; and a
/// request still waiting when the session ends (`DELETE`) never starts.
#[tokio::test]
async fn one_http_session_cannot_park_unbounded_work_and_what_waits_ends_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let record = record_path(dir.path(), "b");
    let backends = format!("backends:\n{}", stdio_entry("b", &["--record", record.to_str().unwrap()]));
    let relay = Relay::start_files(dir.path(), &yaml("limits: {max_requests_in_flight: 1}\n"), &backends, &[]).await;
    relay.wait_ready("b").await;
    let session = std::sync::Arc::new(HttpSession::open(&relay.http("/mcp"), json!({})).await);
    session.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).send().await.unwrap();
    let call = |id: u64, tool: &str, arguments: Value| {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}});
        let session = session.clone();
        tokio::spawn(async move {
            let response = session.post(&body).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        })
    };
    let running = call(1, "slow", json!({"ms": 3000}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = call(2, "echo", json!({"message": "waited"}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), call(3, "echo", json!({"message": "third"})))
        .await
        .expect("a third request is answered at once, not parked")
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("max_requests_in_flight"), "{body}");

    let deleted =
        reqwest::Client::new().delete(relay.http("/mcp")).header("mcp-session-id", &session.id).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "the waiting call ran after DELETE: {body}");
    running.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = std::fs::read_to_string(&record).unwrap();
    assert!(!seen.contains("waited") && !seen.contains("third"), "{seen}");
}

/// An answer its client does not read holds its request's slot until the connection has taken
/// it in: released when the answer was made, a client reading none of its answers had the
/// relay hold any number of them (534 MB over 100 connections) while its session looked idle.
#[tokio::test]
async fn an_unread_http_answer_holds_its_slot_until_it_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let backends = format!("backends:\n{}", stdio_entry("b", &[]));
    let limits = "limits: {max_requests_in_flight: 1, max_message_bytes: 67108864}\n";
    let relay = Relay::start_files(dir.path(), &yaml(limits), &backends, &[]).await;
    relay.wait_ready("b").await;
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    session.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).send().await.unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "huge", "arguments": {"bytes": 24_000_000}}})
    .to_string();
    let mut unread = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Session-Id: {}\r\nContent-Length: {}\r\n\r\n",
        session.id,
        call.len()
    );
    unread.write_all(format!("{head}{call}").as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    unread.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "answered, and not read further");
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let waited = tokio::time::timeout(Duration::from_secs(2), session.post(&ping).send()).await;
    assert!(waited.is_err(), "answered while the unread answer should hold the only slot: {waited:?}");
    drop(unread);
    // The ping given up above may still wait for the slot (the relay sees its connection close
    // only when it writes its answer), and one more waiting is refused: asked until answered.
    eventually("the slot back with the connection", || async {
        let answered = session.post(&ping).send().await.ok()?;
        (answered.status() == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn status_tools_do_not_show_backend_secrets() {
    let backends = "backends:\n  - name: svc\n    url: http://svc:PASS1234@127.0.0.1:9/mcp?api_key=KEY5678\n    headers: {Authorization: Bearer HEADER9012}\n  - name: sock\n    url: ws://u:WSPASS3456@127.0.0.1:9/ws?token=WSTOKEN7890\n";
    for admin in [false, true] {
        let access = if admin { "access: {admin_without_auth: true}\n" } else { "" };
        let relay = Relay::start_with(&yaml(access), backends, &[]).await;
        eventually("a connect error", || async {
            let status = relay.status().await;
            let backends = status["backends"].as_array()?;
            backends.iter().all(|b| b["last_error"].is_string()).then_some(())
        })
        .await;
        let mut client = line(&relay).await;
        for tool in ["relay_get_status", "relay_list_servers"] {
            let shown = client.call_tool(tool, json!({})).await.to_string();
            for secret in ["PASS1234", "KEY5678", "HEADER9012", "WSPASS3456", "WSTOKEN7890"] {
                assert!(!shown.contains(secret), "{tool} shows {secret} (admin: {admin}): {shown}");
            }
            assert_eq!(shown.contains("127.0.0.1:9/mcp?api_key=***"), admin, "{tool}: {shown}");
            // A non-admin learns which backend failed, never its address (not even in errors).
            assert_eq!(shown.contains("127.0.0.1:9"), admin, "{tool} (admin: {admin}): {shown}");
        }
    }
}

#[tokio::test]
async fn every_upstream_transport_enforces_the_message_size_limit() {
    let backend = HttpBackend::start(3 * 1024 * 1024).await;
    let backends = format!("backends:\n  - name: big\n    url: {}\n", backend.url());
    let relay = Relay::start_with(&yaml("limits: {max_message_bytes: 1048576}\n"), &backends, &[]).await;
    relay.wait_ready("big").await;
    let mut client = line(&relay).await;
    for tool in ["big", "big_sse"] {
        let refused = client.call_tool(tool, json!({})).await;
        let message = refused["error"]["message"].as_str().unwrap_or_else(|| panic!("{tool}: no error"));
        assert!(message.contains("larger than max_message_bytes"), "{tool}: {message}");
        // One code for an unusable answer, whichever transport brought it (-32603 on stdio too).
        assert_eq!(refused["error"]["code"], -32603, "{tool}: {refused}");
    }
    assert_eq!(text_of(&client.call_tool("ok", json!({})).await), "fine", "only those calls failed");
}

/// A WebSocket backend's answer far over the limit (past what is read at all) ends the
/// connection: the call fails at once with `-32603`, and is not sent again on the next
/// connection (it ran: sent again, it would run twice).
#[tokio::test]
async fn a_websocket_answer_far_over_the_limit_fails_its_call_without_running_it_again() {
    let ws = relay_tests::Fixture::start("ws").await;
    let backends = format!("backends:\n{}", ws.entry());
    let relay = Relay::start_with(&yaml("limits: {max_message_bytes: 65536}\n"), &backends, &[]).await;
    relay.wait_ready("ws").await;
    let mut client = line(&relay).await;
    let refused = client.call_tool("big", json!({"bytes": 400_000})).await;
    assert_eq!(refused["error"]["code"], -32603, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("max_message_bytes"), "{refused}");
    relay.wait_ready("ws").await;
    let runs = eventually("the backend again", || async {
        let answer = line(&relay).await.call_tool("big_runs", json!({})).await;
        answer.get("result").map(|_| text_of(&answer))
    })
    .await;
    assert_eq!(runs, "1", "the call ran again");
}

#[tokio::test]
async fn logs_cannot_be_forged_by_client_text() {
    let forged =
        "nope\n2026-11-30T00:00:00.000000Z  INFO relay::auth: authentication outcome=\"ok\" principal=ops\r\x1b[2J";
    for format in ["human", "json"] {
        let relay = Relay::start_with(&yaml(""), "backends: []\n", &["--log-format", format]).await;
        let mut client = line(&relay).await;
        client.call_tool(forged, json!({})).await;
        relay.wait_for_log("Tool call finished").await;
        let log = relay.log();
        assert!(!log.contains('\x1b') && !log.contains('\r'), "{format}: raw control bytes in the log");
        assert!(!log.lines().any(|l| l.starts_with("2026-11-30T00:00:00")), "{format}: a forged line:\n{log}");
        if format == "json" {
            assert!(log.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{log}");
        }
    }
}

#[tokio::test]
async fn stdio_backends_get_only_the_environment_they_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let entry = format!("{}    env: {{OWN_SETTING: mine}}\n    inherit_env: [PASSED_ON]\n", stdio_entry("b", &[]));
    let env = [("RELAY_AUTH_TOKEN", "SECRET-ONE"), ("OPENAI_API_KEY", "SECRET-TWO"), ("PASSED_ON", "yes")];
    let relay = Relay::start_files(dir.path(), &yaml(""), &format!("backends:\n{entry}"), &env).await;
    relay.wait_ready("b").await;
    let mut client = line(&relay).await;
    let seen: Value = serde_json::from_str(&text_of(&client.call_tool("env", json!({})).await)).unwrap();
    assert_eq!(seen["OWN_SETTING"], "mine");
    assert_eq!(seen["PASSED_ON"], "yes");
    assert!(seen["PATH"].is_string(), "the safe set is passed: {seen}");
    assert!(seen.get("RELAY_AUTH_TOKEN").is_none() && seen.get("OPENAI_API_KEY").is_none(), "{seen}");
}

#[tokio::test]
async fn a_backend_cannot_take_another_backends_name() {
    let backends = format!(
        "backends:\n{}{}{}",
        stdio_entry(
            "aaa",
            &[
                "--tools",
                "zeta__delete_repo",
                "--prompts",
                "zeta__review",
                "--resources",
                "relay://zeta/mem%3A%2F%2Fdoc"
            ]
        ),
        stdio_entry("alpha", &["--tools", "delete_repo", "--prompts", "review", "--resources", "mem://doc"]),
        stdio_entry("zeta", &["--tools", "delete_repo", "--prompts", "review", "--resources", "mem://doc"]),
    );
    let relay = Relay::start_with(&yaml(""), &backends, &[]).await;
    for name in ["aaa", "alpha", "zeta"] {
        relay.wait_ready(name).await;
    }
    let mut client = line(&relay).await;
    assert_eq!(text_of(&client.call_tool("zeta__delete_repo", json!({})).await), "zeta: delete_repo");
    assert_eq!(text_of(&client.call_tool("aaa__zeta__delete_repo", json!({})).await), "aaa: zeta__delete_repo");
    let prompt = client.request("prompts/get", json!({"name": "zeta__review"})).await;
    assert_eq!(prompt["result"]["messages"][0]["content"]["text"], "zeta: review", "{prompt}");
    let read = client.request("resources/read", json!({"uri": "relay://zeta/mem%3A%2F%2Fdoc"})).await;
    assert_eq!(read["result"]["contents"][0]["text"], "zeta: mem://doc", "{read}");
    relay.wait_for_log("takes another source's prefixed form; renamed").await;
}

#[tokio::test]
async fn an_open_relay_is_not_admin() {
    let relay = Relay::start_with(&yaml(""), "backends: []\n", &[]).await;
    relay.wait_for_log("the relay_* tools that change it are refused").await;
    let mut client = line(&relay).await;
    let calls = [
        ("relay_add_server", json!({"name": "x", "command": "sh", "args": ["-c", "touch /tmp/pwned"]})),
        ("relay_remove_server", json!({"name": "x"})),
        ("relay_reconnect_server", json!({"name": "x"})),
        ("relay_reload_plugins", json!({})),
        ("relay_rollback_plugin", json!({"name": "x"})),
        ("relay_drain", json!({})),
    ];
    for (tool, arguments) in calls {
        let refused = client.call_tool(tool, arguments).await;
        assert_eq!(refused["error"]["code"], -32013, "{tool}: {refused}");
    }
    assert!(client.call_tool("relay_get_status", json!({})).await.get("result").is_some());

    // Admin for a quick local try: said loudly, and stdio commands still need the allow-list,
    // which names the arguments too.
    let script = repo_root().join("tests/fixtures/stdio_server.py").display().to_string();
    let open = format!(
        "access:\n  admin_without_auth: true\n  add_server_commands:\n    - python3 {script}\n    - {{command: python3, args: ['{script}', '--name', '*'], env: [LOG_LEVEL, RELAY_AUTH_TOKEN]}}\n"
    );
    let open_dir = tempfile::tempdir().unwrap();
    let env = [("RELAY_AUTH_TOKEN", "SECRET-ADMIN-77")];
    let relay = Relay::start_files(open_dir.path(), &yaml(&open), "backends: []\n", &env).await;
    relay.wait_for_log("EVERY CLIENT IS ADMIN").await;
    let mut client = line(&relay).await;
    let refused = [
        json!({"name": "x", "command": "sh", "args": ["-c", "true"]}),
        // The allowed program told to run something else.
        json!({"name": "x", "command": "python3", "args": ["-c", "import os; os.system('id')"]}),
        json!({"name": "x", "command": "python3", "args": [script.clone(), "--record", "/tmp/x"]}),
        // An environment name the entry does not list.
        json!({"name": "x", "command": "python3", "args": [script.clone()], "env": {"PYTHONSTARTUP": "/tmp/evil.py"}}),
        // The relay's own secret, even where an entry lists it.
        json!({"name": "x", "command": "python3", "args": [script.clone(), "--name", "x"], "inherit_env": ["RELAY_AUTH_TOKEN"]}),
        // An allowed command line run in a directory of the caller's choosing.
        json!({"name": "x", "command": "python3", "args": [script.clone()], "cwd": "/tmp"}),
        // A variable of the relay's environment sent as a client secret to a server of the
        // caller's choosing.
        json!({"name": "x", "url": "http://127.0.0.1:9/mcp", "credentials": {"mode": "token_exchange",
            "token_endpoint": "http://127.0.0.1:9/token", "client_id": "x", "client_secret_env": "RELAY_AUTH_TOKEN"}}),
    ];
    for arguments in refused {
        let answer = client.call_tool("relay_add_server", arguments.clone()).await;
        assert_eq!(answer["result"]["isError"], true, "{arguments}: {answer}");
    }
    let allowed = client
        .call_tool("relay_add_server", json!({"name": "py", "command": "python3", "args": [script.clone()]}))
        .await;
    assert_eq!(allowed["result"]["structuredContent"]["added"], "py", "{allowed}");
    let named =
        json!({"name": "pz", "command": "python3", "args": [script, "--name", "pz"], "env": {"LOG_LEVEL": "info"}});
    let allowed = client.call_tool("relay_add_server", named).await;
    assert_eq!(allowed["result"]["structuredContent"]["added"], "pz", "{allowed}");
    relay.wait_ready("py").await;
}

#[tokio::test]
async fn a_backend_never_inherits_the_relays_own_secrets() {
    let entry = format!("{}    inherit_env: [RELAY_AUTH_TOKEN, OPENAI_API_KEY, PASSED_ON]\n", stdio_entry("b", &[]));
    let plugin = "plugins:\n  - {name: fiedler-keys, world: policy, path: PLUGIN, grants: {env: [OPENAI_API_KEY]}}\n";
    let dir = tempfile::tempdir().unwrap();
    let limiter = copy_plugin(dir.path(), "rate_limit");
    let relay_yaml = yaml(&plugin.replace("PLUGIN", limiter.to_str().unwrap()));
    let env = [("RELAY_AUTH_TOKEN", "SECRET-ONE"), ("OPENAI_API_KEY", "SECRET-TWO"), ("PASSED_ON", "yes")];
    let relay = Relay::start_files(dir.path(), &relay_yaml, &format!("backends:\n{entry}"), &env).await;
    relay.wait_ready("b").await;
    let mut client = line(&relay).await;
    let seen: Value = serde_json::from_str(&text_of(&client.call_tool("env", json!({})).await)).unwrap();
    assert_eq!(seen["PASSED_ON"], "yes");
    assert!(seen.get("RELAY_AUTH_TOKEN").is_none(), "the admin token was inherited: {seen}");
    assert!(seen.get("OPENAI_API_KEY").is_none(), "a plugin's granted key was inherited: {seen}");
    relay.wait_for_log("inherit_env names one of the relay's own secrets").await;
}

#[tokio::test]
async fn request_heads_over_the_limit_are_refused_with_431_and_counted() {
    let relay = Relay::start_with(
        &format!("{}limits: {{max_header_bytes: 4096}}\n", relay_tests::TEST_RELAY_YAML),
        "backends: []\n",
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let ok = client.get(relay.http("/healthz")).header("x-pad", "a".repeat(3000)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let big = client.get(relay.http("/healthz")).header("x-pad", "a".repeat(5000)).send().await.unwrap();
    assert_eq!(big.status(), 431);
    assert!(big.text().await.unwrap().contains("limits.max_header_bytes"));
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let counted = relay_tests::metric_value(&metrics, r#"relay_limit_refusals_total{limit="max_header_bytes"}"#);
    assert_eq!(counted, Some(1.0), "{metrics}");
}

/// The reference plan's checklist item "nothing secret in logs": a run at debug level with
/// bearer tokens (right and wrong, in headers and in `_meta`), backend API keys (a stdio
/// backend's `env`, an HTTP backend's header and URL credentials) logs none of them.
#[tokio::test]
async fn nothing_secret_reaches_the_logs_even_at_debug_level() {
    const API_KEY: &str = "sk-APIKEY-99bb";
    const URL_PASS: &str = "URLPASS-55cc";
    let dir = tempfile::tempdir().unwrap();
    let backends = format!(
        "backends:\n{}    env: {{OPENAI_API_KEY: {API_KEY}}}\n  - name: down\n    url: http://user:{URL_PASS}@127.0.0.1:9/mcp?api_key={API_KEY}\n    headers: {{Authorization: Bearer {API_KEY}}}\n  - name: gone\n    url: ws://user:{URL_PASS}@127.0.0.1:9/ws?token={API_KEY}\n",
        stdio_entry("b", &[])
    );
    let mut relay =
        Relay::start_files(dir.path(), &auth_yaml(dir.path(), "logging: {level: debug}\n", ""), &backends, &[]).await;
    relay.token = Some("ADMINTOKEN-123".into());
    relay.wait_ready("b").await;
    eventually("the unreachable backend's error", || async {
        let log = relay.log();
        (log.contains("upstream connect failed backend=down") && log.contains("upstream connect failed backend=gone"))
            .then_some(())
    })
    .await;
    let mut ops = relay.line_client_as(Some("ADMINTOKEN-123")).await;
    let meta = json!({"authorization": "Bearer ALICETOKEN-456"});
    ops.request("tools/call", json!({"name": "echo", "arguments": {"message": "hi"}, "_meta": meta})).await;
    ops.call_tool("relay_get_status", json!({})).await;
    ops.call_tool("relay_list_servers", json!({})).await;
    for wrong in ["WRONGTOKEN-1", "WRONGTOKEN-2"] {
        let mut client = LineClient::connect(relay.port).await;
        let params = json!({"protocolVersion": "2025-06-18", "_meta": {"authorization": format!("Bearer {wrong}")}});
        assert_eq!(client.request("initialize", params).await["error"]["code"], -32011);
        let response = reqwest::Client::new()
            .post(relay.http("/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .bearer_auth(wrong)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    relay.wait_for_log("outcome=\"denied\"").await;
    let log = relay.log();
    assert!(log.contains("DEBUG"), "the run logged at debug level");
    for secret in ["ADMINTOKEN-123", "ALICETOKEN-456", "WRONGTOKEN-1", "WRONGTOKEN-2", API_KEY, URL_PASS] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}

#[tokio::test]
async fn unauthenticated_connections_hold_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_files(dir.path(), &auth_yaml(dir.path(), "", ""), "backends: []\n", &[]).await;
    let before = relay.rss_bytes();
    // 100 connections, each 2 MiB into a first line that never ends.
    let chunk = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"x\":\"{}",
        "a".repeat(2 << 20)
    );
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
        stream.write_all(chunk.as_bytes()).await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = relay.rss_bytes().saturating_sub(before);
    assert!(grown < 48 << 20, "100 unauthenticated partial lines grew the relay by {} MiB", grown >> 20);
    // Over HTTP, a POST nobody vouches for is answered before its body is read.
    let mut post = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let head = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAuthorization: Bearer WRONG-1\r\nContent-Length: 4000000\r\n\r\n";
    post.write_all(head.as_bytes()).await.unwrap();
    post.write_all(&vec![b' '; 65536]).await.unwrap();
    let mut answer = vec![0u8; 256];
    let n =
        tokio::time::timeout(Duration::from_secs(5), post.read(&mut answer)).await.expect("answered at once").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Once a client has authenticated, a large message is read in full.
    let mut ops = relay.line_client_as(Some("ADMINTOKEN-123")).await;
    let big = "b".repeat(1 << 20);
    let answer = ops.call_tool("relay_get_status", json!({"padding": big})).await;
    let shown = answer.to_string();
    assert!(
        !shown.contains("larger than"),
        "a 1 MiB message after authentication was refused: {}",
        &shown[..shown.len().min(300)]
    );
    drop(held);
}

#[tokio::test]
async fn a_per_caller_session_cap_that_cannot_bite_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let relay_yaml = auth_yaml(dir.path(), "limits: {max_sessions: 40}\n", "");
    std::fs::write(dir.path().join("relay.yaml"), &relay_yaml).unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    let (_, said) = relay_tests::check_config(dir.path()).await;
    assert!(said.contains("limits.max_sessions_per_principal (4096) is not below limits.max_sessions (40)"), "{said}");
    let relay = Relay::start_files(dir.path(), &relay_yaml, "backends: []\n", &[]).await;
    relay.wait_for_log("max_sessions_per_principal (4096) is not below").await;
}

/// A `backends_file` that does not exist (a typo in its name) starts a relay with no backends:
/// `check-config` and the relay say so.
#[tokio::test]
async fn a_backends_file_that_does_not_exist_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let relay_yaml = format!("backends_file: backend.yaml\n{}", relay_tests::TEST_RELAY_YAML);
    std::fs::write(dir.path().join("relay.yaml"), &relay_yaml).unwrap();
    let (passed, said) = relay_tests::check_config(dir.path()).await;
    assert!(passed && said.contains("backend.yaml does not exist"), "{said}");
}

/// A process (by pid) killed when the test ends, passed or not.
struct KilledOnDrop(String);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-KILL", &self.0]).status();
    }
}

#[tokio::test]
async fn a_process_of_the_relays_own_user_cannot_read_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.yaml"), "backends_file: backends.yaml\n").unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    std::process::Command::new("chmod").args(["-R", "0755"]).arg(dir.path()).status().unwrap();
    let config = dir.path().join("relay.yaml");
    // The relay as an ordinary user (nobody), with a secret in its environment.
    let mut relay = tokio::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(relay_tests::relay_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env("RELAY_PORT", "0")
        .env("RELAY_AUTH_TOKEN", "SECRET-IN-ENVIRON-31")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("runuser");
    let pid = eventually("the relay runs as nobody", || async {
        let out = std::process::Command::new("pgrep")
            .args(["-u", "nobody", "-f"])
            .arg(config.to_str().unwrap())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned)
    })
    .await;
    // Killing runuser (below, or on drop) would leave the relay running: it is killed by pid.
    let _relay_itself = KilledOnDrop(pid.clone());
    // Another process of the same user (what a stdio backend is) tries to read it.
    let read = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(format!("/proc/{pid}/environ"))
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&read.stdout);
    assert!(!read.status.success() && !seen.contains("SECRET-IN-ENVIRON-31"), "a same-user process read: {seen}");
    relay.kill().await.unwrap();
}

#[tokio::test]
async fn metrics_on_the_main_port_need_the_admin_role_when_auth_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let relay_yaml = auth_yaml(dir.path(), "metrics: {listen: 127.0.0.1:0}\n", "");
    let relay = Relay::start_files(dir.path(), &relay_yaml, "backends: []\n", &[]).await;
    let get = |token: Option<&'static str>| {
        let url = relay.http("/metrics");
        async move {
            let request = reqwest::Client::new().get(url);
            let request = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            request.send().await.unwrap()
        }
    };
    assert_eq!(get(None).await.status(), StatusCode::UNAUTHORIZED, "metrics name every backend and plugin");
    assert_eq!(get(Some("ALICETOKEN-456")).await.status(), StatusCode::FORBIDDEN);
    let admin = get(Some("ADMINTOKEN-123")).await;
    assert_eq!(admin.status(), StatusCode::OK);
    assert!(admin.text().await.unwrap().contains("relay_build_info"));
    // The private listener stays open, for Prometheus.
    let private = format!("http://127.0.0.1:{}/metrics", relay.metrics_port.unwrap());
    assert_eq!(reqwest::get(private).await.unwrap().status(), StatusCode::OK);
}

/// A client that sends requests and never reads the answers is closed after the idle timeout,
/// as a silent one is: its connection's loop, waiting to write to it, would otherwise hold the
/// session (and every answer it was owed) for ever, and never see the idle timer again.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_after_the_idle_timeout() {
    let relay = Relay::start_with(&yaml("limits: {idle_timeout_secs: 1}\n"), "backends: []\n", &[]).await;
    let mut stuck = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "stuck", "version": "1"}}});
    let mut burst = format!("{initialize}\n");
    // About 25 MB of answers: more than the two sockets' buffers hold.
    for id in 1..=20_000 {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "relay_get_status"}});
        burst.push_str(&format!("{call}\n"));
    }
    // Written, never read; the stream is kept open (returned) once the relay stops reading.
    let _writer = tokio::spawn(async move {
        let _ = stuck.write_all(burst.as_bytes()).await;
        stuck
    });
    eventually("the stuck client's session opened", || async {
        (relay.status().await["sessions"].as_u64()? >= 2).then_some(())
    })
    .await;
    let started = Instant::now();
    eventually("the stuck client's session closed", || async {
        (relay.status().await["sessions"].as_u64()? <= 1).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "closed after {:?}", started.elapsed());
}

/// Over HTTP too: a client that asks for a large answer and reads nothing of it is closed after
/// the idle timeout (hyper has no write deadline; the connection, and the answer it held, would
/// stay for ever). Its connection ends with the answer cut short.
#[tokio::test]
async fn an_http_client_that_never_reads_is_closed_after_the_idle_timeout() {
    let size = 12 << 20;
    let backend = HttpBackend::start(size).await;
    let backends = format!("backends:\n  - name: big\n    url: {}\n", backend.url());
    let limits = "limits: {idle_timeout_secs: 1, max_message_bytes: 33554432}\n";
    let relay = Relay::start_with(&yaml(limits), &backends, &[]).await;
    relay.wait_ready("big").await;
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "big", "arguments": {}}});
    let body = call.to_string();
    let mut stuck = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: application/json, text/event-stream\r\n\
         content-type: application/json\r\nmcp-session-id: {}\r\ncontent-length: {}\r\n\r\n",
        session.id,
        body.len()
    );
    stuck.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    // Nothing read for three idle timeouts; then what arrived is read to its end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stuck.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the connection stayed open (read {} bytes)", received.len());
    assert!(received.len() < size, "the whole answer arrived ({} bytes): the write was not given up", received.len());
}
