//! Upstreams: the MCP servers behind the relay. Each has a supervisor that keeps one
//! connection alive (connect, initialize, list, reconnect with capped exponential backoff and
//! jitter) and publishes its tool list; requests wait for a live connection and are re-sent
//! once if the connection drops under them, within their deadline.

mod catalog_credential;
mod connection;
mod error;
mod framed;
mod handshake;
mod http;
mod http_body;
mod http_client;
mod http_pool;
mod lanes;
mod registry;
mod replay;
mod routes;
mod stdio;
mod supervisor;
mod websocket;

pub use catalog_credential::{CatalogCredential, CatalogCredentialSlot};
pub use error::UpstreamError;
pub use handshake::{Listing, ServerIdentity};
pub use http::Credential;
pub use http_client::{HttpClient, build as build_http_client};
pub use registry::Upstreams;
pub use stdio::{children_stopped, is_relay_secret, protect_env};
pub use supervisor::{State, Status, Upstream, UpstreamEvent};
