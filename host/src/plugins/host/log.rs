//! `log`: plugin records go to the relay's log with the plugin's name, within a budget per
//! second (`limits.logs_per_sec`), so a plugin can neither flood nor forge the relay's log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker};

use crate::plugins::bindings::adapter::relay::plugin::log::{self, Host, Level};

/// Longest message logged; the rest is cut.
const MAX_MESSAGE: usize = 4096;

/// The `log` capability of one plugin (shared by all its calls).
pub struct LogGrant {
    plugin: String,
    per_sec: u32,
    /// Records allowed in the current second: (when it began, how many so far).
    budget: Mutex<(Instant, u32)>,
    /// Records dropped by the budget.
    pub dropped: AtomicU64,
}

impl LogGrant {
    /// `plugin` may write `per_sec` records a second.
    pub fn new(plugin: &str, per_sec: u32) -> Self {
        Self { plugin: plugin.to_owned(), per_sec, budget: Mutex::new((Instant::now(), 0)), dropped: AtomicU64::new(0) }
    }

    /// Whether another record fits this second's budget (a dropped one is counted).
    fn admit(&self) -> bool {
        let mut budget = self.budget.lock().expect("log budget lock");
        if budget.0.elapsed() >= Duration::from_secs(1) {
            *budget = (Instant::now(), 0);
        }
        budget.1 += 1;
        let allowed = budget.1 <= self.per_sec;
        if !allowed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().plugins.log_dropped(&self.plugin);
        }
        allowed
    }
}

/// The view the generated `Host` trait is implemented on.
pub struct Log<'a>(pub &'a LogGrant);

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = Log<'a>;
}

/// Adds `log` to `linker`; `get` finds the calling plugin's grant in the store data.
pub fn add_to_linker<T: Send + 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> Log<'_>) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasLog>(linker, get)
}

impl Host for Log<'_> {
    /// Records are cut at [`MAX_MESSAGE`] bytes and written with control characters escaped
    /// (the log formatter's job).
    fn log(&mut self, level: Level, mut message: String) {
        if !self.0.admit() {
            return;
        }
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("…[cut]");
        }
        let plugin = self.0.plugin.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "relay::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "relay::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "relay::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "relay::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "relay::plugin", plugin, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_drops_and_counts_what_exceeds_it() {
        let grant = LogGrant::new("p", 3);
        let admitted = (0..10).filter(|_| grant.admit()).count();
        assert_eq!(admitted, 3);
        assert_eq!(grant.dropped.load(Ordering::Relaxed), 7);
    }
}
