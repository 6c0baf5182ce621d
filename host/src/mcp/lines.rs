//! Newline-delimited framing with a length limit that does not end the stream: an over-long
//! line becomes [`Line::TooLong`] and reading resumes at the next newline. Lines are bytes, not
//! text: a line that is not UTF-8 reaches the JSON decoder (which answers it as a parse error)
//! instead of ending the connection.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder};

/// One decoded line.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A complete line (without its newline), as received.
    Text(Bytes),
    /// A line longer than the limit; its bytes were discarded.
    TooLong,
}

impl Line {
    /// Whether the line is empty or only whitespace (skipped by readers).
    pub fn is_blank(text: &[u8]) -> bool {
        text.iter().all(u8::is_ascii_whitespace)
    }
}

/// A newline codec whose length errors are items rather than stream-ending errors.
#[derive(Debug)]
pub struct LineCodec {
    inner: AnyDelimiterCodec,
}

impl LineCodec {
    /// Lines up to `max_length` bytes.
    pub fn new(max_length: usize) -> Self {
        Self { inner: AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max_length) }
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        lift(self.inner.decode(src))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        lift(self.inner.decode_eof(src))
    }
}

fn lift(result: Result<Option<Bytes>, AnyDelimiterCodecError>) -> Result<Option<Line>, std::io::Error> {
    match result {
        Ok(line) => Ok(line.map(Line::Text)),
        Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Ok(Some(Line::TooLong)),
        Err(AnyDelimiterCodecError::Io(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_over_long_line_is_reported_and_reading_resumes() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"0123456789abcdef\nok\n\xff\xfe\nnext\n"[..]);
        let mut lines = Vec::new();
        while let Some(line) = codec.decode(&mut buf).unwrap() {
            lines.push(line);
        }
        let text = |t: &'static [u8]| Line::Text(Bytes::from_static(t));
        assert_eq!(
            lines,
            vec![Line::TooLong, text(b"ok"), text(b"\xff\xfe"), text(b"next")],
            "not UTF-8 is a line too"
        );
    }
}
