//! The load tool (`relay-load`, issue 14) against a test relay, small N: the reference stress
//! test over every transport, a run that must fail the plan's criteria, hold, rate, and auth.

use std::process::Output;

use serde_json::Value;

use relay_tests::haproxy::free_port;
use relay_tests::{Fixture, Relay, TEST_RELAY_YAML, copy_plugin, echo_backend_bin, load_bin};

async fn load(args: &[&str]) -> (Output, Value) {
    let out = tokio::process::Command::new(load_bin()).args(args).arg("--json").output().await.expect("run relay-load");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"));
    (out, summary)
}

async fn relay_with_alpha(alpha: &Fixture) -> Relay {
    let relay = Relay::start_with(TEST_RELAY_YAML, &format!("backends:\n{}", alpha.entry()), &[]).await;
    relay.wait_ready("alpha").await;
    relay
}

#[tokio::test]
async fn the_reference_scenario_passes_over_every_transport() {
    let alpha = Fixture::start("alpha").await;
    let relay = relay_with_alpha(&alpha).await;
    let urls = [
        (format!("tcp://127.0.0.1:{}", relay.port), "newline", false),
        (relay.ws("/ws"), "websocket", false),
        (relay.http("/mcp"), "http", false),
        (relay.http("/mcp"), "stateless-http", true),
    ];
    for (url, transport, stateless) in urls {
        let mut args = vec!["--scenario", "reference", "--clients", "20", url.as_str()];
        if stateless {
            args.push("--stateless");
        }
        let (out, summary) = load(&args).await;
        assert!(out.status.success(), "{transport}: {summary}");
        assert_eq!(summary["transport"], transport);
        assert_eq!(summary["successes"], 20, "{transport}: {summary}");
        assert_eq!(summary["failures"], 0, "{transport}: {summary}");
        assert_eq!(summary["passed"], true);
        for key in ["p50", "p95", "p99", "max", "avg"] {
            assert!(summary["latency_ms"][key].as_f64().unwrap() > 0.0, "{transport} {key}: {summary}");
        }
        assert!(summary["calls_per_s"].as_f64().unwrap() > 0.0);
        assert!(summary["rss_before"].as_u64().unwrap() > 1_000_000, "the relay's /metrics is read: {summary}");
    }
}

#[tokio::test]
async fn a_backend_that_answers_too_slowly_fails_the_criteria_with_exit_1() {
    let alpha = Fixture::start("alpha").await;
    let relay = relay_with_alpha(&alpha).await;
    let url = format!("tcp://127.0.0.1:{}", relay.port);
    let args = ["--clients", "10", "--tool", "slow", "--args", r#"{"ms": 300}"#, "--max-avg-ms", "100", url.as_str()];
    let (out, summary) = load(&args).await;
    assert_eq!(out.status.code(), Some(1), "{summary}");
    assert_eq!(summary["passed"], false);
    assert_eq!(summary["successes"], 10, "every call answered, just slowly");
    assert!(summary["why_failed"][0].as_str().unwrap().contains("average"), "{summary}");

    // Failures count against the success criterion, by kind.
    let args = ["--clients", "10", "--tool", "no_such_tool", url.as_str()];
    let (out, summary) = load(&args).await;
    assert_eq!(out.status.code(), Some(1), "{summary}");
    assert_eq!(summary["failures"], 10);
    assert_eq!(summary["errors"]["rpc -32602"]["count"], 10, "{summary}");
}

#[tokio::test]
async fn hold_keeps_every_session_open_then_all_call_and_rate_calls_for_its_duration() {
    let alpha = Fixture::start("alpha").await;
    let relay = relay_with_alpha(&alpha).await;
    let (out, summary) = load(&[
        "--scenario",
        "hold",
        "--clients",
        "60",
        "--tool",
        "echo",
        "--args",
        r#"{"message": "m"}"#,
        &relay.ws("/ws"),
    ])
    .await;
    assert!(out.status.success(), "{summary}");
    assert_eq!(summary["sessions_held"], 60, "{summary}");
    assert_eq!(summary["successes"], 60);
    assert!(summary["rss_holding"].as_u64().unwrap() > 1_000_000);

    let args = [
        "--scenario",
        "rate",
        "--connections",
        "2",
        "--duration",
        "1",
        "--tool",
        "echo",
        "--args",
        r#"{"message": "m"}"#,
    ];
    let url = relay.http("/mcp");
    let (out, summary) = load(&[&args[..], &[url.as_str()]].concat()).await;
    assert!(out.status.success(), "{summary}");
    assert!(summary["successes"].as_u64().unwrap() > 10, "{summary}");
    assert!((0.9..3.0).contains(&summary["duration_s"].as_f64().unwrap()), "{summary}");

    // A fixed rate: about 20 calls in a second, not as many as possible.
    let (_, summary) = load(&[&args[..], &["--rate", "20", url.as_str()]].concat()).await;
    let calls = summary["successes"].as_u64().unwrap();
    assert!((10..=30).contains(&calls), "{summary}");
}

#[tokio::test]
async fn a_bearer_token_is_presented_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let auth = copy_plugin(dir.path(), "token_auth");
    let yaml = format!(
        "plugins:\n  - name: auth\n    world: auth\n    path: {}\n    config:\n      tokens:\n        - {{token: load-token, principal: ops, roles: [admin]}}\n",
        auth.display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    for url in [format!("tcp://127.0.0.1:{}", relay.port), relay.ws("/ws"), relay.http("/mcp")] {
        let (out, summary) = load(&["--clients", "5", "--token", "load-token", url.as_str()]).await;
        assert!(out.status.success(), "{url}: {summary}");
        let (out, summary) = load(&["--clients", "5", "--token", "wrong", url.as_str()]).await;
        assert_eq!(out.status.code(), Some(1), "{url}: {summary}");
        assert_eq!(summary["failures"], 5, "{url}: {summary}");
    }
}

#[tokio::test]
async fn https_and_wss_against_a_tls_only_relay_with_the_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = relay_tests::pki::TestCa::new(dir.path(), "load-ca");
    ca.server("relay", "server");
    let yaml = format!("{TEST_RELAY_YAML}tls: {{cert: server.crt, key: server.key, required: true}}\n");
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let ca_pem = ca.ca_pem.display().to_string();
    let https = format!("https://localhost:{}/mcp", relay.port);
    let wss = format!("wss://localhost:{}/ws", relay.port);
    for (url, transport, stateless) in
        [(&https, "http", false), (&https, "stateless-http", true), (&wss, "websocket", false)]
    {
        let mut args = vec!["--scenario", "reference", "--clients", "10", "--ca", &ca_pem, url.as_str()];
        if stateless {
            args.push("--stateless");
        }
        let (out, summary) = load(&args).await;
        assert!(out.status.success(), "{transport}: {summary}");
        assert_eq!(
            (summary["transport"].as_str(), summary["successes"].as_u64()),
            (Some(transport), Some(10)),
            "{summary}"
        );
        assert!(summary["rss_before"].as_u64().unwrap() > 1_000_000, "/metrics over https: {summary}");
    }
    // Without the CA the relay's certificate is not trusted: every client fails to connect.
    let (out, summary) = load(&["--scenario", "reference", "--clients", "3", wss.as_str()]).await;
    assert_eq!(out.status.code(), Some(1), "{summary}");
    assert_eq!(summary["errors"]["connect"]["count"], 3, "{summary}");
}

