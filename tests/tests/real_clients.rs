//! Clients we did not write (the official TypeScript and Python SDKs) list and call tools of
//! both kinds of backend through the relay: our WebSocket fixture and the published
//! server-everything over stdio.

use relay_tests::{Fixture, Relay, everything_stdio_entry, py_client, ts_client};
use serde_json::{Value, json};

async fn relay_with_both() -> (Relay, Fixture) {
    let fixture = Fixture::start("fixture").await;
    let relay = Relay::start(&format!("backends:\n{}{}", fixture.entry(), everything_stdio_entry("everything"))).await;
    relay.wait_ready("fixture").await;
    relay.wait_ready("everything").await;
    (relay, fixture)
}

fn calls() -> Value {
    // Both backends have `echo`, so both copies are prefixed; `add` and `get-sum` are unique.
    json!([
        {"name": "fixture__echo", "arguments": {"message": "hello fixture"}},
        {"name": "everything__echo", "arguments": {"message": "hello everything"}},
        {"name": "add", "arguments": {"a": 40, "b": 2}},
        {"name": "get-sum", "arguments": {"a": 1, "b": 2}},
        {"name": "relay_get_status", "arguments": {}},
        {"name": "missing_tool", "arguments": {}}
    ])
}

fn check_report(report: &Value) {
    let tools: Vec<&str> = report["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for expected in ["fixture__echo", "everything__echo", "add", "get-sum", "relay_get_status"] {
        assert!(tools.contains(&expected), "{expected} missing: {tools:?}");
    }
    assert_eq!(report["serverInfo"]["name"], "relay");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results[0]["content"][0]["text"], "fixture: hello fixture");
    assert_eq!(results[1]["content"][0]["text"], "Echo: hello everything");
    assert_eq!(results[2]["content"][0]["text"], "42");
    assert!(results[3]["content"][0]["text"].as_str().unwrap().contains('3'), "{}", results[3]);
    assert_eq!(results[4]["structuredContent"]["backends"].as_array().unwrap().len(), 2);
    assert_eq!(results[5]["error"]["code"], -32602, "{}", results[5]);
}

#[tokio::test]
async fn ts_sdk_http_to_websocket_and_stdio_backends() {
    let (relay, _fixture) = relay_with_both().await;
    let report = ts_client("http", &relay.http("/mcp"), calls()).await;
    assert_eq!(report["protocolVersion"], "2025-11-25");
    check_report(&report);
}

#[tokio::test]
async fn ts_sdk_websocket_to_websocket_and_stdio_backends() {
    let (relay, _fixture) = relay_with_both().await;
    let report = ts_client("ws", &relay.ws("/ws"), calls()).await;
    check_report(&report);
}

#[tokio::test]
async fn python_sdk_http_to_websocket_and_stdio_backends() {
    let (relay, _fixture) = relay_with_both().await;
    let report = py_client(&relay.http("/mcp"), calls()).await;
    assert_eq!(report["protocolVersion"], "2025-11-25");
    check_report(&report);
}
