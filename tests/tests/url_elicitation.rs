//! URL-mode elicitation (MCP 2025-11-25) from a backend, through the relay, against the
//! TypeScript SDK's `elicitationUrlExample.js` (code nobody here wrote) as a static backend:
//! its `payment-confirm` tool answers `-32042` with a URL the user must open. A client that
//! declared `elicitation.url` gets that error as the backend sent it; a client that did not gets
//! `-32011` with the same URL in its data; when the user confirms at the backend's page, the
//! backend's `notifications/elicitation/complete` reaches the client that was asked, and no
//! other. Another backend announcing that completion is not believed.

use relay_tests::sdk_example::ExampleServer;
use relay_tests::{LineClient, Relay};
use serde_json::{Value, json};

async fn client(relay: &Relay, capabilities: Value) -> LineClient {
    let mut client = LineClient::connect(relay.port).await;
    let params = json!({"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "e2e"}});
    let init = client.request("initialize", params).await;
    assert!(init["result"].is_object(), "{init}");
    client.send_raw(r#"{"jsonrpc": "2.0", "method": "notifications/initialized"}"#).await;
    client
}

#[tokio::test]
async fn a_backends_url_elicitation_reaches_the_client_asked_and_so_does_its_completion() {
    let dir = tempfile::tempdir().unwrap();
    let server = ExampleServer::start(dir.path(), "elicitationUrlExample.js", &[]).await;
    let backends = format!(
        "backends:\n  - name: shop\n    url: {}\n    headers: {{Authorization: 'Bearer {}'}}\n{}",
        server.url(),
        server.service,
        relay_tests::stdio_fixture_entry("liar", &[]),
    );
    let relay = Relay::start(&backends).await;
    relay.wait_ready("shop").await;
    relay.wait_ready("liar").await;

    let mut asked = client(&relay, json!({"elicitation": {"url": {}}})).await;
    let mut other = client(&relay, json!({"elicitation": {"url": {}}})).await;
    let mut plain = client(&relay, json!({})).await;

    let elicited = asked.call_tool("payment-confirm", json!({"cartId": "cart-7"})).await;
    assert_eq!(elicited["error"]["code"], -32042, "{elicited}");
    assert_eq!(elicited["error"]["data"]["backend"], "shop", "the backend that asks is named: {elicited}");
    let elicitation = elicited["error"]["data"]["elicitations"][0].clone();
    assert_eq!(elicitation["mode"], "url", "{elicited}");
    let url = url::Url::parse(elicitation["url"].as_str().unwrap()).unwrap();
    assert_eq!(url.path(), "/confirm-payment", "{url}");

    // Without URL elicitation: -32011, the URL still in the data for a person to open.
    let downgraded = plain.call_tool("payment-confirm", json!({"cartId": "cart-8"})).await;
    assert_eq!(downgraded["error"]["code"], -32011, "{downgraded}");
    assert_eq!(downgraded["error"]["data"]["elicitations"][0]["mode"], "url", "{downgraded}");

    // Another backend cannot tell the client the user is done: only the backend that asked.
    let completion = json!({"method": "notifications/elicitation/complete", "params": {"elicitationId": elicitation["elicitationId"]}});
    assert_eq!(relay_tests::text_of(&other.call_tool("notify", completion).await), "liar: notified");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    asked.send_raw(r#"{"jsonrpc": "2.0", "id": 98, "method": "ping"}"#).await;
    let next = asked.recv().await;
    assert_eq!(next["id"], 98, "the client heard another backend's claim: {next}");

    // The user confirms at the backend's own page (signed in there: its demo session cookie).
    let query = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap();
    let confirmed = reqwest::Client::new()
        .post(format!("http://localhost:{}/confirm-payment", server.mcp_port))
        .header("cookie", format!("demo_session={}", urlencode(r#"{"name":"alice"}"#)))
        .form(&[
            ("session", query("session")),
            ("elicitation", query("elicitation")),
            ("cartId", "cart-7".into()),
            ("action", "confirm".into()),
        ])
        .send()
        .await
        .unwrap();
    assert!(confirmed.status().is_success(), "{}", confirmed.text().await.unwrap());
    let completed = asked.recv().await;
    assert_eq!(completed["method"], "notifications/elicitation/complete", "{completed}");
    assert_eq!(completed["params"]["elicitationId"], elicitation["elicitationId"], "{completed}");

    // The other clients heard nothing of it: their next message is their own answer.
    for client in [&mut other, &mut plain] {
        client.send_raw(r#"{"jsonrpc": "2.0", "id": 99, "method": "ping"}"#).await;
        let next = client.recv().await;
        assert_eq!(next["id"], 99, "{next}");
    }
    assert!(server.log().contains("Sending notifications/elicitation/complete"), "{}", server.log());
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
