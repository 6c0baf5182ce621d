//! Shared state on Redis (`kv: {backend: redis}`), with a real `redis-server`: blue and green
//! share one rate-limit budget and Fiedler's run-time settings; Redis killed mid-run makes `kv`
//! unavailable (the rate limiter fails open or closed as configured, logged and counted), and
//! the relay recovers when Redis is back, without a restart.

use std::path::Path;

use relay_tests::{LineClient, RedisServer, Relay, copy_plugin, eventually, metric_value};
use serde_json::{Value, json};

/// A relay.yaml on `redis` with the given plugins section.
fn relay_yaml(redis: &RedisServer, namespace: &str, plugins: &str) -> String {
    format!(
        "kv: {{backend: redis, url: '{}', namespace: {namespace}, timeout_ms: 50}}\nplugin_cache_dir: cache\nplugins:\n{plugins}",
        redis.url()
    )
}

fn rate_limit(dir: &Path, on_kv_unavailable: &str) -> String {
    let wasm = copy_plugin(dir, "rate_limit");
    format!(
        "  - name: rate-limit\n    world: policy\n    path: {}\n    grants: {{clock: true}}\n    config: {{per_minute: 100, on_kv_unavailable: {on_kv_unavailable}}}\n",
        wasm.display()
    )
}

async fn start(dir: &Path, yaml: &str, colour: &str) -> Relay {
    Relay::start_files(dir, yaml, "backends: []\n", &[("RELAY_INSTANCE", colour)]).await
}

async fn status_call(client: &mut LineClient) -> Value {
    client.call_tool("relay_get_status", json!({})).await
}

#[tokio::test]
async fn blue_and_green_share_one_rate_limit_budget() {
    let redis = RedisServer::start().await;
    let (blue_dir, green_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let blue = start(blue_dir.path(), &relay_yaml(&redis, "prod", &rate_limit(blue_dir.path(), "open")), "blue").await;
    let green =
        start(green_dir.path(), &relay_yaml(&redis, "prod", &rate_limit(green_dir.path(), "open")), "green").await;
    let (mut on_blue, mut on_green) = (blue.line_client().await, green.line_client().await);

    // Alternate colours: 100 calls pass in all, the 101st is refused whichever colour serves it.
    let mut passed = 0;
    for n in 0..100 {
        let client = if n % 2 == 0 { &mut on_blue } else { &mut on_green };
        let reply = status_call(client).await;
        assert!(reply.get("result").is_some(), "call {n}: {reply}");
        passed += 1;
    }
    assert_eq!(passed, 100);
    for client in [&mut on_blue, &mut on_green] {
        let refused = status_call(client).await;
        assert_eq!(refused["error"]["code"], -32019, "{refused}");
    }
    // The state lives under the deployment's namespace and the plugin's prefix.
    let keys = redis.cli(&["--scan", "--pattern", "prod:rate-limit:*"]);
    assert!(keys.contains("prod:rate-limit:principal:"), "{keys}");

    // Another deployment (namespace) on the same Redis has a budget of its own.
    let other_dir = tempfile::tempdir().unwrap();
    let other =
        start(other_dir.path(), &relay_yaml(&redis, "staging", &rate_limit(other_dir.path(), "open")), "blue").await;
    let reply = status_call(&mut other.line_client().await).await;
    assert!(reply.get("result").is_some(), "{reply}");
}

#[tokio::test]
async fn fiedler_settings_made_on_one_colour_are_seen_by_the_other() {
    let redis = RedisServer::start().await;
    let fiedler = |dir: &Path| {
        let wasm = copy_plugin(dir, "fiedler");
        std::fs::create_dir_all(dir.join("out")).unwrap();
        format!(
            "  - name: fiedler\n    world: adapter\n    path: {}\n    grants: {{clock: true, files: {{write: [out]}}}}\n    config:\n      output_dir: {}\n      default_models: [gpt-4o]\n      models:\n        gpt-4o: {{base_url: 'http://127.0.0.1:9/v1'}}\n        deepseek: {{base_url: 'http://127.0.0.1:9/v1'}}\n",
            wasm.display(),
            dir.join("out").display()
        )
    };
    let (blue_dir, green_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let blue = start(blue_dir.path(), &relay_yaml(&redis, "prod", &fiedler(blue_dir.path())), "blue").await;
    let green = start(green_dir.path(), &relay_yaml(&redis, "prod", &fiedler(green_dir.path())), "green").await;
    let set = blue.line_client().await.call_tool("fiedler_set_models", json!({"models": ["deepseek"]})).await;
    assert_eq!(set["result"]["structuredContent"]["default_models"], json!(["deepseek"]), "{set}");
    let seen = green.line_client().await.call_tool("fiedler_get_config", json!({})).await;
    assert_eq!(seen["result"]["structuredContent"]["default_models"], json!(["deepseek"]), "{seen}");
}

#[tokio::test]
async fn a_redis_outage_fails_open_or_closed_as_configured_and_the_relay_recovers() {
    let mut redis = RedisServer::start().await;
    let (open_dir, closed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = start(open_dir.path(), &relay_yaml(&redis, "a", &rate_limit(open_dir.path(), "open")), "blue").await;
    let closed =
        start(closed_dir.path(), &relay_yaml(&redis, "b", &rate_limit(closed_dir.path(), "closed")), "green").await;
    let (mut to_open, mut to_closed) = (open.line_client().await, closed.line_client().await);
    assert!(status_call(&mut to_open).await.get("result").is_some());
    assert!(status_call(&mut to_closed).await.get("result").is_some());

    redis.kill().await;
    let allowed = status_call(&mut to_open).await;
    assert!(allowed.get("result").is_some(), "fail open: {allowed}");
    let refused = status_call(&mut to_closed).await;
    assert_eq!(refused["error"]["code"], -32019, "fail closed: {refused}");
    assert!(refused.to_string().contains("unavailable"), "{refused}");
    open.wait_for_log("failing open").await;
    closed.wait_for_log("failing closed").await;
    // Every request is refused, but the log says so once per 10 s, not once per request.
    for _ in 0..30 {
        assert_eq!(status_call(&mut to_closed).await["error"]["code"], -32019);
    }
    let records = closed.log().matches("failing closed").count();
    assert!(records <= 2, "{records} warnings for 31 refusals:\n{}", closed.log());
    let metrics = reqwest::get(closed.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric_value(&metrics, "relay_kv_unavailable_total").unwrap_or(0.0) >= 1.0, "{metrics}");
    let kv = &status_call(&mut to_open).await["result"]["structuredContent"]["kv"];
    assert_eq!((kv["backend"].as_str(), kv["reachable"].as_bool()), (Some("redis"), Some(false)), "{kv}");

    // Back without a restart of either relay.
    redis.restart().await;
    eventually("the fail-closed relay serving again", || async {
        status_call(&mut closed.line_client().await).await.get("result").map(|_| ())
    })
    .await;
    let kv = &status_call(&mut closed.line_client().await).await["result"]["structuredContent"]["kv"];
    assert_eq!(kv["reachable"], true, "{kv}");
    let keys = redis.cli(&["--scan", "--pattern", "b:rate-limit:*"]);
    assert!(!keys.is_empty(), "state is written to the restarted Redis");
}

#[tokio::test]
async fn a_relay_starts_while_redis_is_down_and_a_bad_kv_config_is_refused() {
    let mut redis = RedisServer::start().await;
    redis.kill().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), &relay_yaml(&redis, "a", &rate_limit(dir.path(), "closed")), "blue").await;
    let refused = status_call(&mut relay.line_client().await).await;
    assert_eq!(refused["error"]["code"], -32019, "{refused}");
    redis.restart().await;
    eventually("served once Redis is up", || async {
        status_call(&mut relay.line_client().await).await.get("result").map(|_| ())
    })
    .await;

    let check = |yaml: &str| {
        std::fs::write(dir.path().join("bad.yaml"), yaml).unwrap();
        std::process::Command::new(relay_tests::relay_bin())
            .args(["check-config", "--config"])
            .arg(dir.path().join("bad.yaml"))
            .output()
            .unwrap()
    };
    let missing = check("kv: {backend: redis}\n");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("kv.url"), "{missing:?}");
    let wrong = check("kv: {backend: redis, url: 'http://127.0.0.1:6379'}\n");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("redis://"), "{wrong:?}");
}

