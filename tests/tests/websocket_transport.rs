//! The client-side WebSocket transport spoken by hand (tokio-tungstenite).

use futures::{SinkExt, StreamExt};
use relay_tests::Relay;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn recv(socket: &mut Socket) -> Value {
    loop {
        let frame =
            tokio::time::timeout(relay_tests::PATIENCE, socket.next()).await.expect("frame in time").unwrap().unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn send(socket: &mut Socket, text: String) {
    socket.send(Message::text(text)).await.unwrap();
}

#[tokio::test]
async fn websocket_negotiates_mcp_subprotocol_and_serves_a_session() {
    let relay = Relay::start("backends: []\n").await;
    for path in ["/", "/ws"] {
        let mut request = relay.ws(path).into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "mcp".parse().unwrap());
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "mcp");
        send(
            &mut socket,
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}).to_string(),
        )
        .await;
        assert_eq!(recv(&mut socket).await["result"]["protocolVersion"], "2025-06-18");
        send(
            &mut socket,
            json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"relay_list_servers"}}).to_string(),
        )
        .await;
        let reply = recv(&mut socket).await;
        assert_eq!(reply["result"]["structuredContent"]["servers"], json!([]), "{reply}");
    }
}

#[tokio::test]
async fn websocket_bad_input_gets_errors_and_the_socket_stays_open() {
    let relay = Relay::start_with("limits:\n  max_message_bytes: 2048\n", "backends: []\n", &[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(relay.ws("/ws")).await.unwrap();
    send(&mut socket, "not json".into()).await;
    assert_eq!(recv(&mut socket).await["error"]["code"], -32700);
    send(&mut socket, format!("{{\"pad\":\"{}\"}}", "x".repeat(3000))).await;
    let reply = recv(&mut socket).await;
    assert_eq!(reply["error"]["code"], -32600);
    assert!(reply["error"]["message"].as_str().unwrap().contains("exceeds the limit"), "{reply}");
    send(&mut socket, json!({"jsonrpc":"2.0","id":"x","method":"bogus"}).to_string()).await;
    assert_eq!(recv(&mut socket).await["error"]["code"], -32601);
    send(&mut socket, json!({"jsonrpc":"2.0","id":5,"method":"ping"}).to_string()).await;
    assert_eq!(recv(&mut socket).await["id"], 5);
}

/// A relay in front of one WebSocket backend (`alpha`), and a WebSocket session initialized on
/// it; the backend lives as long as the first value.
async fn session_through_alpha() -> (relay_tests::Fixture, Relay, Socket) {
    let fixture = relay_tests::Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    let (mut socket, _) = tokio_tungstenite::connect_async(relay.ws("/ws")).await.unwrap();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}});
    send(&mut socket, init.to_string()).await;
    assert_eq!(recv(&mut socket).await["id"], 1);
    (fixture, relay, socket)
}

/// What a call sends before its answer (here a progress notification) reaches the client
/// before the answer, on WebSocket and on newline alike: the connection's loop writes the
/// answer itself, after whatever the call queued.
#[tokio::test]
async fn a_calls_progress_comes_before_its_answer_on_websocket_and_newline() {
    let (_fixture, relay, mut socket) = session_through_alpha().await;
    let mut line = relay.line_client().await;
    let call = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "progress", "arguments": {}, "_meta": {"progressToken": format!("t-{id}")}}})
        .to_string()
    };
    for id in 2..42 {
        send(&mut socket, call(id)).await;
        line.send_raw(&call(id)).await;
        for (transport, first, answer) in [
            ("websocket", recv(&mut socket).await, recv(&mut socket).await),
            ("newline", line.recv().await, line.recv().await),
        ] {
            assert_eq!(first["method"], "notifications/progress", "{transport}, call {id}: {first} came first");
            assert_eq!(first["params"]["progressToken"], format!("t-{id}"), "{transport}: {first}");
            assert_eq!(answer["id"], id, "{transport}: {answer}");
            assert_eq!(answer["result"]["content"][0]["text"], "alpha: progressed", "{transport}: {answer}");
        }
    }
}

/// A WebSocket backend's answer many times the relay's read chunk (16 KiB) arrives whole, as
/// does the client's request of the same size on its way there.
#[tokio::test]
async fn a_large_answer_from_a_websocket_backend_arrives_whole() {
    let (_fixture, _relay, mut socket) = session_through_alpha().await;
    let message: String = (0..400_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": message}}});
    send(&mut socket, call.to_string()).await;
    let answer = recv(&mut socket).await;
    assert_eq!(answer["id"], 2, "{}", &answer.to_string()[..200.min(answer.to_string().len())]);
    assert_eq!(answer["result"]["content"][0]["text"].as_str(), Some(format!("alpha: {message}").as_str()));
}

/// A client that sends pings and reads nothing gets no more of its frames read once a pong
/// cannot go out: tungstenite queued a pong per ping read, and one such client grew the relay
/// by gigabytes in seconds. Its writes stall instead, after the sockets' buffers.
#[tokio::test]
async fn a_client_that_pings_without_reading_stalls_instead_of_growing_the_relay() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = Relay::start("backends: []\n").await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // 8,192 masked pings of 125 bytes (1 MiB); the mask is zero, so the payload goes as it is.
    let ping: Vec<u8> = [&[0x89u8, 0x80 | 125, 0, 0, 0, 0][..], &[b'p'; 125]].concat();
    let burst = ping.repeat(8192);
    let before = relay.rss_bytes();
    let mut sent = 0usize;
    while sent < 256 << 20 {
        match tokio::time::timeout(std::time::Duration::from_secs(2), tcp.write_all(&burst)).await {
            Ok(Ok(())) => sent += burst.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let grown = relay.rss_bytes().saturating_sub(before);
    assert!(sent < 96 << 20, "the relay read {} MiB of pings from a client reading none of its pongs", sent >> 20);
    assert!(grown < 64 << 20, "the relay grew by {} MiB", grown >> 20);
}
