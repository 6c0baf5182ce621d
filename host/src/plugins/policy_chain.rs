//! The policy chain's plugins: every `policy` plugin bound to a request, in configuration
//! order, each asked `check` unless an earlier `ok` of its current version still holds for the
//! request's principal, method and tool (`verdict.hold`, kept in `holds`), or an earlier
//! rate-limited denial in the same session still stands for it (its `retry-after-ms`, kept in
//! `refusals`).

use std::time::Instant;

use super::bindings::types;
use super::holds::HoldKey;
use super::loaded::Bound;
use super::registry::{Plugins, Slot};
use super::sandbox::{Refusal, fails_closed};
use super::v0_1;
use super::wit_types::{from_wit, wit_transport};
use crate::access::RequestInfo;
use crate::config::World;

impl Plugins {
    /// Runs every policy plugin, in order, on one request. A plugin whose `ok` for an earlier
    /// request of the same principal, method and tool still holds (`verdict.hold`) is not called.
    pub async fn check(&self, info: &RequestInfo<'_>) -> Result<(), Refusal> {
        let mut request = None;
        // A tools/call without a route (its tool is not in the caller's view now) passes every
        // bound policy: no request skips a policy because a lookup came out empty.
        let bound = |slot: &Slot| {
            slot.binding.is_unbound()
                || match info.route {
                    Some(route) => slot.binding.binds(route.backend, Some(route.tool)),
                    None => info.method == "tools/call",
                }
        };
        // The catalog name, which rules and bindings use, not the caller's rename.
        let tool = info.route.map(|r| r.tool).or(info.tool);
        let (id, roles) = (info.principal.id.as_str(), info.principal.roles.as_slice());
        let key = HoldKey { id, roles, method: info.method, backend: None, tool };
        for slot in self.slots.iter().filter(|s| s.config.world == World::Policy && bound(s)) {
            let version = slot.current.load_full();
            if let Some(denial) = version.refusals.standing(&key, info.session_id, Instant::now()) {
                slot.held();
                return Err(Refusal::Denied(from_wit(denial, &slot.config.name)));
            }
            let outcome = slot
                .decide(version.clone(), &self.engine, &key, Result::is_ok, async |bound, store| {
                    let request = request.get_or_insert_with(|| types::RequestInfo {
                        principal: types::Principal {
                            id: info.principal.id.clone(),
                            roles: info.principal.roles.clone(),
                        },
                        session_id: info.session_id.to_owned(),
                        transport: wit_transport(info.transport),
                        method: info.method.to_owned(),
                        tool: tool.map(str::to_owned),
                    });
                    match bound {
                        Bound::Policy(policy) => policy.relay_plugin_policy_check().call_check(store, request).await,
                        Bound::PolicyV01(policy) => {
                            let answer = policy
                                .relay_plugin_policy_check()
                                .call_check(store, &v0_1::request_info(request))
                                .await?;
                            Ok(answer.map_err(v0_1::denial))
                        }
                        _ => unreachable!("policy slot holds a policy"),
                    }
                })
                .await;
            let outcome = match outcome {
                Ok(Some(outcome)) => outcome,
                // An earlier `ok` of this plugin stands for this request.
                Ok(None) => continue,
                Err(error) if fails_closed(&slot.config, &error) => return Err(Refusal::Failed(error)),
                Err(_) => continue,
            };
            slot.settled(outcome.is_err());
            if let Err(denial) = outcome {
                version.refusals.record(&key, info.session_id, &denial, Instant::now());
                return Err(Refusal::Denied(from_wit(denial, &slot.config.name)));
            }
        }
        Ok(())
    }
}
