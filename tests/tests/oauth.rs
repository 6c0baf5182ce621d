//! The relay as an OAuth 2.1 resource server (issue 15): the `jwt-auth` plugin verifies
//! bearer JWTs minted here with test keys (RS256, ES256, EdDSA), the relay serves RFC 9728
//! metadata and points its challenges at it, verified tokens are cached until they expire, an
//! unknown `kid` refetches a JWKS URL once, and no token reaches a backend.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use relay_tests::{Relay, eventually, plugin_wasm, stdio_fixture_entry, ts_client_env};
use serde_json::{Value, json};

const ISSUER: &str = "https://as.relay.test";
const AUDIENCE: &str = "https://relay.test/mcp";

/// A signing key and its public JWK.
struct TestKey {
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn ec_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
    TestKey { alg: Algorithm::ES256, encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), jwk }
}

fn ed_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": B64.encode(pair.public_key_raw())});
    TestKey { alg: Algorithm::EdDSA, encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(), jwk }
}

fn rsa_key(dir: &Path, kid: &str) -> TestKey {
    let pem = dir.join(format!("{kid}.pem"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem.to_str().unwrap()]);
    let modulus = run(&["rsa", "-in", pem.to_str().unwrap(), "-noout", "-modulus"]);
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": B64.encode(n), "e": "AQAB"});
    TestKey { alg: Algorithm::RS256, encoding: EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap(), jwk }
}

fn claims(extra: Value) -> Value {
    let mut claims =
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "mcp tools", "exp": now() + 600, "iat": now()});
    claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    claims
}

