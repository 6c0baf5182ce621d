//! What a stateless (2026-07-28) request's headers must say: its version, and its method and
//! name again (`Mcp-Method`, `Mcp-Name`), agreeing with the body before anything runs.

use axum::http::HeaderMap;
use base64::Engine;

use super::http::{SESSION_HEADER, VERSION_HEADER};
use crate::mcp::envelope::{self, Envelope};
use crate::mcp::{self, Request, RpcError, error_codes};

const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

/// Whether a request without a session speaks a stateless version (by its version header;
/// a version the relay does not know is treated as stateless and refused with the list).
pub fn is_stateless(headers: &HeaderMap) -> bool {
    let Some(version) = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()) else { return false };
    // A 2026 request is served as such even if it carries an `Mcp-Session-Id` (ignored); an
    // unknown version with a session goes to that session (which refuses the version).
    !mcp::version::HANDSHAKE_ERA.contains(&version)
        && (mcp::version::is_stateless(version) || headers.get(SESSION_HEADER).is_none())
}

/// The checks a stateless request passes before anything runs (the 2026-07-28 rules): each
/// header at most once, the envelope complete, and `MCP-Protocol-Version`, `Mcp-Method` and
/// `Mcp-Name` agreeing with the body. Returns the envelope.
pub fn check(headers: &HeaderMap, request: &Request) -> Result<Envelope, RpcError> {
    let mismatch = |message: String| RpcError::new(error_codes::HEADER_MISMATCH, message);
    for name in [VERSION_HEADER, METHOD_HEADER, NAME_HEADER] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(mismatch(format!("{name} header appears more than once")));
        }
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Agreement first, support second: a header naming another version than the body is a
    // mismatch whatever either names.
    if let Some(body) = envelope::requested_version(request.params.as_deref())
        && header(VERSION_HEADER) != Some(body)
    {
        return Err(mismatch(format!(
            "{VERSION_HEADER} header does not match the request envelope's protocol version"
        )));
    }
    let envelope = Envelope::read(request.params.as_deref())?;
    if header(METHOD_HEADER) != Some(request.method.as_str()) {
        return Err(mismatch(format!("{METHOD_HEADER} header does not match the request body's method")));
    }
    let name = match header(NAME_HEADER).map(decode_header_value) {
        Some(None) => return Err(mismatch(format!("{NAME_HEADER} header is not valid =?base64?…?= encoding"))),
        Some(Some(name)) => Some(name),
        None => None,
    };
    if let Some(expected) = target_of(request)
        && name.as_deref() != Some(expected)
    {
        let field = if request.method == "resources/read" { "uri" } else { "name" };
        return Err(mismatch(format!("{NAME_HEADER} header does not match the request body's '{field}' parameter")));
    }
    Ok(envelope)
}

/// What a request is about, as `Mcp-Name` repeats it: the tool or prompt name, or the URI.
pub(super) fn target_of(request: &Request) -> Option<&str> {
    let field = match request.method.as_str() {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    request.params.as_ref()?.get(field)?.as_str()
}

/// Header values that are not plain printable ASCII travel as `=?base64?<utf-8 bytes>?=`.
/// A header value as sent, or decoded from `=?base64?…?=`; `None` when that encoding is broken.
fn decode_header_value(value: &str) -> Option<String> {
    let Some(encoded) = value.strip_prefix("=?base64?").and_then(|rest| rest.strip_suffix("?=")) else {
        return Some(value.to_owned());
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}
