//! The one wasmtime engine: component model, epoch interruption for deadlines, and the pooling
//! allocator so that a per-call instance costs a slot, not an mmap.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::MAX_PLUGIN_MEMORY_MB;

/// How often the epoch advances; deadlines are counted in these ticks.
pub const TICK: Duration = Duration::from_millis(1);

/// Concurrent plugin instances the pool holds (calls beyond it fail fast with an error).
const POOL_INSTANCES: u32 = 1000;

/// Core module instances (and tables) one plugin instance may take on average. A Rust plugin
/// is 3 core instances; a Python one (componentize-py: CPython, libc, the WASI adapter and
/// their shims) is 14, so the pool is sized for every slot holding a Python plugin. Slots are
/// counters and lazily committed reservations: an idle pool costs address space, not memory.
const CORE_PER_INSTANCE: u32 = 16;

/// Builds the engine and starts the thread that advances its epoch.
pub fn build() -> wasmtime::Result<Engine> {
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
    let weak = engine.weak();
    std::thread::Builder::new().name("relay-epoch".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(TICK);
        }
    })?;
    Ok(engine)
}
