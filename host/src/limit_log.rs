//! What a limit refused is counted (`relay_limit_refusals_total{limit}`) and logged at warn,
//! at most once a second per limit, with how many refusals the quiet second held: an operator
//! sees every limit that bites, and a flood cannot fill the log.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How often each limit may log.
const EVERY: Duration = Duration::from_secs(1);

/// When each limit last logged, and the refusals since that were not logged.
static LAST: LazyLock<Mutex<HashMap<&'static str, (Instant, u64)>>> = LazyLock::new(Mutex::default);

/// `limit` (its relay.yaml name) refused something; `what` says what, for the log.
pub fn limit_refused(limit: &'static str, what: std::fmt::Arguments<'_>) {
    crate::metrics::metrics().access.limit_refused(limit);
    let now = Instant::now();
    let suppressed = {
        let mut last = LAST.lock().expect("limit log lock");
        match last.get_mut(limit) {
            Some((at, quiet)) if now.duration_since(*at) < EVERY => {
                *quiet += 1;
                return;
            }
            Some((at, quiet)) => {
                *at = now;
                std::mem::take(quiet)
            }
            None => {
                last.insert(limit, (now, 0));
                0
            }
        }
    };
    tracing::warn!(limit, also_refused_since_last_logged = suppressed, "refused by limits.{limit}: {what}");
}
