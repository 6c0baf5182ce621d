//! Guessing is throttled (issue 15): 2,000 wrong bearer tokens from one address reach the auth
//! plugin at most `limits.auth_failures` times; the rest are refused at once (HTTP 429 with
//! `Retry-After`, JSON-RPC `-32029`, WebSocket handshake 429), logged without the token and
//! counted, while a client with the right token from another address is served throughout; a
//! credential verified recently stays served even from the throttled address, and wrong
//! tokens sent on an open session count as guesses too.

use std::net::IpAddr;

use futures::StreamExt;
use relay_tests::{Relay, metric_value, plugin_wasm};
use serde_json::{Value, json};

const GOOD: &str = "the-right-token-4d1f";
/// A valid token nobody has used yet.
const UNUSED: &str = "another-right-token-77ab";
const MAX_FAILURES: usize = 10;

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}})
}

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(address.parse::<IpAddr>().unwrap()).build().unwrap()
}

async fn initialize_with(client: &reqwest::Client, relay: &Relay, token: &str) -> reqwest::Response {
    post(client, &relay.http("/mcp"), token, None, &initialize()).await
}

/// A POST of `body` to `url` with `token`, on `session` when given.
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = client.post(url).header("Accept", "application/json, text/event-stream").bearer_auth(token);
    if let Some(session) = session {
        request = request.header("Mcp-Session-Id", session);
    }
    request.json(body).send().await.unwrap()
}

/// The shipped HAProxy in front of `relay` (as blue), once it sees the relay ready.
async fn haproxy_in_front(dir: &std::path::Path, relay: &Relay) -> relay_tests::haproxy::Haproxy {
    let lb = relay_tests::haproxy::Haproxy::start(dir, relay.port, relay_tests::haproxy::free_port()).await;
    relay_tests::eventually("HAProxy sees the relay ready", || async {
        reqwest::get(lb.url("/readyz")).await.ok().filter(|r| r.status() == 200)
    })
    .await;
    lb
}

