//! Upstream aggregation, routing, collisions, re-listing, recovery and isolation, driven over
//! the newline transport against real fixture backends (WebSocket) and the published
//! server-everything (stdio and Streamable HTTP).

use std::time::{Duration, Instant};

use relay_tests::http_backend::{HttpBackend, VERBATIM};
use relay_tests::{Fixture, Relay, eventually, everything_js, everything_stdio_entry, text_of};
use serde_json::{Value, json};

/// A backend's result reaches the client as the backend wrote it (members in its order, its
/// spacing and number forms; only the id is the client's), and a result spread over lines is
/// still sent on one line.
#[tokio::test]
async fn a_backends_result_is_passed_on_as_it_was_written() {
    let backend = HttpBackend::start(0).await;
    let relay = Relay::start(&format!("backends:\n  - name: h\n    url: {}\n", backend.url())).await;
    relay.wait_ready("h").await;
    let mut client = relay.line_client().await;
    let call =
        |id: u64, tool: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool}});
    client.send_raw(&call(70, "verbatim").to_string()).await;
    let line = loop {
        let line = client.recv_line().await;
        if line.contains("\"id\":70") {
            break line;
        }
    };
    assert_eq!(line, format!(r#"{{"id":70,"jsonrpc":"2.0","result":{VERBATIM}}}"#));
    client.send_raw(&call(71, "pretty").to_string()).await;
    let reply = client.recv_response().await;
    assert_eq!(reply["id"], 71, "{reply}");
    assert_eq!(reply["result"], serde_json::from_str::<Value>(VERBATIM).unwrap(), "{reply}");
}

/// A backend that says its tools changed when they did not (a flood of such notices costs every
/// caller's catalog a rebuild) is listed again, and nothing is published.
#[tokio::test]
async fn a_list_changed_notice_with_nothing_changed_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backends = format!("backends:\n{}", relay_tests::stdio_fixture_entry("b", &[]));
    let relay = Relay::start_files(dir.path(), "", &backends, &[("RUST_LOG", "relay=debug")]).await;
    relay.wait_ready("b").await;
    let mut client = relay.line_client().await;
    let notice = json!({"method": "notifications/tools/list_changed"});
    client.call_tool("notify", notice).await;
    relay.wait_for_log("upstream list unchanged").await;
    assert!(!relay.log().contains("upstream list changed"), "published anyway");
}

/// A backend that announces changes many times a second is listed again once per gap for all
/// it announced meanwhile, not once per notice (a storm of notices over a large list took the
/// relay's CPU from every other backend's calls); a change announced within the gap is still
/// taken, at its end.
#[tokio::test]
async fn a_storm_of_list_changed_notices_is_listed_again_once_per_gap_and_no_change_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = Fixture::start("alpha").await;
    let backends = format!("backends:\n{}{}", relay_tests::stdio_fixture_entry("b", &[]), alpha.entry());
    let relay = Relay::start_files(dir.path(), "", &backends, &[("RUST_LOG", "relay=debug")]).await;
    relay.wait_ready("b").await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    let storm = json!({"method": "notifications/tools/list_changed", "n": 60});
    assert_eq!(text_of(&client.call_tool("notify", storm).await), "b: notified");
    relay.wait_for_log("upstream list unchanged").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let relists = relay.log().matches("upstream list unchanged").count();
    assert!(relists <= 3, "60 notices listed again {relists} times within 2.5 s");
    // Two changes in a row: the second comes within the gap the first one's re-list opened.
    for name in ["first_tool", "second_tool"] {
        let registered = client.call_tool("register_tool", json!({"name": name})).await;
        assert_eq!(text_of(&registered), format!("registered {name}"));
    }
    eventually("both new tools listed", || async {
        let names = relay.line_client().await.tool_names().await;
        (names.contains(&"first_tool".to_string()) && names.contains(&"second_tool".to_string())).then_some(())
    })
    .await;
}

/// A backend's log message about no client request reaches every session at its level named
/// by the backend that sent it (a backend cannot speak as another: `logger` is
/// `<backend>/<its logger>`), and with its data cut to 64 KiB (held for each session until it
/// reads, a backend's megabytes each held gigabytes).
#[tokio::test]
async fn a_backends_log_message_for_every_session_is_named_by_its_backend_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let backends = format!(
        "backends:\n{}{}",
        relay_tests::stdio_fixture_entry("good", &[]),
        relay_tests::stdio_fixture_entry("bad", &[])
    );
    let relay = Relay::start_files(dir.path(), "", &backends, &[]).await;
    relay.wait_ready("good").await;
    relay.wait_ready("bad").await;
    let mut listener = relay.line_client().await;
    assert_eq!(listener.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
    let message = json!({"level": "emergency", "logger": "good", "data": "x".repeat(200_000), "pad": "p".repeat(100_000), "_meta": {"m": "m".repeat(100_000)}});
    let notice = json!({"method": "notifications/message", "params": message, "after_ms": 300});
    assert_eq!(text_of(&relay.line_client().await.call_tool("bad__notify", notice).await), "bad: notified");
    let heard = loop {
        let heard = listener.recv().await;
        if heard["method"] == "notifications/message" && heard["params"]["level"] == "emergency" {
            break heard;
        }
    };
    assert_eq!(heard["params"]["logger"], "bad/good", "{}", heard["params"]["logger"]);
    let data = heard["params"]["data"].as_str().unwrap();
    assert!(data.len() < 70_000 && data.ends_with("bytes more)"), "{} bytes", data.len());
    let fields: Vec<&String> = heard["params"].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["data", "level", "logger"], "nothing else a backend put in reaches every session");
}

