//! Guessing is throttled (issue 15): 2,000 wrong bearer tokens from one address reach the auth
//! plugin at most `limits.auth_failures` times; the rest are refused at once (HTTP 429 with
//! `Retry-After`, JSON-RPC `-32029`, WebSocket handshake 429), logged without the token and
//! counted, while a client with the right token from another address is served throughout.

use std::net::IpAddr;

use futures::StreamExt;
use relay_tests::{Relay, metric_value, plugin_wasm};
use serde_json::{Value, json};

const GOOD: &str = "the-right-token-4d1f";
const MAX_FAILURES: usize = 10;

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}})
}

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(address.parse::<IpAddr>().unwrap()).build().unwrap()
}

async fn initialize_with(client: &reqwest::Client, relay: &Relay, token: &str) -> reqwest::Response {
    client
        .post(relay.http("/mcp"))
        .header("Accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .json(&initialize())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_thousand_wrong_tokens_reach_the_plugin_at_most_the_configured_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "limits: {{auth_failures: {MAX_FAILURES}, auth_failure_window_secs: 600}}\nmetrics: {{listen: 127.0.0.1:0}}\nplugins:\n  - {{name: auth, world: auth, path: {}, config: {{tokens: [{{token: {GOOD}, principal: ops}}]}}}}\n",
        plugin_wasm("token_auth").display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;

    // The right token from another address, all the while.
    let stop = tokio::sync::watch::channel(false);
    let good = {
        let (relay_port, mut stop) = (relay.port, stop.1.clone());
        tokio::spawn(async move {
            let client = client_from("127.0.0.2");
            let relay_url = format!("http://127.0.0.1:{relay_port}/mcp");
            let mut served = 0;
            while !*stop.borrow_and_update() {
                let response = client
                    .post(&relay_url)
                    .header("Accept", "application/json, text/event-stream")
                    .bearer_auth(GOOD)
                    .json(&initialize())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "the good client was refused: {:?}", response.text().await);
                served += 1;
            }
            served
        })
    };

    let attacker = client_from("127.0.0.1");
    let statuses: Vec<(u16, Option<String>, Value)> = futures::stream::iter(0..2000)
        .map(|i| {
            let (attacker, relay) = (&attacker, &relay);
            async move {
                let response = initialize_with(attacker, relay, &format!("guess-{i:04}")).await;
                let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), retry_after, response.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    stop.0.send(true).unwrap();
    assert!(good.await.unwrap() > 0);

    let denied = statuses.iter().filter(|(status, ..)| *status == 401).count();
    let throttled: Vec<_> = statuses.iter().filter(|(status, ..)| *status == 429).collect();
    assert_eq!(denied, MAX_FAILURES, "guesses that reached the plugin");
    assert_eq!(denied + throttled.len(), 2000);
    for (_, retry_after, body) in &throttled {
        let secs: u64 = retry_after.as_deref().expect("Retry-After").parse().unwrap();
        assert!((1..=600).contains(&secs), "{secs}");
        assert_eq!(body["error"]["code"], -32029, "{body}");
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", relay.metrics_port.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let plugin_denials = metric_value(&metrics, r#"relay_plugin_calls_total{plugin="auth",outcome="denied"}"#).unwrap();
    assert!(plugin_denials <= MAX_FAILURES as f64, "{plugin_denials} denials by the plugin");
    let counted = metric_value(&metrics, r#"relay_auth_throttled_total{transport="http"}"#).unwrap();
    assert_eq!(counted as usize, throttled.len());

    // The other transports refuse the throttled address too, before asking the plugin.
    let mut line = relay_tests::LineClient::connect(relay.port).await;
    let mut params = initialize()["params"].clone();
    params["_meta"] = json!({"authorization": format!("Bearer {GOOD}")});
    let answer = line.request("initialize", params).await;
    assert_eq!(answer["error"]["code"], -32029, "even the right token waits out the window: {answer}");
    let ws = tokio_tungstenite::connect_async(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(relay.ws("/ws")).unwrap(),
    )
    .await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("the WebSocket handshake was not refused with 429: {:?}", other.map(|_| ())),
    }

    // Every refusal is logged, with its outcome; no token ever is.
    let log = relay.log();
    assert!(log.matches("throttled").count() >= throttled.len(), "refusals are logged");
    assert!(!log.contains("guess-") && !log.contains(GOOD), "a token reached the log");
}