fn mint(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = key.jwk["kid"].as_str().map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn relay_yaml(plugin_config: &str, grants: &str) -> String {
    format!(
        "oauth: {{resource: '{AUDIENCE}', authorization_servers: ['{ISSUER}'], scopes_supported: [mcp]}}\nplugins:\n  - {{name: auth, world: auth, path: {}, grants: {{clock: true, {grants}}}, config: {{issuer: '{ISSUER}', audience: '{AUDIENCE}', required_scopes: [mcp], {plugin_config}}}}}\n",
        plugin_wasm("jwt_auth").display()
    )
}

async fn initialize(relay: &Relay, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(relay.http("/mcp"))
        .header("Accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}}))
        .send()
        .await
        .unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn tokens_are_verified_by_signature_and_claims_and_refusals_point_at_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    std::fs::create_dir(&keys_dir).unwrap();
    let (rsa, ec, ed) = (rsa_key(dir.path(), "rsa-1"), ec_key("ec-1"), ed_key("ed-1"));
    let stranger = ec_key("ec-1"); // same kid, another key: a forged signature
    let jwks_file = keys_dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&rsa, &ec, &ed])).unwrap();
    let record = dir.path().join("backend-received.jsonl");
    let backends = format!("backends:\n{}", stdio_fixture_entry("b", &["--record", record.to_str().unwrap()]));
    let yaml = relay_yaml(
        &format!("jwks_file: {}", jwks_file.display()),
        &format!("files: {{read: [{}]}}", keys_dir.display()),
    );
    let relay = Relay::start_files(dir.path(), &yaml, &backends, &[]).await;

    for key in [&rsa, &ec, &ed] {
        let response = initialize(&relay, &mint(key, &claims(json!({})))).await;
        assert_eq!(response.status(), 200, "{:?}: {}", key.alg, response.text().await.unwrap());
    }
    let metadata_url = "https://relay.test/.well-known/oauth-protected-resource/mcp";
    let refused = [
        ("expired", mint(&ec, &claims(json!({"exp": now() - 120})))),
        ("not yet valid", mint(&ec, &claims(json!({"nbf": now() + 120})))),
        ("wrong audience", mint(&ec, &claims(json!({"aud": "https://other.test/mcp"})))),
        ("wrong issuer", mint(&ec, &claims(json!({"iss": "https://evil.test"})))),
        ("bad signature", mint(&stranger, &claims(json!({})))),
        ("unknown kid", mint(&ec_key("ec-9"), &claims(json!({})))),
        (
            "alg none",
            format!("{}.{}.", B64.encode(r#"{"alg":"none","kid":"ec-1"}"#), B64.encode(claims(json!({})).to_string())),
        ),
        ("HMAC with the public key", {
            let header = Header { kid: Some("rsa-1".into()), ..Header::new(Algorithm::HS256) };
            let secret = EncodingKey::from_secret(rsa.jwk.to_string().as_bytes());
            jsonwebtoken::encode(&header, &claims(json!({})), &secret).unwrap()
        }),
    ];
    for (case, token) in &refused {
        let response = initialize(&relay, token).await;
        assert_eq!(response.status(), 401, "{case}");
        let challenge = challenge(&response);
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
            "{case}: {challenge}"
        );
        assert!(challenge.contains("scope=\"mcp\""), "{case}: {challenge}");
    }
    // A valid token without the required scope: 403, insufficient_scope.
    let response = initialize(&relay, &mint(&ed, &claims(json!({"scope": "tools"})))).await;
    assert_eq!(response.status(), 403);
    assert!(challenge(&response).contains(r#"error="insufficient_scope""#), "{}", challenge(&response));
    // Tokens travel in the header only.
    let good = mint(&rsa, &claims(json!({})));
    let in_query =
        reqwest::Client::new().post(format!("{}?access_token={good}", relay.http("/mcp"))).send().await.unwrap();
    assert_eq!(in_query.status(), 400);

    // The metadata, at both well-known paths.
    for path in ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"] {
        let metadata: Value = reqwest::get(relay.http(path)).await.unwrap().json().await.unwrap();
        assert_eq!(metadata["resource"], AUDIENCE);
        assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
        assert_eq!(metadata["scopes_supported"], json!(["mcp"]));
    }

    // The official TS SDK client connects with a valid token; the backend never sees it.
    let header = format!("Authorization: Bearer {good}");
    let calls = json!([{"name": "echo", "arguments": {"message": "hi"}}]);
    let report = ts_client_env("http", &relay.http("/mcp"), calls, json!([]), &[], &["--header", &header]).await;
    assert_eq!(report["results"][0]["content"][0]["text"], "b: hi", "{report}");
    let received = std::fs::read_to_string(&record).unwrap();
    assert!(received.contains("\"echo\"") && !received.contains(&good), "the token reached the backend");

    // Verified tokens are remembered until they expire: with the key set emptied, a token
    // seen before still passes, a new one does not.
    std::fs::write(&jwks_file, r#"{"keys": []}"#).unwrap();
    assert_eq!(initialize(&relay, &good).await.status(), 200, "cached");
    assert_eq!(initialize(&relay, &mint(&rsa, &claims(json!({"sub": "bob"})))).await.status(), 401);
    assert!(!relay.log().contains(&good), "a token reached the log");
}

/// A JWKS endpoint that counts its fetches and serves whatever `document` holds, each after
/// `delay`.
async fn jwks_server(document: Arc<std::sync::Mutex<String>>, fetches: Arc<AtomicUsize>, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (document, fetches) = (document.clone(), fetches.clone());
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let body = document.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_url_once() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (ec_key("k1"), ed_key("k2"));
    let document = Arc::new(std::sync::Mutex::new(jwks(&[&first])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let port = jwks_server(document.clone(), fetches.clone(), Duration::ZERO).await;
    let yaml = relay_yaml(
        &format!("jwks_url: 'http://127.0.0.1:{port}/jwks.json', jwks_refresh_secs: 600"),
        &format!("http: ['127.0.0.1:{port}']"),
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    assert_eq!(initialize(&relay, &mint(&first, &claims(json!({})))).await.status(), 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched once, then cached");
    assert_eq!(initialize(&relay, &mint(&first, &claims(json!({"sub": "carol"})))).await.status(), 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // The issuer rotates in a new key: a token naming it triggers one refetch.
    *document.lock().unwrap() = jwks(&[&first, &second]);
    assert_eq!(initialize(&relay, &mint(&second, &claims(json!({})))).await.status(), 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // Unknown kids after that do not hammer the issuer: no refetch within jwks_refresh_secs.
    for i in 0..5 {
        assert_eq!(initialize(&relay, &mint(&ec_key(&format!("x{i}")), &claims(json!({})))).await.status(), 401);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

/// Each instance of the plugin keeps its own key set: after a rotation every one of them takes
/// the new key (one instance's refetch spent a budget shared through `kv`, and the others
/// refused the new key's tokens until their document was an hour old).
#[tokio::test]
async fn after_a_key_rotation_every_plugin_instance_takes_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (ec_key("k1"), ed_key("k2"));
    let document = Arc::new(std::sync::Mutex::new(jwks(&[&first])));
    // Slow enough that logins at once each take an instance of the plugin.
    let port = jwks_server(document.clone(), Arc::default(), Duration::from_millis(300)).await;
    let yaml = relay_yaml(
        &format!("jwks_url: 'http://127.0.0.1:{port}/jwks.json', jwks_refresh_secs: 600"),
        &format!("http: ['127.0.0.1:{port}']"),
    )
    .replace("config: {issuer", "limits: {deadline_ms: 5000}, config: {issuer");
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let logins = async |key: &TestKey, who: &str| {
        let tokens: Vec<_> = (0..6).map(|i| mint(key, &claims(json!({"sub": format!("{who}{i}")})))).collect();
        let answers = futures::future::join_all(tokens.iter().map(|token| initialize(&relay, token))).await;
        let statuses = answers.iter().map(|answer| answer.status().as_u16()).collect::<Vec<_>>();
        if statuses.iter().any(|&status| status != 200) {
            println!("{}", relay.log());
        }
        statuses
    };
    assert_eq!(logins(&first, "before").await, [200; 6]);
    *document.lock().unwrap() = jwks(&[&first, &second]);
    assert_eq!(logins(&second, "after").await, [200; 6], "every instance refetched for the new key");
}

/// A token signed by `key` whose header is exactly `header` (fields jsonwebtoken cannot set).
fn mint_with_header(key: &TestKey, header: &Value, claims: &Value) -> String {
    let signed = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &key.encoding, key.alg).unwrap();
    format!("{signed}.{signature}")
}

/// A relay with jwt-auth over a JWKS file of `key`, no leeway, and `extra` relay.yaml keys.
async fn jwt_relay(dir: &Path, key: &TestKey, plugin_config: &str, extra: &str) -> Relay {
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let jwks_file = keys_dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[key])).unwrap();
    let yaml = relay_yaml(
        &format!("jwks_file: {}, leeway_secs: 0{plugin_config}", jwks_file.display()),
        &format!("files: {{read: [{}]}}", keys_dir.display()),
    );
    Relay::start_files(dir, &format!("{extra}{yaml}"), "backends: []\n", &[]).await
}

#[tokio::test]
async fn sessions_end_when_their_token_expires_on_every_transport() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message as Frame, client::IntoClientRequest};
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key("ec-1");
    let relay = jwt_relay(dir.path(), &ec, "", "").await;
    let expires = now() + 4;
    let short = mint(&ec, &claims(json!({"exp": expires})));

    let opened = initialize(&relay, &short).await;
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let list = || {
        reqwest::Client::new()
            .post(relay.http("/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .header("Mcp-Session-Id", &session)
            .bearer_auth(&short)
            .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
    };
    assert_eq!(list().send().await.unwrap().status(), 200);
    let mut get_stream = reqwest::Client::new()
        .get(relay.http("/mcp"))
        .header("Accept", "text/event-stream")
        .header("Mcp-Session-Id", &session)
        .bearer_auth(&short)
        .send()
        .await
        .unwrap();
    assert_eq!(get_stream.status(), 200);
    let mut request = relay.ws("/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {short}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}}});
    ws.send(Frame::Text(init.to_string().into())).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Frame::Text(_)))));
    let mut line = relay.line_client_as(Some(&short)).await;

    // Past `exp` (no leeway configured), every session of the token ends.
    while now() <= expires {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The HTTP session's GET stream ends at `exp` by itself, before any request finds the
    // session expired.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Ok(Some(_)) = get_stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the GET stream outlived its token");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let refused = list().send().await.unwrap();
    assert_eq!(refused.status(), 401, "the HTTP session outlived its token");
    assert!(challenge(&refused).contains("resource_metadata="), "{}", challenge(&refused));
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], -32011);
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Frame::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the WebSocket was closed")
    .expect("with a reason");
    assert_eq!(u16::from(closed.code), 1008, "{closed:?}");
    assert!(closed.reason.contains("expired"), "{closed:?}");
    let last = line.recv().await;
    assert_eq!(last["error"]["code"], -32011, "the newline session says why it ends: {last}");
    assert_eq!(initialize(&relay, &short).await.status(), 401, "and no new session opens with it");
}

#[tokio::test]
async fn crit_headers_are_refused_and_an_admin_scope_grants_no_admin() {
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key("ec-1");
    let relay = jwt_relay(dir.path(), &ec, ", admin_subjects: [ops]", "").await;
    let header = json!({"alg": "ES256", "kid": "ec-1", "crit": ["x-unknown"], "x-unknown": true});
    let critical = mint_with_header(&ec, &header, &claims(json!({})));
    assert_eq!(initialize(&relay, &critical).await.status(), 401, "crit names an extension nobody understands");
    let plain = mint_with_header(&ec, &json!({"alg": "ES256", "kid": "ec-1"}), &claims(json!({})));
    assert_eq!(initialize(&relay, &plain).await.status(), 200, "the same token without crit");

    // `scope: mcp admin` is not the admin role; `admin_subjects` is.
    let status = |token: String| {
        let url = relay.http("/status.json");
        async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    let scoped = mint(&ec, &claims(json!({"scope": "mcp admin"})));
    assert_eq!(status(scoped).await, 403, "an admin scope made its holder relay admin");
    let ops = mint(&ec, &claims(json!({"sub": "ops"})));
    assert_eq!(status(ops).await, 200, "a subject the operator named is admin");
}

#[tokio::test]
async fn nothing_written_into_redis_can_admit_a_token() {
    use sha2::Digest;
    let redis = relay_tests::redis::RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key("ec-1");
    let kv = format!("kv: {{backend: redis, url: '{}', namespace: forged}}\n", redis.url());
    let relay = jwt_relay(dir.path(), &ec, "", &kv).await;
    let fake = "not-a-jwt-at-all";
    let digest: String = sha2::Sha256::digest(fake.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    // What the plugin once cached verified tokens as, and a key set of the attacker's.
    let principal = json!({"id": "ops", "roles": ["admin"]}).to_string();
    redis.cli(&["SET", &format!("forged:auth:ok:{digest}"), &principal]);
    let attacker = ec_key("ec-1");
    redis.cli(&["SET", "forged:auth:jwks", &jwks(&[&attacker])]);
    assert_eq!(initialize(&relay, fake).await.status(), 401, "a forged cache entry admitted a non-token");
    let forged = mint(&attacker, &claims(json!({"scope": "mcp", "sub": "ops"})));
    assert_eq!(initialize(&relay, &forged).await.status(), 401, "a key set planted in Redis was trusted");
    assert_eq!(initialize(&relay, &mint(&ec, &claims(json!({})))).await.status(), 200);
}

#[tokio::test]
async fn attacker_text_in_a_token_is_not_echoed_at_length() {
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key("ec-1");
    let relay = jwt_relay(dir.path(), &ec, "", "").await;
    // Under the pre-authentication cap (64 KiB), but far over what any reason should quote.
    let header = json!({"alg": "A".repeat(40_000), "kid": "ec-1"});
    let token = format!("{}.{}.sig", B64.encode(header.to_string()), B64.encode(claims(json!({})).to_string()));
    let mut line = relay_tests::LineClient::connect(relay.port).await;
    let params = json!({"protocolVersion": "2025-06-18", "_meta": {"authorization": format!("Bearer {token}")}});
    let answer = line.request("initialize", params).await;
    assert_eq!(answer["error"]["code"], -32011, "{}", &answer.to_string()[..200]);
    assert!(answer.to_string().len() < 1024, "the error quotes {} bytes", answer.to_string().len());
    relay.wait_for_log("outcome=\"denied\"").await;
    let longest = relay.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8192, "a log line of {longest} bytes");
    // A first line past the cap is refused before anyone reads it as a credential.
    let mut huge = relay_tests::LineClient::connect(relay.port).await;
    huge.send_raw(&format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"x\":\"{}\"}}}}",
        "y".repeat(70_000)
    ))
    .await;
    let refused = huge.recv().await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("max_preauth_bytes"), "{refused}");
}

/// A relay over stdio backend `b` whose jwt-auth reads its keys from a file: two keys, one
/// about to be taken out (`leaked`, alice's token) and one that stays (`kept`, bob's).
struct KeySet {
    relay: Relay,
    jwks_file: std::path::PathBuf,
    leaked: TestKey,
    kept: TestKey,
    alice: String,
    bob: String,
}

impl KeySet {
    async fn start(dir: &Path) -> KeySet {
        let keys_dir = dir.join("keys");
        std::fs::create_dir(&keys_dir).unwrap();
        let (leaked, kept) = (ec_key("ec-1"), ed_key("ed-1"));
        let jwks_file = keys_dir.join("jwks.json");
        std::fs::write(&jwks_file, jwks(&[&leaked, &kept])).unwrap();
        let yaml = relay_yaml(
            &format!("jwks_file: {}", jwks_file.display()),
            &format!("files: {{read: [{}]}}", keys_dir.display()),
        );
        let backends = format!("backends:\n{}", stdio_fixture_entry("b", &[]));
        let relay = Relay::start_files(dir, &yaml, &backends, &[]).await;
        let (alice, bob) = (mint(&leaked, &claims(json!({}))), mint(&kept, &claims(json!({"sub": "bob"}))));
        KeySet { relay, jwks_file, leaked, kept, alice, bob }
    }
}

/// A session whose key a reload took away hears nothing more even if it never sends another
/// request: the next event for it (here the tool list changing) confirms its credential first,
/// and ends it. A quiet newline connection is closed without the event; an HTTP session's GET
/// stream ends with the session. A session whose key stayed gets the event.
#[tokio::test]
async fn a_quiet_session_whose_key_a_reload_took_away_hears_no_more_events() {
    let dir = tempfile::tempdir().unwrap();
    let KeySet { relay, jwks_file, kept, alice, bob, .. } = KeySet::start(dir.path()).await;

    let mut alice_line = relay.line_client_as(Some(&alice)).await;
    let mut bob_line = relay.line_client_as(Some(&bob)).await;
    while !alice_line.tool_names().await.contains(&"echo".to_owned()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = initialize(&relay, &alice).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let get_stream = client
        .get(relay.http("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(get_stream.status(), 200);

    std::fs::write(&jwks_file, jwks(&[&kept])).unwrap();
    relay.signal("-HUP");
    relay.wait_for_log("SIGHUP: reloading plugins").await;
    // A second backend: every tool's name changes, and every session is told.
    let more = format!("backends:\n{}{}", stdio_fixture_entry("b", &[]), stdio_fixture_entry("c", &[]));
    std::fs::write(dir.path().join("backends.yaml"), more).unwrap();

    let told = async {
        loop {
            let message = bob_line.recv().await;
            if message["method"] == "notifications/tools/list_changed" {
                break;
            }
        }
    };
    tokio::time::timeout(relay_tests::PATIENCE, told).await.expect("bob is told the tools changed");
    let heard = alice_line.until_closed().await.expect("alice's quiet connection is closed");
    assert!(
        heard.iter().all(|m| m["method"] != "notifications/tools/list_changed"),
        "alice heard the change after her key was taken away: {heard:?}"
    );
    assert_eq!(heard.last().map(|m| m["error"]["code"].clone()), Some(json!(-32011)), "{heard:?}");
    let streamed = tokio::time::timeout(relay_tests::PATIENCE, get_stream.text())
        .await
        .expect("alice's GET stream ends")
        .unwrap_or_default();
    assert!(!streamed.contains("list_changed"), "alice's GET stream carried the change: {streamed}");
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"});
    let after = relay_tests::mcp_post(&client, &relay.http("/mcp"), &ping, Some(&session))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401, "alice's HTTP session is refused");
    assert!(relay.log().contains("session ended: its credential expired or no longer admits it"), "not ended");
}

/// A key taken out of the key set, followed by a reload (SIGHUP), ends the sessions its tokens
/// opened, not only new connections: each open session is asked about again at its next
/// request. An HTTP session answers 401 and is gone; a newline connection is refused and
/// closed; a session of a token whose key stayed goes on.
#[tokio::test]
async fn a_key_taken_out_of_the_key_set_ends_the_sessions_its_tokens_opened_at_the_next_reload() {
    let dir = tempfile::tempdir().unwrap();
    let KeySet { relay, jwks_file, leaked, kept, alice, bob } = KeySet::start(dir.path()).await;

    let client = reqwest::Client::new();
    let open = async |token: &str| {
        let response = initialize(&relay, token).await;
        assert_eq!(response.status(), 200);
        let id = response.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        relay_tests::mcp_post(&client, &relay.http("/mcp"), &initialized, Some(&id))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        id
    };
    let call = async |token: &str, session: &str| {
        let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "m"}}});
        let response = relay_tests::mcp_post(&client, &relay.http("/mcp"), &body, Some(session))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (alices, bobs) = (open(&alice).await, open(&bob).await);
    let mut alice_line = relay.line_client_as(Some(&alice)).await;
    while !alice_line.tool_names().await.contains(&"echo".to_owned()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(relay_tests::text_of(&alice_line.call_tool("echo", json!({"message": "m"})).await), "b: m");
    assert_eq!(call(&alice, &alices).await.0, 200);

    std::fs::write(&jwks_file, jwks(&[&kept])).unwrap();
    relay.signal("-HUP");
    relay.wait_for_log("SIGHUP: reloading plugins").await;
    let (status, body) = eventually("alice's HTTP session refused", || async {
        let (status, body) = call(&alice, &alices).await;
        (status != 200).then_some((status, body))
    })
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no longer admits it"), "{body}");
    let refused = alice_line.call_tool("echo", json!({"message": "m"})).await;
    assert_eq!(refused["error"]["code"], -32011, "{refused}");
    assert!(alice_line.closed().await, "the newline connection stays open");
    // Ended, not refused once: with the key back (read at each check), the session is gone.
    std::fs::write(&jwks_file, jwks(&[&leaked, &kept])).unwrap();
    assert_eq!(call(&alice, &alices).await.0, 404, "the session ended");

    let (status, body) = call(&bob, &bobs).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("b: m"), "{body}");
    assert!(relay.log().contains("outcome=\"revoked\"") || relay.log().contains("outcome=revoked"), "not logged");
}
