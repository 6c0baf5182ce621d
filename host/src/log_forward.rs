//! Log forwarding to the WebSocket logger, the way `joshua_logger` speaks to it: the logger is
//! an MCP server on WebSocket, and each record is a `tools/call` of its `logger_log` tool with
//! `{level, message, component: "mcp-relay", data, trace_id}`.
//!
//! A `tracing` layer copies the relay's records (at or above `logging.forward.level`) into a
//! queue bounded in records and in bytes ([`QUEUE_BYTES`]; each field is cut to
//! [`FIELD_BYTES`]) and never waits: a full queue drops the record and counts it. One task keeps
//! one connection to the logger (reconnecting with capped backoff) and sends what the queue
//! holds without waiting for answers; past [`MAX_UNANSWERED`] unanswered records it drops
//! rather than let a logger that stopped answering grow the relay. A logger that leaves records
//! unanswered, or a send unfinished, for [`ANSWER_WITHIN`] is given up and connected to again:
//! a logger that hung must not end forwarding for good. The stderr log is unaffected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::metrics::metrics;

/// Records waiting to be sent; past this the layer drops (and counts) new ones.
const QUEUE: usize = 1024;

/// Bytes of records waiting to be sent; past this the layer drops (and counts) new ones, so
/// a logger that is down costs at most this much memory whatever the records hold.
pub const QUEUE_BYTES: usize = 4 << 20;

/// The most of one field (the message included) a forwarded record carries: records quote
/// client text, which the client makes as long as it likes.
pub const FIELD_BYTES: usize = 4096;

/// Records sent but not yet answered; past this, new records are dropped.
pub const MAX_UNANSWERED: usize = 256;

/// How long records may wait for an answer with none coming, or a record for the logger to
/// read it, before the connection is given up (and made again).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How the relay names itself in forwarded records.
const COMPONENT: &str = "mcp-relay";

/// The records of the forwarder itself stay local (a logger that is down must not produce
/// records about itself that queue for it).
const OWN_TARGET: &str = "relay::log_forward";

/// One record on its way to the logger.
#[derive(Debug)]
struct Record {
    level: &'static str,
    message: String,
    data: Map<String, Value>,
    trace_id: Option<String>,
    /// What it counts against [`QUEUE_BYTES`].
    bytes: usize,
}

/// The `tracing` layer: copies records into the queue.
pub struct ForwardLayer {
    queue: mpsc::Sender<Record>,
    queued_bytes: Arc<AtomicUsize>,
}

/// The sending side, started by the server on its runtime.
pub struct Forwarder {
    url: String,
    /// The URL as logs show it (a token in its query or user info hidden).
    shown: String,
    queue: mpsc::Receiver<Record>,
    queued_bytes: Arc<AtomicUsize>,
}

/// A layer and its forwarder for the logger at `url`.
pub fn channel(url: &str) -> (ForwardLayer, Forwarder) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        ForwardLayer { queue: tx, queued_bytes: queued_bytes.clone() },
        Forwarder { url: url.to_owned(), shown: crate::config::redact_url(url), queue: rx, queued_bytes },
    )
}

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target().starts_with(OWN_TARGET) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let trace_id = fields.data.remove("trace_id").and_then(|v| v.as_str().map(str::to_owned));
        fields.data.insert("target".into(), meta.target().into());
        let bytes = fields.bytes + trace_id.as_ref().map_or(0, String::len);
        let record = Record { level, message: fields.message, data: fields.data, trace_id, bytes };
        let fits = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + bytes <= QUEUE_BYTES).then_some(queued + bytes)
            })
            .is_ok();
        if !fits {
            metrics().process.log_forward_dropped();
        } else if self.queue.try_send(record).is_err() {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            metrics().process.log_forward_dropped();
        }
    }
}

