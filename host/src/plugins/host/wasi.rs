//! WASI 0.2 for plugins, built from the grants: only the granted environment variables, clocks
//! that stand still without the `clock` grant, the granted directories (read-only or
//! writable, at their configured paths), no sockets, and random bytes [`MAX_RANDOM_BYTES`] at a
//! time.

use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::config::PluginConfig;
use crate::plugins::PluginError;

/// The most random bytes one `get-random-bytes` (or `get-insecure-random-bytes`) call gives; a
/// larger ask traps. The host fills them in one synchronous call, which no deadline can end
/// (wasmtime's default, 64 MiB, held a worker thread for 250 ms and other clients' calls with
/// it); a guest wanting more asks again, yielding between asks.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

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
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).max_random_size(MAX_RANDOM_BYTES);
        for (dirs, perms) in [(&self.read_dirs, FsPerms::ReadOnly), (&self.write_dirs, FsPerms::ReadWrite)] {
            for dir in dirs {
                let guest = dir.to_string_lossy();
                // Checked again for each instance: a writable one removed since (a tmp
                // cleaner) may have been made again by someone else.
                let checked = if perms == FsPerms::ReadWrite { private_to_us(dir) } else { Ok(()) };
                if let Err(error) = checked
                    .and_then(|()| wasi.preopened_dir(dir, &guest, perms).map(drop).map_err(std::io::Error::other))
                {
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
/// Read-only ones must exist; writable ones are created private to the relay's user, and must
/// be that user's and written by no other ([`private_to_us`]).
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
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(failed)?;
                private_to_us(&dir).map_err(failed)?;
            }
            if !dir.is_dir() {
                return Err(failed(std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory")));
            }
            Ok(dir)
        })
        .collect()
}

/// Refuses a writable grant another local user could have prepared (a predictable path in
/// `/tmp` made first, or a link put there): the directory, and the link if it is one, must
/// belong to the relay's user, and no group or other user may write it; other users lose any
/// access they had to it (a directory an earlier version made 0755). What a plugin writes
/// there (Fiedler's answers) is then not another user's to read, replace or delete.
fn private_to_us(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let us = unsafe { libc::geteuid() };
    let (link, target) = (std::fs::symlink_metadata(dir)?, std::fs::metadata(dir)?);
    let refuse = |why: String| Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, why));
    for meta in [&link, &target] {
        if meta.uid() != us {
            return refuse(format!("belongs to uid {}, not to the relay's user (uid {us}); refused", meta.uid()));
        }
    }
    if target.mode() & 0o022 != 0 {
        return refuse(format!("others may write it (mode {:o}); refused: chmod go-w it", target.mode() & 0o7777));
    }
    if target.mode() & 0o007 != 0 {
        use std::os::unix::fs::PermissionsExt;
        let private = target.mode() & 0o7770;
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", target.mode() & 0o7777), "a writable plugin directory was open to other users; made {private:o}");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(private))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_writable_grant_must_be_the_relays_own_and_written_by_no_one_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("made/here");
        std::fs::DirBuilder::new().recursive(true).create(&out).unwrap();
        assert!(private_to_us(&out).is_ok());
        // Readable by others (as an earlier version made it): closed to them.
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_to_us(&out).is_ok());
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o750);
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = private_to_us(&out).unwrap_err().to_string();
        assert!(refused.contains("others may write it (mode 777)"), "{refused}");
        // Not ours (root runs the tests: chown works).
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&out, Some(65534), None).unwrap();
            assert!(private_to_us(&out).unwrap_err().to_string().contains("belongs to uid 65534"));
        }
    }
}
