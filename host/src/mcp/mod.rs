//! MCP on the wire: JSON-RPC 2.0 messages, input limits and protocol versions.
//!
//! Transports turn bytes into [`Message`]s with [`decode`]; everything downstream works on
//! these types and never sees raw bytes.

mod clip;
mod codec;
pub mod envelope;
mod jsonrpc;
mod limits;
mod lines;
mod lists;
mod log_level;
pub mod names;
mod notices;
mod payload;
mod related;
mod requests;
mod rpc_error;
mod sink;
mod trace;
pub mod version;

pub use clip::{QUOTED_BYTES, clip, clip_to};
pub use codec::{DecodeError, decode};
pub use jsonrpc::{Message, Notification, Request, Response, request_text};
pub use limits::{Limits, json_depth_exceeds};
pub use lines::{Line, LineCodec, Oversized};
pub use lists::ListKind;
pub use log_level::{ClientLogLevel, LOG_LEVELS, level_name, log_rank, meets};
pub use notices::{NOTICE_BYTES, json_longer_than, log_params, progress_params, related_log_params};
pub use payload::Payload;
pub use related::{ClientRequests, Related};
pub use requests::{Addressed, Completion, CompletionRef, ToolCall};
pub use rpc_error::{RpcError, error_codes};
pub use sink::{CLIENT_QUEUE, ClientSink, ClientStream, Closed, client_channel};
pub use trace::Trace;
