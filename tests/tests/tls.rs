//! Native TLS on the one port: the official SDK clients over `https://` and `wss://`, newline
//! JSON-RPC over TLS (`relay health --tls`), plaintext still served when TLS is optional and
//! refused when it is required, only TLS 1.2+ with forward-secret AEAD suites (probed with
//! `openssl s_client`), client certificates, and certificate rotation without a restart.

use std::path::Path;
use std::process::Output;

use relay_tests::pki::TestCa;
use relay_tests::{Relay, eventually, metric_value, py_client_env, relay_bin, replace_file, ts_client_env};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A relay.yaml serving TLS with `server.crt`/`server.key` (plus `extra` keys of `tls:`).
fn tls_yaml(extra: &str) -> String {
    format!("tls: {{cert: server.crt, key: server.key{extra}}}\nmetrics: {{listen: 127.0.0.1:0}}\n")
}

/// `openssl s_client` against the relay with `args`; stdin closed at once.
async fn s_client(port: u16, args: &[&str]) -> Output {
    tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs (scripts/test.sh installs it)")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `relay health` against the relay's port with `args`: whether it passed.
async fn health(port: u16, args: &[&str]) -> bool {
    health_at("localhost", port, args).await
}

/// `relay health` against `host:port` with `args`: whether it passed.
async fn health_at(host: &str, port: u16, args: &[&str]) -> bool {
    let status = tokio::process::Command::new(relay_bin())
        .args(["health", "--host", host, "--port", &port.to_string(), "--timeout", "5"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    status.success()
}

fn ca_env(ca: &Path) -> [(&'static str, String); 2] {
    let ca = ca.display().to_string();
    [("NODE_EXTRA_CA_CERTS", ca.clone()), ("SSL_CERT_FILE", ca)]
}

#[tokio::test]
async fn sdk_clients_speak_https_and_wss_and_plaintext_stays_served_when_tls_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "relay-test-ca");
    ca.server("relay-one", "server");
    let relay = Relay::start_files(dir.path(), &tls_yaml(""), "backends: []\n", &[]).await;
    let env = ca_env(&ca.ca_pem);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let calls = json!([{"name": "relay_get_status", "arguments": {}}]);
    let https = format!("https://localhost:{}/mcp", relay.port);
    let wss = format!("wss://localhost:{}/ws", relay.port);
    for report in [
        ts_client_env("http", &https, calls.clone(), json!([]), &env, &[]).await,
        ts_client_env("ws", &wss, calls.clone(), json!([]), &env, &[]).await,
        py_client_env("legacy", &https, calls.clone(), json!([]), &env).await,
    ] {
        assert_eq!(report["serverInfo"]["name"], "relay", "{report}");
        assert!(report["results"][0]["structuredContent"]["backends"].is_array(), "{report}");
    }
    // Newline JSON-RPC over TLS, verified against the test CA; not against the public roots.
    let ca_path = ca.ca_pem.display().to_string();
    assert!(health(relay.port, &["--tls", "--ca", &ca_path]).await, "newline over TLS");
    assert!(!health(relay.port, &["--tls"]).await, "a certificate from an unknown CA is refused");
    // TLS is optional here: plaintext clients on the same port are still served.
    assert!(health(relay.port, &[]).await, "newline in the clear");
    let mut line = relay.line_client().await;
    assert_eq!(
        line.request("initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}})).await["result"]["serverInfo"]
            ["name"],
        "relay"
    );
}

#[tokio::test]
async fn tls_required_refuses_plaintext_old_protocols_and_weak_suites() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "relay-test-ca");
    ca.server("relay-one", "server");
    let relay = Relay::start_files(dir.path(), &tls_yaml(", required: true"), "backends: []\n", &[]).await;
    // Plaintext HTTP gets a clear refusal, newline JSON-RPC a JSON-RPC error; the probes stay
    // reachable in the clear (HAProxy's health checks speak plain HTTP).
    let port = relay.port;
    let plain_get = |path: &'static str| async move {
        let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        plain.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        plain.read_to_string(&mut answer).await.unwrap();
        answer
    };
    for refused in ["/mcp", "/metrics", "/status"] {
        let answer = plain_get(refused).await;
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("this port requires TLS"), "{refused}: {answer}");
    }
    // A call in the clear too (POST /mcp is answered before the router on the TLS side).
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    plain.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("this port requires TLS"), "POST /mcp: {answer}");
    for probe in ["/healthz", "/readyz"] {
        let answer = plain_get(probe).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{probe}: {answer}");
    }
    let mut line = tokio::net::TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap();
    line.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}\n").await.unwrap();
    let mut answer = String::new();
    line.read_to_string(&mut answer).await.unwrap();
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(answer["error"]["message"], "this port requires TLS");
    assert!(!health(relay.port, &[]).await);
    let ca_path = ca.ca_pem.display().to_string();
    assert!(health(relay.port, &["--tls", "--ca", &ca_path]).await);

    // TLS 1.0 and 1.1 are refused by the server (the client is allowed to offer them).
    for old in ["-tls1", "-tls1_1"] {
        let probe = s_client(relay.port, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]).await;
        assert!(!probe.status.success(), "{old} accepted: {}", text(&probe));
    }
    // TLS 1.2: ECDHE with AES-GCM or ChaCha20-Poly1305 only; CBC and static-RSA suites refused.
    for weak in ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256", "AES128-SHA"] {
        let probe = s_client(relay.port, &["-tls1_2", "-cipher", weak]).await;
        assert!(!probe.status.success(), "{weak} accepted: {}", text(&probe));
    }
    for strong in ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"] {
        let probe = s_client(relay.port, &["-tls1_2", "-cipher", strong]).await;
        assert!(probe.status.success() && text(&probe).contains(strong), "{strong} refused: {}", text(&probe));
    }
    let probe = s_client(relay.port, &["-tls1_3"]).await;
    assert!(probe.status.success() && text(&probe).contains("TLSv1.3"), "{}", text(&probe));

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", relay.metrics_port.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric_value(&metrics, r#"relay_tls_refused_total{reason="plaintext"}"#).unwrap() >= 3.0, "{metrics}");
    assert!(metric_value(&metrics, r#"relay_tls_refused_total{reason="handshake"}"#).unwrap() >= 6.0, "{metrics}");
}

/// The subject common name of the certificate the relay presents now.
async fn presented_cn(port: u16) -> String {
    let probe = s_client(port, &[]).await;
    let out = text(&probe);
    out.lines()
        .find_map(|l| l.trim().strip_prefix("subject=").map(str::to_owned))
        .unwrap_or_else(|| panic!("no subject in: {out}"))
}

#[tokio::test]
async fn a_replaced_certificate_is_used_for_new_handshakes_and_a_bad_pair_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "relay-test-ca");
    ca.server("relay-one", "server");
    let relay = Relay::start_files(dir.path(), &tls_yaml(""), "backends: []\n", &[]).await;
    assert!(presented_cn(relay.port).await.contains("relay-one"));

    // A new pair, written the way deploy tools do (new files renamed into place), the key 2 s
    // before the certificate: in between the files do not match, which is a rotation, not an
    // error.
    let two = ca.server("relay-two", "staged-two");
    replace_file(&dir.path().join("server.key"), &std::fs::read(&two.key).unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(presented_cn(relay.port).await.contains("relay-one"), "the running pair stays meanwhile");
    replace_file(&dir.path().join("server.crt"), &std::fs::read(&two.cert).unwrap());
    eventually("the new certificate presented", || async {
        presented_cn(relay.port).await.contains("relay-two").then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let log = relay.log();
    assert!(!log.contains("ERROR") && !log.contains("TLS files rejected"), "a rotation logged an error:\n{log}");
    assert!(log.contains("not a usable pair yet"), "{log}");
    // The status says when the certificate in use expires.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/status.json", relay.metrics_port.unwrap()))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let days = metrics["tls"]["days_left"].as_f64().unwrap_or_else(|| panic!("{metrics}"));
    assert!(days > 1.0, "the test CA issues long-lived certificates: {metrics}");

    // An expired pair: refused like one that does not load (it was put in use).
    let old = ca.expired_server("relay-old", "staged-old");
    replace_file(&dir.path().join("server.key"), &std::fs::read(&old.key).unwrap());
    replace_file(&dir.path().join("server.crt"), &std::fs::read(&old.cert).unwrap());
    relay.wait_for_log("the certificate is not valid now").await;
    assert!(presented_cn(relay.port).await.contains("relay-two"), "the valid certificate stays");
    // One not valid yet (its issuer's clock runs ahead): the running one stays until it is valid.
    let ahead = ca.future_server("relay-ahead", "staged-ahead", std::time::Duration::from_secs(8));
    replace_file(&dir.path().join("server.key"), &std::fs::read(&ahead.key).unwrap());
    replace_file(&dir.path().join("server.crt"), &std::fs::read(&ahead.cert).unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(presented_cn(relay.port).await.contains("relay-two"), "a certificate not valid yet was taken");
    eventually("the certificate is taken once valid", || async {
        presented_cn(relay.port).await.contains("relay-ahead").then_some(())
    })
    .await;
    let two = ca.server("relay-two", "staged-two");
    replace_file(&dir.path().join("server.key"), &std::fs::read(&two.key).unwrap());
    replace_file(&dir.path().join("server.crt"), &std::fs::read(&two.cert).unwrap());
    eventually("relay-two again", || async { presented_cn(relay.port).await.contains("relay-two").then_some(()) })
        .await;

    // A key that is not the certificate's: refused, the running pair stays, the log says why.
    let three = ca.server("relay-three", "staged-three");
    let four = ca.server("relay-four", "staged-four");
    replace_file(&dir.path().join("server.crt"), &std::fs::read(&three.cert).unwrap());
    replace_file(&dir.path().join("server.key"), &std::fs::read(&four.key).unwrap());
    // Refused after the rotation's settle time, and seen where operators look: the metric the
    // ConfigFileRejected alert watches, and /status.
    let metrics_at = format!("http://127.0.0.1:{}", relay.metrics_port.unwrap());
    eventually("the TLS files reported rejected", || async {
        let metrics = reqwest::get(format!("{metrics_at}/metrics")).await.ok()?.text().await.ok()?;
        (metric_value(&metrics, r#"relay_config_file_rejected{file="tls"}"#) == Some(1.0)).then_some(())
    })
    .await;
    assert!(relay.log().contains("TLS files rejected; the running certificate stays"));
    assert!(presented_cn(relay.port).await.contains("relay-two"));
    let page = reqwest::get(format!("{metrics_at}/status")).await.unwrap().text().await.unwrap();
    assert!(page.contains("the files on disk are not in use"), "{page}");
    let ca_path = ca.ca_pem.display().to_string();
    assert!(health(relay.port, &["--tls", "--ca", &ca_path]).await);
}

#[tokio::test]
async fn client_certificates_are_verified_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "relay-test-ca");
    ca.server("relay-one", "server");
    let client = ca.client("agent-7", "client");
    let stranger_ca = TestCa::new(dir.path(), "stranger-ca");
    let stranger = stranger_ca.client("agent-8", "stranger");
    let yaml = tls_yaml(", client_ca: relay-test-ca.pem, client_cert_required: true, required: true");
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let pair =
        |issued: &relay_tests::pki::Issued| [issued.cert.display().to_string(), issued.key.display().to_string()];
    let [cert, key] = pair(&client);
    // TLS 1.2, where the server checks the client's certificate within the handshake.
    let ok = s_client(relay.port, &["-tls1_2", "-cert", &cert, "-key", &key]).await;
    assert!(ok.status.success(), "{}", text(&ok));
    let refused = s_client(relay.port, &["-tls1_2"]).await;
    assert!(!refused.status.success(), "no certificate: {}", text(&refused));
    let [cert, key] = pair(&stranger);
    let refused = s_client(relay.port, &["-tls1_2", "-cert", &cert, "-key", &key]).await;
    assert!(!refused.status.success(), "another CA's certificate: {}", text(&refused));

    // `relay health` (deploy.sh's step 4, through HEALTH_ARGS) checks such a relay with a
    // certificate of its own, by the name the relay's certificate has where that is not the
    // address it connects to.
    let ca_path = ca.ca_pem.display().to_string();
    let [cert, key] = pair(&client);
    assert!(!health(relay.port, &["--tls", "--ca", &ca_path]).await, "no client certificate");
    assert!(health(relay.port, &["--tls", "--ca", &ca_path, "--cert", &cert, "--key", &key]).await);
    let with_name =
        |name: &'static str| ["--tls", "--ca", &ca_path, "--cert", &cert, "--key", &key, "--servername", name];
    assert!(health_at("127.0.0.1", relay.port, &with_name("localhost")).await);
    assert!(!health_at("127.0.0.1", relay.port, &with_name("relay.example.com")).await, "a name it does not have");
}

/// Newline JSON-RPC over TLS from a client presenting `identity` (certificate, key), trusting
/// `ca`: sends `initialize` and returns the answer.
async fn initialize_over_tls(port: u16, ca: &Path, identity: Option<&relay_tests::pki::Issued>) -> serde_json::Value {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => {
            let chain = CertificateDer::pem_file_iter(&id.cert).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&id.key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}}});
    tls.write_all(format!("{init}\n").as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(tls);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn a_verified_client_certificate_reaches_the_auth_plugin_as_its_subject() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "relay-test-ca");
    ca.server("relay-one", "server");
    let agent = ca.client("agent-7", "agent");
    let stranger = TestCa::new(dir.path(), "stranger-ca").client("agent-7", "forged");
    let auth = relay_tests::plugin_wasm("token_auth");
    // Client certificates are optional here: a client without one falls back to tokens.
    let yaml = format!(
        "{}plugins:\n  - {{name: auth, world: auth, path: {}, config: {{tokens: [], certificates: [{{subject: 'CN=agent-7', principal: agent-7, roles: [ops]}}]}}}}\n",
        tls_yaml(", client_ca: relay-test-ca.pem"),
        auth.display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let answer = initialize_over_tls(relay.port, &ca.ca_pem, Some(&agent)).await;
    assert_eq!(answer["result"]["serverInfo"]["name"], "relay", "{answer}");
    relay.wait_for_log("as agent-7 by client certificate").await;
    let answer = initialize_over_tls(relay.port, &ca.ca_pem, None).await;
    assert_eq!(answer["error"]["code"], -32011, "no certificate, no token: {answer}");
    // A certificate with the same subject from another CA never passes the handshake.
    let forged = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::spawn({
            let (port, ca) = (relay.port, ca.ca_pem.clone());
            async move { initialize_over_tls(port, &ca, Some(&stranger)).await }
        })
        .await
    })
    .await
    .unwrap();
    assert!(forged.is_err() || forged.as_ref().unwrap()["result"].is_null(), "{forged:?}");
}

