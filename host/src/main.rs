//! The `relay` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use relay::config::{LogFormat, RelayConfig};

#[derive(Parser)]
#[command(name = "relay", version, about = "MCP gateway: many MCP servers behind one endpoint")]
struct Cli {
    /// Log format (overrides `logging.format` in relay.yaml).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// Path of relay.yaml; backends.yaml is resolved beside it.
        #[arg(long, default_value = "config/relay.yaml")]
        config: PathBuf,
    },
    /// Check a running relay over newline JSON-RPC (initialize + tools/list); exit 0 if healthy.
    Health {
        #[arg(long, default_value = "localhost")]
        host: String,
        #[arg(long)]
        port: u16,
        /// Seconds to wait for each answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Bearer token, for a relay with an auth plugin.
        #[arg(long, env = "RELAY_AUTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Speak TLS, verifying the relay's certificate.
        #[arg(long)]
        tls: bool,
        /// PEM file of CA certificates to trust with --tls (default: the Mozilla roots).
        #[arg(long, requires = "tls")]
        ca: Option<PathBuf>,
        /// The name the relay's certificate must have, also sent as SNI (default: --host): the
        /// public name when its certificate does not name the address checked.
        #[arg(long, requires = "tls")]
        servername: Option<String>,
        /// PEM file of the client certificate (chain) to present with --tls, for a relay that
        /// requires one (`tls.client_cert_required`).
        #[arg(long, requires_all = ["tls", "key"])]
        cert: Option<PathBuf>,
        /// PEM file of the private key of --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Only ask `GET /readyz` (no login, no session): for frequent container health checks.
        #[arg(long, conflicts_with = "tls")]
        ready: bool,
    },
    /// Validate relay.yaml and its backends file, then exit.
    CheckConfig {
        #[arg(long, default_value = "config/relay.yaml")]
        config: PathBuf,
    },
}

/// mimalloc rather than glibc's malloc. Each worker thread allocates and frees a call's
/// buffers, JSON values and plugin arguments on its own free lists: the relay's CPU per call
/// fell by a sixth with it, with and without token-auth + rate-limit (`scripts/ab.sh 32 3 3`
/// against the glibc build: 25.5 -> 21.3 and 20.4 -> 17.2 µs). Built with `no_thp`: with
/// transparent huge pages an idle relay held 13 MB more and each idle session 2-3 KB more.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before anything reads a secret: no same-user process may read this one's environment.
    relay::process_guard::keep_secrets_from_same_user_processes();
    let cli = Cli::parse();
    // The main thread's runtime is worker 0; `serve` starts the other workers (`relay::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match cli.command {
        Command::Serve { config } => {
            let loaded = match RelayConfig::load(&config) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("relay: {e}");
                    return ExitCode::from(2);
                }
            };
            let forward = &loaded.logging.forward;
            let (layer, forwarder) = forward.resolved_url().map(|url| relay::log_forward::channel(&url)).unzip();
            let format = cli.log_format.unwrap_or(loaded.logging.format);
            relay::telemetry::init(format, loaded.logging.level.as_deref(), layer.map(|l| (l, forward.level())));
            match runtime.block_on(relay::server::run(&config, loaded, forwarder)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("relay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Health { host, port, timeout, ready: true, .. } => {
            let ready = runtime.block_on(relay::health::ready(&host, port, Duration::from_secs_f64(timeout)));
            if ready { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command::Health { host, port, timeout, token, tls, ca, servername, cert, key, ready: false } => {
            let timeout = Duration::from_secs_f64(timeout);
            let identity = cert.zip(key);
            let tls = tls.then_some(relay::health::TlsCheck { ca, server_name: servername, identity });
            let healthy = runtime.block_on(relay::health::check(&host, port, timeout, token.as_deref(), tls.as_ref()));
            if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command::CheckConfig { config } => match runtime.block_on(check_config(&config)) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relay: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Validates what `serve` validates, plugins included (loaded and instantiated as `serve` does);
/// prints warnings for what is legal but probably not meant.
async fn check_config(path: &std::path::Path) -> Result<String, String> {
    let config = RelayConfig::load(path).map_err(|e| e.to_string())?;
    relay::preflight::preflight(&config, path).map_err(|e| format!("{e:#}"))?;
    let store = config.backend_store(path);
    let (_, backends) = store.load().map_err(|e| e.to_string())?;
    if let Some(missing) = store.missing() {
        eprintln!("warning: {missing}");
    }
    if let Some(problem) = relay::config::unknown_credential_plugins(&backends, &config.plugins).into_iter().next() {
        return Err(problem);
    }
    for shared in relay::config::shared_per_user_backends(&backends, &config.plugins) {
        eprintln!("warning: {shared}");
    }
    for plugin in &config.plugins {
        let wasm = plugin.resolved_path(path);
        if !wasm.is_file() {
            return Err(format!(
                "plugin {}: {} does not exist (scripts/build-plugins.sh builds ours)",
                plugin.name,
                wasm.display()
            ));
        }
    }
    let upstreams =
        std::sync::Arc::new(relay::upstream::Upstreams::new(config.upstream.clone(), config.limits.max_message_bytes));
    let kv = relay::server::kv_store(&config).map_err(|e| format!("{e:#}"))?;
    relay::server::load_plugins(&config, path, upstreams, Default::default(), kv)
        .await
        .map_err(|e| format!("{e:#}"))?;
    for warning in relay::server::config_warnings(&config) {
        eprintln!("warning: {warning}");
    }
    Ok(format!(
        "{}: ok, {} backend(s) in {}, {} plugin(s)",
        path.display(),
        backends.len(),
        store.path().display(),
        config.plugins.len()
    ))
}
