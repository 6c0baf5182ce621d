//! The results an interceptor's `on-result` need not see (`verdict.pass-results-without`): the
//! hook names the literals every one of its rules needs, and a result whose JSON text holds
//! none of them passes without a call. A call costs the host tens of microseconds (the entry,
//! lowering the result, the guest parsing it); a search of a KiB costs well under one.
//!
//! The search is over the JSON text, the hook reads the decoded strings: a literal the text
//! spells with an escape (`\u0040` for `@`, `\/` for `/`) would not be found in the text. So the
//! escapes that could spell part of a literal are searched for too, and a text that has one
//! is shown to the hook: any `\u`, and the short escapes of the characters the literals hold.

use aho_corasick::{AhoCorasick, MatchKind};

use super::loaded::Version;
use super::registry::Slot;
use crate::config::World;

thread_local! {
    /// A result's text in lower case, for the search (reused: a call allocates nothing).
    static LOWERED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most of [`LOWERED`] a thread keeps between results (a larger one is searched in a
/// buffer given back after).
const KEPT_BUFFER: usize = 64 << 10;

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
    search: Option<Needles>,
}

/// What [`ResultFilter`] searches for, in lower case: the one-byte needles (an `@`) by
/// `memchr`, the others together by Aho-Corasick (whose SIMD search, Teddy, takes a few dozen
/// needles of two bytes and more, and gives up on one-byte ones).
#[derive(Debug)]
struct Needles {
    bytes: Vec<u8>,
    longer: Option<AhoCorasick>,
}

impl Needles {
    fn new(needles: Vec<String>) -> Needles {
        let (bytes, longer): (Vec<String>, Vec<String>) = fewest(needles).into_iter().partition(|n| n.len() == 1);
        // Leftmost-first: the semantics Teddy supports; only whether one is found matters.
        let longer = (!longer.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(longer)
                .expect("at most 1033 needles of at most 256 bytes compile")
        });
        Needles { bytes: bytes.into_iter().map(|b| b.as_bytes()[0]).collect(), longer }
    }

    /// Whether `text` (in lower case) holds one.
    fn found_in(&self, text: &[u8]) -> bool {
        let byte = match *self.bytes.as_slice() {
            [] => false,
            [a] => memchr::memchr(a, text).is_some(),
            [a, b] => memchr::memchr2(a, b, text).is_some(),
            [a, b, c] => memchr::memchr3(a, b, c, text).is_some(),
            ref many => text.iter().any(|byte| many.contains(byte)),
        };
        byte || self.longer.as_ref().is_some_and(|longer| longer.is_match(text))
    }
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
            let mut needles: Vec<String> = literals.iter().map(|l| l.to_ascii_lowercase()).collect();
            needles.push("\\u".into());
            for (character, escape) in SHORT_ESCAPES {
                if literals.iter().any(|l| l.contains(character)) {
                    needles.push(escape.into());
                }
            }
            Needles::new(needles)
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
        let Some(search) = &self.search else { return false };
        // The needles are lower case; so is the copy searched (a KiB copies in well under a
        // microsecond, and the search then runs on SIMD).
        LOWERED.with_borrow_mut(|lowered| {
            lowered.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
            let found = search.found_in(lowered);
            // Left empty for the next result, and no larger than KEPT_BUFFER.
            lowered.clear();
            lowered.shrink_to(KEPT_BUFFER);
            found
        })
    }
}

/// `needles` without those that hold another one (a text that holds `sk-ant-` holds `sk-`)
/// or repeat one: a search for a few dozen needles runs on SIMD (Teddy), one for a hundred
/// (the case variants a case-insensitive rule names) byte by byte. `needles` are in lower case
/// and searched for in the text in lower case: ASCII-case-insensitively, which only shows the
/// hook more results, never fewer.
fn fewest(mut needles: Vec<String>) -> Vec<String> {
    needles.sort_by_key(String::len);
    let mut kept: Vec<String> = Vec::with_capacity(needles.len());
    for needle in needles {
        if !kept.iter().any(|shorter| needle.contains(shorter.as_str())) {
            kept.push(needle);
        }
    }
    kept
}

impl Slot {
    /// Keeps the literals a call of `version` named for its result hook, or logs why not. The
    /// same list again (each instance names it once) is not compiled again.
    pub(super) fn pass_results_without(&self, version: &Version, literals: Vec<String>) {
        let plugin = &self.config.name;
        if self.config.world != World::Interceptor {
            tracing::warn!(plugin = %plugin, "verdict.pass-results-without ignored: not an interceptor");
            return;
        }
        if version.results.load().as_ref().is_some_and(|current| current.is(&literals)) {
            return;
        }
        match ResultFilter::new(literals) {
            Ok(filter) => version.results.store(Some(std::sync::Arc::new(filter))),
            Err(rejected) => tracing::warn!(plugin = %plugin, "verdict.pass-results-without ignored: {rejected}"),
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
    fn case_variants_and_longer_literals_fold_into_fewer_needles() {
        let variants: Vec<String> = ["bearer", "Bearer", "BEARER", "bEaReR", "sk-", "sk-ant-", "sk-proj-", "@"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(fewest(variants.iter().map(|v| v.to_ascii_lowercase()).collect()), ["@", "sk-", "bearer"]);
        let filter = ResultFilter::new(variants).unwrap();
        assert!(filter.concerns(r#"{"text":"Authorization: BeArEr abc"}"#));
        assert!(filter.concerns(r#"{"text":"SK-ANT-xyz"}"#), "case-insensitive: more results shown, never fewer");
        assert!(!filter.concerns(r#"{"text":"nothing"}"#));
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
