//! `verdict`: a policy plugin says its `ok` (an interceptor its `proceed`) stands for the next
//! requests of the same principal, method and tool, and learns what became of the hold it gave
//! before. Both belong to one `check` (or `on-request`) call, so they live in the store's data
//! (set before the call, read after it), like `credential`'s note; the holds themselves are the
//! plugin version's (`plugins/holds.rs`). An interceptor also names the results its `on-result`
//! need not see; they are the version's too (`plugins/result_filter.rs`).

use std::time::Duration;

use wasmtime::component::{HasData, Linker};

use crate::plugins::bindings::policy::relay::plugin::verdict::{self, EndedHold, Host};
use crate::plugins::holds;

/// What one call is told and says about holds (`check`, `on-request`) and about the results
/// its `on-result` need not see (any interceptor hook).
#[derive(Debug, Default)]
pub struct VerdictNote {
    /// The hold of this request's key that ended since the plugin's last call for it (told once).
    pub previous: Option<holds::EndedHold>,
    /// `verdict.hold(requests, within-ms)`, the last one the call made.
    pub hold: Option<(u32, Duration)>,
    /// `verdict.pass-results-without(literals)`, the last one the call made (taken after every
    /// call, by `Slot::invoke_on`).
    pub results_without: Option<Vec<String>>,
}

/// The view the generated `Host` trait is implemented on.
pub struct Verdict<'a>(pub &'a mut VerdictNote);

struct HasVerdict;

impl HasData for HasVerdict {
    type Data<'a> = Verdict<'a>;
}

/// Adds `verdict` to `linker`; `get` finds the current call's note in the store data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> Verdict<'_>,
) -> wasmtime::Result<()> {
    verdict::add_to_linker::<T, HasVerdict>(linker, get)
}

impl Host for Verdict<'_> {
    fn previous(&mut self) -> Option<EndedHold> {
        self.0.previous.take().map(|ended| EndedHold { granted: ended.granted, unused: ended.unused })
    }

    fn hold(&mut self, requests: u32, within_ms: u32) {
        self.0.hold = Some((requests, Duration::from_millis(u64::from(within_ms)).min(holds::MAX_HOLD)));
    }

    fn pass_results_without(&mut self, literals: Vec<String>) {
        self.0.results_without = Some(literals);
    }
}
