//! Each user's own identity at a backend (`credentials: {mode: per_user_secret}`): every
//! principal stores its own secret once (`relay_auth_set_secret`), and each of its calls to that
//! backend carries it, never another principal's. Secrets are sealed in the shared kv (a second
//! relay on the same Redis and keys uses them; Redis never holds them in the clear; the log never
//! shows them), listed without values (`relay_auth_status`) and revoked by their owner or an
//! admin (`relay_auth_revoke`). Per-user modes are refused for backends whose one connection
//! every caller shares.

use std::path::Path;

use relay_tests::{HttpBackend, RedisServer, Relay, copy_plugin, eventually, text_of};
use serde_json::json;

const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn yaml(dir: &Path, redis: &RedisServer) -> String {
    relay_tests::three_principals_yaml(dir, redis, "creds")
}

async fn relay(dir: &Path, redis: &RedisServer, backend: &HttpBackend) -> Relay {
    relay_with(dir, &yaml(dir, redis), backend).await
}

/// A relay configured by `relay_yaml` whose one backend `h` is called with each user's secret.
async fn relay_with(dir: &Path, relay_yaml: &str, backend: &HttpBackend) -> Relay {
    let backends = format!(
        "backends:\n  - name: h\n    url: {}\n    headers: {{Authorization: 'Bearer SERVICE'}}\n    credentials: {{mode: per_user_secret}}\n",
        backend.url()
    );
    let mut relay = Relay::start_files(dir, relay_yaml, &backends, &[("RELAY_CREDENTIAL_KEYS", KEYS)]).await;
    relay.token = Some("OPS-T".into());
    relay.wait_ready("h").await;
    relay
}

