//! The generic cell rate algorithm: a token bucket stored as one number, the theoretical
//! arrival time (TAT) of the next request.

/// A rate: `per_minute` requests, with bursts of up to `burst` back to back.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    per_minute: u32,
    /// Microseconds between requests at the steady rate.
    interval_us: u64,
    /// How far ahead of real time the TAT may run: `(burst - 1) * interval`.
    tolerance_us: u64,
}

/// How far apart the clocks of instances sharing buckets may be.
const MAX_SKEW_US: u64 = 1_000_000;

/// How far past the latest time this rate can write a stored one must be before it is taken
/// for no instance's (written by hand) and replaced: an instance whose clock lags another's by
/// more than [`MAX_SKEW_US`] sees that one's times as out of reach, and writing its own
/// earlier time over them handed the other instance fresh requests on every turn.
const NO_INSTANCES_US: u64 = 600_000_000;

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it pass and store `new_tat` (it can be forgotten after `ttl_us`).
    Allow { new_tat: u64, ttl_us: u64 },
    /// Refuse it; a request after `retry_after_us` would pass.
    Deny { retry_after_us: u64 },
}

impl Rate {
    /// `per_minute` requests per minute (at least 1); `burst` defaults to `per_minute`.
    pub fn per_minute(per_minute: u32, burst: Option<u32>) -> Rate {
        let per_minute = per_minute.max(1);
        let interval_us = 60_000_000 / u64::from(per_minute);
        let burst = u64::from(burst.unwrap_or(per_minute).max(1));
        // Multiplied before dividing: above 60 M/min the interval rounds to 0 µs, and a
        // tolerance of 0 would deny a caller whose clock read came a moment before another's.
        let tolerance_us = (burst - 1) * 60_000_000 / u64::from(per_minute);
        Rate { per_minute, interval_us, tolerance_us }
    }

    /// The steady rate.
    pub fn limit(&self) -> u32 {
        self.per_minute
    }

    /// The time between two requests at the steady rate, in milliseconds.
    pub fn interval_ms(&self) -> u64 {
        self.interval_us / 1000
    }

    /// Decides a request arriving at `now_us` given the stored `tat` (none: a fresh bucket).
    pub fn decide(&self, tat: Option<u64>, now_us: u64) -> Decision {
        let tat = self.stored(tat, now_us);
        let earliest = tat.saturating_sub(self.tolerance_us);
        if now_us < earliest {
            return Decision::Deny { retry_after_us: earliest - now_us };
        }
        let new_tat = tat + self.interval_us;
        Decision::Allow { new_tat, ttl_us: new_tat - now_us }
    }

    /// Decides `wanted` requests at once (this one and the ones a hold will serve, paid in
    /// advance) when the bucket holds them all, else this one alone; with how many it allowed.
    pub fn decide_many(&self, tat: Option<u64>, now_us: u64, wanted: u32) -> (Decision, u32) {
        if wanted > 1 {
            let start = self.stored(tat, now_us);
            let last = start + (u64::from(wanted) - 1) * self.interval_us;
            if last.saturating_sub(self.tolerance_us) <= now_us {
                let new_tat = start + u64::from(wanted) * self.interval_us;
                return (Decision::Allow { new_tat, ttl_us: new_tat - now_us }, wanted);
            }
        }
        (self.decide(tat, now_us), 1)
    }

    /// The stored `tat` as this request sees it: none or past is now; one later than any this
    /// rate can write (an empty bucket's, give or take the instances' clocks) is taken as that
    /// empty bucket. Whoever can write the store (a local user, on a Redis without a password)
    /// could otherwise refuse a principal for as long as they liked with one huge number.
    fn stored(&self, tat: Option<u64>, now_us: u64) -> u64 {
        tat.unwrap_or(now_us).clamp(now_us, self.latest(now_us))
    }

    /// The latest `tat` this rate can write at `now_us` (an empty bucket's), give or take the
    /// instances' clocks.
    fn latest(&self, now_us: u64) -> u64 {
        now_us.saturating_add(self.tolerance_us + self.interval_us + MAX_SKEW_US)
    }

    /// The empty bucket a stored `tat` far later than any this rate can write stands for, to
    /// be stored in its place (a refused request writes nothing: the forged time would
    /// otherwise stay, and refuse every request after it); `None` for a `tat` it or an instance
    /// with a clock up to [`NO_INSTANCES_US`] ahead could have written (read as an empty bucket,
    /// and left as it is).
    pub fn beyond_reach(&self, tat: u64, now_us: u64) -> Option<u64> {
        let latest = self.latest(now_us);
        (tat > latest.saturating_add(NO_INSTANCES_US)).then_some(latest)
    }

    /// The stored `tat` after giving back `unused` requests paid in advance.
    pub fn refunded(&self, tat: u64, unused: u32) -> u64 {
        tat.saturating_sub(u64::from(unused) * self.interval_us)
    }

