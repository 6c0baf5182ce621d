//! Regression tests for fault-handling and protocol defects (issue 10), one per item fixed so
//! far, each named after what it guards.

use relay_tests::{Fixture, LineClient, Relay, text_of};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn invalid_utf8_on_the_newline_transport_is_a_parse_error_and_the_connection_stays() {
    let relay = Relay::start("backends: []\n").await;
    // Raw bytes that are not UTF-8, then a good request on the same connection.
    let mut raw = TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    raw.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}\n").await.unwrap();
    raw.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"x\":\"\xff\xfe\"}\n").await.unwrap();
    raw.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n").await.unwrap();
    let (read, _write) = raw.into_split();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(read));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(relay_tests::PATIENCE, lines.next_line()).await.unwrap().unwrap();
        let line = line.expect("connection kept open");
        seen.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert!(seen.iter().any(|m| m["error"]["code"] == -32700), "{seen:?}");
    assert!(seen.iter().any(|m| m["id"] == 3 && m["result"] == json!({})), "{seen:?}");
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
    let first = client.recv_response().await;
    assert_eq!(text_of(&first), "alpha: first");
    // Once it is answered, the id may be used again.
    client.send_raw(&slow.to_string()).await;
    assert_eq!(text_of(&client.recv_response().await), "alpha: first");
}
