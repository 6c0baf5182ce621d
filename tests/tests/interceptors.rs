//! Interceptors (the `interceptor` world): bound to backends and tools by globs, they see a
//! call's arguments before (and may replace them or deny the call) and its result after (and may
//! replace it); the shipped `redact` masks secrets and e-mail addresses and counts them (and
//! results that hold nothing it could mask pass it unread); calls
//! they are not bound to pass untouched; a failing interceptor fails the call or, with
//! `on_error: fail-open`, is skipped, logged and counted.

use relay_tests::{Relay, copy_plugin, interceptor_entry, metric_value, stdio_fixture_entry, text_of};
use serde_json::json;

#[tokio::test]
async fn interceptors_deny_pin_tag_and_redact_only_what_they_are_bound_to() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = [
        interceptor_entry(
            dir.path(),
            "filter",
            "test_interceptor",
            "    bind: {backends: [a]}\n    config: {deny: [a__env], pin: {ms: 1}, tag: ' [seen]'}\n",
        ),
        interceptor_entry(dir.path(), "redact", "redact", "    bind: {backends: ['a*']}\n"),
        interceptor_entry(
            dir.path(),
            "trap-open",
            "test_interceptor",
            "    bind: {tools: [c__slow]}\n    on_error: fail-open\n    config: {trap: [c__slow]}\n",
        ),
        interceptor_entry(
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
    let a = stdio_fixture_entry("a", &["--prompts", "p", "--resources", "mem://ann@example.com"]);
    let backends = format!("backends:\n{a}{}", stdio_fixture_entry("c", &[]));
    let relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.wait_ready("a").await;
    relay.wait_ready("c").await;
    let mut client = relay.line_client().await;
    let secret = "mail ann@example.com key sk-proj-abcdefghijklmnopqrstuvwx";

    // Bound: tagged by `filter`, then masked by `redact`, which counts what it masked.
    let reply = client.call_tool("a__echo", json!({"message": secret})).await;
    assert_eq!(text_of(&reply), "a: mail [REDACTED:email] key [REDACTED:api_key] [seen]", "{reply}");
    assert_eq!(reply["result"]["_meta"]["relay/redacted"]["total"], 2, "{reply}");
    // `redact` passes every request and holds that (`verdict.hold`): its request hook is asked
    // once for the caller and tool, its result hook every time.
    let calls = relay.plugin_status("redact").await["calls"].as_u64().unwrap();
    for _ in 0..3 {
        let again = client.call_tool("a__echo", json!({"message": secret})).await;
        assert_eq!(again["result"]["_meta"]["relay/redacted"]["total"], 2, "{again}");
    }
    let status = relay.plugin_status("redact").await;
    assert_eq!((&status["calls"], &status["held"]), (&json!(calls + 3), &json!(3)), "{status}");
    // `redact` named the literals its rules need (`verdict.pass-results-without`: an `@`, the
    // keys' prefixes): a result without any is passed by the host unread; one with a JSON
    // escape (a control character is written `\u0007`) could spell one, and is read.
    let clean = client.call_tool("a__echo", json!({"message": "nothing to mask here"})).await;
    assert_eq!(text_of(&clean), "a: nothing to mask here [seen]", "{clean}");
    let escaped = client.call_tool("a__echo", json!({"message": "a bell \u{7}"})).await;
    assert_eq!(text_of(&escaped), "a: a bell \u{7} [seen]", "{escaped}");
    let status = relay.plugin_status("redact").await;
    assert_eq!((&status["calls"], &status["unread"]), (&json!(calls + 4), &json!(1)), "{status}");
    // Denied by name, with the interceptor's reason.
    let denied = client.call_tool("a__env", json!({})).await;
    assert_eq!(denied["error"]["code"], -32013, "{denied}");
    assert!(denied["error"]["message"].as_str().unwrap().contains("a__env is not for anonymous"), "{denied}");
    // A pinned parameter: the slow tool is asked for 1 ms, whatever the client said.
    let started = std::time::Instant::now();
    let pinned = client.call_tool("a__slow", json!({"ms": 5000})).await;
    assert_eq!(text_of(&pinned), "a: slow [seen]");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "the pinned ms applied");

    // Prompts and resources of a bound backend pass the same hooks (those bound by tool name
    // do not see them).
    let prompt = client.request("prompts/get", json!({"name": "p"})).await;
    assert_eq!(prompt["result"]["messages"][0]["content"]["text"], "a: p [seen]", "{prompt}");
    let read = client.request("resources/read", json!({"uri": "mem://ann@example.com"})).await;
    let text = read["result"]["contents"][0]["text"].as_str().unwrap_or_else(|| panic!("{read}"));
    assert!(text.starts_with("a: mem://[REDACTED:email]") && text.ends_with(" [seen]"), "{read}");
    assert!(read["result"]["_meta"]["relay/redacted"]["total"].as_u64() >= Some(1), "{read}");

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
    relay.wait_for_log("going on without it (on_error: fail-open)").await;
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let failed_open = metric_value(&metrics, r#"relay_plugin_failed_open_total{plugin="trap-open"}"#);
    assert_eq!(failed_open, Some(1.0), "{metrics}");
}

/// `bind.hooks`: an interceptor runs only the hooks its binding names. The same test
/// interceptor (deny `*__env`, hide `*__slow`, tag results) on two backends: on `a` with its
/// result hook only (nothing denied or hidden, results tagged), on `b` with its request and list
/// hooks only (denied and hidden, nothing tagged).
#[tokio::test]
async fn an_interceptor_runs_only_the_hooks_its_binding_names() {
    let dir = tempfile::tempdir().unwrap();
    let config = "    config: {deny: [a__env, b__env], hide: [a__slow, b__slow], tag: ' [tagged]'}\n";
    let plugins = [
        interceptor_entry(
            dir.path(),
            "results",
            "test_interceptor",
            &format!("    bind: {{backends: [a], hooks: [result]}}\n{config}"),
        ),
        interceptor_entry(
            dir.path(),
            "requests",
            "test_interceptor",
            &format!("    bind: {{backends: [b], hooks: [request, list]}}\n{config}"),
        ),
    ];
    let relay_yaml = format!("upstream: {{backoff_initial_ms: 50}}\nplugins:\n{}", plugins.concat());
    let backends = format!("backends:\n{}{}", stdio_fixture_entry("a", &[]), stdio_fixture_entry("b", &[]));
    let relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.wait_ready("a").await;
    relay.wait_ready("b").await;
    let mut client = relay.line_client().await;

    let tagged = client.call_tool("a__echo", json!({"message": "hi"})).await;
    assert_eq!(text_of(&tagged), "a: hi [tagged]", "{tagged}");
    let not_denied = client.call_tool("a__env", json!({})).await;
    assert!(not_denied.get("error").is_none(), "no request hook on a: {not_denied}");
    let untagged = client.call_tool("b__echo", json!({"message": "hi"})).await;
    assert_eq!(text_of(&untagged), "b: hi", "{untagged}");
    let denied = client.call_tool("b__env", json!({})).await;
    assert_eq!(denied["error"]["code"], -32013, "{denied}");

    let listed = client.request("tools/list", json!({})).await;
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"a__slow"), "no list hook on a: {names:?}");
    assert!(!names.contains(&"b__slow") && names.contains(&"b__echo"), "b's list hook hides: {names:?}");
}

