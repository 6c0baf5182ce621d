//! `relay.yaml`'s `logging`: the format and filter of the relay's own records, and where they
//! are also forwarded. Checked whole at start-up (and by `check-config`), environment included:
//! a filter that names no level (`warning`, a typo) would otherwise silence every record.

use serde::Deserialize;

/// Log output settings; `--log-format` and `RUST_LOG` override them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `human` (default) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `relay=debug`.
    pub level: Option<String>,
    /// Forwarding of records to the WebSocket logger.
    pub forward: ForwardConfig,
}

/// Where records also go: the WebSocket logger (`joshua_logger`'s protocol). Off unless `url`
/// (or `JOSHUA_LOGGER_URL` in the environment, which wins) is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// The logger's `ws://` or `wss://` URL.
    pub url: Option<String>,
    /// Records at or above this level are forwarded: `error`, `warn`, `info` (default),
    /// `debug` or `trace`.
    pub level: Option<String>,
}

impl ForwardConfig {
    /// The logger's URL: `JOSHUA_LOGGER_URL` when set and not empty, else `url`.
    pub fn resolved_url(&self) -> Option<String> {
        std::env::var("JOSHUA_LOGGER_URL").ok().filter(|u| !u.trim().is_empty()).or_else(|| self.url.clone())
    }

    /// The forwarding level (info unless set).
    pub fn level(&self) -> tracing::Level {
        self.level.as_deref().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO)
    }
}

/// How log records are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per record.
    #[default]
    Human,
    /// One JSON object per record, for log shippers.
    Json,
}

impl LoggingConfig {
    /// Whether the settings, and the environment that overrides them (`RUST_LOG`,
    /// `JOSHUA_LOGGER_URL`), are usable; the first problem, naming its key, when not.
    pub fn check(&self) -> Result<(), String> {
        if let Ok(filter) = std::env::var("RUST_LOG") {
            check_filter(&filter).map_err(|e| format!("RUST_LOG {filter:?} (environment): {e}"))?;
        }
        if let Some(level) = &self.level {
            check_filter(level).map_err(|e| format!("logging.level {level:?}: {e}"))?;
        }
        if let Some(level) = &self.forward.level
            && level.parse::<tracing::Level>().is_err()
        {
            return Err(format!("logging.forward.level {level:?} must be error, warn, info, debug or trace"));
        }
        if let Some(url) = self.forward.resolved_url()
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            return Err(format!("logging.forward.url (or JOSHUA_LOGGER_URL) {url:?} must be a ws:// or wss:// URL"));
        }
        Ok(())
    }
}

/// Whether `text` is a log filter that lets some of the relay's own records through: a level
/// (`info`), or a directive for a `relay` target (`relay=debug`, `relay::auth`), beside any
/// others. `tracing` reads a lone word that is not a level (`warning`, a typo) as a target,
/// and with nothing else the relay would log nothing of its own, errors included.
pub fn check_filter(text: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::builder().parse(text).map_err(|e| e.to_string())?;
    let lets_relay_through = text.split(',').map(str::trim).any(|directive| {
        let (target, level) = directive.rsplit_once('=').unwrap_or((directive, "trace"));
        let target = target.split('[').next().unwrap_or_default();
        let level = level.parse::<tracing::level_filters::LevelFilter>();
        let is_level = target.parse::<tracing::level_filters::LevelFilter>().is_ok();
        (is_level || target == "relay" || target.starts_with("relay::"))
            && level.is_ok_and(|l| l != tracing::level_filters::LevelFilter::OFF || is_level)
    });
    match lets_relay_through {
        true => Ok(()),
        false => Err(
            "lets none of the relay's records through: name a level (error, warn, info, debug, trace, off) or relay=LEVEL (`warning` is no level)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_must_let_some_of_the_relays_records_through() {
        for good in ["info", "WARN", "relay=debug,hyper=warn", "off", "info,relay::auth=trace", "relay", "relay::auth"]
        {
            assert!(check_filter(good).is_ok(), "{good}");
        }
        for bad in ["warning", "verbose", "hyper=debug", "relays=info", "relay=off", "info,relay=loud", "relay=["] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        let config: LoggingConfig = serde_yaml::from_str("level: warning").unwrap();
        let refused = config.check().unwrap_err();
        assert!(refused.contains("logging.level") && refused.contains("warning"), "{refused}");
    }
}
