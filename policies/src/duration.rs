//! Durations and counts in policy and configuration files.
//!
//! A duration is written as seconds (`deadline_secs = 30`); `Duration::from_secs_f64` panics on
//! values beyond what a `Duration` holds (`1e300`), and an `Instant` plus a huge duration
//! overflows. So every duration key is checked at load against one range, (0, 7 days], and
//! the message says so; [`to_duration`] converts without panicking whatever it is given. Counts
//! of rounds have one bound too, so that a round number plus a count cannot overflow.

use std::time::Duration;

/// The longest duration any key may hold: 7 days.
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// The largest count of rounds any key may hold.
pub const MAX_ROUND_COUNT: u64 = 1_000_000;

/// What a duration key allows, for error messages.
pub const ALLOWED: &str = "a number of seconds above 0 and at most 604800 (7 days)";

/// Whether `v` is an allowed duration in seconds.
pub fn is_duration(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v <= MAX_SECONDS
}

/// Seconds as a `Duration`, clamped into `[0, MAX_SECONDS]` (NaN is 0): never panics.
pub fn to_duration(v: f64) -> Duration {
    if v.is_nan() || v <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(v.min(MAX_SECONDS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_and_the_conversion_hold_for_any_value() {
        for v in [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e300, MAX_SECONDS + 1.0] {
            assert!(!is_duration(v), "{v}");
            assert!(to_duration(v) <= Duration::from_secs_f64(MAX_SECONDS));
        }
        assert!(is_duration(0.5) && is_duration(MAX_SECONDS));
        assert_eq!(to_duration(1.5), Duration::from_millis(1500));
    }
}
