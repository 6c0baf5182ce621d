//! The 2026-07-28 envelope and header checks: arbitrary `MCP-Protocol-Version`, `Mcp-Method`
//! and `Mcp-Name` headers (zero, one or two of each) against an arbitrary body. Never panics;
//! an accepted request's `Mcp-Method` names its body's method.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use relay::mcp::{Limits, Message, decode};
use relay::transport::check_stateless_request;

const NAMES: [&str; 3] = ["mcp-protocol-version", "mcp-method", "mcp-name"];

fuzz_target!(|data: &[u8]| {
    // Layout: a byte of header counts (2 bits each), then NUL-separated header values, then the body.
    let Some((&counts, rest)) = data.split_first() else { return };
    let mut parts = rest.splitn(7, |&b| b == 0);
    let mut headers = HeaderMap::new();
    for (i, name) in NAMES.iter().enumerate() {
        for _ in 0..(counts >> (2 * i)) & 0b11 {
            if let Some(value) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
                headers.append(*name, value);
            }
        }
    }
    let body = parts.last().unwrap_or_default();
    let Ok(Message::Request(request)) = decode(body, &Limits::default()) else { return };
    if check_stateless_request(&headers, &request).is_ok() {
        assert_eq!(headers.get("mcp-method").and_then(|v| v.to_str().ok()), Some(request.method.as_str()));
    }
});
