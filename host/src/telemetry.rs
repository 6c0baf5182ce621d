//! Logging set-up: `tracing` records to stderr, human-readable or JSON.
//!
//! Record fields carry text from clients, backends and plugins (tool names, principals,
//! backend stderr, plugin messages). In the human format every field and message is written
//! with control characters escaped (`\n`, `\r`, `\x1b`, ...), so no such text can start a line
//! of its own or drive a terminal: one record is always one line. A field's value is quoted
//! (`tool="a b level=ERROR"`, with `"` and `\` escaped) whenever it holds a space, `=`, a quote
//! or a backslash, or is empty, so no value can pass for another field. The JSON format escapes
//! them as JSON does.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;
use crate::log_forward::ForwardLayer;

/// Installs the global subscriber: stderr (`RUST_LOG` wins over `level`) and, when given, the
/// log forwarder with its own level (the relay's records only), each filtered on its own.
pub fn init(format: LogFormat, level: Option<&str>, forward: Option<(ForwardLayer, tracing::Level)>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let stderr: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Human => fmt.fmt_fields(HumanFields).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).boxed(),
    };
    let forward = forward.map(|(layer, level)| layer.with_filter(Targets::new().with_target("relay", level)));
    let _ = tracing_subscriber::registry().with(stderr.with_filter(filter)).with(forward).try_init();
}

/// The human format's fields: `message` as it is, then `name=value` pairs, each value escaped
/// and, where it could be misread, quoted.
struct HumanFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for HumanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = HumanVisitor { writer, result: Ok(()), first: true };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct HumanVisitor<'writer> {
    writer: tracing_subscriber::fmt::format::Writer<'writer>,
    result: std::fmt::Result,
    first: bool,
}

impl HumanVisitor<'_> {
    /// Writes one field; `always_quote` for string values (quoted as they always were).
    fn write(&mut self, name: &str, text: &str, always_quote: bool) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { " " };
        let text = escape_controls(text);
        self.result = match name {
            "message" => write!(self.writer, "{separator}{text}"),
            name if always_quote => write!(self.writer, "{separator}{name}={}", quote(&text)),
            name => write!(self.writer, "{separator}{name}={}", quote_field(&text)),
        };
    }
}

impl tracing::field::Visit for HumanVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field.name(), value, true);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field.name(), &format!("{value:?}"), false);
    }
}

/// A field value as written: quoted (inner `"` and `\` escaped) when it is empty or holds a
/// space, `=`, `"` or `\`; as it is otherwise.
pub fn quote_field(text: &str) -> std::borrow::Cow<'_, str> {
    let ambiguous = text.is_empty() || text.chars().any(|c| c.is_whitespace() || matches!(c, '=' | '"' | '\\'));
    if !ambiguous {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(quote(text))
}

/// `text` in quotes, inner `"` and `\` escaped.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `text` with every control character written as an escape (`\n`, `\r`, `\t`, `\x1b`).
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_line_or_reach_the_terminal() {
        let forged = "nope\n2026-11-30T00:00:00Z INFO relay::auth: outcome=\"ok\"\r\x1b[2J";
        let escaped = escape_controls(forged);
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
        assert_eq!(escaped, "nope\\n2026-11-30T00:00:00Z INFO relay::auth: outcome=\"ok\"\\r\\x1b[2J");
        assert_eq!(escape_controls("plain"), "plain");
    }

    #[test]
    fn a_value_cannot_pass_for_another_field() {
        assert_eq!(quote_field("echo"), "echo");
        assert_eq!(quote_field("a b level=ERROR"), "\"a b level=ERROR\"");
        assert_eq!(quote_field("x\" y=\"z"), "\"x\\\" y=\\\"z\"");
        assert_eq!(quote_field(""), "\"\"");
    }
}
