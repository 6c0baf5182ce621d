//! The fuzzed edges' properties, run briefly on stable in the normal suite (the cargo-fuzz
//! targets in `fuzz/` run the same ones for as long as one likes): the transport sniff, the
//! newline codec, JSON-RPC decoding under the size and depth limits, the 2026-07-28 header
//! checks and config parsing never panic and keep their promises.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use relay::config::{BackendsFile, RelayConfig};
use relay::mcp::{Limits, LineCodec, Message, decode, json_depth_exceeds};
use relay::transport::{Sniffed, check_stateless_request, sniff};
use serde_json::{Value, json};

const MAX_LINE: usize = 128;

/// Lines the codec yields from `data` fed `chunk` bytes at a time.
fn lines(data: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, usize>> {
    LineCodec::split_chunked(MAX_LINE, data, chunk)
}

/// JSON values of bounded size and depth.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z\"\\\\{}\\[\\] ]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(24, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_sniff_sends_tls_json_and_http_where_they_belong(first in any::<u8>()) {
        let expected = match first {
            0x16 => Sniffed::Tls,
            b'{' | b'[' | b' ' | b'\t' | b'\r' | b'\n' => Sniffed::Line,
            _ => Sniffed::Http,
        };
        prop_assert_eq!(sniff(first), expected);
    }

    #[test]
    fn chunking_never_changes_the_lines_and_none_exceeds_the_limit(
        data in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'{'), any::<u8>()], 0..1024),
        chunk in 1usize..64,
    ) {
        let whole = lines(&data, data.len());
        prop_assert_eq!(&whole, &lines(&data, chunk));
        for line in whole.iter().flatten() {
            prop_assert!(line.len() <= MAX_LINE);
        }
    }

    #[test]
    fn the_depth_check_agrees_with_the_parsed_depth(value in json_value(), max in 1usize..12) {
        let text = value.to_string();
        prop_assert_eq!(json_depth_exceeds(text.as_bytes(), max), depth(&value) > max, "{}", text);
    }

    #[test]
    fn decoding_keeps_the_limits_and_round_trips(
        id in prop_oneof![any::<i64>().prop_map(Value::from), "[a-z0-9]{0,8}".prop_map(Value::from)],
        method in "[a-z/]{1,16}",
        params in json_value(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let limits = Limits { max_message_bytes: 2048, max_json_depth: 8, ..Limits::default() };
        let candidates = [
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string().into_bytes(),
            noise,
        ];
        for text in candidates {
            if let Ok(message) = decode(&text, &limits) {
                prop_assert!(text.len() <= limits.max_message_bytes);
                prop_assert!(!json_depth_exceeds(&text, limits.max_json_depth));
                let again = decode(message.to_text().as_bytes(), &Limits { max_message_bytes: usize::MAX, ..limits.clone() });
                prop_assert_eq!(again.ok(), Some(message));
            }
        }
    }

    #[test]
    fn stateless_requests_pass_only_with_their_own_method_header(
        method in prop_oneof![Just("tools/call".to_owned()), Just("tools/list".to_owned()), "[a-z/]{1,12}"],
        header_method in prop::option::of(prop_oneof![Just("tools/call".to_owned()), "[a-z/]{1,12}"]),
        version in prop::option::of(prop_oneof![Just("2026-07-28".to_owned()), "[0-9-]{1,10}"]),
        name in prop::option::of("[ -~]{0,16}"),
        twice in any::<bool>(),
        params in json_value(),
    ) {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let Ok(Message::Request(request)) = decode(body.as_bytes(), &Limits::default()) else { return Ok(()) };
        let mut headers = HeaderMap::new();
        for (key, value) in [("mcp-method", &header_method), ("mcp-protocol-version", &version), ("mcp-name", &name)] {
            if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.append(key, value.clone());
                if twice && key == "mcp-method" {
                    headers.append(key, value);
                }
            }
        }
        if check_stateless_request(&headers, &request).is_ok() {
            prop_assert!(!twice);
            prop_assert_eq!(header_method.as_deref(), Some(request.method.as_str()));
        }
    }

    #[test]
    fn config_text_never_panics(text in "[ -~\n]{0,256}") {
        let _ = RelayConfig::parse(&text);
        if let Ok(file) = BackendsFile::parse(&text) {
            let _ = file.validate();
        }
    }

    #[test]
    fn config_shapes_never_panic(
        port in any::<i64>(),
        limit in any::<i64>(),
        url in "[a-z]{2,5}://[a-z0-9.:@/?=]{0,24}",
        name in "[ -~]{0,16}",
    ) {
        let relay = format!("listen: {{port: {port}}}\nlimits: {{max_sessions: {limit}, auth_failures: {limit}, max_header_bytes: {limit}}}\n");
        let _ = RelayConfig::parse(&relay);
        let backends = format!("backends:\n  - name: {name:?}\n    url: {url:?}\n");
        if let Ok(file) = BackendsFile::parse(&backends) {
            let _ = file.validate();
        }
    }
}
