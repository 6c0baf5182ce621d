//! Streamable HTTP sessions shared through Redis: a session one instance opened is served by
//! another without a new `initialize` (after a blue/green switch, or behind round-robin), only
//! with the credential it was opened with, and a session ended on one instance is refused on
//! every one. Behind the shipped HAProxy configuration (round-robin, no stick table needed),
//! one session alternates between two relays.

use std::path::Path;
use std::time::Duration;

use relay_tests::haproxy::Haproxy;
use relay_tests::{RedisServer, Relay, copy_plugin, sse_messages, stdio_fixture_entry, text_of};
use serde_json::{Value, json};

/// relay.yaml on `redis` with token-auth (alice and bob), trusting HAProxy's PROXY headers.
fn yaml(dir: &Path, redis: &RedisServer) -> String {
    let auth = copy_plugin(dir, "token_auth");
    format!(
        "listen: {{trusted_proxies: [127.0.0.1]}}\nkv: {{backend: redis, url: '{}', namespace: shared, timeout_ms: 200}}\nplugin_cache_dir: cache\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config:\n      tokens:\n        - {{token: ALICE-TOKEN-1, principal: alice}}\n        - {{token: BOB-TOKEN-2, principal: bob}}\n",
        redis.url(),
        auth.display()
    )
}

async fn relay(dir: &Path, redis: &RedisServer, colour: &str, port: u16) -> Relay {
    relay_with(dir, &yaml(dir, redis), colour, port).await
}

async fn relay_with(dir: &Path, yaml: &str, colour: &str, port: u16) -> Relay {
    let backends = format!("backends:\n{}", stdio_fixture_entry("b", &[]));
    let port = port.to_string();
    let mut relay =
        Relay::start_files(dir, yaml, &backends, &[("RELAY_INSTANCE", colour), ("RELAY_PORT", &port)]).await;
    relay.token = Some("ALICE-TOKEN-1".into());
    relay.wait_ready("b").await;
    relay
}

/// Blue and green on `redis`, each in a directory of its own (returned, to be kept), with the
/// idle timeout `idle_secs` when given (the relays look after their records every quarter of it).
async fn blue_and_green(redis: &RedisServer, idle_secs: Option<u64>) -> ([tempfile::TempDir; 2], Relay, Relay) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let yaml_in = |dir: &Path| match idle_secs {
        Some(secs) => format!("limits: {{idle_timeout_secs: {secs}}}\n{}", yaml(dir, redis)),
        None => yaml(dir, redis),
    };
    let blue = relay_with(dirs[0].path(), &yaml_in(dirs[0].path()), "blue", 0).await;
    let green = relay_with(dirs[1].path(), &yaml_in(dirs[1].path()), "green", 0).await;
    (dirs, blue, green)
}

fn post(url: &str, token: &str, session: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
    relay_tests::mcp_post(&reqwest::Client::new(), url, body, session).bearer_auth(token)
}

async fn initialize(url: &str, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}}, "clientInfo": {"name": "mover", "version": "1"}}});
    let response = post(url, token, None, &init).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

/// A call on `session` at `url`: its HTTP status and JSON-RPC answer.
async fn call(url: &str, token: &str, session: &str, id: u64, method: &str, params: Value) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let response = post(url, token, Some(session), &body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let reply = sse_messages(&text).pop().or_else(|| serde_json::from_str(&text).ok()).unwrap_or(json!({"body": text}));
    (status, reply)
}

/// `DELETE` of `session` at `url`: its HTTP status.
async fn delete(url: &str, token: &str, session: &str) -> u16 {
    let response = reqwest::Client::new().delete(url).bearer_auth(token).header("mcp-session-id", session).send();
    response.await.unwrap().status().as_u16()
}

async fn echo(url: &str, token: &str, session: &str, id: u64) -> (u16, Value) {
    call(url, token, session, id, "tools/call", json!({"name": "echo", "arguments": {"message": "hi"}})).await
}

