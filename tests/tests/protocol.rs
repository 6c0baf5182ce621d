//! The MCP surface beyond tools, through the relay to two copies of the published
//! server-everything (stdio): prompts, resources (with colliding URIs), resource templates,
//! completion, subscriptions, logging, and the capabilities the relay advertises.

use relay_tests::{Fixture, Relay, everything_stdio_entry};
use serde_json::{Value, json};

async fn two_everythings() -> Relay {
    let relay =
        Relay::start(&format!("backends:\n{}{}", everything_stdio_entry("a"), everything_stdio_entry("b"))).await;
    relay.wait_ready("a").await;
    relay.wait_ready("b").await;
    relay
}

fn names(list: &Value, field: &str, key: &str) -> Vec<String> {
    list["result"][field].as_array().unwrap().iter().map(|p| p[key].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn line_to_stdio_prompts_resources_and_completion_across_two_backends() {
    let relay = two_everythings().await;
    let mut client = relay.line_client().await;

    let init = client.request("initialize", json!({"protocolVersion": "2025-11-25"})).await;
    for capability in ["tools", "prompts", "resources", "logging", "completions"] {
        assert!(init["result"]["capabilities"][capability].is_object(), "{capability}: {init}");
    }

    // Prompts collide by name: every copy is prefixed, and each routes to its own backend.
    let prompts = names(&client.request("prompts/list", json!({})).await, "prompts", "name");
    assert!(
        prompts.contains(&"a__simple-prompt".into()) && prompts.contains(&"b__simple-prompt".into()),
        "{prompts:?}"
    );
    let got = client.request("prompts/get", json!({"name": "b__simple-prompt"})).await;
    assert!(got["result"]["messages"][0]["content"]["text"].as_str().unwrap().contains("simple prompt"), "{got}");
    let unknown = client.request("prompts/get", json!({"name": "simple-prompt"})).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    // Resources collide by URI: each copy is rewritten under relay://<backend>/ and reads back.
    let uris = names(&client.request("resources/list", json!({})).await, "resources", "uri");
    let first = uris.iter().find(|u| u.starts_with("relay://a/")).expect("rewritten URI").clone();
    let read = client.request("resources/read", json!({"uri": first})).await;
    let contents = &read["result"]["contents"][0];
    assert!(contents["text"].as_str().is_some_and(|t| !t.is_empty()), "{read}");
    assert_eq!(contents["uri"], first.as_str(), "contents name the URI the client asked for");
    let missing = client.request("resources/read", json!({"uri": "nowhere://at/all"})).await;
    assert_eq!(missing["error"]["code"], -32002, "{missing}");

    // Templates are listed as given; a URI they produce is read from a backend that has it.
    let templates =
        names(&client.request("resources/templates/list", json!({})).await, "resourceTemplates", "uriTemplate");
    assert!(templates.iter().any(|t| t == "demo://resource/dynamic/text/{resourceId}"), "{templates:?}");
    let dynamic = client.request("resources/read", json!({"uri": "demo://resource/dynamic/text/7"})).await;
    assert!(dynamic["result"]["contents"][0]["text"].as_str().unwrap().contains("Resource 7"), "{dynamic}");

    let completion = client
        .request(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "a__completable-prompt"}, "argument": {"name": "department", "value": "E"}}),
        )
        .await;
    assert!(completion["result"]["completion"]["values"].is_array(), "{completion}");

    assert_eq!(client.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
    assert_eq!(client.request("logging/setLevel", json!({"level": "loud"})).await["error"]["code"], -32602);
    assert_eq!(client.request("resources/subscribe", json!({"uri": first})).await["result"], json!({}));
    assert_eq!(client.request("resources/unsubscribe", json!({"uri": first})).await["result"], json!({}));
    assert_eq!(client.request("ping", json!({})).await["result"], json!({}));
}

#[tokio::test]
async fn line_to_stdio_progress_reaches_the_caller_with_its_own_token() {
    let relay = Relay::start(&format!("backends:\n{}", everything_stdio_entry("everything"))).await;
    relay.wait_ready("everything").await;
    let mut client = relay.line_client().await;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 3},
        "_meta": {"progressToken": "my-token"}}});
    client.send_raw(&call.to_string()).await;
    let mut progress = Vec::new();
    let response = loop {
        let message = client.recv().await;
        if message["method"] == "notifications/progress" {
            progress.push(message["params"].clone());
        } else if message["id"] == 5 {
            break message;
        }
    };
    assert!(response["result"]["content"][0]["text"].as_str().unwrap().contains("completed"), "{response}");
    assert_eq!(progress.len(), 3, "every step arrives before the response: {progress:?}");
    assert!(progress.iter().all(|p| p["progressToken"] == "my-token"), "{progress:?}");
}

#[tokio::test]
async fn http_to_stdio_progress_streams_before_the_response() {
    let relay = Relay::start(&format!("backends:\n{}", everything_stdio_entry("everything"))).await;
    relay.wait_ready("everything").await;
    let session = relay_tests::HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 2},
        "_meta": {"progressToken": 42}}});
    let response = session.post(&call).send().await.unwrap();
    // Progress came before the answer: the answer is an SSE stream.
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = response.text().await.unwrap();
    let messages = relay_tests::sse_messages(&body);
    let last = messages.last().unwrap();
    assert_eq!(last["id"], 2, "the response comes last: {body}");
    let progress: Vec<&Value> = messages.iter().filter(|m| m["method"] == "notifications/progress").collect();
    assert!(!progress.is_empty(), "{body}");
    assert!(progress.iter().all(|p| p["params"]["progressToken"] == 42), "{body}");
}

