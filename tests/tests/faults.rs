//! Regression tests for fault handling (issue 10, items 1–12): misbehaving backends, files and
//! processes. Each test is named after what it guards.

use std::path::Path;
use std::time::{Duration, Instant};

use relay_tests::{
    Fixture, HttpBackend, Relay, TEST_RELAY_YAML, copy_plugin, eventually, process_alive, stdio_fixture_entry, text_of,
};
use serde_json::json;

/// relay.yaml for these tests with `extra` top-level settings.
fn yaml(extra: &str) -> String {
    format!("{TEST_RELAY_YAML}{extra}")
}

fn pids(starts: &Path) -> Vec<u32> {
    std::fs::read_to_string(starts).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn a_handshake_given_up_closes_its_backend() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let entry = stdio_fixture_entry("stuck", &["--hang-list", "--starts", arg(&starts)]);
    let relay_yaml = "upstream: {connect_timeout_secs: 0.5, backoff_initial_ms: 50, backoff_max_ms: 200}\n";
    let _relay = Relay::start_files(dir.path(), relay_yaml, &format!("backends:\n{entry}"), &[]).await;
    eventually("three attempts", || async { (pids(&starts).len() >= 3).then_some(()) }).await;
    let alive = pids(&starts).into_iter().filter(|&p| process_alive(p)).count();
    assert!(alive <= 1, "{alive} backend processes alive after {} attempts", pids(&starts).len());
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    eventually("every attempt's process gone", || async {
        pids(&starts).into_iter().all(|p| !process_alive(p)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_sse_stream_that_ends_early_is_not_resent_in_a_loop() {
    let backend = HttpBackend::start(0).await;
    let relay = Relay::start(&format!("backends:\n  - name: h\n    url: {}\n", backend.url())).await;
    relay.wait_ready("h").await;
    let mut client = relay.line_client().await;
    let started = Instant::now();
    let reply = client.call_tool("early_close", json!({})).await;
    let message = reply["error"]["message"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert!(message.contains("ended the response stream"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "failed at once, not at the deadline");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(backend.calls_of("early_close") <= 2, "ran {} times", backend.calls_of("early_close"));
}

#[tokio::test]
async fn a_call_longer_than_the_connect_timeout_is_still_resent_when_its_backend_restarts() {
    // The wait for a new connection (connect_timeout_secs) starts when the connection is lost,
    // not when the call started: a call that ran longer than that before its backend crashed is
    // re-sent to the restarted backend (which crashes again: "twice"), instead of failing at
    // once with "not connected within".
    let dir = tempfile::tempdir().unwrap();
    let crasher = stdio_fixture_entry("crasher", &[]);
    // The restart (Python's start and a handshake) gets 2 s even on a busy machine; the call
    // runs 3 s before it crashes its backend.
    let relay_yaml =
        "upstream: {connect_timeout_secs: 2, backoff_initial_ms: 50, backoff_max_ms: 100, call_timeout_secs: 30}\n";
    let relay = Relay::start_files(dir.path(), relay_yaml, &format!("backends:\n{crasher}"), &[]).await;
    relay.wait_ready("crasher").await;
    let mut client = relay.line_client_as(None).await;
    let reply = client.call_tool("crash", json!({"after_ms": 3000})).await;
    let message = reply["error"]["message"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert!(message.contains("twice"), "re-sent once, then given up: {message}");
}

#[tokio::test]
async fn a_call_that_crashes_its_backend_is_resent_once_and_backoff_holds() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let crasher = stdio_fixture_entry("crasher", &["--starts", arg(&starts)]);
    let flapping_starts = dir.path().join("flapping");
    let flapping = stdio_fixture_entry("flapping", &["--exit-after-handshake", "--starts", arg(&flapping_starts)]);
    let relay_yaml = "upstream: {backoff_initial_ms: 50, backoff_max_ms: 400, call_timeout_secs: 20}\n";
    let relay = Relay::start_files(dir.path(), relay_yaml, &format!("backends:\n{crasher}{flapping}"), &[]).await;
    let started = Instant::now();
    relay.wait_ready("crasher").await;
    let mut client = relay.line_client_as(None).await;
    let reply = client.call_tool("crash", json!({})).await;
    let message = reply["error"]["message"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert!(message.contains("twice"), "{message}");
    // Sent, crashed, re-sent once on the next process, crashed again: at most a third start.
    assert!(pids(&starts).len() <= 3, "crash was re-sent {} times", pids(&starts).len() - 1);
    // A backend that dies right after each handshake is not restarted in a tight loop.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    let restarts = pids(&flapping_starts).len();
    assert!(restarts <= 14, "{restarts} starts in 3 s: the backoff was reset after each handshake");
}

#[tokio::test]
async fn a_relist_that_never_answers_does_not_freeze_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let entry = stdio_fixture_entry("relist", &["--hang-relist", "--starts", arg(&starts)]);
    let relay = Relay::start_files(dir.path(), &yaml(""), &format!("backends:\n{entry}"), &[]).await;
    relay.wait_ready("relist").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("change", json!({})).await), "relist: changed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reconnect = client.call_tool("relay_reconnect_server", json!({"name": "relist"})).await;
    assert_eq!(reconnect["result"]["structuredContent"]["reconnecting"], "relist", "{reconnect}");
    eventually("a second process", || async { (pids(&starts).len() >= 2).then_some(()) }).await;
    let removed = client.call_tool("relay_remove_server", json!({"name": "relist"})).await;
    assert_eq!(removed["result"]["structuredContent"]["removed"], "relist", "{removed}");
    eventually("no process left", || async { pids(&starts).into_iter().all(|p| !process_alive(p)).then_some(()) })
        .await;
}

#[tokio::test]
async fn the_file_watch_reacts_to_content_changes_only() {
    let relay = Relay::start("backends: []\n").await;
    std::fs::write(relay.backends_path(), "backends:\n  - name: x\n    nonsense: true\n").unwrap();
    relay.wait_for_log("backends file rejected").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rejections = relay.log().matches("backends file rejected").count();
    assert_eq!(rejections, 1, "the relay's own reads re-triggered the watch");
}

#[tokio::test]
async fn an_empty_or_missing_backends_file_keeps_the_running_set() {
    let fixture = Fixture::start("alpha").await;
    let relay = Relay::start(&format!("backends:\n{}", fixture.entry())).await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    std::fs::write(relay.backends_path(), "").unwrap();
    relay.wait_for_log("the file is empty").await;
    // What a restart would do is said as it is: start with no backends, not fail.
    assert!(relay.log().contains("a restart would start with no backends"), "{}", relay.log());
    assert!(!relay.log().contains("a restart would fail"));
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "kept"})).await), "alpha: kept");
    std::fs::remove_file(relay.backends_path()).unwrap();
    relay.wait_for_log("the file is missing").await;
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "still"})).await), "alpha: still");
    std::fs::write(relay.backends_path(), "backends: []\n").unwrap();
    eventually("alpha removed", || async { relay.backend_state("alpha").await.is_none().then_some(()) }).await;
}

