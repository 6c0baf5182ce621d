//! The one wasmtime engine: component model, epoch interruption for deadlines, and the pooling
//! allocator so that a per-call instance costs a slot, not an mmap.
//!
//! The epoch advances every [`TICK`] while any store may run guest code (from the moment a
//! store is armed for a call until it is idle again or dropped), and the thread that advances
//! it sleeps once none has for [`IDLE_TICKS`] ticks: an idle relay is not woken a thousand
//! times a second, and a running guest always sees its deadline come.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::MAX_PLUGIN_MEMORY_MB;

/// How often the epoch advances; deadlines are counted in these ticks.
pub const TICK: Duration = Duration::from_millis(1);

/// Ticks with no store in use before the epoch thread sleeps.
const IDLE_TICKS: u32 = 100;

/// How long the sleeping epoch thread waits before it looks whether the engine still exists.
const ASLEEP_CHECK: Duration = Duration::from_secs(1);

/// Concurrent plugin instances the pool holds (calls beyond it fail fast with an error).
const POOL_INSTANCES: u32 = 1000;

/// Core module instances (and tables) one plugin instance may take on average. A Rust plugin
/// is 3 core instances; a Python one (componentize-py: CPython, libc, the WASI adapter and
/// their shims) is 14, so the pool is sized for every slot holding a Python plugin. Slots are
/// counters and lazily committed reservations: an idle pool costs address space, not memory.
const CORE_PER_INSTANCE: u32 = 16;

/// Whether the epoch must advance: how many stores may run guest code now, and the sleeping
/// epoch thread's wake-up.
#[derive(Default)]
pub struct EpochClock {
    in_use: AtomicUsize,
    asleep: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A store that may run guest code: the epoch advances while one exists.
pub struct Ticking(Arc<EpochClock>);

impl EpochClock {
    /// Marks a store as about to run guest code, waking the epoch thread if it sleeps.
    pub fn ticking(self: &Arc<Self>) -> Ticking {
        // Sequentially consistent on both sides: either this sees the thread asleep and
        // wakes it, or the thread sees this store before it sleeps.
        if self.in_use.fetch_add(1, Ordering::SeqCst) == 0 && self.asleep.load(Ordering::SeqCst) {
            let _held = self.lock.lock().expect("epoch lock");
            self.wake.notify_one();
        }
        Ticking(self.clone())
    }

    /// Sleeps while no store is in use, for up to [`ASLEEP_CHECK`]: whether it is still idle.
    /// Awake again on return either way, so a store that comes later does not take the lock
    /// to wake a thread that is not asleep.
    fn sleep_while_idle(&self) -> bool {
        let mut held = self.lock.lock().expect("epoch lock");
        self.asleep.store(true, Ordering::SeqCst);
        let mut timed_out = false;
        while self.idle() && !timed_out {
            let (again, waited) = self.wake.wait_timeout(held, ASLEEP_CHECK).expect("epoch lock");
            held = again;
            timed_out = waited.timed_out();
        }
        self.asleep.store(false, Ordering::SeqCst);
        self.idle()
    }

    fn idle(&self) -> bool {
        self.in_use.load(Ordering::SeqCst) == 0
    }

    #[cfg(test)]
    fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Builds the engine and starts the thread that advances its epoch.
pub fn build() -> wasmtime::Result<(Engine, Arc<EpochClock>)> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * CORE_PER_INSTANCE)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * CORE_PER_INSTANCE)
        .total_stacks(POOL_INSTANCES)
        .max_memory_size((MAX_PLUGIN_MEMORY_MB as usize) << 20);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_reservation(MAX_PLUGIN_MEMORY_MB << 20)
        .memory_guard_size(64 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Development only: a symbol map for `perf` (plugins/README.md, "What each language costs").
    if std::env::var_os("RELAY_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    let clock = Arc::new(EpochClock::default());
    let (weak, ticker) = (engine.weak(), clock.clone());
    std::thread::Builder::new().name("relay-epoch".into()).spawn(move || {
        let mut idle_ticks = 0;
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(TICK);
            idle_ticks = if ticker.idle() { idle_ticks + 1 } else { 0 };
            if idle_ticks >= IDLE_TICKS {
                // Asleep until a store is in use, looking now and then whether the engine
                // (and so this thread's work) is gone.
                while ticker.sleep_while_idle() {
                    if weak.upgrade().is_none() {
                        return;
                    }
                }
                idle_ticks = 0;
            }
        }
    })?;
    Ok((engine, clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eventually(what: &str, check: impl Fn() -> bool) {
        let started = std::time::Instant::now();
        while !check() {
            assert!(started.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_epoch_thread_sleeps_when_no_store_is_in_use_and_wakes_for_one() {
        let (_engine, clock) = build().unwrap();
        eventually("asleep once idle", || clock.is_asleep());
        let in_use = clock.ticking();
        eventually("awake while a store is in use", || !clock.is_asleep());
        // It stays awake however long the store runs.
        std::thread::sleep(TICK * IDLE_TICKS * 2);
        assert!(!clock.is_asleep());
        drop(in_use);
        eventually("asleep again", || clock.is_asleep());
    }

    #[test]
    fn a_sleep_that_times_out_leaves_the_thread_marked_awake() {
        let clock = EpochClock::default();
        assert!(clock.sleep_while_idle(), "still idle after the timeout");
        // Marked asleep, the next store would take the lock to wake a thread that is awake.
        assert!(!clock.is_asleep());
    }
}