/// A Streamable HTTP backend's request on its GET stream is answered (a `ping` at once), not
/// left waiting for ever.
#[tokio::test]
async fn a_request_on_an_http_backends_get_stream_is_answered() {
    let backend = HttpBackend::start(0).await;
    let relay = Relay::start(&format!("backends:\n  - name: h\n    url: {}\n", backend.url())).await;
    relay.wait_ready("h").await;
    let mut client = relay.line_client().await;
    let said = eventually("the backend's GET stream", || async {
        let answer = relay.line_client().await.call_tool("ping_on_get", json!({})).await;
        Some(text_of(&answer)).filter(|said| said != "no GET stream")
    })
    .await;
    assert_eq!(said, "answered");
    assert_eq!(text_of(&client.call_tool("ok", json!({})).await), "fine");
}

/// What a Streamable HTTP backend sends on a call's own answer stream before the answer is
/// about that call: its log message goes to that call's client alone, even while other
/// clients' calls are in flight on the backend (which makes the relay unable to tell whose a
/// message is on the other transports), and never to a client with no call there.
#[tokio::test]
async fn a_log_message_on_a_calls_own_http_stream_reaches_that_caller_alone() {
    let backend = HttpBackend::start(0).await;
    let relay = Relay::start(&format!("backends:\n  - name: h\n    url: {}\n", backend.url())).await;
    relay.wait_ready("h").await;
    let (mut alice, mut bob, mut carol) =
        (relay.line_client().await, relay.line_client().await, relay.line_client().await);
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(client.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
    }
    // Bob's call is in flight on the backend while alice's runs.
    bob.send_raw(&json!({"jsonrpc": "2.0", "id": 100, "method": "tools/call", "params": {"name": "slow"}}).to_string())
        .await;
    eventually("bob's call reaches the backend", || async { (backend.calls_of("slow") == 1).then_some(()) }).await;
    let call = json!({"jsonrpc": "2.0", "id": 100, "method": "tools/call", "params": {"name": "logs", "arguments": {"ssn": "alice-222"}}});
    alice.send_raw(&call.to_string()).await;
    let mut before_answer = Vec::new();
    let answer = loop {
        let message = alice.recv().await;
        if message.get("id").is_some() {
            break message;
        }
        before_answer.push(message);
    };
    assert_eq!(text_of(&answer), "logged", "{answer}");
    assert!(
        before_answer
            .iter()
            .any(|m| m["method"] == "notifications/message" && m["params"]["data"]["ssn"] == "alice-222"),
        "alice's own log message, before her answer: {before_answer:?}"
    );
    // Bob (a call in flight) and carol (none) get to their answers without it.
    let mut seen = Vec::new();
    loop {
        let message = bob.recv().await;
        if message["id"] == 100 {
            assert_eq!(text_of(&message), "slow done");
            break;
        }
        seen.push(message);
    }
    carol.send_raw(&json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}).to_string()).await;
    while let message = carol.recv().await
        && message["id"] != 7
    {
        seen.push(message);
    }
    assert!(!seen.iter().any(|m| m.to_string().contains("alice-222")), "another client got alice's log: {seen:?}");
}

