//! `relay-load`: drives MCP with many concurrent clients over each of the relay's transports,
//! the way operators check a deployment (through HAProxy, with auth) and we hold our numbers.
//! The URL's scheme picks the transport: `tcp://host:port` (newline JSON-RPC), `ws://host:port/ws`,
//! `http://host:port/mcp` (Streamable HTTP sessions; `--stateless` for 2026-07-28).
//!
//! Scenarios: `reference` (the old relay plan's stress test, with its pass criteria as defaults:
//! exit 1 when under `--min-success` or over `--max-avg-ms`), `hold` and `rate`.

mod client;
mod reply;
mod report;
mod scenario;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use client::Target;
use report::{Progress, Stats};
use scenario::Plan;

#[derive(Parser)]
#[command(name = "relay-load", version, about = "Load generator for MCP servers and the relay")]
struct Cli {
    /// tcp://host:port, ws[s]://host:port/ws, or http[s]://host:port/mcp.
    url: String,
    /// What to run.
    #[arg(long, value_enum, default_value = "reference")]
    scenario: Scenario,
    /// Clients (reference, hold) or connections (rate).
    #[arg(long, alias = "connections", default_value_t = 100)]
    clients: usize,
    /// How long `rate` runs, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// `rate` at this many calls a second in all (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// The tool every call names.
    #[arg(long, default_value = "relay_get_status")]
    tool: String,
    /// The call's arguments, as JSON.
    #[arg(long, default_value = "{}")]
    args: String,
    /// A bearer token to present.
    #[arg(long, env = "RELAY_AUTH_TOKEN")]
    token: Option<String>,
    /// HTTP in the 2026-07-28 protocol (no session).
    #[arg(long)]
    stateless: bool,
    /// PEM file of CA certificates that `wss://` and `https://` servers are verified against
    /// (default: the Mozilla roots).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Give up on one connect or call after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// `hold`: connections opening at once.
    #[arg(long, default_value_t = 256)]
    opening_at_once: usize,
    /// `reference` passes with at least this share of successful clients.
    #[arg(long, default_value_t = 0.99)]
    min_success: f64,
    /// `reference` passes with an average client time at most this long.
    #[arg(long, default_value_t = 2000.0)]
    max_avg_ms: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    Reference,
    Hold,
    Rate,
}

impl Scenario {
    fn as_str(self) -> &'static str {
        match self {
            Scenario::Reference => "reference",
            Scenario::Hold => "hold",
            Scenario::Rate => "rate",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let arguments: Value = match serde_json::from_str(&cli.args) {
        Ok(arguments @ Value::Object(_)) => arguments,
        _ => {
            eprintln!("--args must be a JSON object");
            return ExitCode::from(2);
        }
    };
    let timeout = Duration::from_secs_f64(cli.timeout);
    let target = match Target::parse(&cli.url, cli.stateless, cli.token.clone(), timeout, cli.ca.as_deref()) {
        Ok(target) => target,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let summary = runtime.block_on(run(&cli, target, arguments));
    if cli.json {
        println!("{summary}");
    } else {
        report::print_human(&summary);
    }
    if summary["passed"] == false { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

async fn run(cli: &Cli, target: Target, arguments: Value) -> Value {
    let plan = Plan {
        target,
        tool: cli.tool.clone(),
        arguments,
        count: cli.clients.max(1),
        duration: Duration::from_secs_f64(cli.duration),
        rate: cli.rate,
        opening_at_once: cli.opening_at_once.max(1),
    };
    let metrics_url = plan.target.metrics_url();
    let rss_before = report::target_rss(&plan.target, metrics_url.as_deref()).await;
    let stats = Arc::new(Stats::default());
    let total = match cli.scenario {
        Scenario::Rate => None,
        _ => Some(plan.count as u64),
    };
    let progress = Progress::new(total, cli.json);
    let started = Instant::now();
    let extra = match cli.scenario {
        Scenario::Reference => scenario::reference(&plan, &stats, &progress).await,
        Scenario::Hold => scenario::hold(&plan, &stats, &progress).await,
        Scenario::Rate => scenario::rate(&plan, &stats, &progress).await,
    };
    progress.finish();
    let mut summary = stats.summary(started.elapsed());
    summary["scenario"] = cli.scenario.as_str().into();
    summary["transport"] = plan.target.transport.as_str().into();
    summary["url"] = plan.target.url.clone().into();
    summary["clients"] = plan.count.into();
    summary["rss_before"] = json!(rss_before);
    summary["rss_after"] = json!(report::target_rss(&plan.target, metrics_url.as_deref()).await);
    for (key, value) in extra.as_object().into_iter().flatten() {
        summary[key] = value.clone();
    }
    if matches!(cli.scenario, Scenario::Reference) {
        let mut why = Vec::new();
        let ratio = summary["success_ratio"].as_f64().unwrap_or(0.0);
        if ratio < cli.min_success {
            why.push(format!("success {:.2}% is under {:.2}%", ratio * 100.0, cli.min_success * 100.0));
        }
        let avg = summary["latency_ms"]["avg"].as_f64().unwrap_or(f64::INFINITY);
        if avg > cli.max_avg_ms {
            why.push(format!("average {avg:.1} ms is over {} ms", cli.max_avg_ms));
        }
        summary["passed"] = why.is_empty().into();
        summary["why_failed"] = json!(why);
    }
    summary
}

/// Lifts the soft limit on open files to the hard one: `hold` needs a socket per session.
fn raise_fd_limit() {
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("cannot raise the open-files limit: {error}");
    }
}
