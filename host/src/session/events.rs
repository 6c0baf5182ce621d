//! What a session sends on its own initiative: `list_changed` when the catalog a client sees
//! changes, resource updates for its subscriptions, log messages at or above the level it
//! asked for, and the completion of the URL elicitations it was asked with.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::SessionState;
use crate::access::Principal;
use crate::mcp::{ListKind, Message, Notification};
use crate::router::{Catalog, ClientEvent, Router};

/// Messages the relay sends to a client on its own initiative.
pub struct ServerEvents {
    /// Changes when the catalog (or what interceptors make of it) may have changed.
    pub(super) catalog: watch::Receiver<Arc<Catalog>>,
    pub(super) router: Arc<Router>,
    pub(super) principal: Principal,
    /// The catalog as this session's principal saw it when it last heard of it (taken when the
    /// events are first awaited).
    pub(super) last: Option<Arc<Catalog>>,
    /// A change seen but not yet compared: `next` may be dropped while it builds the view
    /// (the driver selects over it), and the change must not be lost then.
    pub(super) unsettled: bool,
    pub(super) events: broadcast::Receiver<ClientEvent>,
    pub(super) state: Arc<Mutex<SessionState>>,
    /// The URL elicitations the client was asked with, whose completion it hears.
    pub(super) client_requests: Arc<crate::mcp::ClientRequests>,
    /// Notifications decided but not yet handed out.
    pub(super) queued: VecDeque<Message>,
}

impl ServerEvents {
    /// Waits for the next server-initiated message; `None` when the relay is shutting down.
    pub async fn next(&mut self) -> Option<Message> {
        if self.last.is_none() {
            self.catalog.mark_unchanged();
            self.last = Some(self.view().await.0);
        }
        loop {
            if let Some(message) = self.queued.pop_front() {
                return Some(message);
            }
            if self.unsettled {
                // A view a failing list hook shaped is not what the client will see once the
                // hook answers again: neither announced nor kept as the baseline.
                let (next, complete) = self.view().await;
                if complete {
                    self.announce_changes(&next);
                    self.last = Some(next);
                }
                self.unsettled = false;
                continue;
            }
            tokio::select! {
                changed = self.catalog.changed() => {
                    changed.ok()?;
                    self.catalog.mark_unchanged();
                    self.unsettled = true;
                }
                event = self.events.recv() => match event {
                    Ok(ClientEvent::ResourceUpdated(uri)) => {
                        if self.state.lock().expect("session lock").subscriptions.contains(&uri) {
                            self.queued.push_back(notification("notifications/resources/updated", Some(json!({"uri": uri}))));
                        }
                    }
                    Ok(ClientEvent::ElicitationComplete { backend, id }) => {
                        if self.client_requests.completes_elicitation(&backend, &id) {
                            let params = json!({"elicitationId": id});
                            self.queued.push_back(notification("notifications/elicitation/complete", Some(params)));
                        }
                    }
                    Ok(ClientEvent::Log(params)) => {
                        if self.client_requests.log_level().wants(params.get("level").and_then(Value::as_str).unwrap_or("")) {
                            self.queued.push_back(notification("notifications/message", Some(params)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }

    /// The catalog as this session's principal sees it now, and whether every list hook
    /// answered. Boxed: the (rare) view building must not grow the future every idle
    /// connection holds.
    async fn view(&self) -> (Arc<Catalog>, bool) {
        Box::pin(self.router.view_for(&self.principal)).await
    }

    /// Queues one `list_changed` per list that differs from what the client last heard of
    /// (templates and resources share one notification).
    fn announce_changes(&mut self, next: &Catalog) {
        let Some(last) = self.last.as_deref() else { return };
        for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
            let templates = kind == ListKind::Resources && next.differs(last, ListKind::ResourceTemplates);
            if next.differs(last, kind) || templates {
                self.queued.push_back(notification(kind.changed_notification(), None));
            }
        }
    }
}

fn notification(method: &str, params: Option<Value>) -> Message {
    Message::Notification(Notification { method: method.into(), params })
}