#[tokio::test]
async fn each_principal_calls_a_backend_with_its_own_stored_secret() {
    let redis = RedisServer::start().await;
    let backend = HttpBackend::start(0).await;
    let (one_dir, two_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = relay(one_dir.path(), &redis, &backend).await;

    // Nothing stored: refused, saying how to store one; the backend is not called.
    let refused = one.call_tool_as("ALICE-T", "whoami", json!({})).await;
    assert_eq!(refused["error"]["code"], -32011, "{refused}");
    assert_eq!(refused["error"]["data"]["store_with"], "relay_auth_set_secret", "{refused}");
    assert_eq!(backend.calls_of("whoami"), 0);

    for (token, secret) in [("ALICE-T", "alice-key-0001"), ("BOB-T", "bob-key-0002")] {
        let stored = one.call_tool_as(token, "relay_auth_set_secret", json!({"backend": "h", "secret": secret})).await;
        assert_eq!(stored["result"]["structuredContent"]["stored"], true, "{stored}");
    }
    assert_eq!(text_of(&one.call_tool_as("ALICE-T", "whoami", json!({})).await), "Bearer alice-key-0001");
    assert_eq!(text_of(&one.call_tool_as("BOB-T", "whoami", json!({})).await), "Bearer bob-key-0002");
    let status = one.call_tool_as("ALICE-T", "relay_auth_status", json!({})).await;
    let entry = &status["result"]["structuredContent"]["backends"][0];
    assert_eq!((entry["backend"].clone(), entry["authorized"].clone()), (json!("h"), json!(true)), "{status}");
    assert!(!status.to_string().contains("alice-key"), "status never shows the secret: {status}");
    // An admin sees whether another principal authorized what; no one else does.
    let of_bob = one.call_tool_as("OPS-T", "relay_auth_status", json!({"principal": "bob"})).await;
    assert_eq!(of_bob["result"]["structuredContent"]["principal"], "bob", "{of_bob}");
    assert_eq!(of_bob["result"]["structuredContent"]["backends"][0]["authorized"], true, "{of_bob}");
    let nosy = one.call_tool_as("BOB-T", "relay_auth_status", json!({"principal": "alice"})).await;
    assert_eq!(nosy["result"]["isError"], true, "{nosy}");

    // A second relay on the same Redis and keys uses the stored secrets.
    let two = relay(two_dir.path(), &redis, &backend).await;
    assert_eq!(text_of(&two.call_tool_as("ALICE-T", "whoami", json!({})).await), "Bearer alice-key-0001");

    // Secrets at rest are sealed; logs never hold them.
    let keys = redis.cli(&["--scan", "--pattern", "creds:relay.credential:*"]);
    assert_eq!(keys.lines().count(), 2, "{keys}");
    for key in keys.lines() {
        let stored = redis.cli(&["get", key.trim()]);
        assert!(stored.starts_with("k1:") && !stored.contains("key-000"), "{stored}");
    }
    for relay in [&one, &two] {
        assert!(!relay.log().contains("key-000"), "a secret in the log:\n{}", relay.log());
    }

    // Revoking: one's own, not another's (unless admin).
    let denied = one.call_tool_as("BOB-T", "relay_auth_revoke", json!({"backend": "h", "principal": "alice"})).await;
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    let revoked = one.call_tool_as("ALICE-T", "relay_auth_revoke", json!({"backend": "h"})).await;
    assert_eq!(revoked["result"]["structuredContent"]["revoked"], json!(["h"]), "{revoked}");
    assert_eq!(two.call_tool_as("ALICE-T", "whoami", json!({})).await["error"]["code"], -32011);
    let by_admin = one.call_tool_as("OPS-T", "relay_auth_revoke", json!({"principal": "bob"})).await;
    assert_eq!(by_admin["result"]["structuredContent"]["revoked"], json!(["h"]), "{by_admin}");
    assert_eq!(one.call_tool_as("BOB-T", "whoami", json!({})).await["error"]["code"], -32011);
}

/// A call's cancellation reaches the backend as the call did: with its caller's own credential,
/// not the connection's (the service's).
#[tokio::test]
async fn a_cancellation_goes_out_with_the_credential_of_the_call_it_cancels() {
    let redis = RedisServer::start().await;
    let backend = HttpBackend::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let relay = relay(dir.path(), &redis, &backend).await;
    let stored = relay
        .call_tool_as("ALICE-T", "relay_auth_set_secret", json!({"backend": "h", "secret": "alice-key-0001"}))
        .await;
    assert_eq!(stored["result"]["structuredContent"]["stored"], true, "{stored}");
    let mut alice = relay.line_client_as(Some("ALICE-T")).await;
    alice
        .send_raw(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow"}}).to_string())
        .await;
    eventually("the call reaches the backend", || async { (backend.calls_of("slow") == 1).then_some(()) }).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}});
    alice.send_raw(&cancel.to_string()).await;
    let auth = eventually("the cancellation reaches the backend", || async {
        backend.notified_as().into_iter().find(|(method, _)| method == "notifications/cancelled").map(|(_, auth)| auth)
    })
    .await;
    assert_eq!(auth, "Bearer alice-key-0001");
}

/// An adapter plugin calling a backend that is called as each user does it with the credential
/// of the client the adapter serves, as that client's own call would: never with the
/// connection's (the service's) headers, never without one.
#[tokio::test]
async fn an_adapter_calls_a_per_user_backend_with_the_credential_of_the_client_it_serves() {
    let redis = RedisServer::start().await;
    let backend = HttpBackend::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let adapter = copy_plugin(dir.path(), "hostile_adapter");
    let relay_yaml = format!(
        "{}  - {{name: hostile, world: adapter, path: {}, grants: {{backends: [h/whoami]}}, limits: {{deadline_ms: 5000}}}}\n",
        yaml(dir.path(), &redis),
        adapter.display()
    );
    let relay = relay_with(dir.path(), &relay_yaml, &backend).await;
    let through_adapter = json!({"backend": "h", "tool": "whoami"});

    // Nothing stored: refused as the client's own call is, and the backend is not called.
    let refused = text_of(&relay.call_tool_as("BOB-T", "call_backend", through_adapter.clone()).await);
    assert!(refused.starts_with("refused:") && refused.contains("relay_auth_set_secret"), "{refused}");
    assert!(!refused.contains("SERVICE"), "{refused}");
    assert_eq!(backend.calls_of("whoami"), 0);

    let stored = relay
        .call_tool_as("ALICE-T", "relay_auth_set_secret", json!({"backend": "h", "secret": "alice-key-0001"}))
        .await;
    assert_eq!(stored["result"]["structuredContent"]["stored"], true, "{stored}");
    let called = text_of(&relay.call_tool_as("ALICE-T", "call_backend", through_adapter.clone()).await);
    assert!(called.starts_with("called:") && called.contains("Bearer alice-key-0001"), "{called}");
    // Another principal gets neither alice's credential nor the service's.
    let refused = text_of(&relay.call_tool_as("BOB-T", "call_backend", through_adapter).await);
    assert!(
        refused.starts_with("refused:") && !refused.contains("alice-key") && !refused.contains("SERVICE"),
        "{refused}"
    );
    assert_eq!(backend.calls_of("whoami"), 1);
}

