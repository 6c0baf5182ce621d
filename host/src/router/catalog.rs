//! The aggregated tool catalog and the collision rule.
//!
//! Rule (documented in the README): a tool keeps its upstream name while that name is unique
//! across all backends and is not a built-in `relay_*` name. When two or more backends offer
//! the same name, *every* copy is exposed as `<backend>__<tool>`, so no tool shadows another
//! and the result does not depend on which backend connected first. Names outside
//! `[A-Za-z0-9_.-]` are rewritten with `_`, and names are cut to 128 characters.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

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
    /// The backend of that name.
    Backend(String),
}

impl Owner {
    /// The backend name logged for built-in tools.
    pub const BUILTIN_NAME: &'static str = "relay";
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
    /// Builds the catalog from the built-in tools and every upstream's last known tools.
    pub fn build(builtin: &[Value], upstreams: &Upstreams) -> Self {
        let sources: Vec<(String, std::sync::Arc<Vec<Value>>)> =
            upstreams.list().iter().map(|u| (u.name().to_owned(), u.tools())).collect();
        Self::from_sources(builtin, sources.iter().map(|(name, tools)| (name.as_str(), tools.as_slice())))
    }

    /// Applies the collision rule. `sources` must come in a stable order (sorted by backend).
    pub fn from_sources<'a>(builtin: &[Value], sources: impl Iterator<Item = (&'a str, &'a [Value])> + Clone) -> Self {
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
        for (backend, tools) in sources {
            for tool in tools {
                let Some(original) = tool_name(tool) else { continue };
                let clean = sanitize(original);
                let exposed = if counts[&clean] == 1 && !reserved.contains(clean.as_str()) {
                    clean
                } else {
                    cut(format!("{backend}{PREFIX_SEPARATOR}{clean}"))
                };
                catalog.push(exposed, Owner::Backend(backend.to_owned()), original, tool);
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

    /// How many tools `backend` contributes.
    pub fn count_for(&self, backend: &str) -> usize {
        self.entries.iter().filter(|e| matches!(&e.owner, Owner::Backend(b) if b == backend)).count()
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
        let catalog = Catalog::from_sources(&builtin, [("a", a.as_slice()), ("b", b.as_slice())].into_iter());
        assert_eq!(names(&catalog), ["relay_get_status", "a__echo", "add", "b__echo", "b__relay_get_status", "mul"]);
        let entry = catalog.get("b__echo").unwrap();
        assert_eq!((entry.owner.clone(), entry.upstream_name.as_str()), (Owner::Backend("b".into()), "echo"));
        assert_eq!(entry.definition["name"], "b__echo");
    }

    #[test]
    fn the_result_does_not_depend_on_arrival_order_within_a_backend_set() {
        let (a, b) = (tools(&["x"]), tools(&["x"]));
        let one = Catalog::from_sources(&[], [("a", a.as_slice()), ("b", b.as_slice())].into_iter());
        let two = Catalog::from_sources(&[], [("a", a.as_slice()), ("b", b.as_slice())].into_iter());
        assert_eq!(names(&one), names(&two));
    }

    #[test]
    fn names_are_sanitised_cut_and_kept_unique() {
        let long = "t".repeat(200);
        let a = tools(&["has space", &long, "x"]);
        let weird = tools(&["a__x", "x"]);
        let catalog = Catalog::from_sources(&[], [("a", a.as_slice()), ("w", weird.as_slice())].into_iter());
        let names = names(&catalog);
        assert_eq!(names[0], "has_space");
        assert_eq!(names[1].len(), 128);
        assert!(names.iter().all(|n| n.len() <= 128));
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(catalog.get("has_space").unwrap().upstream_name, "has space");
    }
}
