//! The interceptors' list hooks: each caller sees the lists as the interceptors bound to them
//! edited them for that caller (hidden, renamed, redescribed); calls follow the edits (a renamed
//! tool answers to its new name only, a hidden tool or prompt is refused by name); a reload that
//! changes what a caller sees sends `list_changed`; a failing list hook hides what it was asked
//! about (fail-closed) or is skipped and counted (fail-open).

use relay_tests::{
    LineClient, Relay, copy_plugin, eventually, interceptor_entry, metric_value, plugin_wasm, replace_file,
    stdio_fixture_entry, text_of,
};
use serde_json::{Value, json};

/// A relay over stdio backends `a` and `c`; `admin` is the token status checks use when an auth
/// plugin is configured.
async fn start(dir: &std::path::Path, plugins: &str, admin: Option<&str>) -> Relay {
    let relay_yaml = format!(
        "upstream: {{backoff_initial_ms: 50, call_timeout_secs: 20}}\nplugin_cache_dir: cache\nplugins:\n{plugins}"
    );
    let backends = format!(
        "backends:\n{}{}",
        stdio_fixture_entry("a", &["--prompts", "p", "--resources", "mem://a-only", "--templates", "mem://{id}"]),
        stdio_fixture_entry("c", &["--prompts", "p"])
    );
    let mut relay = Relay::start_files(dir, &relay_yaml, &backends, &[]).await;
    relay.token = admin.map(str::to_owned);
    relay.wait_ready("a").await;
    relay.wait_ready("c").await;
    relay
}

fn token_auth(dir: &std::path::Path) -> String {
    let auth = copy_plugin(dir, "token_auth");
    format!(
        "  - name: auth\n    world: auth\n    path: {}\n    config: {{tokens: [{{token: ADMIN, principal: ops, roles: [admin]}}, {{token: USER, principal: ann}}]}}\n",
        auth.display()
    )
}

async fn listed(client: &mut LineClient, method: &str, field: &str) -> Vec<Value> {
    let reply = client.request(method, json!({})).await;
    reply["result"][field].as_array().unwrap_or_else(|| panic!("{reply}")).clone()
}

fn names(items: &[Value]) -> Vec<&str> {
    items.iter().map(|i| i["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn each_caller_sees_the_lists_edited_for_it_and_calls_follow_the_edits() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = [
        token_auth(dir.path()),
        interceptor_entry(
            dir.path(),
            "filter",
            "tool_filter",
            "    bind: {backends: [a]}\n    config:\n      deny: [{tools: [a__env], unless_roles: [admin]}]\n      rename: {a__echo: say}\n      describe: {a__echo: Says it back.}\n      drop: [{tools: ['*'], params: [debug]}]\n",
        ),
        interceptor_entry(
            dir.path(),
            "hider",
            "test_interceptor",
            "    bind: {backends: [a]}\n    config: {hide_for: {ann: [a__p, 'mem://a-only']}}\n",
        ),
    ];
    let relay = start(dir.path(), &plugins.concat(), Some("ADMIN")).await;
    let mut user = relay.line_client_as(Some("USER")).await;
    let mut admin = relay.line_client_as(Some("ADMIN")).await;

    let user_tools = listed(&mut user, "tools/list", "tools").await;
    let user_names = names(&user_tools);
    assert!(!user_names.contains(&"a__env") && !user_names.contains(&"a__echo"), "{user_names:?}");
    assert!(user_names.contains(&"say") && user_names.contains(&"c__env"), "{user_names:?}");
    assert!(user_names.contains(&"relay_get_status"), "the relay's own tools are not offered to hooks");
    let say = user_tools.iter().find(|t| t["name"] == "say").unwrap();
    assert_eq!(say["description"], "Says it back.");
    let admin_tools = listed(&mut admin, "tools/list", "tools").await;
    assert!(names(&admin_tools).contains(&"a__env") && names(&admin_tools).contains(&"say"));

    // The new name reaches the backend under its own name; the old name and hidden tools are
    // refused like unknown ones.
    assert_eq!(text_of(&user.call_tool("say", json!({"message": "hi"})).await), "a: hi");
    for hidden in ["a__echo", "a__env"] {
        let refused = user.call_tool(hidden, json!({})).await;
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("Unknown tool"), "{refused}");
    }
    assert!(admin.call_tool("a__env", json!({})).await.get("result").is_some(), "admins keep a__env");

    // Prompts: hidden from one principal only, and refused to it by name.
    assert_eq!(names(&listed(&mut user, "prompts/list", "prompts").await), ["c__p"]);
    assert_eq!(names(&listed(&mut admin, "prompts/list", "prompts").await), ["a__p", "c__p"]);
    let refused = user.request("prompts/get", json!({"name": "a__p"})).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("Unknown prompt"), "{refused}");
    let got = admin.request("prompts/get", json!({"name": "a__p"})).await;
    assert_eq!(got["result"]["messages"][0]["content"]["text"], "a: p", "{got}");
    // A hidden resource is unknown to that caller, though a listed template matches its URI:
    // it can neither read it nor subscribe to it (not even after someone else did).
    assert!(listed(&mut user, "resources/list", "resources").await.is_empty());
    assert_eq!(listed(&mut admin, "resources/list", "resources").await[0]["uri"], "mem://a-only");
    assert_eq!(admin.request("resources/subscribe", json!({"uri": "mem://a-only"})).await["result"], json!({}));
    for method in ["resources/read", "resources/subscribe"] {
        let refused = user.request(method, json!({"uri": "mem://a-only"})).await;
        assert_eq!(refused["error"]["code"], -32002, "{method}: {refused}");
    }
    // Other URIs of the template are the caller's to read; tool-filter's rules (a dropped
    // parameter for every tool) do not touch reads.
    let read = user.request("resources/read", json!({"uri": "mem://other"})).await;
    assert_eq!(read["result"]["contents"][0]["text"], "a: mem://other", "{read}");
    let read = admin.request("resources/read", json!({"uri": "mem://a-only"})).await;
    assert_eq!(read["result"]["contents"][0]["text"], "a: mem://a-only", "{read}");
}

