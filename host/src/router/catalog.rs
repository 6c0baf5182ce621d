//! The aggregated tool catalog and the collision rule.
//!
//! Rule (documented in the README): a tool keeps its upstream name while that name is unique
//! across all backends and is not a built-in `relay_*` name. When two or more backends offer
//! the same name, *every* copy is exposed as `<backend>__<tool>`, so no tool shadows another
//! and the result does not depend on which backend connected first. Names outside
//! `[A-Za-z0-9_.-]` are rewritten with `_`, and names are cut to 128 characters.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::plugins::Plugins;
use crate::upstream::Upstreams;

/// Joins backend and tool name when names collide.
pub const PREFIX_SEPARATOR: &str = "__";

/// Longest tool name the relay exposes.
const MAX_NAME: usize = 128;

/// Who serves a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The relay's built-in tools.
    Builtin,
    /// The MCP backend of that name.
    Backend(String),
    /// The adapter plugin of that name.
    Adapter(String),
}

impl Owner {
    /// The backend name logged for built-in tools.
    pub const BUILTIN_NAME: &'static str = "relay";

    /// The name used in logs and as the collision prefix.
    pub fn name(&self) -> &str {
        match self {
            Owner::Builtin => Self::BUILTIN_NAME,
            Owner::Backend(name) | Owner::Adapter(name) => name,
        }
    }
}

/// One tool as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The name clients call.
    pub name: String,
    /// Who serves it.
    pub owner: Owner,
    /// The name the owner knows it by.
    pub upstream_name: String,
    /// The tool definition sent to clients (with `name` set to the exposed name).
    pub definition: Value,
}

/// An immutable snapshot of every tool the relay offers.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// Builds the catalog from the built-in tools, every upstream's last known tools (sorted by
    /// backend name) and every adapter's tools (in configuration order).
    pub fn build(builtin: &[Value], upstreams: &Upstreams, plugins: &Plugins) -> Self {
        let mut sources: Vec<(Owner, Arc<Vec<Value>>)> =
            upstreams.list().iter().map(|u| (Owner::Backend(u.name().to_owned()), u.tools())).collect();
        sources.extend(plugins.adapter_tools().into_iter().map(|(name, tools)| (Owner::Adapter(name), tools)));
        Self::from_sources(builtin, sources.iter().map(|(owner, tools)| (owner, tools.as_slice())))
    }

    /// Applies the collision rule. `sources` must come in a stable order.
    pub fn from_sources<'a>(
        builtin: &[Value],
        sources: impl Iterator<Item = (&'a Owner, &'a [Value])> + Clone,
    ) -> Self {
        let reserved: HashSet<&str> = builtin.iter().filter_map(tool_name).collect();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, tools) in sources.clone() {
            for tool in tools.iter().filter_map(tool_name) {
                *counts.entry(sanitize(tool)).or_default() += 1;
            }
        }
        let mut catalog = Catalog::default();
        for tool in builtin {
            if let Some(name) = tool_name(tool) {
                catalog.push(name.to_owned(), Owner::Builtin, name, tool);
            }
        }
        for (owner, tools) in sources {
            for tool in tools {
                let Some(original) = tool_name(tool) else { continue };
                let clean = sanitize(original);
                let exposed = if counts[&clean] == 1 && !reserved.contains(clean.as_str()) {
                    clean
                } else {
                    cut(format!("{}{PREFIX_SEPARATOR}{clean}", owner.name()))
                };
                catalog.push(exposed, owner.clone(), original, tool);
            }
        }
        catalog
    }

    fn push(&mut self, mut name: String, owner: Owner, upstream_name: &str, tool: &Value) {
        if self.by_name.contains_key(&name) {
            // Only reachable with adversarial names (a tool literally called `a__x` next to a
            // collision on `x` from backend `a`); a numbered suffix keeps both reachable.
            let base = name.clone();
            let mut n = 2;
            while self.by_name.contains_key(&name) {
                name = cut(format!("{base}_{n}"));
                n += 1;
            }
            tracing::warn!(tool = upstream_name, exposed = %name, "tool name still collided after prefixing; numbered");
        }
        let mut definition = tool.clone();
        definition["name"] = Value::String(name.clone());
        self.by_name.insert(name.clone(), self.entries.len());
        self.entries.push(Entry { name, owner, upstream_name: upstream_name.to_owned(), definition });
    }

    /// The entry clients call `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// Every entry, built-ins first, then by backend name.
    pub fn tools(&self) -> &[Entry] {
        &self.entries
    }
}

fn tool_name(tool: &Value) -> Option<&str> {
    tool.get("name").and_then(Value::as_str).filter(|n| !n.is_empty())
}

fn sanitize(name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect();
    cut(clean)
}

fn cut(mut name: String) -> String {
    name.truncate(MAX_NAME);
    name
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tools(names: &[&str]) -> Vec<Value> {
        names.iter().map(|n| json!({"name": n, "inputSchema": {"type": "object"}})).collect()
    }

    fn names(catalog: &Catalog) -> Vec<&str> {
        catalog.tools().iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn unique_names_stay_and_collisions_prefix_every_copy() {
        let builtin = tools(&["relay_get_status"]);
        let (a, b) = (tools(&["echo", "add"]), tools(&["echo", "relay_get_status", "mul"]));
        let (oa, ob) = (Owner::Backend("a".into()), Owner::Adapter("b".into()));
        let catalog = Catalog::from_sources(&builtin, [(&oa, a.as_slice()), (&ob, b.as_slice())].into_iter());
        assert_eq!(names(&catalog), ["relay_get_status", "a__echo", "add", "b__echo", "b__relay_get_status", "mul"]);
        let entry = catalog.get("b__echo").unwrap();
        assert_eq!((entry.owner.clone(), entry.upstream_name.as_str()), (Owner::Adapter("b".into()), "echo"));
        assert_eq!(entry.definition["name"], "b__echo");
    }

    #[test]
    fn the_result_does_not_depend_on_arrival_order_within_a_backend_set() {
        let (a, b) = (tools(&["x"]), tools(&["x"]));
        let (oa, ob) = (Owner::Backend("a".into()), Owner::Backend("b".into()));
        let one = Catalog::from_sources(&[], [(&oa, a.as_slice()), (&ob, b.as_slice())].into_iter());
        let two = Catalog::from_sources(&[], [(&oa, a.as_slice()), (&ob, b.as_slice())].into_iter());
        assert_eq!(names(&one), names(&two));
    }

    #[test]
    fn names_are_sanitised_cut_and_kept_unique() {
        let long = "t".repeat(200);
        let a = tools(&["has space", &long, "x"]);
        let weird = tools(&["a__x", "x"]);
        let (oa, ow) = (Owner::Backend("a".into()), Owner::Backend("w".into()));
        let catalog = Catalog::from_sources(&[], [(&oa, a.as_slice()), (&ow, weird.as_slice())].into_iter());
        let names = names(&catalog);
        assert_eq!(names[0], "has_space");
        assert_eq!(names[1].len(), 128);
        assert!(names.iter().all(|n| n.len() <= 128));
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(catalog.get("has_space").unwrap().upstream_name, "has space");
    }
}
