//! The token table: parsing the plugin configuration and constant-time lookup.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::dn::Name;

/// The plugin's configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    tokens: Vec<TokenConfig>,
    #[serde(default)]
    certificates: Vec<CertificateConfig>,
}

/// A client certificate subject (as the host's TLS handshake verified it against
/// `tls.client_ca`) that stands for a principal, without a token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateConfig {
    subject: String,
    principal: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// One accepted token. Exactly one of `token` (literal, for tests), `token_env` (the name of
/// an environment variable the operator granted) or `token_sha256` (the hex SHA-256 of the
/// token: one line per client in a world-readable relay.yaml, no secret in it) is set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenConfig {
    token: Option<String>,
    token_env: Option<String>,
    token_sha256: Option<String>,
    principal: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// An accepted token, kept only as its digest.
#[derive(Debug)]
pub struct Entry {
    digest: [u8; 32],
    /// The principal the token stands for.
    pub principal: String,
    /// Its roles.
    pub roles: Vec<String>,
}

/// Every accepted token and certificate subject.
#[derive(Debug)]
pub struct Table {
    entries: Vec<Entry>,
    /// Verified client certificate subjects (parsed), with their principal and roles.
    subjects: Vec<(Name, String, Vec<String>)>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 64 hex digits as 32 bytes.
fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

impl Table {
    /// Builds the table from the JSON configuration; `env` reads granted variables.
    pub fn from_config(json: &str, env: impl Fn(&str) -> Option<String>) -> Result<Table, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for t in config.tokens {
            let secret = match (&t.token, &t.token_env, &t.token_sha256) {
                (Some(token), None, None) => token.clone(),
                (None, Some(var), None) => {
                    env(var).ok_or_else(|| format!("environment variable {var} is not granted or not set"))?
                }
                (None, None, Some(hex)) => {
                    let digest = from_hex(hex).ok_or_else(|| {
                        format!(
                            "principal {}: token_sha256 must be 64 hex digits (sha256sum of the token)",
                            t.principal
                        )
                    })?;
                    entries.push(Entry { digest, principal: t.principal, roles: t.roles });
                    continue;
                }
                _ => {
                    return Err(format!(
                        "principal {}: set exactly one of token, token_env or token_sha256",
                        t.principal
                    ));
                }
            };
            if secret.is_empty() {
                return Err(format!("principal {}: empty token", t.principal));
            }
            entries.push(Entry { digest: digest(&secret), principal: t.principal, roles: t.roles });
        }
        let mut subjects = Vec::new();
        for c in config.certificates {
            let name =
                Name::parse(&c.subject).map_err(|problem| format!("principal {}: subject {problem}", c.principal))?;
            subjects.push((name, c.principal, c.roles));
        }
        Ok(Table { entries, subjects })
    }

    /// The principal and roles of a verified client certificate's `subject` (as the host
    /// renders it, RFC 4514 escapes included), if listed: compared as distinguished names,
    /// RDN by RDN, never as strings.
    pub fn by_subject(&self, subject: &str) -> Option<(&str, &[String])> {
        let presented = Name::parse(subject).ok()?;
        self.subjects.iter().find(|(s, _, _)| *s == presented).map(|(_, p, r)| (p.as_str(), r.as_slice()))
    }

    /// The entry whose token equals `token`. Every entry is compared, in constant time, so the
    /// time taken does not reveal which (or whether any) entry matched.
    pub fn find(&self, token: &str) -> Option<&Entry> {
        let candidate = digest(token);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&candidate)) {
                found = Some(entry);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"tokens": [
        {"token": "s3cret", "principal": "ops", "roles": ["admin"]},
        {"token_env": "TEAM_TOKEN", "principal": "team"}
    ]}"#;

    fn env(name: &str) -> Option<String> {
        (name == "TEAM_TOKEN").then(|| "from-env".to_owned())
    }

    #[test]
    fn finds_literal_and_environment_tokens() {
        let table = Table::from_config(CONFIG, env).unwrap();
        let ops = table.find("s3cret").unwrap();
        assert_eq!((ops.principal.as_str(), ops.roles.as_slice()), ("ops", ["admin".to_owned()].as_slice()));
        assert_eq!(table.find("from-env").unwrap().principal, "team");
        assert!(table.find("s3cre").is_none());
        assert!(table.find("").is_none());
        assert!(table.by_subject("CN=agent-7").is_none());
        let with_certs = r#"{"certificates": [{"subject": "CN=agent-7", "principal": "agent", "roles": ["ops"]}]}"#;
        let table = Table::from_config(with_certs, env).unwrap();
        assert_eq!(table.by_subject("CN=agent-7"), Some(("agent", ["ops".to_owned()].as_slice())));
        assert!(table.by_subject("CN=agent-8").is_none());
        let two =
            r#"{"certificates": [{"subject": "CN=agent-7, O=Example", "principal": "agent", "roles": ["admin"]}]}"#;
        let table = Table::from_config(two, env).unwrap();
        assert!(table.by_subject("CN=agent-7,O=Example").is_some());
        assert!(table.by_subject("CN=agent-7\\, O=Example").is_none(), "one CN holding a comma");
        assert!(Table::from_config(r#"{"certificates": [{"subject": "agent-7", "principal": "a"}]}"#, env).is_err());
    }

    #[test]
    fn a_client_token_is_listed_by_its_digest_alone() {
        // printf %s client-token | sha256sum
        let hex = "6b7d16c2e1c5e2d0c6c0a8d1a0b5a1b3a0d9cbb79f1f1c5cf61b54f54b8d0c41";
        let real: String = Sha256::digest(b"client-token").iter().map(|b| format!("{b:02x}")).collect();
        let config = format!(r#"{{"tokens": [{{"token_sha256": "{real}", "principal": "billing"}}]}}"#);
        let table = Table::from_config(&config, env).unwrap();
        assert_eq!(table.find("client-token").unwrap().principal, "billing");
        assert!(table.find(&real).is_none(), "the digest is not itself a token");
        let wrong = format!(r#"{{"tokens": [{{"token_sha256": "{hex}", "principal": "x"}}]}}"#);
        assert!(Table::from_config(&wrong, env).unwrap().find("client-token").is_none());
        let short = r#"{"tokens": [{"token_sha256": "abc", "principal": "x"}]}"#;
        assert!(Table::from_config(short, env).unwrap_err().contains("64 hex digits"));
        let two = format!(r#"{{"tokens": [{{"token": "a", "token_sha256": "{real}", "principal": "x"}}]}}"#);
        assert!(Table::from_config(&two, env).is_err());
    }

    #[test]
    fn refuses_missing_variables_and_ambiguous_entries() {
        assert!(Table::from_config(CONFIG, |_| None).unwrap_err().contains("TEAM_TOKEN"));
        let both = r#"{"tokens": [{"token": "a", "token_env": "B", "principal": "p"}]}"#;
        assert!(Table::from_config(both, env).is_err());
        assert!(Table::from_config(r#"{"tokens": [], "extra": 1}"#, env).is_err());
    }
}