/// A backend has one log level for all the relay's clients: it is asked for the most verbose
/// level a live session asked for (not the last one asked), until that session ends, and each
/// client hears only what meets its own level, its own calls' log messages included.
#[tokio::test]
async fn each_session_hears_logs_at_its_own_level_and_backends_log_for_the_most_verbose() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let backend = HttpBackend::start(0).await;
    let entry = relay_tests::stdio_fixture_entry("s", &["--record", record.to_str().unwrap()]);
    let backends = format!("backends:\n{entry}  - name: h\n    url: {}\n", backend.url());
    let relay = Relay::start_files(dir.path(), relay_tests::TEST_RELAY_YAML, &backends, &[]).await;
    relay.wait_ready("s").await;
    relay.wait_ready("h").await;
    // The level of the last `logging/setLevel` the stdio backend received.
    let asked = || {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        let messages = text.lines().rev().filter_map(|line| serde_json::from_str::<Value>(line).ok());
        messages.filter(|m| m["method"] == "logging/setLevel").map(|m| m["params"]["level"].clone()).next()
    };
    let (mut alice, mut bob) = (relay.line_client().await, relay.line_client().await);
    assert_eq!(alice.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
    assert_eq!(bob.request("logging/setLevel", json!({"level": "error"})).await["result"], json!({}));
    assert_eq!(asked(), Some(json!("debug")), "bob's error does not silence the backend for alice");

    // The backend logs each `logs` call at info: alice hears hers, bob (at error) not his.
    /// How many log messages `client` hears before the answer to its `logs` call `id`.
    async fn heard(client: &mut relay_tests::LineClient, id: u64) -> usize {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "logs", "arguments": {"n": id}}});
        client.send_raw(&call.to_string()).await;
        let mut logs = 0;
        loop {
            let message = client.recv().await;
            if message["id"] == id {
                assert_eq!(text_of(&message), "logged", "{message}");
                return logs;
            }
            logs += usize::from(message["method"] == "notifications/message");
        }
    }
    assert_eq!(heard(&mut alice, 1).await, 1, "alice asked for debug");
    assert_eq!(heard(&mut bob, 2).await, 0, "bob asked for error; the message is info");

    // With alice gone, error is the most verbose level held.
    drop(alice);
    eventually("the backend asked for error once alice's session ended", || async {
        (asked() == Some(json!("error"))).then_some(())
    })
    .await;
}

/// A WebSocket (or stdio) backend's log message names no request: while calls of two clients run on it, it
/// may be about either, and went to every session whose level it met (one client's call's
/// log, with whatever it said, shown to another). It goes to none now.
#[tokio::test]
async fn a_log_message_while_two_clients_calls_run_is_shown_to_neither() {
    let backend = relay_tests::Fixture::start_on("w", 0, &["--logging"]).await;
    let relay = Relay::start(&format!("backends:\n{}", backend.entry())).await;
    relay.wait_ready("w").await;
    let (mut alice, mut bob) = (relay.line_client().await, relay.line_client().await);
    assert_eq!(alice.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
    let slow = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 1500}}});
    alice.send_raw(&slow.to_string()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "log", "arguments": {"level": "info", "message": "bob's private detail"}}});
    bob.send_raw(&log.to_string()).await;
    assert!(bob.recv_response().await.get("result").is_some());
    let mut heard = Vec::new();
    loop {
        let message = alice.recv().await;
        if message["id"] == 1 {
            break;
        }
        heard.push(message);
    }
    assert!(heard.iter().all(|m| m["method"] != "notifications/message"), "alice heard bob's call's log: {heard:?}");
}

/// A backend added while the relay runs starts at the log level the sessions hold (it was
/// asked only when a level changed, so it never was).
#[tokio::test]
async fn a_backend_added_later_starts_at_the_level_the_sessions_hold() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let first = relay_tests::stdio_fixture_entry("a", &[]);
    let relay = Relay::start_files(dir.path(), relay_tests::TEST_RELAY_YAML, &format!("backends:\n{first}"), &[]).await;
    relay.wait_ready("a").await;
    let mut client = relay.line_client().await;
    assert_eq!(client.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
    let second = relay_tests::stdio_fixture_entry("b", &["--record", record.to_str().unwrap()]);
    std::fs::write(relay.backends_path(), format!("backends:\n{first}{second}")).unwrap();
    relay.wait_ready("b").await;
    let received = std::fs::read_to_string(&record).unwrap_or_default();
    let levels: Vec<Value> = received
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["method"] == "logging/setLevel")
        .map(|m| m["params"]["level"].clone())
        .collect();
    assert_eq!(levels, [json!("debug")], "{received}");
}

/// A `logging/setLevel` cancelled while the backends are asked (its client went away; this
/// backend never answers it) leaves the level unknown, not taken for asked: the next session
/// asking for the first level again has it sent.
#[tokio::test]
async fn a_level_change_cut_short_is_not_taken_for_asked() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let entry = relay_tests::stdio_fixture_entry("s", &["--hang-setlevel", "--record", record.to_str().unwrap()]);
    let relay = Relay::start_files(dir.path(), relay_tests::TEST_RELAY_YAML, &format!("backends:\n{entry}"), &[]).await;
    relay.wait_ready("s").await;
    let levels = || {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        let messages = text.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok());
        messages.filter(|m| m["method"] == "logging/setLevel").map(|m| m["params"]["level"].clone()).collect::<Vec<_>>()
    };
    // debug, asked (unanswered: 2 s), by a session that then ends.
    let mut first = relay.line_client().await;
    first.request("logging/setLevel", json!({"level": "debug"})).await;
    drop(first);
    // error, by a client that goes away while the backend is being asked.
    let mut second = relay.line_client().await;
    second
        .send_raw(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "error"}}).to_string(),
        )
        .await;
    eventually("error asked", || async { (levels().len() == 2).then_some(()) }).await;
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // debug again: the backend is at error, and is asked.
    let mut third = relay.line_client().await;
    third.request("logging/setLevel", json!({"level": "debug"})).await;
    assert_eq!(levels(), [json!("debug"), json!("error"), json!("debug")]);
}

