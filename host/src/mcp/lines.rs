//! Newline-delimited framing with a length limit that does not end the stream: an over-long
//! line becomes [`Line::TooLong`] (with its first and last bytes, where a JSON-RPC id usually
//! stands) and reading resumes at the next newline. Lines are bytes, not text: a line that is
//! not UTF-8 reaches the JSON decoder (which answers it as a parse error) instead of ending the
//! connection. Memory stays within the limit plus a few hundred bytes, however long a line is.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// How many bytes of each end of an over-long line are kept.
const EDGE: usize = 256;

/// One decoded line.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A complete line (without its newline), as received.
    Text(Bytes),
    /// A line longer than the limit; its bytes were discarded but for its two ends.
    TooLong(Oversized),
}

/// What is kept of an over-long line.
#[derive(Debug, Default, PartialEq)]
pub struct Oversized {
    /// Its first bytes.
    pub head: Vec<u8>,
    /// Its last bytes.
    pub tail: Vec<u8>,
    /// Its whole length.
    pub size: usize,
}

impl Line {
    /// Whether the line is empty or only whitespace (skipped by readers).
    pub fn is_blank(text: &[u8]) -> bool {
        text.iter().all(u8::is_ascii_whitespace)
    }
}

impl Oversized {
    /// The ends of a whole line (for lines that are unreadable rather than too long).
    pub fn of(line: &[u8]) -> Self {
        let mut kept = Oversized { head: line[..EDGE.min(line.len())].to_vec(), tail: Vec::new(), size: line.len() };
        kept.keep_tail(line);
        kept
    }

    /// The numeric id of the JSON-RPC response this was, if its ends show it: `"id":N` before
    /// the result (`{"jsonrpc":"2.0","id":N,"result":...`) or as the last member (`...,"id":N}`).
    pub fn response_id(&self) -> Option<u64> {
        let before_payload = ["\"result\"", "\"error\""]
            .iter()
            .filter_map(|key| find(&self.head, key.as_bytes()))
            .min()
            .unwrap_or(self.head.len());
        if let Some(at) = find(&self.head[..before_payload], b"\"id\"") {
            return number_after(&self.head[at + 4..]).map(|(id, _)| id);
        }
        let at = rfind(&self.tail, b"\"id\"")?;
        let (id, rest) = number_after(&self.tail[at + 4..])?;
        rest.iter().all(|b| b.is_ascii_whitespace() || *b == b'}').then_some(id)
    }

