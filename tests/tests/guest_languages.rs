//! Plugins written in Python (componentize-py) and JavaScript (ComponentizeJS) against the same
//! WIT, built by `scripts/build-guest-plugins.sh` and loaded by the unchanged host: the Python
//! rate limiter refuses past its budget exactly like its Rust twin, the JavaScript echo adapter
//! offers the Rust adapter's tools, and both hot-reload with their kv state intact.
//!
//! Their components are large (CPython, StarlingMonkey inside) and take seconds to compile, so
//! the compiled artifacts go to one cache under target/ that every run shares.

use std::time::Duration;

use relay_tests::{LineClient, Relay, copy_plugin, rebuilt, replace_file, repo_root, text_of};
use serde_json::json;

/// How long a compile of a large component may take on a busy two-core machine.
const COMPILE_PATIENCE: Duration = Duration::from_secs(120);

async fn new_version_runs(relay: &Relay, name: &str, before: &serde_json::Value) {
    let deadline = tokio::time::Instant::now() + COMPILE_PATIENCE;
    while relay.plugin_status(name).await["hash"] == *before {
        assert!(tokio::time::Instant::now() < deadline, "{name} was not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(client: &mut LineClient) -> String {
    text_of(&client.call_tool("count", json!({})).await)
}

#[tokio::test]
async fn python_and_javascript_plugins_answer_like_their_rust_twins_and_hot_reload() {
    let dir = tempfile::tempdir().unwrap();
    let python = copy_plugin(dir.path(), "rate_limit_py");
    let javascript = copy_plugin(dir.path(), "echo_adapter_js");
    let cache = repo_root().join("target/test-plugin-cache");
    // `echo` once a minute: spent at the first call, and not back before the reloads end (the
    // principal's own budget is ample: status checks are tool calls too).
    let relay_yaml = format!(
        "plugin_cache_dir: {cache}\nplugins:\n\
         \x20 - {{name: limiter, world: policy, path: {python}, grants: {{clock: true}}, config: {{per_minute: 100000, per_tool: {{echo: 1}}, methods: [tools/call]}}}}\n\
         \x20 - {{name: echo, world: adapter, path: {javascript}, config: {{prefix: 'js: '}}}}\n",
        cache = cache.display(),
        python = python.display(),
        javascript = javascript.display(),
    );
    let relay = Relay::start_files(dir.path(), &relay_yaml, "backends: []\n", &[]).await;
    let mut client = relay.line_client().await;

    let tools = client.request("tools/list", json!({})).await;
    let echo = tools["result"]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "echo").cloned();
    assert_eq!(echo.unwrap()["inputSchema"]["required"], json!(["message"]), "{tools}");
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "hi"})).await), "js: hi");
    assert_eq!(count(&mut client).await, "1");

    // A new build of the JavaScript adapter: the counter lives in kv and survives it.
    let before = relay.plugin_status("echo").await["hash"].clone();
    replace_file(&javascript, &rebuilt(&std::fs::read(&javascript).unwrap(), "v2"));
    new_version_runs(&relay, "echo", &before).await;
    assert_eq!(count(&mut client).await, "2", "kv state lost across the reload");

    // The second `echo` is over the Python limiter's budget: refused as the Rust twin refuses.
    let refused = client.call_tool("echo", json!({"message": "again"})).await;
    assert_eq!(refused["error"]["code"], -32019, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("rate limit exceeded for anonymous"), "{refused}");
    assert!(refused["error"]["data"]["retry_after_ms"].as_u64().unwrap() > 1000, "{refused}");

    // A new build of the Python limiter: the spent budget is in kv, so it stays spent.
    let before = relay.plugin_status("limiter").await["hash"].clone();
    replace_file(&python, &rebuilt(&std::fs::read(&python).unwrap(), "v2"));
    new_version_runs(&relay, "limiter", &before).await;
    let still = client.call_tool("echo", json!({"message": "again"})).await;
    assert_eq!(still["error"]["code"], -32019, "{still}");
    assert_eq!(relay.plugin_status("limiter").await["reloads"], 1);
}
