//! A connection's bytes as the listener sees them: the sniff of the first byte, then (for
//! newline JSON-RPC) the line codec fed in arbitrary chunks and every line decoded. Nothing may
//! panic, no line may exceed the limit, and chunking must not change what is read.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use relay::mcp::{Limits, Line, LineCodec, decode};
use relay::transport::{Sniffed, sniff};
use tokio_util::codec::Decoder;

const MAX: usize = 256;

fn lines(data: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, usize>> {
    let mut codec = LineCodec::new(MAX);
    let mut buffer = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buffer.extend_from_slice(piece);
        while let Ok(Some(line)) = codec.decode(&mut buffer) {
            out.push(match line {
                Line::Text(text) => Ok(text.to_vec()),
                Line::TooLong(skipped) => Err(skipped.size),
            });
        }
    }
    out
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
