//! The `interceptor` world's list hook: what one principal sees of a list. Every interceptor
//! bound to an item (`bind`), in the listed order, is asked about it (one call per backend) and
//! may hide it or give it a new definition (a tool or prompt renamed, a description replaced, a schema edited). The
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
    /// False when a hook failed: the answer holds for this request but must not be kept.
    pub complete: bool,
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
        let mut edited = Edited { items: items.iter().map(|i| Some(i.definition.clone())).collect(), complete: true };
        // Asked backend by backend: a hook that fails on one backend's list (a hostile one's
        // hundred thousand tools ran it out of memory) hides that backend's items only.
        let mut backends: Vec<&str> = items.iter().map(|i| i.backend).collect();
        backends.sort_unstable();
        backends.dedup();
        let asks: Vec<(&Slot, &str)> =
            slots.iter().flat_map(|&slot| backends.iter().map(move |&backend| (slot, backend))).collect();
        for (slot, backend) in asks {
            let asked: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].backend == backend && edited.items[i].is_some() && bound_to(slot, &items[i]))
                .collect();
            if asked.is_empty() {
                continue;
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
                    interceptor.relay_plugin_interception().call_on_list(store, &who, wit_kind(kind), &offered).await
                })
                .await;
            let answer = match outcome {
                Ok(ListDecision::Pass) => Ok(None),
                Ok(ListDecision::Edit(answers)) => checked(slot, kind, &offered, answers).map(Some),
                Err(error) => Err(error),
            };
            match answer {
                Ok(answers) => {
                    slot.settled(false);
                    for (i, answer) in asked.into_iter().zip(answers.into_iter().flatten()) {
                        edited.items[i] = answer;
                    }
                }
                Err(error) => {
                    edited.complete = false;
                    if fails_closed(&slot.config, &error) {
                        tracing::warn!(plugin = %slot.config.name, %error, list = kind.method(), backend, principal = %principal.id, "interceptor's list hook failed; the items of the backend it was asked about are hidden (on_error: fail-closed)");
                        asked.into_iter().for_each(|i| edited.items[i] = None);
                    }
                }
            }
        }
        Some(edited)
    }
}

/// The hook's answer for the `offered` items, if it keeps the contract: one entry per item,
/// each hidden or a JSON object of at most 64 KiB (or its offered size); a tool or prompt named
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