/// What the backend's session holds for the relay is made again on each new connection: after
/// a reconnect the backend is subscribed again (its subscribers go on hearing of updates) and
/// at the level set; a subscription ends upstream when its last subscriber's session ends,
/// unsubscribed or not, and a session subscribing twice counts once.
#[tokio::test]
async fn subscriptions_and_the_log_level_survive_a_reconnect_and_end_with_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let entry = relay_tests::stdio_fixture_entry(
        "s",
        &["--record", record.to_str().unwrap(), "--resources", "file:///doc.txt"],
    );
    let relay = Relay::start_files(dir.path(), relay_tests::TEST_RELAY_YAML, &format!("backends:\n{entry}"), &[]).await;
    relay.wait_ready("s").await;
    // What the backend process now running received (each start writes its record anew).
    let received = |method: &'static str| {
        let record = record.clone();
        move || {
            let text = std::fs::read_to_string(&record).unwrap_or_default();
            let messages = text.lines().skip(1).filter_map(|line| serde_json::from_str::<Value>(line).ok());
            messages.filter(|message| message["method"] == method).count()
        }
    };
    let (subscribes, unsubscribes, levels) =
        (received("resources/subscribe"), received("resources/unsubscribe"), received("logging/setLevel"));
    let mut client = relay.line_client().await;
    for _ in 0..2 {
        let subscribed = client.request("resources/subscribe", json!({"uri": "file:///doc.txt"})).await;
        assert_eq!(subscribed["result"], json!({}), "{subscribed}");
    }
    assert_eq!(client.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
    assert_eq!((subscribes(), levels()), (1, 1));

    // A new backend process (its record starts again) is subscribed and set again.
    let reconnect = client.call_tool("relay_reconnect_server", json!({"name": "s"})).await;
    assert!(reconnect["error"].is_null(), "{reconnect}");
    // Ready again once the new connection's handshake, which makes them again, is done.
    eventually("connected again", || async {
        let status = relay.status().await;
        (status["backends"][0]["connects"] == 2 && status["backends"][0]["state"] == "ready").then_some(())
    })
    .await;
    assert_eq!((subscribes(), levels()), (1, 1), "subscribed and set again on the new connection");
    // Unsubscribed once, by the session's end (the client only goes away): the subscription
    // was counted once.
    drop(client);
    eventually("unsubscribed when its session ended", || async { (unsubscribes() == 1).then_some(()) }).await;
}

/// A subscription ends where it was made: a collision that appeared since (another backend now
/// lists the same URI, and both are `relay://` URIs) left the client's `resources/unsubscribe`
/// failing `-32002` and the backend subscribed for good.
#[tokio::test]
async fn a_subscription_ends_at_its_backend_after_a_collision_renamed_its_uri() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let entry = |name: &str, record: Option<&std::path::Path>| {
        let mut args = vec!["--resources", "file:///doc.txt"];
        if let Some(record) = record {
            args.extend(["--record", record.to_str().unwrap()]);
        }
        relay_tests::stdio_fixture_entry(name, &args)
    };
    let backends = format!("backends:\n{}", entry("s", Some(&record)));
    let relay = Relay::start_files(dir.path(), relay_tests::TEST_RELAY_YAML, &backends, &[]).await;
    relay.wait_ready("s").await;
    let unsubscribes = || {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        text.lines().filter(|line| line.contains("\"resources/unsubscribe\"")).count()
    };
    let mut client = relay.line_client().await;
    let subscribed = client.request("resources/subscribe", json!({"uri": "file:///doc.txt"})).await;
    assert_eq!(subscribed["result"], json!({}), "{subscribed}");

    let both = format!("backends:\n{}{}", entry("s", Some(&record)), entry("t", None));
    relay_tests::replace_file(&dir.path().join("backends.yaml"), both.as_bytes());
    eventually("the collision listed", || async {
        let listed = relay.line_client().await.request("resources/list", json!({})).await;
        listed.to_string().contains("relay://t/").then_some(())
    })
    .await;
    let unsubscribed = client.request("resources/unsubscribe", json!({"uri": "file:///doc.txt"})).await;
    assert_eq!(unsubscribed["result"], json!({}), "{unsubscribed}");
    eventually("unsubscribed at s", || async { (unsubscribes() == 1).then_some(()) }).await;
}