/// The shipped `tool-filter`: an allow list, a deny rule that admins are exempt from, and a
/// pinned and a dropped parameter, per caller (roles from the auth plugin).
/// relay.yaml with token-auth (`ADMIN`: ops, admin; `USER`: `user`) and tool-filter named
/// `filter` with `entry` (its bind and config lines).
fn filtered(dir: &std::path::Path, user: &str, entry: &str) -> String {
    let auth = copy_plugin(dir, "token_auth");
    let filter = interceptor_entry(dir, "filter", "tool_filter", entry);
    format!(
        "upstream: {{backoff_initial_ms: 50, call_timeout_secs: 20}}\nplugin_cache_dir: cache\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config: {{tokens: [{{token: ADMIN, principal: ops, roles: [admin]}}, {{token: USER, principal: {user}}}]}}\n{filter}",
        auth.display()
    )
}

#[tokio::test]
async fn tool_filter_allows_denies_by_role_and_pins_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let relay_yaml = filtered(
        dir.path(),
        "ann",
        "    bind: {backends: [a]}\n    config:\n      allow: ['a__*']\n      deny: [{tools: [a__env], unless_roles: [admin]}]\n      pin: [{tools: [a__slow], params: {ms: 1}}]\n      drop: [{tools: [a__echo], params: [secret]}]\n",
    );
    let record = dir.path().join("a.record");
    let a = stdio_fixture_entry("a", &["--tools", "only_a", "--record", record.to_str().unwrap()]);
    let record_c = dir.path().join("c.record");
    let backends = format!("backends:\n{a}{}", stdio_fixture_entry("c", &["--record", record_c.to_str().unwrap()]));
    let mut relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.token = Some("ADMIN".into());
    relay.wait_ready("a").await;
    let mut user = relay.line_client_as(Some("USER")).await;
    let mut admin = relay.line_client_as(Some("ADMIN")).await;

    // Refused tools are hidden from the caller, and so refused by name like unknown ones.
    let denied = user.call_tool("a__env", json!({})).await;
    assert_eq!(denied["error"]["code"], -32602, "{denied}");
    assert!(!user.tool_names().await.contains(&"a__env".to_string()));
    assert!(admin.call_tool("a__env", json!({})).await.get("result").is_some(), "admins are exempt");
    // A call let through unchanged stands for the caller's next calls of the tool (`verdict.hold`),
    // one whose parameters are dropped or pinned is decided each time (its arguments are read),
    // and no result is shown to the plugin (it passes them all, and said so).
    let before = relay.plugin_status("filter").await;
    for _ in 0..2 {
        assert!(admin.call_tool("a__env", json!({})).await.get("result").is_some());
        assert_eq!(text_of(&admin.call_tool("a__echo", json!({"message": "m", "secret": "s"})).await), "a: m");
    }
    let after = relay.plugin_status("filter").await;
    let grew = |field: &str| after[field].as_u64().unwrap() - before[field].as_u64().unwrap();
    assert_eq!((grew("calls"), grew("held"), grew("unread")), (2, 2, 4), "{before} -> {after}");
    // `only_a` is unique (keeps its name), and the allow list `a__*` covers it still: its
    // qualified name is `a__only_a`, whether the catalog prefixes it now or not.
    let unique = user.call_tool("only_a", json!({})).await;
    assert!(unique.get("result").is_some(), "{unique}");
    let started = std::time::Instant::now();
    assert_eq!(text_of(&user.call_tool("a__slow", json!({"ms": 5000})).await), "a: slow");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "ms pinned to 1");
    let echoed = user.call_tool("a__echo", json!({"message": "hi", "secret": "s3cr3t-value"})).await;
    assert_eq!(text_of(&echoed), "a: hi", "{echoed}");
    let received = std::fs::read_to_string(&record).unwrap();
    assert!(!received.contains("s3cr3t-value"), "the dropped parameter never reached the backend");
    assert!(received.contains(r#""ms":1"#) && !received.contains("5000"), "the pinned value did: {received}");
    // Another backend is not bound: nothing applies.
    assert!(user.call_tool("c__env", json!({})).await.get("result").is_some());

    // Arguments nothing read reach their backend as the client wrote them (member order,
    // spacing, a number's text, a key sent twice): to a backend no interceptor is bound to, and
    // in a call the plugin holds (its `proceed` stands for the tool's calls, whatever their
    // arguments: it is not called, and reads none). Arguments an interceptor read (here: a
    // non-admin's call of a tool with a dropped parameter, decided each time) are written from
    // what it read, so a key sent twice reaches the backend once, as the plugin saw it, and
    // cannot be read another way there.
    for (as_admin, tool, args) in [
        (true, "c__env", r#"{ "z": 1.50,  "m": "kept", "a": [true] }"#),
        (true, "a__env", r#"{"x": "first", "x": "second"}"#),
        (false, "a__echo", r#"{"message": "first", "message": "second"}"#),
    ] {
        let client = if as_admin { &mut admin } else { &mut user };
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":"raw-{tool}","method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        );
        client.send_raw(&call).await;
        assert!(client.recv_response().await.get("result").is_some(), "{tool}");
    }
    let received_c = std::fs::read_to_string(&record_c).unwrap();
    assert!(received_c.contains(r#""arguments":{ "z": 1.50,  "m": "kept", "a": [true] }"#), "{received_c}");
    let received = std::fs::read_to_string(&record).unwrap();
    let held = received.lines().find(|l| l.contains("\"x\"")).expect("a__env received");
    assert!(held.contains(r#""arguments":{"x": "first", "x": "second"}"#), "{held}");
    let read = received.lines().find(|l| l.contains("second") && !l.contains("\"x\"")).expect("a__echo received");
    assert!(read.contains(r#""arguments":{"message":"second"}"#) && !read.contains("first"), "{read}");
}

/// Policies take `bind` and `on_error` too: a rate limit bound to one backend counts only its
/// calls, and a policy that fails with `on_error: fail-open` lets the request through (logged,
/// counted).
#[tokio::test]
async fn bound_policies_see_only_their_calls_and_may_fail_open() {
    let dir = tempfile::tempdir().unwrap();
    let limit = copy_plugin(dir.path(), "rate_limit");
    let flaky = copy_plugin(dir.path(), "misbehaving_policy");
    let relay_yaml = format!(
        "upstream: {{backoff_initial_ms: 50, call_timeout_secs: 20}}\nplugin_cache_dir: cache\nplugins:\n\
         \x20 - {{name: limit-a, world: policy, path: {}, grants: {{clock: true}}, bind: {{backends: [a]}}, config: {{per_minute: 1}}}}\n\
         \x20 - {{name: flaky, world: policy, path: {}, bind: {{tools: [panic]}}, on_error: fail-open}}\n",
        limit.display(),
        flaky.display()
    );
    let backends =
        format!("backends:\n{}{}", stdio_fixture_entry("a", &[]), stdio_fixture_entry("c", &["--tools", "panic"]));
    let relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.wait_ready("a").await;
    relay.wait_ready("c").await;
    let mut client = relay.line_client().await;

    assert_eq!(text_of(&client.call_tool("a__echo", json!({"message": "1"})).await), "a: 1");
    let limited = client.call_tool("a__echo", json!({"message": "2"})).await;
    assert_eq!(limited["error"]["code"], -32019, "the second call to a is over its budget: {limited}");
    for n in 0..3 {
        let other = client.call_tool("c__echo", json!({"message": n.to_string()})).await;
        assert_eq!(text_of(&other), format!("c: {n}"), "c's calls are not limit-a's business");
    }
    // `panic` makes the misbehaving policy trap: fail-open lets the call through.
    assert_eq!(text_of(&client.call_tool("panic", json!({})).await), "c: panic");
    relay.wait_for_log("going on without it (on_error: fail-open)").await;
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric_value(&metrics, r#"relay_plugin_failed_open_total{plugin="flaky"}"#), Some(1.0), "{metrics}");
}

/// tool-filter's rules follow a tool, not a name that moves: when a second backend offers the
/// same tool while the relay runs, the collision prefixes both, and the deny rule still holds.
#[tokio::test]
async fn tool_filter_rules_hold_when_a_collision_renames_the_tool() {
    let dir = tempfile::tempdir().unwrap();
    let relay_yaml =
        filtered(dir.path(), "alice", "    config:\n      deny: [{tools: [delete_repo], unless_roles: [admin]}]\n");
    let alpha = stdio_fixture_entry("alpha", &["--tools", "delete_repo"]);
    let mut relay = Relay::start_files(dir.path(), &relay_yaml, &format!("backends:\n{alpha}"), &[]).await;
    relay.token = Some("ADMIN".into());
    relay.wait_ready("alpha").await;
    let mut alice = relay.line_client_as(Some("USER")).await;
    assert_eq!(alice.call_tool("delete_repo", json!({})).await["error"]["code"], -32602);

    // A second backend offers the same tool: the catalog now says alpha__delete_repo and
    // beta__delete_repo, under the running filter.
    let beta = stdio_fixture_entry("beta", &["--tools", "delete_repo"]);
    std::fs::write(relay.backends_path(), format!("backends:\n{alpha}{beta}")).unwrap();
    relay.wait_ready("beta").await;
    let mut admin = relay.line_client_as(Some("ADMIN")).await;
    let deadline = std::time::Instant::now() + relay_tests::PATIENCE;
    while !admin.tool_names().await.contains(&"alpha__delete_repo".to_string()) {
        assert!(std::time::Instant::now() < deadline, "the collision never reached the catalog");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let names = alice.tool_names().await;
    assert!(!names.iter().any(|n| n.contains("delete_repo")), "alice sees {names:?}");
    for name in ["alpha__delete_repo", "beta__delete_repo", "delete_repo"] {
        let refused = alice.call_tool(name, json!({})).await;
        assert_eq!(refused["error"]["code"], -32602, "alice ran {name} over newline: {refused}");
    }
    let call = json!({"name": "alpha__delete_repo", "arguments": {}});
    let over_http = relay_tests::stateless_request(&relay.http("/mcp"), 1, "tools/call", call, json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}))
        .bearer_auth("USER")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        over_http.contains("-32602") && !over_http.contains("alpha: delete_repo"),
        "alice ran it over HTTP: {over_http}"
    );
    assert_eq!(
        text_of(&admin.call_tool("alpha__delete_repo", json!({})).await),
        "alpha: delete_repo",
        "admins are exempt"
    );
}

/// A call running while its interceptor is replaced finishes on the version it started with:
/// its result hook ran on the new one (here another plugin, whose first call then failed it).
#[tokio::test]
async fn a_call_running_while_its_interceptor_is_replaced_finishes_on_the_version_it_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let ti = interceptor_entry(
        dir.path(),
        "ti",
        "test_interceptor",
        "    bind: {backends: [b]}\n    config: {tag: ' [v1]'}\n",
    );
    let relay_yaml = format!("upstream: {{call_timeout_secs: 20}}\nplugin_cache_dir: cache\nplugins:\n{ti}");
    let backends = format!("backends:\n{}", stdio_fixture_entry("b", &[]));
    let relay = Relay::start_files(dir.path(), &relay_yaml, &backends, &[]).await;
    relay.wait_ready("b").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "m"})).await), "b: m [v1]");

    let started = std::time::Instant::now();
    let slow = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 6000}}});
    client.send_raw(&slow.to_string()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let redact = std::fs::read(relay_tests::plugin_wasm("redact")).unwrap();
    relay_tests::replace_file(&dir.path().join("test_interceptor.wasm"), &redact);
    relay.wait_for_log("plugin reloaded").await;
    assert!(started.elapsed().as_millis() < 5500, "the reload came after the call: this test proves nothing");
    let answer = client.recv_response().await;
    assert_eq!(text_of(&answer), "b: slow [v1]", "{answer}");
}
