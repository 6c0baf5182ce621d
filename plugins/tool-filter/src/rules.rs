//! What `tool-filter` decides for one call: refused (by an allow list or a deny rule, per
//! role), or allowed with its arguments edited (parameters pinned to a value, or dropped).

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Only these tools (globs on the client-facing name) may be called; absent: every tool.
    pub allow: Option<Vec<String>>,
    /// Tools refused, unless the caller has one of `unless_roles`.
    pub deny: Vec<DenyRule>,
    /// Parameters set to a value whatever the client sent, by tool glob.
    pub pin: Vec<ParamRule>,
    /// Parameters removed from what the client sent, by tool glob.
    pub drop: Vec<ParamRule>,
}

/// One deny rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    /// Tool globs.
    pub tools: Vec<String>,
    /// Roles the rule does not apply to.
    #[serde(default)]
    pub unless_roles: Vec<String>,
}

/// Parameters of the tools matching `tools`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamRule {
    /// Tool globs.
    pub tools: Vec<String>,
    /// For `pin`: name → value; for `drop`: names (values ignored; a list is accepted).
    pub params: Value,
}

/// The settings with their globs compiled.
pub struct Rules {
    allow: Option<GlobSet>,
    deny: Vec<(GlobSet, Vec<String>)>,
    pin: Vec<(GlobSet, Map<String, Value>)>,
    drop: Vec<(GlobSet, Vec<String>)>,
}

/// What happens to a call.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Goes ahead, with these arguments when they changed.
    Allow(Option<Value>),
    /// Refused, with the reason.
    Deny(String),
}

fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        set.add(Glob::new(pattern).map_err(|e| e.to_string())?);
    }
    set.build().map_err(|e| e.to_string())
}

impl Rules {
    /// Compiles `settings`.
    pub fn new(settings: Settings) -> Result<Rules, String> {
        let names = |params: &Value| -> Result<Vec<String>, String> {
            match params {
                Value::Array(items) => items.iter().map(|v| v.as_str().map(str::to_owned).ok_or("names")).collect(),
                Value::Object(map) => Ok(map.keys().cloned().collect()),
                _ => Err("names"),
            }
            .map_err(|_| "drop.params must list parameter names".to_owned())
        };
        Ok(Rules {
            allow: settings.allow.as_deref().map(globs).transpose()?,
            deny: settings
                .deny
                .into_iter()
                .map(|r| Ok((globs(&r.tools)?, r.unless_roles)))
                .collect::<Result<_, String>>()?,
            pin: settings
                .pin
                .into_iter()
                .map(|r| match r.params {
                    Value::Object(map) => Ok((globs(&r.tools)?, map)),
                    _ => Err("pin.params must map parameter names to values".to_owned()),
                })
                .collect::<Result<_, String>>()?,
            drop: settings
                .drop
                .into_iter()
                .map(|r| Ok((globs(&r.tools)?, names(&r.params)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    /// The decision for `tool` called by someone with `roles` with `arguments`.
    pub fn decide(&self, tool: &str, roles: &[String], arguments: &str) -> Decision {
        if self.allow.as_ref().is_some_and(|allow| !allow.is_match(tool)) {
            return Decision::Deny(format!("{tool} is not on this relay's allow list"));
        }
        for (tools, unless) in &self.deny {
            if tools.is_match(tool) && !roles.iter().any(|r| unless.contains(r)) {
                return Decision::Deny(format!("{tool} is not allowed for this caller"));
            }
        }
        let pins: Vec<_> = self.pin.iter().filter(|(tools, _)| tools.is_match(tool)).collect();
        let drops: Vec<_> = self.drop.iter().filter(|(tools, _)| tools.is_match(tool)).collect();
        if pins.is_empty() && drops.is_empty() {
            return Decision::Allow(None);
        }
        let mut arguments: Map<String, Value> = serde_json::from_str(arguments).unwrap_or_default();
        for (_, names) in drops {
            names.iter().for_each(|name| {
                arguments.remove(name);
            });
        }
        for (_, values) in pins {
            arguments.extend(values.clone());
        }
        Decision::Allow(Some(Value::Object(arguments)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(config: Value) -> Rules {
        Rules::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    #[test]
    fn allow_lists_and_deny_rules_by_role() {
        let rules = rules(json!({
            "allow": ["github__*", "search"],
            "deny": [{"tools": ["*delete*", "*__push"], "unless_roles": ["admin"]}],
        }));
        assert_eq!(rules.decide("search", &[], "{}"), Decision::Allow(None));
        assert!(matches!(rules.decide("shell", &[], "{}"), Decision::Deny(m) if m.contains("allow list")));
        assert!(matches!(rules.decide("github__delete_repo", &[], "{}"), Decision::Deny(_)));
        assert_eq!(rules.decide("github__delete_repo", &["admin".into()], "{}"), Decision::Allow(None));
    }

    #[test]
    fn pins_and_drops_parameters() {
        let rules = rules(json!({
            "pin": [{"tools": ["search"], "params": {"limit": 10, "safe": true}}],
            "drop": [{"tools": ["search", "fetch"], "params": ["debug"]}],
        }));
        let decided = rules.decide("search", &[], r#"{"q": "x", "limit": 1000, "debug": true}"#);
        assert_eq!(decided, Decision::Allow(Some(json!({"q": "x", "limit": 10, "safe": true}))));
        assert_eq!(rules.decide("fetch", &[], r#"{"debug": 1}"#), Decision::Allow(Some(json!({}))));
        assert!(Rules::new(serde_json::from_value(json!({"allow": ["["]})).unwrap()).is_err());
        assert!(serde_json::from_value::<Settings>(json!({"alow": []})).is_err());
    }
}
