//! The TypeScript SDK's example servers (`@modelcontextprotocol/sdk`, installed by
//! `scripts/test.sh`) with their in-memory authorization server: code nobody here wrote, run as
//! backends. A service token is obtained the way an operator would once (dynamic registration,
//! PKCE S256, `resource`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::process::{Child, Command};

use crate::haproxy::free_port;
use crate::{eventually, repo_root};

/// The example server and its authorization server, logging to a file.
pub struct ExampleServer {
    _child: Child,
    /// Its MCP port.
    pub mcp_port: u16,
    /// Its authorization server's port.
    pub auth_port: u16,
    log: PathBuf,
    /// A token for the relay's own use (its catalog, or every call of a static backend).
    pub service: String,
}

impl ExampleServer {
    /// Starts the example `script` (e.g. `simpleStreamableHttp.js`) with `args`, logging into
    /// `dir`, and obtains its service token.
    pub async fn start(dir: &Path, script: &str, args: &[&str]) -> ExampleServer {
        let script = repo_root()
            .join("tests/clients/node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server")
            .join(script);
        assert!(script.exists(), "{} is missing: run scripts/test.sh (it runs npm ci)", script.display());
        let (mcp_port, auth_port) = (free_port(), free_port());
        let log = dir.join("example-server.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("node")
            .arg(script)
            .args(args)
            .env("MCP_PORT", mcp_port.to_string())
            .env("MCP_AUTH_PORT", auth_port.to_string())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the example server");
        let mut server = ExampleServer { _child: child, mcp_port, auth_port, log, service: String::new() };
        eventually("the example server listens", || async {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            (text.contains("MCP Streamable HTTP Server listening") && text.contains("Authorization Server listening"))
                .then_some(())
        })
        .await;
        server.service = server.service_token().await;
        server
    }

    /// `http://localhost:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://localhost:{}/mcp", self.mcp_port)
    }

    /// What it has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The tokens of the requests it has served, in order.
    pub fn tokens(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.split("Authenticated user:")
            .skip(1)
            .filter_map(|entry| entry.split("token: '").nth(1)?.split('\'').next().map(str::to_owned))
            .collect()
    }

    /// A token for the relay's own use (its catalog): registered, authorized and redeemed here,
    /// as an operator would once.
    async fn service_token(&self) -> String {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let auth = format!("http://localhost:{}", self.auth_port);
        let redirect = "http://localhost/service-callback";
        let registered: Value = http
            .post(format!("{auth}/register"))
            .json(&json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "none", "client_name": "ops"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let client_id = registered["client_id"].as_str().expect("a client id").to_owned();
        let verifier = "service-verifier-0123456789-0123456789-0123456789";
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier));
        let authorized = http
            .get(format!("{auth}/authorize"))
            .query(&[
                ("response_type", "code"),
                ("client_id", &client_id),
                ("redirect_uri", redirect),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("resource", &self.url()),
            ])
            .send()
            .await
            .unwrap();
        let location = authorized.headers()["location"].to_str().unwrap().to_owned();
        let code = url::Url::parse(&location).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
        let token: Value = http
            .post(format!("{auth}/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect),
                ("client_id", &client_id),
                ("resource", &self.url()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        token["access_token"].as_str().expect("a service token").to_owned()
    }
}