#[tokio::test]
async fn two_thousand_wrong_tokens_reach_the_plugin_at_most_the_configured_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "limits: {{auth_failures: {MAX_FAILURES}, auth_failure_window_secs: 600}}\nmetrics: {{listen: 127.0.0.1:0}}\nplugins:\n  - {{name: auth, world: auth, path: {}, config: {{tokens: [{{token: {GOOD}, principal: ops}}, {{token: {UNUSED}, principal: alice}}]}}}}\n",
        plugin_wasm("token_auth").display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;

    // The right token from another address, all the while.
    let stop = tokio::sync::watch::channel(false);
    let good = {
        let (relay_port, mut stop) = (relay.port, stop.1.clone());
        tokio::spawn(async move {
            let client = client_from("127.0.0.2");
            let relay_url = format!("http://127.0.0.1:{relay_port}/mcp");
            let mut served = 0;
            while !*stop.borrow_and_update() {
                let response = post(&client, &relay_url, GOOD, None, &initialize()).await;
                assert_eq!(response.status(), 200, "the good client was refused: {:?}", response.text().await);
                served += 1;
            }
            served
        })
    };

    let attacker = client_from("127.0.0.1");
    let statuses: Vec<(u16, Option<String>, Value)> = futures::stream::iter(0..2000)
        .map(|i| {
            let (attacker, relay) = (&attacker, &relay);
            async move {
                let response = initialize_with(attacker, relay, &format!("guess-{i:04}")).await;
                let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), retry_after, response.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    stop.0.send(true).unwrap();
    assert!(good.await.unwrap() > 0);

    let denied = statuses.iter().filter(|(status, ..)| *status == 401).count();
    let throttled: Vec<_> = statuses.iter().filter(|(status, ..)| *status == 429).collect();
    assert_eq!(denied, MAX_FAILURES, "guesses that reached the plugin");
    assert_eq!(denied + throttled.len(), 2000);
    for (_, retry_after, body) in &throttled {
        let secs: u64 = retry_after.as_deref().expect("Retry-After").parse().unwrap();
        assert!((1..=600).contains(&secs), "{secs}");
        assert_eq!(body["error"]["code"], -32029, "{body}");
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", relay.metrics_port.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let plugin_denials = metric_value(&metrics, r#"relay_plugin_calls_total{plugin="auth",outcome="denied"}"#).unwrap();
    assert!(plugin_denials <= MAX_FAILURES as f64, "{plugin_denials} denials by the plugin");
    let counted = metric_value(&metrics, r#"relay_auth_throttled_total{transport="http"}"#).unwrap();
    assert_eq!(counted as usize, throttled.len());

    // The other transports refuse the throttled address too, before asking the plugin: a
    // credential it has not admitted recently waits out the window...
    let mut line = relay_tests::LineClient::connect(relay.port).await;
    let mut params = initialize()["params"].clone();
    params["_meta"] = json!({"authorization": format!("Bearer {UNUSED}")});
    let answer = line.request("initialize", params).await;
    assert_eq!(answer["error"]["code"], -32029, "a token not verified recently waits out the window: {answer}");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(relay.ws("/ws")).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {UNUSED}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("the WebSocket handshake was not refused with 429: {:?}", other.map(|_| ())),
    }
    // ... while one verified recently is still served there, on every transport: a guesser
    // does not lock out the valid clients behind its address.
    assert_eq!(initialize_with(&attacker, &relay, GOOD).await.status(), 200, "the right token was locked out");
    let mut line = relay_tests::LineClient::connect(relay.port).await;
    let mut params = initialize()["params"].clone();
    params["_meta"] = json!({"authorization": format!("Bearer {GOOD}")});
    let answer = line.request("initialize", params).await;
    assert!(answer["result"].is_object(), "{answer}");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(relay.ws("/ws")).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {GOOD}").parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok(), "the WebSocket refused the right token");

    // Every refusal is logged, with its outcome; no token ever is.
    let log = relay.log();
    assert!(log.matches("throttled").count() >= throttled.len(), "refusals are logged");
    assert!(!log.contains("guess-") && !log.contains(GOOD), "a token reached the log");
}

#[tokio::test]
async fn wrong_tokens_on_an_open_session_count_as_guesses() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "limits: {{auth_failures: 5, auth_failure_window_secs: 600}}\nplugins:\n  - {{name: auth, world: auth, path: {}, config: {{tokens: [{{token: {GOOD}, principal: alice}}]}}}}\n",
        plugin_wasm("token_auth").display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let client = reqwest::Client::new();
    let opened = initialize_with(&client, &relay, GOOD).await;
    let session = opened.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    for i in 0..60 {
        let response = post(&client, &relay.http("/mcp"), &format!("guess-{i}"), Some(&session), &list).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "guesses counted: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 55, "then throttled: {statuses:?}");
    assert!(!relay.log().contains(&session), "a session id reached the log");
}

/// A newline client connecting from `address` to `port`: its answer to `initialize` with
/// `token`.
async fn line_initialize_from(address: &str, port: u16, token: &str) -> Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{address}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut message = initialize();
    message["params"]["_meta"] = json!({"authorization": format!("Bearer {token}")});
    write.write_all(format!("{message}\n").as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let line = tokio::time::timeout(relay_tests::PATIENCE, lines.next_line()).await.unwrap().unwrap().unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn behind_the_shipped_haproxy_each_client_is_throttled_by_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: {{trusted_proxies: [127.0.0.1]}}\nlimits: {{auth_failures: 5, auth_failure_window_secs: 600}}\nplugins:\n  - {{name: auth, world: auth, path: {}, config: {{tokens: [{{token: {GOOD}, principal: alice}}, {{token: {UNUSED}, principal: bob}}]}}}}\n",
        plugin_wasm("token_auth").display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let lb = haproxy_in_front(dir.path(), &relay).await;

    // One guesser behind HAProxy...
    let attacker = client_from("127.0.0.3");
    let mut statuses = Vec::new();
    for i in 0..12 {
        let response = post(&attacker, &lb.url("/mcp"), &format!("guess-{i}"), None, &initialize()).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7, "{statuses:?}");
    let answer = line_initialize_from("127.0.0.3", lb.tcp, UNUSED).await;
    assert_eq!(answer["error"]["code"], -32029, "the guesser's address is throttled on newline too: {answer}");

    // ... does not lock out other clients behind the same HAProxy, on any transport, even with
    // tokens the relay has never seen.
    let alice = client_from("127.0.0.4");
    let response = post(&alice, &lb.url("/mcp"), GOOD, None, &initialize()).await;
    assert_eq!(response.status(), 200, "a client behind the proxy was locked out by another");
    let answer = line_initialize_from("127.0.0.5", lb.tcp, UNUSED).await;
    assert!(answer["result"].is_object(), "{answer}");
    let log = relay.log();
    assert!(log.contains("127.0.0.3"), "the relay logs the client's own address");
}

/// With HAProxy on the relay's host, every local user reaches its loopback frontends as
/// 127.0.0.1, which is also where the deploy script's `relay health` (and the operator's own
/// tools) connect from, directly. A local user's guesses through HAProxy must not lock those out.
#[tokio::test]
async fn local_guesses_through_haproxy_do_not_lock_out_the_deploy_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: {{trusted_proxies: [127.0.0.1]}}\nlimits: {{auth_failures: 3, auth_failure_window_secs: 600}}\nplugins:\n  - {{name: auth, world: auth, path: {}, config: {{tokens: [{{token: {GOOD}, principal: deploy}}, {{token: {UNUSED}, principal: bob}}]}}}}\n",
        plugin_wasm("token_auth").display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let lb = haproxy_in_front(dir.path(), &relay).await;

    let local_user = client_from("127.0.0.1");
    for i in 0..3 {
        let response = post(&local_user, &lb.url("/mcp"), &format!("guess-{i}"), None, &initialize()).await;
        assert_eq!(response.status(), 401);
    }
    let answer = line_initialize_from("127.0.0.1", lb.tcp, UNUSED).await;
    assert_eq!(answer["error"]["code"], -32029, "127.0.0.1 through HAProxy is throttled: {answer}");

    // The health check connects to the colour's own port, with a token the relay has not seen.
    let health = std::process::Command::new(relay_tests::relay_bin())
        .args(["health", "--host", "127.0.0.1", "--port", &relay.port.to_string(), "--timeout", "5"])
        .env("RELAY_AUTH_TOKEN", GOOD)
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "the direct health check was locked out by guesses through the proxy: {}",
        String::from_utf8_lossy(&health.stdout)
    );
    let log = relay.log();
    assert!(log.contains("127.0.0.1 (through a trusted proxy)"), "the throttled key is logged as proxied");
}

#[tokio::test]
async fn the_tls_tcp_frontend_passes_newline_json_rpc_only() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "listen: {trusted_proxies: [127.0.0.1]}\n";
    let relay = Relay::start_files(dir.path(), yaml, "backends: []\n", &[]).await;
    let lb = haproxy_in_front(dir.path(), &relay).await;
    let through_tls = |request: &'static str| {
        let port = lb.tcps;
        async move {
            let mut child = tokio::process::Command::new("openssl")
                .args(["s_client", "-quiet", "-no_ign_eof", "-connect", &format!("127.0.0.1:{port}")])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stdin, request.as_bytes()).await.unwrap();
            let output = tokio::time::timeout(relay_tests::PATIENCE, async {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                drop(stdin);
                child.wait_with_output().await.unwrap()
            })
            .await
            .unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    let metrics = through_tls("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(!metrics.contains("200") && !metrics.contains("relay_"), "metrics through the TLS TCP port: {metrics}");
    let answer = through_tls(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{}}}\n",
    )
    .await;
    assert!(answer.contains("serverInfo"), "newline JSON-RPC passes: {answer}");
}
