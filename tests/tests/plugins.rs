//! The Wasm plugin runtime end to end: token-auth on every transport, the rate limiter, the
//! echo adapter, the sandbox against misbehaving plugins, hot reload (under load, corrupt
//! files, rollback, SIGHUP) and the compile cache.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use relay_tests::{LineClient, Relay, copy_plugin, eventually, plugin_wasm, rebuilt, replace_file, text_of};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ADMIN: &str = "admin-secret-7f3a";
const USER: &str = "user-token-91bc";
/// A token whose principal id is 600 characters long.
const LONG: &str = "long-token-5e21";

/// relay.yaml with token-auth (admin via a granted environment variable, user literal) and
/// whatever other plugin entries `extra` adds.
fn relay_yaml(dir: &Path, extra: &str) -> String {
    let auth = copy_plugin(dir, "token_auth");
    format!(
        "plugin_cache_dir: cache\nupstream: {{backoff_initial_ms: 50, backoff_max_ms: 500}}\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    grants: {{env: [E2E_ADMIN_TOKEN]}}\n    config:\n      tokens:\n        - {{token_env: E2E_ADMIN_TOKEN, principal: ops, roles: [admin]}}\n        - {{token: {USER}, principal: user}}\n        - {{token: {LONG}, principal: {}}}\n{extra}",
        auth.display(),
        long_principal()
    )
}

async fn start(dir: &Path, extra: &str) -> Relay {
    let yaml = relay_yaml(dir, extra);
    let mut relay = Relay::start_files(dir, &yaml, "backends: []\n", &[("E2E_ADMIN_TOKEN", ADMIN)]).await;
    relay.token = Some(ADMIN.to_owned());
    relay
}

fn mcp_post(relay: &Relay, body: &Value, token: Option<&str>) -> reqwest::RequestBuilder {
    let mut request = reqwest::Client::new()
        .post(relay.http("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
}

#[tokio::test]
async fn auth_is_enforced_on_every_transport_and_never_logs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), "").await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}});

    // Streamable HTTP: 401 without or with a wrong token; the session keeps needing its token.
    let missing = mcp_post(&relay, &init, None).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(mcp_post(&relay, &init, Some("nope")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let ok = mcp_post(&relay, &init, Some(USER)).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let session = ok.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let hijack = mcp_post(&relay, &list, None).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(hijack.status(), StatusCode::UNAUTHORIZED);
    let listed = mcp_post(&relay, &list, Some(USER)).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    // WebSocket: the handshake is refused without a token.
    let refused = tokio_tungstenite::connect_async(relay.ws("/ws")).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let mut request = relay.ws("/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {USER}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(init.to_string().into()).await.unwrap();
    let reply = socket.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(reply.contains("serverInfo"), "{reply}");

    // Newline: the first message must carry the token; without it, an error and the end.
    let mut anonymous = LineClient::connect(relay.port).await;
    anonymous.send_raw(&init.to_string()).await;
    let denied = anonymous.recv().await;
    assert_eq!(denied["error"]["code"], -32011, "{denied}");
    assert_eq!(denied["id"], 1);
    let mut user = relay.line_client_as(Some(USER)).await;

    // Roles: only admin may change the relay.
    let forbidden = user.call_tool("relay_add_server", json!({"name": "x", "url": "ws://127.0.0.1:9"})).await;
    assert_eq!(forbidden["error"]["code"], -32013, "{forbidden}");
    assert!(forbidden["error"]["message"].as_str().unwrap().contains("admin role"));
    let mut admin = relay.line_client().await;
    let added = admin.call_tool("relay_add_server", json!({"name": "x", "url": "ws://127.0.0.1:9"})).await;
    assert_eq!(added["result"]["structuredContent"]["added"], "x", "{added}");

    let log = relay.log();
    assert!(log.contains("outcome=\"denied\""), "attempts are logged: {log}");
    assert!(log.contains("principal=ops"), "{log}");
    assert!(!log.contains(ADMIN) && !log.contains(USER), "a token leaked into the log");
}

/// A relay.yaml entry for a copy of the rate-limit plugin with `config`.
fn rate_limit_entry(dir: &Path, config: &str) -> String {
    let limiter = copy_plugin(dir, "rate_limit");
    format!(
        "  - name: rate-limit\n    world: policy\n    path: {}\n    grants: {{clock: true}}\n    config: {config}\n",
        limiter.display()
    )
}

#[tokio::test]
async fn rate_limit_denies_per_principal_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), &rate_limit_entry(dir.path(), "{per_minute: 3}")).await;
    let mut user = relay.line_client_as(Some(USER)).await;
    for _ in 0..3 {
        assert!(user.call_tool("relay_list_servers", json!({})).await.get("result").is_some());
    }
    let denied = user.call_tool("relay_list_servers", json!({})).await;
    assert_eq!(denied["error"]["code"], -32019, "{denied}");
    assert!(denied["error"]["message"].as_str().unwrap().contains("rate limit"), "{denied}");
    assert!(denied["error"]["data"]["retry_after_ms"].as_u64().unwrap() > 0, "{denied}");
    // Another principal has its own bucket; ping is not counted.
    let mut admin = relay.line_client().await;
    assert!(admin.call_tool("relay_list_servers", json!({})).await.get("result").is_some());
    assert_eq!(user.request("ping", json!({})).await["result"], json!({}));
    // A principal id too long for a store key is limited all the same (its bucket is hashed).
    let mut long = relay.line_client_as(Some(LONG)).await;
    for _ in 0..3 {
        assert!(long.call_tool("relay_list_servers", json!({})).await.get("result").is_some());
    }
    let denied = long.call_tool("relay_list_servers", json!({})).await;
    assert_eq!(denied["error"]["code"], -32019, "a 600-character principal escaped the limit: {denied}");
    assert!(denied["error"]["message"].as_str().unwrap().len() < 300, "the denial quotes the whole id");
}

