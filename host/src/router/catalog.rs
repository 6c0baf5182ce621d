//! The aggregated catalog (tools, prompts, resources, resource templates) and the collision
//! rule.
//!
//! Rule (documented in the README): a tool or prompt keeps its upstream name while that name is
//! unique across all sources and is not a built-in `relay_*` name. When two or more sources
//! offer the same name, *every* copy is exposed as `<source>__<name>`, so nothing shadows
//! anything and the result does not depend on which backend connected first. Tool names
//! outside `[A-Za-z0-9_.-]` are rewritten with `_`, and names are cut to 128 characters.
//! Resources follow the same rule on their URI: a URI offered by two backends is exposed as
//! `relay://<backend>/<percent-encoded original URI>` for each. Resource templates are listed
//! as their backends give them; a read of a URI no listed resource has goes to the backend
//! whose template's literal prefix matches it best.

use std::collections::HashSet;
use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

pub use super::section::Section;
use crate::access::Route;
use crate::mcp::ListKind;
use crate::mcp::names::{cut, sanitize};
use crate::plugins::Plugins;
use crate::upstream::Upstreams;

pub use crate::mcp::names::PREFIX_SEPARATOR;

/// Characters escaped in a rewritten resource URI: everything but RFC 3986's unreserved set.
const URI_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The client-facing URI of `uri` from `owner` when it collides.
pub fn relay_uri(owner: &Owner, uri: &str) -> String {
    format!("relay://{}/{}", owner.name(), utf8_percent_encode(uri, URI_ESCAPE))
}

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

/// One catalog item as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The name (or URI) clients use.
    pub name: String,
    /// The name in the relay's own catalog, before any interceptor renamed it for a caller
    /// (what `bind` globs and the interceptors' hooks see).
    pub catalog_name: String,
    /// Who serves it.
    pub owner: Owner,
    /// The name (or URI) the owner knows it by.
    pub upstream_name: String,
    /// The definition sent to clients (with the exposed name or URI).
    pub definition: Value,
}

/// A resource template and its backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// The backend.
    pub owner: Owner,
    /// The template as the backend gave it.
    pub definition: Value,
    /// The literal text before the first `{`, for routing reads.
    prefix: String,
}

/// An immutable snapshot of everything the relay offers. Lists are shared: a caller's view
/// holds its own copy only of the lists interceptors edited for it, and of those only the
/// items they changed (the rest are shared).
#[derive(Debug, Default)]
pub struct Catalog {
    tools: Arc<Section>,
    prompts: Arc<Section>,
    resources: Arc<Section>,
    templates: Arc<Vec<Arc<Template>>>,
}

impl Catalog {
    /// Builds the catalog from the built-in tools, every upstream's last known lists (sorted by
    /// backend name) and every adapter's tools (in configuration order).
    pub fn build(builtin: &[Value], upstreams: &Upstreams, plugins: &Plugins) -> Self {
        let listings: Vec<(Owner, crate::upstream::Listing)> =
            upstreams.list().iter().map(|u| (Owner::Backend(u.name().to_owned()), u.listing())).collect();
        let mut tool_sources: Vec<(Owner, Arc<Vec<Value>>)> =
            listings.iter().map(|(owner, listing)| (owner.clone(), listing.tools.clone())).collect();
        tool_sources.extend(plugins.adapter_tools().into_iter().map(|(name, tools)| (Owner::Adapter(name), tools)));
        let mut catalog = Self::from_sources(builtin, tool_sources.iter().map(|(o, t)| (o, t.as_slice())));
        let sources: HashSet<&str> = tool_sources.iter().map(|(owner, _)| owner.name()).collect();
        let of = |kind: ListKind| listings.iter().map(move |(owner, listing)| (owner, listing.get(kind).as_slice()));
        Section::build(
            "name",
            &HashSet::new(),
            of(ListKind::Prompts),
            str::to_owned,
            |owner, name| format!("{}{PREFIX_SEPARATOR}{name}", owner.name()),
            |owner, name| claims_prefix(&sources, owner, name),
            Arc::make_mut(&mut catalog.prompts),
        );
        Section::build(
            "uri",
            &HashSet::new(),
            of(ListKind::Resources),
            str::to_owned,
            relay_uri,
            claims_relay_uri,
            Arc::make_mut(&mut catalog.resources),
        );
        for (owner, templates) in of(ListKind::ResourceTemplates) {
            for template in templates {
                if let Some(uri) = key_of(template, "uriTemplate") {
                    let prefix = uri.split('{').next().unwrap_or("").to_owned();
                    let template = Arc::new(Template { owner: owner.clone(), definition: template.clone(), prefix });
                    Arc::make_mut(&mut catalog.templates).push(template);
                }
            }
        }
        catalog
    }