#[tokio::test]
async fn a_session_opened_on_one_instance_is_served_by_another_with_its_own_credential_only() {
    let redis = RedisServer::start().await;
    let (_dirs, blue, green) = blue_and_green(&redis, None).await;
    let (on_blue, on_green) = (blue.http("/mcp"), green.http("/mcp"));

    let session = initialize(&on_blue, "ALICE-TOKEN-1").await;
    let (status, reply) = echo(&on_blue, "ALICE-TOKEN-1", &session, 1).await;
    assert_eq!((status, text_of(&reply)), (200, "b: hi".to_owned()), "{reply}");
    // Redis holds a digest of the id, never the id a client presents.
    let keys = redis.cli(&["--scan", "--pattern", "shared:relay.session:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(!keys.contains(&session), "{keys}");

    // Someone else's token on the moved session: 401, and green does not take it up.
    let (status, reply) = echo(&on_green, "BOB-TOKEN-2", &session, 2).await;
    assert_eq!(status, 401, "{reply}");
    // No token at all: refused before the body is read.
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
    let anonymous = reqwest::Client::new()
        .post(&on_green)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-session-id", &session)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Alice's own token: green serves the session without a new initialize, log level and all.
    let (status, reply) = echo(&on_green, "ALICE-TOKEN-1", &session, 4).await;
    assert_eq!((status, text_of(&reply)), (200, "b: hi".to_owned()), "{reply}");
    green.wait_for_log("session taken up from another instance").await;
    let (status, reply) =
        call(&on_green, "ALICE-TOKEN-1", &session, 5, "logging/setLevel", json!({"level": "error"})).await;
    assert_eq!(status, 200, "{reply}");
    // What green changed, blue sees (the record is rewritten).
    let record = redis.cli(&["--scan", "--pattern", "shared:relay.session:*"]);
    let stored = redis.cli(&["get", record.trim()]);
    let stored: Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(stored["log_level"], 4, "{stored}");
    assert_eq!(stored["principal"], "alice", "{stored}");
    assert!(stored["capabilities"].get("elicitation").is_some(), "{stored}");

    // Blue goes away: green goes on serving.
    drop(blue);
    let (status, reply) = echo(&on_green, "ALICE-TOKEN-1", &session, 6).await;
    assert_eq!(status, 200, "{reply}");

    // DELETE on one instance ends the session for every instance.
    let third_dir = tempfile::tempdir().unwrap();
    let third = relay(third_dir.path(), &redis, "third", 0).await;
    let (status, _) = echo(&third.http("/mcp"), "ALICE-TOKEN-1", &session, 7).await;
    assert_eq!(status, 200);
    assert_eq!(delete(&on_green, "ALICE-TOKEN-1", &session).await, 204);
    let (status, reply) = echo(&third.http("/mcp"), "ALICE-TOKEN-1", &session, 8).await;
    assert_eq!(status, 404, "the session ended on green is refused on the third instance: {reply}");
    let (status, _) = echo(&on_green, "ALICE-TOKEN-1", &session, 9).await;
    assert_eq!(status, 404);
    // What is left is the end marker (a record simply gone would be written again).
    let marker = redis.cli(&["--scan", "--pattern", "shared:relay.session:*"]);
    assert_eq!(redis.cli(&["get", marker.trim()]), "ended");
}

/// The end of a session no other instance took up is recorded for seconds, not for twice the
/// idle timeout: a client opening and ending sessions in a loop does not fill Redis with end
/// markers. A session another instance took up keeps its marker as long as that copy may live,
/// and that copy ends.
#[tokio::test]
async fn only_the_end_of_a_session_another_instance_took_up_is_recorded_for_long() {
    let redis = RedisServer::start().await;
    let (_dirs, blue, green) = blue_and_green(&redis, None).await;
    let (on_blue, on_green) = (blue.http("/mcp"), green.http("/mcp"));
    let markers = || {
        let keys = redis.cli(&["--scan", "--pattern", "shared:relay.session:*"]);
        let ttl = |key: &str| redis.cli(&["pttl", key]).trim().parse::<i64>().unwrap();
        keys.lines().map(|key| (redis.cli(&["get", key]).trim().to_owned(), ttl(key))).collect::<Vec<_>>()
    };
    for _ in 0..20 {
        let session = initialize(&on_blue, "ALICE-TOKEN-1").await;
        assert_eq!(delete(&on_blue, "ALICE-TOKEN-1", &session).await, 204);
    }
    let ended = markers();
    assert_eq!(ended.len(), 20, "{ended:?}");
    assert!(ended.iter().all(|(text, ttl)| text == "ended" && (1..=10_000).contains(ttl)), "{ended:?}");

    let moved = initialize(&on_blue, "ALICE-TOKEN-1").await;
    assert_eq!(echo(&on_green, "ALICE-TOKEN-1", &moved, 1).await.0, 200);
    assert_eq!(delete(&on_blue, "ALICE-TOKEN-1", &moved).await, 204);
    let (status, reply) = echo(&on_green, "ALICE-TOKEN-1", &moved, 2).await;
    assert_eq!(status, 404, "green's copy of the session blue ended: {reply}");
    // Twice the default idle timeout (600 s).
    let lasting: Vec<_> = markers().into_iter().filter(|(_, ttl)| *ttl > 10_000).collect();
    assert_eq!(lasting.len(), 1, "{lasting:?}");
    assert!(lasting[0].0 == "ended" && lasting[0].1 > 1_190_000, "{lasting:?}");
}

#[tokio::test]
async fn one_session_alternates_between_two_relays_behind_the_shipped_haproxy() {
    let redis = RedisServer::start().await;
    // The relays pick their ports and HAProxy is pointed at them: a port chosen free
    // beforehand could be taken by another test before a relay binds it.
    let (_dirs, blue, green) = blue_and_green(&redis, None).await;
    let lb_dir = tempfile::tempdir().unwrap();
    let lb = Haproxy::start(lb_dir.path(), blue.port, green.port).await;
    // Both colours take traffic: round-robin, as if both were active.
    let answer = lb.admin("set server relay_http/green state ready").await;
    assert!(answer.trim().is_empty(), "{answer}");
    relay_tests::eventually("both colours are up in HAProxy", || async {
        let stat = lb.admin("show servers state relay_http").await;
        // srv_op_state 2 = running, for both servers.
        (stat.lines().filter(|l| l.split_whitespace().nth(5) == Some("2")).count() == 2).then_some(())
    })
    .await;

    let url = lb.url("/mcp");
    let session = initialize(&url, "ALICE-TOKEN-1").await;
    let mut served_by = std::collections::BTreeSet::new();
    for id in 1..=12 {
        let (status, reply) = call(
            &url,
            "ALICE-TOKEN-1",
            &session,
            id,
            "tools/call",
            json!({"name": "relay_get_status", "arguments": {}}),
        )
        .await;
        assert_eq!(status, 200, "call {id}: {reply}");
        let instance = reply["result"]["structuredContent"]["instance"].as_str().unwrap_or_default().to_owned();
        served_by.insert(instance);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in 100..106 {
        let (status, reply) = echo(&url, "ALICE-TOKEN-1", &session, id).await;
        assert_eq!((status, text_of(&reply)), (200, "b: hi".to_owned()), "{reply}");
    }
    assert_eq!(served_by.into_iter().collect::<Vec<_>>(), ["blue", "green"], "the session was served by both colours");
}

#[tokio::test]
async fn a_record_another_instance_rewrote_keeps_the_session_open_here() {
    let redis = RedisServer::start().await;
    // A short idle timeout: the record's expiry is refreshed every quarter of it (2 s).
    let (_dirs, blue, green) = blue_and_green(&redis, Some(8)).await;
    let session = initialize(&blue.http("/mcp"), "ALICE-TOKEN-1").await;
    let level = json!({"level": "error"});
    let (status, _) = call(&green.http("/mcp"), "ALICE-TOKEN-1", &session, 1, "logging/setLevel", level).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Blue's refresh finds the record green rewrote: still open, not ended.
    for id in 2..4 {
        let (status, reply) = echo(&blue.http("/mcp"), "ALICE-TOKEN-1", &session, id).await;
        assert_eq!(status, 200, "{reply}");
    }
}

/// A call longer than the idle timeout (the shared record's TTL) keeps its session: the record's
/// expiry moves on while the call runs, so the session's next request finds it open (it found
/// no record, and took the session for ended elsewhere).
#[tokio::test]
async fn a_call_longer_than_the_idle_timeout_keeps_its_shared_session() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("limits: {{idle_timeout_secs: 2}}\n{}", yaml(dir.path(), &redis));
    let blue = relay_with(dir.path(), &yaml, "blue", 0).await;
    let url = blue.http("/mcp");
    let session = initialize(&url, "ALICE-TOKEN-1").await;
    let slow = json!({"name": "slow", "arguments": {"ms": 4500}});
    let (status, reply) = call(&url, "ALICE-TOKEN-1", &session, 1, "tools/call", slow).await;
    assert_eq!((status, text_of(&reply)), (200, "b: slow".to_owned()), "{reply}");
    let (status, reply) = echo(&url, "ALICE-TOKEN-1", &session, 2).await;
    assert_eq!(status, 200, "the session after its long call: {reply}");
}

/// A client that only listens on its GET stream (for resource updates, say) uses its session:
/// it was expired under the open stream after the idle timeout, here and in Redis.
#[tokio::test]
async fn a_session_whose_client_only_listens_outlives_the_idle_timeout() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("limits: {{idle_timeout_secs: 2}}\n{}", yaml(dir.path(), &redis));
    let blue = relay_with(dir.path(), &yaml, "blue", 0).await;
    let url = blue.http("/mcp");
    let session = initialize(&url, "ALICE-TOKEN-1").await;
    let listen = reqwest::Client::new()
        .get(&url)
        .bearer_auth("ALICE-TOKEN-1")
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session);
    let mut stream = listen.send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let listening = tokio::spawn(async move { while let Ok(Some(_)) = stream.chunk().await {} });
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(!listening.is_finished(), "the GET stream ended under its listening client");
    let (status, reply) = echo(&url, "ALICE-TOKEN-1", &session, 1).await;
    assert_eq!(status, 200, "the session after listening past its idle timeout: {reply}");
}

