//! The plugin registry driven in-process, no socket: reload, the memo of a bad file, rollback,
//! a rollback that sticks, a policy's holds, and the results an interceptor need not see. Uses
//! the built rate-limit and redact plugins (scripts/build-plugins.sh, which scripts/test.sh
//! runs before the tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{CallHook, KvStore, NoBackends, Plugins, Refusal, ReloadError, Reloaded, TOOLS_CALL};
use crate::access::{Principal, RequestInfo};
use crate::config::PluginConfig;
use crate::mcp::Payload;

fn built(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh (scripts/test.sh does)", path.display());
    path
}

async fn load(dir: &Path) -> Arc<Plugins> {
    load_with(dir, "{}").await
}

/// Loads the rate-limit plugin with `config`.
async fn load_with(dir: &Path, config: &str) -> Arc<Plugins> {
    let entry = format!("{{name: rl, world: policy, path: rl.wasm, grants: {{clock: true}}, config: {config}}}");
    load_plugin(dir, "rate_limit", "rl.wasm", &entry).await
}

/// Copies the built plugin `built_name` into `dir` as `file` and loads it as configured by
/// `entry` (one `plugins:` item in YAML flow style).
async fn load_plugin(dir: &Path, built_name: &str, file: &str, entry: &str) -> Arc<Plugins> {
    std::fs::copy(built(built_name), dir.join(file)).unwrap();
    let configs: Vec<PluginConfig> = serde_yaml::from_str(&format!("- {entry}\n")).unwrap();
    Plugins::load(&configs, &dir.join("relay.yaml"), None, Arc::new(KvStore::default()), Arc::new(NoBackends))
        .await
        .unwrap_or_else(|e| panic!("{built_name} loads: {e}"))
}

fn status(plugins: &Plugins) -> Value {
    plugins.status(true).into_iter().next().expect("one plugin")
}

/// The same component with a custom section appended: a new build, a new hash.
fn rebuilt(bytes: &[u8], tag: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0, 3, 1, b't', tag]);
    out
}

#[tokio::test]
async fn reload_memo_rollback_and_a_rollback_that_sticks() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = load(dir.path()).await;
    let file = dir.path().join("rl.wasm");
    let original = status(&plugins)["hash"].clone();
    assert!(matches!(plugins.reload("rl").await, Ok(Reloaded::Unchanged(_))));

    // A bad file keeps the running version, and is not retried (or counted) again.
    std::fs::write(&file, b"\0asm not a component").unwrap();
    let first = plugins.reload("rl").await.unwrap_err();
    assert!(matches!(first, ReloadError::Failed(_)), "{first}");
    assert_eq!(plugins.reload("rl").await.unwrap_err(), first, "the memo answers the same file");
    assert_eq!(status(&plugins)["reload_failures"], 1, "{}", status(&plugins));
    assert_eq!(status(&plugins)["hash"], original);

    // A good new build loads; rollback goes back; the rolled-back file does not return.
    let good = std::fs::read(built("rate_limit")).unwrap();
    std::fs::write(&file, rebuilt(&good, b'2')).unwrap();
    assert!(matches!(plugins.reload("rl").await, Ok(Reloaded::Loaded(_))));
    assert!(status(&plugins)["last_error"].is_null(), "a good load clears the error");
    assert_ne!(status(&plugins)["hash"], original);
    plugins.rollback("rl").await.unwrap();
    assert_eq!(status(&plugins)["hash"], original);
    assert!(matches!(plugins.reload("rl").await, Ok(Reloaded::StillRolledBack(_))));
    assert_eq!(status(&plugins)["hash"], original, "the rolled-back file stays out");
    std::fs::write(&file, rebuilt(&good, b'3')).unwrap();
    assert!(matches!(plugins.reload("rl").await, Ok(Reloaded::Loaded(_))), "a changed file loads again");
    assert_eq!(plugins.rollback("nope").await.unwrap_err(), ReloadError::NoSuchPlugin("nope".into()));

    // A bad file, a rollback, then the file rolled back from once more: it loaded before, so
    // the bad file's failure is history (it kept `PluginReloadFailed` firing).
    std::fs::write(&file, b"\0asm still not a component").unwrap();
    assert!(plugins.reload("rl").await.is_err());
    plugins.rollback("rl").await.unwrap();
    std::fs::write(&file, rebuilt(&good, b'3')).unwrap();
    assert!(matches!(plugins.reload("rl").await, Ok(Reloaded::StillRolledBack(_))));
    assert!(status(&plugins)["last_error"].is_null(), "{}", status(&plugins));
}

/// The plugin's calls and one more of its counters (`held`: requests its holds answered;
/// `unread`: results it was not shown), from status.
fn calls_and(plugins: &Plugins, counter: &str) -> (u64, u64) {
    let status = status(plugins);
    (status["calls"].as_u64().unwrap(), status[counter].as_u64().unwrap())
}

