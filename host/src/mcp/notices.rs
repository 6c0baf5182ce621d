//! A backend's progress and log notifications, as a client is given them: held in the client's
//! queue ([`super::CLIENT_QUEUE`] messages) and its request's answer stream until read, so one
//! of a backend's megabytes each, sent for every call in flight, held gigabytes. One home for
//! the bound, for the notices about one request and those every session hears.

use serde_json::{Map, Value, json};

use super::clip::{clip, clip_to};

/// The most JSON text of one notification's params given to a client, about (larger ones keep
/// the fields MCP defines, their text cut: a log's `data` cut to this much then quoted as a
/// string, which its escapes may lengthen).
pub const NOTICE_BYTES: usize = 64 << 10;

/// The most of a progress notification's `message` kept when its params are over the bound.
const PROGRESS_MESSAGE_BYTES: usize = 4 << 10;

/// Whether `value`'s JSON text is longer than `max` bytes (counted, not built, and only as far
/// as `max`).
pub fn json_longer_than(value: &Value, max: usize) -> bool {
    struct Count(usize, usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            if self.0 > self.1 { Err(std::io::ErrorKind::FileTooLarge.into()) } else { Ok(bytes.len()) }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Count(0, max), value).is_err()
}

/// A progress notification's params within [`NOTICE_BYTES`]: as they are when they fit; else
/// the fields MCP defines (`progressToken`, `progress`, `total`, `message` cut short).
pub fn progress_params(params: Value) -> Value {
    if !json_longer_than(&params, NOTICE_BYTES) {
        return params;
    }
    let mut kept = Map::new();
    // The token is the client's own (at most 256 bytes, `mcp::requests`), put back by the relay.
    if let Some(token) = params.get("progressToken") {
        kept.insert("progressToken".into(), token.clone());
    }
    for field in ["progress", "total"] {
        if let Some(value) = params.get(field).filter(|v| v.is_number()) {
            kept.insert(field.to_owned(), value.clone());
        }
    }
    if let Some(message) = params.get("message").and_then(Value::as_str) {
        kept.insert("message".into(), clip_to(message, PROGRESS_MESSAGE_BYTES).into_owned().into());
    }
    Value::Object(kept)
}

/// A log notification's params as a client is given them: `level`, `logger` (as the caller
/// names it) and `data` cut to [`NOTICE_BYTES`] of JSON text (then as a string); nothing else
/// (`_meta`, fields of the backend's own).
pub fn log_params(params: &Value, logger: Option<String>) -> Value {
    let level = params.get("level").and_then(Value::as_str).map(clip).unwrap_or_default();
    let data = match params.get("data") {
        Some(data) if json_longer_than(data, NOTICE_BYTES) => {
            Value::String(clip_to(&data.to_string(), NOTICE_BYTES).into_owned())
        }
        Some(data) => data.clone(),
        None => Value::Null,
    };
    let mut kept = json!({"level": level, "data": data});
    if let Some(logger) = logger {
        kept["logger"] = logger.into();
    }
    kept
}

/// A log notification about one client request: as it is when it fits in [`NOTICE_BYTES`];
/// else [`log_params`] with its own `logger` cut short.
pub fn related_log_params(params: Value) -> Value {
    if !json_longer_than(&params, NOTICE_BYTES) {
        return params;
    }
    let logger = params.get("logger").and_then(Value::as_str).map(|l| clip(l).into_owned());
    log_params(&params, logger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_over_the_bound_keep_the_fields_mcp_defines_cut_short() {
        let small = json!({"progressToken": "t", "progress": 1, "total": 2, "message": "half", "_meta": {"k": 1}});
        assert_eq!(progress_params(small.clone()), small, "one that fits is passed as it is");
        let huge = "x".repeat(1 << 20);
        let progress = progress_params(json!({"progressToken": "t", "progress": 1, "message": huge, "extra": huge}));
        assert!(!json_longer_than(&progress, NOTICE_BYTES), "{}", progress.to_string().len());
        assert_eq!(progress["progressToken"], "t");
        assert_eq!(progress["progress"], 1);
        assert!(progress["message"].as_str().unwrap().starts_with("xxxx"));
        assert!(progress.get("extra").is_none());

        let log = related_log_params(json!({"level": "info", "logger": "db", "data": {"blob": huge}}));
        assert!(!json_longer_than(&log, NOTICE_BYTES + 1024), "{}", log.to_string().len());
        assert_eq!(log["level"], "info");
        assert_eq!(log["logger"], "db");
        assert!(log["data"].as_str().unwrap().starts_with("{\"blob\":\"xxx"));
        let fits = json!({"level": "info", "data": "ok", "_meta": {"k": 1}});
        assert_eq!(related_log_params(fits.clone()), fits);
    }

    #[test]
    fn json_length_is_counted_up_to_the_bound() {
        let value = json!({"a": "b"});
        let len = value.to_string().len();
        assert!(!json_longer_than(&value, len));
        assert!(json_longer_than(&value, len - 1));
    }
}
