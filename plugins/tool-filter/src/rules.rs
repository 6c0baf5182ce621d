//! What `tool-filter` decides: which tools a caller may use (allow rules and deny rules, by
//! tool and backend globs and by role) and what a call carries (parameters pinned to a value
//! or dropped). Tool globs match a tool by its identity, not by a name that moves: a tool is
//! matched by its catalog name (before any rename), by its backend's own name for it, and by
//! its qualified name `<backend>__<own name>`. So a rule on `delete_repo` keeps matching when
//! a second backend offers `delete_repo` too and the relay's collision rule exposes it as
//! `<backend>__delete_repo`, and a rule on `github__delete_repo` keeps matching when that
//! second backend goes away and the tool is `delete_repo` again. Allow rules match an own name
//! that itself reads as a prefixed name (`github__x` offered by backend `gamma`) only by its
//! qualified name (`gamma__github__x`): `github__*` lets in github's tools, not gamma's.

use std::collections::BTreeMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Only tools some rule allows may be seen and called; absent: every tool.
    pub allow: Option<Vec<AllowRule>>,
    /// Tools hidden and refused, unless the caller has one of `unless_roles`.
    pub deny: Vec<DenyRule>,
    /// Parameters set to a value whatever the client sent, by tool glob (and hidden from the
    /// tool's input schema).
    pub pin: Vec<ParamRule>,
    /// Parameters removed from what the client sent, by tool glob (and hidden from the tool's
    /// input schema).
    pub drop: Vec<ParamRule>,
    /// New client-facing names: catalog name → new name.
    pub rename: BTreeMap<String, String>,
    /// New descriptions: catalog name → description.
    pub describe: BTreeMap<String, String>,
}

/// One allow rule: a tool glob, or tools (and backends) allowed to some roles.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AllowRule {
    /// Tools matching this glob, for everyone.
    Tools(String),
    /// Tools by tool and backend globs, for some roles.
    Scoped(ScopedAllow),
}

/// Tools matching `tools` served by `backends` (both globs; absent: any), for callers with one
/// of `roles` (absent: everyone).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedAllow {
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    backends: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// One deny rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    /// Tool globs (absent: every tool of `backends`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Backend globs (absent: any backend).
    #[serde(default)]
    pub backends: Vec<String>,
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

/// Tools (and backends) a rule covers; `None` covers all.
struct Scope {
    tools: Option<GlobSet>,
    backends: Option<GlobSet>,
}

impl Scope {
    fn new(tools: &[String], backends: &[String]) -> Result<Scope, String> {
        let set = |patterns: &[String]| (!patterns.is_empty()).then(|| globs(patterns)).transpose();
        Ok(Scope { tools: set(tools)?, backends: set(backends)? })
    }

    /// Whether the rule covers `tool` of `backend`; `allowing` for an allow rule, whose globs
    /// match more narrowly (see [`allows_tool`]).
    fn covers(&self, tool: &str, backend: &str, allowing: bool) -> bool {
        let matches = if allowing { allows_tool } else { matches_tool };
        self.tools.as_ref().is_none_or(|s| matches(s, tool, backend))
            && self.backends.as_ref().is_none_or(|s| s.is_match(backend))
    }
}

/// The relay's collision prefix: a tool two backends offer is exposed as `<backend>__<name>`.
const COLLISION_SEPARATOR: &str = "__";

/// The backend's own name for catalog name `tool` of `backend` (without the collision prefix),
/// and its qualified name `<backend>__<own>` (its catalog name while another source offers the
/// same name).
fn own_and_qualified<'a>(tool: &'a str, backend: &str) -> (&'a str, std::borrow::Cow<'a, str>) {
    match tool.strip_prefix(backend).and_then(|rest| rest.strip_prefix(COLLISION_SEPARATOR)) {
        Some(own) => (own, tool.into()),
        None => (tool, format!("{backend}{COLLISION_SEPARATOR}{tool}").into()),
    }
}

/// Whether `globs` match `tool` of `backend` by any of its names: what deny rules, pins and
/// drops use (matching more only restricts more).
fn matches_tool(globs: &GlobSet, tool: &str, backend: &str) -> bool {
    let (own, qualified) = own_and_qualified(tool, backend);
    globs.is_match(tool) || globs.is_match(own) || globs.is_match(qualified.as_ref())
}

/// Whether `globs` match `tool` of `backend` by a name that is its own: as [`matches_tool`],
/// but a tool whose own name reads as a prefixed name (`github__x` of backend `gamma`, in the
/// catalog as `github__x` alone and as `gamma__github__x` beside a backend `github`) is known
/// by its qualified name only. What allow rules use (matching more would let more in).
fn allows_tool(globs: &GlobSet, tool: &str, backend: &str) -> bool {
    let (own, qualified) = own_and_qualified(tool, backend);
    let reads_prefixed = own.contains(COLLISION_SEPARATOR);
    globs.is_match(qualified.as_ref()) || !reads_prefixed && (globs.is_match(tool) || globs.is_match(own))
}

