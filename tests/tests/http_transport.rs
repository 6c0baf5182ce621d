//! Streamable HTTP on `/mcp` spoken by hand (reqwest), checking the protocol rules the SDK
//! clients rely on, plus the `/healthz` and `/readyz` probes.

use std::time::Duration;

use relay_tests::{Fixture, Relay, sse_messages};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NO_BACKENDS: &str = "backends: []\n";
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

fn post(relay: &Relay, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(relay.http("/mcp"))
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .body(body.to_string())
}

async fn initialize(relay: &Relay) -> String {
    let response = post(
        relay,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e"}}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let session = response.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
    session
}

#[tokio::test]
async fn http_session_lifecycle_and_header_rules() {
    let relay = Relay::start(NO_BACKENDS).await;
    let session = initialize(&relay).await;

    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = post(&relay, &note).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let response = post(&relay, &list)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    // The relay's own tools: status, servers (list, add, remove, reconnect), plugins (reload,
    // rollback), drain, and the caller's own credentials (set, status, revoke).
    assert_eq!(body["result"]["tools"].as_array().unwrap().len(), 11);

    // A tools/call with nothing streamed before its answer is answered as one JSON body (the
    // transport lets the server choose; SSE only when progress or requests come first).
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "relay_get_status"}});
    let response = post(&relay, &call).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let messages = sse_messages(&response.text().await.unwrap());
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], 3);
    assert!(messages[0]["result"]["structuredContent"]["sessions"].as_u64().unwrap() >= 1);

    let missing = post(&relay, &list).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let unknown = post(&relay, &list).header("mcp-session-id", "nope").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad_version = post(&relay, &list)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "1999-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_version.status(), StatusCode::BAD_REQUEST);
    assert!(bad_version.text().await.unwrap().contains("unsupported MCP-Protocol-Version"));

    let delete =
        reqwest::Client::new().delete(relay.http("/mcp")).header("mcp-session-id", &session).send().await.unwrap();
    assert!(delete.status().is_success());
    let after = post(&relay, &list).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn http_bad_input_is_refused_with_status_and_json_rpc_error() {
    let relay = Relay::start_with("limits:\n  max_message_bytes: 2048\n", NO_BACKENDS, &[]).await;
    let client = reqwest::Client::new();
    let send = |body: String| {
        client
            .post(relay.http("/mcp"))
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(body)
    };
    let response = send("{oops".into()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], -32700);

    let response = send(format!("{{\"pad\":\"{}\"}}", "x".repeat(5000))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], -32600);

    let response = send(format!("{}{}", "[".repeat(100), "]".repeat(100))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response =
        client.post(relay.http("/mcp")).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let response = send("{}".into()).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn http_get_stream_carries_tool_list_changes() {
    let relay = Relay::start(NO_BACKENDS).await;
    let session = initialize(&relay).await;
    let mut stream = reqwest::Client::new()
        .get(relay.http("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    // Adding a backend changes the catalog; the open GET stream must say so.
    let fixture = Fixture::start("late").await;
    std::fs::write(relay.backends_path(), format!("backends:\n{}", fixture.entry())).unwrap();
    let mut seen = String::new();
    let found = tokio::time::timeout(relay_tests::PATIENCE, async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("notifications/tools/list_changed") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "stream said: {seen}");
}

/// A session's GET stream ends with the session: after `DELETE` nothing more reaches whoever
/// holds it (a catalog change included), and it no longer counts as the session's one stream.
#[tokio::test]
async fn a_get_stream_ends_when_its_session_is_deleted() {
    let relay = Relay::start(NO_BACKENDS).await;
    let session = initialize(&relay).await;
    let get = || {
        reqwest::Client::new()
            .get(relay.http("/mcp"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
    };
    let mut stream = get().send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(get().send().await.unwrap().status(), StatusCode::CONFLICT, "one GET stream per session");
    let deleted = reqwest::Client::new().delete(relay.http("/mcp")).header("mcp-session-id", &session).send().await;
    assert_eq!(deleted.unwrap().status(), StatusCode::NO_CONTENT);
    let mut seen = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the GET stream outlived its session: {seen}");
    assert!(!seen.contains("jsonrpc"), "{seen}");
    assert_eq!(get().send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn probes_report_alive_and_ready() {
    let relay = Relay::start(NO_BACKENDS).await;
    let health = reqwest::get(relay.http("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = reqwest::get(relay.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.json::<Value>().await.unwrap()["ready"], true);
}

/// The listener reads a connection's first bytes to tell its protocol and hands them to HTTP:
/// a request whose first byte arrives alone, then the rest of its head, then its body, is
/// answered whole.
#[tokio::test]
async fn a_request_whose_bytes_arrive_apart_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = Relay::start("backends: []\n").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "split", "version": "1"}}})
    .to_string();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (head, rest) = request.split_at(1);
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (rest_of_head, body) = rest.split_at(rest.len() - body.len());
    stream.write_all(rest_of_head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&seen).contains("\"protocolVersion\"") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    assert!(answered.is_ok(), "no answer: {text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("mcp-session-id:"), "{text}");
}
