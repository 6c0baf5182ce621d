//! The 2026-07-28 request envelope: with no `initialize`, every request carries the protocol
//! version, the client's capabilities and identity in `params._meta`, and every result says
//! what kind of result it is and how long it may be cached.

use serde_json::{Map, Value, json};

use super::{RpcError, error_codes, version};

const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// What a stateless request says about its client.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The protocol version this one request speaks.
    pub protocol_version: String,
    /// `clientInfo.name`, for logs.
    pub client_name: Option<String>,
    /// What the client can do (elicitation, sampling, roots), as sent.
    pub capabilities: Value,
    /// The least severe log level the client wants as `notifications/message`, if any.
    pub log_level: Option<String>,
}

impl Envelope {
    /// Reads the envelope from a request's params, refusing one without the required keys
    /// (-32602) or naming a version the relay does not speak (-32022, with the ones it does).
    pub fn read(params: Option<&Value>) -> Result<Self, RpcError> {
        let meta = match params.and_then(|p| p.get("_meta")) {
            Some(Value::Object(meta)) => meta,
            _ => {
                return Err(RpcError::new(
                    error_codes::INVALID_PARAMS,
                    format!("params._meta must be an object carrying {PROTOCOL_VERSION} and {CLIENT_CAPABILITIES}"),
                ));
            }
        };
        let missing: Vec<&str> =
            [PROTOCOL_VERSION, CLIENT_CAPABILITIES].into_iter().filter(|key| !meta.contains_key(*key)).collect();
        if !missing.is_empty() {
            return Err(RpcError::new(
                error_codes::INVALID_PARAMS,
                format!("params._meta is missing the required envelope key(s): {}", missing.join(", ")),
            ));
        }
        let Some(requested) = meta[PROTOCOL_VERSION].as_str() else {
            return Err(RpcError::new(error_codes::INVALID_PARAMS, format!("{PROTOCOL_VERSION} must be a string")));
        };
        if !version::is_stateless(requested) {
            return Err(unsupported(requested));
        }
        Ok(Self {
            protocol_version: requested.to_owned(),
            client_name: meta.get(CLIENT_INFO).and_then(|i| i.get("name")).and_then(Value::as_str).map(str::to_owned),
            capabilities: meta[CLIENT_CAPABILITIES].clone(),
            log_level: meta.get(LOG_LEVEL).and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// The -32022 refusal of a version, listing every version the relay speaks (as
/// `server/discover` does).
pub fn unsupported(requested: &str) -> RpcError {
    let supported: Vec<&str> = version::STATELESS.iter().chain(version::SUPPORTED).copied().collect();
    RpcError::new(error_codes::UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version")
        .with_data(json!({"supported": supported, "requested": requested}))
}

/// The protocol version a request's envelope names, if it names one as a string.
pub fn requested_version(params: Option<&Value>) -> Option<&str> {
    params?.get("_meta")?.get(PROTOCOL_VERSION)?.as_str()
}

/// Where a newline client puts its bearer token (`params._meta.authorization`).
pub const AUTHORIZATION: &str = "authorization";

/// The client's credential in a request's params: `_meta.authorization` in any letter case
/// (the first such key, when a client sends several).
pub fn credential(params: Option<&Value>) -> Option<&str> {
    let meta = params?.get("_meta")?.as_object()?;
    meta.iter().find(|(key, _)| key.eq_ignore_ascii_case(AUTHORIZATION)).and_then(|(_, v)| v.as_str())
}

/// Removes the client's credential from a request's params, so no backend ever sees it (the
/// MCP authorization spec forbids token passthrough): every `_meta` key that spells
/// `authorization` in any letter case. An emptied `_meta` goes too.
pub fn strip_credentials(params: &mut Option<Value>) {
    let Some(Value::Object(params)) = params else { return };
    let Some(meta) = params.remove("_meta") else { return };
    if let Some(meta) = without_credentials(meta) {
        params.insert("_meta".into(), meta);
    }
}

/// A `_meta` without the client's credential ([`strip_credentials`]); `None` when that leaves
/// it empty.
pub fn without_credentials(meta: Value) -> Option<Value> {
    let Value::Object(mut meta) = meta else { return Some(meta) };
    let before = meta.len();
    meta.retain(|key, _| !key.eq_ignore_ascii_case(AUTHORIZATION));
    (meta.len() == before || !meta.is_empty()).then_some(Value::Object(meta))
}

/// Removes the envelope's keys from a `_meta` before it travels on to an upstream that speaks
/// an older version (they describe the client's hop, not the upstream's). Other keys, the
/// protocol's own included, pass.
pub fn strip(meta: Option<Value>) -> Option<Value> {
    const ENVELOPE: [&str; 4] = [PROTOCOL_VERSION, CLIENT_CAPABILITIES, CLIENT_INFO, LOG_LEVEL];
    match meta {
        Some(Value::Object(meta)) => {
            let kept: Map<String, Value> =
                meta.into_iter().filter(|(key, _)| !ENVELOPE.contains(&key.as_str())).collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        other => other,
    }
}

/// How the relay names itself to clients (`serverInfo`).
pub fn server_info() -> Value {
    json!({"name": "relay", "title": "MCP relay", "version": env!("CARGO_PKG_VERSION")})
}

/// Marks a result of `method` as a complete 2026-07-28 result: `resultType`, the caching fields
/// the cacheable methods need (the relay's catalog changes under clients, so nothing is cached)
/// and the relay's identity in `_meta`.
pub fn stamp(method: &str, result: &mut Value, server_info: &Value) {
    let Value::Object(fields) = result else { return };
    fields.entry("resultType").or_insert_with(|| json!("complete"));
    let cacheable = matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    );
    if cacheable && fields.get("resultType").and_then(Value::as_str) == Some("complete") {
        fields.entry("ttlMs").or_insert_with(|| json!(0));
        fields.entry("cacheScope").or_insert_with(|| json!("private"));
    }
    let meta = fields.entry("_meta").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        meta.insert(SERVER_INFO.to_owned(), server_info.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(meta: Value) -> Value {
        json!({"name": "echo", "_meta": meta})
    }

    #[test]
    fn reads_a_complete_envelope() {
        let envelope = Envelope::read(Some(&params(json!({
            PROTOCOL_VERSION: "2026-07-28",
            CLIENT_CAPABILITIES: {"elicitation": {}},
            CLIENT_INFO: {"name": "probe", "version": "1"},
            LOG_LEVEL: "info",
        }))))
        .unwrap();
        assert_eq!(envelope.protocol_version, "2026-07-28");
        assert_eq!(envelope.client_name.as_deref(), Some("probe"));
        assert_eq!(envelope.log_level.as_deref(), Some("info"));
    }

    #[test]
    fn refuses_missing_keys_and_unknown_versions() {
        let missing = Envelope::read(Some(&params(json!({PROTOCOL_VERSION: "2026-07-28"})))).unwrap_err();
        assert_eq!(missing.code, error_codes::INVALID_PARAMS);
        assert!(missing.message.contains(CLIENT_CAPABILITIES));
        assert_eq!(Envelope::read(None).unwrap_err().code, error_codes::INVALID_PARAMS);
        let future = Envelope::read(Some(&params(json!({PROTOCOL_VERSION: "2099-01-01", CLIENT_CAPABILITIES: {}}))))
            .unwrap_err();
        assert_eq!(future.code, error_codes::UNSUPPORTED_PROTOCOL_VERSION);
        let supported = future.data.unwrap()["supported"].clone();
        assert_eq!(supported[0], "2026-07-28", "every version, the stateless first: {supported}");
        assert!(supported.as_array().unwrap().contains(&json!("2025-11-25")), "{supported}");
    }

    #[test]
    fn strips_only_the_envelope() {
        let meta =
            json!({PROTOCOL_VERSION: "2026-07-28", "progressToken": 7, "io.modelcontextprotocol/related-task": {}});
        assert_eq!(strip(Some(meta)), Some(json!({"progressToken": 7, "io.modelcontextprotocol/related-task": {}})));
        assert_eq!(strip(Some(json!({PROTOCOL_VERSION: "2026-07-28"}))), None);
    }

    #[test]
    fn stamps_cacheable_results_but_not_input_requests() {
        let info = json!({"name": "relay"});
        let mut list = json!({"tools": []});
        stamp("tools/list", &mut list, &info);
        assert_eq!(list["resultType"], "complete");
        assert_eq!(list["ttlMs"], 0);
        assert_eq!(list["cacheScope"], "private");
        assert_eq!(list["_meta"][SERVER_INFO], info);
        let mut call = json!({"content": []});
        stamp("tools/call", &mut call, &info);
        assert!(call.get("ttlMs").is_none());
        let mut asking = json!({"resultType": "input_required", "requestState": "x"});
        stamp("resources/read", &mut asking, &info);
        assert!(asking.get("ttlMs").is_none());
    }
}
