//! Text a client (or a backend) chose, quoted back in a log line, an error message or a
//! forwarded log record, is cut short here: one home for the rule, so no one can make the relay
//! write megabytes of their text anywhere by sending it.

use std::borrow::Cow;

/// The most bytes of someone else's text quoted anywhere.
pub const QUOTED_BYTES: usize = 128;

/// `text`, or its first [`QUOTED_BYTES`] bytes (on a character boundary) followed by how much
/// was left out.
pub fn clip(text: &str) -> Cow<'_, str> {
    clip_to(text, QUOTED_BYTES)
}

/// `text`, or its first `max` bytes (on a character boundary) followed by how much was left
/// out: for text that is longer by nature (a plugin's message, a log record's field).
pub fn clip_to(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes more)", &text[..end], text.len() - end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(100);
        let clipped = clip(&long);
        assert!(clipped.starts_with(&"é".repeat(64)), "{clipped}");
        assert!(clipped.ends_with("(72 bytes more)"), "{clipped}");
        assert!(clipped.len() < 160);
    }
}
