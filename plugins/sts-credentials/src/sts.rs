//! The STS's contract, apart from the transport: the plugin's configuration, the request body
//! for one caller, and what each answer means. Native unit tests run it all.

use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's `config` in relay.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where to POST (`https://`, or `http://` for a loopback STS); the host must be in the
    /// plugin's `grants.http`.
    pub url: String,
    /// A granted environment variable holding the relay's own key at the STS, sent as
    /// `Authorization: Bearer <key>`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The audience asked for; default: the backend's name.
    #[serde(default)]
    pub audience: Option<String>,
    /// Whether the caller's own bearer token goes to the STS as `subject_token` (for an STS
    /// that verifies it). Off by default: the STS then trusts the relay's word for who calls.
    #[serde(default)]
    pub send_subject_token: bool,
    /// The member of the answer that holds the issued token.
    #[serde(default = "access_token")]
    pub token_field: String,
}

fn access_token() -> String {
    "access_token".into()
}

impl Settings {
    /// Reads the configuration JSON, refusing what cannot work.
    pub fn parse(json: &str) -> Result<Settings, String> {
        let settings: Settings =
            serde_json::from_str(json).map_err(|e| format!("sts-credentials configuration: {e}"))?;
        if !secure_or_loopback(&settings.url) {
            return Err("sts-credentials configuration: url must be https:// (http:// only on loopback)".into());
        }
        Ok(settings)
    }
}

/// Whether `url` is `https://`, or `http://` to `localhost`, `127.0.0.1` or `[::1]`, read from
/// the parsed URL's host (the relay's own rule for where tokens may travel).
fn secure_or_loopback(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(name))) => name == "localhost",
        ("http", Some(url::Host::Ipv4(ip))) => ip == std::net::Ipv4Addr::LOCALHOST,
        ("http", Some(url::Host::Ipv6(ip))) => ip == std::net::Ipv6Addr::LOCALHOST,
        _ => false,
    }
}

/// Who is calling which backend: what the STS is told.
pub struct Subject<'a> {
    pub principal: &'a str,
    pub roles: &'a [String],
    pub backend: &'a str,
    pub backend_url: &'a str,
    pub subject_token: Option<&'a str>,
}

/// The JSON body of the request for `subject`.
pub fn request_body(settings: &Settings, subject: &Subject<'_>) -> String {
    let mut body = json!({
        "principal": subject.principal,
        "roles": subject.roles,
        "audience": settings.audience.as_deref().unwrap_or(subject.backend),
        "resource": subject.backend_url,
    });
    if let (true, Some(token)) = (settings.send_subject_token, subject.subject_token) {
        body["subject_token"] = json!(token);
    }
    body.to_string()
}

/// What one answer of the STS means.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Issued: the token and how long it lasts, in milliseconds.
    Issued { token: String, expires_in_ms: Option<u64> },
    /// The STS refuses this caller (403): its reason is for the caller.
    Refused(String),
    /// Anything else: the STS or the relay's key is wrong, for the operator to fix.
    Failed(String),
}

/// Reads an answer with `status` and `body`.
pub fn read_answer(settings: &Settings, status: u16, body: &str) -> Outcome {
    let document: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let reason = || {
        let text = |key| document.get(key).and_then(Value::as_str);
        text("error_description").or(text("error")).map_or_else(|| excerpt(body), str::to_owned)
    };
    match status {
        200..=299 => match document.get(&settings.token_field).and_then(Value::as_str) {
            Some(token) if !token.is_empty() => Outcome::Issued {
                token: token.to_owned(),
                expires_in_ms: document.get("expires_in").and_then(Value::as_u64).map(|s| s.saturating_mul(1000)),
            },
            _ => Outcome::Failed(format!("the STS answered {status} without a {} member", settings.token_field)),
        },
        403 => Outcome::Refused(format!("the credential service refused you: {}", reason())),
        _ => Outcome::Failed(format!("the STS answered {status}: {}", reason())),
    }
}

/// At most 200 bytes of `text`, on a character boundary.
fn excerpt(text: &str) -> String {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Settings {
        Settings::parse(json).unwrap()
    }

    #[test]
    fn the_url_is_https_or_loopback_and_unknown_settings_are_refused() {
        assert!(Settings::parse(r#"{"url": "https://sts.example/issue"}"#).is_ok());
        assert!(Settings::parse(r#"{"url": "http://127.0.0.1:9/issue"}"#).is_ok());
        assert!(Settings::parse(r#"{"url": "http://sts.example/issue"}"#).unwrap_err().contains("https://"));
        assert!(Settings::parse(r#"{"url": "http://127.0.0.1.evil/issue"}"#).is_err());
        assert!(Settings::parse(r#"{"url": "http://127.0.0.1:80@evil.example/issue"}"#).is_err());
        assert!(Settings::parse(r#"{"url": "https://s", "tokne_field": "x"}"#).is_err());
    }

    #[test]
    fn the_request_names_the_caller_and_sends_its_token_only_when_told() {
        let roles = vec!["dev".to_owned()];
        let subject = Subject {
            principal: "alice",
            roles: &roles,
            backend: "tracker",
            backend_url: "https://tracker/mcp",
            subject_token: Some("ALICE-T"),
        };
        let plain: Value = serde_json::from_str(&request_body(&settings(r#"{"url": "https://s"}"#), &subject)).unwrap();
        assert_eq!(
            plain,
            json!({"principal": "alice", "roles": ["dev"], "audience": "tracker", "resource": "https://tracker/mcp"})
        );
        let told = settings(r#"{"url": "https://s", "send_subject_token": true, "audience": "api://t"}"#);
        let body: Value = serde_json::from_str(&request_body(&told, &subject)).unwrap();
        assert_eq!((body["subject_token"].clone(), body["audience"].clone()), (json!("ALICE-T"), json!("api://t")));
    }

    #[test]
    fn answers_are_issued_refused_or_failed() {
        let s = settings(r#"{"url": "https://s"}"#);
        assert_eq!(
            read_answer(&s, 200, r#"{"access_token": "t1", "expires_in": 60}"#),
            Outcome::Issued { token: "t1".into(), expires_in_ms: Some(60_000) }
        );
        assert_eq!(
            read_answer(&s, 200, r#"{"access_token": "t1"}"#),
            Outcome::Issued { token: "t1".into(), expires_in_ms: None }
        );
        assert!(matches!(read_answer(&s, 200, r#"{"token": "t1"}"#), Outcome::Failed(m) if m.contains("access_token")));
        assert_eq!(
            read_answer(&s, 403, r#"{"error": "access_denied", "error_description": "not in group"}"#),
            Outcome::Refused("the credential service refused you: not in group".into())
        );
        assert!(matches!(read_answer(&s, 401, "bad key"), Outcome::Failed(m) if m == "the STS answered 401: bad key"));
        let custom = settings(r#"{"url": "https://s", "token_field": "token"}"#);
        assert!(matches!(read_answer(&custom, 201, r#"{"token": "t2"}"#), Outcome::Issued { .. }));
    }
}
