//! The relay as each user's own OAuth client of a backend (`credentials: {mode: oauth}`),
//! against code nobody here wrote: the TypeScript SDK's example server
//! (`simpleStreamableHttp.js --oauth-strict`) with its in-memory authorization server, which
//! registers clients dynamically (RFC 7591), wants PKCE S256, and with `--oauth-strict` accepts
//! only tokens issued for its own resource (RFC 8707). It logs the token of every request it
//! serves, so the test sees whose token each call carried.
//!
//! The relay lists the backend's tools with a service credential (the entry's `headers`);
//! each principal's calls carry that principal's own token, obtained by the relay the first
//! time the principal calls (URL-mode elicitation, or an error carrying the URL), completed at
//! the relay's `/oauth/callback`, sealed in Redis and used by a second relay too.

use std::collections::BTreeSet;
use std::path::Path;

use relay_tests::authorization_server::AuthorizationServer;
use relay_tests::haproxy::free_port;
use relay_tests::sdk_example::ExampleServer;
use relay_tests::{HttpBackend, RedisServer, Relay, eventually};
use serde_json::{Value, json};

const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The example server, with its authorization server accepting only tokens for its own resource.
const SCRIPT: &str = "simpleStreamableHttp.js";
const ARGS: [&str; 2] = ["--oauth", "--oauth-strict"];

fn relay_yaml(dir: &Path, redis: &RedisServer) -> String {
    relay_tests::three_principals_yaml(dir, redis, "oauthb")
}

/// A relay whose backend `demo` is the example server, called as each user, its catalog
/// listed with the service token.
async fn relay(dir: &Path, redis: &RedisServer, server: &ExampleServer, service: &str) -> Relay {
    let headers = format!("    headers: {{Authorization: 'Bearer {service}'}}\n");
    let relay = relay_with(dir, redis, server, &headers, "").await;
    relay.wait_ready("demo").await;
    relay
}

/// A relay whose backend `demo` is the example server in `oauth` mode, with `headers` (lines
/// of the entry) and `options` (more `credentials:` members, each followed by a comma).
async fn relay_with(dir: &Path, redis: &RedisServer, server: &ExampleServer, headers: &str, options: &str) -> Relay {
    let mut relay =
        Relay::start_files(dir, &relay_yaml(dir, redis), "backends: []\n", &[("RELAY_CREDENTIAL_KEYS", KEYS)]).await;
    relay.token = Some("OPS-T".into());
    // The redirect names the relay's own port, known once it listens.
    let backends = format!(
        "backends:\n  - name: demo\n    url: {}\n{headers}    credentials: {{mode: oauth, {options} redirect_uri: '{}'}}\n",
        server.url(),
        relay.http("/oauth/callback")
    );
    std::fs::write(relay.backends_path(), backends).unwrap();
    relay
}

async fn call(relay: &Relay, token: &str, name: &str) -> Value {
    relay.call_tool_as(token, "greet", json!({"name": name})).await
}

/// Calls `greet` as `token` and returns the tokens the example server saw meanwhile, but for
/// the service token (the relay's own requests, which may come at any time).
async fn tokens_of_call(relay: &Relay, server: &ExampleServer, token: &str) -> (Value, BTreeSet<String>) {
    let before = server.tokens().len();
    let answer = call(relay, token, token).await;
    let seen = server.tokens().split_off(before).into_iter().filter(|t| *t != server.service).collect();
    (answer, seen)
}

/// Opens the authorization URL as the user's browser would (the demo server approves at once
/// and redirects back to the relay), and confirms on the relay's page, which names the relay
/// principal the grant is for (nothing is stored before); the final URL (the relay's
/// callback) and its page.
async fn authorize(url: &str) -> (String, reqwest::StatusCode, String) {
    let (at, status, page) = arrive(url).await;
    match confirm_link(&at, &page) {
        Some(link) => {
            let response = reqwest::get(link).await.expect("the confirmation runs");
            let (at, status) = (response.url().to_string(), response.status());
            (at, status, response.text().await.unwrap())
        }
        None => (at.to_string(), status, page),
    }
}

/// Where the authorization URL leads the browser (the relay's callback), and that page.
async fn arrive(url: &str) -> (url::Url, reqwest::StatusCode, String) {
    let response = reqwest::get(url).await.expect("the authorization flow runs");
    let (at, status) = (response.url().clone(), response.status());
    (at, status, response.text().await.unwrap())
}

