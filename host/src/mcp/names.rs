//! The one rule for the names the relay gives tools and prompts it exposes: characters from
//! `[A-Za-z0-9_.-]`, at most 128 of them. The catalog rewrites backends' names to fit it, and
//! an interceptor's rename must fit it already.

/// Longest name the relay exposes.
pub const MAX_NAME: usize = 128;

/// What separates a source's name from an item's in a prefixed catalog name
/// (`github__search`: an item whose name another source offers too).
pub const PREFIX_SEPARATOR: &str = "__";

/// `name` without `source`'s prefix when it carries it: the item's own name, as it was exposed
/// before another source offered it too.
pub fn unprefixed<'a>(name: &'a str, source: &str) -> Option<&'a str> {
    name.strip_prefix(source)?.strip_prefix(PREFIX_SEPARATOR)
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Whether `name` fits the rule as it is.
pub fn fits(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len()) && name.chars().all(allowed)
}

/// `name` made to fit: other characters become `_`, and it is cut to [`MAX_NAME`].
pub fn sanitize(name: &str) -> String {
    cut(name.chars().map(|c| if allowed(c) { c } else { '_' }).collect())
}

/// `name` cut to [`MAX_NAME`] bytes, or fewer where a character would be split.
pub fn cut(mut name: String) -> String {
    name.truncate(name.floor_char_boundary(MAX_NAME));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_or_are_made_to() {
        assert!(fits("search_v2.beta-1"));
        assert!(!fits("") && !fits("has space") && !fits(&"x".repeat(129)) && !fits("relay://x"));
        assert_eq!(sanitize("has space/é"), "has_space__");
        assert_eq!(sanitize(&"t".repeat(200)).len(), MAX_NAME);
        assert_eq!(cut("é".repeat(100)).len(), MAX_NAME, "cut at a character's boundary");
        assert_eq!(cut(format!("x{}", "é".repeat(100))).len(), MAX_NAME - 1);
    }
}