#[tokio::test]
async fn an_interceptor_reload_that_changes_a_list_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let config = "    bind: {backends: [a]}\n    config: {deny: [{tools: [a__env]}]}\n";
    let plugin = interceptor_entry(dir.path(), "hider", "tool_filter", config);
    let relay = start(dir.path(), &plugin, None).await;
    let mut client = relay.line_client().await;
    assert!(!client.tool_names().await.contains(&"a__env".to_string()));

    // A build that reads the same configuration differently (the test interceptor denies only
    // tools named by a plain string) replaces the filter.
    let before = relay.plugin_status("hider").await["hash"].clone();
    replace_file(&dir.path().join("tool_filter.wasm"), &std::fs::read(plugin_wasm("test_interceptor")).unwrap());
    eventually("the reload", || async { (relay.plugin_status("hider").await["hash"] != before).then_some(()) }).await;
    let notified = client.recv().await;
    assert_eq!(notified["method"], "notifications/tools/list_changed", "{notified}");
    assert!(client.tool_names().await.contains(&"a__env".to_string()));
    assert!(client.call_tool("a__env", json!({})).await.get("result").is_some());
}

#[tokio::test]
async fn a_failing_list_hook_hides_what_it_was_asked_about_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = [
        interceptor_entry(
            dir.path(),
            "closed",
            "test_interceptor",
            "    bind: {backends: [a]}\n    config: {trap_list: true}\n",
        ),
        interceptor_entry(
            dir.path(),
            "open",
            "test_interceptor",
            "    bind: {backends: [c]}\n    on_error: fail-open\n    config: {short_list: true}\n",
        ),
    ];
    let relay = start(dir.path(), &plugins.concat(), None).await;
    let mut client = relay.line_client().await;
    let names = client.tool_names().await;
    assert!(!names.iter().any(|n| n.starts_with("a__")), "fail-closed hides a's tools: {names:?}");
    assert!(names.contains(&"c__echo".to_string()), "fail-open skips the bad answer: {names:?}");
    let refused = client.call_tool("a__echo", json!({"message": "x"})).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert_eq!(text_of(&client.call_tool("c__echo", json!({"message": "x"})).await), "c: x");
    relay.wait_for_log("the items it was asked about are hidden").await;
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let failed_open = metric_value(&metrics, r#"relay_plugin_failed_open_total{plugin="open"}"#).unwrap_or(0.0);
    assert!(failed_open >= 1.0, "{metrics}");
}

/// A list hook bound to every backend that fails on one backend's list (a hostile backend's
/// huge list ran it out of memory) hides that backend's items only, not every backend's; and
/// the view built meanwhile serves a while, instead of asking the failing hook again on every
/// request of every principal.
#[tokio::test]
async fn a_list_hook_failing_on_one_backend_hides_only_that_backends_items_and_is_not_asked_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = interceptor_entry(dir.path(), "closed", "test_interceptor", "    config: {trap_list_of: [a]}\n");
    let relay = start(dir.path(), &plugin, None).await;
    let mut client = relay.line_client().await;
    let names = client.tool_names().await;
    assert!(!names.iter().any(|n| n.starts_with("a__")), "a's tools hidden: {names:?}");
    assert!(names.contains(&"c__echo".to_string()), "c's tools stay: {names:?}");
    for _ in 0..10 {
        assert_eq!(text_of(&client.call_tool("c__echo", json!({"message": "x"})).await), "c: x");
    }
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let traps = metric_value(&metrics, r#"relay_plugin_calls_total{plugin="closed",outcome="trap"}"#).unwrap_or(0.0);
    // Four lists a view build asks about: asked per request, eleven builds would have trapped 44 times.
    assert!((1.0..=16.0).contains(&traps), "asked again per request: {traps} traps");
}

