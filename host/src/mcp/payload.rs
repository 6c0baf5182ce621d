//! A result or a request's params as they travel through the relay: the sender's JSON text,
//! kept as text and written on as it came, until something needs to read it. A forwarded call's
//! result, and its arguments, are then neither decoded into a tree nor encoded again (the hop
//! rewrites the id, and the tool's name, and nothing else); whatever reads them (an interceptor,
//! the 2026-07-28 stamping, a relay tool) decodes them once, on first use.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::sync::{LazyLock, OnceLock};

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::json_depth_exceeds;

/// A JSON-RPC result or params: a peer's text passed through, or a value the relay built or read.
#[derive(Debug, Clone)]
pub struct Payload(Repr);

#[derive(Debug, Clone)]
enum Repr {
    /// A peer's text, checked to be one JSON value on one line; decoded into the cell when
    /// first read (boxed there: every request, response and call future carries a payload,
    /// and most are never decoded).
    Text(Box<RawValue>, OnceLock<Box<Value>>),
    /// A value, written when sent.
    Value(Value),
}

impl Payload {
    /// Keeps `raw` as text when it can be written as it is: on one line (newline JSON-RPC and
    /// SSE `data:` lines frame by line ends, which a pretty-printed answer holds between its
    /// tokens); otherwise it is decoded and written again, compactly. `None` for text that
    /// JSON's grammar allows but a value cannot hold: nested deeper than [`MAX_DEPTH`], or a
    /// `\uD800`-style escape of half a character. Such a result was refused when results were
    /// read as values, and still is: nothing downstream meets a result it cannot read.
    pub fn from_raw(raw: Box<RawValue>) -> Option<Self> {
        let text = raw.get();
        let (openers, line_ends) = count_openers_and_line_ends(text.as_bytes());
        if nests_too_deep(text.as_bytes(), openers) {
            return None;
        }
        // A surrogate escape reads as a value only in pairs: read it now to know.
        if line_ends || has_surrogate_escape(text.as_bytes()) {
            return serde_json::from_str(text).ok().map(|value| Payload(Repr::Value(value)));
        }
        Some(Payload::checked(raw))
    }

    /// Text `serde_json` wrote from Rust data (on one line, with no escape of half a character:
    /// it writes strings as UTF-8), so only its depth is checked, as [`Payload::from_raw`]
    /// checks it; `None` when it nests too deep.
    pub fn written(raw: Box<RawValue>) -> Option<Self> {
        let text = raw.get().as_bytes();
        (!nests_too_deep(text, count_openers(text))).then(|| Payload::checked(raw))
    }

    /// Text known to pass [`Payload::from_raw`]'s checks without them: a member of a text that
    /// passed them (nested no deeper, holding no line end or surrogate escape the whole did not),
    /// or text the relay wrote from such parts and values (which `serde_json` writes on one line,
    /// with no escape of half a character).
    pub(crate) fn checked(raw: Box<RawValue>) -> Self {
        Payload(Repr::Text(raw, OnceLock::new()))
    }

    /// A tool's result as text (an adapter's answer): kept as text when it is one JSON object
    /// whose `content` is an array; the text is given back otherwise.
    pub fn tool_result(text: String) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Shape<'a> {
            #[serde(borrow)]
            content: Option<&'a RawValue>,
        }
        // Reading the shape reads (and checks) the whole text.
        let in_shape = serde_json::from_str::<Shape>(&text)
            .is_ok_and(|shape| shape.content.is_some_and(|content| content.get().starts_with('[')));
        if !in_shape {
            return Err(text);
        }
        let raw = RawValue::from_string(text).expect("read as JSON above");
        Payload::from_raw(raw).ok_or_else(|| "a tool result that cannot be read as a JSON value".to_owned())
    }

    /// The value, decoded from the text if it was not read before.
    pub fn into_value(self) -> Value {
        match self.0 {
            Repr::Text(raw, mut cell) => cell.take().map_or_else(|| decode(&raw), |value| *value),
            Repr::Value(value) => value,
        }
    }

    /// The JSON text of the result: the backend's own, or the value written.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.0 {
            Repr::Text(raw, _) => Cow::Borrowed(raw.get()),
            Repr::Value(value) => Cow::Owned(value.to_string()),
        }
    }

    /// Whether this is a JSON object (what a result must be), without decoding the text.
    pub fn is_object(&self) -> bool {
        match &self.0 {
            Repr::Text(raw, _) => raw.get().trim_start().starts_with('{'),
            Repr::Value(value) => value.is_object(),
        }
    }

    /// Whether a tool said it failed (`"isError": true`), read without building the result.
    pub fn is_tool_error(&self) -> bool {
        match &self.0 {
            Repr::Text(raw, cell) => match cell.get() {
                Some(value) => is_error(value),
                // A result that never names the member cannot set it.
                None if IS_ERROR.find(raw.get().as_bytes()).is_none() => false,
                None => serde_json::from_str::<ToolOutcome>(raw.get()).is_ok_and(|o| o.is_error == Some(true)),
            },
            Repr::Value(value) => is_error(value),
        }
    }

    /// The text as it came, while nothing has read it: what was read may have been judged (an
    /// interceptor's decision), and is then written from the value read, so that no reader
    /// downstream can take the text another way (a key sent twice) than the relay did.
    pub fn unread_text(&self) -> Option<&RawValue> {
        match &self.0 {
            Repr::Text(raw, cell) if cell.get().is_none() => Some(raw),
            _ => None,
        }
    }

    /// Written from the value from now on if anything read it (arguments an interceptor
    /// judged reach their backend as it read them: see [`Payload::unread_text`]); the text as
    /// it came otherwise.
    pub fn as_read(self) -> Self {
        match self.0 {
            Repr::Text(raw, mut cell) => match cell.take() {
                Some(read) => Payload(Repr::Value(*read)),
                None => Payload(Repr::Text(raw, cell)),
            },
            value => Payload(value),
        }
    }

    /// Whether the JSON text may hold the key `quoted` finds (its letters, digits and `_` in
    /// quotes) as an object key: it holds it, or a `\u` escape that could spell one (such a key
    /// has no other escape). Always true once decoded.
    pub fn may_hold_key(&self, quoted: &memchr::memmem::Finder<'_>) -> bool {
        let Some(raw) = self.unread_text() else { return true };
        let text = raw.get().as_bytes();
        quoted.find(text).is_some() || has_escape(text, |_| true)
    }
}