/// A session ended on another instance ends here too, also while its client only listens
/// (it sends nothing that would find out): its GET stream here ends.
#[tokio::test]
async fn a_listening_session_ended_on_another_instance_ends_here() {
    let redis = RedisServer::start().await;
    let (_dirs, blue, green) = blue_and_green(&redis, Some(4)).await;
    let (on_blue, on_green) = (blue.http("/mcp"), green.http("/mcp"));
    let session = initialize(&on_blue, "ALICE-TOKEN-1").await;
    let listen = reqwest::Client::new()
        .get(&on_blue)
        .bearer_auth("ALICE-TOKEN-1")
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session);
    let mut stream = listen.send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let listening = tokio::spawn(async move { while let Ok(Some(_)) = stream.chunk().await {} });
    assert_eq!(delete(&on_green, "ALICE-TOKEN-1", &session).await, 204);
    tokio::time::timeout(Duration::from_secs(5), listening)
        .await
        .expect("blue's GET stream outlived the session ended on green")
        .unwrap();
}

/// A subscription a moved session could not make again where it moved (that instance did not
/// have the resource yet, as a colour just started may not) is the session's no more: its end
/// there does not release a count it never added, which ended another session's subscription
/// upstream.
#[tokio::test]
async fn a_subscription_a_moved_session_could_not_make_again_is_not_ended_by_it() {
    let redis = RedisServer::start().await;
    let (blue_dir, green_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let record = green_dir.path().join("record");
    let with_resource = |flags: &[&str]| format!("backends:\n{}", stdio_fixture_entry("b", flags));
    let start = async |dir: &Path, colour: &str, backends: String| {
        let mut relay = Relay::start_files(dir, &yaml(dir, &redis), &backends, &[("RELAY_INSTANCE", colour)]).await;
        relay.token = Some("ALICE-TOKEN-1".into());
        relay.wait_ready("b").await;
        relay
    };
    let blue = start(blue_dir.path(), "blue", with_resource(&["--resources", "file:///r"])).await;
    let green = start(green_dir.path(), "green", with_resource(&[])).await;
    let (on_blue, on_green) = (blue.http("/mcp"), green.http("/mcp"));
    let uri = json!({"uri": "file:///r"});

    let moved = initialize(&on_blue, "ALICE-TOKEN-1").await;
    assert_eq!(call(&on_blue, "ALICE-TOKEN-1", &moved, 1, "resources/subscribe", uri.clone()).await.0, 200);
    // Taken up by green, whose backend has no such resource: the subscription is not made there.
    assert_eq!(echo(&on_green, "ALICE-TOKEN-1", &moved, 2).await.0, 200);
    // Green's backend gets the resource; another session subscribes to it there.
    let record_flag = record.to_str().unwrap();
    let backends = with_resource(&["--resources", "file:///r", "--record", record_flag]);
    std::fs::write(green_dir.path().join("backends.yaml"), backends).unwrap();
    let other = initialize(&on_green, "ALICE-TOKEN-1").await;
    relay_tests::eventually("green's backend lists the resource", || async {
        let (status, reply) = call(&on_green, "ALICE-TOKEN-1", &other, 3, "resources/list", json!({})).await;
        (status == 200 && reply.to_string().contains("file:///r")).then_some(())
    })
    .await;
    let (status, reply) = call(&on_green, "ALICE-TOKEN-1", &other, 4, "resources/subscribe", uri).await;
    assert_eq!(status, 200, "{reply}");
    // The moved session ends on green.
    assert_eq!(delete(&on_green, "ALICE-TOKEN-1", &moved).await, 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(received.contains("resources/subscribe"), "{received}");
    assert!(!received.contains("resources/unsubscribe"), "the other session's subscription was ended: {received}");
}

/// While Redis is away a session opened then is served, and its record is written once Redis is
/// back (its next request found no record and took it for ended elsewhere); a session ended
/// then stays ended, here and on the other instances, when Redis comes back with its record
/// (both took it up again).
#[tokio::test]
async fn sessions_opened_or_ended_while_redis_is_away_stay_so_when_it_is_back() {
    let mut redis = RedisServer::start().await;
    // A short idle timeout: the relays look after their records every 2 s.
    let (_dirs, blue, green) = blue_and_green(&redis, Some(8)).await;
    let (on_blue, on_green) = (blue.http("/mcp"), green.http("/mcp"));
    let ended = initialize(&on_blue, "ALICE-TOKEN-1").await;
    assert_eq!(echo(&on_blue, "ALICE-TOKEN-1", &ended, 1).await.0, 200);

    // Redis goes away (its data kept on disk, as with persistence) and comes back.
    redis.cli(&["SAVE"]);
    redis.kill().await;
    let opened = initialize(&on_blue, "ALICE-TOKEN-1").await;
    assert_eq!(delete(&on_blue, "ALICE-TOKEN-1", &ended).await, 204);
    redis.restart().await;

    let (status, reply) = echo(&on_blue, "ALICE-TOKEN-1", &opened, 2).await;
    assert_eq!(status, 200, "the session opened while Redis was away: {reply}");
    let (status, reply) = echo(&on_blue, "ALICE-TOKEN-1", &ended, 3).await;
    assert_eq!(status, 404, "the session ended while Redis was away, where it ended: {reply}");
    relay_tests::eventually("the ended session refused on green too", || async {
        (echo(&on_green, "ALICE-TOKEN-1", &ended, 4).await.0 == 404).then_some(())
    })
    .await;
    // Its record written (by blue's next request of it: the first one after Redis came back
    // may have found blue's connection to Redis broken), green serves it too.
    relay_tests::eventually("the opened session served by green", || async {
        assert_eq!(echo(&on_blue, "ALICE-TOKEN-1", &opened, 5).await.0, 200);
        (echo(&on_green, "ALICE-TOKEN-1", &opened, 6).await.0 == 200).then_some(())
    })
    .await;
}

/// Redis losing its data (restarted without persistence, flushed) ends no session: the instance
/// serving one writes its record again, and the other instance takes it up from there (both
/// took the missing record for an end). While Redis does not answer, a moved session's request
/// is told to retry (503), not that its session is gone (404, and the client starts anew).
#[tokio::test]
async fn sessions_outlive_redis_losing_their_records_and_a_stalled_redis_says_retry() {
    let redis = RedisServer::start().await;
    // A short idle timeout: the relays look after their records every second.
    let (_dirs, blue, green) = blue_and_green(&redis, Some(4)).await;
    let (on_blue, on_green) = (blue.http("/mcp"), green.http("/mcp"));
    let (session, other) = (initialize(&on_blue, "ALICE-TOKEN-1").await, initialize(&on_blue, "ALICE-TOKEN-1").await);
    assert_eq!(echo(&on_blue, "ALICE-TOKEN-1", &session, 1).await.0, 200);

    redis.cli(&["FLUSHALL"]);
    let (status, reply) = echo(&on_blue, "ALICE-TOKEN-1", &session, 2).await;
    assert_eq!(status, 200, "the session after Redis lost its record: {reply}");
    let (status, reply) = echo(&on_green, "ALICE-TOKEN-1", &session, 3).await;
    assert_eq!(status, 200, "the other instance takes it up from the record written again: {reply}");
    // One whose next request goes to the other instance (round-robin): blue's sweep writes its
    // record again meanwhile.
    relay_tests::eventually("green takes up the session blue wrote again by itself", || async {
        (echo(&on_green, "ALICE-TOKEN-1", &other, 4).await.0 == 200).then_some(())
    })
    .await;

    let moved = initialize(&on_blue, "ALICE-TOKEN-1").await;
    redis.cli(&["CLIENT", "PAUSE", "3000", "ALL"]);
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "ping"});
    let stalled = post(&on_green, "ALICE-TOKEN-1", Some(&moved), &body).send().await.unwrap();
    assert_eq!(stalled.status(), 503, "{}", stalled.text().await.unwrap());
    assert_eq!(stalled.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(echo(&on_green, "ALICE-TOKEN-1", &moved, 6).await.0, 200, "served once Redis answers");
}

/// Starts `ask` on `session` at `url` and reads its stream until the backend's question reaches
/// the client: the question's id, and the rest of the call's messages to come.
async fn ask(url: &str, session: &str, id: u64, question: &str) -> (Value, tokio::task::JoinHandle<Vec<Value>>) {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "ask", "arguments": {"question": question}}});
    let mut response = post(url, "ALICE-TOKEN-1", Some(session), &body).send().await.unwrap();
    let mut seen = String::new();
    loop {
        let chunk = response.chunk().await.unwrap().expect("the stream ended before the question");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        let whole_lines = &seen[..seen.rfind('\n').unwrap_or(0)];
        let data = whole_lines.lines().filter_map(|l| l.strip_prefix("data:"));
        if let Some(asked) =
            data.map(|d| serde_json::from_str::<Value>(d.trim()).unwrap()).find(|m| m["method"] == "elicitation/create")
        {
            assert_eq!(asked["params"]["message"], question, "{asked}");
            let rest = tokio::spawn(async move { sse_messages(&response.text().await.unwrap()) });
            return (asked["id"].clone(), rest);
        }
    }
}

