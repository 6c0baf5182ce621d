//! One part of the catalog (tools, prompts, resources or templates' entries) and the collision
//! rule that names its entries: unique names stay, names two sources offer are exposed in each
//! owner's prefixed form, and a source's name in another's prefixed form is its own prefixed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::catalog::{Entry, Owner, key_of};
use crate::mcp::names::MAX_NAME;

/// Name-keyed (or URI-keyed) entries with unique keys: looked up several times per call,
/// with a fast hasher (std's SipHash was 0.7k instructions per call here). Its keys come from
/// backends' lists (clients only look up), and each map is seeded at random: a backend
/// cannot choose names that collide.
#[derive(Debug, Default, Clone)]
pub struct Section {
    /// Shared with every caller's view that shows them unchanged: a view costs its edits and
    /// its index, not a copy of every definition.
    entries: Vec<Arc<Entry>>,
    by_key: HashMap<String, usize, foldhash::fast::RandomState>,
    /// Resource URIs exposed under another one (`relay://<backend>/...` after a collision): not
    /// names clients may use for them.
    moved: HashSet<String>,
}

impl Section {
    /// The entry clients call `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.by_key.get(key).map(|&i| &*self.entries[i])
    }

    /// Whether `name` is a resource URI the catalog exposes under another (one two backends
    /// offer is `relay://<backend>/...` for each), and no entry's own: a template matching it
    /// must not reach the resource by it, around the view and the interceptors that know the
    /// resource by its catalog name.
    pub fn is_moved(&self, name: &str) -> bool {
        self.moved.contains(name) && !self.by_key.contains_key(name)
    }

    /// Every entry in catalog order.
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    pub(super) fn push(&mut self, field: &str, mut key: String, owner: Owner, upstream_name: &str, item: &Value) {
        if self.by_key.contains_key(&key) {
            // Only reachable with adversarial names (a tool literally called `a__x` next to a
            // collision on `x` from backend `a`); a numbered suffix keeps both reachable.
            let base = key.clone();
            let mut n = 2;
            while self.by_key.contains_key(&key) {
                key = numbered(&base, n);
                n += 1;
            }
            tracing::warn!(item = upstream_name, exposed = %key, "name still collided after prefixing; numbered");
        }
        let mut definition = item.clone();
        definition[field] = Value::String(key.clone());
        self.by_key.insert(key.clone(), self.entries.len());
        if field == "uri" && key != upstream_name {
            self.moved.insert(upstream_name.to_owned());
        }
        let catalog_name = key.clone();
        self.entries.push(Arc::new(Entry {
            name: key,
            catalog_name,
            owner,
            upstream_name: upstream_name.to_owned(),
            definition,
        }));
    }

    /// The section as one caller sees it: `edits` (one per entry, in order) hides an entry
    /// (`None`) or gives its definition, whose `field` may rename it. A rename onto a name the
    /// catalog already has (another source's item) hides the renamed entry; two renames onto
    /// one new name hide the later. An entry given as it is stays shared with the catalog.
    pub(super) fn view(self: &Arc<Self>, field: &str, edits: Option<Vec<Option<Value>>>) -> Arc<Section> {
        let Some(edits) = edits else { return self.clone() };
        let mut section = Section::default();
        for (entry, edit) in self.entries.iter().zip(edits) {
            let Some(definition) = edit else { continue };
            let name = definition.get(field).and_then(Value::as_str).unwrap_or(&entry.name).to_owned();
            let takes_another = name != entry.name && self.by_key.contains_key(&name);
            if takes_another || section.by_key.contains_key(&name) {
                tracing::warn!(item = %entry.catalog_name, name = %name, "an interceptor renamed an item onto a name already listed; the later item is hidden");
                continue;
            }
            section.by_key.insert(name.clone(), section.entries.len());
            let seen = if definition == entry.definition {
                entry.clone()
            } else {
                Arc::new(Entry { name, definition, ..(**entry).clone() })
            };
            section.entries.push(seen);
        }
        Arc::new(section)
    }

    /// Applies the collision rule to the items of `sources` under `field`; `expose` turns a
    /// clean key into its prefixed form for `owner`. A key in a form that belongs to another
    /// source (`claims_other`: `<other>__x`, `relay://<other>/...`) is exposed in its owner's
    /// own prefixed form instead, so no source can answer under another's name.
    pub(super) fn build<'a>(
        field: &str,
        reserved: &HashSet<&str>,
        sources: impl Iterator<Item = (&'a Owner, &'a [Value])> + Clone,
        clean: impl Fn(&str) -> String,
        expose: impl Fn(&Owner, &str) -> String,
        claims_other: impl Fn(&Owner, &str) -> bool,
        section: &mut Section,
    ) {
        // A source that lists one name twice (overlapping pages, or on purpose) offers it once:
        // counted twice it would be prefixed, and its second copy numbered under a name that
        // no rule or binding knows it by.
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, items) in sources.clone() {
            let mut listed = HashSet::new();
            for original in items.iter().filter_map(|i| key_of(i, field)) {
                if listed.insert(original) {
                    *counts.entry(clean(original)).or_default() += 1;
                }
            }
        }
        for (owner, items) in sources {
            let mut listed = HashSet::new();
            for item in items {
                let Some(original) = key_of(item, field) else { continue };
                if !listed.insert(original) {
                    tracing::debug!(
                        source = owner.name(),
                        item = original,
                        "{field} listed twice by its source; the first is kept"
                    );
                    continue;
                }
                let key = clean(original);
                let exposed = if claims_other(owner, &key) {
                    let renamed = expose(owner, &key);
                    tracing::warn!(source = owner.name(), item = original, exposed = %renamed, "{field} takes another source's prefixed form; renamed");
                    renamed
                } else if counts[&key] == 1 && !reserved.contains(key.as_str()) {
                    key
                } else {
                    expose(owner, &key)
                };
                section.push(field, exposed, owner.clone(), original, item);
            }
        }
    }
}

/// `base` with the suffix `_n`, `base` cut before it (at a character boundary) so that the
/// name fits [`MAX_NAME`] with its suffix: cut after it, a name of [`MAX_NAME`] came back as
/// itself on every try, and the catalog's build never ended.
fn numbered(base: &str, n: usize) -> String {
    let suffix = format!("_{n}");
    format!("{}{suffix}", &base[..base.floor_char_boundary(MAX_NAME - suffix.len())])
}
