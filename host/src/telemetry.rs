//! Logging set-up: `tracing` records to stderr, human-readable or JSON.
//!
//! Record fields carry text from clients, backends and plugins (tool names, principals,
//! backend stderr, plugin messages). In the human format every field and message is written
//! with control characters escaped (`\n`, `\r`, `\x1b`, ...), so no such text can start a line
//! of its own or drive a terminal: one record is always one line. The JSON format escapes them
//! as JSON does.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` wins over `level`.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
                    let text = escape_controls(&format!("{value:?}"));
                    match field.name() {
                        "message" => write!(writer, "{text}"),
                        name => write!(writer, "{name}={text}"),
                    }
                })
                .delimited(" "),
            )
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
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
}
