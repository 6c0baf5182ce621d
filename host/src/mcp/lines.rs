//! Newline-delimited framing with a length limit that does not end the stream: an over-long
//! line becomes [`Line::TooLong`] and reading resumes at the next newline.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

/// One decoded line.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A complete line (without its newline).
    Text(String),
    /// A line longer than the limit; its bytes were discarded.
    TooLong,
}

/// A [`LinesCodec`] whose length errors are items rather than stream-ending errors.
#[derive(Debug)]
pub struct LineCodec {
    inner: LinesCodec,
}

impl LineCodec {
    /// Lines up to `max_length` bytes.
    pub fn new(max_length: usize) -> Self {
        Self { inner: LinesCodec::new_with_max_length(max_length) }
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

fn lift(result: Result<Option<String>, LinesCodecError>) -> Result<Option<Line>, std::io::Error> {
    match result {
        Ok(line) => Ok(line.map(Line::Text)),
        Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Line::TooLong)),
        Err(LinesCodecError::Io(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_over_long_line_is_reported_and_reading_resumes() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"0123456789abcdef\nok\n"[..]);
        let mut lines = Vec::new();
        while let Some(line) = codec.decode(&mut buf).unwrap() {
            lines.push(line);
        }
        assert_eq!(lines, vec![Line::TooLong, Line::Text("ok".into())]);
    }
}
