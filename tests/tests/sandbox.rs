//! The plugin sandbox against a hostile plugin (`tests/plugins/hostile-adapter`, issue 11): it
//! cannot exhaust the relay's memory, sockets, log or runtime, cannot reach beyond its grants,
//! and a rollback sticks. Each test is named after the promise it checks.

use std::path::Path;
use std::time::{Duration, Instant};

use relay_tests::{
    Relay, TEST_RELAY_YAML, copy_plugin, eventually, rebuilt, replace_file, stdio_fixture_entry, text_of,
};
use serde_json::json;

/// Starts a relay in `dir` with the hostile adapter (`config`, `grants`, `limits` as YAML flow
/// maps) plus `extra` plugin entries.
async fn hostile(dir: &Path, config: &str, grants: &str, limits: &str, backends: &str) -> Relay {
    let wasm = copy_plugin(dir, "hostile_adapter");
    let yaml = format!(
        "{TEST_RELAY_YAML}plugin_cache_dir: cache\nplugins:\n  - name: hostile\n    world: adapter\n    path: {}\n    config: {config}\n    grants: {grants}\n    limits: {limits}\n",
        wasm.display()
    );
    Relay::start_files(dir, &yaml, backends, &[]).await
}

fn sockets(relay: &Relay) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", relay.pid()))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn kv_has_quotas() {
    let dir = tempfile::tempdir().unwrap();
    let relay =
        hostile(dir.path(), "{}", "{}", "{deadline_ms: 5000, kv_entries: 100, kv_bytes: 1048576}", "backends: []\n")
            .await;
    let mut client = relay.line_client().await;
    let before = relay.rss_bytes();
    for _ in 0..3 {
        let text = text_of(&client.call_tool("kv_flood", json!({"n": 1000})).await);
        assert!(text.starts_with("refused after"), "{text}");
        let written: usize = text.split_whitespace().nth(2).unwrap().trim_end_matches(':').parse().unwrap();
        assert!(written <= 16, "{written} values of 64 KiB fit a 1 MiB quota? {text}");
    }
    assert!(relay.rss_bytes().saturating_sub(before) < 32 << 20, "kv grew the relay");
    assert!(relay.plugin_status("hostile").await["kv_refusals"].as_u64().unwrap() >= 3);
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let refused = relay_tests::metric_value(&metrics, r#"relay_plugin_kv_refusals_total{plugin="hostile"}"#);
    assert!(refused.is_some_and(|n| n >= 3.0), "{metrics}");
}

/// `wasi:random` fills its bytes in one host call, which no deadline can end: a plugin asking
/// for wasmtime's default limit (64 MiB) held a worker thread, and every call on it, for a
/// quarter of a second past its deadline. One call gives at most 1 MiB; a larger ask traps.
#[tokio::test]
async fn random_bytes_come_at_most_a_mebibyte_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let relay = hostile(dir.path(), "{}", "{}", "{deadline_ms: 5000, memory_mb: 128}", "backends: []\n").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("random", json!({"n": 1 << 20})).await), "got 1048576");
    let refused = client.call_tool("random", json!({"n": 32 << 20})).await;
    assert!(refused.get("error").is_some() || refused["result"]["isError"] == true, "{refused}");
    assert!(!refused.to_string().contains("got 33554432"), "{refused}");
    assert_eq!(text_of(&client.call_tool("random", json!({"n": 16})).await), "got 16", "the plugin serves on");
}

