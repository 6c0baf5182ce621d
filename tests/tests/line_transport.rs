//! The newline-delimited JSON-RPC transport: the health check (ours and the reference
//! plan's `health_check.py`, unchanged) and every kind of bad input.

use relay_tests::{LineClient, Relay, repo_root, text_of};
use serde_json::json;

const NO_BACKENDS: &str = "backends: []\n";

#[tokio::test]
async fn health_command_passes_against_a_running_relay_and_fails_without_one() {
    let relay = Relay::start(NO_BACKENDS).await;
    let output = tokio::process::Command::new(relay_tests::relay_bin())
        .args(["health", "--host", "127.0.0.1", "--port", &relay.port.to_string(), "--timeout", "5"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("Health check PASSED") && stdout.contains("Tools: 11 available"), "{stdout}");

    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = tokio::process::Command::new(relay_tests::relay_bin())
        .args(["health", "--port", &closed_port.to_string(), "--timeout", "2"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
}

#[tokio::test]
async fn reference_health_check_script_passes_unchanged() {
    let relay = Relay::start(NO_BACKENDS).await;
    let output = tokio::process::Command::new("python3")
        .arg(repo_root().join("tests/reference/health_check.py"))
        .args(["--host", "127.0.0.1", "--port", &relay.port.to_string()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Health check PASSED") && stdout.contains("Tools: 11 available"), "{stdout}");
}

#[tokio::test]
async fn line_bad_input_gets_errors_and_the_connection_stays_usable() {
    let relay = Relay::start_with("limits:\n  max_message_bytes: 2048\n  max_json_depth: 8\n", NO_BACKENDS, &[]).await;
    let mut client = relay.line_client().await;

    client.send_raw("{this is not json").await;
    let reply = client.recv().await;
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert_eq!(reply["id"], serde_json::Value::Null);

    assert_eq!(client.request("no/such/method", json!({})).await["error"]["code"], -32601);

    let reply = client.request("tools/call", json!({"arguments": {}})).await;
    assert_eq!(reply["error"]["code"], -32602, "missing name: {reply}");
    let reply = client.request("tools/call", json!({"name": "relay_get_status", "arguments": [1]})).await;
    assert_eq!(reply["error"]["code"], -32602, "arguments not an object: {reply}");

    let reply = client.call_tool("no_such_tool", json!({})).await;
    assert_eq!(reply["error"]["code"], -32602);
    assert!(reply["error"]["message"].as_str().unwrap().contains("Unknown tool: no_such_tool"), "{reply}");

    let big = json!({"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"pad": "x".repeat(4096)}});
    client.send_raw(&big.to_string()).await;
    let reply = client.recv().await;
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("exceeds the limit of 2048 bytes"), "{reply}");

    let deep = format!("{}{}", "[".repeat(50), "]".repeat(50));
    client.send_raw(&deep).await;
    let reply = client.recv().await;
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("deeper than the limit of 8"), "{reply}");

    client.send_raw(r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#).await;
    assert_eq!(client.recv().await["error"]["code"], -32600);
    client.send_raw(r#"[{"jsonrpc":"2.0","id":4,"method":"ping"}]"#).await;
    assert_eq!(client.recv().await["error"]["code"], -32600);

    // After all of that, the same connection still works.
    assert_eq!(client.request("ping", json!({})).await["result"], json!({}));
    assert!(text_of(&client.call_tool("relay_get_status", json!({})).await).contains("uptime_secs"));
}

#[tokio::test]
async fn line_requests_are_answered_concurrently_and_notifications_get_no_reply() {
    let relay = Relay::start(NO_BACKENDS).await;
    let mut client = LineClient::connect(relay.port).await;
    // No initialize needed for the lenient newline transport (health checks skip it too).
    client.send_raw(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    let reply = client.request("ping", json!({})).await;
    assert_eq!(reply["id"], 1, "a notification must not be answered: {reply}");
}

#[tokio::test]
async fn sessions_over_the_limit_are_refused_with_an_error() {
    let relay = Relay::start_with("limits:\n  max_sessions: 2\n", NO_BACKENDS, &[]).await;
    let _first = relay.line_client().await;
    let _second = relay.line_client().await;
    let mut third = LineClient::connect(relay.port).await;
    third.send_raw(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
    let refusal = third.recv().await;
    assert_eq!(refusal["error"]["code"], -32003, "{refusal}");
    assert!(refusal["error"]["message"].as_str().unwrap().contains("2 sessions"), "{refusal}");
    drop(_first);
    // A closed session frees its slot.
    relay_tests::eventually("a free session slot", || async {
        let mut client = LineClient::connect(relay.port).await;
        client.send_raw(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
        client.recv().await.get("result").map(drop)
    })
    .await;
}

#[tokio::test]
async fn a_batch_is_answered_with_an_error_and_the_session_goes_on() {
    let relay = Relay::start("backends: []\n").await;
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
    // As the first message...
    let mut client = LineClient::connect(relay.port).await;
    client.send_raw(batch).await;
    let answer = client.recv().await;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("batches"), "{answer}");
    // ... and within a session.
    let mut client = relay.line_client().await;
    client.send_raw(batch).await;
    let answer = client.recv().await;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert_eq!(client.request("ping", json!({})).await["result"], json!({}), "the session goes on");
}

/// The listener reads a connection's first bytes to tell its protocol: a first message whose
/// bytes arrive apart (the first alone), and a second message in the same write as the end of
/// the first, all reach the session in order.
#[tokio::test]
async fn messages_split_across_writes_and_joined_in_one_are_all_answered() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let relay = Relay::start(NO_BACKENDS).await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "split", "version": "1"}}})
    .to_string();
    let (head, rest) = initialize.split_at(1);
    write.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    write.write_all(&rest.as_bytes()[..20]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let joined = format!(
        "{}\n{}\n{}\n",
        &rest[20..],
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    );
    write.write_all(joined.as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line()).await;
        serde_json::from_str(&line.expect("answered in time").unwrap().expect("a line")).unwrap()
    };
    let first = next().await;
    assert_eq!(
        (first["id"].clone(), first["result"]["protocolVersion"].clone()),
        (json!(1), json!("2025-06-18")),
        "{first}"
    );
    let second = next().await;
    assert_eq!(second["id"], 2, "{second}");
    assert!(second["result"]["tools"].as_array().is_some_and(|tools| !tools.is_empty()), "{second}");
}
