//! What each caller sees of the catalog: the catalog as the interceptors' list hooks edited it
//! for one principal (items hidden, renamed, redescribed). Every request of that principal is
//! routed through its view, so a hidden item cannot be called by name and a renamed one is
//! found by its new name only. Views are kept per principal until the catalog or a plugin
//! changes; without interceptors everyone shares the catalog itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Catalog, Generations, Owner, Router};
use crate::access::Principal;
use crate::mcp::ListKind;
use crate::plugins::{Listed, Plugins};

/// Principals whose views are kept at most (beyond it the store starts over: a view is
/// rebuilt on demand, so this bounds memory, not correctness).
const MAX_KEPT: usize = 4096;

/// Bytes the kept views hold of their own at most, all together (lists an interceptor edited
/// for them; the rest they share with the catalog): past it, views are let go until the new
/// one fits. A view shares the definitions it shows unchanged, but holds an index entry and a
/// pointer per item of a list it edited ([`ITEM_BYTES`]) and each definition a hook changed
/// ([`held_bytes`]):
/// 4,096 principals of a catalog of 10,000 tools would otherwise keep 3 GB, and a hook giving
/// every tool a 6 KB description per principal grew the relay by 38 MB per principal.
const MAX_KEPT_BYTES: usize = 128 << 20;

/// What a view holds per item of a list of its own besides a changed definition: its index
/// entry and pointer.
const ITEM_BYTES: usize = 80;

/// How long a view built while a list hook failed stands in for one that did not: rebuilt on
/// every request, a hook that fails on a backend's huge list (out of memory, past its
/// deadline) cost every request of every principal that long.
const FAILED_KEPT_FOR: Duration = Duration::from_secs(5);

/// The views built from one generation of the catalog (a newer one replaces them all), each
/// with when it was built if a list hook failed meanwhile.
#[derive(Default)]
pub(super) struct Views(Mutex<Store>);

/// The views kept, of which catalog generation, and how many bytes they hold of their own.
#[derive(Default)]
struct Store {
    generations: Generations,
    views: HashMap<Principal, Held>,
    bytes: usize,
}

/// A view, and when it was built if a list hook failed for it.
type Kept = (Arc<Catalog>, Option<Instant>);

/// A kept view and how many bytes it holds of its own.
type Held = (Kept, usize);

impl Views {
    /// The view kept for `principal`, and whether every hook answered for it.
    fn get(&self, principal: &Principal, generations: Generations) -> Option<(Arc<Catalog>, bool)> {
        let store = self.0.lock().expect("views lock");
        let ((view, failed_at), _) = store.views.get(principal).filter(|_| store.generations == generations)?;
        match failed_at {
            None => Some((view.clone(), true)),
            Some(at) if at.elapsed() < FAILED_KEPT_FOR => Some((view.clone(), false)),
            Some(_) => None,
        }
    }

    /// Keeps `view` of `principal`, which holds `bytes` of its own.
    fn keep(&self, principal: &Principal, generations: Generations, view: Kept, bytes: usize) {
        let mut store = self.0.lock().expect("views lock");
        let (kept, built) = (store.generations, generations);
        if kept != built && kept.0 >= built.0 && kept.1 >= built.1 {
            return; // Built from an older catalog than the views kept now.
        }
        if kept != built {
            *store = Store { generations, ..Store::default() };
        }
        if let Some((_, replaced)) = store.views.remove(principal) {
            store.bytes -= replaced;
        }
        // Others let go (any: a view is rebuilt on demand) until this one fits.
        while store.views.len() >= MAX_KEPT || (store.bytes + bytes > MAX_KEPT_BYTES && !store.views.is_empty()) {
            let Some(other) = store.views.keys().next().cloned() else { break };
            if let Some((_, held)) = store.views.remove(&other) {
                store.bytes -= held;
            }
        }
        store.bytes += bytes;
        store.views.insert(principal.clone(), (view, bytes));
    }
}

impl Router {
    /// The catalog as `principal` sees it (the whole catalog when no interceptor edits lists).
    pub async fn catalog_for(&self, principal: &Principal) -> Arc<Catalog> {
        self.view_for(principal).await.0
    }

    /// The catalog as `principal` sees it, and whether every list hook answered (a view built
    /// while one failed serves for [`FAILED_KEPT_FOR`] and is no baseline for
    /// `list_changed`).
    pub async fn view_for(&self, principal: &Principal) -> (Arc<Catalog>, bool) {
        let (generations, catalog) = self.snapshot();
        if !self.plugins.edits_lists() {
            return (catalog, true);
        }
        if let Some(kept) = self.views.get(principal, generations) {
            return kept;
        }
        // Boxed: the common case (a kept view, or no list hook) answers without it, and every
        // request that asks for a view would otherwise carry its size (4 KB).
        let (view, edited, complete, transient) = Box::pin(edit(&self.plugins, &catalog, principal)).await;
        if !transient {
            let own = view.items_apart_from(&catalog) * ITEM_BYTES + edited;
            self.views.keep(principal, generations, (view.clone(), (!complete).then(Instant::now)), own);
        }
        (view, complete)
    }
}

