//! relay: many MCP servers behind one endpoint.
//!
//! The request path runs one way: [`transport`] → [`session`] → [`policy`] → [`router`] →
//! [`upstream`] (MCP backends), [`admin`] (the relay's own tools) and [`plugins`] (auth, policy
//! and adapter components). [`config`], [`mcp`], [`access`], [`admission`] and [`lifecycle`]
//! are shared vocabulary; [`server`] wires the layers. `host/README.md` maps every hop, and
//! everything that travels back.

pub mod access;
pub mod admin;
pub mod admission;
pub mod auth_throttle;
pub mod config;
pub mod credentials;
pub mod deadline;
pub mod digest;
pub mod file_watch;
pub mod health;
pub mod lifecycle;
pub mod limit_log;
pub mod log_forward;
pub mod mcp;
pub mod metrics;
pub mod oauth_url;
pub mod plugins;
pub mod policy;
pub mod preflight;
pub mod process_guard;
pub mod router;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod transport;
pub mod upstream;
pub mod workers;
