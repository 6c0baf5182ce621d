//! The rules every HTTP request on the main port passes before its route, and what every
//! answer gets after it, in one plain call per request. They used to be four tower layers
//! (and two more for the connection's peer), each of which boxed the request's future and
//! cloned its service: some 30 allocations per request on the hot path, for checks that
//! read a few headers.
//!
//! Before the route, in this order: the browser rules ([`BrowserRules`]: `Origin` and
//! `Host`), the head size limit (`limits.max_header_bytes`: 431, counted), and no bearer token
//! in the query string (OAuth 2.1: URLs end up in logs). After the route: a bearer challenge
//! (401, and 403 for a missing scope) points at the protected resource metadata.

use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::TransportState;

/// The answer to a request that breaks one of the rules, if it does.
pub fn refusal<B>(state: &TransportState, request: &Request<B>) -> Option<Response> {
    if let Some(refusal) = super::browser_guard::refuse(&state.browser, request) {
        return Some(refusal);
    }
    let max = state.sessions_factory.limits.max_header_bytes;
    let head = head_bytes(request);
    if head > max {
        crate::limit_log::limit_refused("max_header_bytes", format_args!("a request head of {head} bytes"));
        let message = format!("request headers are larger than {max} bytes (limits.max_header_bytes)");
        return Some((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message).into_response());
    }
    if token_in_query(request.uri().query()) {
        let message = "bearer tokens are accepted in the Authorization header only";
        return Some((StatusCode::BAD_REQUEST, message).into_response());
    }
    None
}

/// The answer as the client gets it: a bearer challenge names the protected resource metadata
/// and the supported scopes, when `oauth` is configured.
pub fn finish(state: &TransportState, mut response: Response) -> Response {
    if let Some(resource) = &state.oauth
        && let Some(base) = response.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok())
        && base.starts_with("Bearer")
        && let Ok(value) = HeaderValue::from_str(&resource.challenge(base))
    {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The size of a request's head as the limit counts it: the target and every header line.
fn head_bytes<B>(request: &Request<B>) -> usize {
    let target = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    target + headers
}

/// Whether a query string carries an `access_token` parameter.
fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|pair| pair.split('=').next() == Some("access_token")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_in_the_query_is_found_by_its_parameter_name_only() {
        assert!(token_in_query(Some("access_token=abc")));
        assert!(token_in_query(Some("a=1&access_token")));
        assert!(!token_in_query(Some("my_access_token=abc")));
        assert!(!token_in_query(Some("a=access_token")));
        assert!(!token_in_query(None));
    }

    #[test]
    fn the_head_counts_the_target_and_each_header_line() {
        let request = Request::get("/mcp?x=1").header("a", "bc").body(()).unwrap();
        assert_eq!(head_bytes(&request), "/mcp?x=1".len() + 1 + 2 + 4);
    }
}
