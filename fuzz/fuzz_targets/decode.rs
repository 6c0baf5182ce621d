//! JSON-RPC/MCP message parsing under the size and depth limits: never panics, and what it
//! accepts is within the limits and survives a round trip through its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::mcp::{Limits, decode, json_depth_exceeds};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_message_bytes: 4096, max_json_depth: 16, ..Limits::default() };
    if let Ok(message) = decode(data, &limits) {
        assert!(data.len() <= limits.max_message_bytes);
        assert!(!json_depth_exceeds(data, limits.max_json_depth));
        let text = message.to_text();
        let again = decode(text.as_bytes(), &Limits { max_message_bytes: usize::MAX, ..limits.clone() });
        assert_eq!(again.ok(), Some(message), "re-encoding changed the message");
    }
});
