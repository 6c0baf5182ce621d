//! A connection's bytes as the listener sees them: the sniff of the first byte, then (for
//! newline JSON-RPC) the line codec fed in arbitrary chunks and every line decoded. Nothing may
//! panic, no line may exceed the limit, and chunking must not change what is read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::mcp::{Limits, LineCodec, decode};
use relay::transport::{Sniffed, sniff};

const MAX: usize = 256;

fn lines(data: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, usize>> {
    LineCodec::split_chunked(MAX, data, chunk)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    if sniff(first) != Sniffed::Line {
        return;
    }
    let chunk = rest.first().map_or(1, |&b| usize::from(b) % 64 + 1);
    let whole = lines(rest, rest.len());
    assert_eq!(whole, lines(rest, chunk), "chunking changed the lines");
    let limits = Limits { max_message_bytes: MAX, max_json_depth: 8, ..Limits::default() };
    for line in whole.into_iter().flatten() {
        assert!(line.len() <= MAX);
        let _ = decode(&line, &limits);
    }
});
