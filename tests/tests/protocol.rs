//! The MCP surface beyond tools, through the relay to two copies of the published
//! server-everything (stdio): prompts, resources (with colliding URIs), resource templates,
//! completion, subscriptions, logging, and the capabilities the relay advertises.

use relay_tests::{Relay, everything_stdio_entry};
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
