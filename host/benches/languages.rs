//! Plugins in Python and JavaScript next to their Rust twins: the component's size, the first
//! load (compile + instantiate), a load from the compile cache (deserialize + instantiate), and
//! the cost of one call on a warm instance. Prints one table.
//!
//! Run: `./scripts/build-plugins.sh && ./scripts/build-guest-plugins.sh &&
//! cargo bench -p relay --bench languages`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::access::{Principal, RequestInfo};
use relay::config::PluginConfig;
use relay::plugins::{KvStore, NoBackends, Plugins};
use serde_json::json;

/// Calls timed per plugin (after a warm-up of a tenth as many).
const CALLS: u32 = 5_000;

/// One plugin to measure.
struct Case {
    label: &'static str,
    file: &'static str,
    /// The relay.yaml entry (`{path}` is filled in).
    entry: &'static str,
}

const CASES: [Case; 4] = [
    Case {
        label: "rate-limit (Rust)",
        file: "rate_limit.wasm",
        entry: "{name: p, world: policy, path: '{path}', grants: {clock: true}, config: {per_minute: 1000000000}}",
    },
    Case {
        label: "rate-limit (Python)",
        file: "rate_limit_py.wasm",
        entry: "{name: p, world: policy, path: '{path}', grants: {clock: true}, config: {per_minute: 1000000000}}",
    },
    Case {
        label: "echo-adapter (Rust)",
        file: "echo_adapter.wasm",
        entry: "{name: p, world: adapter, path: '{path}'}",
    },
    Case {
        label: "echo-adapter (JavaScript)",
        file: "echo_adapter_js.wasm",
        entry: "{name: p, world: adapter, path: '{path}'}",
    },
];

async fn load(config: &PluginConfig, cache: &std::path::Path) -> (Arc<Plugins>, Duration) {
    let started = Instant::now();
    let plugins = Plugins::load(
        std::slice::from_ref(config),
        &PathBuf::from("relay.yaml"),
        Some(cache.to_owned()),
        Arc::new(KvStore::default()),
        Arc::new(NoBackends),
    )
    .await
    .expect("plugin loads (run scripts/build-plugins.sh and scripts/build-guest-plugins.sh first)");
    (plugins, started.elapsed())
}

async fn one_call(plugins: &Plugins, world: &str) {
    if world == "policy" {
        let principal = Principal { id: "bench".into(), roles: Vec::new() };
        let request = RequestInfo::tool_call(&principal, "echo");
        plugins.check(&request).await.expect("admitted");
    } else {
        plugins.call_tool("p", "echo", &json!({"message": "hi"}).into(), None).await.expect("echoed");
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    println!("{:<28} {:>10} {:>12} {:>12} {:>10}", "plugin", "size", "first load", "cached load", "per call");
    for case in CASES {
        let path = dir.join(case.file);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let config: PluginConfig =
            serde_yaml::from_str(&case.entry.replace("{path}", &path.display().to_string())).expect("entry");
        let world = config.world.as_str();
        let cache = tempfile::tempdir().unwrap();
        let (cold, warm, per_call) = runtime.block_on(async {
            let (_, cold) = load(&config, cache.path()).await;
            let (plugins, warm) = load(&config, cache.path()).await;
            for _ in 0..CALLS / 10 {
                one_call(&plugins, world).await;
            }
            let started = Instant::now();
            for _ in 0..CALLS {
                one_call(&plugins, world).await;
            }
            (cold, warm, started.elapsed() / CALLS)
        });
        println!(
            "{:<28} {:>8.1}MB {:>10.0}ms {:>10.1}ms {:>8.1}µs",
            case.label,
            size as f64 / 1e6,
            cold.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3,
            per_call.as_secs_f64() * 1e6
        );
    }
}
