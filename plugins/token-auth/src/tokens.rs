//! The token table: parsing the plugin configuration and constant-time lookup.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The plugin's configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    tokens: Vec<TokenConfig>,
}

/// One accepted token. Exactly one of `token` (literal, for tests) or `token_env` (the name of
/// an environment variable the operator granted) is set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenConfig {
    token: Option<String>,
    token_env: Option<String>,
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

/// Every accepted token.
#[derive(Debug)]
pub struct Table {
    entries: Vec<Entry>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Table {
    /// Builds the table from the JSON configuration; `env` reads granted variables.
    pub fn from_config(json: &str, env: impl Fn(&str) -> Option<String>) -> Result<Table, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for t in config.tokens {
            let secret = match (&t.token, &t.token_env) {
                (Some(token), None) => token.clone(),
                (None, Some(var)) => {
                    env(var).ok_or_else(|| format!("environment variable {var} is not granted or not set"))?
                }
                _ => return Err(format!("principal {}: set exactly one of token or token_env", t.principal)),
            };
            if secret.is_empty() {
                return Err(format!("principal {}: empty token", t.principal));
            }
            entries.push(Entry { digest: digest(&secret), principal: t.principal, roles: t.roles });
        }
        Ok(Table { entries })
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
    }

    #[test]
    fn refuses_missing_variables_and_ambiguous_entries() {
        assert!(Table::from_config(CONFIG, |_| None).unwrap_err().contains("TEAM_TOKEN"));
        let both = r#"{"tokens": [{"token": "a", "token_env": "B", "principal": "p"}]}"#;
        assert!(Table::from_config(both, env).is_err());
        assert!(Table::from_config(r#"{"tokens": [], "extra": 1}"#, env).is_err());
    }
}
