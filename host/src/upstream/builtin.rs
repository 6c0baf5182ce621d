//! The relay's own tools (`relay_*`), served as if by one more upstream: status, listing and
//! run-time management of backends. Add/remove persist `backends.yaml` through the store and
//! then reconcile the running set, so the file stays the single source of truth.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use serde_json::{Value, json};

use super::Upstreams;
use crate::config::{BackendSpec, BackendStore, Transport};
use crate::lifecycle::Lifecycle;
use crate::plugins::Plugins;

/// State the built-in tools read and change.
pub struct Builtin {
    /// Running upstreams.
    upstreams: Arc<Upstreams>,
    /// The backends file.
    store: BackendStore,
    /// Instance facts for `relay_get_status`.
    lifecycle: Arc<Lifecycle>,
    /// Loaded plugins, for status, reload and rollback.
    plugins: Arc<Plugins>,
    /// Tool definitions, built once.
    tools: Vec<Value>,
}

impl Builtin {
    /// The built-in tool set.
    pub fn new(
        upstreams: Arc<Upstreams>,
        store: BackendStore,
        lifecycle: Arc<Lifecycle>,
        plugins: Arc<Plugins>,
    ) -> Self {
        Self { upstreams, store, lifecycle, plugins, tools: definitions() }
    }

    /// Tool definitions for the catalog.
    pub fn tools(&self) -> Vec<Value> {
        self.tools.clone()
    }

    /// Runs a built-in tool. Failures are tool results with `isError`, as MCP asks for
    /// errors the caller can act on.
    pub async fn call(&self, name: &str, arguments: Value) -> Value {
        let outcome = match name {
            "relay_get_status" => Ok(self.status()),
            "relay_list_servers" => Ok(json!({"servers": self.servers()})),
            "relay_add_server" => self.add_server(arguments).await,
            "relay_remove_server" => self.remove_server(arguments).await,
            "relay_reconnect_server" => self.reconnect_server(arguments),
            "relay_reload_plugins" => Ok(self.reload_plugins().await),
            "relay_rollback_plugin" => match name_argument(&arguments) {
                Ok(name) => {
                    self.plugins.rollback(&name).await.map(|outcome| json!({"plugin": name, "outcome": outcome}))
                }
                Err(e) => Err(e),
            },
            other => Err(format!("no built-in tool {other}")),
        };
        match outcome {
            Ok(value) => json!({
                "content": [{"type": "text", "text": serde_json::to_string_pretty(&value).unwrap_or_default()}],
                "structuredContent": value,
            }),
            Err(message) => json!({"content": [{"type": "text", "text": message}], "isError": true}),
        }
    }

    fn status(&self) -> Value {
        json!({
            "instance": self.lifecycle.instance,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.lifecycle.started.elapsed().as_secs_f64(),
            "sessions": self.lifecycle.sessions(),
            "backends": self.servers(),
            "plugins": self.plugins.status(),
        })
    }

    async fn reload_plugins(&self) -> Value {
        let outcomes: Vec<Value> = self
            .plugins
            .reload_all()
            .await
            .into_iter()
            .map(|(name, outcome)| match outcome {
                Ok(message) => json!({"plugin": name, "ok": true, "outcome": message}),
                Err(error) => json!({"plugin": name, "ok": false, "error": error}),
            })
            .collect();
        json!({"plugins": outcomes})
    }

    fn servers(&self) -> Vec<Value> {
        self.upstreams
            .list()
            .iter()
            .map(|upstream| {
                let status = upstream.status();
                let target = match &upstream.backend.transport {
                    Transport::WebSocket { url, .. } | Transport::Http { url, .. } => url.clone(),
                    Transport::Stdio { command, .. } => command.clone(),
                };
                json!({
                    "name": upstream.name(),
                    "transport": upstream.backend.transport.kind(),
                    "target": target,
                    "state": status.state.as_str(),
                    "tools": upstream.tools().len(),
                    "connects": status.connects,
                    "connected_since": status.connected_since.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
                    "last_error": status.last_error,
                    "server_info": status.identity.as_ref().map(|i| i.server_info.clone()),
                })
            })
            .collect()
    }

    async fn add_server(&self, arguments: Value) -> Result<Value, String> {
        let spec: BackendSpec =
            serde_json::from_value(arguments).map_err(|e| format!("invalid server description: {e}"))?;
        spec.validate()?;
        let name = spec.name.clone();
        self.persist(move |file| {
            if file.backends.iter().any(|b| b.name == spec.name) {
                return Err(format!("a backend named {} already exists", spec.name));
            }
            file.backends.push(spec);
            Ok(())
        })
        .await?;
        Ok(json!({"added": name}))
    }

    async fn remove_server(&self, arguments: Value) -> Result<Value, String> {
        let name = name_argument(&arguments)?;
        let target = name.clone();
        self.persist(move |file| {
            let before = file.backends.len();
            file.backends.retain(|b| b.name != target);
            if file.backends.len() == before { Err(format!("no backend named {target}")) } else { Ok(()) }
        })
        .await?;
        Ok(json!({"removed": name}))
    }

    fn reconnect_server(&self, arguments: Value) -> Result<Value, String> {
        let name = name_argument(&arguments)?;
        let upstream = self.upstreams.get(&name).ok_or_else(|| format!("no backend named {name}"))?;
        upstream.request_reconnect();
        Ok(json!({"reconnecting": name}))
    }

    /// Changes the file under its lock (off the async runtime), then applies the result.
    async fn persist<F>(&self, change: F) -> Result<(), String>
    where
        F: FnOnce(&mut crate::config::BackendsFile) -> Result<(), String> + Send + 'static,
    {
        let store = self.store.clone();
        let backends = tokio::task::spawn_blocking(move || store.update(change))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.upstreams.reconcile(&backends);
        Ok(())
    }
}

fn name_argument(arguments: &Value) -> Result<String, String> {
    arguments
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "argument \"name\" (string) is required".into())
}

fn definitions() -> Vec<Value> {
    let no_args = json!({"type": "object", "properties": {}, "additionalProperties": false});
    let by_name = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "description": "Backend name"}},
        "required": ["name"],
    });
    vec![
        json!({
            "name": "relay_get_status",
            "description": "Relay instance colour, version, uptime, session count and every backend's state, transport and tool count.",
            "inputSchema": no_args,
        }),
        json!({
            "name": "relay_list_servers",
            "description": "List the configured backends with their state and tool count.",
            "inputSchema": no_args,
        }),
        json!({
            "name": "relay_add_server",
            "description": "Add a backend and persist it to backends.yaml. Give `url` (ws://, http://) or `command` (+ `args`, `env`) for stdio.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "url": {"type": "string"},
                    "command": {"type": "string"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "call_timeout_secs": {"type": "number"},
                },
                "required": ["name"],
            },
        }),
        json!({
            "name": "relay_remove_server",
            "description": "Remove a backend and persist the change to backends.yaml.",
            "inputSchema": by_name,
        }),
        json!({
            "name": "relay_reconnect_server",
            "description": "Drop a backend's connection and reconnect now.",
            "inputSchema": by_name,
        }),
        json!({
            "name": "relay_reload_plugins",
            "description": "Reload every plugin from its file now (admin). A plugin that fails to load keeps its running version.",
            "inputSchema": no_args,
        }),
        json!({
            "name": "relay_rollback_plugin",
            "description": "Switch a plugin back to its previous version at once (admin).",
            "inputSchema": {
                "type": "object",
                "properties": {"name": {"type": "string", "description": "Plugin name"}},
                "required": ["name"],
            },
        }),
    ]
}
