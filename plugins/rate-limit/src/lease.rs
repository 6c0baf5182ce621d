//! How many requests to pay for in advance and hand to the host as a hold (`verdict.hold`), so
//! that a busy principal's requests are decided without a call into this plugin. The size
//! follows how the last hold went: doubled when all of it was used, cut to what was used when
//! its time ran out (the rest is given back to the bucket). Small limits never hold: at most
//! a tenth of a second of the steady rate and a tenth of the burst is paid in advance, so a
//! limit under 600 requests per minute (or a burst under 20) stays exact request by request.

use crate::relay::plugin::verdict::EndedHold;

/// How long a hold stands: what it leaves unused is given back when the principal's next
/// request for the same method and tool comes.
pub const HOLD_MS: u32 = 1000;

/// The largest hold, whatever the rate.
const MAX_HOLD: u32 = 256;

/// The hold to ask for after `previous` (0: none) under a rate of `per_minute` with bursts of
/// `burst`.
pub fn next_hold(previous: Option<EndedHold>, per_minute: u32, burst: u64) -> u32 {
    let cap = (per_minute / 600).min(u32::try_from(burst / 10).unwrap_or(u32::MAX)).min(MAX_HOLD);
    let wanted = match previous {
        None => 1,
        Some(EndedHold { granted, unused: 0 }) => granted.saturating_mul(2),
        Some(EndedHold { granted, unused }) => granted.saturating_sub(unused),
    };
    wanted.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_grow_while_used_and_shrink_to_what_was_used() {
        let fast = 6_000_000;
        assert_eq!(next_hold(None, fast, u64::from(fast)), 1);
        assert_eq!(next_hold(Some(EndedHold { granted: 8, unused: 0 }), fast, u64::from(fast)), 16);
        assert_eq!(next_hold(Some(EndedHold { granted: 256, unused: 0 }), fast, u64::from(fast)), MAX_HOLD);
        assert_eq!(next_hold(Some(EndedHold { granted: 16, unused: 13 }), fast, u64::from(fast)), 3);
        assert_eq!(next_hold(Some(EndedHold { granted: 16, unused: 16 }), fast, u64::from(fast)), 0);
    }

    #[test]
    fn small_limits_and_bursts_are_decided_request_by_request() {
        assert_eq!(next_hold(None, 599, 599), 0);
        assert_eq!(next_hold(Some(EndedHold { granted: 4, unused: 0 }), 100, 100), 0);
        assert_eq!(next_hold(Some(EndedHold { granted: 4, unused: 0 }), 60_000, 19), 1);
        assert_eq!(next_hold(Some(EndedHold { granted: 64, unused: 0 }), 6_000, 6_000), 10);
    }
}
