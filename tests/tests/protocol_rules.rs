//! Regression tests for protocol defects and operator papercuts (issue 10, items 13–21): the
//! JSON-RPC and MCP rules the relay broke, each test named after what it guards.

use std::time::Duration;

use relay_tests::{
    Fixture, HttpSession, LineClient, Relay, copy_plugin, relay_bin, repo_root, sse_messages, stdio_fixture_entry,
    text_of,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const STATELESS: &str = relay_tests::STATELESS_VERSION;

/// A stateless (2026-07-28) request; `capabilities` go in the envelope.
fn stateless(relay: &Relay, method: &str, params: Value, capabilities: Value) -> reqwest::RequestBuilder {
    let envelope = json!({
        "io.modelcontextprotocol/protocolVersion": STATELESS,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    });
    relay_tests::stateless_request(&relay.http("/mcp"), 1, method, params, envelope)
}

async fn body_json(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| sse_messages(&text).pop().expect("a message"))
}

#[tokio::test]
async fn server_to_client_requests_reach_only_clients_that_declared_them() {
    let relay = Relay::start(&format!("backends:\n{}", stdio_fixture_entry("b", &[]))).await;
    relay.wait_ready("b").await;
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ask", "arguments": {"question": "q?"}}});
    let body = session.post(&call).send().await.unwrap().text().await.unwrap();
    let messages = sse_messages(&body);
    assert!(messages.iter().all(|m| m["method"] != "elicitation/create"), "{body}");
    let answer: Value = serde_json::from_str(&text_of(messages.last().unwrap())).unwrap();
    assert_eq!(answer["code"], -32601, "{answer}");
    // A 2026 client without the capability: MissingRequiredClientCapability.
    let response =
        stateless(&relay, "tools/call", json!({"name": "ask", "arguments": {}}), json!({})).send().await.unwrap();
    let answer: Value = serde_json::from_str(&text_of(&body_json(response).await)).unwrap();
    assert_eq!(answer["code"], -32021, "{answer}");
}

#[tokio::test]
async fn one_notification_goes_out_on_one_stream() {
    let relay = Relay::start("backends: []\n").await;
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let get = || {
        reqwest::Client::new()
            .get(relay.http("/mcp"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session.id)
            .send()
    };
    let first = get().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-accel-buffering"], "no");
    assert_eq!(get().await.unwrap().status(), StatusCode::CONFLICT, "a second GET stream would duplicate messages");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get().await.unwrap().status(), StatusCode::OK, "the stream is free again once closed");
}

#[tokio::test]
async fn stateless_clients_get_the_2026_error_codes() {
    let fixture = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    // An unknown resource is a bad param in 2026 (no -32002).
    let response =
        stateless(&relay, "resources/read", json!({"uri": "mem://nowhere"}), json!({})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"]["code"], -32602);
    // A header naming another version than the body is a mismatch, whatever the body names.
    let mismatch = stateless(&relay, "tools/list", json!({}), json!({}))
        .header("mcp-protocol-version", "2099-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(mismatch).await["error"]["code"], -32020);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2099-01-01", "io.modelcontextprotocol/clientCapabilities": {}}}});
    let unknown = reqwest::Client::new()
        .post(relay.http("/mcp"))
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2099-01-01")
        .header("mcp-method", "tools/list")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let unknown = body_json(unknown).await;
    assert_eq!(unknown["error"]["code"], -32022, "{unknown}");
    let supported = unknown["error"]["data"]["supported"].as_array().unwrap();
    assert!(supported.contains(&json!(STATELESS)) && supported.contains(&json!("2025-11-25")), "{unknown}");
    // Broken base64 in Mcp-Name.
    let broken = stateless(&relay, "tools/call", json!({"name": "echo", "arguments": {}}), json!({}))
        .header("mcp-name", "=?base64?%%%?=")
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(broken).await["error"]["code"], -32020);
    // A 2026 request carrying Mcp-Session-Id is served; the header is ignored.
    let served = stateless(&relay, "tools/list", json!({}), json!({}))
        .header("mcp-session-id", "not-a-session")
        .send()
        .await
        .unwrap();
    assert!(body_json(served).await["result"]["tools"].is_array());
}

#[tokio::test]
async fn relay_error_codes_stay_out_of_the_range_2026_reserves() {
    let relay = Relay::start_with("access: {admin_without_auth: false}\n", "backends: []\n", &[]).await;
    let mut client = relay.line_client().await;
    let refused = client.call_tool("relay_add_server", json!({"name": "x", "url": "ws://127.0.0.1:9"})).await;
    let code = refused["error"]["code"].as_i64().unwrap();
    assert!((-32019..=-32000).contains(&code), "{refused}");
}

