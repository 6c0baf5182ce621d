//! Guessing is throttled: failed authentications are counted per remote address (its
//! [`AddressKey`]), and past `limits.auth_failures` within `limits.auth_failure_window_secs` that
//! address is refused without asking the auth plugin until its window ends. IPv6 addresses count
//! by their /64 (what one host or customer is usually given), so rotating addresses within it
//! does not help; a client a trusted proxy names is counted apart from a direct one at the same
//! address. Successes do not reset the count: one valid credential must not buy more guesses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::AddressKey;

/// Addresses tracked before idle and expired ones are swept out.
const SWEEP_AT: usize = 4096;

/// One address's current window. Its gate has one permit per failure still allowed: an
/// attempt holds one while the auth plugin decides, a failure uses it up. So however many
/// attempts an address makes at once, at most `max_failures` of them can fail in a window;
/// attempts past what is left wait for one to settle, and are refused once none is left.
#[derive(Debug)]
struct Window {
    started: Instant,
    failures: u32,
    gate: Arc<Semaphore>,
}

impl Window {
    /// Whether the window still matters: failures that count now, or attempts in flight.
    fn busy(&self, throttle: &AuthThrottle, now: Instant) -> bool {
        let counting = self.failures > 0 && now < self.started + throttle.window;
        let left = throttle.max_failures.saturating_sub(self.failures) as usize;
        counting || self.gate.available_permits() < left
    }
}

/// The failure counts of every address that is trying or failed recently.
#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    windows: Mutex<HashMap<AddressKey, Window>>,
}

/// One authentication attempt in progress; dropped without [`Attempt::failed`] it counts as
/// nothing (it succeeded, or the plugin could not decide).
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a AuthThrottle,
    key: AddressKey,
    permit: Option<OwnedSemaphorePermit>,
}

impl AuthThrottle {
    /// At most `max_failures` failed attempts per address within `window` (at least one).
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self { max_failures: max_failures.max(1), window, windows: Mutex::new(HashMap::new()) }
    }

    fn fresh(&self, now: Instant) -> Window {
        Window { started: now, failures: 0, gate: Arc::new(Semaphore::new(self.max_failures as usize)) }
    }

    /// Starts an attempt from `addr`, waiting while as many of its attempts are undecided as
    /// it has failures left; `Err` with how long until it may try again when none are left.
    pub async fn attempt(&self, key: AddressKey) -> Result<Attempt<'_>, Duration> {
        let gate = {
            let mut windows = self.windows.lock().expect("throttle lock");
            let now = Instant::now();
            if windows.len() >= SWEEP_AT {
                windows.retain(|_, w| w.busy(self, now));
            }
            let window = windows.entry(key).or_insert_with(|| self.fresh(now));
            if now >= window.started + self.window {
                *window = self.fresh(now);
            }
            if window.failures >= self.max_failures {
                return Err(window.started + self.window - now);
            }
            window.gate.clone()
        };
        match gate.acquire_owned().await {
            Ok(permit) => Ok(Attempt { throttle: self, key, permit: Some(permit) }),
            // Closed: the address ran out of failures while this attempt waited.
            Err(_) => Err(self.retry_after(key)),
        }
    }

    fn retry_after(&self, key: AddressKey) -> Duration {
        let windows = self.windows.lock().expect("throttle lock");
        let now = Instant::now();
        windows.get(&key).map_or(Duration::ZERO, |w| (w.started + self.window).saturating_duration_since(now))
    }

    /// Addresses tracked now (for tests).
    pub fn tracked(&self) -> usize {
        self.windows.lock().expect("throttle lock").len()
    }
}

impl Attempt<'_> {
    /// The attempt failed: it counts against its address in the current window.
    pub fn failed(mut self) {
        let permit = self.permit.take().expect("an attempt holds its permit until settled");
        let throttle = self.throttle;
        let mut windows = throttle.windows.lock().expect("throttle lock");
        let now = Instant::now();
        let window = windows.entry(self.key).or_insert_with(|| throttle.fresh(now));
        if Arc::ptr_eq(&window.gate, permit.semaphore()) {
            permit.forget();
        } else {
            // The window rolled over while the plugin decided: the failure counts in the new one.
            drop(permit);
            if let Ok(slot) = window.gate.try_acquire() {
                slot.forget();
            }
        }
        window.failures += 1;
        if window.failures >= throttle.max_failures {
            window.gate.close();
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        drop(permit);
        // A success of an address with no failures leaves nothing to remember.
        let mut windows = self.throttle.windows.lock().expect("throttle lock");
        if let Some(window) = windows.get(&self.key)
            && window.failures == 0
            && window.gate.available_permits() == self.throttle.max_failures as usize
        {
            windows.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> AddressKey {
        key("10.0.0.1")
    }

    fn b() -> AddressKey {
        key("10.0.0.2")
    }

    fn key(text: &str) -> AddressKey {
        AddressKey::new(text.parse().unwrap(), false)
    }

    #[tokio::test]
    async fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let throttle = AuthThrottle::new(3, Duration::from_millis(300));
        for _ in 0..3 {
            throttle.attempt(a()).await.expect("may try").failed();
        }
        let wait = throttle.attempt(a()).await.expect_err("refused");
        assert!(wait > Duration::from_millis(200) && wait <= Duration::from_millis(300), "{wait:?}");
        drop(throttle.attempt(b()).await.expect("another address is unaffected"));
        tokio::time::sleep(Duration::from_millis(310)).await;
        throttle.attempt(a()).await.expect("the window passed").failed();
        drop(throttle.attempt(a()).await.expect("a new window counts from one"));
    }

    #[tokio::test]
    async fn attempts_at_once_cannot_exceed_the_failures_left() {
        let throttle = Arc::new(AuthThrottle::new(3, Duration::from_secs(60)));
        let held: Vec<_> = futures::future::join_all((0..3).map(|_| throttle.attempt(a()))).await;
        let held: Vec<_> = held.into_iter().map(|a| a.expect("three may try at once")).collect();
        // A fourth waits for one of them to settle...
        let fourth = tokio::time::timeout(Duration::from_millis(50), throttle.attempt(a())).await;
        assert!(fourth.is_err(), "a fourth attempt waited");
        // ... and is refused when all three fail.
        let waiting = {
            let throttle = throttle.clone();
            tokio::spawn(async move { throttle.attempt(a()).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        for attempt in held {
            attempt.failed();
        }
        assert!(waiting.await.unwrap().is_err(), "no failures left");
    }

    #[tokio::test]
    async fn successes_are_forgotten_and_ipv6_counts_by_its_64() {
        let throttle = AuthThrottle::new(1, Duration::from_secs(60));
        for _ in 0..10 {
            drop(throttle.attempt(a()).await.expect("successes never use up failures"));
        }
        assert_eq!(throttle.tracked(), 0, "nothing kept for an address without failures");
        throttle.attempt(key("2001:db8:1:2::1")).await.unwrap().failed();
        assert!(throttle.attempt(key("2001:db8:1:2:ffff::9")).await.is_err(), "same /64");
        assert!(throttle.attempt(key("2001:db8:1:3::1")).await.is_ok(), "another /64");
        throttle.attempt(key("::ffff:10.0.0.2")).await.unwrap().failed();
        assert!(throttle.attempt(b()).await.is_err(), "IPv4-mapped counts as IPv4");
    }
}
