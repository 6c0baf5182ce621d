//! WebAssembly plugins (wasmtime component model): the `auth`, `policy`, `adapter`,
//! `interceptor` and `credentials` worlds of `wit/`, each plugin sandboxed (memory cap, deadline, grants) and hot-reloaded from disk.
//!
//! Lifecycle in three stages (as in Spin): the engine and linker are built once; each plugin
//! version is compiled (or loaded from the disk cache), type-checked and pre-instantiated once;
//! a call takes a warm instance of the version (or instantiates one from the pool) and gives it
//! back only if the call succeeded cleanly (see `loaded`), so instances and their guest memory
//! are reused across calls, sessions and principals.

mod auth_cache;
mod backends;
mod bindings;
mod cache;
mod credential_source;
mod engine;
mod holds;
mod host;
mod intercept;
mod kv_memory;
mod kv_redis;
mod kv_store;
mod listing;
mod loaded;
mod outcomes;
mod policy_chain;
mod refusals;
mod registry;
#[cfg(test)]
mod registry_tests;
mod reload;
mod result_filter;
mod sandbox;
mod status;
mod v0_1;
mod watch;
mod wit_types;

pub use backends::{BackendCalls, NoBackends};
pub use cache::default_dir as default_cache_dir;
pub use credential_source::{CredentialAsk, IssueError, Issued};
pub use intercept::{CallHook, Interception, PROMPTS_GET, RESOURCES_READ, TOOLS_CALL};
pub use kv_store::{KvError, KvStore};
pub use listing::{Edited, Listed};
pub use registry::Plugins;
pub use reload::{ReloadError, Reloaded, RolledBack};
pub use sandbox::{Admission, Caller, PluginError, Refusal};
pub use watch::watch;