#[tokio::test]
async fn invalid_utf8_on_the_newline_transport_is_a_parse_error_and_the_connection_stays() {
    let relay = Relay::start("backends: []\n").await;
    let mut raw = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    raw.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}\n").await.unwrap();
    raw.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"x\":\"\xff\xfe\"}\n").await.unwrap();
    raw.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n").await.unwrap();
    let (read, _write) = raw.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(relay_tests::PATIENCE, lines.next_line()).await.unwrap().unwrap();
        seen.push(serde_json::from_str::<Value>(&line.expect("connection kept open")).unwrap());
    }
    assert!(seen.iter().any(|m| m["error"]["code"] == -32700), "{seen:?}");
    assert!(seen.iter().any(|m| m["id"] == 3 && m["result"] == json!({})), "{seen:?}");
}

#[tokio::test]
async fn ids_and_numbers_are_echoed_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let entry = stdio_fixture_entry("b", &["--record", record.to_str().unwrap()]);
    let relay = Relay::start_files(dir.path(), relay_tests::TEST_RELAY_YAML, &format!("backends:\n{entry}"), &[]).await;
    relay.wait_ready("b").await;
    let mut raw = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let call = r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/call","params":{"name":"echo","arguments":{"message":"m","n":1e3,"big":123456789012345678901234567890,"x":0.1}}}"#;
    raw.write_all(format!("{call}\n").as_bytes()).await.unwrap();
    let (read, _write) = raw.into_split();
    let line = tokio::time::timeout(relay_tests::PATIENCE, BufReader::new(read).lines().next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(line.contains("\"id\":123456789012345678901234567890"), "{line}");
    let received = std::fs::read_to_string(&record).unwrap();
    for literal in ["\"big\":123456789012345678901234567890", "\"x\":0.1"] {
        assert!(received.contains(literal), "{literal} was rewritten on its way: {received}");
    }
    // The exponent's spelling is normalised (`1e+3`), never its value or kind (not `1000.0`).
    assert!(received.contains("\"n\":1e+3") || received.contains("\"n\":1e3"), "{received}");
}

#[tokio::test]
async fn a_duplicate_request_id_in_flight_is_refused() {
    let fixture = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    let mut client: LineClient = relay.line_client().await;
    let slow = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 800, "message": "first"}}});
    client.send_raw(&slow.to_string()).await;
    client.send_raw(&slow.to_string()).await;
    let refused = client.recv_response().await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("already in flight"), "{refused}");
    assert_eq!(text_of(&client.recv_response().await), "alpha: first");
    // Once it is answered, the id may be used again.
    client.send_raw(&slow.to_string()).await;
    assert_eq!(text_of(&client.recv_response().await), "alpha: first");
}

#[tokio::test]
async fn an_invalid_pagination_cursor_is_refused() {
    let relay = Relay::start("backends: []\n").await;
    let mut client = relay.line_client().await;
    for method in ["tools/list", "prompts/list", "resources/list", "resources/templates/list"] {
        let reply = client.request(method, json!({"cursor": "not-ours"})).await;
        assert_eq!(reply["error"]["code"], -32602, "{method}: {reply}");
    }
    assert!(client.request("tools/list", json!({})).await["result"]["tools"].is_array());
}

#[tokio::test]
async fn http_media_types_and_sse_framing_follow_the_spec() {
    let relay = Relay::start("backends: []\n").await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}});
    let post = |content_type: &'static str, accept: &'static str| {
        reqwest::Client::new()
            .post(relay.http("/mcp"))
            .header("content-type", content_type)
            .header("accept", accept)
            .body(init.to_string())
            .send()
    };
    let both = "application/json, text/event-stream";
    assert_eq!(post("APPLICATION/JSON", both).await.unwrap().status(), StatusCode::OK);
    assert_eq!(post("application/json; charset=utf-8", "*/*").await.unwrap().status(), StatusCode::OK);
    assert_eq!(post("application/jsonfoo", both).await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(post("application/json", "application/json").await.unwrap().status(), StatusCode::NOT_ACCEPTABLE);
    // A forwarded call with nothing streamed before its answer: one JSON body.
    let fixture = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "m"}}});
    let response = session.post(&call).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<Value>().await.unwrap()["id"], 2);
    // One whose progress comes first is answered on SSE: numbered events, the progress then
    // the answer, unbuffered by proxies.
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "progress", "arguments": {}, "_meta": {"progressToken": "p-1"}}});
    let response = session.post(&call).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let body = response.text().await.unwrap();
    // Event ids name the stream and the event (`<stream>-<n>`), for a resume.
    let ids: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids.len(), 2, "{body}");
    let stream = ids[0].strip_suffix("-0").unwrap_or_else(|| panic!("{body}"));
    assert_eq!(ids[1], format!("{stream}-1"), "{body}");
    let messages = relay_tests::sse_messages(&body);
    assert_eq!(messages[0]["method"], "notifications/progress", "{body}");
    assert_eq!(messages[0]["params"]["progressToken"], "p-1", "{body}");
    assert_eq!(messages[1]["id"], 3, "{body}");
}