/// A backend removed and added again (a file briefly emptied, `relay_remove_server` then
/// `relay_add_server`) is subscribed again to what its clients still subscribe to; one renamed
/// is subscribed by the next subscriber, and the earlier subscriber's unsubscribe succeeds.
/// Before, the relay still counted the subscription as made: later subscribers were told
/// "subscribed" and the new process never was, and unsubscribing failed (`backend s is gone`).
#[tokio::test]
async fn a_backend_removed_and_added_again_or_renamed_is_subscribed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (first, again, renamed) = (dir.path().join("first"), dir.path().join("again"), dir.path().join("renamed"));
    let entry = |name: &str, record: &std::path::Path| {
        relay_tests::stdio_fixture_entry(
            name,
            &["--resources", "file:///doc.txt,file:///other.txt", "--record", record.to_str().unwrap()],
        )
    };
    let file = dir.path().join("backends.yaml");
    let relay = Relay::start_files(
        dir.path(),
        relay_tests::TEST_RELAY_YAML,
        &format!("backends:\n{}", entry("s", &first)),
        &[],
    )
    .await;
    relay.wait_ready("s").await;
    let subscribes = |record: &std::path::Path| {
        let text = std::fs::read_to_string(record).unwrap_or_default();
        text.lines().filter(|line| line.contains("\"resources/subscribe\"")).count()
    };
    let mut early = relay.line_client().await;
    let subscribe = json!({"uri": "file:///doc.txt"});
    assert_eq!(early.request("resources/subscribe", subscribe.clone()).await["result"], json!({}));
    let other = json!({"uri": "file:///other.txt"});
    assert_eq!(early.request("resources/subscribe", other.clone()).await["result"], json!({}));
    assert_eq!(subscribes(&first), 2);

    relay_tests::replace_file(&file, b"backends: []\n");
    eventually("s removed", || async { relay.backend_state("s").await.is_none().then_some(()) }).await;
    // Unsubscribed while its backend is away: not made again when it comes back.
    assert_eq!(early.request("resources/unsubscribe", other).await["result"], json!({}));
    relay_tests::replace_file(&file, format!("backends:\n{}", entry("s", &again)).as_bytes());
    relay.wait_ready("s").await;
    eventually("the process added again is subscribed", || async { (subscribes(&again) == 1).then_some(()) }).await;
    assert!(!std::fs::read_to_string(&again).unwrap().contains("other.txt"), "subscribed to what nobody holds");

    relay_tests::replace_file(&file, format!("backends:\n{}", entry("t", &renamed)).as_bytes());
    relay.wait_ready("t").await;
    let mut late = relay.line_client().await;
    assert_eq!(late.request("resources/subscribe", subscribe.clone()).await["result"], json!({}));
    assert_eq!(subscribes(&renamed), 1, "the renamed backend is subscribed by the next subscriber");
    let unsubscribed = early.request("resources/unsubscribe", subscribe).await;
    assert_eq!(unsubscribed["result"], json!({}), "{unsubscribed}");
}

/// An edit of a backend's entry (here its record file and call timeout) replaces its upstream:
/// that cut the calls running on it (`backend s is no longer configured`) and the new one
/// knew none of the subscriptions the relay had made, so their clients heard no more updates
/// and later subscribers were never subscribed upstream. Now its calls finish and it is
/// subscribed again.
#[tokio::test]
async fn an_edited_backend_entry_finishes_its_calls_and_keeps_its_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("before"), dir.path().join("after"));
    let entry = |record: &std::path::Path| {
        relay_tests::stdio_fixture_entry("s", &["--record", record.to_str().unwrap(), "--resources", "file:///doc.txt"])
    };
    let relay =
        Relay::start_files(dir.path(), relay_tests::TEST_RELAY_YAML, &format!("backends:\n{}", entry(&before)), &[])
            .await;
    relay.wait_ready("s").await;
    let mut subscriber = relay.line_client().await;
    let subscribed = subscriber.request("resources/subscribe", json!({"uri": "file:///doc.txt"})).await;
    assert_eq!(subscribed["result"], json!({}), "{subscribed}");
    let mut caller = relay.line_client().await;
    let slow = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 1500}}});
    caller.send_raw(&slow.to_string()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let edited = format!("backends:\n{}    call_timeout_secs: 30\n", entry(&after));
    relay_tests::replace_file(&relay.backends_path(), edited.as_bytes());
    assert_eq!(text_of(&caller.recv_response().await), "s: slow", "the call running on it finishes");
    eventually("the new backend process is subscribed", || async {
        let text = std::fs::read_to_string(&after).unwrap_or_default();
        text.contains("resources/subscribe").then_some(())
    })
    .await;
}

/// A backend tells of updates to its own resources only: one naming another backend's
/// resource reached that resource's subscribers as if its owner had sent it.
#[tokio::test]
async fn a_backend_cannot_announce_updates_of_another_backends_resource() {
    only_the_owners_update_is_heard(&["--resources", "file:///alpha-doc"], &[], "file:///alpha-doc").await;
}

/// Of the templates matching a URI, the best (longest) match's backend owns it: another's
/// broader template (`file:///{path}` matches every file URI) does not make it the owner.
#[tokio::test]
async fn a_broader_template_does_not_own_another_backends_resources() {
    let (alpha, evil) = (["--templates", "file:///alpha/{name}"], ["--templates", "file:///{path}"]);
    only_the_owners_update_is_heard(&alpha, &evil, "file:///alpha/doc").await;
}