#[tokio::test]
async fn a_symlinked_backends_file_is_followed_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let target = shared.join("backends.yaml");
    std::fs::write(&target, "backends: []\n").unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::os::unix::fs::symlink(&target, config.join("backends.yaml")).unwrap();
    std::fs::write(config.join("relay.yaml"), TEST_RELAY_YAML).unwrap();
    let relay = Relay::start_in(&config, "relay.log", &[], &[]).await;
    let (alpha, beta) = (Fixture::start("alpha").await, Fixture::start("beta").await);
    let mut client = relay.line_client().await;
    let added = client.call_tool("relay_add_server", json!({"name": "alpha", "url": alpha.url()})).await;
    assert_eq!(added["result"]["structuredContent"]["added"], "alpha", "{added}");
    let link = std::fs::symlink_metadata(config.join("backends.yaml")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced by a private file");
    assert!(std::fs::read_to_string(&target).unwrap().contains("alpha"));
    // Another relay (or an operator) edits the shared target: this relay follows.
    let text = std::fs::read_to_string(&target).unwrap();
    std::fs::write(&target, format!("{text}{}", beta.entry().replacen("  - ", "- ", 1).replace("\n    ", "\n  ")))
        .unwrap();
    relay.wait_ready("beta").await;
}

/// A backends file mounted as Kubernetes mounts a ConfigMap (`backends.yaml ->
/// ..data/backends.yaml`, `..data -> ..v1`) is read again each time `..data` is re-pointed at a
/// new version and the old one removed: the relay had resolved the link once, and watched and
/// read a directory that was gone.
#[tokio::test]
async fn a_backends_file_swapped_as_kubernetes_does_is_read_again() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().to_owned();
    let version = |n: u32, text: &str| {
        let data = config.join(format!("..v{n}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("backends.yaml"), text).unwrap();
        symlink(format!("..v{n}"), config.join("..data_tmp")).unwrap();
        std::fs::rename(config.join("..data_tmp"), config.join("..data")).unwrap();
        if n > 1 {
            std::fs::remove_dir_all(config.join(format!("..v{}", n - 1))).unwrap();
        }
    };
    version(1, "backends: []\n");
    symlink("..data/backends.yaml", config.join("backends.yaml")).unwrap();
    std::fs::write(config.join("relay.yaml"), TEST_RELAY_YAML).unwrap();
    let relay = Relay::start_in(&config, "relay.log", &[], &[]).await;
    let (alpha, beta) = (Fixture::start("alpha").await, Fixture::start("beta").await);
    version(2, &format!("backends:\n{}", alpha.entry()));
    relay.wait_ready("alpha").await;
    version(3, &format!("backends:\n{}{}", alpha.entry(), beta.entry()));
    relay.wait_ready("beta").await;
}

#[tokio::test]
async fn backends_cannot_grow_the_relays_memory_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let entry = stdio_fixture_entry("noisy", &[]);
    let relay = Relay::start_files(dir.path(), &yaml(""), &format!("backends:\n{entry}"), &[]).await;
    relay.wait_ready("noisy").await;
    let mut client = relay.line_client().await;
    let before = relay.rss_bytes();
    // 300 MB of stderr without a newline.
    assert_eq!(text_of(&client.call_tool("stderr", json!({"mb": 300})).await), "noisy: wrote stderr");
    let grown = relay.rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "stderr grew the relay by {} MB", grown >> 20);
    // A flood of pings from a backend that stops reading its input: the relay stops reading it
    // too once its answers cannot be written (the flood never finishes), and stays small.
    let flood = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "flood", "arguments": {"n": 200_000}}});
    client.send_raw(&flood.to_string()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = relay.rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "a ping flood grew the relay by {} MB", grown >> 20);
    let mut other = relay.line_client().await;
    assert!(other.request("tools/list", json!({})).await["result"]["tools"].is_array(), "the relay still answers");
}

