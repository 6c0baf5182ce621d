//! Transports: one TCP port, the first bytes decide. `{` starts newline-delimited JSON-RPC;
//! anything else is HTTP (Streamable HTTP on `/mcp`, WebSocket upgrade on `/` and `/ws`,
//! `/healthz`, `/readyz`). Transports turn bytes into messages and hand them to a session;
//! nothing downstream calls back into a transport.

mod browser_guard;
mod gate;
mod get_stream;
mod held_answer;
mod http;
mod http_answer;
mod http_session;
mod line;
mod listener;
mod media;
mod oauth;
mod oauth_callback;
mod observe;
mod parked;
mod prefixed;
mod proxy_protocol;
mod resumable;
mod sse;
mod state;
mod stateless;
mod stateless_headers;
mod subject;
mod tcp_write;
mod tls;
mod websocket;
mod write_deadline;

pub use browser_guard::BrowserRules;
pub use listener::{Sniffed, serve, sniff};
pub use oauth::ProtectedResource;
pub use observe::serve_private as serve_metrics;
pub use proxy_protocol::TrustedProxies;
pub use state::TransportState;
pub use stateless::check as check_stateless_request;
pub use tls::{Tls, TlsError, certificates, private_key};
