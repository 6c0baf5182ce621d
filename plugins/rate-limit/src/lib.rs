//! `rate-limit`: a token bucket per principal, and optionally per principal and tool.
//!
//! The bucket is kept as GCRA state (one "theoretical arrival time" per key) in the host's
//! `kv` store and updated with compare-and-swap, so it never lets more through than the rate
//! (a bucket too contended to update refuses), survives a
//! reload of this plugin, and is shared between relay instances that share a store. A busy
//! principal's next requests are paid for in advance and handed to the host as a hold
//! (`verdict.hold`, sized by `lease`), so most of them are decided without a call in here.

mod gcra;
mod keys;
mod lease;
mod settings;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use relay::plugin::types::{Denial, DenialCode, RequestInfo};
use relay::plugin::{clock, config, kv, log, verdict};

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

struct RateLimit;

/// Attempts at a contended compare-and-swap before giving up (and refusing the request: the
/// bucket is being taken from faster than this instance can read it).
const CAS_ATTEMPTS: usize = 16;

impl exports::relay::plugin::policy_check::Guest for RateLimit {
    fn check(request: RequestInfo) -> Result<(), Denial> {
        let settings = match settings() {
            Ok(settings) => settings,
            // Never limited by default: clients still connect, and hear why their requests fail.
            Err(_) if matches!(request.method.as_str(), "initialize" | "ping") => return Ok(()),
            // A typo must not lift every limit: the call fails, as the plugin's `on_error` says
            // (fail-closed by default), and is counted as a trap.
            Err(problem) => {
                let problem = format!("rate-limit configuration: {problem}; no request is decided until it is fixed");
                log::log(log::Level::Error, &problem);
                panic!("{problem}")
            }
        };
        if !settings.applies_to(&request.method) {
            // Not limited: that stands for a minute (a reload, which may change it, ends it).
            verdict::hold(u32::MAX, 60_000);
            return Ok(());
        }
        let principal = &request.principal.id;
        let fail = settings.on_kv_unavailable;
        let mut holds = true;
        if let Some(tool) = request.tool.as_deref()
            && let Some(limit) = settings.per_tool.get(tool)
        {
            // Two buckets: decided request by request (per-tool limits are the small ones).
            let rate = gcra::Rate::per_minute(*limit, None);
            take(&keys::bucket("tool", &[principal, tool]), rate, 1, 0, principal, fail)?;
            holds = false;
        }
        let rate = settings.rate();
        // Never a hold for a per-tool key, so nothing ended either.
        let previous = verdict::previous();
        let unused = previous.map_or(0, |ended| ended.unused);
        let hold = if holds { lease::next_hold(previous, rate.limit(), rate.burst()) } else { 0 };
        let taken = take(&keys::bucket("principal", &[principal]), rate, 1 + hold, unused, principal, fail)?;
        if taken > 1 {
            verdict::hold(taken - 1, lease::HOLD_MS);
        }
        Ok(())
    }
}

/// The settings, parsed on the first call of this instance (the host keeps instances warm).
fn settings() -> &'static Result<settings::Settings, String> {
    static SETTINGS: OnceLock<Result<settings::Settings, String>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| settings::Settings::from_config(&config::get_json(), std::env::var("RELAY_RATE_LIMIT").ok()))
}

/// A principal id as quoted in logs and denials: its first 64 characters.
fn shown(principal: &str) -> String {
    match principal.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &principal[..at]),
        None => principal.to_owned(),
    }
}

/// How often, at most, an unavailable store is logged (each record says how many decisions it
/// stands for): with Redis down, one line per request would flood the log.
const WARN_EVERY_MS: u64 = 10_000;

/// When the store failure was last logged (ms), and the decisions not logged since.
static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
static UNLOGGED: AtomicU64 = AtomicU64::new(0);

