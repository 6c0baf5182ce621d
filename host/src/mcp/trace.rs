//! W3C trace context for one request: the trace id comes from the client's `traceparent`
//! (the HTTP header, or `_meta.traceparent` as the 2026-07-28 protocol carries it) or is made
//! here; the relay's hop gets its own span id, and the request goes on to the backend with
//! `_meta.traceparent` naming that span, so one call can be followed across relay and backend.

use serde_json::Value;

/// The trace a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// The relay's span: 16 lower-case hex digits.
    span_id: String,
    /// Trace flags (sampled or not), as the client sent them.
    flags: String,
}

impl Trace {
    /// The trace of a request whose `_meta` is `meta`: continued from a valid `traceparent`,
    /// or a new one.
    pub fn of(meta: Option<&Value>) -> Self {
        let parent = meta.and_then(|m| m.get("traceparent")).and_then(Value::as_str).and_then(parse);
        let random = uuid::Uuid::new_v4().simple().to_string();
        let span_id = random[..16].to_owned();
        match parent {
            Some((trace_id, flags)) => Self { trace_id, span_id, flags },
            None => Self { trace_id: uuid::Uuid::new_v4().simple().to_string(), span_id, flags: "01".into() },
        }
    }

    /// The `traceparent` for the next hop (the backend): this trace, the relay's span.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// The trace id and flags of a version-00 `traceparent`; `None` when it is malformed (or all
/// zeros, which the spec says to ignore).
fn parse(header: &str) -> Option<(String, String)> {
    let mut parts = header.trim().split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0');
    valid.then(|| (trace_id.to_owned(), flags.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_client_trace_is_continued_with_the_relays_own_span() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = Trace::of(Some(&json!({"traceparent": parent})));
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let next = trace.traceparent();
        assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && next.ends_with("-01"), "{next}");
        assert_ne!(next, parent, "the relay's hop is a span of its own");
    }

    #[test]
    fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let trace = Trace::of(Some(&json!({"traceparent": bad})));
            assert_eq!(trace.trace_id.len(), 32, "{bad}");
            assert_ne!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
        }
        assert_ne!(Trace::of(None).trace_id, Trace::of(None).trace_id);
    }
}
