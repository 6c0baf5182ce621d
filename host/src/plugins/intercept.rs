//! The `interceptor` world's hooks around a call (`tools/call`, `prompts/get`,
//! `resources/read`): every interceptor bound to it (`bind`), in the listed order, sees its
//! arguments before (and may replace them or deny the call) and its result after (and may
//! replace it). Calls no interceptor is bound to pay one glob match per interceptor. A failing
//! interceptor fails the call (`on_error: fail-closed`) or is skipped, logged and counted
//! (`fail-open`). An `on-request` that proceeds may hold that for the caller's next calls of
//! the same backend and name (`verdict.hold`, kept in `holds`): they are not asked again. An
//! `on-result` that named the literals it needs is not called for results without them
//! (`result_filter`).

use std::sync::Arc;

use serde_json::Value;

use super::bindings::interceptor::exports::relay::plugin::interception::{CallInfo, RequestDecision, ResultDecision};
use super::bindings::types;
use super::holds::HoldKey;
use super::loaded::{Bound, Version};
use super::registry::{Plugins, Slot};
use super::sandbox::{PluginError, Refusal, fails_closed};
use super::wit_types::from_wit;
use crate::access::Principal;
use crate::config::{BindingMatcher, Hook};
use crate::mcp::Payload;

/// The methods interceptors see.
pub const TOOLS_CALL: &str = "tools/call";
/// See [`TOOLS_CALL`].
pub const PROMPTS_GET: &str = "prompts/get";
/// See [`TOOLS_CALL`].
pub const RESOURCES_READ: &str = "resources/read";

/// One call as the hooks see it.
pub struct CallHook<'a> {
    /// The caller.
    pub principal: &'a Principal,
    /// `tools/call`, `prompts/get` or `resources/read`.
    pub method: &'static str,
    /// The backend or adapter that serves the call.
    pub backend: &'a str,
    /// The tool's or prompt's name in the relay's catalog (before any interceptor renamed it),
    /// or the resource's URI.
    pub name: &'a str,
}

impl CallHook<'_> {
    fn binds(&self, binding: &BindingMatcher) -> bool {
        binding.binds(self.backend, (self.method == TOOLS_CALL).then_some(self.name))
    }

    /// The result type the method answers with, and the array field that every one has.
    fn result_shape(&self) -> (&'static str, &'static str) {
        match self.method {
            TOOLS_CALL => ("CallToolResult", "content"),
            PROMPTS_GET => ("GetPromptResult", "messages"),
            _ => ("ReadResourceResult", "contents"),
        }
    }

    fn info(&self) -> CallInfo {
        CallInfo {
            principal: types::Principal { id: self.principal.id.clone(), roles: self.principal.roles.clone() },
            method: self.method.into(),
            backend: self.backend.to_owned(),
            name: self.name.to_owned(),
        }
    }
}

