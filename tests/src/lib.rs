//! Harness for the end-to-end tests: starts the real `relay` binary (and fixture backends) on
//! ephemeral ports in a temporary directory, and speaks to it over real sockets.
//!
//! The relay binary must be built first (`cargo build -p relay`); the README's test command
//! does that.

pub mod authorization_server;
pub mod haproxy;
pub mod http_backend;
pub mod mock_openai;
pub mod pki;
pub mod redis;
pub mod sdk_example;
pub mod sts;
pub mod token_endpoint;

pub use http_backend::HttpBackend;
pub use mock_openai::MockOpenAi;
pub use redis::RedisServer;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};

/// How long a test waits for anything that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How long a process may take to start listening: a relay compiles its plugins first, and the
/// Python and JavaScript ones take seconds each on a busy machine (a healthy start is quick).
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(120);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_owned()
}

/// A binary of this workspace and build profile (beside the test executable's `deps/` folder).
/// The `relay-load` binary of this workspace.
pub fn load_bin() -> PathBuf {
    workspace_bin("relay-load")
}

/// The `echo-backend` binary (the fast backend `scripts/bench.sh` measures the hop against).
pub fn echo_backend_bin() -> PathBuf {
    workspace_bin("echo-backend")
}

fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let bin = profile_dir.join(name);
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)", bin.display());
    bin
}

/// The `relay` binary.
pub fn relay_bin() -> PathBuf {
    workspace_bin("relay")
}

/// `relay check-config` of `dir`'s relay.yaml: whether it passed, and what it wrote (stderr,
/// then stdout).
pub async fn check_config(dir: &Path) -> (bool, String) {
    let output = tokio::process::Command::new(relay_bin())
        .args(["check-config", "--config"])
        .arg(dir.join("relay.yaml"))
        .output()
        .await
        .expect("relay check-config runs");
    let said = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    (output.status.success(), said)
}

/// A running relay process; killed on drop.
pub struct Relay {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The private metrics listener's port (`metrics.listen`), if configured.
    pub metrics_port: Option<u16>,
    /// Its config directory (relay.yaml, backends.yaml, relay.log).
    pub dir: PathBuf,
    /// The bearer token the harness's own clients send (when auth is configured).
    pub token: Option<String>,
    _tempdir: Option<tempfile::TempDir>,
}

/// A relay.yaml with fast reconnects, for tests; open (no auth) with admin for everyone, so
/// tests may manage backends without tokens.
pub const TEST_RELAY_YAML: &str = "upstream:\n  backoff_initial_ms: 50\n  backoff_max_ms: 500\n  call_timeout_secs: 20\n  connect_timeout_secs: 10\naccess:\n  admin_without_auth: true\n";

impl Drop for Relay {
    /// Kills the relay's process group: the relay alone (`kill_on_drop`) would leave its stdio
    /// backends running, orphaned.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
    }
}

impl Relay {
    /// Starts a relay with the test relay.yaml and this backends.yaml.
    pub async fn start(backends_yaml: &str) -> Relay {
        Self::start_with(TEST_RELAY_YAML, backends_yaml, &[]).await
    }

    /// Starts a relay with the given files and extra arguments, in a fresh temp dir.
    pub async fn start_with(relay_yaml: &str, backends_yaml: &str, args: &[&str]) -> Relay {
        let tempdir = tempfile::tempdir().expect("tempdir");
        std::fs::write(tempdir.path().join("relay.yaml"), relay_yaml).unwrap();
        std::fs::write(tempdir.path().join("backends.yaml"), backends_yaml).unwrap();
        let dir = tempdir.path().to_owned();
        let mut relay = Self::start_in(&dir, "relay.log", args, &[]).await;
        relay._tempdir = Some(tempdir);
        relay
    }

    /// Starts a relay on files written into `dir` (which the caller keeps alive), with extra
    /// environment variables.
    pub async fn start_files(dir: &Path, relay_yaml: &str, backends_yaml: &str, env: &[(&str, &str)]) -> Relay {
        std::fs::write(dir.join("relay.yaml"), relay_yaml).unwrap();
        std::fs::write(dir.join("backends.yaml"), backends_yaml).unwrap();
        Self::start_in(dir, "relay.log", &[], env).await
    }

