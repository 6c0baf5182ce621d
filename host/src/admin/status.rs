//! What `relay_get_status`, `/status` and `/status.json` say: what an operator asks first
//! (ready or draining and since when, each backend's state and since when, whether the kv store
//! answers, when the TLS certificate expires), then sessions, requests, backends and plugins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::RelayTools;

impl RelayTools {
    pub(super) async fn status(&self, admin: bool) -> Value {
        let (dropped, connected) = crate::metrics::metrics().process.log_forward_state();
        let by_transport: serde_json::Map<String, Value> =
            self.lifecycle.sessions_by_transport().into_iter().map(|(t, n)| (t.to_owned(), n.into())).collect();
        let state = if self.lifecycle.is_draining() {
            "draining"
        } else if self.lifecycle.is_ready() {
            "ready"
        } else {
            "starting"
        };
        let tls = crate::metrics::metrics().access.tls_state().map(|(not_after, error)| {
            let days_left = (not_after - unix_now()) as f64 / 86_400.0;
            json!({"certificate_expires": not_after, "days_left": (days_left * 10.0).round() / 10.0, "files_error": error})
        });
        // Subtrees that are already `Value`s are moved in, not written into `json!`, which
        // would copy each through `to_value` (the status is asked for often: `/status`, and
        // every client of the reference scenario).
        let mut status = json!({
            "instance": self.lifecycle.instance,
            "version": env!("CARGO_PKG_VERSION"),
            "state": state,
            "uptime_secs": self.lifecycle.started.elapsed().as_secs_f64(),
            "sessions": self.lifecycle.sessions(),
            "draining": self.lifecycle.is_draining(),
            "draining_since": self.lifecycle.drain_started().map(unix_secs),
            "running_requests": self.lifecycle.running_requests(),
            "log_forward": {"connected": connected, "dropped": dropped},
        });
        status["kv"] = self.kv_status().await;
        status["tls"] = tls.unwrap_or(Value::Null);
        status["sessions_by_transport"] = Value::Object(by_transport);
        status["backends"] = Value::Array(self.servers(admin));
        status["plugins"] = Value::Array(self.plugins.status());
        status
    }

    /// What the status page shows (`relay_get_status` as a non-admin sees it: no backend
    /// targets).
    pub async fn status_report(&self) -> Value {
        self.status(false).await
    }

    /// Whether the kv store answers (Redis is asked, within a second).
    async fn kv_status(&self) -> Value {
        let backend = if self.kv.is_shared() { "redis" } else { "memory" };
        let started = std::time::Instant::now();
        let reachable = tokio::time::timeout(Duration::from_secs(1), self.kv.ping()).await;
        let (reachable, error) = match reachable {
            Ok(Ok(())) => (true, None),
            Ok(Err(e)) => (false, Some(e.to_string())),
            Err(_) => (false, Some("no answer within 1 s".to_owned())),
        };
        json!({"backend": backend, "reachable": reachable, "error": error, "checked_in_ms": started.elapsed().as_secs_f64() * 1000.0})
    }

    pub(super) fn servers(&self, admin: bool) -> Vec<Value> {
        self.upstreams
            .list()
            .iter()
            .map(|upstream| {
                let status = upstream.status();
                let backend = &upstream.backend;
                let mut entry = json!({
                    "name": upstream.name(),
                    "transport": backend.transport.kind(),
                    "state": status.state.as_str(),
                    "state_since": unix_secs(status.since),
                    "tools": upstream.tools().len(),
                    "connects": status.connects,
                    "lanes": status.lanes,
                    "requests": upstream.request_counts().0,
                    "errors": upstream.request_counts().1,
                    "connected_since": status.connected_since.map(unix_secs),
                    // Non-admins learn why a backend failed, not where it lives.
                    "last_error": status.last_error.map(|e| if admin {
                        backend.redact(&e)
                    } else {
                        backend.without_address(&e)
                    }),
                });
                entry["server_info"] = status.identity.map_or(Value::Null, |i| i.server_info);
                if admin {
                    entry["target"] = json!(backend.shown_target());
                }
                entry
            })
            .collect()
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_now() -> i64 {
    i64::try_from(unix_secs(SystemTime::now())).unwrap_or(i64::MAX)
}