/// The decision when the store fails or refuses, as configured (`on_kv_unavailable`), logged
/// at most once per [`WARN_EVERY_MS`] (the failures are counted by the host's
/// `relay_kv_unavailable_total` either way).
fn store_failed(error: kv::KvError, mode: settings::FailMode, principal: &str) -> Result<(), Denial> {
    let principal = &shown(principal);
    let now = clock::now_ms();
    let last = LAST_WARNED.load(Ordering::Relaxed);
    let log_now = now.saturating_sub(last) >= WARN_EVERY_MS
        && LAST_WARNED.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
    let warn = |what: &str| {
        if log_now {
            let others = UNLOGGED.swap(0, Ordering::Relaxed);
            let also = if others > 0 {
                format!(" ({others} more such decisions since the last record)")
            } else {
                String::new()
            };
            log::log(log::Level::Warn, &format!("kv unavailable ({error:?}); {what}{also}"));
        } else {
            UNLOGGED.fetch_add(1, Ordering::Relaxed);
        }
    };
    match mode {
        settings::FailMode::Open => {
            warn(&format!("failing open: request of {principal} allowed"));
            Ok(())
        }
        settings::FailMode::Closed => {
            warn(&format!("failing closed: request of {principal} refused"));
            Err(Denial {
                code: DenialCode::RateLimited,
                message: "rate-limit state is unavailable; request refused (on_kv_unavailable: closed)".into(),
                retry_after_ms: Some(1000),
            })
        }
    }
}

/// Takes `wanted` tokens from the bucket at `key` after giving back `unused` ones (of a hold
/// that ended), or one when it does not hold them all; returns how many it took, or explains
/// when the next one is due.
fn take(
    key: &str,
    rate: gcra::Rate,
    wanted: u32,
    unused: u32,
    principal: &str,
    on_failure: settings::FailMode,
) -> Result<u32, Denial> {
    for _ in 0..CAS_ATTEMPTS {
        let now_us = clock::now_ms() * 1000;
        let stored = match kv::get(key) {
            Ok(value) => value,
            Err(e) => return store_failed(e, on_failure, principal).map(|()| 1),
        };
        let tat = stored.as_deref().and_then(|v| v.parse().ok()).map(|tat| rate.refunded(tat, unused));
        if let Some(empty) = tat.and_then(|tat| rate.beyond_reach(tat, now_us)) {
            // A time no bucket of this rate holds (written into the store by hand): the empty
            // bucket it stands for takes its place, so it refuses one interval at most.
            log::log(log::Level::Warn, &format!("bucket {key} held a time out of reach; reset to an empty bucket"));
            let ttl_ms = (empty - now_us) / 1000 + 1;
            if let Err(e) = kv::compare_and_swap(key, stored.as_deref(), &empty.to_string(), Some(ttl_ms)) {
                return store_failed(e, on_failure, principal).map(|()| 1);
            }
            continue;
        }
        let (new_tat, ttl_us, taken) = match rate.decide_many(tat, now_us, wanted) {
            (gcra::Decision::Allow { new_tat, ttl_us }, taken) => (new_tat, ttl_us, taken),
            (gcra::Decision::Deny { retry_after_us }, _) => {
                if unused > 0
                    && let Some(tat) = tat
                {
                    // The refund stands even when this request is refused (once; a lost race
                    // only leaves the bucket a little fuller than it was).
                    let _ = kv::compare_and_swap(key, stored.as_deref(), &tat.to_string(), None);
                }
                let retry_after_ms = retry_after_us.div_ceil(1000);
                let principal = shown(principal);
                return Err(Denial {
                    code: DenialCode::RateLimited,
                    message: format!(
                        "rate limit exceeded for {principal}: {} requests per minute; retry in {retry_after_ms} ms",
                        rate.limit()
                    ),
                    retry_after_ms: Some(retry_after_ms),
                });
            }
        };
        match kv::compare_and_swap(key, stored.as_deref(), &new_tat.to_string(), Some(ttl_us / 1000 + 1)) {
            Ok(true) => return Ok(taken),
            Ok(false) => continue,
            Err(e) => return store_failed(e, on_failure, principal).map(|()| 1),
        }
    }
    // Letting it pass gave a client with many connections its burst again and again.
    log::log(log::Level::Warn, &format!("bucket {key} too contended; request refused"));
    Err(Denial {
        code: DenialCode::RateLimited,
        message: format!("rate limit of {} busy with concurrent requests; retry shortly", shown(principal)),
        // Short: the host lets a refusal with a wait stand until then for this session.
        retry_after_ms: Some(rate.interval_ms().clamp(10, 100)),
    })
}

export!(RateLimit);