/// A record's message and other fields, as JSON, each cut to [`FIELD_BYTES`].
#[derive(Default)]
struct Fields {
    message: String,
    data: Map<String, Value>,
    /// The bytes of text held.
    bytes: usize,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put_text(field, &format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_text(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

impl Fields {
    fn put_text(&mut self, field: &Field, text: &str) {
        let text = crate::mcp::clip_to(text, FIELD_BYTES).into_owned();
        self.bytes += field.name().len() + text.len();
        self.put(field, Value::String(text));
    }

    fn put(&mut self, field: &Field, value: Value) {
        self.bytes += 16;
        match (field.name(), value) {
            ("message", Value::String(text)) => self.message = text,
            (name, value) => {
                self.data.insert(name.to_owned(), value);
            }
        }
    }
}

impl Forwarder {
    /// Runs until the relay exits: connect, send, and on loss reconnect with capped backoff.
    pub async fn run(mut self) {
        let backoff_builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        let mut backoff = backoff_builder.build();
        loop {
            match connect(&self.url).await {
                Ok(socket) => {
                    backoff = backoff_builder.build();
                    self.set_connected(true);
                    tracing::info!(target: "relay::log_forward", url = %self.shown, "log forwarding connected");
                    let why = self.serve(socket).await;
                    self.set_connected(false);
                    tracing::warn!(target: "relay::log_forward", url = %self.shown, why, "log forwarding disconnected; reconnecting");
                }
                Err(error) => {
                    tracing::debug!(target: "relay::log_forward", url = %self.shown, %error, "logger not reachable");
                }
            }
            if self.queue.is_closed() {
                return;
            }
            tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
        }
    }

    fn set_connected(&self, connected: bool) {
        metrics().process.log_forward_connected(connected);
    }

    /// Sends queued records on `socket` until it fails; says why it ended.
    async fn serve(&mut self, socket: Socket) -> &'static str {
        let (mut sink, mut stream) = socket.split();
        let unanswered = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let (pending, answers) = (unanswered.clone(), answered.clone());
        // Answers are only counted: a failed logger_log is the logger's business.
        let mut reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Frame::Text(_)) {
                    let _ = pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                    answers.fetch_add(1, Ordering::Relaxed);
                }
                if matches!(frame, Frame::Close(_)) {
                    break;
                }
            }
        });
        // A connection given up takes what it left unanswered with it: counted as dropped.
        let lost = |why: &'static str| {
            metrics().process.log_forward_lost(unanswered.load(Ordering::Relaxed) as u64);
            why
        };
        let mut stall = Stall::default();
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let mut next_id: u64 = 1;
        loop {
            let record = tokio::select! {
                record = self.queue.recv() => match record {
                    Some(record) => {
                        self.queued_bytes.fetch_sub(record.bytes, Ordering::AcqRel);
                        record
                    }
                    None => return "the relay is stopping",
                },
                _ = &mut reader => return lost("the logger closed the connection"),
                _ = check.tick() => {
                    let (waiting, answered) = (unanswered.load(Ordering::Relaxed), answered.load(Ordering::Relaxed));
                    if stall.for_too_long(waiting, answered, Instant::now()) {
                        reader.abort();
                        return lost("the logger stopped answering");
                    }
                    continue;
                }
            };
            if unanswered.load(Ordering::Relaxed) >= MAX_UNANSWERED {
                metrics().process.log_forward_dropped();
                continue;
            }
            next_id += 1;
            let call = json!({
                "jsonrpc": "2.0",
                "id": next_id,
                "method": "tools/call",
                "params": {"name": "logger_log", "arguments": {
                    "level": record.level,
                    "message": record.message,
                    "component": COMPONENT,
                    "data": record.data,
                    "trace_id": record.trace_id,
                }},
            });
            unanswered.fetch_add(1, Ordering::Relaxed);
            let sent = tokio::time::timeout(ANSWER_WITHIN, sink.send(Frame::Text(call.to_string().into()))).await;
            if !matches!(sent, Ok(Ok(()))) {
                reader.abort();
                return lost(if sent.is_err() { "the logger stopped reading" } else { "sending failed" });
            }
        }
    }
}

/// Whether a connection's records have waited too long for an answer: some unanswered, and no
/// answer for [`ANSWER_WITHIN`] since.
#[derive(Default)]
struct Stall {
    /// Answers counted at the last look.
    answered: u64,
    /// Since when records have waited with no answer coming.
    since: Option<Instant>,
}

impl Stall {
    /// Looks at the connection now: `waiting` records unanswered, `answered` answers so far.
    fn for_too_long(&mut self, waiting: usize, answered: u64, now: Instant) -> bool {
        if waiting == 0 || answered != self.answered {
            self.answered = answered;
            self.since = (waiting > 0).then_some(now);
            return false;
        }
        now.duration_since(*self.since.get_or_insert(now)) >= ANSWER_WITHIN
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The logger's socket: its answers are small, and what waits to be written is bounded
/// (tungstenite queues a pong for each ping it reads, without a bound by default: a logger
/// sending pings and reading nothing would grow the relay as a backend could, stop 56).
fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
        .max_write_buffer_size(QUEUE_BYTES)
}

/// Opens the WebSocket and performs the MCP handshake with the logger.
async fn connect(url: &str) -> Result<Socket, String> {
    let attempt = async {
        let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(socket_config()), false)
            .await
            .map_err(|e| e.to_string())?;
        let initialize = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": crate::mcp::version::UPSTREAM_REQUEST,
                "capabilities": {},
                "clientInfo": {"name": COMPONENT, "version": env!("CARGO_PKG_VERSION")},
            },
        });
        socket.send(Frame::Text(initialize.to_string().into())).await.map_err(|e| e.to_string())?;
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) => {
                    let answer: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                    if answer["id"] == 1 {
                        if let Some(error) = answer.get("error") {
                            return Err(format!("initialize refused: {error}"));
                        }
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed during the handshake".into()),
            }
        }
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        socket.send(Frame::Text(initialized.to_string().into())).await.map_err(|e| e.to_string())?;
        Ok(socket)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.unwrap_or_else(|_| Err("handshake timed out".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_unanswered_for_a_while_with_no_answer_coming_are_a_stall() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut stall = Stall::default();
        assert!(!stall.for_too_long(0, 0, at(0)), "nothing waits");
        assert!(!stall.for_too_long(3, 0, at(1)));
        assert!(!stall.for_too_long(3, 5, at(9)), "an answer came: the wait starts again");
        assert!(!stall.for_too_long(3, 5, at(18)));
        assert!(stall.for_too_long(3, 5, at(19)), "ten seconds with none");
        let mut idle = Stall::default();
        assert!(!idle.for_too_long(0, 0, at(60)), "an idle connection is not stalled");
    }
}
