//! `clock`: wall and monotonic time, only with the `clock` grant (0 otherwise).

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::plugins::bindings::adapter::relay::plugin::clock::Host;
use crate::plugins::sandbox::PluginState;

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Host for PluginState {
    fn now_ms(&mut self) -> u64 {
        if !self.ctx.clock {
            return 0;
        }
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn monotonic_ns(&mut self) -> u64 {
        if !self.ctx.clock {
            return 0;
        }
        START.elapsed().as_nanos() as u64
    }
}