/// The confirmation link of the callback's page at `at`, if it asks for one.
fn confirm_link(at: &url::Url, page: &str) -> Option<url::Url> {
    let (_, link) = page.split_once("<a href=\"")?;
    let link = link.split('"').next()?.replace("&amp;", "&");
    Some(at.join(&link).unwrap())
}

fn authorize_url(refused: &Value) -> String {
    refused["error"]["data"]["authorize_url"].as_str().unwrap_or_else(|| panic!("no URL: {refused}")).to_owned()
}

#[tokio::test]
async fn each_principal_authorizes_once_and_its_calls_carry_its_own_token() {
    let redis = RedisServer::start().await;
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = ExampleServer::start(dirs.0.path(), SCRIPT, &ARGS).await;
    let service = server.service.clone();
    let one = relay(dirs.1.path(), &redis, &server, &service).await;
    // The catalog comes from the service credential.
    let tools = one.line_client_as(Some("ALICE-T")).await.tool_names().await;
    assert!(tools.iter().any(|t| t == "greet"), "{tools:?}");

    // A client without URL elicitation: -32011, the URL in the message and data; the backend
    // was not called with anything of alice's.
    let (refused, seen) = tokens_of_call(&one, &server, "ALICE-T").await;
    assert_eq!(refused["error"]["code"], -32011, "{refused}");
    let url = authorize_url(&refused);
    assert!(refused["error"]["message"].as_str().unwrap().contains(&url), "{refused}");
    assert!(seen.is_empty(), "{seen:?}");
    let query: Vec<(String, String)> = url::Url::parse(&url).unwrap().query_pairs().into_owned().collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(param("resource"), Some(server.url()), "RFC 8707 resource: the backend");

    // A client that declared URL elicitation gets -32042 with the elicitation, over Streamable
    // HTTP and over the newline transport.
    let elicited = http_call_with_url_elicitation(&one, "ALICE-T").await;
    assert_eq!(elicited["error"]["code"], -32042, "{elicited}");
    assert_eq!(elicited["error"]["data"]["elicitations"][0]["mode"], "url", "{elicited}");
    let mut asked = relay_tests::LineClient::connect(one.port).await;
    let init = asked
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"url": {}}},
            "clientInfo": {"name": "e2e"}, "_meta": {"authorization": "Bearer ALICE-T"}}),
        )
        .await;
    assert!(init["result"].is_object(), "{init}");
    let elicited = asked.call_tool("greet", json!({"name": "x"})).await;
    assert_eq!(elicited["error"]["code"], -32042, "{elicited}");
    let elicitation = &elicited["error"]["data"]["elicitations"][0];
    assert_eq!(elicitation["mode"], "url", "{elicited}");

    // The user opens the URL; the relay's callback completes the flow and says so, in the page
    // and to the client that was asked (MCP 2025-11-25 `notifications/elicitation/complete`).
    // The page first names whose grant it would be, and stores nothing until confirmed.
    let (arrived, status, asking) = arrive(elicitation["url"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{asking}");
    assert!(asking.contains("as relay user <b>alice</b>"), "{asking}");
    let status = one.call_tool_as("ALICE-T", "relay_auth_status", json!({})).await;
    assert_eq!(status["result"]["structuredContent"]["backends"][0]["authorized"], false, "{status}");
    let confirmed = reqwest::get(confirm_link(&arrived, &asking).expect("a confirmation link")).await.unwrap();
    let (callback, status) = (confirmed.url().to_string(), confirmed.status());
    let page = confirmed.text().await.unwrap();
    assert!(callback.starts_with(&one.http("/oauth/callback")), "{callback}");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Authorized") && page.contains("demo") && page.contains("relay user alice"), "{page}");
    let completed = asked.recv().await;
    assert_eq!(completed["method"], "notifications/elicitation/complete", "{completed}");
    assert_eq!(completed["params"]["elicitationId"], elicitation["elicitationId"], "{completed}");
    // The same link again is refused: one use.
    let replay = reqwest::get(&callback).await.unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("already used"));

    // The call now succeeds, carrying alice's own token: not the service token.
    let (answer, seen) = tokens_of_call(&one, &server, "ALICE-T").await;
    assert!(answer["result"]["content"][0]["text"].as_str().is_some_and(|t| t.contains("ALICE-T")), "{answer}");
    assert_eq!(seen.len(), 1, "one token, not the service's: {seen:?}");
    let alice = seen.into_iter().next().unwrap();

    // Bob authorizes too (through the URL of his own error) and gets his own token.
    let (refused, _) = tokens_of_call(&one, &server, "BOB-T").await;
    let (_, status, _) = authorize(&authorize_url(&refused)).await;
    assert_eq!(status, 200);
    let (answer, seen) = tokens_of_call(&one, &server, "BOB-T").await;
    assert!(answer["result"].is_object(), "{answer}");
    let bob = seen.into_iter().next().expect("bob's call reached the backend with his own token");
    assert_ne!(bob, alice);
    let (_, seen) = tokens_of_call(&one, &server, "ALICE-T").await;
    assert_eq!(seen, BTreeSet::from([alice.clone()]), "alice's calls keep her token");

    // Prompts and resources of the backend are read as the caller too: alice with her token,
    // and ops (who never authorized) is asked to rather than served as the relay.
    let mut alice_client = one.line_client_as(Some("ALICE-T")).await;
    let before = server.tokens().len();
    let read = alice_client.request("resources/read", json!({"uri": "https://example.com/greetings/default"})).await;
    assert!(read["result"]["contents"][0]["text"].is_string(), "{read}");
    let prompt =
        alice_client.request("prompts/get", json!({"name": "greeting-template", "arguments": {"name": "a"}})).await;
    assert!(prompt["result"]["messages"].is_array(), "{prompt}");
    let seen: BTreeSet<String> = server.tokens().split_off(before).into_iter().filter(|t| *t != service).collect();
    assert_eq!(seen, BTreeSet::from([alice.clone()]), "resources and prompts carry alice's token");
    let mut ops_client = one.line_client_as(Some("OPS-T")).await;
    let refused = ops_client.request("resources/read", json!({"uri": "https://example.com/greetings/default"})).await;
    assert_eq!(refused["error"]["code"], -32011, "{refused}");

    // A second relay on the same Redis and keys uses alice's stored grant.
    let two = relay(dirs.2.path(), &redis, &server, &service).await;
    let (answer, seen) = tokens_of_call(&two, &server, "ALICE-T").await;
    assert!(answer["result"].is_object(), "{answer}");
    assert_eq!(seen, BTreeSet::from([alice.clone()]));

    // Tokens are sealed at rest and never logged.
    for key in redis.cli(&["--scan", "--pattern", "oauthb:relay.credential:*"]).lines() {
        let stored = redis.cli(&["get", key.trim()]);
        assert!(!stored.contains(&alice) && !stored.contains(&bob), "{stored}");
    }
    for relay in [&one, &two] {
        let log = relay.log();
        assert!(!log.contains(&alice) && !log.contains(&bob) && !log.contains(&service), "a token in the log");
    }

    // Revoked: alice is asked again; bob is not.
    let revoked = one.call_tool_as("ALICE-T", "relay_auth_revoke", json!({"backend": "demo"})).await;
    assert_eq!(revoked["result"]["structuredContent"]["revoked"], json!(["demo"]), "{revoked}");
    assert_eq!(call(&two, "ALICE-T", "a").await["error"]["code"], -32011);
    assert!(call(&two, "BOB-T", "b").await["result"].is_object());
}

