//! The built-in relay_* tools, persistence of backends.yaml and its file watch.

use relay_tests::{Fixture, Relay, eventually, text_of};
use serde_json::{Value, json};

fn backend_names(file: &str) -> Vec<String> {
    let parsed: Value = serde_yaml::from_str(file).unwrap();
    parsed["backends"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn add_remove_and_reconnect_persist_and_take_effect() {
    let relay = Relay::start("backends: []\n").await;
    let fixture = Fixture::start("alpha").await;
    let mut client = relay.line_client().await;

    let added = client.call_tool("relay_add_server", json!({"name": "alpha", "url": fixture.url()})).await;
    assert_eq!(added["result"]["structuredContent"]["added"], "alpha", "{added}");
    assert_eq!(backend_names(&std::fs::read_to_string(relay.backends_path()).unwrap()), ["alpha"]);
    relay.wait_ready("alpha").await;
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "m"})).await), "alpha: m");

    let duplicate = client.call_tool("relay_add_server", json!({"name": "alpha", "url": fixture.url()})).await;
    assert_eq!(duplicate["result"]["isError"], true);
    assert!(text_of(&duplicate).contains("already exists"));
    let invalid = client.call_tool("relay_add_server", json!({"name": "bad name", "url": "ftp://x"})).await;
    assert_eq!(invalid["result"]["isError"], true, "{invalid}");

    let servers = client.call_tool("relay_list_servers", json!({})).await;
    assert_eq!(servers["result"]["structuredContent"]["servers"][0]["transport"], "websocket");
    let server_info = &servers["result"]["structuredContent"]["servers"][0]["server_info"];
    assert_eq!(*server_info, json!({"name": "alpha", "version": "1.0.0"}), "{servers}");

    let reconnect = client.call_tool("relay_reconnect_server", json!({"name": "alpha"})).await;
    assert_eq!(reconnect["result"]["structuredContent"]["reconnecting"], "alpha");
    eventually("second connection", || async {
        let status = relay.status().await;
        (status["backends"][0]["connects"].as_u64() >= Some(2)).then_some(())
    })
    .await;

    let removed = client.call_tool("relay_remove_server", json!({"name": "alpha"})).await;
    assert_eq!(removed["result"]["structuredContent"]["removed"], "alpha");
    assert!(backend_names(&std::fs::read_to_string(relay.backends_path()).unwrap()).is_empty());
    let gone = client.call_tool("echo", json!({"message": "m"})).await;
    assert_eq!(gone["error"]["code"], -32602, "{gone}");
}

#[tokio::test]
async fn external_edits_are_picked_up_and_invalid_files_rejected() {
    let relay = Relay::start("backends: []\n").await;
    let fixture = Fixture::start("alpha").await;
    std::fs::write(relay.backends_path(), format!("backends:\n{}", fixture.entry())).unwrap();
    relay.wait_ready("alpha").await;

    std::fs::write(relay.backends_path(), "backends:\n  - name: alpha\n    nonsense: true\n").unwrap();
    relay.wait_for_log("backends file rejected").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "kept"})).await), "alpha: kept");
    assert_eq!(relay.backend_state("alpha").await.as_deref(), Some("ready"));
}

#[tokio::test]
async fn two_relays_adding_to_one_file_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.yaml"), relay_tests::TEST_RELAY_YAML).unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    let first = Relay::start_in(dir.path(), "first.log", &[], &[]).await;
    let second = Relay::start_in(dir.path(), "second.log", &[], &[]).await;
    const EACH: usize = 15;
    let add_many = |relay: &Relay, prefix: &'static str| {
        let port = relay.port;
        async move {
            let mut client = relay_tests::LineClient::connect(port).await;
            // Pipeline all requests so both relays write at the same time.
            for i in 0..EACH {
                let args = json!({"name": format!("{prefix}{i}"), "url": "ws://127.0.0.1:9"});
                let request = json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"relay_add_server","arguments":args}});
                client.send_raw(&request.to_string()).await;
            }
            for _ in 0..EACH {
                let reply = client.recv_response().await;
                assert!(reply["result"]["structuredContent"]["added"].is_string(), "{reply}");
            }
        }
    };
    tokio::join!(add_many(&first, "a"), add_many(&second, "b"));
    let names = backend_names(&std::fs::read_to_string(dir.path().join("backends.yaml")).unwrap());
    assert_eq!(names.len(), 2 * EACH, "lost updates: {names:?}");
    // Each relay also converges on the full set through the file watch, never stopping a
    // backend on the way (a change applied after the file's lock went could undo a later one).
    for (relay, log) in [(&first, "first.log"), (&second, "second.log")] {
        eventually("all backends known", || async {
            (relay.status().await["backends"].as_array().unwrap().len() == 2 * EACH).then_some(())
        })
        .await;
        let log = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(log.contains("backends reconciled") && !log.contains("stopped=[\""), "{log}");
    }
}

#[tokio::test]
async fn status_reports_the_instance_colour() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.yaml"), relay_tests::TEST_RELAY_YAML).unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    let relay = Relay::start_in(dir.path(), "relay.log", &[], &[("RELAY_INSTANCE", "green")]).await;
    let status = relay.status().await;
    assert_eq!(status["instance"], "green");
    assert_eq!(status["version"], "0.1.0");
    assert!(status["uptime_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(status["sessions"], 1, "{status}");
    let ready: Value = reqwest::get(relay.http("/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["instance"], "green");

    // The text content is the structured answer pretty-printed (for people), keys in order.
    let reply = relay.line_client().await.call_tool("relay_get_status", json!({})).await;
    let text = text_of(&reply);
    assert!(text.starts_with("{\n  \"backends\": [],\n  \"draining\": false,"), "{text}");
    let structured = &reply["result"]["structuredContent"];
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["instance"], structured["instance"]);
    assert_eq!(structured["tls"], Value::Null);
    assert_eq!(structured["kv"]["backend"], "memory");
}