/// A read goes to the best-matching template's backend; the next is asked only when that one
/// says it does not have the resource. A backend that fails otherwise answers the read: the
/// URI reaches no backend that was not chosen for it.
#[tokio::test]
async fn a_template_read_goes_on_to_the_next_backend_only_when_the_first_has_no_such_resource() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("broad.record");
    let backends = format!(
        "backends:\n{}{}{}",
        relay_tests::stdio_fixture_entry("deep", &["--templates", "mem://deep/{id}", "--fail-read", "broken"]),
        relay_tests::stdio_fixture_entry("other", &["--templates", "mem://other/{id}", "--fail-read", "missing"]),
        relay_tests::stdio_fixture_entry("broad", &["--templates", "mem://{id}", "--record", record.to_str().unwrap()]),
    );
    let relay = Relay::start(&backends).await;
    for name in ["deep", "other", "broad"] {
        relay.wait_ready(name).await;
    }
    let mut client = relay.line_client().await;
    let failed = client.request("resources/read", json!({"uri": "mem://deep/q"})).await;
    assert!(failed["error"]["message"].as_str().unwrap_or_default().contains("broken"), "{failed}");
    let read = client.request("resources/read", json!({"uri": "mem://other/q"})).await;
    assert_eq!(read["result"]["contents"][0]["text"], "broad: mem://other/q", "{read}");
    let seen = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(!seen.contains("mem://deep/q"), "the broad backend was sent a URI another was chosen for: {seen}");
}

/// Backends `alpha` (which owns `uri`) and `evil` (started with these flags) both announce an
/// update of `uri`: its subscriber hears one, alpha's.
async fn only_the_owners_update_is_heard(alpha: &[&str], evil: &[&str], uri: &str) {
    let alpha = relay_tests::stdio_fixture_entry("alpha", alpha);
    let evil = relay_tests::stdio_fixture_entry("evil", evil);
    let relay = Relay::start(&format!("backends:\n{alpha}{evil}")).await;
    relay.wait_ready("alpha").await;
    relay.wait_ready("evil").await;
    let mut subscriber = relay.line_client().await;
    let subscribed = subscriber.request("resources/subscribe", json!({"uri": uri})).await;
    assert_eq!(subscribed["result"], json!({}), "{subscribed}");
    let mut other = relay.line_client().await;
    let updated = json!({"method": "notifications/resources/updated", "params": {"uri": uri}});
    assert_eq!(text_of(&other.call_tool("evil__notify", updated.clone()).await), "evil: notified");
    assert_eq!(text_of(&other.call_tool("alpha__notify", updated).await), "alpha: notified");
    let first = subscriber.recv().await;
    assert_eq!(first["method"], "notifications/resources/updated", "{first}");
    let second = tokio::time::timeout(std::time::Duration::from_millis(500), subscriber.recv()).await;
    assert!(second.is_err(), "one update (alpha's), not evil's too: {second:?}");
}

/// Sessions subscribing to a URI share one upstream subscription. One that came while the
/// first session's was being made was told it was subscribed at once, and when that failed it
/// stayed counted: it heard no updates, and neither did any later subscriber (never sent on).
#[tokio::test]
async fn a_subscription_that_fails_upstream_fails_every_session_waiting_on_it() {
    let entry =
        relay_tests::stdio_fixture_entry("s", &["--resources", "file:///doc.txt", "--fail-subscribe-ms", "1000"]);
    let relay = Relay::start(&format!("backends:\n{entry}")).await;
    relay.wait_ready("s").await;
    let subscribe =
        json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "file:///doc.txt"}});
    let (mut first, mut second) = (relay.line_client().await, relay.line_client().await);
    first.send_raw(&subscribe.to_string()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    second.send_raw(&subscribe.to_string()).await;
    let (first, second) = (first.recv_response().await, second.recv_response().await);
    assert!(first["error"].is_object(), "{first}");
    assert!(second["error"].is_object(), "not subscribed: the backend refused: {second}");
    let mut third = relay.line_client().await;
    let started = std::time::Instant::now();
    let third = third.request("resources/subscribe", json!({"uri": "file:///doc.txt"})).await;
    assert!(
        third["error"].is_object() && started.elapsed() >= std::time::Duration::from_millis(900),
        "asked upstream again: {third}"
    );
}

#[tokio::test]
async fn line_to_websocket_aggregates_and_prefixes_collisions() {
    let (alpha, beta) = (Fixture::start("alpha").await, Fixture::start("beta").await);
    let relay = Relay::start(&format!("backends:\n{}{}", alpha.entry(), beta.entry())).await;
    relay.wait_ready("alpha").await;
    relay.wait_ready("beta").await;
    let mut client = relay.line_client().await;
    let names = eventually("both tool lists", || async {
        let mut c = relay.line_client().await;
        let names = c.tool_names().await;
        names.contains(&"beta__echo".to_string()).then_some(names)
    })
    .await;
    // Every fixture tool collides, so every copy is prefixed; built-ins keep their names.
    for expected in ["relay_get_status", "alpha__echo", "beta__echo", "alpha__add", "beta__add"] {
        assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
    }
    assert!(!names.contains(&"echo".to_string()), "a colliding tool kept its bare name: {names:?}");
    assert_eq!(text_of(&client.call_tool("alpha__echo", json!({"message": "hi"})).await), "alpha: hi");
    assert_eq!(text_of(&client.call_tool("beta__echo", json!({"message": "hi"})).await), "beta: hi");
}

