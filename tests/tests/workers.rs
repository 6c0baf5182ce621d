//! Several worker threads serving the one port (`listen.workers`): clients spread over them
//! still get their own answers, and a WebSocket backend that asks for a session per worker
//! (`session_per_worker`) gets one, while every other backend keeps one session for all.

use relay_tests::{Fixture, Relay, TEST_RELAY_YAML, text_of};
use serde_json::json;

fn relay_yaml(workers: usize) -> String {
    format!("{TEST_RELAY_YAML}listen:\n  workers: {workers}\n")
}

#[tokio::test]
async fn clients_spread_over_four_workers_each_get_their_own_answers() {
    let alpha = Fixture::start("alpha").await;
    let relay = Relay::start_with(&relay_yaml(4), &format!("backends:\n{}", alpha.entry()), &[]).await;
    relay.wait_ready("alpha").await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(relay.line_client().await);
    }
    // Every client on its own task, all at once, each call with its own message.
    let tasks = clients.into_iter().enumerate().map(|(c, mut client)| {
        tokio::spawn(async move {
            for call in 0..25 {
                let message = format!("client {c} call {call}");
                let reply = client.call_tool("echo", json!({"message": message})).await;
                assert_eq!(text_of(&reply), format!("alpha: {message}"), "{reply}");
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.expect("client task");
    }
    let sessions = relay.line_client().await.call_tool("sessions", json!({})).await;
    assert_eq!(text_of(&sessions), "1", "without session_per_worker the backend sees one session");
    assert_eq!(relay.status().await["backends"][0]["lanes"], 0);
}

#[tokio::test]
async fn a_session_per_worker_backend_gets_one_per_worker_and_its_list_changes_are_followed() {
    let (alpha, beta) = (Fixture::start("alpha").await, Fixture::start("beta").await);
    let backends = format!("backends:\n{}    session_per_worker: true\n{}", alpha.entry(), beta.entry());
    let relay = Relay::start_with(&relay_yaml(2), &backends, &[]).await;
    relay.wait_ready("alpha").await;
    relay.wait_ready("beta").await;
    relay_tests::eventually("alpha's lane on worker 1", || async {
        (relay.status().await["backends"][0]["lanes"] == 1).then_some(())
    })
    .await;
    assert_eq!(relay.status().await["backends"][1]["lanes"], 0, "beta did not ask for lanes");
    // Connections go to the least-loaded worker: of four, two are on each.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(relay.line_client().await);
    }
    for (c, client) in clients.iter_mut().enumerate() {
        for backend in ["alpha", "beta"] {
            let reply = client.call_tool(&format!("{backend}__echo"), json!({"message": c.to_string()})).await;
            assert_eq!(text_of(&reply), format!("{backend}: {c}"), "{reply}");
        }
    }
    assert_eq!(sessions(&relay, "alpha__sessions").await, "2", "the supervisor's session and worker 1's");
    assert_eq!(sessions(&relay, "beta__sessions").await, "1");

    // A tool registered through one worker's session: every client hears of it and can call it.
    let reply = clients[1].call_tool("alpha__register_tool", json!({"name": "fresh_tool"})).await;
    assert_eq!(text_of(&reply), "registered fresh_tool", "{reply}");
    relay_tests::eventually("fresh_tool listed", || async {
        relay.line_client().await.tool_names().await.contains(&"fresh_tool".to_string()).then_some(())
    })
    .await;
    for client in &mut clients {
        assert!(client.tool_names().await.contains(&"fresh_tool".to_string()));
        assert_eq!(text_of(&client.call_tool("fresh_tool", json!({})).await), "alpha: fresh_tool");
    }
}

/// A relay on two workers whose one backend, `alpha`, asks for a session per worker; ready.
async fn relay_with_lanes(alpha: &Fixture) -> Relay {
    let backends = format!("backends:\n{}    session_per_worker: true\n", alpha.entry());
    let relay = Relay::start_with(&relay_yaml(2), &backends, &[]).await;
    relay.wait_ready("alpha").await;
    relay
}

/// Waits until the supervisor's connection to the first backend is its `connects`th and worker
/// 1's lane is connected.
async fn lane_connected(relay: &Relay, connects: u64) {
    relay_tests::eventually(&format!("connection {connects} and the lane on worker 1"), || async {
        let status = relay.status().await;
        (status["backends"][0]["connects"] == connects && status["backends"][0]["lanes"] == 1).then_some(())
    })
    .await;
}

/// How many sessions a fixture has answered `initialize` for, asked through its `sessions` tool
/// as the relay names it (`alpha__sessions` when two backends have one).
async fn sessions(relay: &Relay, tool: &str) -> String {
    text_of(&relay.line_client().await.call_tool(tool, json!({})).await)
}

#[tokio::test]
async fn lanes_follow_a_backend_restart_and_calls_from_every_worker_answer_again() {
    let mut alpha = Fixture::start("alpha").await;
    let port = alpha.port;
    let relay = relay_with_lanes(&alpha).await;
    lane_connected(&relay, 1).await;
    alpha.kill().await;
    relay_tests::eventually("the lane gone with its backend", || async {
        (relay.status().await["backends"][0]["lanes"] == 0).then_some(())
    })
    .await;
    let _restarted = Fixture::start_on("alpha", port, &[]).await;
    relay.wait_ready("alpha").await;
    lane_connected(&relay, 2).await;
    each_of_four_clients_gets_its_echo(&relay).await;
    assert_eq!(
        sessions(&relay, "sessions").await,
        "2",
        "the restarted fixture: the supervisor's session and the lane's backend: one session each, no more"
    );
}

#[tokio::test]
async fn progress_and_cancellation_go_through_the_session_that_carries_the_call() {
    let alpha = Fixture::start("alpha").await;
    let relay = relay_with_lanes(&alpha).await;
    lane_connected(&relay, 1).await;
    // Four clients, two on each worker: half of them call through worker 1's session.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(relay.line_client().await);
    }
    for (c, client) in clients.iter_mut().enumerate() {
        let call = json!({"jsonrpc": "2.0", "id": "p", "method": "tools/call",
            "params": {"name": "progress", "arguments": {}, "_meta": {"progressToken": format!("token-{c}")}}});
        client.send_raw(&call.to_string()).await;
        let progress = client.recv().await;
        assert_eq!(progress["method"], "notifications/progress", "client {c}: {progress}");
        assert_eq!(progress["params"]["progressToken"], format!("token-{c}"), "client {c}: its own token back");
        assert_eq!(text_of(&client.recv_response().await), "alpha: progressed");
    }
    // A cancelled call is cancelled on the session it went out on: the backend's request ids are
    // its session's, so a cancellation on another one would cancel nothing (or someone else's).
    for client in &mut clients {
        let call = json!({"jsonrpc": "2.0", "id": "slow", "method": "tools/call",
            "params": {"name": "slow", "arguments": {"ms": 1500}}});
        client.send_raw(&call.to_string()).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for client in &mut clients {
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow"}});
        client.send_raw(&cancel.to_string()).await;
    }
    relay_tests::eventually("the backend hears of four cancellations", || async {
        (text_of(&relay.line_client().await.call_tool("cancellations", json!({})).await) == "4").then_some(())
    })
    .await;
}

/// `relay_reconnect_server` replaces the backend's connections, the lanes' too, but the calls in
/// flight on them finish there: none is cut and sent again on a new connection, where the tool
/// would run a second time.
#[tokio::test]
async fn calls_in_flight_finish_on_their_connections_when_the_backend_is_reconnected() {
    let alpha = Fixture::start("alpha").await;
    let relay = relay_with_lanes(&alpha).await;
    lane_connected(&relay, 1).await;
    // Four clients, two on each worker: two calls on the supervisor's connection, two on the lane.
    let mut clients = Vec::new();
    for c in 0..4 {
        let mut client = relay.line_client().await;
        let call = json!({"jsonrpc": "2.0", "id": c, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"ms": 1500, "message": format!("call {c}")}}});
        client.send_raw(&call.to_string()).await;
        clients.push(client);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let reconnect = relay.line_client().await.call_tool("relay_reconnect_server", json!({"name": "alpha"})).await;
    assert!(reconnect["error"].is_null(), "{reconnect}");
    for (c, client) in clients.iter_mut().enumerate() {
        let reply = client.recv_response().await;
        assert_eq!(text_of(&reply), format!("alpha: call {c}"), "{reply}");
    }
    assert!(!relay.log().contains("re-sending"), "a call was cut and sent again: {}", relay.log());
    lane_connected(&relay, 2).await;
    each_of_four_clients_gets_its_echo(&relay).await;
}

#[tokio::test]
async fn a_backend_that_refuses_a_second_session_still_answers_every_worker_on_its_one() {
    let alpha = Fixture::start_on("alpha", 0, &["--max-sessions", "1"]).await;
    let relay = relay_with_lanes(&alpha).await;
    // The operator hears why there is no second session, once, though the lane keeps trying
    // (every 50 to 500 ms here).
    relay.wait_for_log("a worker's own session did not open").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(relay.log().matches("a worker's own session did not open").count(), 1, "{}", relay.log());
    assert_eq!(relay.status().await["backends"][0]["lanes"], 0);
    each_of_four_clients_gets_its_echo(&relay).await;
    assert_eq!(sessions(&relay, "sessions").await, "1");
}

#[tokio::test]
async fn a_backend_that_drops_each_extra_session_at_once_is_not_reconnected_to_in_a_loop() {
    let alpha = Fixture::start_on("alpha", 0, &["--close-extra-sessions"]).await;
    let relay = relay_with_lanes(&alpha).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // Backed off from like the supervisor (50 ms doubling to 500 ms here): a handful of
    // sessions in two seconds, not one per round trip.
    let opened: u32 = sessions(&relay, "sessions").await.parse().unwrap();
    assert!((2..=12).contains(&opened), "{opened} sessions opened in 2 s");
    let reply = relay.line_client().await.call_tool("echo", json!({"message": "still"})).await;
    assert_eq!(text_of(&reply), "alpha: still", "{reply}");
}

/// Four clients at once (two on each of two workers), each of which gets its own `echo` answered
/// by the one backend, alpha.
async fn each_of_four_clients_gets_its_echo(relay: &Relay) {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(relay.line_client().await);
    }
    for (c, client) in clients.iter_mut().enumerate() {
        let reply = client.call_tool("echo", json!({"message": c.to_string()})).await;
        assert_eq!(text_of(&reply), format!("alpha: {c}"), "{reply}");
    }
}