/// How deeply a kept text may nest: what `serde_json` reads into a value (128 levels) inside a
/// message's own object.
const MAX_DEPTH: usize = 127;

/// Whether `text` holds a `\uD...` escape: half of a surrogate pair, which a value can hold
/// only with its other half (searched with SIMD, as below).
fn has_surrogate_escape(text: &[u8]) -> bool {
    has_escape(text, |hex| matches!(hex.first(), Some(b'd' | b'D')))
}

/// Whether `text` holds a `\u` escape whose hex digits (and whatever follows them) `holds`:
/// found by their backslashes (rare in JSON text, and found with SIMD), without building a
/// substring searcher per text.
fn has_escape(text: &[u8], holds: impl Fn(&[u8]) -> bool) -> bool {
    memchr::memchr_iter(b'\\', text).any(|at| text.get(at + 1) == Some(&b'u') && holds(&text[at + 2..]))
}

/// The one member of a result read on every call, found by its name first.
static IS_ERROR: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"isError\""));

/// Whether `text`, holding `openers` `[`/`{` bytes, nests deeper than [`MAX_DEPTH`]: fewer
/// openers than that cannot, so the exact depth is only counted for the rare text with more.
fn nests_too_deep(text: &[u8], openers: usize) -> bool {
    openers > MAX_DEPTH && json_depth_exceeds(text, MAX_DEPTH)
}

/// How many `[`/`{` bytes `text` holds, and whether it holds a line end (searched with SIMD:
/// every kept result passes here).
fn count_openers_and_line_ends(text: &[u8]) -> (usize, bool) {
    (count_openers(text), memchr::memchr2(b'\n', b'\r', text).is_some())
}

/// How many `[`/`{` bytes `text` holds (searched with SIMD).
fn count_openers(text: &[u8]) -> usize {
    memchr::memchr2_iter(b'[', b'{', text).count()
}

/// The one member of a tool's result the relay reads on every call (for the metrics).
#[derive(serde::Deserialize)]
struct ToolOutcome {
    #[serde(rename = "isError", default, deserialize_with = "lenient_bool")]
    is_error: Option<bool>,
}

/// `isError` as a bool when it is one; anything else counts as not set (as [`is_error`] reads it).
fn lenient_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    Ok(<Value as serde::Deserialize>::deserialize(deserializer)?.as_bool())
}

fn is_error(value: &Value) -> bool {
    value.get("isError").and_then(Value::as_bool) == Some(true)
}

fn decode(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).expect("a raw value is JSON")
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload(Repr::Value(value))
    }
}

impl Deref for Payload {
    type Target = Value;

    fn deref(&self) -> &Value {
        match &self.0 {
            Repr::Text(raw, cell) => cell.get_or_init(|| Box::new(decode(raw))),
            Repr::Value(value) => value,
        }
    }
}

