//! Log forwarding to the WebSocket logger (issue 13): records reach a mock of the Godot logger
//! as `logger_log` calls with component `mcp-relay`, tool calls are followed by trace id from
//! the client to the backend, and a logger that is down, restarting or hanging never costs a
//! call anything (drops are counted instead).

use serde_json::{Value, json};

use relay_tests::{Fixture, Logger, Relay, TEST_RELAY_YAML, eventually, metric_value, text_of};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn relay_logging_to(url: &str, alpha: &Fixture) -> (Relay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_files(
        dir.path(),
        TEST_RELAY_YAML,
        &format!("backends:\n{}", alpha.entry()),
        &[("JOSHUA_LOGGER_URL", url)],
    )
    .await;
    relay.wait_ready("alpha").await;
    (relay, dir)
}

fn tool_calls<'a>(records: &'a [Value], message: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["message"] == message && r["data"]["tool"] == "echo").collect()
}

async fn metric(relay: &Relay, series: &str) -> f64 {
    let text = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    metric_value(&text, series).unwrap_or(0.0)
}

#[tokio::test]
async fn tool_calls_reach_the_logger_with_their_trace_id_which_the_backend_sees_too() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(0, &dir.path().join("records.jsonl"), false).await;
    let alpha = Fixture::start("alpha").await;
    // A logger URL may carry its token: the relay's own log shows it hidden.
    let (relay, _dir) = relay_logging_to(&format!("{}/?token=LOGGER-SECRET-93", logger.url()), &alpha).await;
    let mut client = relay.line_client().await;
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let call = |name: &str| json!({"name": name, "arguments": {"message": "m"}, "_meta": {"traceparent": traceparent}});
    assert_eq!(text_of(&client.request("tools/call", call("echo")).await), "alpha: m");

    let records = eventually("the call's records reach the logger", || async {
        let records = logger.records();
        (tool_calls(&records, "Tool call finished").len() == 1).then_some(records)
    })
    .await;
    let received = tool_calls(&records, "Tool call received")[0];
    assert_eq!(received["component"], "mcp-relay");
    assert_eq!(received["level"], "INFO");
    assert_eq!(received["trace_id"], TRACE, "{received}");
    assert_eq!(received["data"]["backend"], "alpha");
    assert_eq!(received["data"]["session"].as_str().unwrap().len(), 12, "the session by its tag, not its id");
    assert!(received["data"]["principal"].is_string());
    relay.wait_for_log("log forwarding connected").await;
    assert!(!relay.log().contains("LOGGER-SECRET-93"), "the logger's token in the log:\n{}", relay.log());
    let finished = tool_calls(&records, "Tool call finished")[0];
    assert_eq!(finished["trace_id"], TRACE);
    assert_eq!(finished["data"]["outcome"], "ok");
    assert!(finished["data"]["duration_ms"].as_f64().is_some(), "{finished}");
    assert!(records.iter().all(|r| r["component"] == "mcp-relay"));

    // The backend gets the same trace, with the relay's hop as the parent span.
    let meta: Value = serde_json::from_str(&text_of(&client.request("tools/call", call("meta")).await)).unwrap();
    let forwarded = meta["traceparent"].as_str().unwrap();
    assert!(forwarded.starts_with(&format!("00-{TRACE}-")), "{forwarded}");
    assert_ne!(forwarded, traceparent);

    // Over HTTP the W3C header does the same; without any, the relay starts a trace.
    let session = relay_tests::HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "meta", "arguments": {}}});
    let answer = session.post(&body).header("traceparent", &traceparent).send().await.unwrap().text().await.unwrap();
    assert!(answer.contains(&format!("00-{TRACE}-")), "{answer}");
    let meta: Value = serde_json::from_str(&text_of(&client.call_tool("meta", json!({})).await)).unwrap();
    let fresh = meta["traceparent"].as_str().unwrap();
    assert!(fresh.len() == 55 && !fresh.contains(TRACE), "{fresh}");
}

#[tokio::test]
async fn a_logger_down_at_start_or_restarting_costs_nothing_and_forwarding_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let alpha = Fixture::start("alpha").await;
    let (relay, _dir) = relay_logging_to(&format!("ws://127.0.0.1:{port}"), &alpha).await;
    let mut client = relay.line_client().await;
    assert_eq!(
        text_of(&client.call_tool("echo", json!({"message": "m"})).await),
        "alpha: m",
        "served without a logger"
    );
    assert_eq!(metric(&relay, "relay_log_forward_connected").await, 0.0);

    let mut logger = Logger::start(port, &dir.path().join("first.jsonl"), false).await;
    eventually("the relay connects once the logger appears", || async {
        (metric(&relay, "relay_log_forward_connected").await == 1.0).then_some(())
    })
    .await;
    client.call_tool("echo", json!({"message": "after"})).await;
    eventually("records arrive", || async {
        (!tool_calls(&logger.records(), "Tool call finished").is_empty()).then_some(())
    })
    .await;

    logger.kill().await;
    let logger = Logger::start(port, &dir.path().join("second.jsonl"), false).await;
    eventually("forwarding resumes after the logger restarts", || async {
        (metric(&relay, "relay_log_forward_connected").await == 1.0).then_some(())
    })
    .await;
    client.call_tool("echo", json!({"message": "again"})).await;
    eventually("records arrive at the restarted logger", || async {
        (!tool_calls(&logger.records(), "Tool call finished").is_empty()).then_some(())
    })
    .await;
}