/// The log level the clients asked for reaches every session of a `session_per_worker` backend,
/// the lanes' too (and a lane opened later): a call on a lane is logged at the level asked for,
/// not at the backend's default.
#[tokio::test]
async fn the_log_level_reaches_every_lane() {
    let alpha = Fixture::start_on("alpha", 0, &["--logging"]).await;
    let relay = relay_with_lanes(&alpha).await;
    lane_connected(&relay, 1).await;
    // Four clients, two on each worker, each asking for debug.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = relay.line_client().await;
        assert_eq!(client.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
        clients.push(client);
    }
    /// Whether `client` hears the debug message its `log` call `id` makes, before the answer.
    async fn hears_debug(client: &mut relay_tests::LineClient, id: u64) -> bool {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "log", "arguments": {"level": "debug", "message": format!("call {id}")}}});
        client.send_raw(&call.to_string()).await;
        let mut heard = false;
        loop {
            let message = client.recv().await;
            if message["id"] == id {
                assert_eq!(text_of(&message), "alpha: logged", "{message}");
                return heard;
            }
            heard |= message["method"] == "notifications/message" && message["params"]["data"] == format!("call {id}");
        }
    }
    for (c, client) in clients.iter_mut().enumerate() {
        assert!(hears_debug(client, c as u64).await, "client {c} (both workers' sessions)");
    }
    // New lanes after a reconnect are set too.
    let reconnect = relay.line_client().await.call_tool("relay_reconnect_server", json!({"name": "alpha"})).await;
    assert!(reconnect["error"].is_null(), "{reconnect}");
    lane_connected(&relay, 2).await;
    for (c, client) in clients.iter_mut().enumerate() {
        assert!(hears_debug(client, 10 + c as u64).await, "client {c} after the reconnect");
    }
}
