//! W3C trace context for one request: the trace id comes from the client's `traceparent`
//! (the HTTP header, or `_meta.traceparent` as the 2026-07-28 protocol carries it) or is made
//! here; the relay's hop gets its own span id, and the request goes on to the backend with
//! `_meta.traceparent` naming that span, so one call can be followed across relay and backend.

use serde_json::Value;

/// The trace a request belongs to: fixed-size text, so a call's trace costs no allocation but
/// the `traceparent` it sends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// 32 lower-case hex digits.
    trace_id: [u8; 32],
    /// The relay's span: 16 lower-case hex digits.
    span_id: [u8; 16],
    /// Trace flags (sampled or not), as the client sent them: 2 lower-case hex digits.
    flags: [u8; 2],
}

impl Trace {
    /// The trace of a request whose `_meta` is `meta`: continued from a valid `traceparent`,
    /// or a new one.
    pub fn of(meta: Option<&Value>) -> Self {
        let parent = meta.and_then(|m| m.get("traceparent")).and_then(Value::as_str).and_then(parse);
        let mut span = [0u8; 32];
        uuid::Uuid::new_v4().simple().encode_lower(&mut span);
        let span_id = span[..16].try_into().expect("16 of 32 digits");
        match parent {
            Some((trace_id, flags)) => Self { trace_id, span_id, flags },
            None => {
                let mut trace_id = [0u8; 32];
                uuid::Uuid::new_v4().simple().encode_lower(&mut trace_id);
                Self { trace_id, span_id, flags: *b"01" }
            }
        }
    }

    /// The trace id: 32 lower-case hex digits.
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).expect("hex digits")
    }

    /// The `traceparent` for the next hop (the backend): this trace, the relay's span.
    pub fn traceparent(&self) -> String {
        let mut header = String::with_capacity(55);
        for part in [&b"00"[..], &self.trace_id, &self.span_id, &self.flags] {
            if !header.is_empty() {
                header.push('-');
            }
            header.push_str(std::str::from_utf8(part).expect("hex digits"));
        }
        header
    }
}

/// The trace id and flags of a version-00 `traceparent`; `None` when it is malformed (or all
/// zeros, which the spec says to ignore).
fn parse(header: &str) -> Option<([u8; 32], [u8; 2])> {
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
    valid.then(|| (trace_id.as_bytes().try_into().expect("32 digits"), flags.as_bytes().try_into().expect("2 digits")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_client_trace_is_continued_with_the_relays_own_span() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = Trace::of(Some(&json!({"traceparent": parent})));
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
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
            assert_eq!(trace.trace_id().len(), 32, "{bad}");
            assert_ne!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
        }
        assert_ne!(Trace::of(None).trace_id, Trace::of(None).trace_id);
    }
}