/// A client refused by the rate limit that retries at full speed is refused by the host until
/// its `retry_after_ms`, without a call into the plugin each time (each one a store round trip
/// on Redis: a flood of refused retries took every call slot of the plugin from every other
/// principal). Another tool, method or principal is still asked.
#[tokio::test]
async fn a_rate_limited_refusal_stands_until_its_retry_after_without_plugin_calls() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), &rate_limit_entry(dir.path(), "{per_minute: 3}")).await;
    let mut user = relay.line_client_as(Some(USER)).await;
    for _ in 0..3 {
        assert!(user.call_tool("relay_list_servers", json!({})).await.get("result").is_some());
    }
    let calls_before = relay.plugin_status("rate-limit").await["calls"].as_u64().unwrap();
    let mut waits = Vec::new();
    for _ in 0..20 {
        let refused = user.call_tool("relay_list_servers", json!({})).await;
        assert_eq!(refused["error"]["code"], -32019, "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("rate limit exceeded"), "{refused}");
        waits.push(refused["error"]["data"]["retry_after_ms"].as_u64().unwrap());
    }
    assert!(waits.windows(2).all(|w| w[1] <= w[0]) && waits[19] > 0, "the wait counts down: {waits:?}");
    let status = relay.plugin_status("rate-limit").await;
    let (calls, held) = (status["calls"].as_u64().unwrap(), status["held"].as_u64().unwrap());
    // The status calls themselves (relay_get_status) are checked too.
    assert!(
        calls - calls_before <= 3,
        "the plugin was asked {} times for 20 refused retries: {status}",
        calls - calls_before
    );
    assert!(held >= 19, "{status}");
    let metrics = reqwest::Client::new().get(relay.http("/metrics")).bearer_auth(ADMIN).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let held = relay_tests::metric_value(&metrics, r#"relay_plugin_held_total{plugin="rate-limit"}"#);
    assert!(held.is_some_and(|n| n >= 19.0), "{metrics}");
    let other = relay.line_client().await.call_tool("relay_list_servers", json!({})).await;
    assert!(other.get("result").is_some(), "another principal is asked: {other}");
}

/// Settings the plugin cannot read lift no limit: every request it checks fails (its call traps,
/// and `on_error: fail-closed` refuses the request), where a typo in the stricter
/// `on_kv_unavailable: closed` used to let every request through.
#[tokio::test]
async fn rate_limit_settings_that_do_not_parse_refuse_rather_than_lift_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), &rate_limit_entry(dir.path(), "{per_minute: 3, on_kv_unavailable: Closed}")).await;
    let mut user = relay.line_client_as(Some(USER)).await;
    for _ in 0..4 {
        let refused = user.call_tool("relay_list_servers", json!({})).await;
        assert_eq!(refused["error"]["code"], -32603, "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("rate-limit"), "{refused}");
    }
    relay.wait_for_log("rate-limit configuration: unknown variant").await;
    assert_eq!(user.request("ping", json!({})).await["result"], json!({}), "ping is not limited");
    let metrics = reqwest::Client::new().get(relay.http("/metrics")).bearer_auth(ADMIN).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let traps = relay_tests::metric_value(&metrics, r#"relay_plugin_calls_total{plugin="rate-limit",outcome="trap"}"#);
    assert!(traps.is_some_and(|n| n >= 4.0), "{metrics}");
}

/// A policy bound to a tool by its name keeps holding when a second backend starts offering
/// the same name (which prefixes both copies): a backend cannot lift another's limit by
/// naming a tool alike.
#[tokio::test]
async fn a_binding_by_tool_name_holds_after_another_backend_offers_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let limiter = rate_limit_entry(dir.path(), "{per_minute: 1}\n    bind: {tools: [echo]}");
    let yaml = relay_yaml(dir.path(), &limiter);
    let alpha = relay_tests::stdio_fixture_entry("alpha", &[]);
    let mut relay =
        Relay::start_files(dir.path(), &yaml, &format!("backends:\n{alpha}"), &[("E2E_ADMIN_TOKEN", ADMIN)]).await;
    relay.token = Some(ADMIN.to_owned());
    relay.wait_ready("alpha").await;
    let mut user = relay.line_client_as(Some(USER)).await;
    assert_eq!(text_of(&user.call_tool("echo", json!({"message": "m"})).await), "alpha: m");
    assert_eq!(user.call_tool("echo", json!({"message": "m"})).await["error"]["code"], -32019);
    let beta = relay_tests::stdio_fixture_entry("beta", &[]);
    std::fs::write(relay.backends_path(), format!("backends:\n{alpha}{beta}")).unwrap();
    eventually("echo offered twice, prefixed", || async {
        let tools = relay.line_client_as(Some(USER)).await.tool_names().await;
        tools.iter().any(|t| t == "alpha__echo").then_some(())
    })
    .await;
    let limited = user.call_tool("alpha__echo", json!({"message": "m"})).await;
    assert_eq!(limited["error"]["code"], -32019, "the limit lapsed with the prefix: {limited}");
}