#[tokio::test]
async fn a_refused_or_foreign_callback_stores_nothing() {
    let redis = RedisServer::start().await;
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = ExampleServer::start(dirs.0.path(), SCRIPT, &ARGS).await;
    let service = server.service.clone();
    let relay = relay(dirs.1.path(), &redis, &server, &service).await;
    let url = authorize_url(&call(&relay, "ALICE-T", "a").await);
    let state = url::Url::parse(&url).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();

    // A state the relay never issued, and no state at all.
    for query in ["state=forged&code=x", "code=x"] {
        let page = reqwest::get(relay.http(&format!("/oauth/callback?{query}"))).await.unwrap();
        assert_eq!(page.status(), 400, "{query}");
    }
    // The user refuses: the page says so, nothing is stored, and the state is spent.
    let denied = reqwest::get(relay.http(&format!("/oauth/callback?error=access_denied&state={state}"))).await.unwrap();
    assert_eq!(denied.status(), 400);
    assert!(denied.text().await.unwrap().contains("refused (access_denied)"));
    assert_eq!(call(&relay, "ALICE-T", "a").await["error"]["code"], -32011);
    let again = reqwest::get(relay.http(&format!("/oauth/callback?code=x&state={state}"))).await.unwrap();
    assert_eq!(again.status(), 400);
    let status = relay.call_tool_as("ALICE-T", "relay_auth_status", json!({})).await;
    assert_eq!(status["result"]["structuredContent"]["backends"][0]["authorized"], false, "{status}");
}