/// A backend whose list never ends (a cursor to 1 MB more on every page) is refused once its
/// pages add up to more than the relay holds, instead of growing the relay by gigabytes until
/// the handshake's deadline, and says why.
#[tokio::test]
async fn a_list_without_end_is_refused_past_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let entry = stdio_fixture_entry("endless", &["--endless-prompts"]);
    let relay_yaml = "upstream: {connect_timeout_secs: 30, backoff_initial_ms: 5000, backoff_max_ms: 5000}\n";
    let relay = Relay::start_files(dir.path(), relay_yaml, &format!("backends:\n{entry}"), &[]).await;
    let before = relay.rss_bytes();
    let why = eventually("the listing refused", || async {
        let status = relay.status().await;
        let endless = status["backends"].as_array()?.iter().find(|b| b["name"] == "endless")?.clone();
        endless["last_error"].as_str().filter(|e| e.contains("more than")).map(str::to_owned)
    })
    .await;
    assert!(why.contains("prompts/list") && why.contains("16 MiB"), "{why}");
    let grown = relay.rss_bytes().saturating_sub(before);
    assert!(grown < 256 << 20, "the listing grew the relay by {} MB", grown >> 20);
}

/// A backend listing more tools than any real server (a hostile one's 200,000 small tools fit
/// the byte bound and held 600 MB of the relay, copied again into each principal's view) is
/// refused past an item bound, and says why.
#[tokio::test]
async fn a_list_of_too_many_items_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let many = stdio_fixture_entry("many", &["--many-tools", "20000"]);
    let relay_yaml = "upstream: {backoff_initial_ms: 5000, backoff_max_ms: 5000}\n";
    let relay = Relay::start_files(dir.path(), relay_yaml, &format!("backends:\n{many}"), &[]).await;
    let why = eventually("the listing refused", || async {
        let status = relay.status().await;
        let many = status["backends"].as_array()?.iter().find(|b| b["name"] == "many")?.clone();
        many["last_error"].as_str().filter(|e| e.contains("more than")).map(str::to_owned)
    })
    .await;
    assert!(why.contains("tools/list") && why.contains("10000 items"), "{why}");
}

