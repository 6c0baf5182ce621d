//! Media types in `Content-Type` and `Accept`, compared as RFC 9110 says: case-insensitively,
//! whole types only (`application/jsonfoo` is not `application/json`), parameters aside, and
//! `Accept` ranges (`*/*`, `text/*`) and `q=0` honoured.

/// `Content-Type: application/json` as a header value, made once (a `&str` is copied into a new
/// value on every response).
pub const APPLICATION_JSON: axum::http::HeaderValue = axum::http::HeaderValue::from_static("application/json");

/// Whether a `Content-Type` value is `wanted` (a lower-case `type/subtype`).
pub fn is(content_type: &str, wanted: &str) -> bool {
    content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(wanted)
}

/// Whether an `Accept` header value accepts `wanted`. An empty header accepts everything.
pub fn accepts(accept: &str, wanted: &str) -> bool {
    if accept.trim().is_empty() {
        return true;
    }
    let (kind, _) = wanted.split_once('/').unwrap_or((wanted, ""));
    let kind_range = |range: &str| range.strip_suffix("/*").is_some_and(|k| k.eq_ignore_ascii_case(kind));
    ranges(accept).any(|range| range == "*/*" || range.eq_ignore_ascii_case(wanted) || kind_range(range))
}

/// Whether an `Accept` header value names `wanted` itself (not through a wildcard): the
/// client says it handles that format specifically.
pub fn names(accept: &str, wanted: &str) -> bool {
    ranges(accept).any(|range| range.eq_ignore_ascii_case(wanted))
}

/// The media ranges of an `Accept` value that are acceptable (q above 0), as written (compare
/// them case-insensitively).
fn ranges(accept: &str) -> impl Iterator<Item = &str> + '_ {
    accept.split(',').filter_map(|item| {
        let mut parts = item.split(';');
        let range = parts.next()?.trim();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        (!range.is_empty() && !refused).then_some(range)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_compare_case_insensitively_and_whole() {
        assert!(is("APPLICATION/JSON", "application/json"));
        assert!(is("application/json; charset=utf-8", "application/json"));
        assert!(!is("application/jsonfoo", "application/json"));
        assert!(!is("", "application/json"));
    }

    #[test]
    fn accept_honours_ranges_and_q_zero() {
        assert!(accepts("application/json, text/event-stream", "text/event-stream"));
        assert!(accepts("*/*", "application/json") && accepts("text/*", "text/event-stream"));
        assert!(accepts("", "application/json"), "no Accept header accepts anything");
        assert!(!accepts("application/jsonfoo", "application/json"));
        assert!(!accepts("text/event-stream;q=0, application/json", "text/event-stream"));
        assert!(accepts("TEXT/*", "text/event-stream") && !accepts("text/*", "application/json"));
        assert!(names("Application/Json, TEXT/EVENT-STREAM", "text/event-stream"));
        assert!(!names("*/*", "text/event-stream"));
    }
}
