//! A custom credential step without a new relay build (`credentials: {mode: plugin}`): the
//! shipped `sts-credentials` plugin asks a company STS (the fixture in `relay_tests::sts`) for
//! each principal's token to a backend over `wasi:http`. Each principal's calls carry its own
//! token; the relay keeps it (sealed in the shared kv: a second relay on the same Redis uses
//! it) until shortly before the STS's `expires_in`; a refusal reaches the caller with the STS's
//! reason and the backend is never called; a failing STS fails the call without showing its
//! internals to the client, and the relay's log says why.

use std::path::Path;

use relay_tests::sts::{self, Sts};
use relay_tests::{HttpBackend, RedisServer, Relay, copy_plugin, text_of};
use serde_json::json;

const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn relay(dir: &Path, redis: &RedisServer, backend: &HttpBackend, sts: &Sts, key: &str) -> Relay {
    let plugin = copy_plugin(dir, "sts_credentials");
    let yaml = format!(
        "{}  - name: sts\n    world: credentials\n    path: {}\n    grants: {{http: ['127.0.0.1:{}'], env: [STS_KEY]}}\n    config: {{url: '{}', api_key_env: STS_KEY, send_subject_token: true}}\n",
        relay_tests::three_principals_yaml(dir, redis, "stscreds"),
        plugin.display(),
        sts.port,
        sts.url()
    );
    let backends = format!(
        "backends:\n  - name: h\n    url: {}\n    headers: {{Authorization: 'Bearer SERVICE'}}\n    credentials: {{mode: plugin, plugin: sts}}\n",
        backend.url()
    );
    let env = [("RELAY_CREDENTIAL_KEYS", KEYS), ("STS_KEY", key)];
    let mut relay = Relay::start_files(dir, &yaml, &backends, &env).await;
    relay.token = Some("OPS-T".into());
    relay.wait_ready("h").await;
    relay
}

#[tokio::test]
async fn a_credentials_plugin_gives_each_principal_its_own_token_from_the_sts() {
    let redis = RedisServer::start().await;
    let backend = HttpBackend::start(0).await;
    let sts = Sts::start(3600).await;
    let (one_dir, two_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = relay(one_dir.path(), &redis, &backend, &sts, sts::KEY).await;

    assert_eq!(text_of(&one.call_tool_as("ALICE-T", "whoami", json!({})).await), "Bearer sts-alice-1");
    assert_eq!(
        text_of(&one.call_tool_as("ALICE-T", "whoami", json!({})).await),
        "Bearer sts-alice-1",
        "kept, not asked again"
    );
    assert_eq!(text_of(&one.call_tool_as("BOB-T", "whoami", json!({})).await), "Bearer sts-bob-2");
    let asked = sts.requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(
        asked[0],
        json!({"principal": "alice", "roles": [], "audience": "h", "resource": backend.url(), "subject_token": "ALICE-T"})
    );

    // Refused by the STS: the caller is told why, the backend never sees the call.
    let calls = backend.calls_of("whoami");
    let refused = one.call_tool_as("OPS-T", "whoami", json!({})).await;
    assert_eq!(refused["error"]["code"], -32013, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ops is not in the group allowed to reach"), "{refused}");
    assert_eq!(backend.calls_of("whoami"), calls);

    // A second relay on the same Redis and keys uses the kept token; the STS is not asked.
    let two = relay(two_dir.path(), &redis, &backend, &sts, sts::KEY).await;
    assert_eq!(text_of(&two.call_tool_as("ALICE-T", "whoami", json!({})).await), "Bearer sts-alice-1");
    assert_eq!(sts.requests().len(), 3, "alice, bob and the refused ops only");

    // Kept tokens are sealed; a caller cannot store its own in the plugin's place; revoking
    // makes the next call ask the STS again.
    let keys = redis.cli(&["--scan", "--pattern", "stscreds:relay.credential:*"]);
    for key in keys.lines() {
        assert!(!redis.cli(&["get", key.trim()]).contains("sts-"), "a token in the clear at {key}");
    }
    let forged = one.call_tool_as("ALICE-T", "relay_auth_set_secret", json!({"backend": "h", "secret": "mine"})).await;
    assert_eq!(forged["result"]["isError"], true, "{forged}");
    let revoked = one.call_tool_as("ALICE-T", "relay_auth_revoke", json!({"backend": "h"})).await;
    assert_eq!(revoked["result"]["structuredContent"]["revoked"], json!(["h"]), "{revoked}");
    assert_eq!(text_of(&two.call_tool_as("ALICE-T", "whoami", json!({})).await), "Bearer sts-alice-4");
    for relay in [&one, &two] {
        assert!(!relay.log().contains("sts-alice"), "a token in the log:\n{}", relay.log());
    }
}

#[tokio::test]
async fn a_failing_credentials_plugin_fails_the_call_and_says_why_in_the_log_only() {
    let redis = RedisServer::start().await;
    let backend = HttpBackend::start(0).await;
    let sts = Sts::start(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let relay = relay(dir.path(), &redis, &backend, &sts, "not-the-key").await;

    let failed = relay.call_tool_as("ALICE-T", "whoami", json!({})).await;
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("credential plugin sts failed"), "{failed}");
    assert!(!message.contains("401") && !message.contains("127.0.0.1"), "internals stay in the log: {failed}");
    assert_eq!(backend.calls_of("whoami"), 0);
    relay.wait_for_log("the STS answered 401").await;

    // A backend naming no credentials plugin is refused by check-config.
    let config = dir.path().join("relay.yaml");
    let backends =
        format!("backends:\n  - {{name: h, url: '{}', credentials: {{mode: plugin, plugin: nope}}}}\n", backend.url());
    std::fs::write(dir.path().join("backends.yaml"), backends).unwrap();
    let check = std::process::Command::new(relay_tests::relay_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success() && stderr.contains("\"nope\" is not a plugin of world credentials"), "{stderr}");
}