#[tokio::test]
async fn bytes_that_are_not_utf8_do_not_break_a_stdio_backend() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let entry = stdio_fixture_entry("b", &["--starts", arg(&starts)]);
    let relay = Relay::start_files(dir.path(), &yaml(""), &format!("backends:\n{entry}"), &[]).await;
    relay.wait_ready("b").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("bad_stderr", json!({})).await), "b: bad stderr");
    // Writing stderr again works only if the relay still reads it (else: a full pipe or EPIPE).
    assert_eq!(text_of(&client.call_tool("stderr", json!({"mb": 2})).await), "b: wrote stderr");
    assert_eq!(text_of(&client.call_tool("bad_stdout", json!({})).await), "b: after bad stdout");
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "m"})).await), "b: m");
    assert_eq!(pids(&starts).len(), 1, "the connection was dropped and the backend restarted");
}

#[tokio::test]
async fn an_http_upstream_that_moved_is_followed_within_its_origin_only() {
    let backend = HttpBackend::start(0).await;
    let backends = format!(
        "backends:\n  - name: moved\n    url: {}\n  - name: away\n    url: {}\n",
        backend.url_at("moved"),
        backend.url_at("elsewhere")
    );
    let relay = Relay::start(&backends).await;
    // `/moved` answers 307 to `/mcp` on the same origin: followed, and the calls work.
    relay.wait_ready("moved").await;
    let mut client = relay.line_client().await;
    let reply = client.call_tool("ok", json!({})).await;
    assert!(reply["error"].is_null(), "{reply}");
    assert!(backend.calls_of("ok") >= 1);
    // `/elsewhere` sends the request to another origin: not followed, and said why.
    let status = eventually("the refused redirect in the backend's status", || async {
        let status = relay.line_client().await.call_tool("relay_list_servers", json!({})).await;
        let text = text_of(&status);
        text.contains("only redirects to the same origin are followed").then_some(text)
    })
    .await;
    assert!(status.contains("307"), "{status}");
}

