//! A backend's notifications, as the clients see them: a resource's update under the names its
//! subscribers used, log messages about no client request (named by their backend, bounded),
//! and the end of a URL elicitation for the session that asked.

use std::sync::Weak;

use serde_json::Value;
use tokio::sync::broadcast;

use super::{Catalog, ClientEvent, Owner, Router};
use crate::upstream::UpstreamEvent;

/// Maps upstream notifications to client-facing ones and hands them to the sessions.
pub(super) async fn route_notifications(router: Weak<Router>, mut events: broadcast::Receiver<UpstreamEvent>) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(dropped = n, "upstream notifications dropped (sessions too slow)");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Some(router) = router.upgrade() else { break };
        let params = event.notification.params.unwrap_or(Value::Null);
        let client_event = match event.notification.method.as_str() {
            "notifications/resources/updated" => {
                let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
                let owner = Owner::Backend(event.backend.clone());
                // Under the names its subscribers used, where the subscription was made here.
                let mut names = router.subscriptions.names_of(&owner, uri);
                if names.is_empty() {
                    names.extend(updated_name(&router.catalog(), &owner, uri));
                }
                if names.is_empty() {
                    tracing::debug!(backend = %event.backend, uri, "update of a resource the backend does not own; dropped");
                    continue;
                }
                for exposed in names {
                    let _ = router.client_events.send(ClientEvent::ResourceUpdated(exposed));
                }
                continue;
            }
            "notifications/message" => log_for_every_session(&event.backend, params),
            // To the session whose client the backend asked with it (and no other).
            "notifications/elicitation/complete" => match params.get("elicitationId").and_then(Value::as_str) {
                Some(id) => ClientEvent::ElicitationComplete { backend: event.backend.clone(), id: id.to_owned() },
                None => continue,
            },
            method => {
                tracing::debug!(backend = %event.backend, method, "upstream notification not forwarded");
                continue;
            }
        };
        let _ = router.client_events.send(client_event);
    }
}

/// A backend's log message about no client request, as every session at its level hears it
/// (held for each session until it reads it, up to a thousand messages): its level, named by
/// the backend that sent it (`logger` is `<backend>` or `<backend>/<its logger>`: a backend
/// cannot speak as another, or as the relay), and its `data` within
/// [`crate::mcp::NOTICE_BYTES`]; nothing else it put in (`_meta`, fields of its own).
fn log_for_every_session(backend: &str, params: Value) -> ClientEvent {
    let logger = match params.get("logger").and_then(Value::as_str) {
        Some(own) => format!("{backend}/{}", crate::mcp::clip(own)),
        None => backend.to_owned(),
    };
    ClientEvent::Log(crate::mcp::log_params(&params, Some(logger)))
}

/// The name clients know `uri` by, when `backend` owns it: one of its listed resources, or a
/// URI no listed resource holds whose best-matching template is its own (where a subscription
/// to it is sent). `None` for another backend's resource (a backend must not tell another's
/// subscribers of updates that did not happen).
fn updated_name(catalog: &Catalog, owner: &Owner, uri: &str) -> Option<String> {
    let resources = catalog.resources();
    if let Some(entry) = resources.entries().iter().find(|e| e.owner == *owner && e.upstream_name == uri) {
        return Some(entry.name.clone());
    }
    let templated = resources.get(uri).is_none() && catalog.template_owners(uri).first() == Some(&owner);
    templated.then(|| uri.to_owned())
}
