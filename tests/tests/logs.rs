//! Structured logging: every tools/call is a JSON record when it arrives ("Tool call
//! received") and one when it ends ("Tool call finished", with duration and outcome).

use relay_tests::{Fixture, Relay, TEST_RELAY_YAML};
use serde_json::{Value, json};

#[tokio::test]
async fn json_logs_have_one_record_per_tool_call() {
    let fixture = Fixture::start("alpha").await;
    let relay =
        Relay::start_with(TEST_RELAY_YAML, &format!("backends:\n{}", fixture.entry()), &["--log-format", "json"]).await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    client.call_tool("echo", json!({"message": "logged"})).await;
    client.call_tool("nope", json!({})).await;
    relay.wait_for_log("\"tool\":\"nope\"").await;

    let records: Vec<Value> =
        relay.log().lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    // Readiness polling calls relay_get_status on other sessions; look at this client's calls.
    let calls: Vec<&Value> =
        records.iter().filter(|r| r["message"] == "Tool call finished" && r["tool"] != "relay_get_status").collect();
    let received: Vec<&Value> =
        records.iter().filter(|r| r["message"] == "Tool call received" && r["tool"] != "relay_get_status").collect();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[0]["backend"], "alpha", "the owner is named before the call runs");
    assert_eq!(calls.len(), 2, "{calls:?}");
    let ok = calls.iter().find(|r| r["tool"] == "echo").unwrap();
    assert_eq!(ok["backend"], "alpha");
    assert_eq!(ok["outcome"], "ok");
    assert!(ok["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(ok["session"].as_str().unwrap().len(), 12, "the session by its tag, never its id");
    let failed = calls.iter().find(|r| r["tool"] == "nope").unwrap();
    assert_eq!(failed["session"], ok["session"]);
    assert_eq!(failed["outcome"], "error");
    assert!(failed["error"].as_str().unwrap().contains("Unknown tool"));
}