/// Each instance numbers a session's backend questions apart: after a switch, the answer to
/// blue's question sent to green answers nothing there, not green's own question (both were
/// `relay-0`, and blue's "accept" answered green's question).
#[tokio::test]
async fn an_answer_to_one_instances_question_is_not_taken_for_anothers() {
    let redis = RedisServer::start().await;
    let (_dirs, blue, green) = blue_and_green(&redis, None).await;
    let (on_blue, on_green) = (blue.http("/mcp"), green.http("/mcp"));
    let session = initialize(&on_blue, "ALICE-TOKEN-1").await;

    let (blue_question, _blue_call) = ask(&on_blue, &session, 1, "may I read the file?").await;
    let (green_question, green_call) = ask(&on_green, &session, 2, "may I delete everything?").await;
    assert_ne!(blue_question, green_question, "the instances numbered their questions alike");

    let answer = |id: &Value, action: &str| json!({"jsonrpc": "2.0", "id": id, "result": {"action": action}});
    let sent =
        post(&on_green, "ALICE-TOKEN-1", Some(&session), &answer(&blue_question, "accept")).send().await.unwrap();
    assert_eq!(sent.status(), 202, "accepted, and dropped");
    let sent = post(&on_green, "ALICE-TOKEN-1", Some(&session), &answer(&green_question, "decline")).send().await;
    assert_eq!(sent.unwrap().status(), 202);
    let messages = green_call.await.unwrap();
    let answered = text_of(messages.last().unwrap());
    assert!(answered.contains("decline"), "green's question got its own answer: {answered}");
}

