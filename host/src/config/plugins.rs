//! The `plugins` section of `relay.yaml`: which WebAssembly components to load, in what order,
//! with what configuration and which grants.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::binding::Binding;

/// The world a plugin targets; decides where the host calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// Runs once per connection or session: who is calling.
    Auth,
    /// Runs before every request, in the listed order: may it go ahead.
    Policy,
    /// Offers tools that join the catalog.
    Adapter,
    /// Edits what each caller sees of the lists, and sees and may change the calls it is
    /// bound to (arguments before, results after).
    Interceptor,
    /// Issues the credential each caller's calls to a backend carry (the backends whose
    /// `credentials` are `{mode: plugin, plugin: <its name>}`).
    Credentials,
}

impl World {
    /// The WIT world name.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Auth => "auth",
            World::Policy => "policy",
            World::Adapter => "adapter",
            World::Interceptor => "interceptor",
            World::Credentials => "credentials",
        }
    }

    /// Whether a new version of such a plugin may change what clients see listed (an
    /// adapter's tools, an interceptor's edits).
    pub fn shapes_lists(self) -> bool {
        matches!(self, World::Adapter | World::Interceptor)
    }
}

/// One plugin entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name: log field, `kv` namespace, prefix for colliding adapter tools.
    pub name: String,
    /// The world the component implements.
    pub world: World,
    /// The `.wasm` component, relative to the directory of `relay.yaml`. Watched for changes.
    pub path: PathBuf,
    /// Handed to the plugin as JSON by `config.get-json`.
    #[serde(default)]
    pub config: serde_yaml::Value,
    /// What the sandbox lets the plugin see.
    #[serde(default)]
    pub grants: Grants,
    /// Per-call bounds.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Which calls an interceptor or policy sees (others do not pay for it).
    #[serde(default)]
    pub bind: Binding,
    /// What a failing interceptor or policy (trap, deadline, kv outage) does to the request.
    #[serde(default)]
    pub on_error: OnError,
}

/// A failing interceptor: the call fails (`fail-closed`, default) or goes on without it
/// (`fail-open`; logged and counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// The request fails with a clear error.
    #[default]
    FailClosed,
    /// The request continues as if the interceptor had passed it.
    FailOpen,
}

/// Capabilities a plugin gets beyond pure computation. Everything not granted is denied.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Environment variables the plugin may read (only these, with the relay's values).
    #[serde(default)]
    pub env: Vec<String>,
    /// Whether the plugin may read the wall and monotonic clocks.
    #[serde(default)]
    pub clock: bool,
    /// Hosts (`host` or `host:port`) the plugin may send HTTP requests to through `wasi:http`;
    /// a request to any other host is refused before it leaves the relay.
    #[serde(default)]
    pub http: Vec<String>,
    /// Directories the plugin sees, at the same paths as on the host (relative paths are
    /// resolved against relay.yaml's directory).
    #[serde(default)]
    pub files: FileGrants,
    /// Backends an adapter may call through `upstream.call-tool`: `name` (every tool) or
    /// `name/tool`. Empty: none. Calls pass the policy chain as the calling client.
    #[serde(default)]
    pub backends: Vec<String>,
}

/// Whether `tool` of `backend` is in a `grants.backends` list (`name` or `name/tool`).
pub fn backend_granted(grants: &[String], backend: &str, tool: &str) -> bool {
    grants.iter().any(|grant| match grant.split_once('/') {
        Some((b, t)) => b == backend && t == tool,
        None => grant == backend,
    })
}

/// Directories granted to a plugin: read-only ones, and writable ones (created if missing).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrants {
    /// Readable, never writable.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Readable and writable.
    #[serde(default)]
    pub write: Vec<PathBuf>,
}

/// Bounds on a plugin: per call, and on everything its calls together may hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Wall time one call may take before it is ended (waiting for a free call slot counts).
    pub deadline_ms: u64,
    /// Linear memory one instance may grow to.
    pub memory_mb: u64,
    /// Calls running at once; more wait (within their deadline).
    pub max_concurrent_calls: usize,
    /// Idle instances kept warm.
    pub max_idle_instances: usize,
    /// `kv` entries the plugin may hold.
    pub kv_entries: usize,
    /// `kv` bytes (keys and values) the plugin may hold.
    pub kv_bytes: usize,
    /// Outgoing `wasi:http` requests in flight at once.
    pub max_outgoing_requests: usize,
    /// `log` records per second; more are dropped (and counted).
    pub logs_per_sec: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            deadline_ms: 100,
            memory_mb: 32,
            max_concurrent_calls: 16,
            max_idle_instances: 8,
            kv_entries: 10_000,
            kv_bytes: 16 << 20,
            max_outgoing_requests: 32,
            logs_per_sec: 50,
        }
    }
}

/// Largest `memory_mb` a plugin may ask for (the pooling allocator reserves this much per slot).
pub const MAX_PLUGIN_MEMORY_MB: u64 = 256;