#[tokio::test]
async fn a_busy_principal_is_answered_by_holds_within_the_same_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = "{per_minute: 60000, burst: 400, methods: [tools/call]}";
    let relay = start(dir.path(), &rate_limit_entry(dir.path(), config)).await;
    let mut user = relay.line_client_as(Some(USER)).await;
    let started = Instant::now();
    let mut allowed = 0u64;
    let denied = loop {
        let reply = user.call_tool("relay_list_servers", json!({})).await;
        if reply.get("result").is_none() {
            break reply;
        }
        allowed += 1;
        assert!(allowed < 20_000, "the limit never refused");
    };
    assert_eq!(denied["error"]["code"], -32019, "{denied}");
    // Every request a hold answered was paid for: the burst, plus what refilled meanwhile.
    let refilled = (started.elapsed().as_secs_f64() * 1000.0).ceil() as u64 + 1;
    assert!((400..=400 + refilled).contains(&allowed), "{allowed} allowed from a burst of 400 (+{refilled})");
    let status = relay.plugin_status("rate-limit").await;
    let (calls, held) = (status["calls"].as_u64().unwrap(), status["held"].as_u64().unwrap());
    assert!(held >= allowed * 3 / 4, "holds answered {held} of {allowed} requests ({calls} calls): {status}");
}

/// A principal id of 600 characters.
fn long_principal() -> String {
    "p".repeat(600)
}

fn adapter_entry(dir: &Path) -> String {
    let echo = copy_plugin(dir, "echo_adapter");
    format!("  - name: echo\n    world: adapter\n    path: {}\n    config: {{prefix: 'echo: '}}\n", echo.display())
}

