//! Observability (issue 13): Prometheus metrics on the relay's port and on the private
//! listener, the shipped alert rules under promtool, and a real Prometheus scraping a real
//! relay and seeing a backend go down.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use relay_tests::{
    Fixture, Relay, TEST_RELAY_YAML, copy_plugin, eventually, metric_value as value, repo_root, text_of,
};

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy/prometheus")
}

/// A relay.yaml with the private metrics listener and the echo adapter plugin.
fn relay_yaml(dir: &Path) -> String {
    let echo = copy_plugin(dir, "echo_adapter");
    format!(
        "{TEST_RELAY_YAML}metrics: {{listen: '127.0.0.1:0'}}\nplugins:\n  - name: echoes\n    world: adapter\n    path: {}\n    config: {{prefix: 'echo: '}}\n",
        echo.display()
    )
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape");
    assert!(response.status().is_success(), "{url}: {}", response.status());
    let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_shipped_alert_rules_and_scrape_config_pass_promtool() {
    let dir = deploy_dir();
    for args in [
        vec!["check", "rules", "relay-alerts.yml"],
        vec!["check", "config", "prometheus.yml"],
        vec!["test", "rules", "relay-alerts.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (installed by scripts/test.sh)");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {args:?}: {said}");
    }
}

#[tokio::test]
async fn metrics_count_requests_errors_plugins_and_backends() {
    let mut alpha = Fixture::start("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_files(
        dir.path(),
        &relay_yaml(dir.path()),
        &format!("backends:\n{}", alpha.entry()),
        &[("RELAY_INSTANCE", "blue")],
    )
    .await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    assert_eq!(text_of(&client.call_tool("alpha__echo", json!({"message": "m"})).await), "alpha: m");
    assert_eq!(text_of(&client.call_tool("echoes__echo", json!({"message": "m"})).await), "echo: m");
    assert!(client.call_tool("no_such_tool", json!({})).await.get("error").is_some());

    let text = scrape(&relay.http("/metrics")).await;
    let at = |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert!(at(r#"relay_requests_total{method="tools/call",outcome="ok"}"#) >= 2.0);
    assert!(at(r#"relay_requests_total{method="tools/call",outcome="error"}"#) >= 1.0);
    assert!(at(r#"relay_errors_total{kind="client"}"#) >= 1.0);
    assert!(at(r#"relay_request_duration_seconds_count{method="tools/call"}"#) >= 3.0);
    assert_eq!(at(r#"relay_backend_health{backend="alpha"}"#), 1.0);
    assert!(at(r#"relay_backend_requests_total{backend="alpha",outcome="ok"}"#) >= 1.0);
    assert!(at(r#"relay_plugin_calls_total{plugin="echoes",outcome="ok"}"#) >= 1.0);
    assert!(at(r#"relay_plugin_call_duration_seconds_count{plugin="echoes"}"#) >= 1.0);
    assert_eq!(at(r#"relay_connections{transport="line"}"#), 1.0);
    assert_eq!(at("relay_sessions"), 1.0);
    assert_eq!(at(r#"relay_build_info{version="0.1.0",colour="blue"}"#), 1.0);
    assert!(at("process_resident_memory_bytes") > 1e6);
    assert!(text.contains("process_cpu_seconds_total "), "{text}");
    assert!(!text.contains("no_such_tool"), "tool names from clients are not labels");

    // The private listener serves the same metrics, and nothing else of the relay.
    let private = format!("http://127.0.0.1:{}", relay.metrics_port.expect("metrics.listen is set"));
    assert!(scrape(&format!("{private}/metrics")).await.contains(r#"relay_backend_health{backend="alpha"} 1"#));
    assert_eq!(reqwest::get(format!("{private}/mcp")).await.unwrap().status(), 404);

    alpha.kill().await;
    let url = relay.http("/metrics");
    eventually("alpha's health turns 0", || {
        let url = url.clone();
        async move {
            let text = scrape(&url).await;
            let down = value(&text, r#"relay_backend_health{backend="alpha"}"#) == Some(0.0);
            let reconnects = value(&text, r#"relay_backend_reconnects_total{backend="alpha"}"#).unwrap_or(0.0);
            (down && reconnects >= 1.0).then_some(())
        }
    })
    .await;
}

/// A running Prometheus server; killed on drop.
struct Prometheus {
    _child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with the shipped scrape config, its target pointed at `target`
    /// (host:port) and scraping every second.
    async fn start(target: &str) -> Prometheus {
        let shipped = std::fs::read_to_string(deploy_dir().join("prometheus.yml")).unwrap();
        let mut config: serde_yaml::Value = serde_yaml::from_str(&shipped).unwrap();
        config["global"]["scrape_interval"] = "1s".into();
        config["global"]["evaluation_interval"] = "1s".into();
        let rules = deploy_dir().join("relay-alerts.yml");
        config["rule_files"] = serde_yaml::to_value([rules.display().to_string()]).unwrap();
        let job = &mut config["scrape_configs"][0];
        assert_eq!(job["job_name"], "relay");
        job["static_configs"] =
            serde_yaml::to_value([json!({"targets": [target], "labels": {"colour": "blue"}})]).unwrap();
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("prometheus.yml");
        std::fs::write(&file, serde_yaml::to_string(&config).unwrap()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.path().join("prometheus.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus (installed by scripts/test.sh)");
        Prometheus { _child: child, port, _data: data }
    }

    /// The value of an instant query's first series, if it has one.
    async fn query(&self, query: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let response = reqwest::Client::new().get(url).query(&[("query", query)]).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        body.pointer("/data/result/0/value/1").and_then(Value::as_str).map(str::to_owned)
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_relay_and_sees_a_backend_go_down() {
    let mut alpha = Fixture::start("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let relay =
        Relay::start_files(dir.path(), &relay_yaml(dir.path()), &format!("backends:\n{}", alpha.entry()), &[]).await;
    relay.wait_ready("alpha").await;
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", relay.metrics_port.unwrap())).await;
    let wait_for = |query: &'static str, expected: &'static str| {
        let prometheus = &prometheus;
        async move {
            eventually(&format!("Prometheus reads {query} = {expected}"), || async {
                (prometheus.query(query).await.as_deref() == Some(expected)).then_some(())
            })
            .await
        }
    };
    wait_for(r#"up{job="relay",colour="blue"}"#, "1").await;
    wait_for(r#"relay_backend_health{backend="alpha"}"#, "1").await;
    // The request latency histogram is one Prometheus can take HighLatencyP99's quantile of
    // (without a `+Inf` bucket the quantile is NaN and the alert can never fire).
    let p99 = r#"histogram_quantile(0.99, sum by (le) (rate(relay_request_duration_seconds_bucket[1m])))"#;
    let mut client = relay.line_client().await;
    let mut quantile = None;
    for _ in 0..200 {
        client.request("ping", json!({})).await;
        quantile = prometheus.query(p99).await.filter(|v| v.parse::<f64>().is_ok_and(f64::is_finite));
        if quantile.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(quantile.is_some(), "no p99 from the relay's histogram: {:?}", prometheus.query(p99).await);
    alpha.kill().await;
    wait_for(r#"relay_backend_health{backend="alpha"}"#, "0").await;
    // The shipped rules are loaded and evaluated against the relay's series.
    let rules = reqwest::get(format!("http://127.0.0.1:{}/api/v1/rules", prometheus.port))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let names: Vec<&str> =
        rules["data"]["groups"][0]["rules"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"BackendDown") && names.contains(&"HighErrorRate"), "{names:?}");
    eventually("BackendDown is pending for alpha", || async {
        let alerts: Value = reqwest::get(format!("http://127.0.0.1:{}/api/v1/alerts", prometheus.port))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["labels"]["alertname"] == "BackendDown" && a["labels"]["backend"] == "alpha")
            .then_some(())
    })
    .await;
}

/// The DOM of `url` after a real headless browser (Debian's chromium) loaded it.
fn browser_dom(url: &str, profile: &Path) -> String {
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .expect("chromium (installed by scripts/test.sh)");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_status_page_shows_backends_and_plugins_in_a_real_browser() {
    let alpha = Fixture::start("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_files(
        dir.path(),
        &relay_yaml(dir.path()),
        &format!("backends:\n{}", alpha.entry()),
        &[("RELAY_INSTANCE", "green")],
    )
    .await;
    relay.wait_ready("alpha").await;
    let mut client = relay.line_client().await;
    client.call_tool("alpha__echo", json!({"message": "m"})).await;

    let url = relay.http("/status");
    let profile = dir.path().join("chromium");
    let dom = tokio::task::spawn_blocking(move || browser_dom(&url, &profile)).await.unwrap();
    assert!(dom.contains("relay green"), "{dom}");
    let backends = &dom[dom.find("id=\"backends\"").expect("backends table")..];
    assert!(backends.contains("<td>alpha</td>") && backends.contains(">ready<"), "{backends}");
    let plugins = &dom[dom.find("id=\"plugins\"").expect("plugins table")..];
    assert!(plugins.contains("<td>echoes</td>") && plugins.contains("<td>adapter</td>"), "{plugins}");
    assert!(dom.contains("id=\"log-forward\""));
    // What an operator asks first: ready or draining, the kv, TLS, and since when a backend
    // is in its state.
    let state = &dom[dom.find("id=\"state\"").expect("state line")..];
    assert!(state.contains(">ready<") && state.contains("kv memory") && state.contains("reachable"), "{state}");
    assert!(backends.contains(" ago<"), "{backends}");

    let report: Value = reqwest::get(relay.http("/status.json")).await.unwrap().json().await.unwrap();
    assert_eq!(report["instance"], "green");
    assert_eq!((report["state"].as_str(), report["draining_since"].is_null()), (Some("ready"), true), "{report}");
    assert_eq!((report["kv"]["backend"].as_str(), report["kv"]["reachable"].as_bool()), (Some("memory"), Some(true)));
    assert!(report["tls"].is_null(), "no TLS here: {report}");
    assert_eq!(report["sessions_by_transport"]["line"], 1, "{report}");
    let alpha_status = report["backends"].as_array().unwrap().iter().find(|b| b["name"] == "alpha").unwrap();
    assert!(alpha_status["requests"].as_u64().unwrap() >= 1, "{alpha_status}");
    assert!(alpha_status.get("target").is_none(), "no backend addresses on the page");
    let since = alpha_status["state_since"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(since <= now && now - since < 120, "{alpha_status}");
    let private = format!("http://127.0.0.1:{}/status", relay.metrics_port.unwrap());
    assert!(reqwest::get(private).await.unwrap().text().await.unwrap().contains("<td>alpha</td>"));
}

#[tokio::test]
async fn with_an_auth_plugin_the_status_needs_an_admin_on_the_main_port() {
    const ADMIN: &str = "admin-token-5e1f";
    let dir = tempfile::tempdir().unwrap();
    let auth = copy_plugin(dir.path(), "token_auth");
    let yaml = format!(
        "metrics: {{listen: '127.0.0.1:0'}}\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config:\n      tokens:\n        - {{token: {ADMIN}, principal: ops, roles: [admin]}}\n        - {{token: user-token, principal: user}}\n",
        auth.display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(relay.http(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for path in ["/status", "/status.json"] {
        assert_eq!(get(path, None).await.unwrap().status(), 401, "{path}");
        assert_eq!(get(path, Some("wrong")).await.unwrap().status(), 401, "{path}");
        assert_eq!(get(path, Some("user-token")).await.unwrap().status(), 403, "{path}");
        assert_eq!(get(path, Some(ADMIN)).await.unwrap().status(), 200, "{path}");
    }
    // The private listener is the operator's own: open.
    let private = format!("http://127.0.0.1:{}/status.json", relay.metrics_port.unwrap());
    assert_eq!(reqwest::get(private).await.unwrap().status(), 200);
}

/// Blue and green share one relay.yaml: `RELAY_METRICS_LISTEN` gives each colour its own private
/// metrics port (what deploy/systemd/*.env and deploy/prometheus/prometheus.yml rely on).
#[tokio::test]
async fn relay_metrics_listen_overrides_the_configured_metrics_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let relay = Relay::start_files(
        dir.path(),
        "metrics: {listen: '127.0.0.1:0'}\n",
        "backends: []\n",
        &[("RELAY_METRICS_LISTEN", listen.as_str()), ("RELAY_INSTANCE", "green")],
    )
    .await;
    assert_eq!(relay.metrics_port, Some(port));
    let text = scrape(&format!("http://{listen}/metrics")).await;
    assert!(text.contains(r#"relay_build_info{version="#) && text.contains(r#"colour="green""#), "{text}");
}

/// What does not load on disk is shown for as long as it does not (what a restart would fail
/// on): the backends file (watched), relay.yaml (read again on SIGHUP) and a plugin's file; a
/// log line alone was all there was, and the reload alert cleared itself 15 minutes after a
/// failure while the bad file stayed.
#[tokio::test]
async fn files_that_do_not_load_are_shown_until_they_load_again() {
    let dir = tempfile::tempdir().unwrap();
    let relay_yaml = relay_yaml(dir.path());
    let relay = Relay::start_files(dir.path(), &relay_yaml, "backends: []\n", &[]).await;
    let url = format!("http://127.0.0.1:{}/metrics", relay.metrics_port.unwrap());
    let shown = |series: &'static str, wanted: f64| {
        let url = url.clone();
        async move {
            let text = scrape(&url).await;
            (value(&text, series) == Some(wanted)).then_some(())
        }
    };
    let (backends, relay_file) =
        (r#"relay_config_file_rejected{file="backends"}"#, r#"relay_config_file_rejected{file="relay"}"#);
    let plugin = r#"relay_plugin_reload_failing{plugin="echoes"}"#;
    for series in [backends, relay_file, plugin] {
        eventually(series, || shown(series, 0.0)).await;
    }
    std::fs::write(relay.backends_path(), "backends:\n  - name: 'bad name!'\n    url: http://127.0.0.1:9/\n").unwrap();
    eventually("the backends file rejected", || shown(backends, 1.0)).await;
    std::fs::write(dir.path().join("relay.yaml"), format!("{relay_yaml}bogus_key: 1\n")).unwrap();
    std::fs::write(dir.path().join("echo_adapter.wasm"), b"not a component").unwrap();
    relay.signal("-HUP");
    eventually("relay.yaml rejected", || shown(relay_file, 1.0)).await;
    eventually("the plugin's file rejected", || shown(plugin, 1.0)).await;
    relay.wait_for_log("relay.yaml no longer loads").await;
    // Still shown a while later; then each loads again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for series in [backends, relay_file, plugin] {
        assert_eq!(value(&scrape(&url).await, series), Some(1.0), "{series}");
    }
    std::fs::write(relay.backends_path(), "backends: []\n").unwrap();
    std::fs::write(dir.path().join("relay.yaml"), &relay_yaml).unwrap();
    copy_plugin(dir.path(), "echo_adapter");
    relay.signal("-HUP");
    for series in [backends, relay_file, plugin] {
        eventually(series, || shown(series, 0.0)).await;
    }
}