    /// The tool part of the catalog from explicit sources (built-ins first, reserved).
    pub fn from_sources<'a>(
        builtin: &[Value],
        sources: impl Iterator<Item = (&'a Owner, &'a [Value])> + Clone,
    ) -> Self {
        let reserved: HashSet<&str> = builtin.iter().filter_map(|t| key_of(t, "name")).collect();
        let names: HashSet<&str> =
            sources.clone().map(|(owner, _)| owner.name()).chain([Owner::BUILTIN_NAME]).collect();
        let mut catalog = Catalog::default();
        for tool in builtin {
            if let Some(name) = key_of(tool, "name") {
                Arc::make_mut(&mut catalog.tools).push("name", name.to_owned(), Owner::Builtin, name, tool);
            }
        }
        Section::build(
            "name",
            &reserved,
            sources,
            sanitize,
            |owner, name| cut(format!("{}{PREFIX_SEPARATOR}{name}", owner.name())),
            |owner, name| claims_prefix(&names, owner, name),
            Arc::make_mut(&mut catalog.tools),
        );
        catalog
    }

    /// The tool clients call `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.tools.get(name)
    }

    /// Where a call of the tool clients call `name` goes: its owner and catalog name.
    pub fn route(&self, name: &str) -> Option<Route<'_>> {
        let entry = self.tools.get(name)?;
        Some(Route { backend: entry.owner.name(), tool: &entry.catalog_name })
    }

    /// Every tool, built-ins first, then by backend name, then adapters.
    pub fn tools(&self) -> &[Arc<Entry>] {
        self.tools.entries()
    }

    /// Prompts.
    pub fn prompts(&self) -> &Section {
        &self.prompts
    }

    /// Concrete resources.
    pub fn resources(&self) -> &Section {
        &self.resources
    }

    /// Resource templates, by backend name.
    pub fn templates(&self) -> &[Arc<Template>] {
        &self.templates
    }

    /// Owners whose templates could produce `uri`, best (longest literal prefix) first.
    pub fn template_owners(&self, uri: &str) -> Vec<&Owner> {
        let mut matches: Vec<&Arc<Template>> = self.templates.iter().filter(|t| uri.starts_with(&t.prefix)).collect();
        matches.sort_by_key(|t| std::cmp::Reverse(t.prefix.len()));
        let mut owners: Vec<&Owner> = Vec::new();
        for template in matches {
            if !owners.contains(&&template.owner) {
                owners.push(&template.owner);
            }
        }
        owners
    }

    /// The owner of the template whose `uriTemplate` is exactly `template` (for completion).
    pub fn template_owner(&self, template: &str) -> Option<&Owner> {
        self.templates.iter().find(|t| key_of(&t.definition, "uriTemplate") == Some(template)).map(|t| &t.owner)
    }

    /// Every item of the `kind` list with its owner and catalog name (a template's is its URI
    /// template), in list order: what the interceptors' list hooks are asked about.
    pub fn items<'a>(&'a self, kind: ListKind) -> Vec<(&'a Owner, &'a str, &'a Value)> {
        let section = match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::ResourceTemplates => {
                let uri = |t: &'a Arc<Template>| key_of(&t.definition, "uriTemplate").unwrap_or_default();
                return self.templates.iter().map(|t| (&t.owner, uri(t), &t.definition)).collect();
            }
        };
        section.entries().iter().map(|e| (&e.owner, e.catalog_name.as_str(), &e.definition)).collect()
    }

    /// The catalog as one caller sees it, given what the list hooks made of each list (`None`:
    /// the list as it is; otherwise one entry per item of [`Catalog::items`], hidden or edited).
    /// Renamed tools and prompts are found by their new names only, hidden items not at all,
    /// so a call by a name the caller was not shown is refused like an unknown one.
    pub fn view(&self, mut edits: impl FnMut(ListKind) -> Option<Vec<Option<Value>>>) -> Catalog {
        let templates = match edits(ListKind::ResourceTemplates) {
            None => self.templates.clone(),
            Some(edits) => Arc::new(
                self.templates
                    .iter()
                    .zip(edits)
                    .filter_map(|(template, edit)| match edit? {
                        definition if definition == template.definition => Some(template.clone()),
                        definition => Some(Arc::new(Template { definition, ..(**template).clone() })),
                    })
                    .collect(),
            ),
        };
        Catalog {
            tools: self.tools.view("name", edits(ListKind::Tools)),
            prompts: self.prompts.view("name", edits(ListKind::Prompts)),
            resources: self.resources.view("uri", edits(ListKind::Resources)),
            templates,
        }
    }

    /// How many items this view holds in lists of its own, not shared with `catalog` (what
    /// bounds the views kept of it).
    pub fn items_apart_from(&self, catalog: &Catalog) -> usize {
        let own = |mine: &Arc<Section>, theirs: &Arc<Section>| {
            if Arc::ptr_eq(mine, theirs) { 0 } else { mine.entries().len() }
        };
        let templates = if Arc::ptr_eq(&self.templates, &catalog.templates) { 0 } else { self.templates.len() };
        own(&self.tools, &catalog.tools)
            + own(&self.prompts, &catalog.prompts)
            + own(&self.resources, &catalog.resources)
            + templates
    }

    /// Whether anything clients see differs from `other` (for list_changed announcements).
    pub fn differs(&self, other: &Catalog, kind: ListKind) -> bool {
        match kind {
            ListKind::Tools => self.tools.entries() != other.tools.entries(),
            ListKind::Prompts => self.prompts.entries() != other.prompts.entries(),
            ListKind::Resources => self.resources.entries() != other.resources.entries(),
            ListKind::ResourceTemplates => self.templates != other.templates,
        }
    }
}

/// Whether `name` has the form `<source>__...` of a source other than `owner`: any source
/// whose name starts it, not only the part before its first `__` (a source named `ops` must
/// not list `ops__prod__deploy`, the prefixed name of source `ops__prod`'s `deploy`, nor `a`
/// list `a___deploy`, source `a_`'s).
fn claims_prefix(sources: &HashSet<&str>, owner: &Owner, name: &str) -> bool {
    sources.iter().any(|source| {
        *source != owner.name() && name.strip_prefix(source).is_some_and(|rest| rest.starts_with(PREFIX_SEPARATOR))
    })
}

/// Whether `uri` is a `relay://` URI of any source other than `owner` (the relay's own scheme
/// for rewritten URIs: only a source's own rewritten form may start with it).
fn claims_relay_uri(owner: &Owner, uri: &str) -> bool {
    uri.strip_prefix("relay://").is_some_and(|rest| rest.split('/').next() != Some(owner.name()))
}

pub(super) fn key_of<'a>(item: &'a Value, field: &str) -> Option<&'a str> {
    item.get(field).and_then(Value::as_str).filter(|n| !n.is_empty())
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