#[tokio::test]
async fn adapter_tools_join_the_catalog_and_kv_state_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), &adapter_entry(dir.path())).await;
    let mut client = relay.line_client().await;
    let names = client.tool_names().await;
    assert!(names.contains(&"echo".to_string()) && names.contains(&"count".to_string()), "{names:?}");
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "hi"})).await), "echo: hi");
    assert_eq!(text_of(&client.call_tool("count", json!({})).await), "1");
    let bad = client.call_tool("echo", json!({})).await;
    assert_eq!(bad["result"]["isError"], true, "{bad}");

    let before = relay.plugin_status("echo").await["hash"].clone();
    replace_file(
        &dir.path().join("echo_adapter.wasm"),
        &rebuilt(&std::fs::read(plugin_wasm("echo_adapter")).unwrap(), "v2"),
    );
    eventually("the new echo build", || async { (relay.plugin_status("echo").await["hash"] != before).then_some(()) })
        .await;
    assert_eq!(text_of(&client.call_tool("count", json!({})).await), "2", "kv state lost across the reload");
}

#[tokio::test]
async fn misbehaving_plugin_fails_only_the_request_that_triggered_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = copy_plugin(dir.path(), "misbehaving_policy");
    let extra = format!(
        "  - name: misbehaving\n    world: policy\n    path: {}\n    limits: {{deadline_ms: 300, memory_mb: 16}}\n{}",
        bad.display(),
        adapter_entry(dir.path())
    );
    let relay = start(dir.path(), &extra).await;
    let mut client = relay.line_client().await;

    // A spinning call and a healthy call at the same time: the healthy one does not wait.
    client
        .send_raw(&json!({"jsonrpc":"2.0","id":"spin","method":"tools/call","params":{"name":"spin"}}).to_string())
        .await;
    let started = Instant::now();
    let healthy = relay.line_client().await.call_tool("echo", json!({"message": "fine"})).await;
    assert_eq!(text_of(&healthy), "echo: fine");
    let spin = client.recv_response().await;
    assert_eq!(spin["error"]["code"], -32603, "{spin}");
    assert!(spin["error"]["message"].as_str().unwrap().contains("exceeded its 300 ms deadline"), "{spin}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let bomb = client.call_tool("bomb", json!({})).await;
    assert!(bomb["error"]["message"].as_str().unwrap().contains("ran out of memory (cap 16 MiB)"), "{bomb}");
    let panic = client.call_tool("panic", json!({})).await;
    assert!(panic["error"]["message"].as_str().unwrap().contains("trapped"), "{panic}");

    // The plugin keeps serving, and the failures are counted and explained.
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "after"})).await), "echo: after");
    let status = relay.plugin_status("misbehaving").await;
    assert_eq!(status["traps"], 3, "{status}");
    assert!(status["last_error"].as_str().unwrap().contains("trapped"), "{status}");
}

/// Plugins for the reload tests: auth + rate-limit (built-in default, 100/min) + echo.
async fn start_for_reload(dir: &Path) -> Relay {
    let limiter = copy_plugin(dir, "rate_limit");
    let extra = format!(
        "  - name: rate-limit\n    world: policy\n    path: {}\n    grants: {{clock: true}}\n{}",
        limiter.display(),
        adapter_entry(dir)
    );
    start(dir, &extra).await
}