#[tokio::test]
async fn nothing_a_call_creates_outlives_it() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let grants = format!("{{http: ['{authority}']}}");
    let relay = hostile(dir.path(), "{}", &grants, "{deadline_ms: 5000}", "backends: []\n").await;
    let mut client = relay.line_client().await;
    let before = relay.rss_bytes();
    for _ in 0..5 {
        let text = text_of(&client.call_tool("leak_fields", json!({"n": 400})).await);
        assert_eq!(text, "leaked 400 fields");
    }
    let grown = relay.rss_bytes().saturating_sub(before);
    assert!(grown < 100 << 20, "leaked fields kept {} MB", grown >> 20);
    let sockets_before = sockets(&relay);
    for _ in 0..3 {
        client.call_tool("leak_requests", json!({"n": 300, "authority": authority})).await;
        let open = sockets(&relay).saturating_sub(sockets_before);
        assert!(open <= 40, "{open} sockets after one call: outgoing requests are capped per plugin");
    }
    eventually("the forgotten requests closed", || async { (sockets(&relay) <= sockets_before + 2).then_some(()) })
        .await;
    held.abort();
}

#[tokio::test]
async fn guest_code_cannot_starve_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let relay = hostile(dir.path(), "{}", "{}", "{deadline_ms: 2000}", "backends: []\n").await;
    let spins: Vec<_> = (0..2)
        .map(|_| {
            let port = relay.port;
            tokio::spawn(async move {
                let mut client = relay_tests::LineClient::connect(port).await;
                client.request("initialize", json!({"protocolVersion": "2025-06-18"})).await;
                client.call_tool("spin", json!({})).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        assert!(http.get(relay.http("/healthz")).send().await.unwrap().status().is_success());
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(slowest < Duration::from_millis(500), "/healthz took {slowest:?} while guests spun");
    for spin in spins {
        let reply = spin.await.unwrap();
        assert!(reply["error"]["message"].as_str().unwrap_or_default().contains("deadline"), "{reply}");
    }
}

/// Runs `relay serve` on `dir`'s config and returns (exit success, stderr, how long it took).
async fn serve_until_exit(dir: &Path) -> (bool, String, Duration) {
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(relay_tests::relay_bin())
            .args(["serve", "--config"])
            .arg(dir.join("relay.yaml"))
            .env("RELAY_PORT", "0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the relay gives up on the plugin instead of hanging")
    .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned(), started.elapsed())
}

fn write_hostile_config(dir: &Path, config: &str) {
    let wasm = copy_plugin(dir, "hostile_adapter");
    let yaml = format!(
        "plugin_cache_dir: cache\nplugins:\n  - {{name: hostile, world: adapter, path: {}, config: {config}, limits: {{deadline_ms: 1000}}}}\n",
        wasm.display()
    );
    std::fs::write(dir.join("relay.yaml"), yaml).unwrap();
    std::fs::write(dir.join("backends.yaml"), "backends: []\n").unwrap();
}

#[tokio::test]
async fn loading_is_bounded_in_time_and_catalogs_in_size() {
    let dir = tempfile::tempdir().unwrap();
    write_hostile_config(dir.path(), "{list: slow}");
    let (ok, stderr, took) = serve_until_exit(dir.path()).await;
    assert!(!ok && stderr.contains("took longer"), "{stderr}");
    assert!(took < Duration::from_secs(15), "start-up hung for {took:?}");
    write_hostile_config(dir.path(), "{list: huge}");
    let (ok, stderr, _) = serve_until_exit(dir.path()).await;
    assert!(!ok && stderr.contains("at most 1000"), "{stderr}");
}

#[tokio::test]
async fn log_is_bounded_and_cannot_forge_lines() {
    let dir = tempfile::tempdir().unwrap();
    let relay = hostile(dir.path(), "{}", "{}", "{deadline_ms: 5000}", "backends: []\n").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("log_flood", json!({"n": 200})).await), "logged 200");
    let log = relay.log();
    assert!(log.len() < 2 << 20, "one call wrote {} KB of log", log.len() >> 10);
    assert!(!log.lines().any(|l| l.starts_with("2026-11-30T00:00:00")), "a forged line");
    assert!(!log.contains('\r'));
    assert!(relay.plugin_status("hostile").await["logs_dropped"].as_u64().unwrap() > 100);
    let metrics = reqwest::get(relay.http("/metrics")).await.unwrap().text().await.unwrap();
    let dropped = relay_tests::metric_value(&metrics, r#"relay_plugin_logs_dropped_total{plugin="hostile"}"#);
    assert!(dropped.is_some_and(|n| n > 100.0), "{metrics}");
}

#[tokio::test]
async fn reaching_a_backend_is_a_grant_and_passes_policy() {
    let dir = tempfile::tempdir().unwrap();
    let backends = format!("backends:\n{}", stdio_fixture_entry("b", &[]));
    let relay = hostile(dir.path(), "{}", "{}", "{deadline_ms: 5000}", &backends).await;
    relay.wait_ready("b").await;
    let mut client = relay.line_client().await;
    let text = text_of(&client.call_tool("call_backend", json!({"backend": "b", "tool": "echo"})).await);
    assert!(text.contains("not in this plugin's grants.backends"), "{text}");
    drop(relay);

    // Granted, the call runs as the client: one call per minute means the adapter's backend
    // call is the client's second request, and refused.
    let dir = tempfile::tempdir().unwrap();
    let limiter = copy_plugin(dir.path(), "rate_limit");
    let wasm = copy_plugin(dir.path(), "hostile_adapter");
    let yaml = format!(
        "{TEST_RELAY_YAML}plugin_cache_dir: cache\nplugins:\n  - {{name: rate-limit, world: policy, path: {}, grants: {{clock: true}}, config: {{per_minute: 1}}}}\n  - {{name: hostile, world: adapter, path: {}, grants: {{backends: [b/echo]}}, limits: {{deadline_ms: 5000}}}}\n",
        limiter.display(),
        wasm.display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, &backends, &[]).await;
    let mut client = relay.line_client().await;
    let text = text_of(&client.call_tool("call_backend", json!({"backend": "b", "tool": "echo"})).await);
    assert!(text.contains("refused by policy") && text.contains("rate limit"), "{text}");
    drop(relay);

    // A policy bound to the tool's catalog name, prefixed because another backend offers echo
    // too, binds the adapter's call of b's echo (which names it by b's own name) as well.
    let dir = tempfile::tempdir().unwrap();
    let limiter = copy_plugin(dir.path(), "rate_limit");
    let wasm = copy_plugin(dir.path(), "hostile_adapter");
    let yaml = format!(
        "{TEST_RELAY_YAML}plugin_cache_dir: cache\nplugins:\n  - {{name: rate-limit, world: policy, path: {}, bind: {{tools: [b__echo]}}, grants: {{clock: true}}, config: {{per_minute: 1}}}}\n  - {{name: hostile, world: adapter, path: {}, grants: {{backends: [b/echo]}}, limits: {{deadline_ms: 5000}}}}\n",
        limiter.display(),
        wasm.display()
    );
    let two = format!("backends:\n{}{}", stdio_fixture_entry("b", &[]), stdio_fixture_entry("c", &[]));
    let relay = Relay::start_files(dir.path(), &yaml, &two, &[]).await;
    relay.wait_ready("b").await;
    relay.wait_ready("c").await;
    let mut client = relay.line_client().await;
    let through = json!({"backend": "b", "tool": "echo"});
    let first = text_of(&client.call_tool("call_backend", through.clone()).await);
    assert!(!first.contains("refused"), "{first}");
    let second = text_of(&client.call_tool("call_backend", through).await);
    assert!(second.contains("refused by policy") && second.contains("rate limit"), "{second}");
}

#[tokio::test]
async fn memory_is_bounded_per_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "{deadline_ms: 20000, memory_mb: 64, max_concurrent_calls: 4, max_idle_instances: 2}";
    let relay = hostile(dir.path(), "{}", "{}", limits, "backends: []\n").await;
    let before = relay.rss_bytes();
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let port = relay.port;
            tokio::spawn(async move {
                let mut client = relay_tests::LineClient::connect(port).await;
                client.request("initialize", json!({"protocolVersion": "2025-06-18"})).await;
                client.call_tool("hold", json!({"mb": 48, "ms": 150})).await
            })
        })
        .collect();
    let mut peak = 0;
    while calls.iter().any(|c| !c.is_finished()) {
        peak = peak.max(relay.rss_bytes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        assert_eq!(text_of(&call.await.unwrap()), format!("held {}", 48 << 20));
    }
    let peak_growth = peak.saturating_sub(before) >> 20;
    assert!(peak_growth < 400, "24 calls of 48 MiB raised RSS by {peak_growth} MB with 4 at once");
    eventually("grown instances not kept warm", || async {
        (relay.rss_bytes().saturating_sub(before) < 150 << 20).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rollback_sticks() {
    let dir = tempfile::tempdir().unwrap();
    let relay = hostile(dir.path(), "{}", "{}", "{deadline_ms: 5000}", "backends: []\n").await;
    let path = dir.path().join("hostile_adapter.wasm");
    let original = relay.plugin_status("hostile").await["hash"].as_str().unwrap().to_owned();
    replace_file(&path, &rebuilt(&std::fs::read(&path).unwrap(), "v2"));
    eventually("v2 loaded", || async {
        (relay.plugin_status("hostile").await["hash"] != original.as_str()).then_some(())
    })
    .await;
    let mut client = relay.line_client().await;
    let rolled = client.call_tool("relay_rollback_plugin", json!({"name": "hostile"})).await;
    assert!(rolled.get("result").is_some(), "{rolled}");
    assert_eq!(relay.plugin_status("hostile").await["hash"], original.as_str());
    relay.signal("-HUP");
    relay.wait_for_log("SIGHUP: reloading plugins").await;
    let reloaded = client.call_tool("relay_reload_plugins", json!({})).await;
    assert!(reloaded.to_string().contains("rolled back"), "{reloaded}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(relay.plugin_status("hostile").await["hash"], original.as_str(), "the rolled-back file came back");
    // Entries in relay.yaml are not reloaded: the relay says so rather than answer "unchanged".
    let yaml = std::fs::read_to_string(dir.path().join("relay.yaml")).unwrap();
    std::fs::write(dir.path().join("relay.yaml"), yaml.replace("deadline_ms: 5000", "deadline_ms: 6000")).unwrap();
    relay.signal("-HUP");
    relay.wait_for_log("differ from the running ones").await;
    // A new file is loaded as usual.
    replace_file(&path, &rebuilt(&std::fs::read(&path).unwrap(), "v3"));
    eventually("v3 loaded", || async {
        (relay.plugin_status("hostile").await["hash"] != original.as_str()).then_some(())
    })
    .await;
}

/// A writable directory grant is made private to the relay's user, and one another local user
/// could have prepared (a predictable path in `/tmp` made first, open to all) is refused: what
/// the plugin writes there (Fiedler's answers) is no other user's to read or replace.
#[test]
fn a_writable_grant_is_private_to_the_relay_and_one_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let wasm = copy_plugin(dir.path(), "hostile_adapter");
    let out = dir.path().join("out");
    let yaml = format!(
        "plugin_cache_dir: cache\nplugins:\n  - {{name: hostile, world: adapter, path: {}, grants: {{files: {{write: [{}]}}}}}}\n",
        wasm.display(),
        out.display()
    );
    std::fs::write(dir.path().join("relay.yaml"), yaml).unwrap();
    std::fs::write(dir.path().join("backends.yaml"), "backends: []\n").unwrap();
    let check = || {
        let output = std::process::Command::new(relay_tests::relay_bin())
            .args(["check-config", "--config"])
            .arg(dir.path().join("relay.yaml"))
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, stderr) = check();
    assert!(ok, "{stderr}");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "made for the relay's user alone");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, stderr) = check();
    assert!(!ok && stderr.contains("others may write it"), "{stderr}");
}
