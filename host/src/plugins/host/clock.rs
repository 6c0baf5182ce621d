//! `clock`: wall and monotonic time, only with the `clock` grant (0 otherwise).

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasData, Linker};

use crate::plugins::bindings::adapter::relay::plugin::clock::{self, Host};

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The `clock` capability of one plugin.
pub struct ClockGrant {
    /// `grants.clock`.
    pub granted: bool,
}

/// The view the generated `Host` trait is implemented on.
pub struct Clock<'a>(pub &'a ClockGrant);

struct HasClock;

impl HasData for HasClock {
    type Data<'a> = Clock<'a>;
}

/// Adds `clock` to `linker`; `get` finds the calling plugin's grant in the store data.
pub fn add_to_linker<T: Send + 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> Clock<'_>) -> wasmtime::Result<()> {
    clock::add_to_linker::<T, HasClock>(linker, get)
}

impl Host for Clock<'_> {
    fn now_ms(&mut self) -> u64 {
        if !self.0.granted {
            return 0;
        }
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn monotonic_ns(&mut self) -> u64 {
        if !self.0.granted {
            return 0;
        }
        START.elapsed().as_nanos() as u64
    }
}