#[tokio::test]
async fn reload_under_load_switches_the_limit_without_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_for_reload(dir.path()).await;
    let original = relay.plugin_status("rate-limit").await["hash"].as_str().unwrap().to_owned();
    let landed = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));

    // Four clients of one principal call through auth + rate-limit while the file is replaced
    // (the harness checks status as the admin principal, which has its own bucket).
    let mut clients = Vec::new();
    for _ in 0..4 {
        let token = USER;
        let port = relay.port;
        let landed = landed.clone();
        clients.push(tokio::spawn(async move {
            let mut client = relay_tests::LineClient::connect(port).await;
            let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"_meta":{"authorization":format!("Bearer {token}")}}});
            client.send_raw(&init.to_string()).await;
            assert!(client.recv().await.get("result").is_some());
            let (mut ok, mut denied_before, mut denied_after, mut first_denial) = (0, 0, 0, None);
            let deadline = Instant::now() + Duration::from_millis(3000);
            let mut id = 1;
            while Instant::now() < deadline {
                let reply = client.call_tool("echo", json!({"message": id.to_string()})).await;
                id += 1;
                match reply.get("error") {
                    None => {
                        assert_eq!(text_of(&reply), format!("echo: {}", id - 1));
                        ok += 1;
                    }
                    Some(error) => {
                        assert_eq!(error["code"], -32019, "a request failed for another reason: {reply}");
                        match *landed.lock().unwrap() {
                            Some(_) => denied_after += 1,
                            None => denied_before += 1,
                        }
                        first_denial.get_or_insert_with(Instant::now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(80)).await;
            }
            (ok, denied_before, denied_after, first_denial)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let strict = std::fs::read(plugin_wasm("rate_limit_strict")).unwrap();
    replace_file(&dir.path().join("rate_limit.wasm"), &strict);
    *landed.lock().unwrap() = Some(Instant::now());

    let mut denied_total = 0;
    for client in clients {
        let (ok, denied_before, denied_after, first_denial) = client.await.unwrap();
        assert!(ok > 5, "each client got through before the swap ({ok})");
        assert_eq!(denied_before, 0, "the old 100/min limit denied requests");
        denied_total += denied_after;
        if let (Some(first), Some(landed)) = (first_denial, *landed.lock().unwrap()) {
            println!("first denial {:?} after the new file landed", first.saturating_duration_since(landed));
        }
    }
    assert!(denied_total > 0, "the new 5/min limit never took effect");
    let status = relay.plugin_status("rate-limit").await;
    assert_eq!(status["reloads"], 1, "{status}");
    assert_eq!(status["previous_hash"], original.as_str());
    assert_ne!(status["hash"], original.as_str());
}

#[tokio::test]
async fn corrupt_file_keeps_the_running_version_and_reports_why() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_for_reload(dir.path()).await;
    let running = relay.plugin_status("rate-limit").await["hash"].clone();
    replace_file(&dir.path().join("rate_limit.wasm"), b"\0asm this is not a component");
    relay.wait_for_log("plugin reload failed").await;
    let status = relay.plugin_status("rate-limit").await;
    assert_eq!(status["hash"], running, "{status}");
    assert_eq!(status["reload_failures"], 1, "{status}");
    assert!(status["last_error"].as_str().unwrap().contains("not a valid component"), "{status}");
    let mut client = relay.line_client_as(Some(USER)).await;
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "still"})).await), "echo: still");
}

/// A plugin file that went missing, and came back as the running version, clears its reload
/// error and its alarm (both stayed set until another version loaded).
#[tokio::test]
async fn a_plugin_file_that_comes_back_clears_its_reload_error() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_for_reload(dir.path()).await;
    let mut admin = relay.line_client().await;
    let path = dir.path().join("rate_limit.wasm");
    let aside = dir.path().join("rate_limit.wasm.aside");
    std::fs::rename(&path, &aside).unwrap();
    admin.call_tool("relay_reload_plugins", json!({})).await;
    let failing = || async {
        let metrics = reqwest::Client::new().get(relay.http("/metrics")).bearer_auth(ADMIN).send().await.unwrap();
        relay_tests::metric_value(&metrics.text().await.unwrap(), r#"relay_plugin_reload_failing{plugin="rate-limit"}"#)
    };
    assert_eq!(failing().await, Some(1.0));
    assert!(relay.plugin_status("rate-limit").await["last_error"].as_str().unwrap().contains("cannot read"));
    // Others than admins are not told where the file lives, in the error either.
    let status = relay.line_client_as(Some(USER)).await.call_tool("relay_get_status", json!({})).await;
    let plugins = status["result"]["structuredContent"]["plugins"].as_array().unwrap().clone();
    let told = plugins.iter().find(|p| p["name"] == "rate-limit").unwrap()["last_error"].as_str().unwrap().to_owned();
    let dir_shown = dir.path().display().to_string();
    assert!(told.contains("cannot read rate_limit.wasm") && !told.contains(&dir_shown), "{told}");
    std::fs::rename(&aside, &path).unwrap();
    let reloaded = admin.call_tool("relay_reload_plugins", json!({})).await;
    assert!(reloaded.to_string().contains("unchanged"), "{reloaded}");
    assert_eq!(failing().await, Some(0.0), "the alarm stays on for a file that loads again");
    assert_eq!(relay.plugin_status("rate-limit").await["last_error"], Value::Null);
}