/// A bucket whose stored time is out of any reach of the rate (written into Redis by hand, by
/// whoever can) refuses for one interval at most, then lets the principal through again: it is
/// stored back as the empty bucket it stands for, not decided around and left.
#[tokio::test]
async fn a_forged_bucket_refuses_for_one_interval_at_most() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wasm = copy_plugin(dir.path(), "rate_limit");
    let plugin = format!(
        "  - name: rate-limit\n    world: policy\n    path: {}\n    grants: {{clock: true}}\n    config: {{per_minute: 60, burst: 5}}\n",
        wasm.display()
    );
    let relay = start(dir.path(), &relay_yaml(&redis, "f", &plugin), "blue").await;
    let mut client = relay.line_client().await;
    assert!(status_call(&mut client).await.get("result").is_some());
    assert_eq!(redis.cli(&["SET", "f:rate-limit:principal:anonymous", "9000000000000000000"]), "OK");
    let refused = status_call(&mut client).await;
    assert_eq!(refused["error"]["code"], -32019, "{refused}");
    // One interval (1 s) and the clocks' leeway (1 s) later through again, then at the steady
    // rate as from an empty bucket.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    for n in 0..2 {
        let reply = status_call(&mut client).await;
        assert!(reply.get("result").is_some(), "call {n} after the interval: {reply}");
        tokio::time::sleep(std::time::Duration::from_millis(1050)).await;
    }
    let stored: u64 = redis.cli(&["GET", "f:rate-limit:principal:anonymous"]).parse().unwrap();
    assert!(stored < 9_000_000_000_000_000_000, "the forged time replaced: {stored}");
}
