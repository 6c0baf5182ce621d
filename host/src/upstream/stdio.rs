//! MCP over a child process's stdin/stdout, one JSON-RPC message per line. The child's stderr
//! is forwarded to the relay's log. The child gets a minimal environment, never the relay's
//! own (which holds its tokens and API keys). The process is killed when its connection closes, and the
//! supervisor starts a new one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::UpstreamError;
use super::connection::Connection;
use super::framed::{FramedConnection, Incoming};
use super::routes::ClientRoutes;
use crate::mcp::{Line, LineCodec, Notification, Oversized};

/// What to run.
pub struct StdioCommand<'a> {
    pub command: &'a str,
    pub args: &'a [String],
    /// Set on top of the safe set.
    pub env: &'a BTreeMap<String, String>,
    /// Names passed on from the relay's environment.
    pub inherit_env: &'a [String],
    pub cwd: Option<&'a PathBuf>,
}

/// Longest stderr line logged; a longer one (a `\r` progress bar never ends its line) is
/// logged by its last part, so memory stays bounded whatever the backend writes.
const MAX_STDERR_LINE: usize = 8 * 1024;

/// Logs a backend's stderr line by line: bytes, decoded lossily (not UTF-8 is no reason to
/// stop reading, which would block the backend's next write), each line capped at its tail.
async fn log_stderr(backend: String, mut stderr: tokio::process::ChildStderr) {
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    let mut cut = false;
    let mut chunk = [0u8; 4096];
    let emit = |line: &[u8], cut: bool| {
        let text = String::from_utf8_lossy(line);
        let marker = if cut { "[…] " } else { "" };
        tracing::debug!(backend = %backend, "stderr: {marker}{}", text.trim_end_matches('\r'));
    };
    loop {
        let n = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..end]);
            emit(&line, cut);
            line.clear();
            cut = false;
            rest = &rest[end + 1..];
        }
        line.extend_from_slice(rest);
        if line.len() > MAX_STDERR_LINE {
            line.drain(..line.len() - MAX_STDERR_LINE / 2);
            cut = true;
        }
    }
    if !line.is_empty() {
        emit(&line, cut);
    }
}

/// What every stdio backend inherits from the relay's environment, as the official MCP SDKs
/// do: enough to find programs and run them in the user's locale, no credentials.
const SAFE_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "TMPDIR", "TZ"];

/// Names of the relay's environment granted to plugins (`grants.env`), set once at start-up.
static PLUGIN_SECRETS: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();

/// Marks `names` (what plugins are granted) as the relay's own secrets.
pub fn protect_env(names: impl IntoIterator<Item = String>) {
    let _ = PLUGIN_SECRETS.set(names.into_iter().collect());
}

/// Whether `name` is one of the relay's own secrets, which no backend inherits: its own
/// settings (`RELAY_*`, the Redis URL with its password and the admin token among them), the
/// logger's URL, and whatever plugins are granted from the environment.
pub fn is_relay_secret(name: &str) -> bool {
    name.starts_with("RELAY_")
        || name == "JOSHUA_LOGGER_URL"
        || PLUGIN_SECRETS.get().is_some_and(|names| names.contains(name))
}

/// The environment a stdio backend starts with: the safe set and `inherit_env` from the
/// relay's environment (when set there, and not one of the relay's own secrets), then the
/// backend's own `env`.
fn backend_env(spec: &StdioCommand<'_>) -> BTreeMap<String, String> {
    let inherited = spec.inherit_env.iter().map(String::as_str).filter(|name| {
        let secret = is_relay_secret(name);
        if secret {
            tracing::warn!(
                command = spec.command,
                name,
                "inherit_env names one of the relay's own secrets; not passed on"
            );
        }
        !secret
    });
    let mut env: BTreeMap<String, String> = SAFE_ENV
        .iter()
        .copied()
        .chain(inherited)
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_owned(), value)))
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Starts the process and its reader, writer and stderr tasks.
pub fn connect(
    backend: &str,
    spec: StdioCommand<'_>,
    max_message_bytes: usize,
    routes: Arc<ClientRoutes>,
) -> Result<(Connection, mpsc::Receiver<Notification>), UpstreamError> {
    let mut command = Command::new(spec.command);
    command
        .args(spec.args)
        .env_clear()
        .envs(backend_env(&spec))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    let mut child =
        command.spawn().map_err(|e| UpstreamError::Connect(format!("cannot start {}: {e}", spec.command)))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let closed = CancellationToken::new();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);

    let writer_closed = closed.clone();
    tokio::spawn(async move {
        while let Some(mut line) = tokio::select! { l = out_rx.recv() => l, _ = writer_closed.cancelled() => None } {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        writer_closed.cancel();
    });

    tokio::spawn(log_stderr(backend.to_owned(), stderr));

    let name = backend.to_owned();
    let child_closed = closed.clone();
    CHILDREN.spawn(async move {
        tokio::select! {
            status = child.wait() => tracing::warn!(backend = %name, ?status, "stdio upstream exited"),
            _ = child_closed.cancelled() => stop(&name, &mut child).await,
        }
        child_closed.cancel();
    });

    let name = backend.to_owned();
    let incoming = Box::pin(FramedRead::new(stdout, LineCodec::new(max_message_bytes)).filter_map(move |line| {
        let line = match line {
            Ok(Line::Text(line)) if Line::is_blank(&line) => None,
            Ok(Line::Text(line)) => Some(match String::from_utf8(line.to_vec()) {
                Ok(text) => Incoming::Text(text),
                // One bad line costs that line (or its call), not the connection.
                Err(_) => Incoming::Unreadable(Oversized::of(&line)),
            }),
            Ok(Line::TooLong(skipped)) => Some(Incoming::Oversized(skipped)),
            Err(e) => {
                tracing::warn!(backend = %name, error = %e, "cannot read stdio upstream");
                None
            }
        };
        futures::future::ready(line)
    }));
    let (conn, events) = FramedConnection::start(backend, incoming, out_tx, closed, routes);
    Ok((Connection::Framed(conn), events))
}

/// The reapers of every stdio child: [`children_stopped`] waits for them at shutdown.
static CHILDREN: std::sync::LazyLock<TaskTracker> = std::sync::LazyLock::new(TaskTracker::new);

/// How long a child gets after its stdin closes, and again after SIGTERM.
const STOP_STEP: Duration = Duration::from_secs(2);

/// Stops a child as the MCP stdio transport asks: its stdin is closed (the writer has ended),
/// then SIGTERM if it has not exited within [`STOP_STEP`], then SIGKILL.
async fn stop(name: &str, child: &mut Child) {
    if let Ok(Ok(status)) = tokio::time::timeout(STOP_STEP, child.wait()).await {
        tracing::info!(backend = %name, ?status, "stdio upstream stopped");
        return;
    }
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) with a pid this process spawned and has not reaped; no memory is shared.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if let Ok(Ok(status)) = tokio::time::timeout(STOP_STEP, child.wait()).await {
            tracing::info!(backend = %name, ?status, "stdio upstream stopped (SIGTERM)");
            return;
        }
    }
    tracing::warn!(backend = %name, "stdio upstream ignored stdin closing and SIGTERM; killed");
    let _ = child.kill().await;
}

/// Waits (up to `limit`) until every stdio child has been stopped and reaped.
pub async fn children_stopped(limit: Duration) {
    CHILDREN.close();
    let _ = tokio::time::timeout(limit, CHILDREN.wait()).await;
}