/// A reload of any plugin, asked for even with every file unchanged, forgets the credentials
/// the auth plugin admitted (as the WIT says): an operator who revoked one where the plugin
/// reads it and reloads is obeyed at once, not after five minutes.
#[tokio::test]
async fn a_reload_forgets_the_credentials_the_auth_plugin_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_for_reload(dir.path()).await;
    let mut admin = relay.line_client().await;
    // Read on the admin's own connection, which authenticated once, when it opened.
    let mut checks = async || {
        let status = admin.call_tool("relay_get_status", json!({})).await;
        let plugins = status["result"]["structuredContent"]["plugins"].as_array().unwrap().clone();
        plugins.iter().find(|p| p["name"] == "auth").unwrap()["calls"].as_u64().unwrap()
    };
    relay.line_client_as(Some(USER)).await;
    let before = checks().await;
    relay.line_client_as(Some(USER)).await;
    assert_eq!(checks().await, before, "remembered between reloads");
    let reloaded = relay.line_client().await.call_tool("relay_reload_plugins", json!({})).await;
    assert!(reloaded.to_string().contains("unchanged"), "{reloaded}");
    let after_reload = checks().await;
    relay.line_client_as(Some(USER)).await;
    assert_eq!(checks().await, after_reload + 1, "the user's credential was not checked again after the reload");
}

/// Where a plugin's file lives is the operator's business: admins see it in the status, other
/// principals do not (as with a backend's target).
#[tokio::test]
async fn only_admins_see_where_plugin_files_live() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_for_reload(dir.path()).await;
    assert!(relay.plugin_status("rate-limit").await["path"].as_str().unwrap().ends_with("rate_limit.wasm"));
    let mut user = relay.line_client_as(Some(USER)).await;
    let status = user.call_tool("relay_get_status", json!({})).await;
    let plugins = status["result"]["structuredContent"]["plugins"].as_array().unwrap().clone();
    assert_eq!(plugins.len(), 3, "{status}");
    assert!(plugins.iter().all(|p| p["path"].is_null()), "{plugins:?}");
}

/// A backend may not take an adapter plugin's name: they share tool prefixes, bindings and
/// grants (a backend named `echo` renamed the adapter's tools and got its interceptors).
/// Refused at run time, and at start.
#[tokio::test]
async fn a_backend_may_not_take_an_adapter_plugins_name() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_for_reload(dir.path()).await;
    let mut admin = relay.line_client().await;
    let added = admin.call_tool("relay_add_server", json!({"name": "echo", "url": "ws://127.0.0.1:9/ws"})).await;
    assert_eq!(added["result"]["isError"], true, "{added}");
    assert!(text_of(&added).contains("an adapter plugin of relay.yaml has that name"), "{added}");
    assert_eq!(text_of(&admin.call_tool("echo", json!({"message": "m"})).await), "echo: m", "the adapter's tool");

    std::fs::write(dir.path().join("backends.yaml"), "backends:\n  - name: echo\n    url: ws://127.0.0.1:9/ws\n")
        .unwrap();
    let checked = std::process::Command::new(relay_tests::relay_bin())
        .args(["check-config", "--config"])
        .arg(dir.path().join("relay.yaml"))
        .env("E2E_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(!checked.status.success() && said.contains("an adapter plugin of relay.yaml has that name"), "{said}");
}

#[tokio::test]
async fn rollback_reload_tool_and_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_for_reload(dir.path()).await;
    let original = relay.plugin_status("rate-limit").await["hash"].as_str().unwrap().to_owned();
    let mut admin = relay.line_client().await;

    let nothing = admin.call_tool("relay_rollback_plugin", json!({"name": "rate-limit"})).await;
    assert_eq!(nothing["result"]["isError"], true, "{nothing}");

    // A new build lands while the watch is busy elsewhere; SIGHUP and the admin tool reload too.
    let strict = std::fs::read(plugin_wasm("rate_limit_strict")).unwrap();
    replace_file(&dir.path().join("rate_limit.wasm"), &strict);
    eventually("the strict build", || async {
        (relay.plugin_status("rate-limit").await["hash"] != original.as_str()).then_some(())
    })
    .await;
    relay.signal("-HUP");
    relay.wait_for_log("SIGHUP: reloading plugins").await;
    let reloaded = admin.call_tool("relay_reload_plugins", json!({})).await;
    assert_eq!(reloaded["result"]["structuredContent"]["plugins"].as_array().unwrap().len(), 3, "{reloaded}");

    let mut user = relay.line_client_as(Some(USER)).await;
    let forbidden = user.call_tool("relay_rollback_plugin", json!({"name": "rate-limit"})).await;
    assert_eq!(forbidden["error"]["code"], -32013);
    let rolled = admin.call_tool("relay_rollback_plugin", json!({"name": "rate-limit"})).await;
    assert!(text_of(&rolled).contains("rolled back"), "{rolled}");
    assert_eq!(relay.plugin_status("rate-limit").await["hash"], original.as_str());
}

