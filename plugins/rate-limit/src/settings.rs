//! The plugin's configuration.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::gcra::Rate;

/// The default when neither the configuration nor `RELAY_RATE_LIMIT` says otherwise (the
/// reference plan's 100 requests per minute).
#[cfg(not(feature = "strict-default"))]
pub const BUILT_IN_PER_MINUTE: u32 = 100;
/// The strict build's default (see the `strict-default` feature).
#[cfg(feature = "strict-default")]
pub const BUILT_IN_PER_MINUTE: u32 = 5;

/// Limits, from the plugin's `config` in relay.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Requests per minute per principal; else `RELAY_RATE_LIMIT` (if granted), else 100.
    pub per_minute: Option<u32>,
    /// Largest burst; defaults to `per_minute`.
    pub burst: Option<u32>,
    /// Extra, tighter limits for single tools, per principal and tool.
    #[serde(default)]
    pub per_tool: BTreeMap<String, u32>,
    /// Methods that count; default: every request except `initialize` and `ping`.
    pub methods: Option<Vec<String>>,
    /// What to do when the `kv` store cannot be reached (Redis down): `open` (default) lets
    /// requests through, `closed` refuses them. Either way each such decision is logged.
    #[serde(default)]
    pub on_kv_unavailable: FailMode,
}

/// Fail open or closed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Allow the request.
    #[default]
    Open,
    /// Refuse the request.
    Closed,
}

impl Settings {
    /// Parses the JSON configuration; `env_default` is `RELAY_RATE_LIMIT` when granted.
    pub fn from_config(json: &str, env_default: Option<String>) -> Result<Settings, String> {
        let mut settings: Settings = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if settings.per_minute.is_none()
            && let Some(value) = env_default
        {
            settings.per_minute =
                Some(value.trim().parse().map_err(|_| format!("RELAY_RATE_LIMIT={value} is not a number"))?);
        }
        Ok(settings)
    }

    /// The per-principal rate.
    pub fn rate(&self) -> Rate {
        Rate::per_minute(self.per_minute.unwrap_or(BUILT_IN_PER_MINUTE), self.burst)
    }

    /// Whether requests of `method` count against the limit.
    pub fn applies_to(&self, method: &str) -> bool {
        match &self.methods {
            Some(methods) => methods.iter().any(|m| m == method),
            None => !matches!(method, "initialize" | "ping"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_wins_over_the_environment_which_wins_over_the_default() {
        assert_eq!(Settings::from_config(r#"{"per_minute": 7}"#, Some("9".into())).unwrap().rate().limit(), 7);
        assert_eq!(Settings::from_config("{}", Some("9".into())).unwrap().rate().limit(), 9);
        assert_eq!(Settings::from_config("{}", None).unwrap().rate().limit(), BUILT_IN_PER_MINUTE);
        assert!(Settings::from_config("{}", Some("lots".into())).is_err());
        assert!(Settings::from_config(r#"{"per_minit": 7}"#, None).is_err());
        let closed = Settings::from_config(r#"{"on_kv_unavailable": "closed"}"#, None).unwrap();
        assert_eq!(closed.on_kv_unavailable, FailMode::Closed);
        assert!(Settings::from_config(r#"{"on_kv_unavailable": "ajar"}"#, None).is_err());
    }

    #[test]
    fn initialize_and_ping_do_not_count_by_default() {
        let settings = Settings::from_config("{}", None).unwrap();
        assert!(settings.applies_to("tools/call") && !settings.applies_to("ping"));
    }
}
