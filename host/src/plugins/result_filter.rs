//! The results an interceptor's `on-result` need not see (`verdict.pass-results-without`): the
//! hook names the literals every one of its rules needs, and a result whose JSON text holds
//! none of them passes without a call. A call costs the host tens of microseconds (the entry,
//! lowering the result, the guest parsing it); a search of a KiB costs well under one.
//!
//! The search is over the JSON text, the hook reads the decoded strings: a literal the text
//! spells with an escape (`\u0040` for `@`, `\/` for `/`) would not be found in the text. So the
//! escapes that could spell part of a literal are searched for too, and a text that has one
//! is shown to the hook: any `\u`, and the short escapes of the characters the literals hold.

use aho_corasick::AhoCorasick;

use super::loaded::Version;
use super::registry::Slot;
use crate::config::World;

/// Literals a hook may name.
pub const MAX_LITERALS: usize = 1024;
/// The longest literal.
pub const MAX_LITERAL_LEN: usize = 256;

/// One hook's literals, compiled into one search.
#[derive(Debug)]
pub struct ResultFilter {
    /// As the hook named them (a repeated declaration is recognised and not compiled again).
    literals: Vec<String>,
    /// The literals and the escapes that could spell part of one; `None` for an empty list.
    search: Option<AhoCorasick>,
}

/// Why a list of literals was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    /// More than [`MAX_LITERALS`].
    #[error("names {0} literals (at most {MAX_LITERALS})")]
    TooMany(usize),
    /// An empty literal or one longer than [`MAX_LITERAL_LEN`].
    #[error("names a literal of {0} bytes (1 to {MAX_LITERAL_LEN})")]
    BadLength(usize),
}

/// The JSON escapes other than `\uXXXX`, by the character they stand for.
const SHORT_ESCAPES: [(char, &str); 8] = [
    ('"', "\\\""),
    ('\\', "\\\\"),
    ('/', "\\/"),
    ('\u{8}', "\\b"),
    ('\u{c}', "\\f"),
    ('\n', "\\n"),
    ('\r', "\\r"),
    ('\t', "\\t"),
];

impl ResultFilter {
    /// Compiles `literals`, or says why it will not.
    pub fn new(literals: Vec<String>) -> Result<ResultFilter, Rejected> {
        if literals.len() > MAX_LITERALS {
            return Err(Rejected::TooMany(literals.len()));
        }
        if let Some(bad) = literals.iter().find(|l| l.is_empty() || l.len() > MAX_LITERAL_LEN) {
            return Err(Rejected::BadLength(bad.len()));
        }
        let search = (!literals.is_empty()).then(|| {
            let mut needles: Vec<&str> = literals.iter().map(String::as_str).collect();
            needles.push("\\u");
            for (character, escape) in SHORT_ESCAPES {
                if literals.iter().any(|l| l.contains(character)) {
                    needles.push(escape);
                }
            }
            AhoCorasick::new(needles).expect("at most 1033 needles of at most 256 bytes compile")
        });
        Ok(ResultFilter { literals, search })
    }

    /// Whether this is the filter `literals` would compile to.
    pub fn is(&self, literals: &[String]) -> bool {
        self.literals == literals
    }

    /// Whether the hook must see `text` (a result's JSON): it holds a literal, or an escape that
    /// could spell part of one.
    pub fn concerns(&self, text: &str) -> bool {
        self.search.as_ref().is_some_and(|search| search.is_match(text))
    }
}

impl Slot {
    /// Keeps the literals a call of `version` named for its result hook, or logs why not.
    pub(super) fn pass_results_without(&self, version: &Version, literals: Vec<String>) {
        let plugin = &self.config.name;
        if self.config.world != World::Interceptor {
            tracing::warn!(plugin = %plugin, "verdict.pass-results-without ignored: not an interceptor");
        } else if let Err(rejected) = version.pass_results_without(literals) {
            tracing::warn!(plugin = %plugin, "verdict.pass-results-without ignored: {rejected}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(literals: &[&str]) -> ResultFilter {
        ResultFilter::new(literals.iter().map(|l| l.to_string()).collect()).unwrap()
    }

    #[test]
    fn a_result_without_the_literals_need_not_be_seen() {
        let emails = filter(&["@", "sk-"]);
        assert!(!emails.concerns(r#"{"content":[{"type":"text","text":"xxxx\nline two\t\"quoted\""}]}"#));
        assert!(emails.concerns(r#"{"content":[{"type":"text","text":"mail bob@example.com"}]}"#));
        assert!(emails.concerns(r#"{"content":[{"type":"text","text":"key sk-abc"}]}"#));
        // An empty list: no result needs the hook.
        assert!(!filter(&[]).concerns("sk-@"));
    }

    #[test]
    fn an_escape_that_could_spell_a_literal_is_shown_to_the_hook() {
        let emails = filter(&["@"]);
        // `\u0040` is `@` to the hook's JSON parser; any `\u` could be part of a literal.
        assert!(emails.concerns(r#"{"text":"bob\u0040example.com"}"#));
        assert!(emails.concerns(r#"{"text":"caf\u00e9"}"#));
        // `\n` cannot be part of `@`.
        assert!(!emails.concerns(r#"{"text":"a\nb"}"#));
        // A literal with a newline or a slash: its short escapes are searched for too.
        let lines = filter(&["BEGIN\nKEY", "a/b"]);
        assert!(lines.concerns(r#"{"text":"BEGIN\nKEY"}"#));
        assert!(lines.concerns(r#"{"text":"a\/b"}"#));
        assert!(!lines.concerns(r#"{"text":"BEGIN KEY ab"}"#));
        let quotes = filter(&["say \"hi\""]);
        assert!(quotes.concerns(r#"{"text":"say \"hi\""}"#));
    }

    #[test]
    fn lists_out_of_bounds_are_rejected() {
        let many = vec!["x".to_string(); MAX_LITERALS + 1];
        assert_eq!(ResultFilter::new(many).unwrap_err(), Rejected::TooMany(MAX_LITERALS + 1));
        assert_eq!(ResultFilter::new(vec![String::new()]).unwrap_err(), Rejected::BadLength(0));
        let long = "x".repeat(MAX_LITERAL_LEN + 1);
        assert_eq!(ResultFilter::new(vec![long]).unwrap_err(), Rejected::BadLength(MAX_LITERAL_LEN + 1));
        let most = vec!["y".repeat(MAX_LITERAL_LEN); MAX_LITERALS];
        assert!(ResultFilter::new(most.clone()).unwrap().is(&most));
    }
}
