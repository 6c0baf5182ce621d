//! What a limit refused is counted (`relay_limit_refusals_total{limit}`) and logged at warn,
//! at most once a second per limit, with how many refusals the quiet second held: an operator
//! sees every limit that bites, and a flood cannot fill the log. [`OncePerSecond`] holds the
//! same rule for any other line a peer can make the relay write at will (a backend's flood).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How often each limit may log.
const EVERY: Duration = Duration::from_secs(1);

/// When each limit last logged, and the refusals since that were not logged.
static LAST: LazyLock<Mutex<HashMap<&'static str, OncePerSecond>>> = LazyLock::new(Mutex::default);

/// `limit` (its relay.yaml name) refused something; `what` says what, for the log.
pub fn limit_refused(limit: &'static str, what: std::fmt::Arguments<'_>) {
    crate::metrics::metrics().access.limit_refused(limit);
    let Some(suppressed) = LAST.lock().expect("limit log lock").entry(limit).or_default().admit() else { return };
    tracing::warn!(limit, also_refused_since_last_logged = suppressed, "refused by limits.{limit}: {what}");
}

/// One kind of log line, written at most once a second.
#[derive(Debug, Default)]
pub struct OncePerSecond {
    /// When it was last written.
    at: Option<Instant>,
    /// How many were not written since.
    quiet: u64,
}

impl OncePerSecond {
    /// A line not written yet (for a `static`).
    pub const fn new() -> Self {
        Self { at: None, quiet: 0 }
    }

    /// `Some(how many were not written since the last)` when the line may be written now.
    pub fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.at.is_some_and(|at| now.duration_since(at) < EVERY) {
            self.quiet += 1;
            return None;
        }
        self.at = Some(now);
        Some(std::mem::take(&mut self.quiet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first line is written; the rest of the second's are counted, and the count goes
    /// with the next line written.
    #[test]
    fn a_line_is_written_once_a_second_with_what_it_left_out() {
        let mut line = OncePerSecond::default();
        assert_eq!(line.admit(), Some(0));
        assert_eq!(line.admit(), None);
        assert_eq!(line.admit(), None);
        line.at = Some(Instant::now() - EVERY);
        assert_eq!(line.admit(), Some(2));
    }
}
