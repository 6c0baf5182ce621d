//! What interceptors cost a call, in-process (no sockets, so the numbers are the relay's own
//! work): a tool of the echo adapter called through the router with no interceptors, with
//! `tool-filter` and `redact` bound to another backend (what an unrelated call pays: the
//! caller's view of the catalog and one glob match per interceptor), and with `redact` bound to
//! the called tool: with its result hook only (`bind.hooks`, as its README configures it) and
//! with both call hooks. After criterion's report a summary prints each against the first, and
//! what building one caller's view costs when `tool-filter` edits the list.
//!
//! Run: `./scripts/build-plugins.sh && cargo bench -p relay --bench interceptors`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use relay::access::{Principal, TransportKind};
use relay::admin::RelayTools;
use relay::config::{BackendStore, PluginConfig, UpstreamConfig};
use relay::lifecycle::Lifecycle;
use relay::mcp::ToolCall;
use relay::plugins::{Caller, KvStore, NoBackends, Plugins};
use relay::router::Router;
use relay::upstream::Upstreams;
use serde_json::json;

const SETUPS: [(&str, &str); 4] = [
    ("no interceptors", ""),
    (
        "tool-filter+redact bound elsewhere",
        "- {name: filter, world: interceptor, path: '{dir}/tool_filter.wasm', bind: {backends: [other]}, config: {deny: [{tools: ['*']}], rename: {echo: other_echo}}}\n\
         - {name: redact, world: interceptor, path: '{dir}/redact.wasm', bind: {backends: [other]}}\n",
    ),
    (
        "redact bound, hooks: [result]",
        "- {name: redact, world: interceptor, path: '{dir}/redact.wasm', bind: {backends: [echo], hooks: [result]}}\n",
    ),
    (
        "redact bound to the call",
        "- {name: redact, world: interceptor, path: '{dir}/redact.wasm', bind: {backends: [echo]}}\n",
    ),
];

async fn router(interceptors: &str) -> Arc<Router> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let yaml = format!("- {{name: echo, world: adapter, path: '{{dir}}/echo_adapter.wasm'}}\n{interceptors}")
        .replace("{dir}", &dir.display().to_string());
    let configs: Vec<PluginConfig> = serde_yaml::from_str(&yaml).expect("bench plugin config");
    let plugins =
        Plugins::load(&configs, &PathBuf::from("relay.yaml"), None, Arc::new(KvStore::default()), Arc::new(NoBackends))
            .await
            .expect("plugins load (run scripts/build-plugins.sh first)");
    let upstreams = Arc::new(Upstreams::new(UpstreamConfig::default(), 1 << 20));
    let scratch = std::env::temp_dir().join("relay-bench-backends.yaml");
    let lifecycle = Arc::new(Lifecycle::new("bench".into()));
    let tools = Arc::new(RelayTools::new(
        upstreams.clone(),
        BackendStore::new(scratch),
        lifecycle,
        plugins.clone(),
        Vec::new(),
        Arc::default(),
        relay::credentials::Credentials::new(
            relay::credentials::Vault::from_env(Arc::default()),
            Some(plugins.clone()),
        ),
    ));
    Router::new(upstreams, tools, plugins)
}

fn caller() -> Caller {
    Caller {
        principal: Principal { id: "bench".into(), roles: Vec::new() },
        session_id: "s".into(),
        transport: TransportKind::Line,
        admit: Arc::new(|_| Box::pin(async { Ok(()) })),
        bearer: None,
    }
}

async fn one_call(router: &Router, caller: &Caller, message: &str) {
    let call = ToolCall { name: "echo".into(), arguments: Some(json!({"message": message}).into()), meta: None };
    let routed = router.call_tool(call, None, caller).await;
    routed.result.expect("echoed");
}

fn per_call(
    runtime: &tokio::runtime::Runtime,
    router: &Router,
    caller: &Caller,
    message: &str,
    calls: u32,
) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..calls {
            one_call(router, caller, message).await;
        }
        started.elapsed() / calls
    })
}

/// The messages echoed: a short one, and the 1 KiB text `scripts/bench.sh` sends the redact row.
fn messages() -> [(&'static str, String); 2] {
    [("", "hello".into()), (", 1 KiB", "x".repeat(1024))]
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let caller = caller();
    let routers: Vec<_> = SETUPS.iter().map(|(_, yaml)| runtime.block_on(router(yaml))).collect();
    let mut group = c.benchmark_group("adapter call");
    for ((name, _), router) in SETUPS.iter().zip(&routers) {
        group.bench_function(*name, |b| b.to_async(&runtime).iter(|| one_call(router, &caller, "hello")));
    }
    let kib = "x".repeat(1024);
    let redacting = routers.last().expect("the redact setup");
    group.bench_function("redact bound to the call, 1 KiB", |b| {
        b.to_async(&runtime).iter(|| one_call(redacting, &caller, &kib))
    });
    group.finish();
    // Interleaved rounds, so drift on a noisy machine hits every setup alike.
    let messages = messages();
    let mut totals = vec![[Duration::ZERO; 2]; routers.len()];
    for _ in 0..5 {
        for (total, router) in totals.iter_mut().zip(&routers) {
            for (sum, (_, message)) in total.iter_mut().zip(&messages) {
                *sum += per_call(&runtime, router, &caller, message, 4_000);
            }
        }
    }
    // The list hook: a caller's first view (later requests reuse it until the catalog or a
    // plugin changes), with tool-filter bound to the adapter and editing its tools.
    let editing = runtime.block_on(router(
        "- {name: filter, world: interceptor, path: '{dir}/tool_filter.wasm', bind: {backends: [echo]}, config: {rename: {echo: say}, describe: {count: Counts.}}}\n",
    ));
    let views = 2_000;
    let view = runtime.block_on(async {
        let started = Instant::now();
        for n in 0..views {
            let principal = Principal { id: format!("p{n}"), roles: Vec::new() };
            assert!(editing.catalog_for(&principal).await.get("say").is_some());
        }
        started.elapsed() / views
    });
    println!("\nsummary (mean of 5 interleaved rounds of 4000 calls):");
    for (size, (suffix, _)) in messages.iter().enumerate() {
        let base = totals[0][size].as_secs_f64() / 5.0;
        for ((name, _), total) in SETUPS.iter().zip(&totals) {
            let each = total[size].as_secs_f64() / 5.0;
            let label = format!("{name}{suffix}");
            println!("  {label:<44} {:>6.2} µs/call  {:+6.2} µs  {:.2}x", each * 1e6, (each - base) * 1e6, each / base);
        }
    }
    println!("  a caller's first view, tool-filter editing the list: {:.1} µs", view.as_secs_f64() * 1e6);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