impl PluginConfig {
    /// The component's path, resolved against the directory of `relay.yaml`.
    pub fn resolved_path(&self, relay_yaml: &Path) -> PathBuf {
        relay_yaml.parent().unwrap_or(Path::new(".")).join(&self.path)
    }

    /// The configuration as JSON text.
    pub fn config_json(&self) -> String {
        match &self.config {
            serde_yaml::Value::Null => "{}".to_owned(),
            other => serde_json::to_string(other).unwrap_or_else(|_| "{}".to_owned()),
        }
    }

    /// Checks one entry.
    pub fn validate(&self) -> Result<(), String> {
        if !super::backends::valid_backend_name(&self.name) {
            return Err(format!("plugin name {:?} must match [A-Za-z0-9_-]{{1,64}}", self.name));
        }
        if self.limits.deadline_ms == 0 || !(1..=MAX_PLUGIN_MEMORY_MB).contains(&self.limits.memory_mb) {
            return Err(format!(
                "plugin {}: limits.deadline_ms must be positive and limits.memory_mb within 1..={MAX_PLUGIN_MEMORY_MB}",
                self.name
            ));
        }
        if self.limits.max_concurrent_calls == 0 {
            return Err(format!("plugin {}: limits.max_concurrent_calls must be positive", self.name));
        }
        if let Some(grant) = self.grants.backends.iter().find(|g| g.is_empty() || g.split('/').count() > 2) {
            return Err(format!(
                "plugin {}: grants.backends entry {grant:?} must be a backend or backend/tool",
                self.name
            ));
        }
        if let Some(host) = self.grants.http.iter().find(|h| h.is_empty() || h.contains(['/', ' ', '@'])) {
            return Err(format!("plugin {}: grants.http entry {host:?} must be a host or host:port", self.name));
        }
        if serde_json::to_string(&self.config).is_err() {
            return Err(format!("plugin {}: config must be JSON-compatible", self.name));
        }
        Ok(())
    }
}