/// A backend's progress notification of a megabyte reaches the client cut to the fields MCP
/// defines: it waits in the client's queue and the request's stream (64 of them per request,
/// for every call in flight), where a backend's megabytes each held gigabytes.
#[tokio::test]
async fn a_backends_huge_progress_notification_reaches_the_client_cut_short() {
    let fixture = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "progress", "arguments": {"message_bytes": 1 << 20}, "_meta": {"progressToken": "p-2"}}});
    let body = session.post(&call).send().await.unwrap().text().await.unwrap();
    let messages = relay_tests::sse_messages(&body);
    assert_eq!(messages[0]["method"], "notifications/progress", "{}", &body[..body.len().min(300)]);
    let progress = &messages[0]["params"];
    assert_eq!(
        (&progress["progressToken"], &progress["progress"], &progress["total"]),
        (&json!("p-2"), &json!(1), &json!(2))
    );
    assert!(progress["message"].as_str().unwrap().starts_with("xxxx"));
    assert!(progress.to_string().len() < 16 << 10, "a progress notification of {} bytes", progress.to_string().len());
    assert_eq!(messages[1]["id"], 4);
}

#[tokio::test]
async fn a_broken_answer_stream_is_resumed_with_last_event_id_and_nothing_is_lost() {
    let fixture = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    // Progress at once, the answer 1.5 s later: the client's connection breaks in between.
    let call = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "progress", "arguments": {"ms": 1500}, "_meta": {"progressToken": "p-8"}}});
    let mut response = session.post(&call).send().await.unwrap();
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        seen.push_str(&String::from_utf8_lossy(&response.chunk().await.unwrap().expect("the first event")));
    }
    drop(response);
    let last = seen.lines().find_map(|l| l.strip_prefix("id: ")).unwrap_or_else(|| panic!("{seen}")).to_owned();
    assert!(seen.contains("notifications/progress"), "{seen}");

    // Another session cannot resume it; this one can, and gets the answer (not the progress
    // again), the request having gone on meanwhile.
    let other = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let resume = |session: &HttpSession| {
        reqwest::Client::new()
            .get(relay.http("/mcp"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session.id)
            .header("last-event-id", &last)
    };
    let foreign = tokio::time::timeout(Duration::from_millis(800), async {
        resume(&other).send().await.unwrap().chunk().await.unwrap()
    })
    .await;
    assert!(foreign.is_err() || !String::from_utf8_lossy(&foreign.unwrap().unwrap_or_default()).contains("progressed"));
    let body = tokio::time::timeout(Duration::from_secs(10), async {
        resume(&session).send().await.unwrap().text().await.unwrap()
    })
    .await
    .expect("the resumed stream ends with the answer");
    let messages = relay_tests::sse_messages(&body);
    assert_eq!(messages.len(), 1, "only what was missed: {body}");
    assert_eq!(
        (messages[0]["id"].clone(), text_of(&messages[0])),
        (json!(8), "alpha: progressed".to_owned()),
        "{body}"
    );
    let stream = last.strip_suffix("-0").unwrap();
    assert!(body.lines().any(|l| l == format!("id: {stream}-1")), "{body}");
}

#[tokio::test]
async fn a_closed_post_stream_cancels_its_call_upstream() {
    // Chosen behaviour (2025 transport): the relay cannot resume a stream, so a client that
    // closes its POST's SSE stream gets nothing more; the call is cancelled upstream rather
    // than left running for nobody.
    let fixture = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    let session = HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "hang", "arguments": {}}});
    let pending = tokio::spawn(session.post(&call).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    pending.abort();
    relay_tests::eventually("the upstream hears of the cancellation", || async {
        let mut client = relay.line_client().await;
        let count = text_of(&client.call_tool("cancellations", json!({})).await);
        (count != "0").then_some(())
    })
    .await;
}

