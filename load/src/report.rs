//! What a run measured: successes, failures by kind, latency in an HDR histogram, calls per
//! second, and the target's resident memory before and after (from its `/metrics`). Printed as
//! a readable summary or as JSON (`--json`); progress goes to stderr while the run lasts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::client::Failure;

/// Counts shared by every task of a run.
pub struct Stats {
    successes: AtomicU64,
    failures: AtomicU64,
    /// Calls (and connections) sent again after the relay refused them without acting on
    /// them (a drain, a moved session): not failures, counted apart.
    retried: AtomicU64,
    errors: Mutex<BTreeMap<String, (u64, String)>>,
    /// Latency of each success, in microseconds (1 µs to 10 min, 3 significant digits).
    latency: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            errors: Mutex::default(),
            latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")),
        }
    }
}

impl Stats {
    /// A success that took `elapsed`.
    pub fn success(&self, elapsed: Duration) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        let micros = (elapsed.as_micros() as u64).clamp(1, 600_000_000);
        self.latency.lock().expect("histogram lock").record(micros).expect("within bounds");
    }

    /// A failure (the first detail of each kind is kept as an example).
    pub fn failure(&self, failure: Failure) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().expect("errors lock");
        errors.entry(failure.kind).or_insert((0, failure.detail)).0 += 1;
    }

    /// One call or connection sent again (see [`crate::client::call_retrying`]).
    pub fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// Successes and failures so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.successes.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed))
    }

    /// The summary of a run that lasted `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Value {
        let (successes, failures) = self.counts();
        let latency = self.latency.lock().expect("histogram lock");
        let ms = |micros: u64| micros as f64 / 1000.0;
        let errors: serde_json::Map<String, Value> = self
            .errors
            .lock()
            .expect("errors lock")
            .iter()
            .map(|(kind, (n, example))| (kind.clone(), json!({"count": n, "example": example})))
            .collect();
        json!({
            "successes": successes,
            "failures": failures,
            "retried": self.retried.load(Ordering::Relaxed),
            "success_ratio": if successes + failures == 0 { 0.0 } else { successes as f64 / (successes + failures) as f64 },
            "errors": errors,
            "duration_s": elapsed.as_secs_f64(),
            "calls_per_s": successes as f64 / elapsed.as_secs_f64().max(1e-9),
            "latency_ms": {
                "p50": ms(latency.value_at_quantile(0.50)),
                "p95": ms(latency.value_at_quantile(0.95)),
                "p99": ms(latency.value_at_quantile(0.99)),
                "max": ms(latency.max()),
                "avg": latency.mean() / 1000.0,
            },
        })
    }
}

/// Resident memory of the target, from its `/metrics`, if reachable.
pub async fn target_rss(target: &crate::client::Target, metrics_url: Option<&str>) -> Option<u64> {
    let client = crate::client::http_client(target, 1);
    // With auth on, the relay's main-port /metrics wants an admin's token: present ours.
    let mut request = client.get(metrics_url?);
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    let text = request.send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes ")?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Shows progress on stderr: a bar on a terminal, a plain line a second otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// Progress towards `total` steps (`None`: a spinner for a timed run).
    pub fn new(total: Option<u64>, quiet: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(total) => indicatif::ProgressBar::new(total),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self { bar, quiet }
    }

    /// Reports where the run is.
    pub fn update(&self, stats: &Stats, elapsed: Duration) {
        let (ok, failed) = stats.counts();
        match &self.bar {
            Some(bar) => {
                bar.set_position(ok + failed);
                bar.set_message(format!("ok {ok} failed {failed}"));
            }
            None if !self.quiet => eprintln!("{:>6.1}s  ok {ok}  failed {failed}", elapsed.as_secs_f64()),
            None => {}
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The summary as people read it.
pub fn print_human(summary: &Value) {
    let latency = &summary["latency_ms"];
    println!(
        "{} {} against {}: {} ok, {} failed, {} retried in {:.1} s ({:.0} calls/s)",
        summary["scenario"].as_str().unwrap_or(""),
        summary["transport"].as_str().unwrap_or(""),
        summary["url"].as_str().unwrap_or(""),
        summary["successes"],
        summary["failures"],
        summary["retried"],
        summary["duration_s"].as_f64().unwrap_or(0.0),
        summary["calls_per_s"].as_f64().unwrap_or(0.0),
    );
    println!(
        "latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}  avg {:.2}",
        latency["p50"].as_f64().unwrap_or(0.0),
        latency["p95"].as_f64().unwrap_or(0.0),
        latency["p99"].as_f64().unwrap_or(0.0),
        latency["max"].as_f64().unwrap_or(0.0),
        latency["avg"].as_f64().unwrap_or(0.0),
    );
    for (kind, entry) in summary["errors"].as_object().into_iter().flatten() {
        println!("errors {kind}: {} (e.g. {})", entry["count"], entry["example"].as_str().unwrap_or(""));
    }
    if let (Some(before), Some(after)) = (summary["rss_before"].as_u64(), summary["rss_after"].as_u64()) {
        println!("target memory: {} MB before, {} MB after", before >> 20, after >> 20);
    }
    if let Some(held) = summary["sessions_held"].as_u64() {
        println!("sessions held open at once: {held}");
    }
    if let Some(passed) = summary["passed"].as_bool() {
        println!("{}", if passed { "PASS" } else { "FAIL" });
        for reason in summary["why_failed"].as_array().into_iter().flatten() {
            println!("  {}", reason.as_str().unwrap_or(""));
        }
    }
}
