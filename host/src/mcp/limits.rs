//! Input limits every transport enforces before a message reaches a session.

use serde::Deserialize;

/// Bounds on what a client may send. Defaults suit large documents (the reference plan sends
/// ~140 KB files) while refusing abuse.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest single JSON-RPC message in bytes (a line, a WebSocket frame or an HTTP body).
    pub max_message_bytes: usize,
    /// Deepest nesting of JSON arrays and objects accepted in a message.
    pub max_json_depth: usize,
    /// Seconds a connection may stay silent before the relay closes it.
    pub idle_timeout_secs: u64,
    /// Most concurrent client sessions; further `initialize` requests are refused.
    pub max_sessions: usize,
    /// Most concurrent sessions of one principal, so no caller can take every session. Not
    /// applied without an auth plugin (its one principal, `anonymous`, is every client): there
    /// sessions are capped per address alone.
    pub max_sessions_per_principal: usize,
    /// Most concurrent sessions opened from one remote IP address.
    pub max_sessions_per_address: usize,
    /// Most requests one session may have running; past it the transport stops reading (or
    /// an HTTP request waits) until one finishes.
    pub max_requests_in_flight: usize,
    /// Seconds a new connection has to send its first message (newline) or its request head
    /// (HTTP), i.e. to reach authentication.
    pub handshake_timeout_secs: u64,
    /// Seconds an HTTP request body may take to arrive.
    pub body_timeout_secs: u64,
    /// Most connections from one remote IP address that have not yet been authenticated (or,
    /// for HTTP, have not yet sent a whole request head). Each holds at most
    /// `max_preauth_bytes` (newline) or twice `max_header_bytes` (HTTP) for at most
    /// `handshake_timeout_secs`: time and memory bound them, and this count only caps what
    /// one address can make the relay hold (2048 x 64 KiB = 128 MiB), so it is large enough
    /// for a thousand clients connecting at once behind one address.
    pub max_pending_per_address: usize,
    /// Failed authentications one address (an IPv6 /64) may make within
    /// `auth_failure_window_secs`; past it, its attempts are refused (HTTP 429, `-32029`)
    /// without reaching the auth plugin until the window ends.
    pub auth_failures: u32,
    /// The window `auth_failures` counts in, from the first failure.
    pub auth_failure_window_secs: u64,
    /// Stateless (2026-07-28) calls one principal may have parked, waiting for its input;
    /// one more is ended and answered `-32003`. Without an auth plugin every client is the one
    /// open-mode principal, so the cap is per client address instead (IPv6 per /64).
    pub max_parked_per_principal: usize,
    /// Largest first message (newline) a client may send before it has authenticated; the
    /// whole `max_message_bytes` applies after. Keeps what a connection nobody vouched for
    /// can make the relay hold small.
    pub max_preauth_bytes: usize,
    /// Largest HTTP request head (request line and headers) accepted; larger ones are answered
    /// 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            idle_timeout_secs: 600,
            max_sessions: 20_000,
            max_sessions_per_principal: 4096,
            max_sessions_per_address: 4096,
            max_requests_in_flight: 64,
            handshake_timeout_secs: 10,
            body_timeout_secs: 10,
            max_pending_per_address: 2048,
            auth_failures: 20,
            auth_failure_window_secs: 60,
            max_parked_per_principal: 64,
            max_header_bytes: 32 * 1024,
            max_preauth_bytes: 64 * 1024,
        }
    }
}

/// True when `text` nests arrays/objects deeper than `max`. A single pass over the bytes that
/// skips string contents (to the next quote or backslash at once: most of a message is the
/// text of its strings), so it is cheap enough to run before parsing.
pub fn json_depth_exceeds(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'"' => {
                // To the quote that ends the string: past each backslash and what it escapes.
                at += 1;
                loop {
                    let Some(found) = text.get(at..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) else {
                        return false;
                    };
                    at += found;
                    if text[at] == b'"' {
                        break;
                    }
                    at += 2;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nesting_outside_strings_only() {
        assert!(!json_depth_exceeds(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(json_depth_exceeds(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(!json_depth_exceeds(br#"{"a":"[[[[[[\"{{{{"}"#, 1));
        assert!(json_depth_exceeds(br#"{"a":"\\",[{"b":"\\\"["}]}"#, 2), "an escaped backslash ends no string");
    }

    /// The reference for the property below: every byte outside strings, one at a time.
    fn depth_exceeds_byte_by_byte(text: &[u8], max: usize) -> bool {
        let (mut in_string, mut escaped) = (false, false);
        let mut outside_strings = text.iter().filter(|&&b| {
            let was_inside = in_string;
            match (in_string, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') | (false, _, b'"') => in_string = !in_string,
                _ => {}
            }
            !was_inside && b != b'"'
        });
        let mut depth = 0usize;
        outside_strings.any(|&b| {
            match b {
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            depth > max
        })
    }

    proptest::proptest! {
        #[test]
        fn skipping_strings_at_once_reads_as_byte_by_byte(
            text in proptest::collection::vec(proptest::sample::select(b"[]{}\"\\ax".to_vec()), 0..64),
            max in 0usize..6,
        ) {
            proptest::prop_assert_eq!(json_depth_exceeds(&text, max), depth_exceeds_byte_by_byte(&text, max));
        }
    }
}
