//! relay: many MCP servers behind one endpoint.
//!
//! The request path runs one way: [`transport`] → [`session`] → [`router`] → [`upstream`].
//! [`config`], [`mcp`] and [`lifecycle`] are shared vocabulary; [`server`] wires the layers.

pub mod config;
pub mod health;
pub mod lifecycle;
pub mod mcp;
pub mod router;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod transport;
pub mod upstream;