/// Rules written with a tool's prefixed name (as the README's examples are) hold when the
/// collision that prefixed it goes away: with backend `c` removed, `a__env` is `env` again and
/// stays denied; with `a` removed, `c__echo` is `echo` again and stays renamed and pinned.
#[tokio::test]
async fn rules_on_a_prefixed_name_hold_when_the_collision_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = [
        token_auth(dir.path()),
        interceptor_entry(
            dir.path(),
            "filter",
            "tool_filter",
            "    config:\n      deny: [{tools: [a__env], unless_roles: [admin]}]\n      rename: {c__echo: say}\n      pin: [{tools: [c__echo], params: {message: pinned}}]\n",
        ),
    ];
    let relay = start(dir.path(), &plugins.concat(), Some("ADMIN")).await;
    let mut user = relay.line_client_as(Some("USER")).await;
    let user_names = names(&listed(&mut user, "tools/list", "tools").await).join(",");
    assert!(!user_names.contains("a__env") && user_names.contains("say"), "{user_names}");

    let only = |name: &str| format!("backends:\n{}", stdio_fixture_entry(name, &[]));
    replace_file(&dir.path().join("backends.yaml"), only("a").as_bytes());
    let user_tools = || async {
        let mut fresh = relay.line_client_as(Some("USER")).await;
        names(&listed(&mut fresh, "tools/list", "tools").await).join(",")
    };
    let user_names = eventually("c gone", || async {
        let names = user_tools().await;
        names.split(',').any(|n| n == "echo").then_some(names)
    })
    .await;
    assert!(!user_names.split(',').any(|n| n == "env"), "a's env, unprefixed, is no longer denied: {user_names}");
    let refused = user.call_tool("env", json!({})).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");

    replace_file(&dir.path().join("backends.yaml"), only("c").as_bytes());
    eventually("a gone, c's echo renamed", || async {
        user_tools().await.split(',').any(|n| n == "say").then_some(())
    })
    .await;
    assert_eq!(text_of(&user.call_tool("say", json!({"message": "chosen"})).await), "c: pinned");
}

/// A resource two backends list is listed as a `relay://` URI for each; its original URI is
/// no name of it, even where one backend's template matches it: hidden from a caller, it cannot
/// be read or subscribed to that way around the view.
#[tokio::test]
async fn a_collided_resource_is_not_reachable_by_its_original_uri_through_a_template() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = [
        token_auth(dir.path()),
        interceptor_entry(
            dir.path(),
            "hider",
            "test_interceptor",
            "    config: {hide_for: {ann: ['relay://a/mem%3A%2F%2Fx']}}\n",
        ),
    ];
    let relay_yaml = format!("plugin_cache_dir: cache\nplugins:\n{}", plugins.concat());
    let backends = format!(
        "backends:\n{}{}",
        stdio_fixture_entry("a", &["--resources", "mem://x", "--templates", "mem://{id}"]),
        stdio_fixture_entry("c", &["--resources", "mem://x"])
    );
    let mut relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.token = Some("ADMIN".into());
    relay.wait_ready("a").await;
    relay.wait_ready("c").await;
    let mut user = relay.line_client_as(Some("USER")).await;
    let listed_uris: Vec<Value> = listed(&mut user, "resources/list", "resources").await;
    assert_eq!(listed_uris.len(), 1, "a's copy hidden from ann: {listed_uris:?}");
    for method in ["resources/read", "resources/subscribe"] {
        let refused = user.request(method, json!({"uri": "mem://x"})).await;
        assert_eq!(refused["error"]["code"], -32002, "{method}: {refused}");
    }
    let mut admin = relay.line_client_as(Some("ADMIN")).await;
    let read = admin.request("resources/read", json!({"uri": "relay://a/mem%3A%2F%2Fx"})).await;
    assert_eq!(read["result"]["contents"][0]["text"], "a: mem://x", "{read}");
    let read = user.request("resources/read", json!({"uri": "mem://other"})).await;
    assert_eq!(read["result"]["contents"][0]["text"], "a: mem://other", "other URIs of the template: {read}");
}

/// A list hook may not grow a list past twice its size and 1 MiB: views are kept per
/// principal, and a hook giving each of thousands of tools a few KB of description grew the
/// relay by 38 MB per principal. An answer over it fails as a bad answer (fail-closed: what it
/// was asked about is hidden).
#[tokio::test]
async fn a_list_hook_may_not_grow_a_list_past_twice_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = interceptor_entry(dir.path(), "closed", "test_interceptor", "    config: {describe_bytes: 60000}\n");
    let relay_yaml = format!("plugin_cache_dir: cache\nplugins:\n{plugin}");
    let extra: Vec<String> = (0..30).map(|n| format!("x{n}")).collect();
    let backends = format!("backends:\n{}", stdio_fixture_entry("a", &["--tools", &extra.join(",")]));
    let relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.wait_ready("a").await;
    let mut client = relay.line_client().await;
    let reply = client.request("tools/list", json!({})).await;
    let size = reply.to_string().len();
    assert!(size < 1 << 20, "a tools/list of {size} bytes: the hook grew 44 tools to 60 KB each");
    relay.wait_for_log("grew tools/list").await;
}
