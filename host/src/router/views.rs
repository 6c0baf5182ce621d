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

/// How long a view built while a list hook failed stands in for one that did not: rebuilt on
/// every request, a hook that fails on a backend's huge list (out of memory, past its
/// deadline) cost every request of every principal that long.
const FAILED_KEPT_FOR: Duration = Duration::from_secs(5);

/// The views built from one generation of the catalog (a newer one replaces them all), each
/// with when it was built if a list hook failed meanwhile.
#[derive(Default)]
pub(super) struct Views(Mutex<(Generations, HashMap<Principal, Kept>)>);

/// A view, and when it was built if a list hook failed for it.
type Kept = (Arc<Catalog>, Option<Instant>);

impl Views {
    /// The view kept for `principal`, and whether every hook answered for it.
    fn get(&self, principal: &Principal, generations: Generations) -> Option<(Arc<Catalog>, bool)> {
        let views = self.0.lock().expect("views lock");
        let (view, failed_at) = views.1.get(principal).filter(|_| views.0 == generations)?;
        match failed_at {
            None => Some((view.clone(), true)),
            Some(at) if at.elapsed() < FAILED_KEPT_FOR => Some((view.clone(), false)),
            Some(_) => None,
        }
    }

    fn keep(&self, principal: &Principal, generations: Generations, view: Kept) {
        let mut views = self.0.lock().expect("views lock");
        let (kept, built) = (views.0, generations);
        if kept != built && kept.0 >= built.0 && kept.1 >= built.1 {
            return; // Built from an older catalog than the views kept now.
        }
        if kept != built || views.1.len() >= MAX_KEPT {
            views.1.clear();
            views.0 = generations;
        }
        views.1.insert(principal.clone(), view);
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
        let (view, complete, transient) = Box::pin(edit(&self.plugins, &catalog, principal)).await;
        if !transient {
            self.views.keep(principal, generations, (view.clone(), (!complete).then(Instant::now)));
        }
        (view, complete)
    }
}

/// Asks the list hooks about every list but the relay's own tools (which interceptors do not
/// see); returns the view, whether every hook answered, and whether one was busy (the view is
/// then not kept at all).
async fn edit(plugins: &Plugins, catalog: &Arc<Catalog>, principal: &Principal) -> (Arc<Catalog>, bool, bool) {
    let mut edits: [Option<Vec<Option<Value>>>; 4] = Default::default();
    let (mut complete, mut transient) = (true, false);
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
        if edited.items.iter().zip(&offered).all(|(edit, item)| edit.as_ref() == Some(item.definition)) {
            continue;
        }
        let mut all: Vec<Option<Value>> = items.iter().map(|&(_, _, definition)| Some(definition.clone())).collect();
        for (i, edit) in positions.into_iter().zip(edited.items) {
            all[i] = edit;
        }
        *slot = Some(all);
    }
    if edits.iter().all(Option::is_none) {
        return (catalog.clone(), complete, transient);
    }
    let view = catalog.view(|kind| {
        let i = ListKind::ALL.iter().position(|&k| k == kind).expect("every kind is in ALL");
        edits[i].take()
    });
    (Arc::new(view), complete, transient)
}
