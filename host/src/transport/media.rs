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

/// What an `Accept` header value says of the two formats an MCP answer comes in, read in one
/// pass (an exchange asks three questions of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// `application/json` is acceptable (named, or through `application/*` or `*/*`).
    pub json: bool,
    /// `text/event-stream` is acceptable.
    pub event_stream: bool,
    /// `text/event-stream` is named itself, not through a wildcard: the client says it handles
    /// streams specifically.
    pub names_event_stream: bool,
}

impl Accept {
    /// Reads an `Accept` header value. An empty header accepts everything (and names nothing).
    pub fn of(accept: &str) -> Accept {
        // What MCP clients send, spelled as the specification does.
        if accept == "application/json, text/event-stream" {
            return Accept { json: true, event_stream: true, names_event_stream: true };
        }
        if accept.trim().is_empty() {
            return Accept { json: true, event_stream: true, names_event_stream: false };
        }
        let mut found = Accept { json: false, event_stream: false, names_event_stream: false };
        for range in ranges(accept) {
            let any = range == "*/*";
            let json = range.eq_ignore_ascii_case("application/json");
            let stream = range.eq_ignore_ascii_case("text/event-stream");
            found.json |= any || json || range.eq_ignore_ascii_case("application/*");
            found.event_stream |= any || stream || range.eq_ignore_ascii_case("text/*");
            found.names_event_stream |= stream;
        }
        found
    }
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
        let of = Accept::of;
        let both = Accept { json: true, event_stream: true, names_event_stream: true };
        assert_eq!(of("application/json, text/event-stream"), both);
        assert_eq!(of("text/event-stream ,application/json;q=0.5"), both);
        assert_eq!(of("Application/Json, TEXT/EVENT-STREAM"), both);
        let wildcards = Accept { json: true, event_stream: true, names_event_stream: false };
        assert_eq!(of("*/*"), wildcards);
        assert_eq!(of(""), wildcards, "no Accept header accepts anything");
        assert_eq!(of("application/*, TEXT/*"), wildcards);
        assert!(!of("application/jsonfoo").json);
        assert!(!of("text/*").json && of("text/*").event_stream);
        let refused = of("text/event-stream;q=0, application/json");
        assert!(refused.json && !refused.event_stream && !refused.names_event_stream);
        assert!(!of("application/json").event_stream);
    }
}