    /// Starts a relay on the config already in `dir`, logging to `dir/log_name`.
    pub async fn start_in(dir: &Path, log_name: &str, args: &[&str], env: &[(&str, &str)]) -> Relay {
        let log = std::fs::File::create(dir.join(log_name)).expect("log file");
        let mut child = Command::new(relay_bin())
            .args(args)
            .arg("serve")
            .arg("--config")
            .arg(dir.join("relay.yaml"))
            .env("RELAY_PORT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // Its own process group, with its stdio backends: all killed together on drop.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start relay");
        let (port, before) = read_listening(&mut child, "relay listening on ").await;
        let metrics_port = before.iter().find_map(|line| line.strip_prefix("metrics listening on ")).map(port_of);
        Relay { child, port, metrics_port, dir: dir.to_owned(), token: None, _tempdir: None }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// The backends file.
    pub fn backends_path(&self) -> PathBuf {
        self.dir.join("backends.yaml")
    }

    /// Everything the relay logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("relay.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        eventually(&format!("log line {needle:?}"), || async { self.log().contains(needle).then_some(()) }).await
    }

    /// A newline JSON-RPC client, already initialized (with [`Relay::token`] if set).
    pub async fn line_client(&self) -> LineClient {
        self.line_client_as(self.token.as_deref()).await
    }

    /// A newline JSON-RPC client initialized with `token`.
    pub async fn line_client_as(&self, token: Option<&str>) -> LineClient {
        let mut client = LineClient::connect(self.port).await;
        let mut params = json!({"protocolVersion": "2025-06-18", "clientInfo": {"name": "e2e"}});
        if let Some(token) = token {
            params["_meta"] = json!({"authorization": format!("Bearer {token}")});
        }
        let init = client.request("initialize", params).await;
        assert!(init["result"]["serverInfo"].is_object(), "{init}");
        client
    }

    /// One `tools/call` on a new newline connection authenticated with `token`.
    pub async fn call_tool_as(&self, token: &str, tool: &str, arguments: Value) -> Value {
        self.line_client_as(Some(token)).await.call_tool(tool, arguments).await
    }

    /// The status entry of plugin `name`.
    pub async fn plugin_status(&self, name: &str) -> Value {
        let status = self.status().await;
        status["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .find(|p| p["name"] == name)
            .expect("plugin listed")
            .clone()
    }

    /// The relay's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("relay running")
    }

    /// The relay's resident memory now, in bytes (Linux).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// Sends `signal` (e.g. `-HUP`) to the relay.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("relay running");
        let _ = std::process::Command::new("kill").arg(signal).arg(pid.to_string()).status();
    }

    /// `relay_get_status`'s structured result.
    pub async fn status(&self) -> Value {
        let mut client = self.line_client().await;
        let reply = client.call_tool("relay_get_status", json!({})).await;
        reply["result"]["structuredContent"].clone()
    }

    /// The state of one backend in `relay_get_status`.
    pub async fn backend_state(&self, name: &str) -> Option<String> {
        let status = self.status().await;
        status["backends"].as_array()?.iter().find(|b| b["name"] == name)?["state"].as_str().map(str::to_owned)
    }

    /// Waits until backend `name` is `ready`.
    pub async fn wait_ready(&self, name: &str) {
        eventually(&format!("backend {name} ready"), || async {
            (self.backend_state(name).await.as_deref() == Some("ready")).then_some(())
        })
        .await
    }

    /// Waits for the process to exit (after a signal or `relay_drain`).
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().await.expect("wait")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("relay exits").expect("wait")
    }
}

async fn read_listening_port(child: &mut Child, prefix: &str) -> u16 {
    read_listening(child, prefix).await.0
}

/// The port of the stdout line starting with `prefix`, and the lines printed before it.
async fn read_listening(child: &mut Child, prefix: &str) -> (u16, Vec<String>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut before = Vec::new();
    let find = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(addr) = line.strip_prefix(prefix) {
                return port_of(addr);
            }
            before.push(line);
        }
        panic!("process exited before listening (status {:?})", child.try_wait());
    };
    let port = tokio::time::timeout(STARTUP_PATIENCE, find).await.expect("process starts listening");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (port, before)
}

fn port_of(addr: &str) -> u16 {
    let addr = addr.split_whitespace().next().unwrap_or(addr);
    addr.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("port")
}

/// The value of the series written exactly as `series` (name and labels) in a `/metrics` text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `check` until it yields `Some`, or panics after [`PATIENCE`] naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of the newline-delimited JSON-RPC transport.
pub struct LineClient {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    next_id: u64,
}

