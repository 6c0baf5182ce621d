//! Host bindings generated from `wit/`, kept private to the plugins module. The adapter world
//! imports every host interface, so its generated interfaces are reused (`with`) by the other
//! worlds: one `Host` impl per interface serves them all.

pub mod adapter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "adapter",
        // Host functions are synchronous (cheap, no I/O) except those that may wait on the
        // network: a backend call, and `kv` (on Redis).
        imports: { "relay:plugin/upstream.call-tool": async, "relay:plugin/kv": async },
        exports: { default: async },
    });
}

pub mod auth {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "auth",
        exports: { default: async },
        with: {
            "relay:plugin/log": super::adapter::relay::plugin::log,
            "relay:plugin/clock": super::adapter::relay::plugin::clock,
            "relay:plugin/config": super::adapter::relay::plugin::config,
            "relay:plugin/kv": super::adapter::relay::plugin::kv,
        },
    });
}

pub mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
        exports: { default: async },
        with: {
            "relay:plugin/types": super::auth::relay::plugin::types,
            "relay:plugin/log": super::adapter::relay::plugin::log,
            "relay:plugin/clock": super::adapter::relay::plugin::clock,
            "relay:plugin/config": super::adapter::relay::plugin::config,
            "relay:plugin/kv": super::adapter::relay::plugin::kv,
        },
    });
}

pub mod interceptor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "interceptor",
        exports: { default: async },
        with: {
            "relay:plugin/types": super::auth::relay::plugin::types,
            "relay:plugin/verdict": super::policy::relay::plugin::verdict,
            "relay:plugin/log": super::adapter::relay::plugin::log,
            "relay:plugin/clock": super::adapter::relay::plugin::clock,
            "relay:plugin/config": super::adapter::relay::plugin::config,
            "relay:plugin/kv": super::adapter::relay::plugin::kv,
        },
    });
}

pub mod credentials {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "credentials",
        exports: { default: async },
        with: {
            "relay:plugin/types": super::auth::relay::plugin::types,
            "relay:plugin/log": super::adapter::relay::plugin::log,
            "relay:plugin/clock": super::adapter::relay::plugin::clock,
            "relay:plugin/config": super::adapter::relay::plugin::config,
            "relay:plugin/kv": super::adapter::relay::plugin::kv,
        },
    });
}

/// `relay:plugin@0.1.0` (frozen in `wit/v0.1/`): plugins built against it keep loading; the
/// host's 0.2 implementations serve its imports (`host::v0_1`).
pub mod v0_1 {
    pub mod adapter {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "adapter",
            imports: { "relay:plugin/upstream.call-tool": async, "relay:plugin/kv": async },
            exports: { default: async },
        });
    }

    pub mod auth {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "auth",
            exports: { default: async },
            with: {
                "relay:plugin/log": super::adapter::relay::plugin::log,
                "relay:plugin/clock": super::adapter::relay::plugin::clock,
                "relay:plugin/config": super::adapter::relay::plugin::config,
                "relay:plugin/kv": super::adapter::relay::plugin::kv,
            },
        });
    }

    pub mod policy {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "policy",
            exports: { default: async },
            with: {
                "relay:plugin/types": super::auth::relay::plugin::types,
                "relay:plugin/log": super::adapter::relay::plugin::log,
                "relay:plugin/clock": super::adapter::relay::plugin::clock,
                "relay:plugin/config": super::adapter::relay::plugin::config,
                "relay:plugin/kv": super::adapter::relay::plugin::kv,
            },
        });
    }
}

pub use auth::relay::plugin::types;
