//! What `redact` masks and how: secrets of common shapes (API keys, tokens, private keys),
//! e-mail addresses, and the configured patterns, in every string of a tool result.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Mask API keys and tokens of common shapes.
    pub secrets: bool,
    /// Mask e-mail addresses.
    pub emails: bool,
    /// More patterns, by name (the name appears in the mask and the count).
    pub patterns: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { secrets: true, emails: true, patterns: BTreeMap::new() }
    }
}

/// Secret shapes: (kind, pattern).
const SECRETS: &[(&str, &str)] = &[
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ("bearer", r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*"),
    ("api_key", r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("aws_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("google_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
];

const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}";

/// The compiled rules, in the order they apply.
pub struct Masker {
    rules: Vec<Rule>,
}

/// One kind of thing to mask.
struct Rule {
    kind: String,
    regex: Regex,
    /// A character every match holds: a string without it is skipped with one `memchr`
    /// (the e-mail pattern starts with a class, so the regex has no literal of its own to
    /// look for first; the secrets' patterns start with literals the regex finds as fast).
    needs: Option<char>,
}

impl Masker {
    /// Compiles `settings`; a configured pattern that does not compile is an error.
    pub fn new(settings: &Settings) -> Result<Masker, String> {
        let mut rules = Vec::new();
        if settings.secrets {
            for (kind, pattern) in SECRETS {
                let regex = Regex::new(pattern).expect("built-in patterns compile");
                rules.push(Rule { kind: kind.to_string(), regex, needs: None });
            }
        }
        if settings.emails {
            let regex = Regex::new(EMAIL).expect("the e-mail pattern compiles");
            rules.push(Rule { kind: "email".into(), regex, needs: Some('@') });
        }
        for (name, pattern) in &settings.patterns {
            let regex = Regex::new(pattern).map_err(|e| format!("pattern {name}: {e}"))?;
            rules.push(Rule { kind: name.clone(), regex, needs: None });
        }
        Ok(Masker { rules })
    }

    /// Masks every string in `value` in place; returns how many matches of each kind.
    pub fn mask(&self, value: &mut Value) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        self.walk(value, &mut counts);
        counts
    }

    fn walk(&self, value: &mut Value, counts: &mut BTreeMap<String, u64>) {
        match value {
            Value::String(text) => {
                // In rule order: a rule sees what the rules before it left.
                for Rule { kind, regex, needs } in &self.rules {
                    if needs.is_some_and(|needed| !text.contains(needed)) {
                        continue;
                    }
                    let found = regex.find_iter(text).count() as u64;
                    if found > 0 {
                        *text = regex.replace_all(text, format!("[REDACTED:{kind}]").as_str()).into_owned();
                        *counts.entry(kind.clone()).or_default() += found;
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.walk(item, counts)),
            // Every string is content a secret can hide in (URIs of resource links, `_meta`,
            // `structuredContent` at any depth) except base64 data, which a pattern could match
            // by chance and break, and a MIME type.
            Value::Object(map) => map
                .iter_mut()
                .filter(|(key, _)| !matches!(key.as_str(), "blob" | "mimeType"))
                .for_each(|(_, item)| self.walk(item, counts)),
            _ => {}
        }
    }

    /// A result (`CallToolResult`, `GetPromptResult`, `ReadResourceResult`) with what it held
    /// masked and the counts in `_meta["relay/redacted"]`; `None` when nothing needed masking.
    pub fn redact_result(&self, result: &str) -> Option<String> {
        let mut value: Value = serde_json::from_str(result).ok()?;
        // `_meta` is masked like the rest (a backend can put anything there).
        let counts = self.mask(&mut value);
        let object = value.as_object_mut()?;
        if counts.is_empty() {
            return None;
        }
        let mut meta = object.remove("_meta").filter(Value::is_object).unwrap_or_else(|| json!({}));
        let total: u64 = counts.values().sum();
        meta["relay/redacted"] = json!({"total": total, "by_kind": counts});
        object.insert("_meta".into(), meta);
        Some(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        let settings: Settings = serde_json::from_str(r#"{"patterns": {"ticket": "TICKET-[0-9]+"}}"#).unwrap();
        Masker::new(&settings).unwrap()
    }

    #[test]
    fn masks_secrets_emails_and_configured_patterns_and_counts_them() {
        let result = json!({
            "content": [{"type": "text", "text": "key sk-proj-abcdefghijklmnopqrstuvwx, mail ann@example.com, TICKET-42"}],
            "structuredContent": {"token": "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "aws": "AKIAABCDEFGHIJKLMNOP"},
            "_meta": {"kept": true},
        });
        let redacted: Value = serde_json::from_str(&masker().redact_result(&result.to_string()).unwrap()).unwrap();
        let text = redacted["content"][0]["text"].as_str().unwrap();
        assert_eq!(text, "key [REDACTED:api_key], mail [REDACTED:email], [REDACTED:ticket]");
        assert_eq!(redacted["structuredContent"]["token"], "[REDACTED:github_token]");
        assert_eq!(redacted["structuredContent"]["aws"], "[REDACTED:aws_key]");
        assert_eq!(redacted["_meta"]["kept"], true);
        assert_eq!(redacted["_meta"]["relay/redacted"]["total"], 5);
        assert_eq!(redacted["_meta"]["relay/redacted"]["by_kind"]["email"], 1);
    }

    #[test]
    fn a_clean_result_passes_and_a_bad_pattern_is_refused() {
        assert_eq!(masker().redact_result(r#"{"content": [{"type": "text", "text": "nothing here"}]}"#), None);
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
        let bearer = format!("Authorization: Bearer {}", "a".repeat(24));
        let mut value = json!([jwt, bearer, "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"]);
        let counts = masker().mask(&mut value);
        assert_eq!(value, json!(["[REDACTED:jwt]", "Authorization: [REDACTED:bearer]", "[REDACTED:private_key]"]));
        assert_eq!(counts.values().sum::<u64>(), 3);
        let bad: Settings = serde_json::from_str(r#"{"patterns": {"x": "("}}"#).unwrap();
        assert!(Masker::new(&bad).is_err());
        assert!(serde_json::from_str::<Settings>(r#"{"emails": false, "secretz": true}"#).is_err());
    }

    #[test]
    fn every_string_is_masked_but_base64_data() {
        let read = json!({"contents": [
            {"uri": "mailto:ann@example.com", "mimeType": "text/plain", "text": "write to ann@example.com"},
            {"uri": "mem://b", "blob": "AKIAABCDEFGHIJKLMNOP"},
        ]});
        let redacted: Value = serde_json::from_str(&masker().redact_result(&read.to_string()).unwrap()).unwrap();
        assert_eq!(redacted["contents"][0]["text"], "write to [REDACTED:email]");
        assert_eq!(redacted["contents"][0]["uri"], "mailto:[REDACTED:email]");
        assert_eq!(redacted["contents"][1]["blob"], "AKIAABCDEFGHIJKLMNOP");
        let key = "sk-proj-abcdefghijklmnopqrstuvwx";
        let call = json!({
            "content": [{"type": "resource_link", "uri": format!("https://x.test/?key={key}"), "name": "r"}],
            "structuredContent": {"deep": {"uri": key, "list": [key]}},
            "_meta": {"debug": key},
        });
        let redacted = masker().redact_result(&call.to_string()).unwrap();
        assert!(!redacted.contains(key), "{redacted}");
        let redacted: Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!(redacted["_meta"]["relay/redacted"]["total"], 4);
    }
}
