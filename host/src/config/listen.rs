//! `listen`: the one port, who may speak PROXY protocol on it, and how many threads serve it.

use serde::Deserialize;

/// The most worker threads `listen.workers` may ask for: past the cores of any machine the
/// relay runs on, more threads only cost memory and wake-ups.
pub const MAX_WORKERS: usize = 256;

/// The one TCP listener that serves every transport.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Address to bind; loopback by default so a fresh install is not exposed.
    pub host: String,
    /// Port; `RELAY_PORT` in the environment overrides it.
    pub port: u16,
    /// Proxies (addresses or CIDR blocks, e.g. `127.0.0.1`, `10.0.0.0/8`) whose connections may
    /// start with a PROXY protocol v2 header (HAProxy's `send-proxy-v2`): the client address
    /// it carries is then the one the relay counts, throttles and logs. Connections from
    /// anywhere else are taken at their own address, and a header from them is not read.
    pub trusted_proxies: Vec<String>,
    /// Threads that accept and serve connections, each with the connections it accepted and
    /// their upstream HTTP connections; 0 (the default): one per CPU the process may run on.
    pub workers: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { host: "127.0.0.1".into(), port: 8000, trusted_proxies: Vec::new(), workers: 0 }
    }
}

impl ListenConfig {
    /// What `relay.yaml` may not say here: a proxy entry that is no address, too many workers.
    pub fn check(&self) -> Result<(), String> {
        self.proxies()?;
        if self.workers > MAX_WORKERS {
            return Err(format!("listen.workers ({}) may be at most {MAX_WORKERS}; 0 is one per CPU", self.workers));
        }
        Ok(())
    }

    /// `trusted_proxies`, parsed (a bare address is a block of one).
    pub fn proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("listen.trusted_proxies: {entry:?} is not an address or CIDR block"))
            })
            .collect()
    }

    /// How many worker threads serve the port: `workers`, or one per CPU this process may run
    /// on (its affinity and cgroup quota, so `taskset -c 0` means one).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}