/// Checks the whole list: valid entries, unique names, at most one auth plugin.
pub fn validate_plugins(plugins: &[PluginConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for plugin in plugins {
        plugin.validate()?;
        if !names.insert(plugin.name.as_str()) {
            return Err(format!("plugin name {:?} appears twice", plugin.name));
        }
    }
    for plugin in plugins {
        plugin.bind.matcher().map_err(|e| format!("plugin {}: {e}", plugin.name))?;
        if !matches!(plugin.world, World::Interceptor | World::Policy)
            && (plugin.bind != Binding::default() || plugin.on_error != OnError::default())
        {
            return Err(format!("plugin {}: bind and on_error are for policies and interceptors", plugin.name));
        }
        if plugin.world != World::Interceptor && plugin.bind.hooks.is_some() {
            return Err(format!("plugin {}: bind.hooks is for interceptors (a policy has one hook)", plugin.name));
        }
    }
    if plugins.iter().filter(|p| p.world == World::Auth).count() > 1 {
        return Err("at most one auth plugin may be configured".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Hook;

    #[test]
    fn parses_an_entry_and_rejects_two_auth_plugins() {
        let yaml = "- {name: auth, world: auth, path: a.wasm, config: {tokens: []}, grants: {env: [T]}}\n- {name: rl, world: policy, path: r.wasm}\n";
        let plugins: Vec<PluginConfig> = serde_yaml::from_str(yaml).unwrap();
        assert!(validate_plugins(&plugins).is_ok());
        assert_eq!(plugins[0].config_json(), r#"{"tokens":[]}"#);
        assert_eq!(plugins[1].config_json(), "{}");
        let two_auth: Vec<PluginConfig> =
            serde_yaml::from_str("- {name: a, world: auth, path: a.wasm}\n- {name: b, world: auth, path: b.wasm}\n")
                .unwrap();
        assert!(validate_plugins(&two_auth).unwrap_err().contains("one auth"));
        assert!(serde_yaml::from_str::<Vec<PluginConfig>>("- {name: a, world: magic, path: a.wasm}\n").is_err());
    }

    #[test]
    fn an_interceptor_is_bound_by_globs_and_fails_closed_by_default() {
        let yaml = "- {name: r, world: interceptor, path: r.wasm, bind: {backends: [docs, 'git*'], tools: ['read_*']}}\n- {name: o, world: interceptor, path: o.wasm, on_error: fail-open}\n";
        let plugins: Vec<PluginConfig> = serde_yaml::from_str(yaml).unwrap();
        assert!(validate_plugins(&plugins).is_ok());
        let bound = plugins[0].bind.matcher().unwrap();
        assert!(bound.binds("docs", Some("read_file")) && bound.binds("github", Some("read_issue")));
        assert!(!bound.binds("docs", Some("write_file")) && !bound.binds("other", Some("read_file")));
        // Prefixed because another backend offers the same name: bound by its own name still.
        assert!(bound.binds("docs", Some("docs__read_file")) && !bound.binds("docs", Some("docs__write_file")));
        assert!(!bound.binds("docs", Some("github__read_file")), "another source's prefix is not its own");
        // Written prefixed, and the other backend went away: bound by its qualified name.
        let prefixed: Vec<PluginConfig> = serde_yaml::from_str(
            "- {name: r, world: interceptor, path: r.wasm, bind: {tools: [docs__read_file]}}
",
        )
        .unwrap();
        let prefixed = prefixed[0].bind.matcher().unwrap();
        assert!(prefixed.binds("docs", Some("read_file")) && prefixed.binds("docs", Some("docs__read_file")));
        assert!(!prefixed.binds("github", Some("read_file")), "another backend's read_file");
        assert!(plugins[1].bind.matcher().unwrap().binds("anything", Some("at all")));
        assert!(plugins[1].bind.matcher().unwrap().binds("anything", None), "unbound: prompts too");
        assert_eq!((plugins[0].on_error, plugins[1].on_error), (OnError::FailClosed, OnError::FailOpen));
        let bad: Vec<PluginConfig> =
            serde_yaml::from_str("- {name: r, world: interceptor, path: r.wasm, bind: {tools: ['[']}}\n").unwrap();
        assert!(validate_plugins(&bad).unwrap_err().contains("bind"));
        let policy: Vec<PluginConfig> =
            serde_yaml::from_str("- {name: p, world: policy, path: p.wasm, on_error: fail-open}\n").unwrap();
        assert!(validate_plugins(&policy).is_ok(), "policies take bind and on_error too");
        let misplaced: Vec<PluginConfig> =
            serde_yaml::from_str("- {name: a, world: adapter, path: a.wasm, on_error: fail-open}\n").unwrap();
        assert!(validate_plugins(&misplaced).unwrap_err().contains("policies and interceptors"));
        assert!(plugins[1].bind.matcher().unwrap().is_unbound() && !bound.is_unbound());
        assert!(!bound.binds("docs", None), "bound by tools: no prompts or resources");
    }

    #[test]
    fn an_interceptor_runs_the_hooks_its_binding_names() {
        let yaml = "- {name: r, world: interceptor, path: r.wasm, bind: {backends: [docs], hooks: [result]}}\n- {name: all, world: interceptor, path: a.wasm}\n";
        let plugins: Vec<PluginConfig> = serde_yaml::from_str(yaml).unwrap();
        assert!(validate_plugins(&plugins).is_ok());
        let (results_only, all) = (plugins[0].bind.matcher().unwrap(), plugins[1].bind.matcher().unwrap());
        assert!(results_only.runs(Hook::Result) && !results_only.runs(Hook::Request) && !results_only.runs(Hook::List));
        assert!([Hook::List, Hook::Request, Hook::Result].iter().all(|h| all.runs(*h)), "absent: every hook");
        let empty: Vec<PluginConfig> =
            serde_yaml::from_str("- {name: r, world: interceptor, path: r.wasm, bind: {hooks: []}}\n").unwrap();
        assert!(validate_plugins(&empty).unwrap_err().contains("at least one"));
        let policy: Vec<PluginConfig> =
            serde_yaml::from_str("- {name: p, world: policy, path: p.wasm, bind: {hooks: [request]}}\n").unwrap();
        assert!(validate_plugins(&policy).unwrap_err().contains("for interceptors"));
        assert!(
            serde_yaml::from_str::<Vec<PluginConfig>>(
                "- {name: r, world: interceptor, path: r.wasm, bind: {hooks: [before]}}\n"
            )
            .is_err()
        );
    }

    #[test]
    fn backend_grants_name_a_backend_or_one_tool() {
        let grants = ["docs".to_owned(), "git/status".to_owned()];
        assert!(backend_granted(&grants, "docs", "anything"));
        assert!(backend_granted(&grants, "git", "status"));
        assert!(!backend_granted(&grants, "git", "push"));
        assert!(!backend_granted(&[], "docs", "x"), "nothing by default");
    }

    #[test]
    fn parses_http_and_file_grants_and_rejects_urls_as_hosts() {
        let yaml = "- {name: f, world: adapter, path: f.wasm, grants: {http: [api.openai.com, '127.0.0.1:8080'], files: {read: [docs], write: [out]}}}\n";
        let plugins: Vec<PluginConfig> = serde_yaml::from_str(yaml).unwrap();
        assert!(validate_plugins(&plugins).is_ok());
        assert_eq!(plugins[0].grants.files.write, vec![PathBuf::from("out")]);
        let url: Vec<PluginConfig> = serde_yaml::from_str(
            "- {name: f, world: adapter, path: f.wasm, grants: {http: ['https://api.openai.com/v1']}}\n",
        )
        .unwrap();
        assert!(validate_plugins(&url).unwrap_err().contains("host or host:port"));
    }
}
