//! The `interceptor` world's list hook: what one principal sees of a list. Every interceptor
//! bound to an item (`bind`), in the listed order, is asked about it (one call for all its
//! items; again backend by backend when that fails) and may hide it or give it a new definition (a tool or prompt renamed, a description replaced, a schema edited). The
//! answer is checked here against the hook's contract; the router turns it into the principal's
//! view of the catalog and maps renamed names back on calls.

use serde_json::Value;

use super::bindings::interceptor::exports::relay::plugin::interception::{
    ListDecision, ListItem, ListKind as WitListKind,
};
use super::bindings::types;
use super::loaded::Bound;
use super::registry::{Plugins, Slot};
use super::sandbox::{PluginError, fails_closed};
use crate::access::Principal;
use crate::config::Hook;
use crate::mcp::{ListKind, names};

/// Largest definition (JSON text) a hook may give an item, unless it was offered larger: views
/// are kept per principal, so a hook must not be able to inflate them.
const MAX_ITEM_BYTES: usize = 64 << 10;

/// How much larger than the list it was offered one answer may be, all its items together:
/// twice as large and [`LIST_GROWTH_BYTES`] more (a hook adding a few KB to every one of
/// thousands of tools made each principal's `tools/list` 30 MB).
const LIST_GROWTH_BYTES: usize = 1 << 20;

/// One list item as the hooks are told about it.
pub struct Listed<'a> {
    /// The backend or adapter that serves it.
    pub backend: &'a str,
    /// Its name (or URI, or URI template) in the relay's catalog.
    pub name: &'a str,
    /// Its definition in the catalog.
    pub definition: &'a Value,
}

/// What the hooks made of one list.
pub struct Edited {
    /// Per item, in order: hidden (`None`) or the definition the principal sees.
    pub items: Vec<Option<Value>>,
    /// False when a hook failed: the answer is not kept as if it had answered.
    pub complete: bool,
    /// Whether a hook failed for want of a free instance (a flood, not its fault): the answer
    /// holds for this request only.
    pub transient: bool,
}

impl Plugins {
    /// Whether any interceptor may edit lists (without one, everyone sees the catalog as is).
    pub fn edits_lists(&self) -> bool {
        self.slots.iter().any(|s| s.intercepts(Hook::List))
    }

    /// Runs the list hooks of every interceptor bound to some of `items` for `principal`;
    /// `None` when none is bound to any (the list is seen as it is).
    pub async fn edit_list(&self, principal: &Principal, kind: ListKind, items: &[Listed<'_>]) -> Option<Edited> {
        let bound_to = |slot: &Slot, item: &Listed<'_>| {
            slot.binding.binds(item.backend, (kind == ListKind::Tools).then_some(item.name))
        };
        let slots: Vec<&Slot> = self
            .slots
            .iter()
            .map(|s| &**s)
            .filter(|s| s.intercepts(Hook::List) && items.iter().any(|i| bound_to(s, i)))
            .collect();
        if slots.is_empty() {
            return None;
        }
        let who = types::Principal { id: principal.id.clone(), roles: principal.roles.clone() };
        let mut edited = Edited {
            items: items.iter().map(|i| Some(i.definition.clone())).collect(),
            complete: true,
            transient: false,
        };
        for slot in slots {
            let asked: Vec<usize> =
                (0..items.len()).filter(|&i| edited.items[i].is_some() && bound_to(slot, &items[i])).collect();
            let Err(error) = self.ask(slot, &who, kind, items, &mut edited, &asked).await else { continue };
            // Asked again backend by backend when it failed on items of several (a hostile
            // one's hundred thousand tools ran it out of memory): only the failing ones' items
            // are hidden. Not when it was busy (every backend's would be, again).
            let mut backends: Vec<&str> = asked.iter().map(|&i| items[i].backend).collect();
            backends.sort_unstable();
            backends.dedup();
            if backends.len() < 2 || matches!(error, PluginError::Busy { .. }) {
                self.failed(slot, principal, kind, &mut edited, &asked, &error);
                continue;
            }
            for backend in backends {
                let part: Vec<usize> = asked.iter().copied().filter(|&i| items[i].backend == backend).collect();
                if let Err(error) = self.ask(slot, &who, kind, items, &mut edited, &part).await {
                    self.failed(slot, principal, kind, &mut edited, &part, &error);
                }
            }
        }
        Some(edited)
    }
}