#[tokio::test]
async fn per_user_credentials_are_refused_where_one_connection_serves_every_caller() {
    // In the backends file: check-config (and so serve) refuses it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.yaml"), relay_tests::TEST_RELAY_YAML).unwrap();
    let bad = "backends:\n  - {name: w, url: 'ws://127.0.0.1:9/', credentials: {mode: per_user_secret}}\n";
    std::fs::write(dir.path().join("backends.yaml"), bad).unwrap();
    let (passed, said) = relay_tests::check_config(dir.path()).await;
    assert!(!passed && said.contains("needs an http(s):// backend"), "{said}");
    // At run time: relay_add_server refuses it too.
    let relay = Relay::start("backends: []\n").await;
    let added = relay
        .line_client()
        .await
        .call_tool(
            "relay_add_server",
            json!({"name": "s", "command": "true", "credentials": {"mode": "per_user_secret"}}),
        )
        .await;
    assert!(added.to_string().contains("needs an http(s):// backend"), "{added}");
    // Without an auth plugin every client is one principal: nothing is stored for "everyone".
    let backend = HttpBackend::start(0).await;
    let open = Relay::start(&format!(
        "backends:\n  - {{name: h, url: '{}', credentials: {{mode: per_user_secret}}}}\n",
        backend.url()
    ))
    .await;
    open.wait_ready("h").await;
    let mut client = open.line_client().await;
    let refused = client.call_tool("relay_auth_set_secret", json!({"backend": "h", "secret": "x"})).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(refused.to_string().contains("no auth plugin"), "{refused}");
    // An OAuth grant (or an exchanged or a plugin's token) would be the first user's for every
    // client: check-config warns.
    let open_dir = tempfile::tempdir().unwrap();
    std::fs::write(open_dir.path().join("relay.yaml"), relay_tests::TEST_RELAY_YAML).unwrap();
    let oauth = format!(
        "backends:\n  - {{name: docs, url: '{}', credentials: {{mode: oauth, redirect_uri: 'http://127.0.0.1:9/oauth/callback'}}}}\n",
        backend.url()
    );
    std::fs::write(open_dir.path().join("backends.yaml"), oauth).unwrap();
    let (passed, said) = relay_tests::check_config(open_dir.path()).await;
    assert!(passed && said.contains("warning: backend docs") && said.contains("no auth plugin"), "{said}");
}