#[tokio::test]
async fn a_thousand_clients_from_one_address_pass_on_the_shipped_limits() {
    // config/relay.yaml as shipped (its plugins found where the test build put them), the rate
    // limit raised as an operator would for a stress test.
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(relay_tests::repo_root().join("config/relay.yaml")).unwrap();
    let plugins = relay_tests::repo_root().join("target/plugins");
    let yaml = shipped.replace("../target/plugins", plugins.to_str().unwrap());
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[("RELAY_RATE_LIMIT", "100000000")]).await;
    let urls = [
        (format!("tcp://127.0.0.1:{}", relay.port), "newline"),
        (relay.ws("/ws"), "websocket"),
        (relay.http("/mcp"), "http"),
    ];
    for (url, transport) in urls {
        let (out, summary) = load(&["--scenario", "reference", "--clients", "1000", url.as_str()]).await;
        assert!(out.status.success(), "{transport}: {summary}");
        assert_eq!(summary["successes"], 1000, "{transport}: {summary}");
    }
}

#[tokio::test]
async fn the_echo_backend_answers_the_reference_clients_on_its_newline_port() {
    // bench.sh's floor for the reference scenario: the same clients against a server that only
    // answers. Its notification is not answered, its `echo` is, and a line that is not JSON (the
    // load tool's GET for /metrics) ends the connection instead of hanging the run.
    let (port, lines) = (free_port(), free_port());
    let _backend = tokio::process::Command::new(echo_backend_bin())
        .args(["--port", &port.to_string(), "--line-port", &lines.to_string()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start echo-backend");
    let deadline = tokio::time::Instant::now() + relay_tests::PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", lines)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the newline port never opened");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url = format!("tcp://127.0.0.1:{lines}");
    let args = ["--scenario", "reference", "--clients", "50", "--tool", "echo", "--args", r#"{"message":"hi"}"#];
    let (out, summary) = load(&[&args[..], &[url.as_str()]].concat()).await;
    assert!(out.status.success(), "{summary}");
    assert_eq!(summary["successes"], 50, "{summary}");
    assert_eq!(summary["failures"], 0, "{summary}");
    // Any other tool is an error answer, which the load tool counts as a failed client.
    let (out, summary) = load(&["--scenario", "reference", "--clients", "3", url.as_str()]).await;
    assert_eq!(out.status.code(), Some(1), "{summary}");
    assert_eq!(summary["failures"], 3, "{summary}");
}
