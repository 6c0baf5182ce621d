//! The relay's own tools (`relay_*`): status, listing and run-time management of backends and
//! plugins. They sit beside the router (which routes their calls here), above the upstream and
//! plugin layers they manage. Each definition says whether it needs the `admin` role; the
//! policy chain asks [`needs_admin`]. Add/remove persist `backends.yaml` through the store and
//! then reconcile the running set, so the file stays the single source of truth.

mod auth_tools;
mod error;
mod result;
mod status;
mod status_page;

use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};

use crate::access::Principal;
use crate::config::{BackendSpec, BackendStore};
use crate::credentials::Credentials;
use crate::lifecycle::Lifecycle;
use crate::mcp::Payload;
use crate::plugins::{KvStore, Plugins};
use crate::upstream::Upstreams;
pub use error::AdminError;
use result::tool_result;
use status::ServerList;
pub use status_page::render as render_status_page;

/// State the built-in tools read and change.
pub struct RelayTools {
    /// Running upstreams.
    upstreams: Arc<Upstreams>,
    /// The backends file.
    store: BackendStore,
    /// Instance facts for `relay_get_status`.
    lifecycle: Arc<Lifecycle>,
    /// Loaded plugins, for status, reload and rollback.
    plugins: Arc<Plugins>,
    /// Command lines `relay_add_server` may start (`access.add_server_commands`).
    add_server_commands: Vec<crate::config::AllowedCommand>,
    /// The kv store, whose reachability the status reports.
    kv: Arc<KvStore>,
    /// Callers' own credentials for backends (the `relay_auth_*` tools; the router's calls).
    credentials: Arc<Credentials>,
}

/// One built-in tool: what clients see, and whether calling it needs the `admin` role.
struct BuiltinTool {
    definition: Value,
    /// Changes the relay or disturbs other clients' work.
    admin: bool,
}

/// Every built-in tool, built once.
static TOOLS: LazyLock<Vec<BuiltinTool>> = LazyLock::new(definitions);

/// The names of the built-in tools that need the `admin` role, read once from their
/// definitions (the policy chain asks on every tool call: looking each definition's name up
/// was 1k instructions per call).
static ADMIN_ONLY: LazyLock<Vec<String>> = LazyLock::new(|| {
    TOOLS.iter().filter(|t| t.admin).filter_map(|t| t.definition["name"].as_str().map(str::to_owned)).collect()
});

/// Whether the built-in tool `name` needs the `admin` role (false for any other name). The
/// policy chain asks this; the requirement lives on each tool's definition below.
pub fn needs_admin(name: &str) -> bool {
    ADMIN_ONLY.iter().any(|admin_only| admin_only == name)
}

impl RelayTools {
    /// The built-in tool set.
    pub fn new(
        upstreams: Arc<Upstreams>,
        store: BackendStore,
        lifecycle: Arc<Lifecycle>,
        plugins: Arc<Plugins>,
        add_server_commands: Vec<crate::config::AllowedCommand>,
        kv: Arc<KvStore>,
        credentials: Arc<Credentials>,
    ) -> Self {
        Self { upstreams, store, lifecycle, plugins, add_server_commands, kv, credentials }
    }

    /// The credential step the router takes for calls to per-user backends.
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// Tool definitions for the catalog.
    pub fn tools(&self) -> Vec<Value> {
        TOOLS.iter().map(|t| t.definition.clone()).collect()
    }

