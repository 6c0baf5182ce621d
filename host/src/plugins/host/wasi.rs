//! WASI 0.2 for plugins, built from the grants: only the granted environment variables, clocks
//! that stand still without the `clock` grant, the granted directories (read-only or
//! writable, at their configured paths), and no sockets.

use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::config::PluginConfig;
use crate::plugins::PluginError;

/// What one plugin's WASI context may reach.
pub struct WasiGrant {
    plugin: String,
    /// Granted environment variables with their values at start-up.
    env: Vec<(String, String)>,
    /// Whether the clocks run.
    clock: bool,
    /// Directories the plugin may read (host path = guest path).
    read_dirs: Vec<PathBuf>,
    /// Directories the plugin may read and write.
    write_dirs: Vec<PathBuf>,
}

impl WasiGrant {
    /// The grant of `config`; directories are made absolute against relay.yaml's directory.
    pub fn new(config: &PluginConfig, relay_yaml: &Path) -> Result<Self, PluginError> {
        let env = config.grants.env.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v))).collect();
        Ok(Self {
            plugin: config.name.clone(),
            env,
            clock: config.grants.clock,
            read_dirs: granted_dirs(config, relay_yaml, false)?,
            write_dirs: granted_dirs(config, relay_yaml, true)?,
        })
    }

    /// A fresh WASI context for one store.
    pub fn build(&self) -> WasiCtx {
        let mut wasi = WasiCtxBuilder::new();
        for (name, value) in &self.env {
            wasi.env(name, value);
        }
        if !self.clock {
            wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        for (dirs, perms) in [(&self.read_dirs, FsPerms::ReadOnly), (&self.write_dirs, FsPerms::ReadWrite)] {
            for dir in dirs {
                let guest = dir.to_string_lossy();
                if let Err(error) = wasi.preopened_dir(dir, &guest, perms) {
                    // Checked at load; a directory removed since is logged and left out.
                    tracing::warn!(plugin = %self.plugin, dir = %guest, %error, "granted directory unavailable");
                }
            }
        }
        wasi.build()
    }
}

/// A clock that never moves, for plugins without the clock grant.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
/// The directories `config` grants (read-only or writable), made absolute against relay.yaml's
/// directory but not resolved through symlinks: the plugin sees them at the configured paths.
/// Read-only ones must exist; writable ones are created.
fn granted_dirs(config: &PluginConfig, relay_yaml: &Path, writable: bool) -> Result<Vec<PathBuf>, PluginError> {
    let grants = if writable { &config.grants.files.write } else { &config.grants.files.read };
    let base = relay_yaml.parent().unwrap_or(Path::new("."));
    grants
        .iter()
        .map(|dir| {
            let failed = |e: std::io::Error| PluginError::Load {
                plugin: config.name.clone(),
                message: format!("granted directory {}: {e}", dir.display()),
            };
            let dir = std::path::absolute(base.join(dir)).map_err(failed)?;
            if writable {
                std::fs::create_dir_all(&dir).map_err(failed)?;
            }
            if !dir.is_dir() {
                return Err(failed(std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory")));
            }
            Ok(dir)
        })
        .collect()
}
