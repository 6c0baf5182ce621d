//! The plugin's configuration (from relay.yaml): the models it can ask, each an
//! OpenAI-compatible chat-completions endpoint, the default model set and the output directory.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Default per-model deadline, retries included.
const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// Default completion budget.
const DEFAULT_MAX_TOKENS: u32 = 4096;
/// Default number of retries after a 429 or 5xx.
const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default cap on the bytes of all files of one request together.
const DEFAULT_MAX_FILE_BYTES: u64 = 8 << 20;

/// One model the plugin can ask.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Base URL of the OpenAI-compatible API, e.g. `https://api.openai.com/v1`;
    /// `/chat/completions` is appended.
    pub base_url: String,
    /// The model id the provider knows (defaults to the configured name).
    #[serde(default)]
    pub model: Option<String>,
    /// The environment variable holding the API key (it must be in the plugin's `grants.env`);
    /// without one no `Authorization` header is sent.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Deadline for this model's answer, retries included.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// `max_tokens` sent to the provider.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Retries after 429 or 5xx answers (with capped exponential backoff, within the deadline).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Other names clients may use for this model.
    #[serde(default)]
    pub aliases: Vec<String>,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}
fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Models by the name clients use.
    pub models: BTreeMap<String, ModelConfig>,
    /// Models used when a call names none (changed at run time by `fiedler_set_models`).
    #[serde(default)]
    pub default_models: Vec<String>,
    /// Where answers are written (must be granted writable; changed by `fiedler_set_output`).
    pub output_dir: String,
    /// Cap on the bytes of all files of one request together.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
}

fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

impl Settings {
    /// Parses the configuration JSON the host hands over, with errors that name the field.
    pub fn parse(json: &str) -> Result<Self, String> {
        let settings: Settings = serde_json::from_str(json).map_err(|e| format!("fiedler configuration: {e}"))?;
        if settings.models.is_empty() {
            return Err("fiedler configuration: `models` is empty".into());
        }
        for (name, model) in &settings.models {
            if !(model.base_url.starts_with("http://") || model.base_url.starts_with("https://")) {
                return Err(format!(
                    "fiedler configuration: model {name}: base_url must start with http:// or https://"
                ));
            }
            if model.timeout_ms == 0 {
                return Err(format!("fiedler configuration: model {name}: timeout_ms must be positive"));
            }
        }
        if let Some(unknown) = settings.default_models.iter().find(|m| settings.resolve(m).is_none()) {
            return Err(format!("fiedler configuration: default model {unknown} is not configured"));
        }
        Ok(settings)
    }

    /// The configured model names, comma-separated (for error messages).
    pub fn names(&self) -> String {
        self.models.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The model called `name` (or having it as an alias), with its canonical name.
    pub fn resolve(&self, name: &str) -> Option<(&str, &ModelConfig)> {
        if let Some((key, model)) = self.models.get_key_value(name) {
            return Some((key.as_str(), model));
        }
        self.models.iter().find(|(_, m)| m.aliases.iter().any(|a| a == name)).map(|(k, m)| (k.as_str(), m))
    }
}

impl ModelConfig {
    /// The chat-completions URL.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    /// The model id sent to the provider.
    pub fn provider_model<'a>(&'a self, name: &'a str) -> &'a str {
        self.model.as_deref().unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "output_dir": "/out",
        "default_models": ["gpt-4o"],
        "models": {
            "gpt-4o": {"base_url": "http://127.0.0.1:9/v1/", "api_key_env": "OPENAI_API_KEY", "aliases": ["gpt"]},
            "deepseek": {"base_url": "https://api.deepseek.com", "model": "deepseek-chat", "timeout_ms": 5000}
        }
    }"#;

    #[test]
    fn parses_models_with_defaults_and_resolves_aliases() {
        let settings = Settings::parse(CONFIG).unwrap();
        let (name, gpt) = settings.resolve("gpt").unwrap();
        assert_eq!(name, "gpt-4o");
        assert_eq!(gpt.endpoint(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(gpt.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(gpt.provider_model(name), "gpt-4o");
        let (name, deepseek) = settings.resolve("deepseek").unwrap();
        assert_eq!(deepseek.provider_model(name), "deepseek-chat");
        assert!(settings.resolve("invalid-model").is_none());
    }

    #[test]
    fn refuses_bad_configuration_with_the_reason() {
        assert!(Settings::parse("{}").unwrap_err().contains("models"));
        let bad_url = r#"{"output_dir": "/o", "models": {"m": {"base_url": "ftp://x"}}}"#;
        assert!(Settings::parse(bad_url).unwrap_err().contains("base_url"));
        let unknown_default =
            r#"{"output_dir": "/o", "default_models": ["x"], "models": {"m": {"base_url": "http://x"}}}"#;
        assert!(Settings::parse(unknown_default).unwrap_err().contains("default model x"));
    }
}