    fn keep_tail(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(&bytes[bytes.len().saturating_sub(EDGE)..]);
        let excess = self.tail.len().saturating_sub(EDGE);
        self.tail.drain(..excess);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// `: 123` → (123, what follows).
fn number_after(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let rest = bytes.trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let id = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((id, &rest[digits..]))
}

/// The newline codec.
#[derive(Debug)]
pub struct LineCodec {
    max_length: usize,
    /// Where to resume looking for a newline in the buffer.
    next_index: usize,
    /// Set while skipping the rest of an over-long line.
    discarding: Option<Oversized>,
}

impl LineCodec {
    /// Lines up to `max_length` bytes.
    pub fn new(max_length: usize) -> Self {
        Self { max_length, next_index: 0, discarding: None }
    }

    /// Changes the longest line from now on (the relay allows a client more once it has
    /// authenticated).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// Every line a fresh codec yields from `data` delivered `chunk` bytes at a time: its text,
    /// or the size of a line over `max_length`. What the property tests and the fuzzers compare
    /// across chunkings (a connection's reads may split a line anywhere).
    pub fn split_chunked(max_length: usize, data: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut codec = Self::new(max_length);
        let mut buffer = BytesMut::new();
        let mut lines = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            buffer.extend_from_slice(piece);
            while let Ok(Some(line)) = codec.decode(&mut buffer) {
                lines.push(match line {
                    Line::Text(text) => Ok(text.to_vec()),
                    Line::TooLong(skipped) => Err(skipped.size),
                });
            }
        }
        lines
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        let newline = src[self.next_index..].iter().position(|b| *b == b'\n').map(|i| i + self.next_index);
        match (self.discarding.as_mut(), newline) {
            (Some(skipped), Some(end)) => {
                skipped.size += end;
                skipped.keep_tail(&src[..end]);
                src.advance(end + 1);
                self.next_index = 0;
                Ok(self.discarding.take().map(Line::TooLong))
            }
            (Some(skipped), None) => {
                skipped.size += src.len();
                skipped.keep_tail(src);
                src.clear();
                self.next_index = 0;
                Ok(None)
            }
            (None, Some(end)) if end > self.max_length => {
                let line = src.split_to(end + 1);
                let mut oversized = Oversized { head: line[..EDGE.min(end)].to_vec(), tail: Vec::new(), size: end };
                oversized.keep_tail(&line[..end]);
                self.next_index = 0;
                Ok(Some(Line::TooLong(oversized)))
            }
            (None, Some(end)) => {
                let line = src.split_to(end + 1).freeze();
                self.next_index = 0;
                Ok(Some(Line::Text(line.slice(..end))))
            }
            (None, None) if src.len() > self.max_length => {
                let mut oversized = Oversized { head: src[..EDGE].to_vec(), tail: Vec::new(), size: src.len() };
                oversized.keep_tail(src);
                self.discarding = Some(oversized);
                src.clear();
                self.next_index = 0;
                Ok(None)
            }
            (None, None) => {
                self.next_index = src.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        if let Some(line) = self.decode(src)? {
            return Ok(Some(line));
        }
        self.next_index = 0;
        if let Some(oversized) = self.discarding.take() {
            return Ok(Some(Line::TooLong(oversized)));
        }
        if src.is_empty() {
            return Ok(None);
        }
        // The last line, without its newline.
        Ok(Some(Line::Text(src.split().freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(codec: &mut LineCodec, input: &[u8]) -> Vec<Line> {
        let mut buf = BytesMut::from(input);
        let mut lines = Vec::new();
        while let Some(line) = codec.decode(&mut buf).unwrap() {
            lines.push(line);
        }
        lines
    }

    #[test]
    fn an_over_long_line_is_reported_and_reading_resumes() {
        let mut codec = LineCodec::new(8);
        let got = lines(&mut codec, b"0123456789abcdef\nok\n\xff\xfe\nnext\n");
        let text = |t: &'static [u8]| Line::Text(Bytes::from_static(t));
        assert!(matches!(&got[0], Line::TooLong(o) if o.size == 16));
        assert_eq!(got[1..], [text(b"ok"), text(b"\xff\xfe"), text(b"next")], "not UTF-8 is a line too");
    }

    #[test]
    fn an_over_long_line_across_reads_keeps_its_ends_and_nothing_more() {
        let mut codec = LineCodec::new(1024);
        let mut buf = BytesMut::from(&br#"{"jsonrpc":"2.0","result":{"text":""#[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 1000]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(buf.len() <= 1024, "the skipped line is not buffered");
        }
        buf.extend_from_slice(b"\"}, \"id\": 17}\n{\"ok\":1}\n");
        let Some(Line::TooLong(oversized)) = codec.decode(&mut buf).unwrap() else { panic!("too long") };
        assert_eq!(oversized.response_id(), Some(17));
        assert!(oversized.size > 100_000);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Line::Text(Bytes::from_static(b"{\"ok\":1}"))));
    }

    #[test]
    fn the_id_is_found_before_the_payload_or_as_the_last_member() {
        let at_start =
            Oversized { head: br#"{"jsonrpc":"2.0","id":42,"result":{"id":7"#.to_vec(), ..Default::default() };
        assert_eq!(at_start.response_id(), Some(42));
        let nested_only = Oversized { head: br#"{"result":{"id":7,"#.to_vec(), tail: br#"xx"}]}}"#.to_vec(), size: 0 };
        assert_eq!(nested_only.response_id(), None, "an id inside the result is not the response's");
    }
}