/// `token_exchange` (RFC 8693) against an in-process endpoint (`relay_tests::token_endpoint`,
/// on axum): each principal's own bearer token is exchanged for one meant for the backend, the
/// relay authenticating itself as `relay`; the exchanged token is cached per principal and
/// subject token, and a refused exchange fails the call with the server's reason.
#[tokio::test]
async fn a_token_exchange_gives_each_principal_its_own_token_for_the_backend() {
    let redis = RedisServer::start().await;
    let backend = HttpBackend::start(0).await;
    let endpoint = relay_tests::token_endpoint::TokenEndpoint::start(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = copy_plugin(dir.path(), "token_auth");
    let yaml = format!(
        "kv: {{backend: redis, url: '{}', namespace: xchg, timeout_ms: 200}}\nplugin_cache_dir: cache\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config:\n      tokens:\n        - {{token: ALICE-T, principal: alice}}\n        - {{token: BOB-T, principal: bob}}\n        - {{token: CAROL-T, principal: carol}}\n        - {{token: ALICE-LOW, principal: alice}}\n",
        redis.url(),
        auth.display()
    );
    let backends = format!(
        "backends:\n  - name: h\n    url: {}\n    credentials: {{mode: token_exchange, token_endpoint: '{}', audience: backend-h, client_id: relay, client_secret_env: XCHG_SECRET}}\n",
        backend.url(),
        endpoint.url()
    );
    let env = [("RELAY_CREDENTIAL_KEYS", KEYS), ("XCHG_SECRET", "relay-secret")];
    let mut relay = Relay::start_files(dir.path(), &yaml, &backends, &env).await;
    relay.token = Some("ALICE-T".into());
    relay.wait_ready("h").await;

    let alice = text_of(&relay.call_tool_as("ALICE-T", "whoami", json!({})).await);
    assert!(alice.starts_with("Bearer xchg-alice-"), "{alice}");
    assert_eq!(
        text_of(&relay.call_tool_as("ALICE-T", "whoami", json!({})).await),
        alice,
        "cached, not exchanged again"
    );
    // Cached for the token it was exchanged for: another token of alice's (one the endpoint
    // refuses) is exchanged itself, not served alice's cached one.
    let narrower = relay.call_tool_as("ALICE-LOW", "whoami", json!({})).await;
    assert!(narrower["error"]["message"].as_str().unwrap_or_default().contains("invalid_grant"), "{narrower}");
    let bob = text_of(&relay.call_tool_as("BOB-T", "whoami", json!({})).await);
    assert!(bob.starts_with("Bearer xchg-bob-"), "{bob}");
    let exchanges = endpoint.exchanges();
    assert_eq!(exchanges.len(), 3, "{exchanges:?}");
    assert_eq!(exchanges[0]["subject_token"], "ALICE-T");
    assert_eq!(exchanges[0]["audience"], "backend-h");

    // Refused by the server: the call fails with its reason, and the backend is not called.
    let calls = backend.calls_of("whoami");
    let refused = relay.call_tool_as("CAROL-T", "whoami", json!({})).await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("token exchange failed") && message.contains("invalid_grant"), "{refused}");
    assert_eq!(backend.calls_of("whoami"), calls);
    assert!(!relay.log().contains("xchg-alice"), "exchanged tokens stay out of the log");
}

/// A call made as its caller carries the caller's credential in place of the entry's
/// `Authorization` (the service credential travelled beside the user's, and a backend
/// preferring `Authorization` took every user for the service).
#[tokio::test]
async fn a_users_call_does_not_carry_the_service_credential_beside_theirs() {
    let redis = RedisServer::start().await;
    let backend = HttpBackend::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let backends = format!(
        "backends:\n  - name: h\n    url: {}\n    headers: {{Authorization: 'Bearer SERVICE', X-Tenant: acme}}\n    credentials: {{mode: per_user_secret, header: X-Api-Key, format: '{{secret}}'}}\n",
        backend.url()
    );
    let mut relay =
        Relay::start_files(dir.path(), &yaml(dir.path(), &redis), &backends, &[("RELAY_CREDENTIAL_KEYS", KEYS)]).await;
    relay.token = Some("OPS-T".into());
    relay.wait_ready("h").await;
    let stored =
        relay.call_tool_as("ALICE-T", "relay_auth_set_secret", json!({"backend": "h", "secret": "alice-key"})).await;
    assert_eq!(stored["result"]["structuredContent"]["stored"], true, "{stored}");
    let seen = relay.call_tool_as("ALICE-T", "whoami", json!({})).await;
    assert_eq!(text_of(&seen), "-", "the service's Authorization went with alice's key: {seen}");
}