/// The settings with their globs compiled.
pub struct Rules {
    allow: Option<Vec<(Scope, Vec<String>)>>,
    deny: Vec<(Scope, Vec<String>)>,
    pin: Vec<(GlobSet, Map<String, Value>)>,
    drop: Vec<(GlobSet, Vec<String>)>,
    /// Catalog (or qualified) name → new name.
    rename: BTreeMap<String, String>,
    /// Catalog (or qualified) name → description.
    describe: BTreeMap<String, String>,
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

/// The entry of `map` for `tool` of `backend`, by its catalog name or its qualified name.
fn by_name<'a>(map: &'a BTreeMap<String, String>, tool: &str, backend: &str) -> Option<&'a str> {
    let entry = map.get(tool).or_else(|| map.get(own_and_qualified(tool, backend).1.as_ref()));
    entry.map(String::as_str)
}

fn has_any(roles: &[String], wanted: &[String]) -> bool {
    roles.iter().any(|r| wanted.contains(r))
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
        let allow = settings.allow.map(|rules| {
            rules
                .into_iter()
                .map(|rule| match rule {
                    AllowRule::Tools(glob) => Ok((Scope::new(&[glob], &[])?, Vec::new())),
                    AllowRule::Scoped(rule) => Ok((Scope::new(&rule.tools, &rule.backends)?, rule.roles)),
                })
                .collect::<Result<Vec<_>, String>>()
        });
        let deny = settings.deny.into_iter().map(|r| {
            if r.tools.is_empty() && r.backends.is_empty() {
                return Err("a deny rule needs tools or backends".to_owned());
            }
            Ok((Scope::new(&r.tools, &r.backends)?, r.unless_roles))
        });
        Ok(Rules {
            allow: allow.transpose()?,
            deny: deny.collect::<Result<_, String>>()?,
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
            rename: settings.rename,
            describe: settings.describe,
        })
    }

    /// Why a caller with `roles` may not use `tool` of `backend`, if they may not.
    pub fn refusal(&self, tool: &str, backend: &str, roles: &[String]) -> Option<String> {
        if let Some(allow) = &self.allow {
            let allowed = allow
                .iter()
                .any(|(scope, only)| scope.covers(tool, backend, true) && (only.is_empty() || has_any(roles, only)));
            if !allowed {
                return Some(format!("{tool} is not on this relay's allow list"));
            }
        }
        let denied =
            self.deny.iter().any(|(scope, unless)| scope.covers(tool, backend, false) && !has_any(roles, unless));
        denied.then(|| format!("{tool} is not allowed for this caller"))
    }

    /// The new name of `tool` (catalog name) of `backend`: `rename` keyed by its catalog name,
    /// or by its qualified name (`<backend>__<own name>`, its catalog name while another source
    /// offers the same name), so a rename written either way holds as collisions come and go.
    pub fn renamed(&self, tool: &str, backend: &str) -> Option<&str> {
        by_name(&self.rename, tool, backend)
    }

    /// The new description of `tool` of `backend`, looked up as [`Rules::renamed`] does.
    pub fn described(&self, tool: &str, backend: &str) -> Option<&str> {
        by_name(&self.describe, tool, backend)
    }

    /// Parameters of `tool` of `backend` the client does not choose (pinned or dropped):
    /// hidden from its input schema.
    pub fn fixed_params(&self, tool: &str, backend: &str) -> Vec<&str> {
        let covers = |t: &GlobSet| matches_tool(t, tool, backend);
        let pinned = self.pin.iter().filter(|(t, _)| covers(t)).flat_map(|(_, m)| m.keys().map(String::as_str));
        let dropped = self.drop.iter().filter(|(t, _)| covers(t)).flat_map(|(_, n)| n.iter().map(String::as_str));
        pinned.chain(dropped).collect()
    }

    /// The decision for `tool` of `backend` called by someone with `roles` with `arguments`.
    pub fn decide(&self, tool: &str, backend: &str, roles: &[String], arguments: &str) -> Decision {
        if let Some(reason) = self.refusal(tool, backend, roles) {
            return Decision::Deny(reason);
        }
        let pins: Vec<_> = self.pin.iter().filter(|(tools, _)| matches_tool(tools, tool, backend)).collect();
        let drops: Vec<_> = self.drop.iter().filter(|(tools, _)| matches_tool(tools, tool, backend)).collect();
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

    pub(crate) fn rules(config: Value) -> Rules {
        Rules::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    #[test]
    fn allow_lists_and_deny_rules_by_role_and_backend() {
        let rules = rules(json!({
            "allow": ["github__*", "search", {"backends": ["shell"], "roles": ["ops"]}],
            "deny": [{"tools": ["*delete*", "*__push"], "unless_roles": ["admin"]}, {"backends": ["shell"], "tools": ["*rm*"]}],
        }));
        assert_eq!(rules.decide("search", "web", &[], "{}"), Decision::Allow(None));
        assert!(matches!(rules.decide("fetch", "web", &[], "{}"), Decision::Deny(m) if m.contains("allow list")));
        assert!(matches!(rules.decide("github__delete_repo", "github", &[], "{}"), Decision::Deny(_)));
        let admin = ["admin".to_owned()];
        assert_eq!(rules.decide("github__delete_repo", "github", &admin, "{}"), Decision::Allow(None));
        let ops = ["ops".to_owned()];
        assert!(rules.refusal("ls", "shell", &[]).is_some(), "shell tools are for ops only");
        assert!(rules.refusal("ls", "shell", &ops).is_none());
        assert!(rules.refusal("rm_rf", "shell", &ops).is_some(), "denied by backend, no role exempt");
    }

    #[test]
    fn rules_follow_a_tool_whose_catalog_name_moved_after_a_collision() {
        let rules = rules(
            json!({"deny": [{"tools": ["delete_repo"]}], "pin": [{"tools": ["search"], "params": {"limit": 1}}]}),
        );
        assert!(rules.refusal("delete_repo", "alpha", &[]).is_some());
        assert!(rules.refusal("alpha__delete_repo", "alpha", &[]).is_some(), "the same tool, prefixed");
        assert!(rules.refusal("beta__delete_repo", "beta", &[]).is_some());
        assert!(
            rules.refusal("alpha__delete_repo", "beta", &[]).is_none(),
            "beta's tool named alpha__delete_repo is another tool"
        );
        assert!(matches!(rules.decide("alpha__search", "alpha", &[], "{}"), Decision::Allow(Some(_))));
    }

    #[test]
    fn rules_written_with_the_prefixed_name_hold_when_the_collision_goes_away() {
        let rules = rules(json!({
            "deny": [{"tools": ["alpha__search_code"], "unless_roles": ["admin"]}],
            "pin": [{"tools": ["beta__search_code"], "params": {"limit": 10}}],
            "rename": {"beta__search_code": "search"},
        }));
        assert!(rules.refusal("alpha__search_code", "alpha", &[]).is_some());
        assert!(rules.refusal("search_code", "alpha", &[]).is_some(), "alpha alone: its tool is unprefixed");
        assert!(rules.refusal("search_code", "beta", &[]).is_none(), "beta's tool is another");
        let pinned = rules.decide("search_code", "beta", &[], r#"{"limit": 100000}"#);
        assert_eq!(pinned, Decision::Allow(Some(json!({"limit": 10}))));
        assert_eq!(rules.renamed("search_code", "beta"), Some("search"));
        assert_eq!(rules.renamed("search_code", "alpha"), None);
    }

    #[test]
    fn an_allow_glob_on_a_prefix_lets_in_that_backends_tools_only() {
        let rules = rules(json!({"allow": ["github__*", "read__table", "db__write__table"]}));
        assert!(rules.refusal("create_issue", "github", &[]).is_none(), "github's own tool, unprefixed");
        assert!(rules.refusal("github__create_issue", "github", &[]).is_none());
        assert!(
            rules.refusal("gamma__github__delete_everything", "gamma", &[]).is_some(),
            "gamma's tool named github__delete_everything is not github's"
        );
        assert!(
            rules.refusal("github__delete_everything", "gamma", &[]).is_some(),
            "nor is it with no backend github (unprefixed in the catalog)"
        );
        assert!(rules.refusal("read__table", "db", &[]).is_some(), "an own name reading as prefixed: qualified only");
        assert!(rules.refusal("write__table", "db", &[]).is_none());
        assert!(rules.refusal("db__write__table", "db", &[]).is_none());
        // Deny rules match by every name: they only ever restrict more.
        let deny = super::tests::rules(json!({"deny": [{"tools": ["github__*"]}]}));
        assert!(deny.refusal("gamma__github__delete_everything", "gamma", &[]).is_some());
    }

    #[test]
    fn pins_and_drops_parameters() {
        let rules = rules(json!({
            "pin": [{"tools": ["search"], "params": {"limit": 10, "safe": true}}],
            "drop": [{"tools": ["search", "fetch"], "params": ["debug"]}],
        }));
        let decided = rules.decide("search", "web", &[], r#"{"q": "x", "limit": 1000, "debug": true}"#);
        assert_eq!(decided, Decision::Allow(Some(json!({"q": "x", "limit": 10, "safe": true}))));
        assert_eq!(rules.decide("fetch", "web", &[], r#"{"debug": 1}"#), Decision::Allow(Some(json!({}))));
        assert_eq!(rules.fixed_params("search", "web"), ["limit", "safe", "debug"]);
        assert_eq!(rules.fixed_params("web__search", "web"), ["limit", "safe", "debug"], "after a collision");
        assert!(Rules::new(serde_json::from_value(json!({"allow": ["["]})).unwrap()).is_err());
        assert!(Rules::new(serde_json::from_value(json!({"deny": [{"unless_roles": ["x"]}]})).unwrap()).is_err());
        assert!(serde_json::from_value::<Settings>(json!({"alow": []})).is_err());
    }
}
