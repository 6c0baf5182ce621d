//! What `serve` must be able to use before it binds anything: the listen address (with
//! `RELAY_PORT`), the metrics address (with `RELAY_METRICS_LISTEN`), the TLS certificate and
//! key, the directory of the backends file (watched), trusted proxies and allowed commands.
//! `check-config` runs the same function, so a configuration it passes does not make `serve`
//! exit at start.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::config::RelayConfig;
use crate::transport::Tls;

/// What `serve` binds and loads, resolved and checked.
pub struct Preflight {
    /// The main port's address.
    pub addr: SocketAddr,
    /// The metrics listener's address, when there is one.
    pub metrics_listen: Option<String>,
    /// TLS on the main port, when configured.
    pub tls: Option<Arc<Tls>>,
    /// Proxies whose PROXY protocol headers are believed (`listen.trusted_proxies`).
    pub proxies: Vec<ipnet::IpNet>,
    /// Command lines `relay_add_server` may start (`access.add_server_commands`).
    pub allowed_commands: Vec<crate::config::AllowedCommand>,
}

/// Resolves and checks what `serve` needs from `config` (read from `config_path`) and the
/// environment.
pub fn preflight(config: &RelayConfig, config_path: &Path) -> anyhow::Result<Preflight> {
    let port = std::env::var("RELAY_PORT")
        .ok()
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>().with_context(|| format!("RELAY_PORT={p} is not a port (0-65535)")))
        .transpose()?
        .unwrap_or(config.listen.port);
    let addr: SocketAddr = format!("{}:{port}", config.listen.host).parse().with_context(|| {
        format!("listen.host {:?} with port {port} is not an IP address and port", config.listen.host)
    })?;
    // RELAY_METRICS_LISTEN overrides, so blue and green on one relay.yaml get a port each.
    let metrics_listen =
        std::env::var("RELAY_METRICS_LISTEN").ok().filter(|l| !l.is_empty()).or_else(|| config.metrics.listen.clone());
    if let Some(listen) = &metrics_listen {
        let from = if std::env::var_os("RELAY_METRICS_LISTEN").is_some_and(|l| !l.is_empty()) {
            "RELAY_METRICS_LISTEN"
        } else {
            "metrics.listen"
        };
        let resolved = listen.to_socket_addrs().with_context(|| format!("{from}={listen} is not an address:port"))?;
        if resolved.count() == 0 {
            bail!("{from}={listen} resolves to no address");
        }
    }
    let tls = match &config.tls {
        Some(tls) => {
            Some(Tls::load(tls.resolved(config_path)).context("cannot use the TLS certificate and key (tls)")?)
        }
        None => None,
    };
    let backends = config.backends_path(config_path);
    let dir = backends.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "backends_file {}: its directory {} does not exist (the relay watches it for changes)",
            backends.display(),
            dir.display()
        );
    }
    let proxies = config.listen.proxies().map_err(anyhow::Error::msg)?;
    let allowed_commands = config.access.allowed_commands().map_err(anyhow::Error::msg)?;
    Ok(Preflight { addr, metrics_listen, tls, proxies, allowed_commands })
}