impl LineClient {
    /// Connects without initializing.
    pub async fn connect(port: u16) -> LineClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let (read, write) = stream.into_split();
        LineClient { lines: BufReader::new(read).lines(), write, next_id: 1 }
    }

    /// Sends `text` and a newline, as is.
    pub async fn send_raw(&mut self, text: &str) {
        self.write.write_all(format!("{text}\n").as_bytes()).await.expect("write");
    }

    /// The next message from the relay.
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_line().await).expect("relay sends JSON")
    }

    /// The next line from the relay, as it was written.
    pub async fn recv_line(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("a message within the timeout")
            .expect("read")
            .expect("connection open")
    }

    /// Whether the relay closes the connection (within the patience), after anything it sends
    /// first.
    pub async fn closed(&mut self) -> bool {
        self.until_closed().await.is_some()
    }

    /// What the relay sends until it closes the connection; `None` when it is still open after
    /// the patience (with nothing sent for that long).
    pub async fn until_closed(&mut self) -> Option<Vec<Value>> {
        let mut sent = Vec::new();
        loop {
            match tokio::time::timeout(PATIENCE, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => sent.push(serde_json::from_str(&line).unwrap_or(Value::String(line))),
                Ok(Ok(None) | Err(_)) => return Some(sent),
                Err(_) => return None,
            }
        }
    }

    /// The next message that is a response (notifications are skipped).
    pub async fn recv_response(&mut self) -> Value {
        loop {
            let message = self.recv().await;
            if message.get("id").is_some() {
                return message;
            }
        }
    }

    /// Sends a request and returns its response.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()).await;
        let response = self.recv_response().await;
        assert_eq!(response["id"], id, "{response}");
        response
    }

    /// `tools/call`.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments})).await
    }

    /// The names of `tools/list`.
    pub async fn tool_names(&mut self) -> Vec<String> {
        let reply = self.request("tools/list", json!({})).await;
        reply["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A Streamable HTTP session spoken by hand (for tests that need the raw stream).
pub struct HttpSession {
    client: reqwest::Client,
    url: String,
    /// The `Mcp-Session-Id` the relay assigned.
    pub id: String,
}

impl HttpSession {
    /// Initializes a session at `url` declaring `capabilities`.
    pub async fn open(url: &str, capabilities: Value) -> HttpSession {
        let client = reqwest::Client::new();
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": capabilities}});
        let response = mcp_post(&client, url, &init, None).send().await.expect("initialize");
        assert!(response.status().is_success(), "initialize: {}", response.status());
        let id = response.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        HttpSession { client, url: url.to_owned(), id }
    }

    /// A POST of `body` on this session (accepting JSON and SSE).
    pub fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        mcp_post(&self.client, &self.url, body, Some(&self.id))
    }
}

/// A Streamable HTTP POST of `body` to `url` (accepting JSON and SSE), on `session` if given.
pub fn mcp_post(client: &reqwest::Client, url: &str, body: &Value, session: Option<&str>) -> reqwest::RequestBuilder {
    let mut request = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request
}

/// The stateless protocol version.
pub const STATELESS_VERSION: &str = "2026-07-28";

/// A stateless (2026-07-28) POST to `url`: `params._meta` gains the envelope `meta` (keys the
/// params' own `_meta` already has win), and the `MCP-Protocol-Version`, `Mcp-Method` and
/// `Mcp-Name` headers agree with the body.
pub fn stateless_request(url: &str, id: u64, method: &str, params: Value, meta: Value) -> reqwest::RequestBuilder {
    stateless_request_from(&reqwest::Client::new(), url, id, method, params, meta)
}

/// [`stateless_request`] sent by `client` (one bound to another local address, say).
pub fn stateless_request_from(
    client: &reqwest::Client,
    url: &str,
    id: u64,
    method: &str,
    mut params: Value,
    meta: Value,
) -> reqwest::RequestBuilder {
    let mut meta = meta;
    if let Some(Value::Object(extra)) = params.get("_meta") {
        meta.as_object_mut().expect("the envelope is an object").extend(extra.clone());
    }
    params["_meta"] = meta;
    let name = params.get("name").or_else(|| params.get("uri")).and_then(Value::as_str).map(str::to_owned);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let mut builder = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", STATELESS_VERSION)
        .header("mcp-method", method);
    if let Some(name) = name {
        builder = builder.header("mcp-name", name);
    }
    builder.body(body.to_string())
}

/// The first text content of a tools/call response.
pub fn text_of(response: &Value) -> String {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {response}"))
        .to_owned()
}

/// A running fixture WebSocket MCP server; killed on drop.
pub struct Fixture {
    child: Child,
    /// Its port.
    pub port: u16,
    /// The name it reports and prefixes echo answers with.
    pub name: String,
}

impl Fixture {
    /// Starts a fixture on an ephemeral port.
    pub async fn start(name: &str) -> Fixture {
        Self::start_on(name, 0, &[]).await
    }

    /// Starts a fixture on `port` (0 for any) with extra flags.
    pub async fn start_on(name: &str, port: u16, flags: &[&str]) -> Fixture {
        let mut child = Command::new(workspace_bin("fixture-ws-server"))
            .args(["--name", name, "--port", &port.to_string()])
            .args(flags)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start fixture");
        let port = read_listening_port(&mut child, "listening on ").await;
        Fixture { child, port, name: name.to_owned() }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// A backends.yaml entry for this fixture.
    pub fn entry(&self) -> String {
        format!("  - name: {}\n    url: {}\n", self.name, self.url())
    }

    /// Kills the process (its connections drop at once).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A built plugin (`target/plugins/NAME.wasm`, from scripts/build-plugins.sh).
pub fn plugin_wasm(name: &str) -> PathBuf {
    let path = repo_root().join("target/plugins").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh (scripts/test.sh does)", path.display());
    path
}

/// A relay.yaml `plugins:` entry for interceptor `name` (a copy of the built `wasm` in `dir`),
/// with `extra` lines (`bind`, `on_error`, `config`) as they are.
pub fn interceptor_entry(dir: &Path, name: &str, wasm: &str, extra: &str) -> String {
    let path = copy_plugin(dir, wasm);
    format!("  - name: {name}\n    world: interceptor\n    path: {}\n{extra}", path.display())
}

/// Copies a built plugin into `dir` (so a test may replace it) and returns the copy's path.
pub fn copy_plugin(dir: &Path, name: &str) -> PathBuf {
    let target = dir.join(format!("{name}.wasm"));
    std::fs::copy(plugin_wasm(name), &target).unwrap();
    target
}

/// A relay.yaml for per-user credential tests: Redis `redis` as the kv under `namespace`, fast
/// reconnects, and token-auth (copied into `dir`) with three principals: `ALICE-T` (alice),
/// `BOB-T` (bob) and `OPS-T` (ops, admin).
pub fn three_principals_yaml(dir: &Path, redis: &redis::RedisServer, namespace: &str) -> String {
    let auth = copy_plugin(dir, "token_auth");
    format!(
        "kv: {{backend: redis, url: '{}', namespace: {namespace}, timeout_ms: 200}}\nupstream: {{backoff_initial_ms: 50, backoff_max_ms: 500}}\nplugin_cache_dir: cache\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config:\n      tokens:\n        - {{token: ALICE-T, principal: alice}}\n        - {{token: BOB-T, principal: bob}}\n        - {{token: OPS-T, principal: ops, roles: [admin]}}\n",
        redis.url(),
        auth.display()
    )
}

/// Replaces `target` with `bytes` the way deploys do: write beside it, then rename over it.
pub fn replace_file(target: &Path, bytes: &[u8]) {
    let staging = target.with_extension("staging");
    std::fs::write(&staging, bytes).unwrap();
    std::fs::rename(&staging, target).unwrap();
}

/// The component with a custom section appended: behaves the same, hashes differently (a
/// "new build" of the same plugin).
pub fn rebuilt(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"relay-test-build";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    let mut size = body.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    out
}

/// A backends.yaml entry for the Python stdio fixture (`tests/fixtures/stdio_server.py`) named
/// `name`, with extra flags.
pub fn stdio_fixture_entry(name: &str, flags: &[&str]) -> String {
    let script = repo_root().join("tests/fixtures/stdio_server.py");
    let mut args = vec![script.display().to_string(), "--name".into(), name.into()];
    args.extend(flags.iter().map(|f| f.to_string()));
    format!("  - name: {name}\n    command: python3\n    args: {}\n", serde_json::to_string(&args).unwrap())
}

/// Whether process `pid` is alive (and not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
}

/// The published reference server, run from the test clients' node_modules.
pub fn everything_js() -> PathBuf {
    let path = repo_root().join("tests/clients/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(path.exists(), "{} is missing: run scripts/test.sh (it runs npm ci)", path.display());
    path
}

/// A backends.yaml entry running server-everything over stdio.
pub fn everything_stdio_entry(name: &str) -> String {
    format!("  - name: {name}\n    command: node\n    args: [{:?}, stdio]\n", everything_js().display().to_string())
}

/// The backends.yaml entry for the conformance fixture backend (official TypeScript SDK,
/// stdio): the conformance scenarios' tools, resources and prompts.
pub fn conformance_fixture_entry(name: &str) -> String {
    let fixture = repo_root().join("tests/clients/fixtures/conformance-server.mjs");
    format!("  - name: {name}\n    command: node\n    args: [{:?}]\n", fixture.display().to_string())
}

/// The JSON-RPC messages of a POST's answer: the `data:` lines of an SSE body, or the one
/// message of an `application/json` body (what the relay answers when nothing streamed before
/// the response).
pub fn sse_messages(body: &str) -> Vec<Value> {
    if let Ok(message) = serde_json::from_str::<Value>(body) {
        return vec![message];
    }
    body.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| serde_json::from_str(d.trim()).unwrap()).collect()
}

/// Runs the official TypeScript SDK driver; returns its one-line JSON report.
pub async fn ts_client(transport: &str, url: &str, calls: Value) -> Value {
    ts_client_ops(transport, url, calls, json!([])).await
}

/// Runs the TypeScript SDK driver with `--ops` (resources, prompts, progress, ...).
pub async fn ts_client_ops(transport: &str, url: &str, calls: Value, ops: Value) -> Value {
    ts_client_env(transport, url, calls, ops, &[], &[]).await
}

/// Runs the TypeScript SDK driver with extra environment (e.g. `NODE_EXTRA_CA_CERTS`) and
/// extra arguments (e.g. `--header 'Authorization: Bearer …'`).
pub async fn ts_client_env(
    transport: &str,
    url: &str,
    calls: Value,
    ops: Value,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Value {
    let script = repo_root().join("tests/clients/ts/drive.mjs");
    let (calls, ops) = (calls.to_string(), ops.to_string());
    let args = ["--transport", transport, "--url", url, "--calls", &calls, "--ops", &ops];
    run_driver(Command::new("node").arg(script).args(args).args(extra).envs(env.iter().copied())).await
}

/// Runs the official Python SDK driver; returns its one-line JSON report.
pub async fn py_client(url: &str, calls: Value) -> Value {
    py_client_ops(url, calls, json!([])).await
}

/// Runs the Python SDK driver with `--ops`, in its handshake (`legacy`) mode.
pub async fn py_client_ops(url: &str, calls: Value, ops: Value) -> Value {
    py_client_mode("legacy", url, calls, ops).await
}

/// Runs the Python SDK driver in `mode`: `legacy` (initialize handshake), `2026-07-28`
/// (stateless, pinned) or `auto` (probes `server/discover`).
pub async fn py_client_mode(mode: &str, url: &str, calls: Value, ops: Value) -> Value {
    py_client_env(mode, url, calls, ops, &[]).await
}

/// Runs the Python SDK driver in `mode` with extra environment (e.g. `SSL_CERT_FILE`).
pub async fn py_client_env(mode: &str, url: &str, calls: Value, ops: Value, env: &[(&str, &str)]) -> Value {
    let python = repo_root().join("tests/clients/.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test.sh (it creates the venv)", python.display());
    let script = repo_root().join("tests/clients/py/drive.py");
    let (calls, ops) = (calls.to_string(), ops.to_string());
    let args = ["--mode", mode, "--url", url, "--calls", &calls, "--ops", &ops];
    run_driver(Command::new(python).arg(script).args(args).envs(env.iter().copied())).await
}

async fn run_driver(command: &mut Command) -> Value {
    let output = tokio::time::timeout(Duration::from_secs(60), command.kill_on_drop(true).output())
        .await
        .expect("driver finishes")
        .expect("driver runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "driver failed ({}):\nstdout: {stdout}\nstderr: {stderr}", output.status);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("driver output is not JSON ({e}): {stdout}"))
}

/// A running mock WebSocket logger (`fixture-logger`); killed on drop.
pub struct Logger {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Where it appends each `logger_log` call's arguments, one JSON line each.
    pub record: PathBuf,
}

impl Logger {
    /// Starts a logger on `port` (0 for any) recording into `record`; `silent` never answers
    /// `logger_log` on its first connection.
    pub async fn start(port: u16, record: &Path, silent: bool) -> Logger {
        let mut command = Command::new(workspace_bin("fixture-logger"));
        command.args(["--port", &port.to_string(), "--record"]).arg(record);
        if silent {
            command.arg("--silent");
        }
        let mut child = command.stdout(Stdio::piped()).kill_on_drop(true).spawn().expect("start fixture-logger");
        let port = read_listening_port(&mut child, "listening on ").await;
        Logger { child, port, record: record.to_owned() }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The records received so far.
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// Stops the logger (its connection drops at once).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}
