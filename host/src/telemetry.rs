//! Logging set-up: `tracing` records to stderr, human-readable or JSON.
//!
//! Record fields carry text from clients, backends and plugins (tool names, principals,
//! backend stderr, plugin messages). In the human format every field and message is written
//! with control characters escaped (`\n`, `\r`, `\x1b`, ...), so no such text can start a line
//! of its own or drive a terminal: one record is always one line. The JSON format escapes them
//! as JSON does.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing_subscriber::field::MakeExt;
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
        LogFormat::Human => fmt
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
            .boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).boxed(),
    };
    let forward = forward.map(|(layer, level)| layer.with_filter(Targets::new().with_target("relay", level)));
    let _ = tracing_subscriber::registry().with(stderr.with_filter(filter)).with(forward).try_init();
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