    /// Runs a built-in tool. Failures are tool results with `isError`, as MCP asks for
    /// errors the caller can act on.
    /// What a backend looks like in status output depends on `caller`: everyone sees names,
    /// states and counts, with secrets hidden; admins also see where each backend is.
    pub async fn call(&self, name: &str, arguments: Value, caller: &Principal) -> Payload {
        let admin = caller.has_role(Principal::ADMIN);
        let outcome = match name {
            // Typed answers, written as they are.
            "relay_get_status" => return tool_result(&self.status(admin).await),
            "relay_list_servers" => return tool_result(&ServerList { servers: self.servers(admin) }),
            "relay_add_server" => self.add_server(arguments).await,
            "relay_remove_server" => self.remove_server(arguments).await,
            "relay_reconnect_server" => self.reconnect_server(arguments),
            "relay_reload_plugins" => Ok(self.reload_plugins().await),
            "relay_rollback_plugin" => self.rollback_plugin(&arguments).await,
            "relay_drain" => Ok(self.drain(caller)),
            "relay_auth_set_secret" => self.auth_set_secret(&arguments, caller).await,
            "relay_auth_status" => self.auth_status(&arguments, caller).await,
            "relay_auth_revoke" => self.auth_revoke(&arguments, caller).await,
            other => Err(AdminError::NoSuchTool(other.to_owned())),
        };
        match outcome {
            Ok(answer) => tool_result(&answer),
            Err(error) => json!({"content": [{"type": "text", "text": error.to_string()}], "isError": true}).into(),
        }
    }

    /// Starts the drain, as SIGTERM does: the process exits once running requests finish (or
    /// `shutdown.grace_secs` passes).
    fn drain(&self, caller: &Principal) -> Value {
        let started = self.lifecycle.start_drain();
        if started {
            tracing::warn!(principal = %caller.id, "relay_drain: draining");
        }
        json!({
            "draining": true,
            "already_draining": !started,
            "instance": self.lifecycle.instance,
            "running_requests": self.lifecycle.running_requests(),
        })
    }

    async fn reload_plugins(&self) -> Value {
        let outcomes: Vec<Value> = self
            .plugins
            .reload_all()
            .await
            .into_iter()
            .map(|(name, outcome)| match outcome {
                Ok(reloaded) => json!({"plugin": name, "ok": true, "outcome": reloaded.to_string()}),
                Err(error) => json!({"plugin": name, "ok": false, "error": error.to_string()}),
            })
            .collect();
        json!({"plugins": outcomes})
    }

    async fn rollback_plugin(&self, arguments: &Value) -> Result<Value, AdminError> {
        let name = name_argument(arguments)?;
        let rolled_back = self.plugins.rollback(&name).await?;
        Ok(json!({"plugin": name, "outcome": rolled_back.to_string()}))
    }