impl DerefMut for Payload {
    /// A result about to change is a value from then on: the backend's text no longer says it.
    fn deref_mut(&mut self) -> &mut Value {
        if let Repr::Text(..) = self.0 {
            let taken = std::mem::replace(&mut self.0, Repr::Value(Value::Null));
            self.0 = Repr::Value(Payload(taken).into_value());
        }
        match &mut self.0 {
            Repr::Value(value) => value,
            Repr::Text(..) => unreachable!("made a value above"),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Text(raw, _) => raw.serialize(serializer),
            Repr::Value(value) => value.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn text_is_written_as_it_came_until_it_changes() {
        let text = r#"{"content":[{"type":"text","text":"a"}],"n":1.50,"x":{}}"#;
        let mut payload = Payload::from_raw(raw(text)).unwrap();
        assert_eq!(serde_json::to_string(&payload).unwrap(), text);
        assert_eq!(payload["n"].to_string(), "1.50", "read without losing the number's text");
        assert_eq!(serde_json::to_string(&payload).unwrap(), text, "reading does not rewrite it");
        payload["x"] = Value::from(2);
        assert_eq!(
            serde_json::to_string(&payload).unwrap(),
            r#"{"content":[{"text":"a","type":"text"}],"n":1.50,"x":2}"#
        );
    }

    #[test]
    fn text_on_more_than_one_line_is_written_compactly() {
        let payload = Payload::from_raw(raw("{\n  \"a\": [1,\r\n 2]\n}")).unwrap();
        assert!(payload.unread_text().is_none());
        assert_eq!(serde_json::to_string(&payload).unwrap(), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn tool_errors_are_read_without_decoding() {
        for (text, failed) in [
            (r#"{"content":[],"isError":true}"#, true),
            (r#"{"content":[{"type":"text","text":"\"isError\": true"}]}"#, false),
            (r#"{"isError":"yes"}"#, false),
            (r#"{"isError":false}"#, false),
            (r#"{"content":[]}"#, false),
        ] {
            let payload = Payload::from_raw(raw(text)).unwrap();
            assert_eq!(payload.is_tool_error(), failed, "{text}");
            assert!(payload.unread_text().is_some(), "{text} was decoded");
            assert_eq!(payload.is_tool_error(), Payload::from(payload.clone().into_value()).is_tool_error());
        }
        assert!(Payload::from_raw(raw(" {}")).unwrap().is_object());
        assert!(!Payload::from_raw(raw("[1]")).unwrap().is_object());
    }

    #[test]
    fn text_once_read_is_written_from_the_value_read() {
        let unread = Payload::from_raw(raw(r#"{"k": 1, "k": 2}"#)).unwrap().as_read();
        assert_eq!(unread.text(), r#"{"k": 1, "k": 2}"#, "nothing read it: the text as it came");
        let read = Payload::from_raw(raw(r#"{"k": 1, "k": 2}"#)).unwrap();
        assert_eq!(read["k"], 2);
        let read = read.as_read();
        assert!(read.unread_text().is_none());
        assert_eq!(serde_json::to_string(&read).unwrap(), r#"{"k":2}"#, "as it was read");
    }

    #[test]
    fn text_nested_deeper_than_a_value_can_be_read_is_refused() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deepest = Payload::from_raw(raw(&nested(MAX_DEPTH))).expect("readable");
        assert_eq!(
            serde_json::to_value(&*deepest).unwrap(),
            serde_json::from_str::<Value>(&nested(MAX_DEPTH)).unwrap()
        );
        assert!(Payload::from_raw(raw(&nested(MAX_DEPTH + 1))).is_none());
        assert!(Payload::written(raw(&nested(MAX_DEPTH))).is_some());
        assert!(Payload::written(raw(&nested(MAX_DEPTH + 1))).is_none());
        let many = format!("[{}]", vec!["[]"; 500].join(","));
        assert!(Payload::from_raw(raw(&many)).is_some(), "many arrays, not deep");
        let deep_result = format!(r#"{{"content": [], "x": {}}}"#, nested(200));
        assert!(Payload::tool_result(deep_result).is_err());
    }

    #[test]
    fn half_a_character_is_refused_and_a_whole_one_read() {
        assert!(Payload::from_raw(raw(r#"{"text": "a\ud800b"}"#)).is_none(), "a lone surrogate");
        assert!(Payload::from_raw(raw(r#"{"text": "\uDE00"}"#)).is_none(), "a lone trailing surrogate");
        let pair = Payload::from_raw(raw(r#"{"text": "\ud83d\ude00"}"#)).expect("a pair is a character");
        assert_eq!(pair["text"], "\u{1F600}");
        let escaped = Payload::from_raw(raw(r#"{"text": "\\ud800"}"#)).expect("an escaped backslash, then letters");
        assert_eq!(escaped["text"], "\\ud800");
    }

    #[test]
    fn a_tool_result_is_kept_as_text_when_it_has_content() {
        let kept = Payload::tool_result(r#"{"content": [{"type": "text", "text": "x"}], "b": 1}"#.into()).unwrap();
        assert!(kept.unread_text().is_some());
        assert_eq!(kept.text(), r#"{"content": [{"type": "text", "text": "x"}], "b": 1}"#);
        for refused in [r#"{"content": "x"}"#, r#"{"other": []}"#, "[]", "not json", r#"{"content": []"#] {
            assert_eq!(Payload::tool_result(refused.into()).unwrap_err(), refused);
        }
    }
}