#[tokio::test]
async fn line_to_websocket_unique_names_stay_and_list_changed_is_followed() {
    let alpha = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", alpha.entry())).await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("add", json!({"a": 2, "b": 3})).await), "5");
    client
        .send_raw(
            &json!({"jsonrpc": "2.0", "id": "reg", "method": "tools/call",
                "params": {"name": "register_tool", "arguments": {"name": "fresh_tool"}}})
            .to_string(),
        )
        .await;
    // The relay re-lists on notifications/tools/list_changed and tells its own clients. The call
    // rides a worker's own connection (a lane) and the re-list the supervisor's, so the response
    // and the notification may come in either order; both must come.
    let (mut answered, mut notified) = (false, false);
    while !(answered && notified) {
        let message = client.recv().await;
        match message.get("id") {
            Some(id) => {
                assert_eq!(id, "reg", "{message}");
                answered = true;
            }
            None => {
                assert_eq!(message["method"], "notifications/tools/list_changed", "{message}");
                notified = true;
            }
        }
    }
    let names = client.tool_names().await;
    assert!(names.contains(&"fresh_tool".to_string()), "{names:?}");
    assert_eq!(text_of(&client.call_tool("fresh_tool", json!({})).await), "alpha: fresh_tool");
}

#[tokio::test]
async fn line_to_websocket_call_survives_backend_restart() {
    let mut alpha = Fixture::start("alpha").await;
    let port = alpha.port;
    let relay = Relay::start(&format!("backends:\n{}", alpha.entry())).await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    client
        .send_raw(
            &json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"ms": 1500, "message": "finished"}}})
            .to_string(),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    alpha.kill().await; // the backend dies mid-call
    relay.wait_for_log("connection lost mid-request").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _restarted = Fixture::start_on("alpha", port, &[]).await;
    let response = client.recv_response().await;
    assert_eq!(response["id"], 77);
    assert_eq!(text_of(&response), "alpha: finished", "{response}");
    let status = relay.status().await;
    assert!(status["backends"][0]["connects"].as_u64().unwrap() >= 2, "{status}");
}

#[tokio::test]
async fn line_to_websocket_call_past_deadline_gets_clear_error() {
    let alpha = Fixture::start("alpha").await;
    let backends = format!("backends:\n{}    call_timeout_secs: 1.5\n", alpha.entry());
    let relay = Relay::start(&backends).await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    // A backend that never answers this call (a dead one fails at once: faults.rs).
    let started = Instant::now();
    let response = client.call_tool("slow", json!({"ms": 30_000, "message": "late"})).await;
    let error = &response["error"];
    assert_eq!(error["code"], -32001, "{response}");
    assert_eq!(error["message"], "backend alpha did not answer within 1.5s", "the backend is named once");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn line_to_websocket_hanging_and_garbage_backends_are_isolated() {
    let (good, bad) = (Fixture::start("good").await, Fixture::start("bad").await);
    let stuck = Fixture::start_on("stuck", 0, &["--hang-initialize"]).await;
    let backends = format!("backends:\n{}{}    call_timeout_secs: 1\n{}", good.entry(), bad.entry(), stuck.entry());
    let relay = Relay::start_with(
        "upstream:\n  connect_timeout_secs: 1\n  backoff_initial_ms: 50\n  backoff_max_ms: 500\n",
        &backends,
        &[],
    )
    .await;
    relay.wait_ready("good").await;
    relay.wait_ready("bad").await;
    let mut client = relay.line_client().await;
    // A hang and a garbage answer on `bad` run concurrently with healthy calls on `good`.
    client
        .send_raw(&json!({"jsonrpc":"2.0","id":"h","method":"tools/call","params":{"name":"bad__hang"}}).to_string())
        .await;
    client
        .send_raw(&json!({"jsonrpc":"2.0","id":"g","method":"tools/call","params":{"name":"bad__garbage"}}).to_string())
        .await;
    let started = Instant::now();
    assert_eq!(text_of(&client.call_tool("good__echo", json!({"message": "still here"})).await), "good: still here");
    assert!(started.elapsed() < Duration::from_millis(900), "the healthy backend waited for the bad one");
    let mut errors = vec![client.recv_response().await, client.recv_response().await];
    errors.sort_by_key(|e| e["id"].as_str().unwrap().to_owned());
    for error in &errors {
        assert_eq!(error["error"]["code"], -32001, "{error}");
    }
    relay.wait_for_log("not JSON-RPC").await;
    // The backend whose handshake hangs never becomes ready and says why; the others serve.
    let status = relay.status().await;
    let stuck = status["backends"].as_array().unwrap().iter().find(|b| b["name"] == "stuck").unwrap();
    assert_ne!(stuck["state"], "ready");
    assert!(stuck["last_error"].as_str().unwrap().contains("handshake"), "{stuck}");
    assert_eq!(text_of(&client.call_tool("good__add", json!({"a": 1, "b": 1})).await), "2");
}

#[tokio::test]
async fn line_to_stdio_everything_lists_and_calls() {
    let relay = Relay::start(&format!("backends:\n{}", everything_stdio_entry("everything"))).await;
    relay.wait_ready("everything").await;
    let mut client = relay.line_client().await;
    let names = client.tool_names().await;
    assert!(names.contains(&"echo".to_string()) && names.contains(&"get-sum".to_string()), "{names:?}");
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "via stdio"})).await), "Echo: via stdio");
    let sum = client.call_tool("get-sum", json!({"a": 20, "b": 22})).await;
    assert!(text_of(&sum).contains("42"), "{sum}");
}

