//! The stateless protocol (2026-07-28) on `/mcp`, spoken by hand: `server/discover`, the
//! `_meta` envelope, the `Mcp-Method`/`Mcp-Name` header rules, the 2026 result fields, and
//! closing the response stream as cancellation. The official Python SDK's 2026 mode is driven
//! in `real_clients.rs`.

use std::time::Duration;

use relay_tests::{
    Fixture, Relay, conformance_fixture_entry, copy_plugin, eventually, everything_stdio_entry, sse_messages, text_of,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VERSION: &str = relay_tests::STATELESS_VERSION;

fn envelope() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "stateless-e2e", "version": "1"},
    })
}

/// A 2026 request with matching headers; `params._meta` gains the envelope.
fn request(relay: &Relay, id: u64, method: &str, params: Value) -> reqwest::RequestBuilder {
    relay_tests::stateless_request(&relay.http("/mcp"), id, method, params, envelope())
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert!(response.headers().get("mcp-session-id").is_none(), "stateless answers open no session");
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

async fn relay_with_fixture() -> (Relay, Fixture) {
    let fixture = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    (relay, fixture)
}

#[tokio::test]
async fn discover_lists_and_calls_without_a_session() {
    let (relay, _fixture) = relay_with_fixture().await;

    let (status, discover) = json_of(request(&relay, 1, "server/discover", json!({})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{discover}");
    let result = &discover["result"];
    assert!(result["supportedVersions"].as_array().unwrap().contains(&json!(VERSION)), "{result}");
    assert_eq!(result["capabilities"]["tools"]["listChanged"], true, "{result}");
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["ttlMs"], 0);
    assert_eq!(result["cacheScope"], "private");
    assert_eq!(result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "relay");

    let (_, list) = json_of(request(&relay, 2, "tools/list", json!({})).send().await.unwrap()).await;
    let names: Vec<&str> =
        list["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"echo") && names.contains(&"relay_get_status"), "{names:?}");
    assert_eq!(list["result"]["resultType"], "complete");
    assert_eq!(list["result"]["ttlMs"], 0);

    let call = request(&relay, 3, "tools/call", json!({"name": "echo", "arguments": {"message": "hi"}}));
    let (status, answer) = json_of(call.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["id"], 3);
    assert_eq!(text_of(&answer), "alpha: hi");
    assert_eq!(answer["result"]["resultType"], "complete");
    assert!(answer["result"].get("ttlMs").is_none(), "tool results are not cacheable: {answer}");

    // A repeated Mcp-Name header is refused, even when both copies agree with the body.
    let repeated = request(&relay, 4, "tools/call", json!({"name": "echo", "arguments": {"message": "x"}}))
        .header("mcp-name", "=?base64?ZWNobw==?=");
    let (status, answer) = json_of(repeated.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "two Mcp-Name headers are refused: {answer}");
    assert_eq!(answer["error"]["code"], -32020);
}

#[tokio::test]
async fn header_and_envelope_rules() {
    let (relay, _fixture) = relay_with_fixture().await;
    let code = |value: &Value| value["error"]["code"].as_i64().unwrap();

    let wrong_method = request(&relay, 1, "tools/list", json!({})).header("mcp-method", "tools/call");
    let (status, answer) = json_of(wrong_method.send().await.unwrap()).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, -32020), "{answer}");

    // Built by hand: the name header says one tool, the body another.
    let mut params = json!({"name": "echo", "arguments": {"message": "x"}});
    params["_meta"] = envelope();
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params});
    let send = |name: &'static str, body: &Value| {
        // No Accept header: anything goes, and the answer comes as one JSON body.
        reqwest::Client::new()
            .post(relay.http("/mcp"))
            .header("content-type", "application/json")
            .header("mcp-protocol-version", VERSION)
            .header("mcp-method", "tools/call")
            .header("mcp-name", name)
            .body(body.to_string())
            .send()
    };
    let (status, answer) = json_of(send("add", &body).await.unwrap()).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, -32020), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("mcp-name"), "{answer}");
    let (status, answer) = json_of(send("=?base64?ZWNobw==?=", &body).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "a base64-encoded name matches: {answer}");
    assert_eq!(text_of(&answer), "alpha: x");

    let mut bare = body.clone();
    bare["params"].as_object_mut().unwrap().remove("_meta");
    let (status, answer) = json_of(send("echo", &bare).await.unwrap()).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, -32602), "{answer}");

    let unknown_version = reqwest::Client::new()
        .post(relay.http("/mcp"))
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2099-01-01")
        .header("mcp-method", "tools/list")
        .body(
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2099-01-01",
                "io.modelcontextprotocol/clientCapabilities": {}}}})
            .to_string(),
        );
    let (status, answer) = json_of(unknown_version.send().await.unwrap()).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, -32022), "{answer}");
    assert!(answer["error"]["data"]["supported"].as_array().unwrap().contains(&json!(VERSION)), "{answer}");

    let mismatched_version = request(&relay, 4, "tools/list", json!({})).header("mcp-protocol-version", "2099-01-01");
    let (status, answer) = json_of(mismatched_version.send().await.unwrap()).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, -32020), "{answer}");

    for removed in ["initialize", "ping", "logging/setLevel"] {
        let (status, answer) = json_of(request(&relay, 5, removed, json!({})).send().await.unwrap()).await;
        assert_eq!((status, code(&answer)), (StatusCode::NOT_FOUND, -32601), "{removed}: {answer}");
    }

    let get = reqwest::Client::new().get(relay.http("/mcp")).header("mcp-protocol-version", VERSION).send();
    let get = get.await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers()["allow"], "POST");

    let notification =
        json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed", "params": {"_meta": envelope()}});
    let posted = reqwest::Client::new()
        .post(relay.http("/mcp"))
        .header("content-type", "application/json")
        .header("mcp-protocol-version", VERSION)
        .header("mcp-method", "notifications/roots/list_changed")
        .body(notification.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::ACCEPTED);

    // A handshake-era client on the same endpoint is unaffected.
    let init = json!({"jsonrpc": "2.0", "id": 9, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "old"}}});
    let response = reqwest::Client::new()
        .post(relay.http("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("mcp-session-id").is_some());
}

#[tokio::test]
async fn closing_the_response_cancels_the_upstream_call() {
    let (relay, _fixture) = relay_with_fixture().await;
    let hang = request(&relay, 1, "tools/call", json!({"name": "hang", "arguments": {}}))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(hang.is_err(), "the hang call never answers; the client gives up and closes");
    eventually("the upstream hears notifications/cancelled", || async {
        let (_, answer) = json_of(
            request(&relay, 2, "tools/call", json!({"name": "cancellations", "arguments": {}})).send().await.unwrap(),
        )
        .await;
        (text_of(&answer).parse::<u64>().unwrap_or(0) >= 1).then_some(())
    })
    .await;
}

/// Reads the JSON-RPC messages of a response, SSE or JSON.
async fn messages(response: reqwest::Response) -> Vec<Value> {
    let sse = response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream");
    let text = response.text().await.unwrap();
    if sse { sse_messages(&text) } else { vec![serde_json::from_str(&text).unwrap()] }
}

#[tokio::test]
async fn log_messages_reach_only_requests_that_ask_for_them() {
    let relay = Relay::start(&format!("backends:\n{}", conformance_fixture_entry("fixture"))).await;
    relay.wait_ready("fixture").await;
    let call = |meta: Value| {
        request(&relay, 1, "tools/call", json!({"name": "test_tool_with_logging", "arguments": {}, "_meta": meta}))
    };
    let is_log = |m: &Value| m["method"] == "notifications/message";

    let quiet = messages(call(json!({})).send().await.unwrap()).await;
    assert!(!quiet.iter().any(is_log), "no logLevel, no log messages: {quiet:?}");
    assert!(text_of(quiet.last().unwrap()).contains("executed successfully"), "{quiet:?}");

    let wanted = json!({"io.modelcontextprotocol/logLevel": "debug"});
    let chatty = messages(call(wanted).send().await.unwrap()).await;
    let logs = chatty.iter().filter(|m| is_log(m)).count();
    assert!(logs >= 1, "logLevel debug gets the tool's info messages: {chatty:?}");
    assert_eq!(chatty.last().unwrap()["id"], 1, "the answer comes last: {chatty:?}");

    let above = messages(call(json!({"io.modelcontextprotocol/logLevel": "error"})).send().await.unwrap()).await;
    assert!(!above.iter().any(is_log), "info messages are below an error level: {above:?}");
}

#[tokio::test]
async fn every_request_authenticates_and_a_parked_call_resumes_only_for_its_principal() {
    const ALICE: &str = "alice-token-1234";
    const BOB: &str = "bob-token-5678";
    let dir = tempfile::tempdir().unwrap();
    let auth = copy_plugin(dir.path(), "token_auth");
    let yaml = format!(
        "plugin_cache_dir: cache\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config:\n      tokens:\n        - {{token: {ALICE}, principal: alice, roles: [admin]}}\n        - {{token: {BOB}, principal: bob}}\n",
        auth.display()
    );
    let backends = format!("backends:\n{}", everything_stdio_entry("everything"));
    let mut relay = Relay::start_files(dir.path(), &yaml, &backends, &[]).await;
    relay.token = Some(ALICE.to_owned());
    relay.wait_ready("everything").await;

    let anonymous = request(&relay, 1, "server/discover", json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");

    // A client that did not declare elicitation is not asked: the upstream hears so at once.
    let undeclared = json!({"name": "trigger-elicitation-request", "arguments": {}});
    let (_, answer) =
        json_of(request(&relay, 6, "tools/call", undeclared).bearer_auth(ALICE).send().await.unwrap()).await;
    assert_ne!(answer["result"]["resultType"], "input_required", "{answer}");

    // The upstream elicits mid-call: the stateless client gets input_required and a state.
    let can_elicit = json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}});
    let elicit = json!({"name": "trigger-elicitation-request", "arguments": {}, "_meta": can_elicit});
    let (status, asked) =
        json_of(request(&relay, 2, "tools/call", elicit.clone()).bearer_auth(ALICE).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    let result = &asked["result"];
    assert_eq!(result["resultType"], "input_required", "{asked}");
    let (key, input) = result["inputRequests"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(input["method"], "elicitation/create", "{asked}");
    let state = result["requestState"].as_str().unwrap().to_owned();

    let retry = |id: u64, token: &'static str| {
        let mut params = elicit.clone();
        params["requestState"] = json!(state);
        params["inputResponses"] =
            json!({ key.as_str(): {"action": "accept", "content": {"name": "Ada", "check": true}} });
        request(&relay, id, "tools/call", params).bearer_auth(token).send()
    };
    let (status, stolen) = json_of(retry(3, BOB).await.unwrap()).await;
    assert_eq!((status, stolen["error"]["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(-32602)), "{stolen}");
    let (status, answered) = json_of(retry(4, ALICE).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    assert_eq!(answered["id"], 4, "the retry's id answers");
    assert_eq!(answered["result"]["resultType"], "complete");
    assert!(answered["result"].to_string().contains("Ada"), "the answer reached the upstream: {answered}");
    let (status, replayed) = json_of(retry(5, ALICE).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a spent requestState is gone: {replayed}");
}

/// An open relay's clients are all one principal: the cap on parked calls is per address, so one
/// client parking its fill leaves others theirs.
#[tokio::test]
async fn an_open_relays_client_may_park_only_so_many_calls_and_leaves_others_theirs() {
    let yaml = format!("{}limits: {{max_parked_per_principal: 2}}\n", relay_tests::TEST_RELAY_YAML);
    // One backend each: a backend asks a client only while that client alone has calls on it.
    let names = ["e1", "e2", "e3"];
    let backends: String = names.iter().map(|name| everything_stdio_entry(name)).collect();
    let relay = Relay::start_with(&yaml, &format!("backends:\n{backends}"), &[]).await;
    for name in names {
        relay.wait_ready(name).await;
    }
    let can_elicit = json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}});
    let elicit = |backend: &str| json!({"name": format!("{backend}__trigger-elicitation-request"), "arguments": {}, "_meta": can_elicit});
    for (id, backend) in [(1, "e1"), (2, "e2")] {
        let (_, asked) = json_of(request(&relay, id, "tools/call", elicit(backend)).send().await.unwrap()).await;
        assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
    }
    let (_, refused) = json_of(request(&relay, 3, "tools/call", elicit("e3")).send().await.unwrap()).await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("max_parked_per_principal"), "{refused}");
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let counted =
        relay_tests::metric_value(&metrics, r#"relay_limit_refusals_total{limit="max_parked_per_principal"}"#);
    assert_eq!(counted, Some(1.0), "{metrics}");

    let other =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let sent =
        relay_tests::stateless_request_from(&other, &relay.http("/mcp"), 4, "tools/call", elicit("e3"), envelope());
    let (_, asked) = json_of(sent.send().await.unwrap()).await;
    assert_eq!(asked["result"]["resultType"], "input_required", "another client parks its own: {asked}");
}

/// A retry a blue/green switch sent to another instance than the one holding its call
/// (stateless POSTs stick to no instance) starts the call again there, which asks again: not
/// a `-32602` the client cannot recover from. The instance that held it ends its parked calls
/// when it drains, rather than waiting its grace for retries that go elsewhere.
#[tokio::test]
async fn a_retry_that_reaches_another_instance_starts_the_call_again_and_the_drain_ends_parked_calls() {
    let yaml = format!("{}shutdown: {{grace_secs: 60}}\n", relay_tests::TEST_RELAY_YAML);
    let backends = format!("backends:\n{}", everything_stdio_entry("everything"));
    let mut blue = Relay::start_with(&yaml, &backends, &[]).await;
    let green = Relay::start_with(&yaml, &backends, &[]).await;
    blue.wait_ready("everything").await;
    green.wait_ready("everything").await;
    let can_elicit = json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}});
    let elicit = json!({"name": "trigger-elicitation-request", "arguments": {}, "_meta": can_elicit});
    let asked_of = |answer: &Value| {
        let result = &answer["result"];
        assert_eq!(result["resultType"], "input_required", "{answer}");
        let key = result["inputRequests"].as_object().unwrap().keys().next().unwrap().clone();
        (key, result["requestState"].as_str().unwrap().to_owned())
    };
    let retry = |relay: &Relay, id: u64, (key, state): &(String, String)| {
        let mut params = elicit.clone();
        params["requestState"] = json!(state);
        params["inputResponses"] =
            json!({ key.as_str(): {"action": "accept", "content": {"name": "Ada", "check": true}} });
        request(relay, id, "tools/call", params).send()
    };

    let (_, asked) = json_of(request(&blue, 1, "tools/call", elicit.clone()).send().await.unwrap()).await;
    let on_blue = asked_of(&asked);
    let (status, asked_again) = json_of(retry(&green, 2, &on_blue).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{asked_again}");
    let on_green = asked_of(&asked_again);
    assert_ne!(on_green.1, on_blue.1, "green parks a call of its own");
    let (status, answered) = json_of(retry(&green, 3, &on_green).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    assert_eq!(answered["result"]["resultType"], "complete", "{answered}");
    assert!(answered["result"].to_string().contains("Ada"), "{answered}");

    // Blue still holds its call: its drain ends it, and the process, at once.
    let started = std::time::Instant::now();
    blue.signal("-TERM");
    let exited = tokio::time::timeout(Duration::from_secs(30), blue.wait()).await;
    assert!(exited.is_ok_and(|status| status.success()), "blue waited for the parked call");
    assert!(started.elapsed() < Duration::from_secs(20), "exited {:?} after SIGTERM", started.elapsed());
    assert!(blue.log().contains("parked_calls_ended=1"), "{}", blue.log());
}

/// A stateless answer its client does not read keeps its call counted (sessions per address)
/// until the connection has taken it in: released when the answer was made, a client reading
/// none of its answers had the relay hold any number of them (320 MB for twelve).
#[tokio::test]
async fn an_unread_stateless_answer_stays_counted_until_it_is_taken() {
    let fixture = Fixture::start("alpha").await;
    let yaml = format!(
        "{}limits: {{max_sessions_per_address: 1, max_message_bytes: 67108864}}\n",
        relay_tests::TEST_RELAY_YAML
    );
    let relay = Relay::start_with(&yaml, &format!("backends:\n{}", fixture.entry()), &[]).await;
    relay.wait_ready("alpha").await;
    let echo = json!({"name": "echo", "arguments": {"message": "m"}});
    let answered = || async {
        let answered = request(&relay, 3, "tools/call", echo.clone()).send().await.ok()?;
        (answered.status() == StatusCode::OK).then_some(())
    };
    // The harness's own session from this address may still be ending.
    eventually("a call answered", answered).await;
    let big = json!({"name": "big", "arguments": {"bytes": 24_000_000}});
    let unread = request(&relay, 1, "tools/call", big).send().await.unwrap();
    assert_eq!(unread.status(), StatusCode::OK, "{:?}", unread.headers());
    let refused = request(&relay, 2, "tools/call", echo.clone()).send().await.unwrap();
    let status = refused.status();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "still counted: {}", refused.text().await.unwrap());
    drop(unread);
    eventually("counted no more once its connection went", answered).await;
}