    /// Requests per burst.
    pub fn burst(&self) -> u64 {
        self.tolerance_us.checked_div(self.interval_us).map_or(u64::from(self.per_minute), |n| n + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: Rate, times_us: &[u64]) -> Vec<bool> {
        let mut tat = None;
        times_us
            .iter()
            .map(|&now| match rate.decide(tat, now) {
                Decision::Allow { new_tat, .. } => {
                    tat = Some(new_tat);
                    true
                }
                Decision::Deny { .. } => false,
            })
            .collect()
    }

    #[test]
    fn a_limit_beyond_a_call_per_microsecond_never_denies_a_slightly_older_clock() {
        let rate = Rate::per_minute(1_000_000_000, None);
        // Another call stored its time (1 ms later) before this one, which read the clock first.
        assert!(matches!(rate.decide(Some(1_000), 0), Decision::Allow { .. }));
    }

    #[test]
    fn a_stored_time_no_bucket_could_hold_refuses_for_one_interval_at_most() {
        let rate = Rate::per_minute(60, Some(10)); // one a second, bursts of ten
        let now = 1_000_000_000;
        for forged in [u64::MAX, now + 86_400_000_000] {
            let Decision::Deny { retry_after_us } = rate.decide(Some(forged), now) else { panic!("an empty bucket") };
            assert_eq!(retry_after_us, 1_000_000 + MAX_SKEW_US, "one interval, and the clocks' leeway");
        }
        assert!(matches!(rate.decide(Some(now + 2_000_000), now + 2_000_000), Decision::Allow { .. }));
        // What the bucket stores in the forged time's place: an empty bucket, allowing again
        // after one interval and the leeway, like the decision above.
        let empty = rate.beyond_reach(u64::MAX, now).expect("out of reach");
        assert_eq!(rate.beyond_reach(empty, now), None, "an empty bucket is within reach");
        assert!(matches!(rate.decide(Some(empty), now + 2_000_000), Decision::Allow { .. }));
    }

    /// An instance whose clock lags another's by more than the leeway reads the other's times
    /// as an empty bucket and leaves them: writing its own earlier time over them gave the other
    /// instance a fresh burst on each turn.
    #[test]
    fn a_time_an_instance_with_a_clock_ahead_wrote_is_not_replaced() {
        let rate = Rate::per_minute(60, Some(10));
        let (lagging, ahead) = (1_000_000_000, 1_005_000_000);
        let Decision::Allow { new_tat, .. } = rate.decide(Some(ahead + 9_000_000), ahead) else { panic!("one left") };
        assert_eq!(rate.beyond_reach(new_tat, lagging), None, "five seconds ahead is some instance's");
        assert!(matches!(rate.decide(Some(new_tat), lagging), Decision::Deny { .. }), "and empty");
    }

    #[test]
    fn allows_a_burst_then_the_steady_rate() {
        let rate = Rate::per_minute(60, Some(3)); // one per second, bursts of 3
        assert_eq!(run(rate, &[0, 0, 0, 0]), [true, true, true, false]);
        assert_eq!(run(rate, &[0, 0, 0, 1_000_000, 1_000_001]), [true, true, true, true, false]);
    }

    #[test]
    fn says_when_to_retry() {
        let rate = Rate::per_minute(60, Some(1));
        let Decision::Allow { new_tat, .. } = rate.decide(None, 0) else { panic!() };
        assert_eq!(rate.decide(Some(new_tat), 250_000), Decision::Deny { retry_after_us: 750_000 });
    }

    #[test]
    fn many_at_once_only_when_the_bucket_holds_them_all() {
        let rate = Rate::per_minute(60, Some(10)); // one per second, bursts of 10
        let (Decision::Allow { new_tat, .. }, 8) = rate.decide_many(None, 0, 8) else { panic!() };
        assert_eq!(new_tat, 8_000_000);
        // Two left in the burst: four at once do not fit, one does.
        assert!(matches!(rate.decide_many(Some(new_tat), 0, 4), (Decision::Allow { .. }, 1)));
        assert!(matches!(rate.decide_many(Some(new_tat), 0, 2), (Decision::Allow { .. }, 2)));
        // Giving back six of the eight makes room for six more.
        assert!(matches!(rate.decide_many(Some(rate.refunded(new_tat, 6)), 0, 8), (Decision::Allow { .. }, 8)));
        assert_eq!(rate.burst(), 10);
        assert_eq!(Rate::per_minute(1_000_000_000, None).burst(), 1_000_000_000);
    }

    #[test]
    fn a_default_bucket_holds_one_minute_of_requests() {
        let rate = Rate::per_minute(100, None);
        let results = run(rate, &[0; 101]);
        assert_eq!(results.iter().filter(|ok| **ok).count(), 100);
    }
}