#[tokio::test]
async fn line_to_stdio_process_is_restarted_after_it_dies() {
    let relay = Relay::start(&format!("backends:\n{}", everything_stdio_entry("everything"))).await;
    relay.wait_ready("everything").await;
    let pid = child_pid_running(&everything_js().display().to_string(), &relay.dir);
    let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
    // The supervisor notices, starts a new process and completes a second handshake.
    eventually("a second stdio connection", || async {
        let status = relay.status().await;
        let backend = &status["backends"][0];
        (backend["connects"].as_u64() >= Some(2) && backend["state"] == "ready").then_some(())
    })
    .await;
    assert_ne!(child_pid_running(&everything_js().display().to_string(), &relay.dir), pid);
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "again"})).await), "Echo: again");
}

#[tokio::test]
async fn line_to_http_everything_lists_and_calls() {
    let port = free_port();
    let mut server = tokio::process::Command::new("node")
        .arg(everything_js())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("server-everything http up", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
    })
    .await;
    let relay = Relay::start(&format!("backends:\n  - name: web\n    url: http://127.0.0.1:{port}/mcp\n")).await;
    relay.wait_ready("web").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "via http"})).await), "Echo: via http");
    let status = relay.status().await;
    assert_eq!(status["backends"][0]["transport"], "http");
    assert!(status["backends"][0]["tools"].as_u64().unwrap() >= 10, "{status}");
    server.kill().await.unwrap();
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The pid of the process whose command line contains `needle` and whose parent is a relay
/// started from `dir`.
fn child_pid_running(needle: &str, dir: &std::path::Path) -> u32 {
    let relay_config = dir.join("relay.yaml").display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
        if !cmdline.contains(needle) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1)).unwrap_or("0");
        let parent = std::fs::read_to_string(format!("/proc/{ppid}/cmdline")).unwrap_or_default().replace('\0', " ");
        if parent.contains(&relay_config) {
            return pid;
        }
    }
    panic!("no process running {needle} under the relay in {}", dir.display());
}

/// A backend removed or renamed in the file lets the calls in flight on it finish (as a changed
/// entry does), while new calls go by the file as it is now: an HTTP backend's session was
/// ended (`DELETE`) under them, which a server answers by ending the session's requests, and
/// they failed `-32000 backend h is no longer configured`: a rename an operator made under
/// traffic failed them.
#[tokio::test]
async fn a_backend_renamed_or_removed_under_a_call_lets_the_call_finish() {
    let dir = tempfile::tempdir().unwrap();
    let backend = HttpBackend::start(0).await;
    let entry = |name: &str| format!("backends:\n  - name: {name}\n    url: {}\n", backend.url());
    let file = dir.path().join("backends.yaml");
    let relay = Relay::start_files(dir.path(), relay_tests::TEST_RELAY_YAML, &entry("h"), &[]).await;
    relay.wait_ready("h").await;
    let slow_call =
        |mut client: relay_tests::LineClient| tokio::spawn(async move { client.call_tool("slow", json!({})).await });
    let renamed = slow_call(relay.line_client().await);
    eventually("the call reaches the backend", || async { (backend.calls_of("slow") == 1).then_some(()) }).await;
    relay_tests::replace_file(&file, entry("g").as_bytes());
    relay.wait_ready("g").await;
    let answer = renamed.await.unwrap();
    assert_eq!(text_of(&answer), "slow done", "{answer}");
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("ok", json!({})).await), "fine", "g serves now");

    let removed = slow_call(relay.line_client().await);
    eventually("the call reaches the backend", || async { (backend.calls_of("slow") == 2).then_some(()) }).await;
    relay_tests::replace_file(&file, b"backends: []\n");
    eventually("g removed", || async { relay.backend_state("g").await.is_none().then_some(()) }).await;
    let answer = removed.await.unwrap();
    assert_eq!(text_of(&answer), "slow done", "{answer}");
    let refused = client.call_tool("ok", json!({})).await;
    assert!(refused.get("error").is_some(), "no backend serves ok now: {refused}");
}