impl Plugins {
    /// Asks `slot`'s list hook about the `asked` items and takes its answer into `edited`.
    async fn ask(
        &self,
        slot: &Slot,
        who: &types::Principal,
        kind: ListKind,
        items: &[Listed<'_>],
        edited: &mut Edited,
        asked: &[usize],
    ) -> Result<(), PluginError> {
        if asked.is_empty() {
            return Ok(());
        }
        let offered: Vec<ListItem> = asked
            .iter()
            .map(|&i| ListItem {
                backend: items[i].backend.to_owned(),
                name: items[i].name.to_owned(),
                definition: edited.items[i].as_ref().map(Value::to_string).unwrap_or_default(),
            })
            .collect();
        let outcome = slot
            .invoke(&self.engine, None, async |bound, store| {
                let Bound::Interceptor(interceptor) = bound else { unreachable!("interceptor slot") };
                interceptor.relay_plugin_interception().call_on_list(store, who, wit_kind(kind), &offered).await
            })
            .await?;
        let answers = match outcome {
            ListDecision::Pass => None,
            ListDecision::Edit(answers) => Some(checked(slot, kind, &offered, answers)?),
        };
        slot.settled(false);
        for (&i, answer) in asked.iter().zip(answers.into_iter().flatten()) {
            edited.items[i] = answer;
        }
        Ok(())
    }

    /// `slot`'s list hook failed on the `asked` items: they are hidden when it fails closed,
    /// and the view is not kept as if it had answered.
    fn failed(
        &self,
        slot: &Slot,
        principal: &Principal,
        kind: ListKind,
        edited: &mut Edited,
        asked: &[usize],
        error: &PluginError,
    ) {
        edited.complete = false;
        edited.transient |= matches!(error, PluginError::Busy { .. });
        if fails_closed(&slot.config, error) {
            tracing::warn!(plugin = %slot.config.name, %error, list = kind.method(), principal = %principal.id, "interceptor's list hook failed; the items it was asked about are hidden (on_error: fail-closed)");
            asked.iter().for_each(|&i| edited.items[i] = None);
        }
    }
}

/// The hook's answer for the `offered` items, if it keeps the contract: one entry per item,
/// each hidden or a JSON object of at most 64 KiB (or its offered size), all of them at most
/// twice the offered list and 1 MiB; a tool or prompt named
/// `[A-Za-z0-9_.-]{1,128}`, a resource or template with its key unchanged.
fn checked(
    slot: &Slot,
    kind: ListKind,
    offered: &[ListItem],
    answers: Vec<Option<String>>,
) -> Result<Vec<Option<Value>>, PluginError> {
    let bad = |message: String| PluginError::BadAnswer { plugin: slot.config.name.clone(), message };
    if answers.len() != offered.len() {
        return Err(bad(format!("answered {} items of a list of {}", answers.len(), offered.len())));
    }
    let key = kind.key();
    let offered_bytes: usize = offered.iter().map(|item| item.definition.len()).sum();
    let answered_bytes: usize = answers.iter().flatten().map(String::len).sum();
    if answered_bytes > offered_bytes.saturating_mul(2).saturating_add(LIST_GROWTH_BYTES) {
        return Err(bad(format!(
            "grew {} from {offered_bytes} to {answered_bytes} bytes (at most twice, and {LIST_GROWTH_BYTES} bytes more)",
            kind.method()
        )));
    }
    offered
        .iter()
        .zip(answers)
        .map(|(item, answer)| {
            let Some(text) = answer else { return Ok(None) };
            if text.len() > MAX_ITEM_BYTES.max(item.definition.len()) {
                return Err(bad(format!("grew an item of {} past {MAX_ITEM_BYTES} bytes", kind.method())));
            }
            let definition: Value = serde_json::from_str(&text)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| bad(format!("an item of {} is not a JSON object", kind.method())))?;
            // The key is the item's catalog name until a hook renames it, which only a tool or
            // prompt may do; a backend's own prompt name may be anything, a new name must fit.
            let name = definition.get(key).and_then(Value::as_str).unwrap_or("");
            let renamable = matches!(kind, ListKind::Tools | ListKind::Prompts);
            if name != item.name && !renamable {
                return Err(bad(format!("changed the {key} of an item of {}", kind.method())));
            }
            if name != item.name && !names::fits(name) {
                return Err(bad(format!("renamed an item of {} to {name:?}", kind.method())));
            }
            Ok(Some(definition))
        })
        .collect()
}

fn wit_kind(kind: ListKind) -> WitListKind {
    match kind {
        ListKind::Tools => WitListKind::Tools,
        ListKind::Prompts => WitListKind::Prompts,
        ListKind::Resources => WitListKind::Resources,
        ListKind::ResourceTemplates => WitListKind::ResourceTemplates,
    }
}
