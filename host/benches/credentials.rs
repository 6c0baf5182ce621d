//! Per-call cost of the credential step (issue 27): what a `tools/call` to a backend pays to
//! carry its caller's own credential, against a static backend (no step).
//!
//! Run: `cargo bench -p relay --bench credentials`
//!
//! `per_user_secret` on the in-memory kv is the step's own cost (a kv read and an AES-256-GCM
//! open); on Redis a call adds one round trip to it (not measured here: it is the network's).
//! A cached `token_exchange` token or a kept `plugin` secret costs the same as a stored secret;
//! an `oauth` grant adds the parse of its JSON record.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use relay::access::Principal;
use relay::config::{Backend, Transport};
use relay::credentials::{Credentials, Vault};
use relay::plugins::KvStore;

const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let vault = Vault::with_keys(Arc::new(KvStore::default()), KEYS).unwrap();
    let credentials = Credentials::new(vault, None);
    let alice = Principal { id: "alice".into(), roles: Vec::new() };
    runtime.block_on(credentials.vault.put("alice", "tracker", "tk_alice_0123456789abcdef")).unwrap();
    let backend = |credentials: &str| Backend {
        name: "tracker".into(),
        transport: Transport::Http { url: "http://127.0.0.1:9/mcp".into(), headers: Default::default() },
        call_timeout_secs: None,
        credentials: serde_yaml::from_str(credentials).unwrap(),
        session_per_worker: false,
    };
    let (fixed, per_user) = (backend("{mode: static}"), backend("{mode: per_user_secret}"));
    // An `oauth` grant that is still fresh: what every call of an authorized user reads.
    let oauth = backend("{mode: oauth, redirect_uri: 'http://127.0.0.1:9/oauth/callback'}");
    let grant = serde_json::json!({
        "access_token": "at_alice_0123456789abcdef0123456789abcdef",
        "refresh_token": "rt_alice_0123456789abcdef",
        "expires_at": u64::MAX / 2,
        "server": {"authorization_endpoint": "https://as/authorize", "token_endpoint": "https://as/token",
                   "resource": "http://127.0.0.1:9/mcp", "client_id": "relay", "client_secret": null},
    });
    runtime.block_on(credentials.vault.put("alice", "tracker-oauth", &grant.to_string())).unwrap();
    let oauth = Backend { name: "tracker-oauth".into(), ..oauth };
    c.bench_function("credential step: static backend", |b| {
        b.iter(|| runtime.block_on(credentials.header_for(&fixed, &alice, None)).unwrap())
    });
    c.bench_function("credential step: per_user_secret (memory kv)", |b| {
        b.iter(|| runtime.block_on(credentials.header_for(&per_user, &alice, None)).unwrap())
    });
    // A `plugin` backend whose issued secret the relay still keeps: every call but the first.
    let kept = backend("{mode: plugin, plugin: sts}");
    let slot = kept.credentials.slot("tracker").into_owned();
    runtime.block_on(credentials.vault.put("alice", &slot, "sts_alice_0123456789abcdef")).unwrap();
    c.bench_function("credential step: plugin, kept secret (memory kv)", |b| {
        b.iter(|| runtime.block_on(credentials.header_for(&kept, &alice, None)).unwrap().expect("a header"))
    });
    c.bench_function("credential step: oauth, fresh grant (memory kv)", |b| {
        b.iter(|| runtime.block_on(credentials.header_for(&oauth, &alice, None)).unwrap().expect("a header"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
