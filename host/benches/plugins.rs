//! Per-request cost of the auth + rate-limit plugins against no plugins.
//!
//! Run: `./scripts/build-plugins.sh && cargo bench -p relay --bench plugins`
//!
//! Each iteration is what the relay does for a request when both plugins are configured: one
//! `authenticate` (in the relay this runs once per session, so counting it per request is the
//! worst case) and one policy `check`. The baseline is the same two calls with no plugins
//! configured. After criterion's report, a summary line prints both and their ratio.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use relay::access::{ConnectInfo, Peer, Principal, RequestInfo, TransportKind};
use relay::config::PluginConfig;
use relay::plugins::{KvStore, NoBackends, Plugins};

fn plugin_configs() -> Vec<PluginConfig> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let yaml = format!(
        "- {{name: auth, world: auth, path: {auth}, config: {{tokens: [{{token: bench-token, principal: bench, roles: [admin]}}]}}}}\n\
         - {{name: rate-limit, world: policy, path: {rl}, grants: {{clock: true}}, config: {{per_minute: 1000000000}}}}\n",
        auth = dir.join("token_auth.wasm").display(),
        rl = dir.join("rate_limit.wasm").display(),
    );
    serde_yaml::from_str(&yaml).expect("bench plugin config")
}

async fn load(configs: &[PluginConfig]) -> Arc<Plugins> {
    let relay_yaml = PathBuf::from("relay.yaml");
    Plugins::load(configs, &relay_yaml, None, Arc::new(KvStore::default()), Arc::new(NoBackends))
        .await
        .expect("plugins load (run scripts/build-plugins.sh first)")
}

async fn one_request(plugins: &Plugins) {
    let peer = Peer::at(([127, 0, 0, 1], 1).into(), false);
    let info = ConnectInfo::new(TransportKind::Line, &peer, Some("bench-token".into()));
    let principal = plugins.authenticate(&info).await.expect("authenticated").principal;
    check(plugins, principal).await;
}

/// The per-request part alone: the policy chain for a session's principal.
async fn check(plugins: &Plugins, principal: Principal) {
    let request = RequestInfo::tool_call(&principal, "echo");
    plugins.check(&request).await.expect("admitted");
}

fn per_request(runtime: &tokio::runtime::Runtime, plugins: &Plugins, iterations: u32) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..iterations {
            one_request(plugins).await;
        }
        started.elapsed() / iterations
    })
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let with = runtime.block_on(load(&plugin_configs()));
    let without = runtime.block_on(load(&[]));
    let mut group = c.benchmark_group("per_request");
    group.bench_function("auth+rate-limit", |b| b.to_async(&runtime).iter(|| one_request(&with)));
    group.bench_function("no plugins", |b| b.to_async(&runtime).iter(|| one_request(&without)));
    let principal = Principal { id: "bench".into(), roles: vec!["admin".into()] };
    group.bench_function("rate-limit check only", |b| b.to_async(&runtime).iter(|| check(&with, principal.clone())));
    group.finish();

    let (a, b) = (per_request(&runtime, &with, 20_000), per_request(&runtime, &without, 20_000));
    println!(
        "\nsummary: auth+rate-limit {:.2} µs/request, no plugins {:.3} µs/request, added {:.2} µs (goal < 3 µs), ratio {:.0}x",
        a.as_secs_f64() * 1e6,
        b.as_secs_f64() * 1e6,
        (a.saturating_sub(b)).as_secs_f64() * 1e6,
        a.as_secs_f64() / b.as_secs_f64().max(1e-12),
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