/// A `tools/call` over Streamable HTTP from a client that declared URL elicitation.
async fn http_call_with_url_elicitation(relay: &Relay, token: &str) -> Value {
    let client = reqwest::Client::new();
    let post = |body: Value, session: Option<String>| {
        let mut request = relay_tests::mcp_post(&client, &relay.http("/mcp"), &body, session.as_deref())
            .header("authorization", format!("Bearer {token}"));
        if session.is_some() {
            request = request.header("mcp-protocol-version", "2025-11-25");
        }
        request
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"url": {}}},
        "clientInfo": {"name": "t", "version": "1"}}});
    let response = post(init, None).send().await.unwrap();
    let session = response.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "greet", "arguments": {"name": "x"}}});
    let body = post(call, Some(session)).send().await.unwrap().text().await.unwrap();
    relay_tests::sse_messages(&body).pop().expect("an answer")
}

/// A relay with no backends yet, its credentials sealed, the admin's token its own.
async fn oauth_relay(dir: &Path, redis: &RedisServer) -> Relay {
    let env = [("RELAY_CREDENTIAL_KEYS", KEYS)];
    let mut relay = Relay::start_files(dir, &relay_yaml(dir, redis), "backends: []\n", &env).await;
    relay.token = Some("OPS-T".into());
    relay
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire_and_unusable_servers_are_named() {
    // Tokens live 62 s; the relay refreshes within 60 s of expiry, so the second call refreshes.
    let server = AuthorizationServer::start(62, true).await;
    let plain_only = AuthorizationServer::start(3600, false).await;
    let backend = HttpBackend::start(0).await;
    let (dir, redis) = (tempfile::tempdir().unwrap(), RedisServer::start().await);
    let relay = oauth_relay(dir.path(), &redis).await;
    let entry = |name: &str, issuer: &str| {
        format!(
            "  - name: {name}\n    url: {}\n    credentials: {{mode: oauth, redirect_uri: '{}', authorization_server: '{issuer}'}}\n",
            backend.url(),
            relay.http("/oauth/callback")
        )
    };
    let gone = format!("http://127.0.0.1:{}", free_port());
    let backends = format!(
        "backends:\n{}{}{}",
        entry("h", &server.url()),
        entry("plain", &plain_only.url()),
        entry("gone", &gone)
    );
    std::fs::write(relay.backends_path(), backends).unwrap();
    for name in ["h", "plain", "gone"] {
        relay.wait_ready(name).await;
    }
    let whoami = |tool: &'static str| {
        let relay = &relay;
        async move { relay.line_client_as(Some("ALICE-T")).await.call_tool(tool, json!({})).await }
    };

    let (_, status, page) = authorize(&authorize_url(&whoami("h__whoami").await)).await;
    assert_eq!(status, 200, "{page}");
    let first = relay_tests::text_of(&whoami("h__whoami").await);
    assert!(first.starts_with("Bearer at-"), "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let second = relay_tests::text_of(&whoami("h__whoami").await);
    assert!(second.starts_with("Bearer at-") && second != first, "refreshed: {first} then {second}");
    let refresh = server.forms().pop().unwrap();
    assert_eq!(refresh["grant_type"], "refresh_token");
    assert_eq!(refresh["refresh_token"], first.replace("Bearer at-", "rt-"));
    assert_eq!(refresh["resource"], backend.url(), "the refresh names the resource too");
    let code = &server.forms()[0];
    assert_eq!((code["grant_type"].as_str(), code["client_id"].as_str()), ("authorization_code", "relay-client"));

    // A server without PKCE S256, and one that cannot be reached: refused, saying why.
    let refused = whoami("plain__whoami").await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("does not offer PKCE S256"), "{refused}");
    let refused = whoami("gone__whoami").await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("cannot be reached"), "{refused}");
}