/// Each of these makes `serve` exit at start; `check-config` must say so first, with the same
/// reason.
#[test]
fn check_config_refuses_addresses_tls_files_and_directories_serve_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    let run = |command: &str, yaml: &str, env: &[(&str, &str)]| {
        std::fs::write(dir.path().join("relay.yaml"), yaml).unwrap();
        let mut child = std::process::Command::new(relay_bin());
        child.args([command, "--config"]).arg(dir.path().join("relay.yaml")).env("RELAY_PORT", "0");
        child.env_remove("RELAY_METRICS_LISTEN").envs(env.iter().copied());
        let child = child.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        ("tls: {cert: missing.pem, key: missing.key}\n", &[], "TLS"),
        ("listen: {host: 127.0.0.256}\n", &[], "127.0.0.256"),
        ("", &[("RELAY_PORT", "99999")], "RELAY_PORT=99999"),
        ("", &[("RELAY_METRICS_LISTEN", "not-an-address")], "RELAY_METRICS_LISTEN=not-an-address"),
        ("backends_file: nowhere/backends.yaml\n", &[], "does not exist"),
    ];
    for (yaml, env, reason) in cases {
        let (ok, text) = run("check-config", yaml, env);
        assert!(
            !ok && text.contains(reason),
            "check-config passed or said something else for {yaml:?} {env:?}: {text}"
        );
        let (ok, text) = run("serve", yaml, env);
        assert!(!ok && text.contains(reason), "serve for {yaml:?} {env:?}: {text}");
    }
}

#[tokio::test]
async fn check_config_refuses_what_serve_refuses_and_health_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    let check = |yaml: String| {
        std::fs::write(dir.path().join("relay.yaml"), yaml).unwrap();
        std::process::Command::new(relay_bin())
            .args(["check-config", "--config"])
            .arg(dir.path().join("relay.yaml"))
            .output()
            .unwrap()
    };
    let readme = repo_root().join("README.md");
    let cases = [
        format!("plugins:\n  - {{name: p, world: policy, path: {}}}\n", readme.display()),
        format!(
            "plugins:\n  - {{name: p, world: adapter, path: {}}}\n",
            copy_plugin(dir.path(), "rate_limit").display()
        ),
        format!(
            "plugins:\n  - {{name: p, world: adapter, path: {}, grants: {{files: {{read: [/nonexistent/docs]}}}}}}\n",
            copy_plugin(dir.path(), "echo_adapter").display()
        ),
    ];
    for yaml in cases {
        let output = check(yaml.clone());
        assert!(!output.status.success(), "check-config accepted {yaml}: {}", String::from_utf8_lossy(&output.stdout));
    }
    // An auth plugin whose secret is not set is a warning, loud.
    let auth = copy_plugin(dir.path(), "token_auth");
    let yaml = format!(
        "plugin_cache_dir: cache\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    grants: {{env: [E2E_UNSET_SECRET]}}\n    config: {{tokens: [{{token_env: E2E_UNSET_SECRET, principal: ops, roles: [admin]}}, {{token: HEALTHTOKEN, principal: probe}}]}}\n",
        auth.display()
    );
    let output = check(yaml.clone());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("E2E_UNSET_SECRET, which is not set"));
    let warned = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    warned.wait_for_log("E2E_UNSET_SECRET, which is not set").await;
    drop(warned);
    // `relay health` with auth on: fails without a token, passes with one.
    let yaml = format!(
        "plugin_cache_dir: cache\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config: {{tokens: [{{token: HEALTHTOKEN, principal: probe}}]}}\n",
        auth.display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let health = |token: Option<&str>| {
        let mut command = std::process::Command::new(relay_bin());
        command.args(["health", "--host", "127.0.0.1", "--port", &relay.port.to_string()]);
        command.env_remove("RELAY_AUTH_TOKEN");
        if let Some(token) = token {
            command.env("RELAY_AUTH_TOKEN", token);
        }
        command.output().unwrap().status.success()
    };
    assert!(!health(None));
    assert!(health(Some("HEALTHTOKEN")));
}

#[tokio::test]
async fn a_backend_that_refuses_the_connection_is_said_to_refuse() {
    let relay = Relay::start("backends:\n  - name: closed\n    url: http://127.0.0.1:9/mcp\n").await;
    relay_tests::eventually("an error", || async {
        let status = relay.status().await;
        status["backends"][0]["last_error"].as_str().map(str::to_owned)
    })
    .await;
    let status = relay.status().await;
    let error = status["backends"][0]["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains("refused"), "{error}");
    assert!(!error.contains("lost"), "{error}");
    let ignored = std::fs::read_to_string(repo_root().join(".gitignore")).unwrap();
    assert!(ignored.lines().any(|l| l == "config/backends.yaml.lock"));
}