#[tokio::test]
async fn holds_answer_a_busy_principal_for_the_plugin_until_a_reload_or_the_budget_ends_them() {
    let dir = tempfile::tempdir().unwrap();
    // 60,000 a minute with bursts of 500: the plugin pays for up to 50 requests at once.
    let plugins = load_with(dir.path(), "{per_minute: 60000, burst: 500}").await;
    let alice = Principal { id: "alice".into(), roles: vec![] };
    let started = std::time::Instant::now();
    for _ in 0..200 {
        plugins.check(&RequestInfo::tool_call(&alice, "echo")).await.expect("within the budget");
    }
    let (calls, held) = calls_and(&plugins, "held");
    assert_eq!(calls + held, 200, "each request was decided once");
    assert!(calls <= 12, "holds of 1, 2, 4, ... 50 answer most requests: {calls} calls");

    // Another principal, and another tool, are decided by the plugin: a hold is its key's alone.
    let bob = Principal { id: "bob".into(), roles: vec![] };
    plugins.check(&RequestInfo::tool_call(&bob, "echo")).await.unwrap();
    plugins.check(&RequestInfo::tool_call(&alice, "other")).await.unwrap();
    assert_eq!(calls_and(&plugins, "held"), (calls + 2, held));

    // A new version starts without holds.
    let good = std::fs::read(built("rate_limit")).unwrap();
    std::fs::write(dir.path().join("rl.wasm"), rebuilt(&good, b'2')).unwrap();
    assert!(matches!(plugins.reload("rl").await, Ok(Reloaded::Loaded(_))));
    plugins.check(&RequestInfo::tool_call(&alice, "echo")).await.unwrap();
    assert_eq!(calls_and(&plugins, "held"), (calls + 3, held), "the reloaded plugin decided");

    // Paid in advance is paid: the budget (500, plus what refilled since the first request)
    // ends as it would without holds, less what the hold the reload ended left unused (up to
    // 50, never given back). Alice's requests so far: 200, one of `other`, one after the reload.
    let mut allowed = 202;
    let refused = loop {
        match plugins.check(&RequestInfo::tool_call(&alice, "echo")).await {
            Ok(()) => allowed += 1,
            Err(refusal) => break refusal,
        }
        assert!(allowed < 5000, "the limit never refused");
    };
    assert!(matches!(refused, Refusal::Denied(_)), "{refused:?}");
    let refilled = (started.elapsed().as_secs_f64() * 1000.0).ceil() as u64 + 1;
    assert!((450..=500 + refilled).contains(&allowed), "{allowed} allowed from a burst of 500 (+{refilled})");
}

/// A version a rollback switches back to starts without the holds it gave before it was
/// replaced: they stood again, for a budget spent since under the other version.
#[tokio::test]
async fn a_version_rolled_back_to_starts_without_its_old_holds() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = load_with(dir.path(), "{per_minute: 60000, burst: 500}").await;
    let alice = Principal { id: "alice".into(), roles: vec![] };
    for _ in 0..20 {
        plugins.check(&RequestInfo::tool_call(&alice, "echo")).await.expect("within the budget");
    }
    assert!(calls_and(&plugins, "held").1 > 0, "holds answered some");
    let good = std::fs::read(built("rate_limit")).unwrap();
    std::fs::write(dir.path().join("rl.wasm"), rebuilt(&good, b'2')).unwrap();
    assert!(matches!(plugins.reload("rl").await, Ok(Reloaded::Loaded(_))));
    plugins.rollback("rl").await.unwrap();
    let (calls, held) = calls_and(&plugins, "held");
    plugins.check(&RequestInfo::tool_call(&alice, "echo")).await.unwrap();
    assert_eq!(calls_and(&plugins, "held"), (calls + 1, held), "a hold from before the reload answered");
}

/// One tool result through the interceptors bound to backend `a`: its text as the client gets it.
async fn through_result_hooks(plugins: &Plugins, text: &str) -> String {
    let alice = Principal { id: "alice".into(), roles: vec![] };
    let hook = CallHook { principal: &alice, method: TOOLS_CALL, backend: "a", name: "echo" };
    let interception = plugins.interception(&hook).expect("redact is bound to a");
    let result = Payload::from(serde_json::json!({"content": [{"type": "text", "text": text}]}));
    interception.result(result).await.expect("redact answers").text().into_owned()
}

#[tokio::test]
async fn the_results_a_hook_need_not_see_are_its_versions_own() {
    let dir = tempfile::tempdir().unwrap();
    let entry = "{name: redact, world: interceptor, path: redact.wasm, bind: {backends: [a], hooks: [result]}}";
    let plugins = load_plugin(dir.path(), "redact", "redact.wasm", entry).await;

    // The first result is read (and masked); the hook names its literals as it reads it, and
    // a result without any is then passed unread.
    assert!(through_result_hooks(&plugins, "mail ann@example.com").await.contains("[REDACTED:email]"));
    assert_eq!(
        through_result_hooks(&plugins, "nothing here").await,
        r#"{"content":[{"text":"nothing here","type":"text"}]}"#
    );
    assert_eq!(calls_and(&plugins, "unread"), (1, 1));

    // A new version (which could have other rules) reads results until it names its own.
    let bytes = std::fs::read(built("redact")).unwrap();
    std::fs::write(dir.path().join("redact.wasm"), rebuilt(&bytes, b'2')).unwrap();
    assert!(matches!(plugins.reload("redact").await, Ok(Reloaded::Loaded(_))));
    through_result_hooks(&plugins, "nothing here").await;
    assert_eq!(calls_and(&plugins, "unread"), (2, 1), "the reloaded version read it");
    through_result_hooks(&plugins, "nothing here").await;
    assert_eq!(calls_and(&plugins, "unread"), (2, 2));

    // The version rolled back to keeps what it named; what needs masking is still read.
    plugins.rollback("redact").await.unwrap();
    through_result_hooks(&plugins, "nothing here").await;
    assert_eq!(calls_and(&plugins, "unread"), (2, 3));
    assert!(
        through_result_hooks(&plugins, "key sk-proj-abcdefghijklmnopqrstuvwx").await.contains("[REDACTED:api_key]")
    );
    assert_eq!(calls_and(&plugins, "unread"), (3, 3));
}
