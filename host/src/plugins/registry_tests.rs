//! The plugin registry driven in-process, no socket: reload, the memo of a bad file, rollback,
//! and a rollback that sticks. Uses the built rate-limit plugin (scripts/build-plugins.sh,
//! which scripts/test.sh runs before the tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{KvStore, NoBackends, Plugins, ReloadError, Reloaded};
use crate::config::PluginConfig;

fn built(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh (scripts/test.sh does)", path.display());
    path
}

async fn load(dir: &Path) -> Arc<Plugins> {
    std::fs::copy(built("rate_limit"), dir.join("rl.wasm")).unwrap();
    let configs: Vec<PluginConfig> =
        serde_yaml::from_str("- {name: rl, world: policy, path: rl.wasm, grants: {clock: true}}\n").unwrap();
    Plugins::load(&configs, &dir.join("relay.yaml"), None, Arc::new(KvStore::default()), Arc::new(NoBackends))
        .await
        .expect("rate-limit loads")
}

fn status(plugins: &Plugins) -> Value {
    plugins.status().into_iter().next().expect("one plugin")
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
}