/// About the memory a parsed definition holds: a value's slot for each of its values (its JSON
/// text undercounts them: `[0,0,...]` takes 16 times its text) and the bytes of its strings and
/// keys.
fn held_bytes(value: &Value) -> usize {
    const SLOT: usize = std::mem::size_of::<Value>();
    SLOT + match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(held_bytes).sum(),
        Value::Object(map) => map.iter().map(|(key, item)| SLOT + key.len() + held_bytes(item)).sum(),
        _ => 0,
    }
}

/// Asks the list hooks about every list but the relay's own tools (which interceptors do not
/// see); returns the view, the bytes the definitions the hooks changed hold, whether every
/// hook answered, and whether one was busy (the view is then not kept at all).
async fn edit(plugins: &Plugins, catalog: &Arc<Catalog>, principal: &Principal) -> (Arc<Catalog>, usize, bool, bool) {
    let mut edits: [Option<Vec<Option<Value>>>; 4] = Default::default();
    let (mut complete, mut transient, mut changed_bytes) = (true, false, 0);
    for (slot, kind) in edits.iter_mut().zip(ListKind::ALL) {
        let items = catalog.items(kind);
        let (positions, offered): (Vec<usize>, Vec<Listed>) = items
            .iter()
            .enumerate()
            .filter(|(_, (owner, ..))| **owner != Owner::Builtin)
            .map(|(i, &(owner, name, definition))| (i, Listed { backend: owner.name(), name, definition }))
            .unzip();
        let Some(edited) = plugins.edit_list(principal, kind, &offered).await else { continue };
        complete &= edited.complete;
        transient |= edited.transient;
        // One look at each item: whether the hooks left it as offered, and what it holds if not.
        let (mut unchanged, mut held) = (true, 0);
        for (edit, item) in edited.items.iter().zip(&offered) {
            match edit {
                Some(edit) if edit == item.definition => {}
                Some(edit) => (unchanged, held) = (false, held + held_bytes(edit)),
                None => unchanged = false,
            }
        }
        if unchanged {
            continue;
        }
        changed_bytes += held;
        // The relay's own tools as they are; every other item as the hooks left it.
        let mut all: Vec<Option<Value>> = items
            .iter()
            .map(|&(owner, _, definition)| (*owner == Owner::Builtin).then(|| definition.clone()))
            .collect();
        for (i, edit) in positions.into_iter().zip(edited.items) {
            all[i] = edit;
        }
        *slot = Some(all);
    }
    if edits.iter().all(Option::is_none) {
        return (catalog.clone(), 0, complete, transient);
    }
    let view = catalog.view(|kind| {
        let i = ListKind::ALL.iter().position(|&k| k == kind).expect("every kind is in ALL");
        edits[i].take()
    });
    (Arc::new(view), changed_bytes, complete, transient)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn catalog(n: usize) -> Arc<Catalog> {
        let tools: Vec<Value> = (0..n).map(|i| json!({"name": format!("t{i}")})).collect();
        Arc::new(Catalog::from_sources(&[], [(&Owner::Backend("a".into()), tools.as_slice())].into_iter()))
    }

    #[test]
    fn kept_views_count_their_own_bytes_and_a_replaced_view_gives_its_count_back() {
        let views = Views::default();
        let named = |id: &str| Principal { id: id.into(), roles: Vec::new() };
        let (alice, bob) = (named("alice"), named("bob"));
        views.keep(&alice, (1, 1), (catalog(3), None), 3);
        views.keep(&bob, (1, 1), (catalog(5), None), 5);
        views.keep(&alice, (1, 1), (catalog(2), None), 2);
        assert_eq!(views.0.lock().unwrap().bytes, 7);
        views.keep(&bob, (2, 1), (catalog(4), None), 4);
        let store = views.0.lock().unwrap();
        assert_eq!((store.bytes, store.views.len()), (4, 1), "a newer catalog starts the store over");
    }

    #[test]
    fn a_definition_is_counted_by_what_it_holds_not_by_its_text() {
        let numbers = Value::Array(vec![json!(0); 1000]);
        assert!(held_bytes(&numbers) >= 16 * numbers.to_string().len(), "{}", held_bytes(&numbers));
        let description = json!({"name": "t", "description": "d".repeat(10_000)});
        let held = held_bytes(&description);
        assert!((10_000..10_400).contains(&held), "a long string is about its length: {held}");
    }

    #[test]
    fn views_past_the_bound_are_let_go_one_by_one_and_a_shared_list_costs_nothing() {
        let views = Views::default();
        let named = |id: String| Principal { id, roles: Vec::new() };
        let whole = catalog(3);
        for n in 0..10 {
            views.keep(&named(format!("p{n}")), (1, 1), (catalog(1), None), MAX_KEPT_BYTES / 4);
        }
        let store = views.0.lock().unwrap();
        assert_eq!((store.views.len(), store.bytes), (4, MAX_KEPT_BYTES), "the newest kept, not all dropped");
        assert!(store.views.contains_key(&named("p9".into())));
        drop(store);
        let unchanged = whole.view(|_| None);
        assert_eq!(unchanged.items_apart_from(&whole), 0);
        let edited = whole.view(|kind| (kind == ListKind::Tools).then(|| vec![None, None, None]));
        assert_eq!(edited.items_apart_from(&whole), 0, "an emptied list holds nothing");
    }
}