impl Plugins {
    /// The interceptors bound to `call` with a call hook (`on-request` or `on-result`), matched
    /// once for the whole call, each with its version now: a call runs both its hooks on the
    /// version it started with, whatever is reloaded meanwhile. `None` when no interceptor is
    /// bound (then the hooks need not run at all).
    pub fn interception(&self, call: &CallHook<'_>) -> Option<Interception<'_>> {
        let slots: Vec<_> = self
            .slots
            .iter()
            .filter(|s| (s.intercepts(Hook::Request) || s.intercepts(Hook::Result)) && call.binds(&s.binding))
            .map(|slot| (slot, slot.current.load_full()))
            .collect();
        (!slots.is_empty()).then(|| Interception {
            plugins: self,
            slots,
            info: call.info(),
            shape: call.result_shape(),
        })
    }
}

/// The interceptors bound to one call, and what they are told about it.
pub struct Interception<'a> {
    plugins: &'a Plugins,
    slots: Vec<(&'a Arc<Slot>, Arc<Version>)>,
    info: CallInfo,
    shape: (&'static str, &'static str),
}

impl Interception<'_> {
    /// Runs the request hooks on `arguments`: the arguments the call goes ahead with when a
    /// hook replaced them (`None`: as they are), or why it is refused.
    /// A hook whose `proceed` for an earlier call of the same principal, method, backend and
    /// name still holds (`verdict.hold`) is not called. The arguments are read (decoded, and
    /// then travel on written from the value read) only when a hook is called: with none
    /// bound to requests, or all held, they stay the client's text.
    pub async fn request(&self, arguments: &Payload) -> Result<Option<Value>, Refusal> {
        let mut replaced: Option<Value> = None;
        let info = &self.info;
        let key = HoldKey {
            id: &info.principal.id,
            roles: &info.principal.roles,
            method: &info.method,
            backend: Some(&info.backend),
            tool: Some(&info.name),
        };
        for (slot, version) in self.slots.iter().filter(|(s, _)| s.intercepts(Hook::Request)) {
            let proceeds = |decision: &RequestDecision| matches!(decision, RequestDecision::Proceed);
            // Read (decoded, when still text) only if the hook is called.
            let current = || replaced.as_ref().unwrap_or_else(|| &**arguments);
            let outcome = slot
                .decide(version.clone(), &self.plugins.engine, &key, proceeds, async |bound, store| {
                    let Bound::Interceptor(interceptor) = bound else { unreachable!("interceptor slot") };
                    interceptor.relay_plugin_interception().call_on_request(store, info, &current().to_string()).await
                })
                .await;
            match outcome {
                // An earlier `proceed` of this hook stands for this call.
                Ok(None) => {}
                Ok(Some(RequestDecision::Proceed)) => slot.settled(false),
                Ok(Some(RequestDecision::Replace(answer))) => match serde_json::from_str::<Value>(&answer) {
                    Ok(value) if value == *current() => slot.settled(false),
                    Ok(_) if self.info.method == RESOURCES_READ => {
                        failed(slot, invalid(slot, "replaced the arguments of resources/read, which has none"))?
                    }
                    Ok(value) if value.is_object() => {
                        slot.settled(false);
                        replaced = Some(value);
                    }
                    _ => failed(slot, invalid(slot, "replaced the arguments with something not a JSON object"))?,
                },
                Ok(Some(RequestDecision::Deny(denial))) => {
                    slot.settled(true);
                    return Err(Refusal::Denied(from_wit(denial, &slot.config.name)));
                }
                Err(error) => failed(slot, error)?,
            }
        }
        Ok(replaced)
    }

    /// Runs the result hooks: the result the client gets. A backend's result reaches the
    /// first hook as the text it came as, and is passed on as that text unless a hook
    /// replaces it. A hook that named the literals it needs (`verdict.pass-results-without`)
    /// is not called for a result without them.
    pub async fn result(&self, mut result: Payload) -> Result<Payload, Refusal> {
        for (slot, version) in self.slots.iter().filter(|(s, _)| s.intercepts(Hook::Result)) {
            let text = result.text();
            if version.results.load().as_ref().is_some_and(|filter| !filter.concerns(&text)) {
                // None of the literals the hook named: it would pass this result.
                slot.stats.unread.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let outcome = slot
                .invoke_on(version.clone(), &self.plugins.engine, None, async |bound, store| {
                    let Bound::Interceptor(interceptor) = bound else { unreachable!("interceptor slot") };
                    interceptor.relay_plugin_interception().call_on_result(store, &self.info, &text).await
                })
                .await;
            match outcome {
                Ok(ResultDecision::Pass) => slot.settled(false),
                Ok(ResultDecision::Replace(replaced)) => match serde_json::from_str::<Value>(&replaced) {
                    Ok(value) if value.get(self.shape.1).is_some_and(Value::is_array) => {
                        slot.settled(false);
                        result = value.into();
                    }
                    _ => {
                        let message = format!("replaced the result with something not a {}", self.shape.0);
                        failed(slot, invalid(slot, &message))?
                    }
                },
                Err(error) => failed(slot, error)?,
            }
        }
        Ok(result)
    }
}

fn invalid(slot: &Slot, message: &str) -> PluginError {
    PluginError::BadAnswer { plugin: slot.config.name.clone(), message: message.to_owned() }
}

/// A failed hook: the call fails (`fail-closed`), or goes on without it (`fail-open`, logged
/// and counted).
fn failed(slot: &Slot, error: PluginError) -> Result<(), Refusal> {
    if fails_closed(&slot.config, &error) { Err(Refusal::Failed(error)) } else { Ok(()) }
}