#[tokio::test]
async fn compiled_plugins_are_cached_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_for_reload(dir.path()).await;
    first.wait_for_log("plugin loaded").await;
    first.terminate().await;
    let second =
        Relay::start_in(dir.path(), "second.log", &["--log-format", "json"], &[("E2E_ADMIN_TOKEN", ADMIN)]).await;
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    let loaded: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["message"] == "plugin loaded")
        .collect();
    assert_eq!(loaded.len(), 3, "{log}");
    assert!(loaded.iter().all(|r| r["cached"] == true), "{log}");
    drop(second);
}

/// SIGHUP while the relay starts (its plugins still compiling: `systemctl reload` is allowed as
/// soon as the unit is active) does not end it; it reloads the plugins once they are loaded. A
/// relay ended by SIGHUP is not restarted by systemd (a clean exit to it).
#[tokio::test]
async fn a_sighup_while_the_relay_starts_does_not_end_it() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (rate_limit, filter) = (copy_plugin(dir.path(), "rate_limit"), copy_plugin(dir.path(), "tool_filter"));
    // A cold compile cache: the plugins take most of a second to load.
    let yaml = format!(
        "plugin_cache_dir: cache\nplugins:\n  - name: rl\n    world: policy\n    path: {}\n    grants: {{clock: true}}\n  - name: filter\n    world: interceptor\n    path: {}\n    config: {{allow: ['*']}}\n",
        rate_limit.display(),
        filter.display()
    );
    std::fs::write(dir.path().join("relay.yaml"), yaml).unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    let log = std::fs::File::create(dir.path().join("relay.log")).unwrap();
    let mut child = tokio::process::Command::new(relay_tests::relay_bin())
        .args(["serve", "--config"])
        .arg(dir.path().join("relay.yaml"))
        .env("RELAY_PORT", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Once the first plugin is loaded (the relay runs its start-up), while the second compiles.
    let log = || std::fs::read_to_string(dir.path().join("relay.log")).unwrap();
    eventually("the first plugin loaded", || async { log().contains("plugin loaded plugin=rl").then_some(()) }).await;
    let hup = std::process::Command::new("kill").args(["-HUP", &child.id().unwrap().to_string()]).status().unwrap();
    assert!(hup.success());
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("relay listening on ") {
                return true;
            }
        }
        false
    })
    .await
    .expect("started within a minute");
    assert!(listening, "the relay ended ({:?}): {}", child.try_wait(), log());
    eventually("the plugins reloaded for the SIGHUP", || async {
        log().contains("SIGHUP: reloading plugins").then_some(())
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
}

/// A plugin built against a `relay:plugin` version this relay does not speak is named as such
/// by check-config (it read as a type error: "instance export `log` has the wrong type").
#[tokio::test]
async fn a_plugin_built_against_another_contract_version_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    // echo-adapter with every `relay:plugin/...@0.2.0` name made `@0.3.0` (the same length).
    let mut wasm = std::fs::read(plugin_wasm("echo_adapter")).unwrap();
    let (from, to) = (b"@0.2.0".as_slice(), b"@0.3.0".as_slice());
    let mut at = 0;
    while let Some(i) = wasm[at..].windows(from.len()).position(|w| w == from) {
        wasm[at + i..at + i + to.len()].copy_from_slice(to);
        at += i + to.len();
    }
    let path = dir.path().join("future.wasm");
    std::fs::write(&path, &wasm).unwrap();
    let yaml = format!("plugins:\n  - name: future\n    world: adapter\n    path: {}\n", path.display());
    std::fs::write(dir.path().join("relay.yaml"), yaml).unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    let (passed, said) = relay_tests::check_config(dir.path()).await;
    assert!(!passed && said.contains("built against relay:plugin@0.3.0"), "{said}");
}