    async fn add_server(&self, arguments: Value) -> Result<Value, AdminError> {
        let spec: BackendSpec = serde_json::from_value(arguments)
            .map_err(|e| AdminError::BadArguments(format!("invalid server description: {e}")))?;
        spec.validate().map_err(AdminError::BadArguments)?;
        if let Some(name) = spec.credentials.secret_env() {
            // The relay would send that variable's value to the server the entry names: its
            // environment is the operator's (backends.yaml), not an MCP admin's to hand out.
            return Err(AdminError::BadArguments(format!(
                "credentials.client_secret_env ({name}) names the relay's environment, whose values the relay would send to the server this entry names: such a backend is configured in backends.yaml by the operator, not added over MCP"
            )));
        }
        if let Some(command) = &spec.command {
            let env_names = || spec.env.keys().map(String::as_str).chain(spec.inherit_env.iter().map(String::as_str));
            if let Some(secret) = env_names().find(|name| crate::upstream::is_relay_secret(name)) {
                return Err(AdminError::BadArguments(format!(
                    "{secret} is one of the relay's own secrets: no backend may be given it"
                )));
            }
            if !self
                .add_server_commands
                .iter()
                .any(|rule| rule.allows(command, &spec.args, spec.cwd.as_deref(), env_names()))
            {
                let line = std::iter::once(command.as_str()).chain(spec.args.iter().map(String::as_str));
                return Err(AdminError::CommandNotAllowed(line.collect::<Vec<_>>().join(" ")));
            }
        }
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

    async fn remove_server(&self, arguments: Value) -> Result<Value, AdminError> {
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

    fn reconnect_server(&self, arguments: Value) -> Result<Value, AdminError> {
        let name = name_argument(&arguments)?;
        let upstream = self.upstreams.get(&name).ok_or_else(|| AdminError::NoSuchBackend(name.clone()))?;
        upstream.request_reconnect();
        Ok(json!({"reconnecting": name}))
    }

    /// Changes the file and applies the result, both under its lock (off the async runtime).
    async fn persist<F>(&self, change: F) -> Result<(), AdminError>
    where
        F: FnOnce(&mut crate::config::BackendsFile) -> Result<(), String> + Send + 'static,
    {
        let (store, upstreams) = (self.store.clone(), self.upstreams.clone());
        tokio::task::spawn_blocking(move || {
            store.update_then(change, |backends| {
                upstreams.reconcile(backends);
            })
        })
        .await
        .map_err(|e| AdminError::Interrupted(e.to_string()))??;
        Ok(())
    }
}

fn name_argument(arguments: &Value) -> Result<String, AdminError> {
    arguments
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| AdminError::BadArguments("argument \"name\" (string) is required".into()))
}

fn definitions() -> Vec<BuiltinTool> {
    let no_args = json!({"type": "object", "properties": {}, "additionalProperties": false});
    let by_name = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "description": "Backend name"}},
        "required": ["name"],
    });
    let tool = |admin: bool, definition: Value| BuiltinTool { definition, admin };
    vec![
        tool(
            false,
            json!({
                "name": "relay_get_status",
                "description": "Relay instance colour, version, uptime, session count and every backend's state, transport and tool count.",
                "inputSchema": no_args,
            }),
        ),
        tool(
            false,
            json!({
                "name": "relay_list_servers",
                "description": "List the configured backends with their state and tool count.",
                "inputSchema": no_args,
            }),
        ),
        tool(
            true,
            json!({
                "name": "relay_add_server",
                "description": "Add a backend and persist it to backends.yaml (admin). Give `url` (ws://, http://) or `command` (+ `args`, `env`) for stdio; commands must be allowed in relay.yaml.",
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                        "url": {"type": "string"},
                        "command": {"type": "string"},
                        "args": {"type": "array", "items": {"type": "string"}},
                        "env": {"type": "object", "additionalProperties": {"type": "string"}},
                        "inherit_env": {"type": "array", "items": {"type": "string"}},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                        "call_timeout_secs": {"type": "number"},
                    },
                    "required": ["name"],
                },
            }),
        ),
        tool(
            true,
            json!({
                "name": "relay_remove_server",
                "description": "Remove a backend and persist the change to backends.yaml (admin).",
                "inputSchema": by_name,
            }),
        ),
        tool(
            true,
            json!({
                "name": "relay_reconnect_server",
                "description": "Open a new connection to a backend now (admin); calls in flight finish on the old one, which then closes.",
                "inputSchema": by_name,
            }),
        ),
        tool(
            true,
            json!({
                "name": "relay_reload_plugins",
                "description": "Reload every plugin from its file now (admin). A plugin that fails to load keeps its running version.",
                "inputSchema": no_args,
            }),
        ),
        tool(
            true,
            json!({
                "name": "relay_rollback_plugin",
                "description": "Switch a plugin back to its previous version at once (admin).",
                "inputSchema": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "description": "Plugin name"}},
                    "required": ["name"],
                },
            }),
        ),
        tool(
            true,
            json!({
                "name": "relay_drain",
                "description": "Drain this instance and exit, as SIGTERM does (admin): /readyz turns 503, new connections, sessions and requests are refused, running requests finish (up to shutdown.grace_secs), then the process exits.",
                "inputSchema": no_args,
            }),
        ),
    ]
    .into_iter()
    .chain(auth_tools::definitions())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_that_changes_the_relay_or_disturbs_others_needs_admin() {
        for name in [
            "relay_add_server",
            "relay_remove_server",
            "relay_reconnect_server",
            "relay_reload_plugins",
            "relay_rollback_plugin",
            "relay_drain",
        ] {
            assert!(needs_admin(name), "{name}");
        }
        assert!(!needs_admin("relay_get_status") && !needs_admin("relay_list_servers") && !needs_admin("echo"));
    }
}