/// A grant survives its token endpoint's outage (the access token, not expired yet, is used
/// meanwhile; the next call after it refreshes), and two calls that need a refresh at once
/// make one refresh and both get its token: the server rotates refresh tokens, so a second use
/// of one would be refused (and a real server may revoke the whole grant for it).
#[tokio::test]
async fn a_grant_outlives_a_token_endpoint_outage_and_calls_refreshing_at_once() {
    // Tokens live 62 s; the relay refreshes within 60 s of expiry.
    let server = AuthorizationServer::start(62, true).await;
    let backend = HttpBackend::start(0).await;
    let (dir, redis) = (tempfile::tempdir().unwrap(), RedisServer::start().await);
    let relay = oauth_relay(dir.path(), &redis).await;
    let backends = format!(
        "backends:\n  - name: h\n    url: {}\n    credentials: {{mode: oauth, redirect_uri: '{}', authorization_server: '{}'}}\n",
        backend.url(),
        relay.http("/oauth/callback"),
        server.url()
    );
    std::fs::write(relay.backends_path(), backends).unwrap();
    relay.wait_ready("h").await;
    let whoami = || {
        let relay = &relay;
        // The backend's only one: its tools keep their own names.
        async move { relay.line_client_as(Some("ALICE-T")).await.call_tool("whoami", json!({})).await }
    };
    let (_, status, page) = authorize(&authorize_url(&whoami().await)).await;
    assert_eq!(status, 200, "{page}");
    assert!(relay_tests::text_of(&whoami().await).starts_with("Bearer at-"));

    let first = relay_tests::text_of(&whoami().await);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    server.set_down(true);
    let during = whoami().await;
    assert_eq!(relay_tests::text_of(&during), first, "the unexpired token, during the outage: {during}");
    server.set_down(false);
    let renewed = whoami().await;
    let renewed = relay_tests::text_of(&renewed);
    assert!(renewed.starts_with("Bearer at-") && renewed != first, "the grant was forgotten: {renewed}");

    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // Slow enough that both calls wait for a refresh at once.
    server.set_delay_ms(500);
    let refreshes = || server.forms().iter().filter(|f| f["grant_type"] == "refresh_token").count();
    let before = refreshes();
    let (one, two) = tokio::join!(whoami(), whoami());
    assert_eq!(refreshes(), before + 1, "one refresh for both calls");
    for answer in [&one, &two] {
        assert!(relay_tests::text_of(answer).starts_with("Bearer at-"), "{answer}");
    }
    assert_eq!(relay_tests::text_of(&one), relay_tests::text_of(&two), "one refresh, one token");
    let after = whoami().await;
    assert!(relay_tests::text_of(&after).starts_with("Bearer at-"), "the grant was forgotten: {after}");
}

#[tokio::test]
async fn without_a_service_credential_the_catalog_is_listed_as_the_first_user_who_authorized() {
    let redis = RedisServer::start().await;
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = ExampleServer::start(dirs.0.path(), SCRIPT, &ARGS).await;
    let relay = relay_with(dirs.1.path(), &redis, &server, "", "catalog: first_user,").await;

    // Nobody has authorized: the backend cannot connect, and lists nothing; relay_auth_status
    // gives the way in.
    let status = eventually("the backend is known", || async {
        let status = relay.call_tool_as("ALICE-T", "relay_auth_status", json!({})).await;
        status["result"]["structuredContent"]["backends"][0]["authorize_url"].as_str().map(|_| status.clone())
    })
    .await;
    assert_ne!(relay.backend_state("demo").await.as_deref(), Some("ready"), "{status}");
    // An admin asking about alice gets no link: whoever followed it would authorize as alice.
    let of_alice = relay.call_tool_as("OPS-T", "relay_auth_status", json!({"principal": "alice"})).await;
    let entry = &of_alice["result"]["structuredContent"]["backends"][0];
    assert!(entry["authorized"] == false && entry.get("authorize_url").is_none(), "{of_alice}");
    let url = status["result"]["structuredContent"]["backends"][0]["authorize_url"].as_str().unwrap().to_owned();
    let (_, code, page) = authorize(&url).await;
    assert_eq!(code, 200, "{page}");

    // Listed as alice now: its handshake and lists carry her token, and so do her calls.
    relay.wait_ready("demo").await;
    let (answer, seen) = tokens_of_call(&relay, &server, "ALICE-T").await;
    assert!(answer["result"].is_object(), "{answer}");
    let alice = seen.into_iter().next().expect("alice's call carried a token");
    let every: BTreeSet<String> = server.tokens().into_iter().filter(|t| *t != server.service).collect();
    assert_eq!(every, BTreeSet::from([alice.clone()]), "the relay's own requests went as alice");
    // Bob sees the tools but is still asked for his own authorization.
    assert_eq!(call(&relay, "BOB-T", "b").await["error"]["code"], -32011);
}