/// An HTTPS client trusting `ca`, presenting `identity` when given.
fn https_client(ca: &Path, identity: Option<&relay_tests::pki::Issued>) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder().use_rustls_tls().add_root_certificate(root);
    if let Some(id) = identity {
        let mut pem = std::fs::read(&id.cert).unwrap();
        pem.extend(std::fs::read(&id.key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

fn mcp_post(
    client: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: serde_json::Value,
) -> reqwest::RequestBuilder {
    let request = client.post(url).header("Accept", "application/json, text/event-stream").json(&body);
    match session {
        Some(id) => request.header("Mcp-Session-Id", id),
        None => request,
    }
}

#[tokio::test]
async fn certificate_subjects_match_as_names_and_a_session_keeps_to_its_certificate() {
    use relay_tests::pki::DnType;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "relay-test-ca");
    ca.server("relay-one", "server");
    let agent =
        ca.client_with_subject(&[(DnType::CommonName, "agent-7"), (DnType::OrganizationName, "Example")], "agent");
    // Same CA, one CN that spells the admin's whole subject.
    let impostor = ca.client_with_subject(&[(DnType::CommonName, "agent-7, O=Example")], "impostor");
    let yaml = format!(
        "{}plugins:\n  - {{name: auth, world: auth, path: {}, config: {{tokens: [], certificates: [{{subject: 'CN=agent-7, O=Example', principal: agent-7, roles: [admin]}}]}}}}\n",
        tls_yaml(", client_ca: relay-test-ca.pem"),
        relay_tests::plugin_wasm("token_auth").display()
    );
    let relay = Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let answer = initialize_over_tls(relay.port, &ca.ca_pem, Some(&agent)).await;
    assert_eq!(answer["result"]["serverInfo"]["name"], "relay", "{answer}");
    let answer = initialize_over_tls(relay.port, &ca.ca_pem, Some(&impostor)).await;
    assert_eq!(answer["error"]["code"], -32011, "a CN holding a comma is not the two-RDN subject: {answer}");

    // A Streamable HTTP session opened with the certificate answers only to that certificate.
    let https = format!("https://localhost:{}/mcp", relay.port);
    let with_cert = https_client(&ca.ca_pem, Some(&agent));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}});
    let opened = mcp_post(&with_cert, &https, None, init).send().await.unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let plain =
        mcp_post(&reqwest::Client::new(), &relay.http("/mcp"), Some(&session), list.clone()).send().await.unwrap();
    assert_eq!(plain.status(), 401, "plaintext, no certificate, no token");
    let no_cert = https_client(&ca.ca_pem, None);
    let refused = mcp_post(&no_cert, &https, Some(&session), list.clone()).send().await.unwrap();
    assert_eq!(refused.status(), 401, "TLS without the certificate");
    let other = https_client(&ca.ca_pem, Some(&impostor));
    assert_eq!(mcp_post(&other, &https, Some(&session), list.clone()).send().await.unwrap().status(), 401);
    let served = mcp_post(&with_cert, &https, Some(&session), list).send().await.unwrap();
    assert_eq!(served.status(), 200, "the certificate the session was opened with");
    assert!(!relay.log().contains(&session), "a session id reached the log");
}
