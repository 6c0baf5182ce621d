//! The host side of the WIT interfaces plugins import: one module per interface, each an
//! implementation of the generated `Host` trait for the call's [`PluginState`].

mod clock;
mod config;
mod kv;
mod log;
mod upstream;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::adapter::Adapter;
use super::sandbox::PluginState;

/// A linker with WASI and every relay host interface. The adapter world imports them all, and
/// the auth and policy worlds import a subset, so one linker serves every plugin.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Every plugin may import wasi:http; the store's grant decides where requests may go.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Adapter::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}
