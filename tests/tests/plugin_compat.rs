//! Plugins built against relay:plugin 0.1.0 (the WIT frozen in `wit/v0.1/`) keep loading and
//! working in a host that speaks 0.2: an auth plugin (whose `connect-info` lacks the 0.2 field)
//! a policy using `kv` and `log` through their 0.1 imports, and an adapter.

use relay_tests::{LineClient, Relay, copy_plugin};
use serde_json::json;

#[tokio::test]
async fn auth_and_policy_plugins_built_against_0_1_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, policy) = (copy_plugin(dir.path(), "legacy_auth"), copy_plugin(dir.path(), "legacy_policy"));
    let adapter = copy_plugin(dir.path(), "legacy_adapter");
    let relay_yaml = format!(
        "plugin_cache_dir: cache\nplugins:\n  - {{name: auth, world: auth, path: {}}}\n  - {{name: old-policy, world: policy, path: {}}}\n  - {{name: old-adapter, world: adapter, path: {}}}\n",
        auth.display(),
        policy.display(),
        adapter.display()
    );
    let relay = Relay::start_files(dir.path(), &relay_yaml, "backends: []\n", &[]).await;
    let mut client = relay.line_client_as(Some("legacy-token")).await;
    let status = client.call_tool("relay_get_status", json!({})).await;
    let plugins = status["result"]["structuredContent"]["plugins"].to_string();
    assert!(plugins.contains("old-policy"), "{status}");
    let denied = client.call_tool("relay_list_servers", json!({})).await;
    assert_eq!(denied["error"]["code"], -32013, "{denied}");
    // kv counted initialize, relay_get_status and this call.
    assert!(denied["error"]["message"].as_str().unwrap().contains("legacy policy says no (request 3)"), "{denied}");
    relay.wait_for_log("legacy policy saw tools/call").await;
    let echoed = client.call_tool("legacy_echo", json!({"x": 1})).await;
    assert_eq!(echoed["result"]["content"][0]["text"], "legacy: {'x':1}", "{echoed}");

    let mut stranger = LineClient::connect(relay.port).await;
    let params = json!({"protocolVersion": "2025-06-18", "_meta": {"authorization": "Bearer other"}});
    let refused = stranger.request("initialize", params).await;
    assert_eq!(refused["error"]["code"], -32011, "{refused}");
}
