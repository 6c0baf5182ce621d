//! Progress notifications back to the request they belong to. A forwarded request's progress
//! token is replaced by one unique to the relay (two clients may use the same token on the same
//! backend); the backend's `notifications/progress` is matched on it, given back the client's
//! own token, and sent to that request's stream, unbuffered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::mcp::{Message, Notification};

struct Route {
    sink: mpsc::Sender<String>,
    client_token: Value,
}

/// Progress routes of the requests in flight, by relay token.
#[derive(Default)]
pub struct ProgressRoutes {
    routes: Mutex<HashMap<String, Route>>,
    next: AtomicU64,
}

/// Removes its route when the request finishes (or is cancelled).
pub struct RouteGuard {
    routes: Arc<ProgressRoutes>,
    token: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes.routes.lock().expect("progress lock").remove(&self.token);
    }
}

impl ProgressRoutes {
    /// If `params._meta.progressToken` is set, swaps it for a relay token routed to `sink`.
    pub fn route(self: &Arc<Self>, params: &mut Value, sink: &mpsc::Sender<String>) -> Option<RouteGuard> {
        let slot = params.pointer_mut("/_meta/progressToken")?;
        let token = format!("relay-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let client_token = std::mem::replace(slot, Value::String(token.clone()));
        self.routes.lock().expect("progress lock").insert(token.clone(), Route { sink: sink.clone(), client_token });
        Some(RouteGuard { routes: self.clone(), token })
    }

    /// Delivers a backend's `notifications/progress` to the request it belongs to.
    pub fn deliver(&self, mut params: Value) {
        let Some(token) = params.get("progressToken").and_then(Value::as_str).map(str::to_owned) else { return };
        let routes = self.routes.lock().expect("progress lock");
        let Some(route) = routes.get(&token) else { return };
        params["progressToken"] = route.client_token.clone();
        let text =
            Message::Notification(Notification { method: "notifications/progress".into(), params: Some(params) })
                .to_text();
        if route.sink.try_send(text).is_err() {
            tracing::debug!(token, "progress notification dropped: the client's stream is full or gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tokens_are_swapped_and_restored() {
        let routes = Arc::new(ProgressRoutes::default());
        let (tx, mut rx) = mpsc::channel(4);
        let mut params = json!({"name": "t", "_meta": {"progressToken": 7}});
        let guard = routes.route(&mut params, &tx).unwrap();
        let relay_token = params["_meta"]["progressToken"].clone();
        assert_ne!(relay_token, json!(7));
        routes.deliver(json!({"progressToken": relay_token, "progress": 1}));
        let sent: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(sent["params"], json!({"progressToken": 7, "progress": 1}));
        drop(guard);
        routes.deliver(json!({"progressToken": params["_meta"]["progressToken"], "progress": 2}));
        assert!(rx.try_recv().is_err(), "a finished request gets no more progress");
    }
}