#[tokio::test]
async fn http_upstreams_are_told_when_a_call_is_cancelled() {
    let backend = HttpBackend::start(0).await;
    let backends = format!("backends:\n  - name: h\n    url: {}\n    call_timeout_secs: 1\n", backend.url());
    let relay = Relay::start(&backends).await;
    relay.wait_ready("h").await;
    let mut client = relay.line_client().await;
    let reply = client.call_tool("slow", json!({})).await;
    assert_eq!(reply["error"]["code"], -32001, "{reply}");
    let call_id = backend
        .received()
        .iter()
        .find(|m| m["params"]["name"] == "slow")
        .map(|m| m["id"].clone())
        .expect("the call reached the backend");
    eventually("notifications/cancelled", || async {
        backend
            .received()
            .iter()
            .any(|m| m["method"] == "notifications/cancelled" && m["params"]["requestId"] == call_id)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_oversized_or_malformed_answer_fails_its_call_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let entry = stdio_fixture_entry("b", &[]);
    let relay = Relay::start_files(
        dir.path(),
        &yaml("limits: {max_message_bytes: 1048576}\n"),
        &format!("backends:\n{entry}"),
        &[],
    )
    .await;
    relay.wait_ready("b").await;
    let mut client = relay.line_client().await;
    for (tool, arguments, expected) in [
        ("huge", json!({"bytes": 3 << 20}), "larger than max_message_bytes"),
        ("not_object", json!({}), "not a JSON object"),
        ("malformed", json!({}), "not a valid JSON-RPC response"),
    ] {
        let started = Instant::now();
        let reply = client.call_tool(tool, arguments).await;
        let message = reply["error"]["message"].as_str().unwrap_or_else(|| panic!("{tool}: {reply}"));
        assert!(message.contains(expected), "{tool}: {message}");
        assert_eq!(reply["error"]["code"], -32603, "{tool}: {reply}");
        assert!(message.starts_with("backend b: answer refused: "), "named once, said once: {message}");
        assert!(started.elapsed() < Duration::from_secs(5), "{tool} waited for its deadline");
    }
    assert_eq!(text_of(&client.call_tool("echo", json!({"message": "m"})).await), "b: m");
}

#[tokio::test]
async fn set_level_fans_out_idle_counts_calls_and_status_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let backends = format!(
        "backends:\n{}{}  - name: nowhere\n    url: ws://127.0.0.1:9\n",
        stdio_fixture_entry("hung", &["--hang-setlevel"]),
        stdio_fixture_entry("fine", &[])
    );
    let limiter = copy_plugin(dir.path(), "rate_limit");
    let plugins = format!(
        "plugin_cache_dir: cache\nplugins:\n  - name: rate-limit\n    world: policy\n    path: {}\n    grants: {{clock: true}}\n",
        limiter.display()
    );
    let relay =
        Relay::start_files(dir.path(), &yaml(&format!("limits: {{idle_timeout_secs: 1}}\n{plugins}")), &backends, &[])
            .await;
    relay.wait_ready("hung").await;
    relay.wait_ready("fine").await;
    let mut client = relay.line_client().await;
    // logging/setLevel does not wait a call timeout (20 s) for the hung backend.
    let started = Instant::now();
    assert_eq!(client.request("logging/setLevel", json!({"level": "info"})).await["result"], json!({}));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // A call longer than the idle timeout keeps its connection.
    client
        .send_raw(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "fine__slow", "arguments": {"ms": 2500}}}).to_string())
        .await;
    assert_eq!(text_of(&client.recv_response().await), "fine: slow");
    // And so does an HTTP session: the idle sweep leaves a session whose call is running, and
    // its idle time counts from the answer.
    let session = relay_tests::HttpSession::open(&relay.http("/mcp"), json!({})).await;
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fine__slow", "arguments": {"ms": 2500}}});
    let answer = session.post(&call).send().await.unwrap().text().await.unwrap();
    assert!(answer.contains("fine: slow"), "the HTTP call was answered: {answer:?}");
    let ping = session.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"})).send().await.unwrap();
    assert_eq!(ping.status(), 200, "the HTTP session outlived its long call");
    // A backend that never connected says why it is not up.
    let status = relay.status().await;
    let nowhere = status["backends"].as_array().unwrap().iter().find(|b| b["name"] == "nowhere").unwrap().clone();
    assert_eq!(nowhere["state"], "down", "{nowhere}");
    assert!(nowhere["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{nowhere}");
    // A plugin's reload error is cleared once its file is good again.
    let good = std::fs::read(&limiter).unwrap();
    relay_tests::replace_file(&limiter, b"\0asm not a component");
    eventually("a reload error", || async { relay.plugin_status("rate-limit").await["last_error"].as_str().map(drop) })
        .await;
    relay_tests::replace_file(&limiter, &good);
    eventually("the error cleared", || async {
        relay.plugin_status("rate-limit").await["last_error"].is_null().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_dead_backend_fails_calls_at_once_counted_as_down_until_it_is_back() {
    let mut alpha = Fixture::start("alpha").await;
    let port = alpha.port;
    // A long call deadline: a call that waited for it would take 60 s.
    let backends = format!("backends:\n{}    call_timeout_secs: 60\n", alpha.entry());
    let relay = Relay::start(&backends).await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    alpha.kill().await;
    relay.wait_for_log("upstream connect failed").await;
    for _ in 0..3 {
        let started = Instant::now();
        let reply = client.call_tool("echo", json!({"message": "anyone?"})).await;
        assert!(started.elapsed() < Duration::from_secs(2), "failed at once, not after {:?}", started.elapsed());
        assert_eq!(reply["error"]["code"], -32000, "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("backend alpha is down: its last connection attempt failed"), "{message}");
    }
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let down = relay_tests::metric_value(&metrics, r#"relay_backend_requests_total{backend="alpha",outcome="down"}"#);
    assert_eq!(down, Some(3.0), "{metrics}");
    // Back: calls go through again.
    let _back = Fixture::start_on("alpha", port, &[]).await;
    relay.wait_ready("alpha").await;
    let reply = client.call_tool("echo", json!({"message": "back"})).await;
    assert_eq!(text_of(&reply), "alpha: back", "{reply}");
}