#[tokio::test]
async fn line_to_websocket_cancellation_reaches_the_upstream_and_no_response_follows() {
    let fixture = relay_tests::Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    let call = json!({"jsonrpc": "2.0", "id": "slow-1", "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 1500}}});
    client.send_raw(&call.to_string()).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow-1", "reason": "changed my mind"}});
    client.send_raw(&cancel.to_string()).await;
    relay_tests::eventually("the upstream hears of the cancellation", || async {
        let mut probe = relay.line_client().await;
        (relay_tests::text_of(&probe.call_tool("cancellations", json!({})).await) == "1").then_some(())
    })
    .await;
    // Past the time the slow call would have answered: nothing for it, and the session works.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let next = client.request("ping", json!({})).await;
    assert_eq!(next["result"], json!({}), "a response for the cancelled request arrived: {next}");
}

#[tokio::test]
async fn line_to_stdio_elicitation_round_trip_reaches_the_calling_client() {
    let relay = Relay::start(&format!("backends:\n{}", everything_stdio_entry("everything"))).await;
    relay.wait_ready("everything").await;
    // The client declares elicitation: the relay sends such requests only to clients that do.
    let mut client = relay_tests::LineClient::connect(relay.port).await;
    let init =
        json!({"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}}, "clientInfo": {"name": "e2e"}});
    assert!(client.request("initialize", init).await["result"].is_object());
    let names = client.tool_names().await;
    assert!(names.contains(&"trigger-elicitation-request".into()), "the relay offers elicitation upstream: {names:?}");
    let call = json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "trigger-elicitation-request", "arguments": {}}});
    client.send_raw(&call.to_string()).await;
    let asked = loop {
        let message = client.recv().await;
        if message["method"] == "elicitation/create" {
            break message;
        }
    };
    assert!(asked["params"]["requestedSchema"]["properties"]["name"].is_object(), "{asked}");
    let answer = json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"name": "Ada", "check": true}}});
    client.send_raw(&answer.to_string()).await;
    let response = client.recv_response().await;
    assert_eq!(response["id"], 11, "{response}");
    let text = response["result"]["content"][1]["text"].as_str().unwrap_or_default();
    assert!(text.contains("Name: Ada"), "{response}");
}

#[tokio::test]
async fn http_to_stdio_elicitation_request_travels_on_the_call_stream() {
    let relay = Relay::start(&format!("backends:\n{}", everything_stdio_entry("everything"))).await;
    relay.wait_ready("everything").await;
    let session = relay_tests::HttpSession::open(&relay.http("/mcp"), json!({"elicitation": {}})).await;
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "trigger-elicitation-request", "arguments": {}}});
    let mut stream = session.post(&call).send().await.unwrap();
    let mut seen = String::new();
    let mut answered = false;
    let result = tokio::time::timeout(relay_tests::PATIENCE, async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            for line in seen.clone().lines() {
                let Some(data) = line.strip_prefix("data:") else { continue };
                let message: Value = serde_json::from_str(data.trim()).unwrap();
                if message["method"] == "elicitation/create" && !answered {
                    answered = true;
                    let answer = json!({"jsonrpc": "2.0", "id": message["id"], "result": {"action": "decline"}});
                    let accepted = session.post(&answer).send().await.unwrap();
                    assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
                }
                if message["id"] == 2 {
                    return message;
                }
            }
        }
        panic!("stream ended: {seen}");
    })
    .await
    .expect("the call finishes");
    assert!(answered, "no elicitation request on the stream: {seen}");
    assert!(result["result"]["content"][0]["text"].as_str().unwrap().contains("declined"), "{result}");
}

#[tokio::test]
async fn capabilities_are_the_union_of_the_upstreams_and_everything_while_one_is_pending() {
    // The WebSocket fixture offers tools only: once it is connected, so does the relay.
    let fixture = Fixture::start("tools-only").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("tools-only").await;
    let mut client = relay.line_client().await;
    let init = client.request("initialize", json!({"protocolVersion": "2025-11-25"})).await;
    let capabilities = &init["result"]["capabilities"];
    assert!(capabilities["tools"].is_object(), "{init}");
    for absent in ["prompts", "resources", "logging", "completions"] {
        assert!(capabilities.get(absent).is_none(), "{absent} offered by no upstream: {init}");
    }

    // A backend still in its first handshake might offer anything, and a client cannot learn
    // of a capability after its own initialize: everything is advertised until it is known.
    let stuck = Fixture::start_on("stuck", 0, &["--hang-initialize"]).await;
    let relay = Relay::start(&format!("backends:\n{}", stuck.entry())).await;
    let mut client = relay.line_client().await;
    let init = client.request("initialize", json!({"protocolVersion": "2025-11-25"})).await;
    for capability in ["tools", "prompts", "resources", "logging", "completions"] {
        assert!(init["result"]["capabilities"][capability].is_object(), "{capability}: {init}");
    }
}
