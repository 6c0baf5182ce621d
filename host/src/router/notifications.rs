//! A backend's notifications, as the clients see them: a resource's update under the name the
//! catalog shows, log messages, and the end of a URL elicitation for the session that asked.

use std::sync::Weak;

use serde_json::Value;
use tokio::sync::broadcast;

use super::{ClientEvent, Owner, Router};
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
                let uri = params.get("uri").and_then(Value::as_str).unwrap_or("").to_owned();
                let catalog = router.catalog();
                let exposed = catalog
                    .resources()
                    .entries()
                    .iter()
                    .find(|e| e.owner == Owner::Backend(event.backend.clone()) && e.upstream_name == uri)
                    .map(|e| e.name.clone())
                    .unwrap_or(uri);
                ClientEvent::ResourceUpdated(exposed)
            }
            "notifications/message" => ClientEvent::Log(params),
            // To the session whose client the backend asked with it (and no other).
            "notifications/elicitation/complete" => match params.get("elicitationId").and_then(Value::as_str) {
                Some(id) => ClientEvent::ElicitationComplete(id.to_owned()),
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