/// A logger that stops answering costs calls nothing; what it leaves unanswered past the limit
/// is dropped and counted; and after `ANSWER_WITHIN` with no answer the relay connects again
/// (forwarding had ended for good, the connection looking healthy).
#[tokio::test]
async fn a_logger_that_stops_answering_costs_calls_nothing_and_is_connected_to_again() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(0, &dir.path().join("records.jsonl"), true).await;
    let alpha = Fixture::start("alpha").await;
    let (relay, _dir) = relay_logging_to(&logger.url(), &alpha).await;
    let mut client = relay.line_client().await;
    // Two records per call: well past the forwarder's limit of unanswered records.
    for n in 0..300 {
        let answer = client.call_tool("echo", json!({"message": n.to_string()})).await;
        assert_eq!(text_of(&answer), format!("alpha: {n}"));
    }
    eventually("drops are counted", || async {
        (metric(&relay, "relay_log_forward_dropped_total").await > 0.0).then_some(())
    })
    .await;
    // It got at most as many as may go unanswered (256) on that connection.
    eventually("the logger has the unanswered records", || async { (logger.records().len() >= 256).then_some(()) })
        .await;
    // The relay gives the silent connection up and forwards on a new one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while logger.records().len() <= 256 {
        assert!(std::time::Instant::now() < deadline, "still nothing forwarded after the stall");
        client.call_tool("echo", json!({"message": "after"})).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(relay.log().contains("the logger stopped answering"), "{}", relay.log());
}

#[tokio::test]
async fn a_logger_that_is_down_holds_little_memory_whatever_the_records_quote() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let alpha = Fixture::start("alpha").await;
    let (relay, _dir) = relay_logging_to(&format!("ws://127.0.0.1:{port}"), &alpha).await;
    let mut client = relay.line_client().await;
    client.call_tool("echo", json!({"message": "warm"})).await;
    let before = relay.rss_bytes();
    let long_name = "n".repeat(1 << 20);
    for _ in 0..100 {
        let answer = client.call_tool(&long_name, json!({})).await;
        let error = answer["error"].to_string();
        assert!(error.len() < 1024, "the client's own megabyte came back: {} bytes", error.len());
    }
    let grown = relay.rss_bytes().saturating_sub(before);
    assert!(grown < 96 << 20, "100 calls with 1 MiB tool names grew the relay by {} MiB", grown >> 20);
    let longest = relay.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8192, "a log line of {longest} bytes");
}

/// A logger that sends pings and reads nothing does not grow the relay: tungstenite queued a
/// pong for each ping it read, without a bound, on the forwarder's socket too.
#[tokio::test]
async fn a_logger_that_pings_without_reading_does_not_grow_the_relay() {
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::Message as Frame;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let flood = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // The MCP handshake, then nothing more is read.
        while let Some(Ok(frame)) = socket.next().await {
            let Frame::Text(text) = frame else { continue };
            let message: Value = serde_json::from_str(text.as_str()).unwrap();
            if message["method"] == "initialize" {
                let answer = json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "pinger", "version": "1"}}});
                socket.send(Frame::Text(answer.to_string().into())).await.unwrap();
            } else if message["method"] == "notifications/initialized" {
                break;
            }
        }
        // Unmasked pings of 125 bytes, 1 MiB a burst, for as long as the relay reads them.
        let ping: Vec<u8> = [&[0x89u8, 125][..], &[b'p'; 125]].concat();
        let burst = ping.repeat(8192);
        let tcp = socket.get_mut();
        let mut sent = 0usize;
        while sent < 256 << 20 {
            match tokio::time::timeout(std::time::Duration::from_secs(2), tcp.write_all(&burst)).await {
                Ok(Ok(())) => sent += burst.len(),
                _ => break,
            }
        }
        sent
    });
    let alpha = Fixture::start("alpha").await;
    let (relay, _dir) = relay_logging_to(&url, &alpha).await;
    let before = relay.rss_bytes();
    let sent = flood.await.unwrap();
    let grown = relay.rss_bytes().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "a logger that sent {} MiB of pings and read nothing grew the relay by {} MiB",
        sent >> 20,
        grown >> 20
    );
}
