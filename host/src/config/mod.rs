//! Configuration: `relay.yaml` (how the relay runs) and `backends.yaml` (what it fronts).
//!
//! Both are strict (`deny_unknown_fields`): a typo is an error at start-up, not a silently
//! ignored setting.

mod backends;
mod binding;
mod commands;
mod credentials;
mod listen;
mod logging;
mod plugins;
mod redact;
mod relay;
mod store;
mod watch;

pub use backends::{Backend, BackendSpec, BackendsFile, ConfigError, Transport};
pub use binding::{Binding, BindingMatcher, Hook};
pub use commands::{AllowedCommand, CommandRule};
pub use credentials::{CredentialMode, shared_per_user_backends, unknown_credential_plugins};
pub use listen::{ListenConfig, MAX_WORKERS};
pub use logging::{ForwardConfig, LogFormat, LoggingConfig};
pub use plugins::{
    Grants, MAX_PLUGIN_MEMORY_MB, OnError, PluginConfig, PluginLimits, World, backend_granted, validate_plugins,
};
pub use redact::redact_url;
pub use relay::{
    AccessConfig, KvBackend, KvConfig, MetricsConfig, OAuthConfig, RelayConfig, ShutdownConfig, TlsConfig,
    UpstreamConfig,
};
pub use store::{BackendStore, StoreError};
pub use watch::watch_backends;
