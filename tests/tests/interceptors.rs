//! Interceptors (the `interceptor` world): bound to backends and tools by globs, they see a
//! call's arguments before (and may replace them or deny the call) and its result after (and may
//! replace it); the shipped `redact` masks secrets and e-mail addresses and counts them; calls
//! they are not bound to pass untouched; a failing interceptor fails the call or, with
//! `on_error: fail-open`, is skipped, logged and counted.

use relay_tests::{Relay, copy_plugin, metric_value, stdio_fixture_entry, text_of};
use serde_json::json;

fn interceptor(dir: &std::path::Path, name: &str, wasm: &str, extra: &str) -> String {
    let path = copy_plugin(dir, wasm);
    format!("  - name: {name}\n    world: interceptor\n    path: {}\n{extra}", path.display())
}

#[tokio::test]
async fn interceptors_deny_pin_tag_and_redact_only_what_they_are_bound_to() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = [
        interceptor(
            dir.path(),
            "filter",
            "test_interceptor",
            "    bind: {backends: [a]}\n    config: {deny: [a__env], pin: {ms: 1}, tag: ' [seen]'}\n",
        ),
        interceptor(dir.path(), "redact", "redact", "    bind: {backends: ['a*']}\n"),
        interceptor(
            dir.path(),
            "trap-open",
            "test_interceptor",
            "    bind: {tools: [c__slow]}\n    on_error: fail-open\n    config: {trap: [c__slow]}\n",
        ),
        interceptor(
            dir.path(),
            "trap-closed",
            "test_interceptor",
            "    bind: {tools: [c__env]}\n    config: {trap: [c__env]}\n",
        ),
    ];
    let relay_yaml = format!(
        "upstream: {{backoff_initial_ms: 50, call_timeout_secs: 20}}\nplugin_cache_dir: cache\nplugins:\n{}",
        plugins.concat()
    );
    let backends = format!("backends:\n{}{}", stdio_fixture_entry("a", &[]), stdio_fixture_entry("c", &[]));
    let relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.wait_ready("a").await;
    relay.wait_ready("c").await;
    let mut client = relay.line_client().await;
    let secret = "mail ann@example.com key sk-proj-abcdefghijklmnopqrstuvwx";

    // Bound: tagged by `filter`, then masked by `redact`, which counts what it masked.
    let reply = client.call_tool("a__echo", json!({"message": secret})).await;
    assert_eq!(text_of(&reply), "a: mail [REDACTED:email] key [REDACTED:api_key] [seen]", "{reply}");
    assert_eq!(reply["result"]["_meta"]["relay/redacted"]["total"], 2, "{reply}");
    // Denied by name, with the interceptor's reason.
    let denied = client.call_tool("a__env", json!({})).await;
    assert_eq!(denied["error"]["code"], -32013, "{denied}");
    assert!(denied["error"]["message"].as_str().unwrap().contains("a__env is not for anonymous"), "{denied}");
    // A pinned parameter: the slow tool is asked for 1 ms, whatever the client said.
    let started = std::time::Instant::now();
    let pinned = client.call_tool("a__slow", json!({"ms": 5000})).await;
    assert_eq!(text_of(&pinned), "a: slow [seen]");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "the pinned ms applied");

    // Not bound: untouched.
    let other = client.call_tool("c__echo", json!({"message": secret})).await;
    assert_eq!(text_of(&other), format!("c: {secret}"));
    assert!(other["result"].get("_meta").is_none_or(|m| m.get("relay/redacted").is_none()));

    // A trapping interceptor: skipped when it fails open (logged, counted), fatal otherwise.
    let open = client.call_tool("c__slow", json!({"ms": 1})).await;
    assert_eq!(text_of(&open), "c: slow", "{open}");
    let closed = client.call_tool("c__env", json!({})).await;
    assert_eq!(closed["error"]["code"], -32603, "{closed}");
    assert!(closed["error"]["message"].as_str().unwrap().contains("trap-closed"), "{closed}");
    relay.wait_for_log("the call goes on without it").await;
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let failed_open = metric_value(&metrics, r#"relay_interceptor_failed_open_total{plugin="trap-open"}"#);
    assert_eq!(failed_open, Some(1.0), "{metrics}");
}