/// A colour that drains hands its sessions over: what only it knew is written before it exits.
/// A session whose record Redis lost (restarted, flushed) and that had no request since is
/// served by the other colour; one ended while Redis was away stays ended there, though Redis
/// came back with its record.
#[tokio::test]
async fn a_draining_instance_leaves_the_kv_what_only_it_knew_of_its_sessions() {
    let mut redis = RedisServer::start().await;
    let (_dirs, mut blue, green) = blue_and_green(&redis, None).await;
    let (on_blue, on_green) = (blue.http("/mcp"), green.http("/mcp"));
    let kept = initialize(&on_blue, "ALICE-TOKEN-1").await;
    let ended = initialize(&on_blue, "ALICE-TOKEN-1").await;
    assert_eq!(echo(&on_blue, "ALICE-TOKEN-1", &ended, 1).await.0, 200);

    // Redis goes away (its data kept on disk) while the client ends one session...
    redis.cli(&["SAVE"]);
    redis.kill().await;
    assert_eq!(delete(&on_blue, "ALICE-TOKEN-1", &ended).await, 204);
    redis.restart().await;
    // ... and comes back with both records, then loses the other session's.
    let digest = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(kept.as_bytes()));
    assert_eq!(redis.cli(&["DEL", &format!("shared:relay.session:{digest}")]).trim(), "1");

    // Blue is retired before its sweep (every 30 s here) looked at either.
    blue.terminate().await;
    // Green's first command may meet the connection Redis's restart broke: 503, retried.
    let on_green_retried = async |session: &str| {
        relay_tests::eventually("an answer other than retry", || async {
            let (status, reply) = echo(&on_green, "ALICE-TOKEN-1", session, 2).await;
            (status != 503).then_some((status, reply))
        })
        .await
    };
    let (status, reply) = on_green_retried(&kept).await;
    assert_eq!(status, 200, "the session whose record Redis lost: {reply}");
    let (status, reply) = on_green_retried(&ended).await;
    assert_eq!(status, 404, "the session ended on blue while Redis was away: {reply}");
}
