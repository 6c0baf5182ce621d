//! The process's own series: open sessions, version and colour, memory and CPU (read at
//! scrape time, cheaper to read than to track), the log forwarder's state, whether its
//! configuration files on disk still load, and which shared store it sees.

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::lifecycle::Lifecycle;

/// The process's series.
pub struct ProcessSeries {
    log_forward_dropped: Counter,
    log_forward_connected: Gauge,
    config_rejected: Family<FileLabel, Gauge>,
    kv_store: Family<StoreLabel, Gauge>,
    sources: Arc<ScrapeSources>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    file: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    store: String,
}

impl ProcessSeries {
    /// The series, registered in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let series = Self {
            log_forward_dropped: Counter::default(),
            log_forward_connected: Gauge::default(),
            config_rejected: Family::default(),
            kv_store: Family::default(),
            sources: Arc::default(),
        };
        registry.register(
            "relay_log_forward_dropped",
            "Log records not forwarded (queue full or logger away)",
            series.log_forward_dropped.clone(),
        );
        registry.register(
            "relay_log_forward_connected",
            "1 while the log forwarder is connected to its logger",
            series.log_forward_connected.clone(),
        );
        registry.register(
            "relay_config_file_rejected",
            "1 while a configuration file on disk does not load (backends: the running set stays; relay: read again on SIGHUP; tls: the running certificate stays); a restart would fail (an emptied backends file: start with no backends)",
            series.config_rejected.clone(),
        );
        registry.register(
            "relay_kv_store_info",
            "1 for the store this instance keeps shared state in, as last asked (/status): an id written in Redis under kv.namespace (instances showing the same one share sessions and budgets), none for the in-memory kv, unreachable when Redis did not answer",
            series.kv_store.clone(),
        );
        registry.register_collector(Box::new(series.sources.clone()));
        series
    }

    /// Whether the configuration file `file` (`backends`, `relay`, `tls`) loaded when last read.
    pub fn config_file(&self, file: &'static str, loads: bool) {
        self.config_rejected.get_or_create(&FileLabel { file }).set(i64::from(!loads));
    }

    /// The store this instance keeps shared state in, as just asked (see `relay_kv_store_info`).
    pub fn kv_store(&self, store: &str) {
        self.kv_store.clear();
        self.kv_store.get_or_create(&StoreLabel { store: store.to_owned() }).set(1);
    }

    /// Gives the scrape-time source of the session count and the instance's colour.
    pub fn attach(&self, lifecycle: Arc<Lifecycle>) {
        let _ = self.sources.lifecycle.set(lifecycle);
    }

    /// A log record the forwarder could not take or send.
    pub fn log_forward_dropped(&self) {
        self.log_forward_dropped.inc();
    }

    /// `records` records the log forwarder sent were lost (a logger given up with them
    /// unanswered).
    pub fn log_forward_lost(&self, records: u64) {
        self.log_forward_dropped.inc_by(records);
    }

    /// Whether the log forwarder is connected now.
    pub fn log_forward_connected(&self, connected: bool) {
        self.log_forward_connected.set(i64::from(connected));
    }

    /// Log records dropped so far, and whether the forwarder is connected (for status).
    pub fn log_forward_state(&self) -> (u64, bool) {
        (self.log_forward_dropped.get(), self.log_forward_connected.get() == 1)
    }
}

/// What is read at scrape time rather than tracked.
#[derive(Default)]
struct ScrapeSources {
    lifecycle: OnceLock<Arc<Lifecycle>>,
}

impl std::fmt::Debug for ScrapeSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeSources").field("attached", &self.lifecycle.get().is_some()).finish()
    }
}

impl Collector for ScrapeSources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(lifecycle) = self.lifecycle.get() {
            let sessions = ConstGauge::new(lifecycle.sessions() as i64);
            sessions.encode(encoder.encode_descriptor(
                "relay_sessions",
                "Open client sessions",
                None,
                sessions.metric_type(),
            )?)?;
            let running = ConstGauge::new(lifecycle.running_requests() as i64);
            let help = "Client requests being answered now (a draining relay stops once this is 0)";
            running.encode(encoder.encode_descriptor(
                "relay_requests_running",
                help,
                None,
                running.metric_type(),
            )?)?;
            let draining = ConstGauge::new(i64::from(lifecycle.is_draining()));
            let help = "1 once the relay drains (SIGTERM or relay_drain): nothing new starts here";
            draining.encode(encoder.encode_descriptor("relay_draining", help, None, draining.metric_type())?)?;
            let info = Family::<BuildLabels, Gauge>::default();
            let labels = BuildLabels { version: env!("CARGO_PKG_VERSION"), colour: lifecycle.instance.clone() };
            info.get_or_create(&labels).set(1);
            let help = "The relay's version and blue/green colour (RELAY_INSTANCE, label colour); always 1";
            info.encode(encoder.encode_descriptor("relay_build_info", help, None, info.metric_type())?)?;
        }
        if let Some(process) = Process::read() {
            let rss = ConstGauge::new(process.resident_bytes as i64);
            let help = "Resident memory of the relay process";
            rss.encode(encoder.encode_descriptor("process_resident_memory_bytes", help, None, rss.metric_type())?)?;
            let cpu = ConstCounter::new(process.cpu_seconds);
            let help = "CPU time the relay process used (user and system)";
            cpu.encode(encoder.encode_descriptor("process_cpu_seconds", help, None, cpu.metric_type())?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    /// `RELAY_INSTANCE`. Not `instance`: Prometheus sets that label itself on every scraped
    /// series (the target's address) and would rename this one `exported_instance`.
    colour: String,
}

/// This process's memory and CPU time, from `/proc/self`.
struct Process {
    resident_bytes: u64,
    cpu_seconds: f64,
}

impl Process {
    fn read() -> Option<Self> {
        // Linux reports these in pages and clock ticks; both are the kernel's fixed defaults on
        // every platform the relay ships for (4 KiB pages, 100 ticks a second).
        const PAGE: u64 = 4096;
        const TICKS: f64 = 100.0;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) start at the state, field 3.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some(Self { resident_bytes: resident_pages * PAGE, cpu_seconds: (utime + stime) / TICKS })
    }
}
